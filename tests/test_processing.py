"""Tests of the FlashVideo processor (caption tokenizer, serial-number sequence layout, saving and loading), of the
image tokenizer it no longer holds, and of the data collator."""

import json

import numpy as np
import pytest
import torch

from flashvideo.configuration_flashvideo import FlashVideoConfig
from transformers import AutoProcessor, ProcessorMixin

import flashvideo
from flashvideo.data.collate import pad_batch
from flashvideo.image_tokenizer import (
    build_vq_model,
    check_image_tokenizer,
    codes_to_frames,
    codes_to_latents,
    decode_codes,
    encode_frames,
    frames_to_codes,
    image_tokenizer_fingerprint,
    load_image_tokenizer,
)
from flashvideo.processing_flashvideo import FlashVideoProcessor, SequenceLayout
from flashvideo.text_tokenizer import build_text_tokenizer


CAPTIONS = [
    f"a {color} {shape} moving {direction}"
    for color in ("red", "green", "blue")
    for shape in ("circle", "square")
    for direction in ("left", "right")
]


def small_config(**overrides) -> FlashVideoConfig:
    # 8×8 frames → 2×2 code grids keep the literal layouts below short.
    values = dict(text_vocab_size=32, image_vocab_size=64, max_frames=8, image_size=8, code_grid_size=2)
    values.update(overrides)
    return FlashVideoConfig(**values)


def small_vq(codebook_size: int = 64, seed: int = 0):
    torch.manual_seed(seed)
    return build_vq_model(
        8, 2, codebook_size, block_out_channels=(8, 16, 16), norm_num_groups=8, vq_embed_dim=8
    )


@pytest.fixture(scope="module")
def config():
    return small_config()


@pytest.fixture(scope="module")
def processor(config):
    return FlashVideoProcessor(build_text_tokenizer(CAPTIONS, vocab_size=32), config)


@pytest.fixture(scope="module")
def vq():
    return small_vq()


def text_ids(processor, words):
    """The model ids of `words`, looked up directly in the tokenizer vocabulary."""
    vocab = processor.text_tokenizer.get_vocab()
    return [processor.layout.text_token_start + vocab[word] for word in words]


# ----------------------------------------------------------------------------------------- text tokenizer


def test_text_tokenizer_is_deterministic_and_case_insensitive():
    first = build_text_tokenizer(CAPTIONS, vocab_size=32)
    second = build_text_tokenizer(reversed(CAPTIONS), vocab_size=32)
    assert first.get_vocab() == second.get_vocab()
    vocab = first.get_vocab()
    assert vocab["[UNK]"] == 0
    # "a" and "moving" occur in every caption, so they get the first ids (ties broken alphabetically).
    assert vocab["a"] == 1 and vocab["moving"] == 2
    assert first.encode("A RED Circle", add_special_tokens=False) == first.encode(
        "a red circle", add_special_tokens=False
    )
    assert first.convert_ids_to_tokens(first.encode("left, right!", add_special_tokens=False)) == [
        "left",
        "[UNK]",
        "right",
        "[UNK]",
    ]


def test_text_tokenizer_keeps_the_most_frequent_words():
    tokenizer = build_text_tokenizer(["b b b a a c", "b a"], vocab_size=3)
    assert tokenizer.get_vocab() == {"[UNK]": 0, "b": 1, "a": 2}
    assert tokenizer.convert_ids_to_tokens(tokenizer.encode("c a", add_special_tokens=False)) == [
        "[UNK]",
        "a",
    ]


def test_text_tokenizer_rejects_bad_arguments():
    with pytest.raises(ValueError, match="vocab_size"):
        build_text_tokenizer(CAPTIONS, vocab_size=1)
    with pytest.raises(ValueError, match="at least one word"):
        build_text_tokenizer(["", "  "], vocab_size=8)


def test_encode_text_offsets_ids_and_maps_unknown_words_to_unk(processor, config):
    start = config.text_token_start
    assert processor.encode_text("a red circle") == text_ids(processor, ["a", "red", "circle"])
    # "purple" and "hexagon" were never seen: [UNK] (tokenizer id 0), never an exception.
    assert processor.encode_text("a purple hexagon") == [
        start + processor.text_tokenizer.get_vocab()["a"],
        start,
        start,
    ]
    assert (
        processor.decode_text(processor.encode_text("a red circle moving left")) == "a red circle moving left"
    )


@pytest.mark.parametrize("prompt", ["", "   ", "\n\t"])
def test_empty_prompt_is_rejected(processor, prompt):
    with pytest.raises(ValueError, match="non-empty"):
        processor.encode_text(prompt)
    with pytest.raises(ValueError, match="non-empty"):
        processor.build_keyframe_sample(prompt, torch.zeros(1, 2, 2, dtype=torch.long))


def test_text_tokenizer_must_fit_text_vocab_size(config):
    big = build_text_tokenizer([f"word{i}" for i in range(40)], vocab_size=41)
    with pytest.raises(ValueError, match=r"41 tokens.*text_vocab_size \(32\)"):
        FlashVideoProcessor(big, config)


# ---------------------------------------------------------------------------------------- sequence layout


def test_keyframe_layout_of_a_three_frame_clip(processor, config):
    S, I = config.serial_token_start, config.image_token_start  # noqa: E741
    t = text_ids(processor, ["a", "red", "circle"])
    codes = torch.tensor([[[0, 1], [2, 3]], [[4, 5], [6, 7]], [[63, 10], [20, 30]]])
    sample = processor.build_keyframe_sample("a red circle", codes)
    assert sample["input_ids"] == [
        *t, S + 0, I + 0, I + 1, I + 2, I + 3,
        *t, S + 1, I + 4, I + 5, I + 6, I + 7,
        *t, S + 2, I + 63, I + 10, I + 20, I + 30,
    ]  # fmt: skip
    ignored = [-100] * (len(t) + 1)
    assert sample["labels"] == [
        *ignored, I + 0, I + 1, I + 2, I + 3,
        *ignored, I + 4, I + 5, I + 6, I + 7,
        *ignored, I + 63, I + 10, I + 20, I + 30,
    ]  # fmt: skip
    # The inference prefixes and the training layout agree.
    rebuilt = []
    for number, frame in enumerate(codes, start=1):
        rebuilt += (
            processor.keyframe_prefix("a red circle", number)
            + processor.codes_to_ids(frame).flatten().tolist()
        )
    assert rebuilt == sample["input_ids"]


def test_keyframe_layout_with_explicit_serial_numbers(processor, config):
    S = config.serial_token_start
    codes = torch.zeros(3, 2, 2, dtype=torch.long)
    sample = processor.build_keyframe_sample("red", codes, serial_numbers=[1, 4, 8])
    serial_positions = [
        i for i, token in enumerate(sample["input_ids"]) if S <= token < S + config.max_frames
    ]
    assert [sample["input_ids"][i] for i in serial_positions] == [S + 0, S + 3, S + 7]
    with pytest.raises(ValueError, match="one number per frame"):
        processor.build_keyframe_sample("red", codes, serial_numbers=[1, 2])
    with pytest.raises(ValueError, match=r"\[1, 8\]"):
        processor.build_keyframe_sample("red", codes, serial_numbers=[1, 2, 9])


def test_interpolation_layout_with_two_inserted_frames(processor, config):
    S, I = config.serial_token_start, config.image_token_start  # noqa: E741
    t = text_ids(processor, ["a", "blue", "square"])
    frame_a = torch.tensor([[1, 2], [3, 4]])
    frame_b = torch.tensor([[5, 6], [7, 8]])
    middle = torch.tensor([[[11, 12], [13, 14]], [[21, 22], [23, 24]]])  # F_2, F_3
    sample = processor.build_interpolation_sample("a blue square", frame_a, frame_b, middle)
    # [text][SN_1][A][text][SN_4][B][text][SN_2][F_2][text][SN_3][F_3]
    assert sample["input_ids"] == [
        *t, S + 0, I + 1, I + 2, I + 3, I + 4,
        *t, S + 3, I + 5, I + 6, I + 7, I + 8,
        *t, S + 1, I + 11, I + 12, I + 13, I + 14,
        *t, S + 2, I + 21, I + 22, I + 23, I + 24,
    ]  # fmt: skip
    ignored = [-100] * (len(t) + 1)
    assert sample["labels"] == [
        *ignored, I + 1, I + 2, I + 3, I + 4,
        *ignored, I + 5, I + 6, I + 7, I + 8,
        *ignored, I + 11, I + 12, I + 13, I + 14,
        *ignored, I + 21, I + 22, I + 23, I + 24,
    ]  # fmt: skip
    unlabelled_keys = processor.build_interpolation_sample(
        "a blue square", frame_a, frame_b, middle, label_key_frames=False
    )
    assert unlabelled_keys["input_ids"] == sample["input_ids"]
    assert unlabelled_keys["labels"] == [
        *ignored, -100, -100, -100, -100,
        *ignored, -100, -100, -100, -100,
        *ignored, I + 11, I + 12, I + 13, I + 14,
        *ignored, I + 21, I + 22, I + 23, I + 24,
    ]  # fmt: skip
    # Inference: the prefix before F_2, then [text][SN_3] before F_3.
    prefix = processor.interpolation_prefix("a blue square", frame_a, frame_b, num_inserted=2)
    assert prefix == sample["input_ids"][: len(prefix)]
    assert prefix[-1] == S + 1
    assert processor.keyframe_prefix("a blue square", 3) == [*t, S + 2]
    assert processor.interpolation_serial_numbers(2) == [1, 4, 2, 3]


def test_interpolation_needs_room_for_the_serial_numbers(processor):
    frame = torch.zeros(2, 2, dtype=torch.long)
    with pytest.raises(ValueError, match="max_frames"):
        processor.build_interpolation_sample("red", frame, frame, torch.zeros(7, 2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="at least one frame"):
        processor.build_interpolation_sample("red", frame, frame, torch.zeros(0, 2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"frame_a must have shape \[grid, grid\]"):
        processor.build_interpolation_sample("red", torch.zeros(3, 3, dtype=torch.long), frame, frame[None])


def test_reorder_interpolated_puts_b_last(processor):
    assert processor.interpolation_time_offsets(3) == [0, 4, 1, 2, 3]  # A, B, F2, F3, F4 in time from A
    assert processor.reorder_interpolated(["A", "B", "F2", "F3", "F4"], 3) == ["A", "F2", "F3", "F4", "B"]
    tensor = torch.arange(4)[:, None].expand(4, 3)
    assert processor.reorder_interpolated(tensor, 2)[:, 0].tolist() == [0, 2, 3, 1]
    assert processor.reorder_interpolated(np.arange(4), 2).tolist() == [0, 2, 3, 1]
    with pytest.raises(ValueError, match="num_inserted \\+ 2 = 4"):
        processor.reorder_interpolated(["A", "B", "F2"], 2)


def test_codes_and_ids(processor, config):
    codes = torch.tensor([[0, 63], [5, 6]])
    ids = processor.codes_to_ids(codes)
    assert ids.tolist() == [[config.image_token_start, config.image_token_start + 63], [48, 49]]
    assert torch.equal(processor.ids_to_codes(ids), codes)
    with pytest.raises(ValueError, match=r"image_vocab_size"):
        processor.codes_to_ids([64])
    with pytest.raises(ValueError, match=r"image_token_range.*a text token"):
        processor.ids_to_codes([config.image_token_start, config.text_token_start])
    with pytest.raises(ValueError, match="serial-number token"):
        processor.ids_to_codes([config.serial_token_start])
    with pytest.raises(ValueError, match="integers"):
        processor.codes_to_ids(torch.tensor([0.5]))


def test_layout_is_validated():
    layout = SequenceLayout.from_config(small_config())
    assert layout.image_token_range == (43, 107) and layout.tokens_per_frame == 4
    values = layout.to_dict() | {"image_token_start": layout.text_token_start + 1}
    with pytest.raises(ValueError, match="overlaps"):
        SequenceLayout(**values)


# ---------------------------------------------------------------------------------------- image tokenizer


def test_default_vq_model_is_about_one_million_parameters_and_gives_16x16_codes():
    torch.manual_seed(0)
    vq = build_vq_model()
    assert 0.9e6 < sum(p.numel() for p in vq.parameters()) < 1.1e6
    assert vq.config.num_vq_embeddings == 512
    frames = np.random.default_rng(0).integers(0, 256, size=(2, 64, 64, 3), dtype=np.uint8)
    codes = encode_frames(vq, frames)
    assert codes.shape == (2, 16, 16) and codes.dtype == torch.long
    assert 0 <= codes.min() and codes.max() < 512
    pixels = decode_codes(vq, codes)
    assert pixels.shape == (2, 64, 64, 3) and pixels.dtype == np.uint8


def test_build_vq_model_rejects_impossible_shapes():
    with pytest.raises(ValueError, match="power of two"):
        build_vq_model(64, 24)
    with pytest.raises(ValueError, match="block_out_channels must have"):
        build_vq_model(64, 16, block_out_channels=(32, 64))
    with pytest.raises(ValueError, match="norm_num_groups"):
        build_vq_model(64, 16, block_out_channels=(32, 48, 64), norm_num_groups=32)


def test_build_vq_model_without_mid_block_attention(tmp_path):
    from diffusers import VQModel
    from diffusers.models.attention_processor import Attention

    def has_attention(model):
        return any(isinstance(module, Attention) for module in model.modules())

    shape = dict(block_out_channels=(8, 16, 16), norm_num_groups=8, vq_embed_dim=8)
    assert has_attention(build_vq_model(16, 4, 60, **shape))
    vq = build_vq_model(16, 4, 60, **shape, mid_block_attention=False).eval()
    assert not has_attention(vq)
    vq.save_pretrained(tmp_path, safe_serialization=True)
    loaded = VQModel.from_pretrained(tmp_path).eval()
    assert not has_attention(loaded)
    frames = np.random.default_rng(2).integers(0, 256, size=(3, 16, 16, 3), dtype=np.uint8)
    assert torch.equal(frames_to_codes(loaded, frames), frames_to_codes(vq, frames))


def test_encode_and_decode_frames(vq):
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 256, size=(2, 3, 8, 8, 3), dtype=np.uint8)
    codes = frames_to_codes(vq, frames, batch_size=4)
    assert codes.shape == (2, 3, 2, 2) and codes.dtype == torch.long
    assert 0 <= codes.min() and codes.max() < 64
    # The same frames as floats [N, 3, H, W] in [-1, 1] give the same codes.
    floats = torch.from_numpy(frames.reshape(6, 8, 8, 3)).permute(0, 3, 1, 2).float() / 127.5 - 1
    assert torch.equal(frames_to_codes(vq, floats).reshape(2, 3, 2, 2), codes)
    pixels = codes_to_frames(vq, codes, batch_size=5)
    assert pixels.shape == (2, 3, 8, 8, 3) and pixels.dtype == np.uint8
    assert np.array_equal(pixels[1, 2], decode_codes(vq, codes[1, 2:3])[0])
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        frames_to_codes(vq, floats * 255)
    with pytest.raises(ValueError, match="image_size = 8"):
        frames_to_codes(vq, np.zeros((1, 16, 16, 3), dtype=np.uint8), image_size=8)
    with pytest.raises(ValueError, match="uint8"):
        frames_to_codes(vq, np.zeros((1, 8, 8, 3), dtype=np.float32))
    with pytest.raises(ValueError, match=r"\[0, 64\)"):
        codes_to_frames(vq, torch.full((1, 2, 2), 64))


def test_codebook_lookup_round_trip_is_consistent(vq):
    codes = torch.randint(0, 64, (3, 2, 2), generator=torch.Generator().manual_seed(0))
    latents = codes_to_latents(vq, codes)
    assert latents.shape == (3, vq.config.vq_embed_dim, 2, 2)
    # Quantizing a codebook vector gives back its own index: decoded grids are fixed points at the code level.
    _, _, (_, _, indices) = vq.quantize(latents)
    assert torch.equal(indices.reshape(3, 2, 2), codes)
    assert np.array_equal(codes_to_frames(vq, codes), codes_to_frames(vq, codes.clone()))


def test_image_tokenizer_is_checked_against_the_config(config):
    with pytest.raises(ValueError, match=r"codebook has 128 codes.*image_vocab_size \(64\)"):
        check_image_tokenizer(small_vq(codebook_size=128), config)
    with pytest.raises(ValueError, match="code_grid_size is 4"):
        check_image_tokenizer(small_vq(), small_config(code_grid_size=4))
    check_image_tokenizer(small_vq(), config)


def test_processor_holds_no_weights(processor):
    assert isinstance(processor, ProcessorMixin) and not isinstance(processor, torch.nn.Module)
    assert not hasattr(processor, "to") and not hasattr(processor, "image_tokenizer")
    assert processor("a red circle moving left", frame_number=2)["input_ids"] == [
        processor.keyframe_prefix("a red circle moving left", 2)
    ]


def test_prefixes_take_the_prompt_or_its_ids(processor):
    ids = processor.encode_text("a red circle moving left")
    assert processor.keyframe_prefix(ids, 3) == processor.keyframe_prefix("a red circle moving left", 3)
    a, b = torch.zeros(2, 2, dtype=torch.long), torch.ones(2, 2, dtype=torch.long)
    assert processor.interpolation_prefix(ids, a, b, 2) == processor.interpolation_prefix(
        "a red circle moving left", a, b, 2
    )


def test_from_config_values(processor):
    rebuilt = FlashVideoProcessor.from_config_values(
        processor.text_tokenizer,
        text_vocab_size=32,
        image_vocab_size=64,
        max_frames=8,
        image_size=8,
        code_grid_size=2,
    )
    assert rebuilt.layout == processor.layout


# ---------------------------------------------------------------------------------------------- save / load


def test_save_and_load_round_trip(processor, tmp_path):
    processor.save_pretrained(tmp_path)
    assert (tmp_path / "text_tokenizer" / "tokenizer.json").is_file()
    assert not (tmp_path / "image_tokenizer").exists()  # the VQ model is the pipeline's, saved by it
    saved = json.loads((tmp_path / "processor_config.json").read_text())
    assert saved["processor_class"] == "FlashVideoProcessor"
    assert saved["layout"] == processor.layout.to_dict()

    loaded = FlashVideoProcessor.from_pretrained(tmp_path)
    assert loaded.layout == processor.layout
    for text in ["a red circle moving left", "A Purple HEXAGON, moving sideways!"]:
        assert loaded.encode_text(text) == processor.encode_text(text)
    codes = torch.randint(0, 64, (4, 2, 2), generator=torch.Generator().manual_seed(3))
    assert loaded.build_keyframe_sample("a red circle", codes) == processor.build_keyframe_sample(
        "a red circle", codes
    )
    assert loaded.fingerprint() == processor.fingerprint()
    assert isinstance(AutoProcessor.from_pretrained(tmp_path), FlashVideoProcessor)


def test_checkpoints_from_before_the_split_load_unchanged(tmp_path):
    """The shipped checkpoint's processor_config.json still names the image tokenizer's folder; the processor
    ignores it and the image tokenizer loader follows it."""
    shipped = flashvideo.default_checkpoint()
    assert json.loads((shipped / "processor_config.json").read_text())["image_tokenizer_subfolder"] == "image_tokenizer"
    processor = FlashVideoProcessor.from_pretrained(shipped)
    assert processor.layout.image_vocab_size == 512
    assert load_image_tokenizer(shipped).config.num_vq_embeddings == 512
    # An old checkpoint whose processor_config.json put the VQ model under another folder name.
    processor.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "processor_config.json").read_text())
    saved["image_tokenizer_subfolder"] = "vq"
    (tmp_path / "processor_config.json").write_text(json.dumps(saved))
    small_vq().save_pretrained(tmp_path / "vq")
    assert load_image_tokenizer(tmp_path).config.num_vq_embeddings == 64


def test_from_pretrained_needs_a_processor_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="processor_config.json"):
        FlashVideoProcessor.from_pretrained(tmp_path)


def test_fingerprints_follow_the_tokenizers(config):
    tokenizer = build_text_tokenizer(CAPTIONS, vocab_size=32)
    first = FlashVideoProcessor(tokenizer, config)
    assert first.fingerprint() == FlashVideoProcessor(tokenizer, config).fingerprint()
    other = build_text_tokenizer(CAPTIONS[:3], vocab_size=32)
    assert first.fingerprint() != FlashVideoProcessor(other, config).fingerprint()
    assert image_tokenizer_fingerprint(small_vq(seed=0)) == image_tokenizer_fingerprint(small_vq(seed=0))
    assert image_tokenizer_fingerprint(small_vq(seed=0)) != image_tokenizer_fingerprint(small_vq(seed=1))
    # A truncating call leaves its settings in the backend tokenizer; they do not change encode_text.
    before = first.fingerprint()
    tokenizer("a red circle", truncation=True, max_length=2)
    assert tokenizer.backend_tokenizer.truncation is not None
    assert first.fingerprint() == before


# ---------------------------------------------------------------------------------------------- batching


def test_pad_batch(config):
    samples = [
        {"input_ids": [20, 21, 50], "labels": [-100, -100, 50]},
        {"input_ids": torch.tensor([22, 51]), "labels": torch.tensor([-100, 51])},
    ]
    pad = config.pad_token_id
    right = pad_batch(samples, pad)
    assert right["input_ids"].tolist() == [[20, 21, 50], [22, 51, pad]]
    assert right["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert right["labels"].tolist() == [[-100, -100, 50], [-100, 51, -100]]
    assert all(tensor.dtype == torch.long for tensor in right.values())

    left = pad_batch(samples, pad, pad_to_multiple_of=4, padding_side="left")
    assert left["input_ids"].tolist() == [[pad, 20, 21, 50], [pad, pad, 22, 51]]
    assert left["attention_mask"].tolist() == [[0, 1, 1, 1], [0, 0, 1, 1]]
    assert left["labels"].tolist() == [[-100, -100, -100, 50], [-100, -100, -100, 51]]

    prompts = pad_batch(pad_token_id=pad, samples=[{"input_ids": [1, 2]}, {"input_ids": [3]}])
    assert set(prompts) == {"input_ids", "attention_mask"}

    with pytest.raises(ValueError, match="all have labels or none"):
        pad_batch(pad_token_id=pad, samples=[samples[0], {"input_ids": [1]}])
    with pytest.raises(ValueError, match="padding_side"):
        pad_batch(samples, pad, padding_side="middle")
    with pytest.raises(ValueError, match="same length"):
        pad_batch(pad_token_id=pad, samples=[{"input_ids": [1, 2], "labels": [1]}])
    with pytest.raises(ValueError, match="at least one sample"):
        pad_batch(pad_token_id=pad, samples=[])
