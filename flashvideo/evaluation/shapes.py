"""Judge generated Shapes clips: which color, shape and direction does a clip show? (DESIGN §6)

The analyzer needs no model. Per frame it finds the object as the largest connected blob of
bright pixels, then reads

- color: the median color of the blob's bright core, matched to the nearest palette color;
- shape: the fill ratio of the blob's bounding box (circle ≈ π/4, square ≈ 1, triangle ≈ 1/2),
  backed by where the blob's mass lies vertically (a triangle's apex is at the top);
- direction: a least-squares line through the blob's centroid track, whose dominant axis and
  sign give left / right / up / down.

It tolerates the noise and blur of a VQ decoder. A clip with no visible object yields ``None``
for each attribute instead of raising.

Example:
    >>> from flashvideo.data.shapes import render_clip
    >>> analyze_clip(render_clip("red", "circle", "right", size=16))["shape"]
    'circle'
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from scipy import ndimage
from tqdm.auto import tqdm
from transformers.utils import logging

from ..data.shapes import COLORS, parse_prompt

logger = logging.get_logger(__name__)

ATTRIBUTES: tuple[str, ...] = ("color", "shape", "direction")

_PALETTE_NAMES = list(COLORS)
_PALETTE = np.asarray([COLORS[name] for name in _PALETTE_NAMES], dtype=np.float64)
# Pixels dimmer than this (max over RGB, 0..255) are never object: the palette's dimmest color
# peaks at 230, and background noise of σ≈8 essentially never reaches it.
_MIN_THRESHOLD = 48.0
# Range of brightness gains allowed when matching a color to the palette.
_MIN_GAIN, _MAX_GAIN = 0.5, 1.25
# Blobs smaller than this (pixels) are treated as specks, not objects.
_MIN_BLOB_PIXELS = 12
# Fill-ratio cut points between the triangle (≈0.56), circle (≈0.79) and square (1.0); blur and
# noise round a square's corners (fill down to ≈0.88), so the circle/square cut sits below halfway.
_TRIANGLE_MAX_FILL = 0.675
_CIRCLE_MAX_FILL = 0.86
# Fraction of the blob's pixels in the top half of its box: ≈0.25 for an apex-up triangle,
# ≈0.5 for the symmetric circle and square.
_TRIANGLE_MAX_TOP_FRACTION = 0.37
# Centroid speeds below this (px/frame) count as "not moving".
_MIN_SPEED = 0.3


def analyze_clip(frames: Any, frame_stride: int = 1) -> dict[str, Any]:
    """Recognise the color, shape and direction of the object in a Shapes-style clip.

    Args:
        frames: a clip ``[T, H, W, 3]`` (or ``[T, 3, H, W]``) as a NumPy array or torch tensor:
            ``uint8`` in ``[0, 255]`` or floating point in ``[0, 1]``.
        frame_stride: how many frames of the original clip lie between two given frames (5 for the key frames
            of a clip with key-frame spacing 5), so that velocities, and the minimum speed, are per original frame.

    Returns:
        ``dict(color, shape, direction)`` with names from the Shapes grammar, each ``None`` when
        it cannot be judged (no object visible; direction also when the object does not move or
        appears in fewer than two frames). Diagnostic entries come with them:
        ``fill_ratio`` (float or ``None``), ``velocity`` (``(vx, vy)`` px/frame or ``None``),
        ``visible_frames`` (int) and ``centroids`` (``{frame index: (x, y)}`` of the object's blob in each frame
        where one is visible, in pixels).

    Raises:
        ValueError: if ``frames`` is not a 4-D RGB clip.

    Example:
        >>> from flashvideo.data.shapes import render_clip
        >>> result = analyze_clip(render_clip("blue", "triangle", "up", size=16))
        >>> result["color"], result["shape"], result["direction"]
        ('blue', 'triangle', 'up')
    """
    if not isinstance(frame_stride, int) or frame_stride < 1:
        raise ValueError(f"frame_stride must be an integer >= 1, got {frame_stride!r}.")
    clip = _as_uint8_clip(frames)
    # A 3x3 median per frame removes pixel noise before thresholding while keeping straight edges
    # and corners of a 14+ px object in place.
    brightness = ndimage.median_filter(clip.max(axis=-1), size=(1, 3, 3), mode="constant")
    peak = float(np.percentile(brightness, 99.5))
    threshold = max(_MIN_THRESHOLD, 0.5 * peak)
    blobs = _largest_blob_per_frame(brightness > threshold)

    result: dict[str, Any] = {
        "color": None,
        "shape": None,
        "direction": None,
        "fill_ratio": None,
        "velocity": None,
        "visible_frames": len(blobs),
        "centroids": {blob.t: blob.centroid() for blob in blobs},
    }
    if not blobs:
        return result
    result["color"] = _classify_color(clip, brightness, blobs)
    result["shape"], result["fill_ratio"] = _classify_shape(blobs, brightness.shape[1:])
    result["direction"], result["velocity"] = _classify_direction(blobs, frame_stride)
    return result


def accuracy(
    clips: Iterable[Any],
    labels: Iterable[Mapping[str, str] | str],
    *,
    frame_stride: int = 1,
    progress: bool = False,
) -> dict[str, float]:
    """Per-attribute accuracy of :func:`analyze_clip` over many clips.

    Args:
        clips: clips accepted by :func:`analyze_clip` (a list, a ``[N, T, H, W, 3]`` array, a
            generator, or a 🤗 dataset column).
        labels: for each clip, a mapping with ``color``, ``shape`` and ``direction`` (e.g. rows of
            :func:`flashvideo.data.shapes_dataset`) or the prompt it was generated from.
        frame_stride: as in :func:`analyze_clip`, for clips that keep every ``frame_stride``-th frame.
        progress: show a progress bar.

    Returns:
        ``{"color": a, "shape": b, "direction": c, "all": d, "num_clips": n, "direction_by_prompt": {...}}``
        where ``all`` counts clips with every attribute right and ``direction_by_prompt`` maps each direction
        that occurs in the labels to the direction accuracy among the clips labelled with it (a model that
        confuses left and right shows it there, not in the mean); accuracies are fractions in ``[0, 1]``.

    Raises:
        ValueError: if there are no clips, or ``clips`` and ``labels`` differ in length.

    Example:
        >>> from flashvideo.data.shapes import render_clip
        >>> accuracy([render_clip("red", "square", "down")], ["a red square moving down"])["all"]
        1.0
    """
    correct = dict.fromkeys((*ATTRIBUTES, "all"), 0)
    total = 0
    by_direction: dict[str, list[int]] = {}  # prompted direction → [right, clips]
    label_iter = iter(labels)
    for clip in tqdm(clips, desc="Analyzing clips", unit="clip", disable=not progress):
        try:
            label = next(label_iter)
        except StopIteration:
            raise ValueError("labels is shorter than clips; give one label per clip") from None
        truth = parse_prompt(label) if isinstance(label, str) else {key: label[key] for key in ATTRIBUTES}
        predicted = analyze_clip(clip, frame_stride=frame_stride)
        hits = {key: predicted[key] == truth[key] for key in ATTRIBUTES}
        for key, hit in hits.items():
            correct[key] += int(hit)
        correct["all"] += int(all(hits.values()))
        total += 1
        tally = by_direction.setdefault(truth["direction"], [0, 0])
        tally[0] += int(hits["direction"])
        tally[1] += 1
    if next(label_iter, None) is not None:
        raise ValueError("labels is longer than clips; give one label per clip")
    if total == 0:
        raise ValueError("clips is empty; give at least one clip")
    result: dict[str, Any] = {key: value / total for key, value in correct.items()}
    result["num_clips"] = total
    result["direction_by_prompt"] = {
        direction: right / clips for direction, (right, clips) in sorted(by_direction.items())
    }
    return result


def _as_uint8_clip(frames: Any) -> np.ndarray:
    """Return the clip as uint8 ``[T, H, W, 3]``."""
    if hasattr(frames, "detach"):  # torch tensor, without importing torch here
        frames = (
            frames.detach().cpu().float().numpy()
            if frames.is_floating_point()
            else frames.detach().cpu().numpy()
        )
    clip = np.asarray(frames)
    if clip.ndim != 4:
        raise ValueError(f"frames must be a 4-D clip [T, H, W, 3] or [T, 3, H, W], got shape {clip.shape}")
    if clip.shape[-1] != 3 and clip.shape[1] == 3:
        clip = clip.transpose(0, 2, 3, 1)
    if clip.shape[-1] != 3:
        raise ValueError(
            f"frames must have 3 color channels ([T, H, W, 3] or [T, 3, H, W]), got shape {clip.shape}"
        )
    if clip.dtype == np.uint8:
        return clip
    if np.issubdtype(clip.dtype, np.floating):
        return np.rint(np.clip(clip, 0.0, 1.0) * 255.0).astype(np.uint8)
    if np.issubdtype(clip.dtype, np.integer):
        return np.clip(clip, 0, 255).astype(np.uint8)
    raise ValueError(f"frames must be uint8 in [0, 255] or float in [0, 1], got dtype {clip.dtype}")


class _Blob:
    """The object's blob in one frame: its frame index, bounding box and mask inside the box."""

    __slots__ = ("left", "mask", "t", "top")

    def __init__(self, t: int, top: int, left: int, mask: np.ndarray) -> None:
        self.t, self.top, self.left, self.mask = t, top, left, mask

    def centroid(self) -> tuple[float, float]:
        """``(x, y)`` of the blob's pixels in frame coordinates."""
        rows, cols = np.nonzero(self.mask)
        return float(self.left + cols.mean()), float(self.top + rows.mean())


# 8-connectivity within a frame, none across frames: one `label` call serves the whole clip.
_IN_FRAME = np.zeros((3, 3, 3), dtype=bool)
_IN_FRAME[1] = True


def _largest_blob_per_frame(mask: np.ndarray) -> list[_Blob]:
    # Keeping only each frame's largest blob discards specks a decoder may leave elsewhere.
    labels, count = ndimage.label(mask, structure=_IN_FRAME)
    if count == 0:
        return []
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    best: dict[int, tuple[int, int, tuple[slice, ...]]] = {}
    for label, box in enumerate(ndimage.find_objects(labels), start=1):
        t = box[0].start
        if sizes[label] >= _MIN_BLOB_PIXELS and (t not in best or sizes[label] > best[t][0]):
            best[t] = (sizes[label], label, box)
    return [
        _Blob(t, box[1].start, box[2].start, labels[t, box[1], box[2]] == label)
        for t, (_, label, box) in sorted(best.items())
    ]


def _classify_color(clip: np.ndarray, brightness: np.ndarray, blobs: list[_Blob]) -> str:
    pixels, levels = [], []
    for blob in blobs:
        h, w = blob.mask.shape
        window = (blob.t, slice(blob.top, blob.top + h), slice(blob.left, blob.left + w))
        pixels.append(clip[window][blob.mask])
        levels.append(brightness[window][blob.mask])
    pixels, levels = np.concatenate(pixels), np.concatenate(levels)
    # The bright core avoids blurred edges, whose colors are mixed with the background.
    color = np.median(pixels[levels >= np.median(levels)].astype(np.float64), axis=0)
    # Compare up to a brightness gain, since decoders often render colors dimmer or brighter; the
    # gain is bounded so that e.g. a dim cyan cannot pass for blue.
    gains = np.clip(_PALETTE @ color / (_PALETTE**2).sum(axis=1), _MIN_GAIN, _MAX_GAIN)
    distances = ((color[None, :] - gains[:, None] * _PALETTE) ** 2).sum(axis=1)
    return _PALETTE_NAMES[int(np.argmin(distances))]


def _classify_shape(blobs: list[_Blob], frame_size: tuple[int, int]) -> tuple[str, float]:
    fills, tops, interior = [], [], []
    for blob in blobs:
        h, w = blob.mask.shape
        rows = blob.mask.sum(axis=1)
        fills.append(rows.sum() / (h * w))
        # Rows strictly above the middle; an odd middle row is split evenly between the halves.
        upper = rows[: h // 2].sum() + (rows[h // 2] / 2 if h % 2 else 0)
        tops.append(upper / rows.sum())
        interior.append(
            blob.top > 0 and blob.left > 0 and blob.top + h < frame_size[0] and blob.left + w < frame_size[1]
        )
    # A blob cut by the frame edge has a misleading box; judge from whole views when there are any.
    use = [i for i, inside in enumerate(interior) if inside] or list(range(len(fills)))
    fill = float(np.median([fills[i] for i in use]))
    top_fraction = float(np.median([tops[i] for i in use]))
    if fill < _TRIANGLE_MAX_FILL or top_fraction < _TRIANGLE_MAX_TOP_FRACTION:
        return "triangle", fill
    return ("circle" if fill < _CIRCLE_MAX_FILL else "square"), fill


def _classify_direction(
    blobs: list[_Blob], frame_stride: int = 1
) -> tuple[str | None, tuple[float, float] | None]:
    if len(blobs) < 2:
        return None, None
    times = np.asarray([blob.t * frame_stride for blob in blobs], dtype=np.float64)
    centroids = np.asarray([blob.centroid() for blob in blobs])  # (x, y) per visible frame
    centred = times - times.mean()
    denom = (centred**2).sum()
    vx = float((centred * (centroids[:, 0] - centroids[:, 0].mean())).sum() / denom)
    vy = float((centred * (centroids[:, 1] - centroids[:, 1].mean())).sum() / denom)
    if max(abs(vx), abs(vy)) < _MIN_SPEED:
        return None, (vx, vy)
    if abs(vx) >= abs(vy):
        return ("right" if vx > 0 else "left"), (vx, vy)
    # Image rows grow downwards.
    return ("down" if vy > 0 else "up"), (vx, vy)
