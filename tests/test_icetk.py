"""
Tests of the icetk adapter with locally made model files (nothing is downloaded).

The text side and the checks run wherever sentencepiece is installed. The image side needs the `icetk`
package, which imports torchvision at module level; it runs in the environment of `make test-icetk` (torch
2.14.1 with torchvision 0.29.1) on icetk's own image tokenizer, randomly initialised and saved in icetk's
checkpoint format.
"""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from flashvideo.configuration_flashvideo import FlashVideoConfig
from flashvideo.icetk_adapter import (
    ICETK_IMAGE_FILE,
    ICETK_NUM_IMAGE_TOKENS,
    ICETK_TEXT_FILE,
    PROTOBUF_IMPLEMENTATION_VARIABLE,
    IcetkTokenizer,
    icetk_import_error,
)


sentencepiece = pytest.importorskip("sentencepiece")

CAPTIONS = [
    f"a {color} {shape} moving {direction}"
    for color in ("red", "green", "blue", "yellow", "magenta", "cyan")
    for shape in ("circle", "square", "triangle")
    for direction in ("left", "right", "up", "down")
]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("icetk")
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(CAPTIONS),
        model_prefix=str(directory / "ice_text"),
        vocab_size=40,
        model_type="bpe",
        minloglevel=2,
    )
    # icetk checkpoints keep their weights under "module"; random tensors stand in for the real ones.
    generator = torch.Generator().manual_seed(0)
    state = {
        "quantize.embed": torch.randn(256, ICETK_NUM_IMAGE_TOKENS, generator=generator),
        "enc.conv_in.weight": torch.randn(128, 3, 3, 3, generator=generator),
    }
    torch.save({"module": state}, directory / "ice_image.pt")
    return directory


@pytest.fixture(scope="module")
def config():
    # 64×64 frames at icetk's compression rate 4 give 16×16 codes; 20,000 image codes as in icetk.
    return FlashVideoConfig(
        text_vocab_size=64, image_vocab_size=ICETK_NUM_IMAGE_TOKENS, image_size=64, code_grid_size=16
    )


@pytest.fixture(scope="module")
def tokenizer(model_dir, config):
    return IcetkTokenizer(model_dir, config)


def test_text_ids_are_sentencepiece_ids_moved_into_the_text_range(tokenizer, model_dir, config):
    processor = sentencepiece.SentencePieceProcessor(model_file=str(model_dir / "ice_text.model"))
    text = "a red circle moving left"
    ids = tokenizer.encode_text(text)
    assert ids == [piece + config.text_token_start for piece in processor.encode(text)]
    assert all(config.text_token_range[0] <= i < config.text_token_range[1] for i in ids)
    assert tokenizer.decode_text(ids) == text
    # Characters the model never saw become <unk> (SentencePiece id 0), not an error.
    assert config.text_token_start + processor.unk_id() in tokenizer.encode_text("a red zebra ☃")
    with pytest.raises(ValueError, match="non-empty"):
        tokenizer.encode_text("  ")


def test_icetk_id_space_maps_to_the_model_vocabulary(tokenizer, config):
    # icetk: image codes 0 … 19,999, text ids offset by 20,000.
    icetk_ids = torch.tensor([0, 19_999, 20_000, 20_000 + 39])
    model_ids = tokenizer.icetk_to_model_ids(icetk_ids)
    assert model_ids.tolist() == [
        config.image_token_start,
        config.image_token_start + 19_999,
        config.text_token_start,
        config.text_token_start + 39,
    ]
    assert torch.equal(tokenizer.model_to_icetk_ids(model_ids), icetk_ids)
    with pytest.raises(ValueError, match=r"icetk ids in \[0, 20040\)"):
        tokenizer.icetk_to_model_ids([20_040])
    with pytest.raises(ValueError, match="icetk text ids"):
        tokenizer.model_to_icetk_ids([config.serial_token_start])


def test_layout_methods_use_icetk_ids(tokenizer, config):
    codes = torch.tensor([[[19_999] * 16] * 16])
    sample = tokenizer.build_keyframe_sample("a red circle", codes)
    text = tokenizer.encode_text("a red circle")
    assert (
        sample["input_ids"] == [*text, config.serial_token_id(1)] + [config.image_token_start + 19_999] * 256
    )
    assert sample["labels"] == [-100] * (len(text) + 1) + [config.image_token_start + 19_999] * 256


def test_checkpoint_is_loaded_as_plain_weights(tokenizer, model_dir):
    state = tokenizer.load_image_checkpoint()
    assert set(state) == {"module"} and state["module"]["quantize.embed"].shape == (
        256,
        ICETK_NUM_IMAGE_TOKENS,
    )


def test_checkpoint_with_pickled_objects_is_refused(model_dir, config, tmp_path):
    (tmp_path / "ice_text.model").write_bytes((model_dir / "ice_text.model").read_bytes())
    torch.save({"module": {"weight": torch.zeros(1)}, "extra": _NotWeights()}, tmp_path / "ice_image.pt")
    with pytest.raises(ValueError, match=r"weights_only=True"):
        IcetkTokenizer(tmp_path, config).load_image_checkpoint()


class _NotWeights:
    """An arbitrary object: a weights-only load must not unpickle it."""


def test_missing_files_name_the_files_and_the_directory(tmp_path, model_dir, config):
    with pytest.raises(FileNotFoundError) as caught:
        IcetkTokenizer(tmp_path, config)
    message = str(caught.value)
    assert "ice_text.model" in message and "ice_image.pt" in message and str(tmp_path) in message
    assert "never downloads" in message
    (tmp_path / "ice_text.model").write_bytes((model_dir / "ice_text.model").read_bytes())
    with pytest.raises(FileNotFoundError, match=r"file\(s\) ice_image.pt not found"):
        IcetkTokenizer(tmp_path, config)


def test_config_must_hold_icetk_vocabularies(model_dir):
    with pytest.raises(ValueError, match=r"image_vocab_size \(512\) must be at least 20000"):
        IcetkTokenizer(model_dir, FlashVideoConfig(text_vocab_size=64))
    with pytest.raises(ValueError, match=r"40 tokens, more than config.text_vocab_size \(32\)"):
        IcetkTokenizer(model_dir, FlashVideoConfig(text_vocab_size=32, image_vocab_size=20_000))
    with pytest.raises(ValueError, match="compression rates"):
        IcetkTokenizer(
            model_dir,
            FlashVideoConfig(text_vocab_size=64, image_vocab_size=20_000, image_size=64, code_grid_size=32),
        )


def test_image_side_explains_a_missing_icetk(tokenizer):
    error = icetk_import_error()
    if error is None:
        pytest.skip("icetk imports here; the missing-icetk message cannot be observed")
    with pytest.raises(ImportError, match="torchvision") as caught:
        tokenizer.encode_frames(np.zeros((1, 64, 64, 3), dtype=np.uint8))
    assert str(error) in str(caught.value)
    with pytest.raises(ImportError, match="pip install"):
        tokenizer.decode_frames(torch.zeros(1, 16, 16, dtype=torch.long))
    # Text keeps working without icetk.
    assert tokenizer.encode_text("a red circle")


# ----------------------------------------------------------------- with the icetk package


requires_icetk = pytest.mark.skipif(
    icetk_import_error() is not None, reason=f"icetk cannot be imported: {icetk_import_error()}"
)


@pytest.fixture(autouse=True)
def no_icetk_downloads(monkeypatch):
    """icetk downloads missing model files on first use; in these tests that is a failure."""
    if icetk_import_error() is None:
        import icetk.utils

        def refuse(save_path, url):
            pytest.fail(f"icetk tried to download {url} into {save_path}")

        monkeypatch.setattr(icetk.utils, "download_with_progress_bar", refuse)


@pytest.fixture(scope="module")
def icetk_model_dir(tmp_path_factory, model_dir):
    """
    `ice_text.model` (the SentencePiece model above) and icetk's own image tokenizer (its hierarchical
    VQVAE: 20,000 codes, 256-dim), randomly initialised and saved as icetk's checkpoints are:
    `{"module": state_dict}`.
    """
    from icetk.vqvae import load_default_HVQVAE

    directory = tmp_path_factory.mktemp("icetk_real")
    (directory / ICETK_TEXT_FILE).write_bytes((model_dir / ICETK_TEXT_FILE).read_bytes())
    torch.manual_seed(0)
    torch.save({"module": load_default_HVQVAE().state_dict()}, directory / ICETK_IMAGE_FILE)
    return directory


def icetk_config(compress_rate: int, **kwargs) -> FlashVideoConfig:
    """256×256 frames at one of icetk's compression rates; 20,000 image codes as in icetk."""
    return FlashVideoConfig(
        text_vocab_size=64,
        image_vocab_size=ICETK_NUM_IMAGE_TOKENS,
        image_size=256,
        code_grid_size=256 // compress_rate,
        **kwargs,
    )


def own_icetk(model_dir):
    """icetk's own tokenizer on the same files, for comparison."""
    from icetk.ice_tokenizer import IceTokenizer

    return IceTokenizer(path=str(model_dir), device="cpu", fp16=False)


def run_fresh_python(script: str) -> str:
    """`script`'s output in a new interpreter whose environment does not choose a protobuf implementation."""
    environment = {key: value for key, value in os.environ.items() if key != PROTOBUF_IMPLEMENTATION_VARIABLE}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=environment)
    assert result.returncode == 0, result.stderr
    return result.stdout


@requires_icetk
def test_icetk_imports_on_pure_python_protobuf_without_touching_the_environment():
    # protobuf's default implementation refuses icetk's generated code; the adapter imports icetk on the
    # pure-Python one and leaves the user's environment as it was.
    output = run_fresh_python(
        "import os; from flashvideo.icetk_adapter import icetk_import_error as e; error = e(); "
        "from google.protobuf.internal import api_implementation as a; "
        f"print(error, a.Type(), {PROTOBUF_IMPLEMENTATION_VARIABLE!r} in os.environ)"
    )
    assert output.split() == ["None", "python", "False"]


@requires_icetk
def test_protobuf_imported_first_gives_an_error_that_says_what_to_do():
    implementation, message = run_fresh_python(
        "import google.protobuf.descriptor_pb2; "
        "from google.protobuf.internal import api_implementation as a; "
        "from flashvideo.icetk_adapter import icetk_import_error as e; print(a.Type()); print(e())"
    ).split("\n", 1)
    if implementation == "python":
        pytest.skip("protobuf's default implementation is the pure-Python one here")
    assert f"{PROTOBUF_IMPLEMENTATION_VARIABLE}=python" in message and "before icetk" in message


@requires_icetk
def test_text_ids_match_icetk_own_offset_ids(icetk_model_dir):
    config = icetk_config(8)
    tokenizer = IcetkTokenizer(icetk_model_dir, config)
    icetk = own_icetk(icetk_model_dir)  # reads ice_text.model through its old generated protobuf code
    text = "a red circle moving left"
    icetk_ids = icetk.encode(text=text)
    assert min(icetk_ids) >= ICETK_NUM_IMAGE_TOKENS  # icetk offsets text ids by its 20,000 image codes
    model_ids = tokenizer.encode_text(text)
    assert tokenizer.icetk_to_model_ids(icetk_ids).tolist() == model_ids
    assert tokenizer.model_to_icetk_ids(model_ids).tolist() == icetk_ids
    assert icetk.decode(text_ids=icetk_ids) == tokenizer.decode_text(model_ids) == text
    assert all(config.text_token_range[0] <= i < config.text_token_range[1] for i in model_ids)


@requires_icetk
def test_image_checkpoint_loads_as_plain_weights(icetk_model_dir):
    from icetk.vqvae import load_default_HVQVAE

    state = IcetkTokenizer(icetk_model_dir, icetk_config(8)).load_image_checkpoint()["module"]
    assert set(state) == set(load_default_HVQVAE().state_dict())
    assert state["quantize.embed.weight"].shape == (ICETK_NUM_IMAGE_TOKENS, 256)


@requires_icetk
@pytest.mark.slow
@pytest.mark.parametrize("compress_rate", [8, 16])
def test_icetk_encodes_and_decodes_256px_frames(icetk_model_dir, compress_rate):
    grid = 256 // compress_rate  # 32×32 codes at rate 8, 16×16 at rate 16
    config = icetk_config(compress_rate)
    tokenizer = IcetkTokenizer(icetk_model_dir, config)
    frames = np.random.default_rng(compress_rate).integers(0, 256, size=(1, 256, 256, 3), dtype=np.uint8)
    with torch.no_grad():
        codes = tokenizer.encode_frames(frames)
        assert codes.shape == (1, grid, grid) and codes.dtype == torch.long
        assert 0 <= codes.min() and codes.max() < ICETK_NUM_IMAGE_TOKENS
        pixels = tokenizer.decode_frames(codes)
        assert pixels.shape == (1, 256, 256, 3) and pixels.dtype == np.uint8
        # The adapter is icetk: the same codes from the same image (given in [0, 1], HWC -> CHW), and the same
        # pixels from the same codes.
        icetk = own_icetk(icetk_model_dir)
        image = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255.0
        if compress_rate == 16:  # one full encoder pass per rate is tens of seconds on one CPU thread
            own_codes = icetk.encode(image_torch=image, compress_rate=compress_rate)
            assert torch.equal(own_codes.view(1, grid, grid), codes)
        decoded = icetk.decode(image_ids=codes, compress_rate=compress_rate)
    expected = decoded.clamp(0, 1).mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    assert np.array_equal(pixels, expected)
    # Model-vocabulary ids in the config's image range, and back.
    ids = tokenizer.codes_to_ids(codes)
    image_start = config.image_token_start
    assert image_start <= ids.min() and ids.max() < image_start + ICETK_NUM_IMAGE_TOKENS
    assert torch.equal(tokenizer.ids_to_codes(ids).reshape(codes.shape), codes)


@requires_icetk
@pytest.mark.slow
def test_pipeline_generates_a_256px_clip_through_icetk(icetk_model_dir):
    from flashvideo import FlashVideoForCausalLM, FlashVideoPipeline

    config = icetk_config(
        8, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, max_frames=4
    )
    torch.manual_seed(0)
    model = FlashVideoForCausalLM(config).eval()
    tokenizer = IcetkTokenizer(icetk_model_dir, config)
    pipe = FlashVideoPipeline(model, processor=tokenizer, vqvae=tokenizer, show_progress=False)
    generator = torch.Generator().manual_seed(0)
    out = pipe("a red circle moving left", num_frames=3, key_frame_spacing=2, generator=generator)
    assert out.frames.shape == (1, 3, 256, 256, 3) and out.frames.dtype == np.uint8
    # Two key frames of 32×32 icetk codes sampled, one frame interpolated between them.
    assert out.stats.key_frames.tokens_sampled == 2 * 32 * 32
    assert out.stats.interpolation.tokens_sampled + out.stats.interpolation.tokens_inherited == 32 * 32
