"""Tests of `flashvideo.video_io`: mp4/gif export, decoding with frame sampling, and decode errors."""

import av
import numpy as np
import pytest
import torch
from PIL import Image

from flashvideo.data.shapes import render_clip
from flashvideo.video_io import VideoDecodeError, export_to_gif, export_to_video, frames_to_uint8, read_video


def numbered_frames(count: int, height: int = 32, width: int = 32) -> np.ndarray:
    """Flat gray frames whose level encodes the frame index (10 * i + 20), recognisable after lossy coding."""
    levels = (10 * np.arange(count) + 20).astype(np.uint8)
    return np.broadcast_to(levels[:, None, None, None], (count, height, width, 3)).copy()


def frame_indices(frames: np.ndarray) -> list[int]:
    return [round(float(frame.mean() - 20) / 10) for frame in frames]


def test_mp4_round_trip(tmp_path):
    clip = render_clip("red", "circle", "right", size=16)
    path = export_to_video(clip, tmp_path / "clip.mp4", fps=8)
    assert path == str(tmp_path / "clip.mp4")
    with av.open(path) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert stream.codec_context.pix_fmt == "yuv420p"
        assert stream.average_rate == 8
    decoded = read_video(path)
    assert decoded.shape == (16, 64, 64, 3) and decoded.dtype == np.uint8
    error = np.abs(decoded.astype(int) - clip.astype(int))
    assert error.mean() < 2.0  # chroma subsampling blurs the object's edges, nothing else
    # The object's interior keeps its color.
    assert np.abs(decoded[0, 28, 12].astype(int) - (230, 40, 40)).max() < 12


def test_inputs_float_pil_and_torch_give_the_same_video(tmp_path):
    clip = render_clip("blue", "square", "up", size=16)[:6]
    reference = read_video(export_to_video(clip, tmp_path / "u8.mp4"))
    as_float = read_video(export_to_video(clip.astype(np.float32) / 255, tmp_path / "f.mp4"))
    as_pil = read_video(export_to_video([Image.fromarray(f) for f in clip], tmp_path / "pil.mp4"))
    as_torch = read_video(export_to_video(torch.from_numpy(clip), tmp_path / "t.mp4"))
    for other in (as_float, as_pil, as_torch):
        np.testing.assert_array_equal(other, reference)


def test_odd_sizes_are_padded_to_even(tmp_path):
    frames = np.random.default_rng(0).random((3, 33, 47, 3))
    decoded = read_video(export_to_video(frames, tmp_path / "odd.mp4"))
    assert decoded.shape == (3, 34, 48, 3)


def test_export_without_path_writes_a_temporary_file():
    path = export_to_video(numbered_frames(2))
    assert path.endswith(".mp4") and read_video(path).shape == (2, 32, 32, 3)


def test_gif_is_written_and_readable(tmp_path):
    clip = render_clip("yellow", "triangle", "down", size=16)
    path = export_to_gif(clip, tmp_path / "clip.gif", fps=8)
    with Image.open(path) as image:
        assert image.n_frames == 16
        assert image.info["loop"] == 0
        assert image.info["duration"] in (120, 130)  # 125 ms at gif's 10 ms resolution
    decoded = read_video(path)
    assert decoded.shape == (16, 64, 64, 3)
    # Fewer than 256 colors: the palette holds them exactly.
    np.testing.assert_array_equal(decoded, clip)


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({}, list(range(12))),
        ({"num_frames": 4}, [0, 1, 2, 3]),
        ({"num_frames": 4, "stride": 3, "start": 1}, [1, 4, 7, 10]),
        ({"stride": 5}, [0, 5, 10]),
        ({"num_frames": 10, "start": 8}, [8, 9, 10, 11]),  # fewer than asked: what there is
    ],
)
def test_frame_sampling(tmp_path, kwargs, expected):
    path = export_to_video(numbered_frames(12), tmp_path / "numbers.mp4")
    assert frame_indices(read_video(path, **kwargs)) == expected


def test_start_past_the_end_gives_no_frames(tmp_path):
    path = export_to_video(numbered_frames(5), tmp_path / "five.mp4")
    assert read_video(path, start=9).shape == (0, 32, 32, 3)


def test_broken_files_raise_video_decode_error(tmp_path):
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(VideoDecodeError, match="garbage.mp4"):
        read_video(garbage)

    export_to_video(numbered_frames(16), tmp_path / "whole.mp4")
    data = (tmp_path / "whole.mp4").read_bytes()
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(VideoDecodeError):
        read_video(truncated)

    empty = tmp_path / "empty.avi"
    empty.write_bytes(b"")
    with pytest.raises(VideoDecodeError):
        read_video(empty)
    assert issubclass(VideoDecodeError, ValueError)
    with pytest.raises(FileNotFoundError):
        read_video(tmp_path / "missing.mp4")


def write_with(path, codec: str, frames: np.ndarray, fps: int = 8) -> None:
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


@pytest.mark.parametrize(("suffix", "codec"), [(".avi", "mpeg4"), (".mkv", "libx264")])
def test_files_cut_short_are_detected_as_truncated(tmp_path, suffix, codec):
    # Cut at 3/4 these containers still open and decode their first frames; only the declared
    # length (AVI frame count, Matroska duration) tells that the rest is missing.
    whole = tmp_path / f"whole{suffix}"
    write_with(whole, codec, numbered_frames(24))
    assert frame_indices(read_video(whole)) == list(range(24))
    cut = tmp_path / f"cut{suffix}"
    data = whole.read_bytes()
    cut.write_bytes(data[: len(data) * 3 // 4])
    with pytest.raises(VideoDecodeError, match="truncated"):
        read_video(cut)
    # Frames that are there can still be read when no more are asked for.
    assert frame_indices(read_video(cut, num_frames=4)) == [0, 1, 2, 3]


def test_bad_arguments(tmp_path):
    path = export_to_video(numbered_frames(2), tmp_path / "a.mp4")
    for kwargs, name in [
        ({"num_frames": 0}, "num_frames"),
        ({"stride": 0}, "stride"),
        ({"start": -1}, "start"),
    ]:
        with pytest.raises(ValueError, match=name):
            read_video(path, **kwargs)
    with pytest.raises(ValueError, match="fps"):
        export_to_video(numbered_frames(2), tmp_path / "b.mp4", fps=0)
    with pytest.raises(ValueError, match="crf"):
        export_to_video(numbered_frames(2), tmp_path / "b.mp4", crf=60)
    with pytest.raises(ValueError, match="frames"):
        export_to_gif([], tmp_path / "c.gif")
    with pytest.raises(ValueError, match="frames"):
        export_to_video(np.zeros((2, 8, 8, 5), np.uint8), tmp_path / "d.mp4")


def test_frames_to_uint8_conversions():
    floats = np.array([[[[0.0, 0.5, 1.5]]]], dtype=np.float32)  # [1, 1, 1, 3], 1.5 clipped
    np.testing.assert_array_equal(frames_to_uint8(floats)[0, 0, 0], [0, 128, 255])
    gray = np.full((2, 4, 4), 7, dtype=np.uint8)
    assert frames_to_uint8(gray).shape == (2, 4, 4, 3)
    rgba = [Image.new("RGBA", (5, 4), (1, 2, 3, 4))] * 2
    np.testing.assert_array_equal(frames_to_uint8(rgba)[1, 0, 0], [1, 2, 3])
    with pytest.raises(ValueError, match="0, 255"):
        frames_to_uint8(np.full((1, 2, 2, 3), 300))
