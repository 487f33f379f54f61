"""Tests of the procedural Shapes data set (DESIGN §6) and of the Shapes clip analyzer."""

import datasets
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from flashvideo.data import shapes_dataset
from flashvideo.data.shapes import (
    COLORS,
    DIRECTIONS,
    SHAPES,
    make_prompt,
    max_speed,
    parse_prompt,
    prompts_for_all_attributes,
    render_clip,
    sample_clip_params,
    shape_mask,
)
from flashvideo.evaluation.shapes import accuracy, analyze_clip

STEP = {"left": (-2, 0), "right": (2, 0), "up": (0, -2), "down": (0, 2)}


@pytest.fixture(scope="module")
def dataset():
    return shapes_dataset(300, seed=2024)


def object_boxes(clip: np.ndarray) -> list[tuple[int, int, int, int]]:
    """(top, left, height, width) of the non-black pixels of each frame."""
    boxes = []
    for frame in clip:
        rows = np.flatnonzero(frame.any(axis=(1, 2)))
        cols = np.flatnonzero(frame.any(axis=(0, 2)))
        boxes.append((rows[0], cols[0], rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1))
    return boxes


def test_grammar_constants_are_exactly_the_design():
    assert COLORS == {
        "red": (230, 40, 40),
        "green": (40, 200, 60),
        "blue": (50, 90, 240),
        "yellow": (240, 220, 40),
        "magenta": (220, 60, 220),
        "cyan": (40, 220, 230),
    }
    assert set(SHAPES) == {"circle", "square", "triangle"}
    assert set(DIRECTIONS) == {"left", "right", "up", "down"}


def test_dataset_schema_and_formats(dataset):
    assert dataset.column_names == ["video", "text", "color", "shape", "direction", "speed"]
    assert set(dataset["speed"]) == {2.0}
    feature = dataset.features["video"]
    assert type(feature).__name__ == "Array4D"
    assert feature.shape == (16, 64, 64, 3) and feature.dtype == "uint8"
    row = dataset[0]
    assert isinstance(row["video"], np.ndarray) and row["video"].dtype == np.uint8
    assert row["video"].shape == (16, 64, 64, 3)
    assert isinstance(row["text"], str)
    # The generic numpy format (which upcasts integers) still gives the same array.
    np.testing.assert_array_equal(dataset.with_format("numpy")[0]["video"], row["video"])
    assert dataset.with_format("numpy", dtype=np.uint8)[0]["video"].dtype == np.uint8
    assert dataset[0:5]["video"].shape == (5, 16, 64, 64, 3)


def test_save_and_load_keep_video_and_format(tmp_path):
    original = shapes_dataset(5, seed=3)
    original.save_to_disk(str(tmp_path / "shapes"))
    loaded = datasets.load_from_disk(str(tmp_path / "shapes"))
    assert loaded.features == original.features
    assert loaded[4]["video"].dtype == np.uint8
    np.testing.assert_array_equal(loaded[:]["video"], original[:]["video"])
    assert loaded["text"] == original["text"]


def test_same_seed_same_dataset_and_different_seed_differs():
    first, second, other = shapes_dataset(24, seed=7), shapes_dataset(24, seed=7), shapes_dataset(24, seed=8)
    np.testing.assert_array_equal(first[:]["video"], second[:]["video"])
    assert first["text"] == second["text"]
    assert first._fingerprint == second._fingerprint != other._fingerprint
    assert first["text"] != other["text"]
    # Clip i does not depend on how many clips follow it.
    np.testing.assert_array_equal(shapes_dataset(10, seed=7)[:]["video"], first[:10]["video"])
    assert not np.array_equal(first[:]["video"], other[:]["video"])


def test_every_clip_follows_the_grammar(dataset):
    for row in dataset:
        color, shape, direction = row["color"], row["shape"], row["direction"]
        assert row["text"] == f"a {color} {shape} moving {direction}"
        clip = row["video"]
        # Black background, and every lit pixel exactly the clip's palette color.
        lit = clip.any(axis=-1)
        assert (clip[lit] == COLORS[color]).all()
        boxes = object_boxes(clip)
        top, left, height, width = boxes[0]
        assert height == width and 14 <= height <= 18
        area = shape_mask(shape, height).sum()
        dx, dy = STEP[direction]
        for t, box in enumerate(boxes):
            # The whole object is in every frame (a clipped or wrapped one would change these)...
            assert box[2:] == (height, width) and lit[t].sum() == area
            assert box[0] >= 0 and box[1] >= 0 and box[0] + height <= 64 and box[1] + width <= 64
            # ...and it moves exactly 2 px per frame along its direction.
            assert box[:2] == (top + dy * t, left + dx * t)


def test_all_attribute_values_occur(dataset):
    assert set(dataset["color"]) == set(COLORS)
    assert set(dataset["shape"]) == set(SHAPES)
    assert set(dataset["direction"]) == set(DIRECTIONS)


def test_shape_masks_have_the_expected_geometry():
    for size in range(14, 19):
        square, circle, triangle = (shape_mask(s, size) for s in ("square", "circle", "triangle"))
        assert square.all()
        assert 0.75 < circle.mean() < 0.83  # ≈ π/4
        assert (circle == circle.T).all() and (circle == circle[::-1]).all()
        assert 0.5 < triangle.mean() < 0.6
        # Apex up: rows widen downwards and the base fills the bottom row.
        widths = triangle.sum(axis=1)
        assert (np.diff(widths) >= 0).all() and widths[-1] == size and widths[0] <= 2
        assert (triangle == triangle[:, ::-1]).all()


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1), num_frames=st.integers(1, 16), image_size=st.sampled_from([48, 64, 96])
)
def test_sampled_params_keep_the_object_inside(seed, num_frames, image_size):
    params = sample_clip_params(np.random.default_rng(seed), num_frames=num_frames, image_size=image_size)
    clip = render_clip(**params, num_frames=num_frames, image_size=image_size)
    assert clip.shape == (num_frames, image_size, image_size, 3) and clip.dtype == np.uint8
    area = shape_mask(params["shape"], params["size"]).sum()
    assert all(frame.any(axis=-1).sum() == area for frame in clip)
    assert object_boxes(clip)[0][:2] == (params["start"][1], params["start"][0])


def test_sample_clip_params_is_deterministic():
    a = [sample_clip_params(np.random.default_rng(5)) for _ in range(3)]
    assert a[0] == a[1] == a[2] == sample_clip_params(5)
    assert len({repr(sample_clip_params(seed)) for seed in range(10)}) > 1


def test_other_sizes_scale_objects():
    ds = shapes_dataset(6, seed=1, num_frames=8, image_size=32)
    assert ds[0]["video"].shape == (8, 32, 32, 3)
    for clip in ds[:]["video"]:
        sides = {box[2] for box in object_boxes(clip)}
        assert len(sides) == 1 and 7 <= sides.pop() <= 9


def test_prompts_round_trip():
    prompts = prompts_for_all_attributes()
    assert len(prompts) == len(set(prompts)) == 6 * 3 * 4
    assert "a red circle moving right" in prompts
    for prompt in prompts:
        attrs = parse_prompt(prompt)
        assert make_prompt(**attrs) == prompt
    assert parse_prompt("A Blue Square moving UP.") == {"color": "blue", "shape": "square", "direction": "up"}
    with pytest.raises(ValueError, match="text="):
        parse_prompt("a purple circle moving right")


def test_bad_arguments_raise_value_errors_naming_them():
    with pytest.raises(ValueError, match="color"):
        render_clip("purple", "circle", "left")
    with pytest.raises(ValueError, match="shape"):
        render_clip("red", "hexagon", "left")
    with pytest.raises(ValueError, match="direction"):
        render_clip("red", "circle", "sideways")
    with pytest.raises(ValueError, match="start"):
        render_clip("red", "circle", "right", size=16, start=(30, 10))  # would run off the right edge
    with pytest.raises(ValueError, match="num_frames"):
        render_clip("red", "circle", "right", size=16, num_frames=30)
    with pytest.raises(ValueError, match="num_clips"):
        shapes_dataset(0)
    with pytest.raises(ValueError, match="seed"):
        shapes_dataset(2, seed=-1)
    with pytest.raises(ValueError, match="num_frames"):
        shapes_dataset(2, num_frames=25)


def test_speed_range_draws_a_speed_per_clip_and_keeps_objects_inside():
    ds = shapes_dataset(120, seed=11, num_frames=11, speed_range=(0.5, 4.5))
    speeds = np.asarray(ds["speed"])
    assert 0.5 <= speeds.min() < 1.0 and 4.0 < speeds.max() <= 4.5 and len(set(speeds.round(3))) > 100
    for row in ds:
        assert row["speed"] <= max_speed(int(object_boxes(row["video"])[0][2]), num_frames=11) + 1e-6
        boxes = object_boxes(row["video"])
        dx, dy = STEP[row["direction"]]
        (top, left), (last_top, last_left) = boxes[0][:2], boxes[-1][:2]
        # Whole object in every frame, at round(speed * t) px from the start along the direction.
        travelled = round(float(np.float32(row["speed"])) * 10)
        assert abs((last_top - top) - dy / 2 * travelled) <= 1 and abs((last_left - left) - dx / 2 * travelled) <= 1
        assert all(box[2:] == boxes[0][2:] for box in boxes)
    # The analyzer reads the drawn speed back, per frame.
    for row in ds.select(range(10)):
        vx, vy = analyze_clip(row["video"])["velocity"]
        assert abs(max(abs(vx), abs(vy)) - row["speed"]) < 0.1
    # Without a range nothing extra is drawn: the default stream is the one drawn before ranges existed
    # (values recorded from that version), so earlier data seeds give the same clips.
    rng = np.random.default_rng(0)
    assert [sample_clip_params(rng) for _ in range(2)] == [
        {"color": "cyan", "shape": "square", "direction": "up", "size": 15, "speed": 2.0, "start": (15, 30)},
        {"color": "red", "shape": "circle", "direction": "left", "size": 18, "speed": 2.0, "start": (41, 42)},
    ]


def test_render_clip_speed_moves_whole_pixels():
    clip = render_clip("red", "square", "right", size=14, start=(0, 20), speed=3)
    assert [box[1] for box in object_boxes(clip)] == [3 * t for t in range(16)]
    slow = render_clip("red", "square", "left", size=14, start=(40, 20), speed=0.5, num_frames=5)
    assert [box[1] for box in object_boxes(slow)] == [40, 40, 39, 38, 38]  # 40 - round(0.5 t), half to even


@pytest.mark.parametrize(
    "kwargs, named",
    [
        ({"speed_range": (3, 1)}, "speed_range"),
        ({"speed_range": (0, 1)}, "speed_range"),
        ({"speed_range": ("fast", 2)}, "speed_range"),
        ({"speed_range": (1, 2, 3)}, "speed_range"),
        ({"speed_range": (3.5, 4)}, "speed"),  # the largest object cannot travel 15 x 3.5 px in 64 px
    ],
)
def test_bad_speed_ranges_are_named(kwargs, named):
    with pytest.raises(ValueError, match=named):
        shapes_dataset(2, **kwargs)


def test_render_clip_refuses_a_speed_that_leaves_the_frame():
    with pytest.raises(ValueError, match="speed"):
        render_clip("red", "circle", "right", size=18, speed=3.2)
    with pytest.raises(ValueError, match="speed"):
        render_clip("red", "circle", "right", size=18, speed=0)
    assert max_speed(18) == pytest.approx(46 / 15)


def test_render_clip_default_start_and_explicit_rgb():
    clip = render_clip((10, 20, 30), "square", "down", size=16)
    boxes = object_boxes(clip)
    assert boxes[0][1] == 24 and boxes[-1][0] + 16 <= 64  # centred path, inside the frame
    assert (clip[clip.any(axis=-1)] == (10, 20, 30)).all()


# --- the analyzer ---------------------------------------------------------------------------------------


def test_analyzer_agrees_with_ground_truth(dataset):
    result = accuracy(dataset[:]["video"], dataset.remove_columns("video"))
    assert result["num_clips"] == 300
    for key in ("color", "shape", "direction"):
        assert result[key] >= 0.99, result


def degrade(clips: np.ndarray, seed: int, noise: float, blur: float, gain: float = 1.0) -> np.ndarray:
    """Blur (Gaussian, ``blur`` px), scale by ``gain`` and add Gaussian noise (σ = ``noise`` of 255)."""
    out = ndimage.gaussian_filter(clips.astype(np.float32) * gain, sigma=(0, 0, blur, blur, 0), truncate=3.0)
    out += noise * np.random.default_rng(seed).standard_normal(out.shape, dtype=np.float32)
    np.rint(out, out=out)
    return np.clip(out, 0, 255, out=out).astype(np.uint8)


def test_analyzer_is_robust_to_mild_noise_and_blur(dataset):
    clips = degrade(dataset[:120]["video"], seed=0, noise=8.0, blur=0.8)
    result = accuracy(clips, dataset.remove_columns("video").select(range(120)))
    for key in ("color", "shape", "direction"):
        assert result[key] >= 0.95, result


def test_analyzer_tolerates_dimmed_colors(dataset):
    clips = degrade(dataset[:60]["video"], seed=1, noise=4.0, blur=0.5, gain=0.7)
    result = accuracy(clips, dataset.remove_columns("video").select(range(60)))
    assert result["all"] >= 0.95, result


def test_analyzer_handles_empty_and_static_clips():
    for empty in (np.zeros((16, 64, 64, 3), np.uint8), np.zeros((4, 3, 32, 32), np.float32)):
        result = analyze_clip(empty)
        assert (result["color"], result["shape"], result["direction"]) == (None, None, None)
        assert result["visible_frames"] == 0
    noise_only = np.random.default_rng(0).normal(0, 8, (8, 64, 64, 3)).clip(0, 255).astype(np.uint8)
    assert analyze_clip(noise_only)["color"] is None
    static = np.repeat(render_clip("green", "square", "up", size=16)[:1], 8, axis=0)
    result = analyze_clip(static)
    assert (result["color"], result["shape"], result["direction"]) == ("green", "square", None)
    assert analyze_clip(static[:1])["direction"] is None


def test_analyzer_accepts_torch_channels_first_floats():
    clip = render_clip("magenta", "triangle", "left", size=17)
    tensor = torch.from_numpy(clip).permute(0, 3, 1, 2).float() / 255
    result = analyze_clip(tensor)
    assert (result["color"], result["shape"], result["direction"]) == ("magenta", "triangle", "left")
    assert result["velocity"] == pytest.approx((-2.0, 0.0))
    with pytest.raises(ValueError, match="frames"):
        analyze_clip(clip[0])


def test_analyzer_centroids_follow_the_object_and_skip_empty_frames():
    clip = render_clip("red", "square", "down", size=16, start=(10, 4))
    clip[3] = 0  # the object vanishes from frame 3
    centroids = analyze_clip(clip)["centroids"]
    assert sorted(centroids) == [t for t in range(16) if t != 3]
    for t, (x, y) in centroids.items():
        assert (x, y) == pytest.approx((10 + 7.5, 4 + 2 * t + 7.5))  # the square's centre, 2 px lower per frame


def test_accuracy_counts_mistakes_and_checks_lengths():
    clips = [
        render_clip("red", "circle", "right"),
        render_clip("blue", "square", "up"),
        render_clip("red", "circle", "left"),
    ]
    labels = [
        "a red circle moving right",
        {"color": "cyan", "shape": "square", "direction": "up"},
        "a red circle moving right",
    ]
    result = accuracy(clips, labels)
    clean = result.pop("clean_clips")  # all three are clean Shapes clips; the second is not of the labelled color
    assert clean["clean_rate"] == 2 / 3 and clean["failure_rates"]["color"] == 1 / 3
    assert result == {
        "color": 2 / 3, "shape": 1.0, "direction": 2 / 3, "all": 1 / 3, "num_clips": 3,
        "direction_by_prompt": {"right": 0.5, "up": 1.0},
    }  # fmt: skip
    with pytest.raises(ValueError, match="labels"):
        accuracy(clips, labels[:1])
    with pytest.raises(ValueError, match="labels"):
        accuracy(clips[:1], labels)
    with pytest.raises(ValueError, match="clips"):
        accuracy([], [])


def test_frame_stride_measures_speed_per_original_frame():
    clip = render_clip("green", "square", "right", size=16)
    key_frames = analyze_clip(clip[::5], frame_stride=5)
    assert key_frames["direction"] == "right"
    assert key_frames["velocity"] == pytest.approx(analyze_clip(clip)["velocity"], abs=0.05)
    # Consecutive frames (2 px apart) shown as frames 8 apart: 0.25 px per frame, too slow to count as motion.
    assert analyze_clip(clip[:4])["direction"] == "right"
    assert analyze_clip(clip[:4], frame_stride=8)["direction"] is None
    assert accuracy([clip[:4]], ["a green square moving right"], frame_stride=8)["direction"] == 0.0
    with pytest.raises(ValueError, match="frame_stride"):
        analyze_clip(clip, frame_stride=0)
