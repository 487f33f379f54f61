"""Tests of `tokenize_video_dataset`: sample kinds, cached and fingerprinted `Dataset.map`, multiprocessing."""

import datasets
import numpy as np
import pytest
import torch

from flashvideo.configuration_flashvideo import FlashVideoConfig
from flashvideo.data.tokenized import drop_prompts, interpolation_windows, keyframe_indices, tokenize_video_dataset
from flashvideo.image_tokenizer import build_vq_model, frames_to_codes
from flashvideo.processing_flashvideo import FlashVideoProcessor
from flashvideo.text_tokenizer import build_text_tokenizer


TEXTS = ["a red circle moving left", "a blue square moving up", "a green triangle moving down"]
NUM_FRAMES = 8


def make_processor() -> FlashVideoProcessor:
    config = FlashVideoConfig(
        text_vocab_size=32, image_vocab_size=64, max_frames=8, image_size=8, code_grid_size=2
    )
    return FlashVideoProcessor(build_text_tokenizer(TEXTS, vocab_size=32), config)


def make_vq(seed: int = 0):
    """The image tokenizer that turns the 8×8 frames into 2×2 codes (random weights from `seed`)."""
    torch.manual_seed(seed)
    return build_vq_model(8, 2, 64, block_out_channels=(8, 16, 16), norm_num_groups=8, vq_embed_dim=8)


def make_videos(count: int = 3) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(count, NUM_FRAMES, 8, 8, 3), dtype=np.uint8)


def on_disk_dataset(path, videos: np.ndarray) -> datasets.Dataset:
    """The columns `shapes_dataset` has (Array4D uint8 video, text), saved so that `map` caches to disk."""
    features = datasets.Features(
        {"video": datasets.Array4D(shape=videos.shape[1:], dtype="uint8"), "text": datasets.Value("string")}
    )
    texts = [TEXTS[i % len(TEXTS)] for i in range(len(videos))]
    datasets.Dataset.from_dict({"video": videos, "text": texts}, features=features).save_to_disk(str(path))
    return datasets.load_from_disk(str(path))


@pytest.fixture(scope="module")
def processor():
    return make_processor()


@pytest.fixture(scope="module")
def vq():
    return make_vq()


def test_frame_selection():
    assert keyframe_indices(16, 4) == [0, 5, 10, 15]
    assert keyframe_indices(8, 4) == [0, 2, 5, 7]
    assert keyframe_indices(16, 1) == [0]
    assert interpolation_windows(16, 4) == [(0, 5), (5, 10), (10, 15)]
    assert interpolation_windows(8, 2) == [(0, 3), (3, 6)]
    with pytest.raises(ValueError, match="video length"):
        keyframe_indices(3, 4)
    with pytest.raises(ValueError, match="video length"):
        interpolation_windows(4, 3)


def test_keyframe_samples_match_the_processor(processor, vq, tmp_path):
    videos = make_videos()
    dataset = on_disk_dataset(tmp_path / "raw", videos)
    tokenized = tokenize_video_dataset(
        dataset, processor, image_tokenizer=vq, sample_kind="keyframe", num_key_frames=4, batch_size=2
    )
    assert tokenized.column_names == ["input_ids", "labels"]
    assert len(tokenized) == len(videos)
    for row, video in enumerate(videos):
        codes = frames_to_codes(vq, video[[0, 2, 5, 7]])
        assert tokenized[row] == processor.build_keyframe_sample(dataset[row]["text"], codes)


def test_interpolation_samples_match_the_processor(processor, vq, tmp_path):
    videos = make_videos(2)
    dataset = on_disk_dataset(tmp_path / "raw", videos)
    tokenized = tokenize_video_dataset(
        dataset, processor, image_tokenizer=vq, sample_kind="interpolation", interpolation_frames=2
    )
    # Windows (0, 3) and (3, 6) of each 8-frame video: two samples per video.
    assert len(tokenized) == 4
    codes = frames_to_codes(vq, videos[1])
    text = dataset[1]["text"]
    assert tokenized[2] == processor.build_interpolation_sample(text, codes[0], codes[3], codes[1:3])
    assert tokenized[3] == processor.build_interpolation_sample(text, codes[3], codes[6], codes[4:6])
    unlabelled = tokenize_video_dataset(
        dataset, processor, image_tokenizer=vq, sample_kind="interpolation", interpolation_frames=2,
        label_key_frames=False,
    )
    assert unlabelled[3] == processor.build_interpolation_sample(
        text, codes[3], codes[6], codes[4:6], label_key_frames=False
    )
    assert unlabelled._fingerprint != tokenized._fingerprint


def test_second_call_loads_the_cache(tmp_path, monkeypatch):
    processor, vq = make_processor(), make_vq()
    dataset = on_disk_dataset(tmp_path / "raw", make_videos())
    first = tokenize_video_dataset(dataset, processor, image_tokenizer=vq, num_key_frames=3)
    assert first.cache_files, "the map result should be written next to the on-disk data set"

    def no_encoding(*args, **kwargs):
        raise AssertionError("a cached result must not re-encode frames")

    # The fingerprint depends on the weights, not on the method, so this only fails if the cache is missed.
    monkeypatch.setattr(vq, "encode", no_encoding)
    second = tokenize_video_dataset(dataset, processor, image_tokenizer=vq, num_key_frames=3)
    assert second._fingerprint == first._fingerprint
    assert second.cache_files == first.cache_files
    assert second.to_dict() == first.to_dict()


def test_fingerprint_changes_with_the_processor_and_arguments(tmp_path):
    dataset = on_disk_dataset(tmp_path / "raw", make_videos())
    processor = make_processor()
    base = tokenize_video_dataset(dataset, processor, image_tokenizer=make_vq(seed=0), num_key_frames=3)
    other_weights = tokenize_video_dataset(dataset, processor, image_tokenizer=make_vq(seed=1), num_key_frames=3)
    other_count = tokenize_video_dataset(dataset, processor, image_tokenizer=make_vq(seed=0), num_key_frames=2)
    fingerprints = {base._fingerprint, other_weights._fingerprint, other_count._fingerprint}
    assert len(fingerprints) == 3
    assert other_weights.cache_files != base.cache_files


def test_two_processes_give_the_same_result(processor, vq, tmp_path):
    videos = make_videos(4)
    # Two copies in two directories, so the second map cannot reuse the first one's cache files.
    single = tokenize_video_dataset(
        on_disk_dataset(tmp_path / "a", videos), processor, image_tokenizer=vq, batch_size=1
    )
    parallel = tokenize_video_dataset(
        on_disk_dataset(tmp_path / "b", videos), processor, image_tokenizer=vq, batch_size=1, num_proc=2
    )
    assert len(parallel.cache_files) == 2
    assert parallel.to_dict() == single.to_dict()
    assert parallel._fingerprint == single._fingerprint


def test_bad_arguments(processor, vq):
    dataset = datasets.Dataset.from_dict({"video": make_videos(1).tolist(), "text": TEXTS[:1]})
    with pytest.raises(ValueError, match="sample_kind must be one of"):
        tokenize_video_dataset(dataset, processor, image_tokenizer=vq, sample_kind="random")
    with pytest.raises(ValueError, match="interpolation_frames .* is required"):
        tokenize_video_dataset(dataset, processor, image_tokenizer=vq, sample_kind="interpolation")
    with pytest.raises(ValueError, match=r"interpolation_frames must be an integer in \[1, 6\]"):
        tokenize_video_dataset(
            dataset, processor, image_tokenizer=vq, sample_kind="interpolation", interpolation_frames=7
        )
    with pytest.raises(ValueError, match=r"num_key_frames must be an integer in \[1, 8\]"):
        tokenize_video_dataset(dataset, processor, image_tokenizer=vq, num_key_frames=9)
    with pytest.raises(ValueError, match="text_column 'caption'"):
        tokenize_video_dataset(dataset, processor, image_tokenizer=vq, text_column="caption")
    short = datasets.Dataset.from_dict({"video": make_videos(1)[:, :4].tolist(), "text": TEXTS[:1]})
    with pytest.raises(ValueError, match=r"interpolation_frames \(3\) \+ 2 must be at most the video length"):
        tokenize_video_dataset(
            short, processor, image_tokenizer=vq, sample_kind="interpolation", interpolation_frames=3
        )
    with pytest.raises(
        ValueError, match=r"num_key_frames \(5\) must be at most the video length \(4 frames\)"
    ):
        tokenize_video_dataset(short, processor, image_tokenizer=vq, num_key_frames=5)
    floats = datasets.Dataset.from_dict({"video": (make_videos(1) / 255.0).tolist(), "text": TEXTS[:1]})
    with pytest.raises(ValueError, match=r"uint8 pixels \(integers in \[0, 255\]\), got dtype float"):
        tokenize_video_dataset(floats, processor, image_tokenizer=vq)


def test_drop_prompts_removes_the_caption_of_a_seeded_share(processor):
    codes = torch.randint(0, 64, (4, 2, 2), generator=torch.Generator().manual_seed(0))
    samples = [processor.build_keyframe_sample(TEXTS[i % 3], codes) for i in range(60)]
    dataset = datasets.Dataset.from_list(samples)
    start, end = processor.layout.text_token_range
    dropped = drop_prompts(dataset, 0.25, seed=3, text_token_range=(start, end))
    stripped = [i for i in range(len(dataset)) if dropped[i] != dataset[i]]
    assert 5 <= len(stripped) <= 25  # about a quarter of 60
    frame_ids = processor.codes_to_ids(codes).reshape(4, -1).tolist()
    for i in stripped:
        sample = dropped[i]
        serials = [processor.layout.serial_token_id(k + 1) for k in range(4)]
        assert sample["input_ids"] == sum(([serial] + ids for serial, ids in zip(serials, frame_ids)), [])
        assert sample["labels"] == sum(([-100] + ids for ids in frame_ids), [])
    again = drop_prompts(dataset, 0.25, seed=3, text_token_range=(start, end))
    assert [i for i in range(len(dataset)) if again[i] != dataset[i]] == stripped  # a resumed run sees the same data
    assert drop_prompts(dataset, 0.0, seed=3, text_token_range=(start, end)) is dataset
    with pytest.raises(ValueError, match=r"proportion must be a number in \[0, 1\]"):
        drop_prompts(dataset, 1.5, seed=3, text_token_range=(start, end))


def test_the_old_layout_keyword_still_works_with_a_warning(processor, vq):
    # `layout=` was the sample kind's old name; the word now means only the vocabulary layout.
    dataset = datasets.Dataset.from_dict({"video": make_videos(1).tolist(), "text": TEXTS[:1]})
    new = tokenize_video_dataset(
        dataset, processor, image_tokenizer=vq, sample_kind="interpolation", interpolation_frames=2
    )
    with pytest.warns(FutureWarning, match="sample_kind"):
        old = tokenize_video_dataset(
            dataset, processor, image_tokenizer=vq, layout="interpolation", interpolation_frames=2
        )
    assert old._fingerprint == new._fingerprint and old["input_ids"] == new["input_ids"]
