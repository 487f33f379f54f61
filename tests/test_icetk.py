"""Tests of the icetk adapter with locally made model files (nothing is downloaded)."""

import numpy as np
import pytest
import torch

from flashvideo.configuration_flashvideo import FlashVideoConfig
from flashvideo.icetk_adapter import ICETK_NUM_IMAGE_TOKENS, IcetkTokenizer, icetk_import_error


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


def test_image_encode_decode_with_icetk(tokenizer):
    error = icetk_import_error()
    if error is not None:
        pytest.skip(f"icetk cannot be imported: {error}")
    frames = np.random.default_rng(0).integers(0, 256, size=(2, 64, 64, 3), dtype=np.uint8)
    codes = tokenizer.encode_frames(frames)
    assert codes.shape == (2, 16, 16) and codes.dtype == torch.long
    assert 0 <= codes.min() and codes.max() < ICETK_NUM_IMAGE_TOKENS
    pixels = tokenizer.decode_frames(codes)
    assert pixels.shape == (2, 64, 64, 3) and pixels.dtype == np.uint8
