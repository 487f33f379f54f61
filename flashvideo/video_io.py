"""Read and write video files with PyAV (which bundles its own FFmpeg) and Pillow.

- :func:`read_video` decodes frames to ``uint8 [T, H, W, 3]`` and raises
  :class:`VideoDecodeError` on corrupt or truncated files.
- :func:`export_to_video` writes H.264 mp4; :func:`export_to_gif` writes an animated gif.

Example:
    >>> import numpy as np
    >>> frames = np.zeros((8, 64, 64, 3), dtype=np.uint8)
    >>> path = export_to_video(frames, "clip.mp4", fps=8)  # doctest: +SKIP
    >>> read_video(path).shape  # doctest: +SKIP
    (8, 64, 64, 3)
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from fractions import Fraction
from typing import Any

import av
import numpy as np
from PIL import Image
from transformers.utils import logging

from .validation import check_number

logger = logging.get_logger(__name__)

__all__ = ["VideoDecodeError", "export_to_gif", "export_to_video", "frames_to_uint8", "read_video"]


class VideoDecodeError(ValueError):
    """A video file could not be decoded: unreadable, not a video, or truncated.

    Example:
        >>> try:
        ...     read_video("not_a_video.mp4")  # doctest: +SKIP
        ... except VideoDecodeError as error:
        ...     print(error)
    """


def read_video(
    path: str | os.PathLike,
    *,
    num_frames: int | None = None,
    stride: int = 1,
    start: int = 0,
) -> np.ndarray:
    """Decode frames ``start, start + stride, start + 2 * stride, ...`` of a video file.

    Decoding stops as soon as ``num_frames`` frames are collected, so reading the start of a long
    video is cheap. A video with fewer frames gives fewer frames back (possibly zero when
    ``start`` is past the end); callers that need an exact count check ``len(result)``.

    Args:
        path: a video file PyAV/FFmpeg can read (mp4, avi, webm, mkv, gif, ...).
        num_frames: how many frames to return at most (``None``: all from ``start``).
        stride: take every ``stride``-th frame (>= 1).
        start: index of the first frame to take (>= 0).

    Returns:
        ``uint8`` array ``[T, H, W, 3]`` (RGB).

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        VideoDecodeError: if the file is not a decodable video, has no video stream, fails while
            decoding, or runs out below 90% of the frame count (or duration) its header declares
            (truncated file). Frames before the cut can still be read by asking for fewer.
        ValueError: on an out-of-range argument.

    Example:
        >>> frames = read_video("clip.mp4", num_frames=16, stride=2)  # doctest: +SKIP
    """
    if num_frames is not None and (
        isinstance(num_frames, bool) or not isinstance(num_frames, int) or num_frames < 1
    ):
        raise ValueError(f"num_frames must be None or an integer >= 1, got {num_frames!r}")
    if isinstance(stride, bool) or not isinstance(stride, int) or stride < 1:
        raise ValueError(f"stride must be an integer >= 1, got {stride!r}")
    if isinstance(start, bool) or not isinstance(start, int) or start < 0:
        raise ValueError(f"start must be an integer >= 0, got {start!r}")
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No video file at {path!r}")

    frames: list[np.ndarray] = []
    decoded = 0
    frame_shape = (0, 0, 3)
    try:
        with av.open(path, mode="r") as container:
            if not container.streams.video:
                raise VideoDecodeError(f"{path!r} has no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            expected = _expected_frames(container, stream)
            for frame in container.decode(stream):
                index = decoded
                decoded += 1
                frame_shape = (frame.height, frame.width, 3)
                if index >= start and (index - start) % stride == 0:
                    frames.append(frame.to_ndarray(format="rgb24"))
                    if num_frames is not None and len(frames) == num_frames:
                        break
    except VideoDecodeError:
        raise
    except (av.error.FFmpegError, OSError, ValueError, IndexError) as error:
        raise VideoDecodeError(f"Could not decode {path!r}: {error}") from error

    if decoded == 0:
        raise VideoDecodeError(f"{path!r} contains no decodable video frames")
    wanted_more = num_frames is None or len(frames) < num_frames
    # Running out well before the length the container declares means the payload is missing: the
    # file was cut short. The slack allows for headers that count a few undecodable chunks (e.g.
    # packed-bitstream Xvid AVIs, as in UCF-101) and for durations rounded to whole frames.
    if wanted_more and expected and decoded < _TRUNCATION_RATIO * expected - 1:
        raise VideoDecodeError(
            f"{path!r} is truncated: its header declares about {expected} frames but only {decoded} "
            "could be decoded"
        )
    if not frames:
        return np.zeros((0, *frame_shape), dtype=np.uint8)
    return np.stack(frames)


# Fraction of the declared frame count below which a file counts as truncated.
_TRUNCATION_RATIO = 0.9


def _expected_frames(container: Any, stream: Any) -> int:
    """The frame count the file declares, or one derived from its duration; 0 when unknown."""
    if stream.frames:
        return int(stream.frames)
    rate = stream.average_rate or stream.guessed_rate
    if not rate:
        return 0
    if stream.duration and stream.time_base:
        return round(float(stream.duration * stream.time_base * rate))
    # The container's duration covers every stream (an audio track may run longer): only trust it
    # when the video is all there is.
    if container.duration and len(container.streams) == 1:
        return round(container.duration / av.time_base * float(rate))
    return 0


def frames_to_uint8(frames: Any) -> np.ndarray:
    """Convert frames to a ``uint8 [T, H, W, 3]`` array.

    Accepts a ``uint8`` array ``[T, H, W, 3]`` (NumPy, torch, ...), a floating point array in
    ``[0, 1]`` (values outside are clipped), a list of such ``[H, W, 3]`` frames, or a list of PIL
    images. Grayscale ``[T, H, W]`` / ``[T, H, W, 1]`` and RGBA frames are converted to RGB.

    Raises:
        ValueError: if ``frames`` is empty or not a batch of images.

    Example:
        >>> int(frames_to_uint8(np.ones((2, 4, 4, 3), dtype=np.float32)).max())
        255
    """
    if isinstance(frames, Image.Image):
        # ValueError like every other bad `frames`, so callers need to catch one type.
        raise ValueError(  # noqa: TRY004
            "frames must be a sequence of frames; got a single PIL image (wrap it in a list)"
        )
    if isinstance(frames, Sequence) and not isinstance(frames, (str, bytes)):
        if len(frames) == 0:
            raise ValueError("frames is empty; give at least one frame")
        if isinstance(frames[0], Image.Image):
            frames = [np.asarray(image.convert("RGB")) for image in frames]
        frames = [_to_numpy(frame) for frame in frames]
        array = np.stack(frames)
    else:
        array = _to_numpy(frames)
    if array.ndim == 3:
        array = array[..., None]
    if array.ndim != 4 or array.shape[-1] not in (1, 3, 4) or 0 in array.shape:
        raise ValueError(
            f"frames must be shaped [T, H, W, 3] (or a list of [H, W, 3] frames), got {array.shape}"
        )
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    elif array.shape[-1] == 4:
        array = array[..., :3]
    if np.issubdtype(array.dtype, np.floating):
        return (np.clip(array, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    if array.dtype == np.uint8:
        return np.ascontiguousarray(array)
    if np.issubdtype(array.dtype, np.integer) or array.dtype == np.bool_:
        if array.dtype != np.bool_ and (array.min() < 0 or array.max() > 255):
            raise ValueError("integer frames must lie in [0, 255]; scale them or pass floats in [0, 1]")
        return array.astype(np.uint8) * (255 if array.dtype == np.bool_ else 1)
    raise ValueError(f"frames must be uint8 or float, got dtype {array.dtype}")


def _to_numpy(frames: Any) -> np.ndarray:
    if hasattr(frames, "detach"):  # torch tensor, without importing torch here
        frames = frames.detach().cpu()
        if str(frames.dtype) == "torch.bfloat16":
            frames = frames.float()
        frames = frames.numpy()
    return np.asarray(frames)


def _output_path(path: str | os.PathLike | None, suffix: str) -> str:
    if path is None:
        handle, path = tempfile.mkstemp(suffix=suffix)
        os.close(handle)
        return path
    path = os.fspath(path)
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    return path


def _check_fps(fps: float) -> Fraction:
    check_number("fps", fps, 0, exclusive_minimum=True)
    return Fraction(fps).limit_denominator(1001)


def export_to_video(
    frames: Any,
    path: str | os.PathLike | None = None,
    fps: float = 8,
    *,
    crf: int = 18,
) -> str:
    """Write frames to an H.264 mp4 (libx264, yuv420p) that browsers and players can show.

    yuv420p needs even sides, so an odd height or width is padded by repeating the last row or
    column (the decoded video is then one pixel larger on that side).

    Args:
        frames: see :func:`frames_to_uint8` (``uint8 [T, H, W, 3]``, floats in ``[0, 1]``, or a
            list of PIL images).
        path: output file; ``None`` writes to a new temporary ``.mp4``.
        fps: frames per second (> 0).
        crf: x264 constant rate factor, 0 (lossless luma) to 51; lower is better quality.

    Returns:
        The path written.

    Example:
        >>> export_to_video(np.zeros((16, 64, 64, 3), np.uint8), "out.mp4", fps=8)  # doctest: +SKIP
        'out.mp4'
    """
    rate = _check_fps(fps)
    if isinstance(crf, bool) or not isinstance(crf, int) or not 0 <= crf <= 51:
        raise ValueError(f"crf must be an integer in [0, 51], got {crf!r}")
    array = frames_to_uint8(frames)
    pad_h, pad_w = array.shape[1] % 2, array.shape[2] % 2
    if pad_h or pad_w:
        array = np.pad(array, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    path = _output_path(path, ".mp4")
    with av.open(path, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height = array.shape[2], array.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(crf)}
        for image in array:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())  # flush delayed frames
    return path


def export_to_gif(frames: Any, path: str | os.PathLike | None = None, fps: float = 8) -> str:
    """Write frames to an endlessly looping animated gif (Pillow, adaptive palette per frame).

    Gif timing has a 10 ms resolution, so the frame duration is ``1000 / fps`` ms rounded to it.

    Args:
        frames: see :func:`frames_to_uint8`.
        path: output file; ``None`` writes to a new temporary ``.gif``.
        fps: frames per second (> 0).

    Returns:
        The path written.

    Example:
        >>> export_to_gif(np.zeros((16, 64, 64, 3), np.uint8), "out.gif")  # doctest: +SKIP
        'out.gif'
    """
    rate = _check_fps(fps)
    array = frames_to_uint8(frames)
    path = _output_path(path, ".gif")
    images = [Image.fromarray(image) for image in array]
    duration_ms = max(10, round(1000 / float(rate) / 10) * 10)
    images[0].save(
        path,
        format="GIF",
        save_all=True,
        append_images=images[1:],
        duration=duration_ms,
        loop=0,
        optimize=False,
        # Pillow stores later frames as changed rectangles; "do not dispose" keeps the rest visible.
        # (It also merges identical consecutive frames into one longer frame.)
        disposal=1,
    )
    return path
