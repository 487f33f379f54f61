"""The order of an interpolation sample's inserted frames (FlashVideoConfig.interpolation_order): the samples,
the prefixes the pipeline feeds and the reordering into time order all follow the one definition."""

import numpy as np
import pytest
import torch

from flashvideo import FlashVideoConfig, FlashVideoForCausalLM, FlashVideoPipeline
from flashvideo.configuration_flashvideo import INTERPOLATION_ORDERS
from flashvideo.data.tokenized import tokenize_video_dataset

from test_pipeline import PROMPT, FeedRecorder


@pytest.mark.parametrize("num_inserted", [1, 2, 3, 4])  # tiny_config has 6 serial numbers: n + 2 <= 6
def test_outside_in_generates_every_inserted_frame_beside_a_known_one(tiny_processor, num_inserted):
    serial = tiny_processor.interpolation_serial_numbers(num_inserted, "outside_in")
    assert serial[:2] == [1, num_inserted + 2] and sorted(serial[2:]) == list(range(2, num_inserted + 2))
    for position, number in enumerate(serial[2:], start=2):
        assert {number - 1, number + 1} & set(serial[:position])  # a neighbour one frame away is already there
    forward = tiny_processor.interpolation_serial_numbers(num_inserted)
    assert forward == [1, num_inserted + 2, *range(2, num_inserted + 2)]  # the paper's order, unchanged


def test_outside_in_order_of_four_frames(tiny_processor):
    assert tiny_processor.interpolation_serial_numbers(4, "outside_in") == [1, 6, 2, 5, 3, 4]
    assert tiny_processor.interpolation_time_offsets(4, "outside_in") == [0, 5, 1, 4, 2, 3]
    with pytest.raises(ValueError, match="order must be one of \\['forward', 'outside_in'\\]"):
        tiny_processor.interpolation_serial_numbers(4, "zigzag")


@pytest.mark.parametrize("order", INTERPOLATION_ORDERS)
def test_samples_follow_the_order_and_reorder_back_to_time_order(tiny_processor, tiny_config, order):
    grid, tokens = tiny_config.code_grid_size, tiny_config.tokens_per_frame
    frames = np.stack([np.full((grid, grid), value) for value in range(6)])  # frame t holds code t everywhere
    sample = tiny_processor.build_interpolation_sample(PROMPT, frames[0], frames[5], frames[1:5], order=order)
    labelled = [token for token, label in zip(sample["input_ids"], sample["labels"]) if label != -100]
    codes = tiny_processor.ids_to_codes(labelled).view(-1, tokens)
    in_generation_order = codes[:, 0].tolist()
    assert in_generation_order == tiny_processor.interpolation_time_offsets(4, order)  # frame t is code t
    first_text_id, sn_1 = tiny_config.text_token_range[0], tiny_config.serial_token_id(1)
    serial = [token - sn_1 + 1 for token in sample["input_ids"] if token < first_text_id]
    assert serial == tiny_processor.interpolation_serial_numbers(4, order)  # SN_s before frame s - 1 of the clip
    assert tiny_processor.reorder_interpolated(codes, 4, order)[:, 0].tolist() == [0, 1, 2, 3, 4, 5]


def test_config_checks_and_saves_the_order(tmp_path):
    with pytest.raises(ValueError, match="interpolation_order must be one of"):
        FlashVideoConfig(interpolation_order="backward")
    FlashVideoConfig(interpolation_order="outside_in").save_pretrained(tmp_path)
    assert FlashVideoConfig.from_pretrained(tmp_path).interpolation_order == "outside_in"
    assert FlashVideoConfig().interpolation_order == "forward"  # and so every checkpoint saved before it


def test_the_pipeline_generates_in_the_interpolation_models_order(tiny_model, tiny_processor, tiny_vq, tiny_config):
    """An outside-in interpolation model is fed [A][B] then F_2, F_5, F_3, F_4 with their serial numbers, and the
    frames land at their times; the key-frame model's order is not read."""
    config = FlashVideoConfig(**{**tiny_config.to_dict(), "interpolation_order": "outside_in"})
    torch.manual_seed(1)
    interpolation_model = FlashVideoForCausalLM(config).eval()
    pipe = FlashVideoPipeline(
        model=tiny_model, processor=tiny_processor, vqvae=tiny_vq, interpolation_model=interpolation_model,
        device="cpu", show_progress=False,
    )  # fmt: skip
    tokens, grid, start = tiny_config.tokens_per_frame, tiny_config.code_grid_size, tiny_config.image_token_range[0]
    codes = torch.randint(
        0, tiny_config.image_vocab_size, (1, 2, grid, grid), generator=torch.Generator().manual_seed(2)
    )
    recorder = FeedRecorder(interpolation_model)
    video = pipe.interpolate(
        [PROMPT], codes, num_inserted=4, speculative=False, generator=torch.Generator().manual_seed(0)
    )
    recorder.remove()
    text, sn = tiny_processor.encode_text(PROMPT), tiny_config.serial_token_id
    calls = [call[0].tolist() for call in recorder.calls]
    a, b = ((codes[0, i].flatten() + start).tolist() for i in (0, 1))
    assert calls[0] == text + [sn(1)] + a + text + [sn(6)] + b + text + [sn(2)]
    generated, position = [], 1
    for number in (5, 3, 4):  # after F_2: F_5, F_3, F_4, each after its [text][SN]
        generated.append([call[0] for call in calls[position : position + tokens]])
        position += tokens
        assert calls[position] == text + [sn(number)]
        position += 1
    generated.append([call[0] for call in calls[position : position + tokens]])
    assert len(calls) == position + tokens
    f2, f5, f3, f4 = generated
    assert (video[0].flatten(1) + start).tolist() == [a, f2, f3, f4, f5, b]


def test_speculative_outside_in_interpolation_gives_the_tokens_of_plain_sampling(tiny_pipeline, tiny_config):
    """Drafts copy the known frame nearest in time (B for F_5); verification keeps the sampled tokens exactly."""
    tiny_pipeline.interpolation_model.config.interpolation_order = "outside_in"
    try:
        grid = tiny_config.code_grid_size
        codes = torch.randint(
            0, tiny_config.image_vocab_size, (1, 2, grid, grid), generator=torch.Generator().manual_seed(3)
        )
        clips = [
            tiny_pipeline.interpolate([PROMPT], codes, num_inserted=4, speculative=speculative, do_sample=False)
            for speculative in (False, True)
        ]
    finally:
        tiny_pipeline.interpolation_model.config.interpolation_order = "forward"
    assert torch.equal(clips[0], clips[1])


def test_tokenized_interpolation_samples_follow_the_order(tiny_processor, tiny_vq):
    import datasets

    rng = np.random.default_rng(0)
    videos = datasets.Dataset.from_dict(
        {"video": [rng.integers(0, 256, (6, 16, 16, 3), dtype=np.uint8)], "text": [PROMPT]}
    )
    samples = {
        order: tokenize_video_dataset(
            videos, tiny_processor, image_tokenizer=tiny_vq, sample_kind="interpolation", interpolation_frames=4,
            interpolation_order=order,
        )[0]
        for order in INTERPOLATION_ORDERS
    }  # fmt: skip
    forward, outside_in = samples["forward"]["input_ids"], samples["outside_in"]["input_ids"]
    assert forward != outside_in and sorted(forward) == sorted(outside_in)  # the same frames, another order
    with pytest.raises(ValueError, match="interpolation_order must be one of"):
        tokenize_video_dataset(
            videos, tiny_processor, image_tokenizer=tiny_vq, sample_kind="interpolation", interpolation_frames=4,
            interpolation_order="reverse",
        )  # fmt: skip
