"""Clean clips (DESIGN §10): one object in every frame, the prompted color, a straight track at the Shapes speed."""

import numpy as np
import pytest
import torch

import flashvideo
from flashvideo.data import shapes_dataset
from flashvideo.data.shapes import render_clip
from flashvideo.evaluation.evaluate import evaluation_set
from flashvideo.evaluation.shapes import (
    CLEAN_CLIP_CRITERIA,
    CLEAN_CLIP_FAILURES,
    CleanClipCriteria,
    accuracy,
    clean_clip_report,
    fit_constant_velocity,
    fit_track,
    frame_objects,
    largest_jump,
    summarize_clean_clips,
    track_passes,
)
from flashvideo.image_tokenizer import codes_to_frames, frames_to_codes, load_image_tokenizer


@pytest.fixture(scope="module")
def truth():
    return shapes_dataset(48, seed=4243)  # unseen in training (seeds 0 and 1)


def test_ground_truth_clips_are_all_clean(truth):
    clean = accuracy(truth[:]["video"], truth.remove_columns("video"))["clean_clips"]
    assert clean["clean_rate"] == 1.0 and clean["clean_rate_stderr"] == 0.0 and clean["num_clips"] == 48
    assert clean["one_object_rate"] == clean["stray_free_rate"] == clean["color_frame_share"] == 1.0
    assert clean["median_track_rms"] < 1e-6 and clean["median_largest_jump"] == pytest.approx(2.0)
    assert clean["median_speed"] == pytest.approx(2.0) and set(clean["failure_rates"].values()) == {0.0}


def test_vq_reconstructions_through_the_shipped_tokenizer_are_all_clean():
    vq = load_image_tokenizer(flashvideo.default_checkpoint())
    videos, _, labels = evaluation_set(6, seed=4243)  # every color once; 96 frames keep the test to seconds
    with torch.no_grad():
        codes = frames_to_codes(vq, videos.reshape(-1, *videos.shape[2:]), batch_size=64)
        restored = codes_to_frames(vq, codes).reshape(videos.shape)
    clean = accuracy(restored, labels)["clean_clips"]
    assert clean["clean_rate"] == 1.0, clean
    assert clean["median_track_rms"] < 0.3 and clean["median_largest_jump"] < 3.0


def moved(clip: np.ndarray, source: int, target: int) -> np.ndarray:
    """The clip with frame `source` taken out and put back at place `target`."""
    order = [t for t in range(len(clip)) if t != source]
    order.insert(target, source)
    return clip[order]


def with_blob(clip: np.ndarray, frame: int, side: int) -> np.ndarray:
    """The clip with a grey `side` × `side` blob in a corner of one frame (the object never reaches it here)."""
    clip = clip.copy()
    clip[frame, -side:, -side:] = 200
    return clip


CLIP = render_clip("green", "circle", "up", size=16, start=(10, 40))


@pytest.mark.parametrize(
    "broken, failures",
    [
        (moved(CLIP, 12, 3), ["track_rms", "jump"]),  # one frame shuffled
        (np.concatenate([CLIP[:7], np.zeros_like(CLIP[:1]), CLIP[8:]]), ["objects", "color"]),  # one frame blanked
        (with_blob(CLIP, 5, 4), ["objects", "stray_pixels"]),  # a stray blob: a second object
        (with_blob(CLIP, 5, 3), ["stray_pixels"]),  # a speck of 9 px, too small for an object
    ],
    ids=["shuffled", "blanked", "stray-blob", "stray-speck"],
)
def test_broken_clips_are_not_clean(broken, failures):
    assert clean_clip_report(CLIP, "green")["clean"]
    report = clean_clip_report(broken, "green")
    assert not report["clean"] and report["failures"] == failures


def test_an_object_moving_4_px_per_frame_is_not_clean():
    fast = shapes_dataset(4, seed=7, num_frames=11, speed_range=(4.0, 4.0))
    for clip, color in zip(fast["video"], fast["color"]):
        report = clean_clip_report(clip, color)
        assert report["failures"] == ["speed"] and report["speed"] == pytest.approx(4.0)


def test_wrong_color_fails_from_a_single_frame_of_sixteen():
    assert clean_clip_report(CLIP, "cyan")["failures"] == ["color"]
    recolored = CLIP.copy()
    recolored[4][recolored[4].any(axis=-1)] = (40, 220, 230)  # one frame cyan: 15/16 < 95%
    report = clean_clip_report(recolored, "green")
    assert report["failures"] == ["color"] and report["color_frames"] == 15 / 16


def test_key_frames_are_judged_per_original_frame():
    key_frames = CLIP[::5]
    assert clean_clip_report(key_frames, "green", frame_stride=5)["clean"]
    report = clean_clip_report(key_frames, "green")  # 10 px between frames read as 10 px/frame
    assert report["failures"] == ["speed", "jump"] and report["largest_jump"] == pytest.approx(10.0)


def test_frame_objects_counts_diagonal_neighbours_as_one_object_and_ignores_dark_pixels():
    frame = np.zeros((32, 32, 3), np.uint8)
    frame[2:6, 2:6] = (230, 40, 40)
    frame[6:10, 6:10] = (230, 40, 40)  # touches the first square only at a corner: 8-connected
    frame[20:22, 20:22] = (70, 70, 70)  # max channel 70 is black
    frame[25:27, 25:28] = 255  # 6 bright pixels: stray, not an object
    found = frame_objects(frame)
    assert found.num_objects == 1 and found.stray_pixels == 6
    assert found.centroid == pytest.approx((5.5, 5.5)) and found.mean_color == pytest.approx((230, 40, 40))
    assert frame_objects(np.zeros((8, 8, 3), np.uint8)) == (0, 0, None, None)
    with pytest.raises(ValueError, match="uint8"):
        frame_objects(frame.astype(np.float32))


def test_track_fit_and_jumps():
    times = np.arange(6.0)
    line = np.stack([1 + 2 * times, 3 - 0.5 * times], axis=1)
    assert fit_track(times, line) == pytest.approx((0.0, np.hypot(2, 0.5)), abs=1e-12)
    wiggle = line + np.stack([np.tile([1.0, -1.0], 3), np.zeros(6)], axis=1)  # ±1 px off an unchanged fit
    rms, speed = fit_track(times, wiggle)
    assert speed == pytest.approx(np.hypot(2, 0.5), abs=0.2) and rms == pytest.approx(1.0, abs=0.15)
    residuals, velocity = fit_constant_velocity(times, wiggle)
    assert residuals.shape == (6, 2) and np.abs(residuals[:, 1]).max() < 1e-12  # y lies on the line
    assert velocity == pytest.approx((2 - 3 / 17.5, -0.5))  # the ±1 wiggle tilts the x fit by -3/17.5 px/frame
    assert largest_jump([0, 1, 4], [(0, 0), (3, 4), (3, 19)]) == 5.0  # 15 px over 3 frames
    assert track_passes(1.5, 2.5, 5.0) == {"track_rms": True, "speed": True, "jump": True}  # the bounds are in
    assert track_passes(None, 1.4, 5.1) == {"track_rms": False, "speed": False, "jump": False}
    for bad in (([0], [(0, 0)]), ([0, 0], [(0, 0), (1, 1)]), ([0, 1], [(0, 0)])):
        with pytest.raises(ValueError, match="track"):
            fit_track(*bad)
    with pytest.raises(ValueError, match="increasing"):
        largest_jump([1, 0], [(0, 0), (1, 1)])


def test_summary_standard_error_medians_and_failures():
    reports = [clean_clip_report(CLIP, "green")] * 3 + [clean_clip_report(np.zeros_like(CLIP), "green")]
    summary = summarize_clean_clips(reports)
    assert summary["clean_rate"] == 0.75 and summary["clean_rate_stderr"] == pytest.approx(np.sqrt(0.75 * 0.25 / 4))
    assert summary["clips_with_track"] == 3 and summary["median_speed"] == pytest.approx(2.0)  # the empty clip has none
    assert summary["one_object_rate"] == 0.75 and summary["color_frame_share"] == 0.75
    assert summary["failure_rates"] == {name: 0.25 if name != "stray_pixels" else 0.0 for name in CLEAN_CLIP_FAILURES}
    with pytest.raises(ValueError, match="empty"):
        summarize_clean_clips([])


def test_criteria_are_the_design_and_checked():
    assert (CLEAN_CLIP_CRITERIA.bright_level, CLEAN_CLIP_CRITERIA.min_object_pixels) == (70, 12)
    assert (CLEAN_CLIP_CRITERIA.max_stray_pixels, CLEAN_CLIP_CRITERIA.min_color_share) == (4, 0.95)
    assert (CLEAN_CLIP_CRITERIA.max_track_rms, CLEAN_CLIP_CRITERIA.max_jump) == (1.5, 5.0)
    assert (CLEAN_CLIP_CRITERIA.min_speed, CLEAN_CLIP_CRITERIA.max_speed) == (1.5, 2.5)
    lenient = CleanClipCriteria(max_speed=4.5)
    assert clean_clip_report(CLIP[::2], "green", criteria=lenient)["clean"]  # 4 px/frame
    with pytest.raises(ValueError, match="min_speed"):
        CleanClipCriteria(min_speed=3.0)
    with pytest.raises(ValueError, match="color"):
        clean_clip_report(CLIP, "purple")
    with pytest.raises(ValueError, match="frame_stride"):
        clean_clip_report(CLIP, "green", frame_stride=0)
