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

It also judges whether a clip is *clean* (DESIGN §10), what a person watching would call right: one
object in every frame, of the prompted color, on a straight track at the Shapes speed, with no jumps
(:func:`clean_clip_report`; the thresholds are the fields of :class:`CleanClipCriteria`).

Example:
    >>> from flashvideo.data.shapes import render_clip
    >>> analyze_clip(render_clip("red", "circle", "right", size=16))["shape"]
    'circle'
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
from tqdm.auto import tqdm
from transformers.utils import logging

from ..data.shapes import COLORS, parse_prompt
from ..extras import import_extra
from ..validation import check_choice, check_int

logger = logging.get_logger(__name__)


def _ndimage():
    """`scipy.ndimage`, imported on first use: SciPy comes with the `eval` extra, not the core install."""
    return import_extra("scipy.ndimage", "The Shapes analyzer (flashvideo.evaluation.shapes)")


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
    check_int("frame_stride", frame_stride, 1)
    clip = _as_uint8_clip(frames)
    # A 3x3 median per frame removes pixel noise before thresholding while keeping straight edges
    # and corners of a 14+ px object in place.
    brightness = _ndimage().median_filter(clip.max(axis=-1), size=(1, 3, 3), mode="constant")
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
        ``{"color": a, "shape": b, "direction": c, "all": d, "num_clips": n, "direction_by_prompt": {...},
        "clean_clips": {...}}`` where ``all`` counts clips with every attribute right, ``direction_by_prompt`` maps
        each direction that occurs in the labels to the direction accuracy among the clips labelled with it (a model
        that confuses left and right shows it there, not in the mean) and ``clean_clips`` is
        :func:`summarize_clean_clips` of the clips' :func:`clean_clip_report` for their prompted colors; accuracies
        are fractions in ``[0, 1]``.

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
    clean_reports = []
    label_iter = iter(labels)
    for clip in tqdm(clips, desc="Analyzing clips", unit="clip", disable=not progress):
        try:
            label = next(label_iter)
        except StopIteration:
            raise ValueError("labels is shorter than clips; give one label per clip") from None
        truth = parse_prompt(label) if isinstance(label, str) else {key: label[key] for key in ATTRIBUTES}
        predicted = analyze_clip(clip, frame_stride=frame_stride)
        clean_reports.append(clean_clip_report(clip, truth["color"], frame_stride=frame_stride))
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
    result["clean_clips"] = summarize_clean_clips(clean_reports)
    return result


# --- clean clips (DESIGN §10) ----------------------------------------------------------------------------


@dataclass(frozen=True)
class CleanClipCriteria:
    """The thresholds that make a Shapes clip clean (DESIGN §10), in one place.

    A frame's *object* is a connected component (8-connectivity: diagonal neighbours touch) of at least
    ``min_object_pixels`` non-black pixels, a pixel being non-black when its largest channel exceeds
    ``bright_level``. A clip is clean when

    - every frame holds exactly one object and at most ``max_stray_pixels`` other non-black pixels;
    - in at least ``min_color_share`` of the frames the object's mean color is nearest (Euclidean, in RGB) to the
      prompted palette color;
    - the object's centroid track lies on a straight line travelled at constant speed: the RMS distance of the
      centroids from their least-squares fit ``p(t) = p0 + v t`` is at most ``max_track_rms`` px, the fitted speed
      ``|v|`` is within ``[min_speed, max_speed]`` px per frame, and no step between consecutive frames moves it more
      than ``max_jump`` px per frame.

    Times count original frames, so that a clip of key frames (every 5th frame) is held to the same speed; its
    jumps are the distance between consecutive key frames divided by 5.

    Example:
        >>> CLEAN_CLIP_CRITERIA.max_track_rms
        1.5
        >>> strict = CleanClipCriteria(max_stray_pixels=0)
    """

    bright_level: int = 70
    min_object_pixels: int = 12
    max_stray_pixels: int = 4
    min_color_share: float = 0.95
    max_track_rms: float = 1.5
    min_speed: float = 1.5
    max_speed: float = 2.5
    max_jump: float = 5.0

    def __post_init__(self) -> None:
        if not 0 < self.min_speed <= self.max_speed:
            raise ValueError(f"need 0 < min_speed <= max_speed, got {self.min_speed} and {self.max_speed}.")
        if self.min_object_pixels < 1 or self.max_stray_pixels < 0:
            raise ValueError(
                f"need min_object_pixels >= 1 and max_stray_pixels >= 0, got {self.min_object_pixels} and "
                f"{self.max_stray_pixels}."
            )


CLEAN_CLIP_CRITERIA = CleanClipCriteria()
#: The criteria a clip can fail, in the order reports list them.
CLEAN_CLIP_FAILURES: tuple[str, ...] = ("objects", "stray_pixels", "color", "track_rms", "speed", "jump")
_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


class FrameObjects(NamedTuple):
    """What :func:`frame_objects` finds in one frame; ``centroid`` ``(x, y)`` and ``mean_color`` (RGB) are those of
    the largest object, ``None`` when the frame has none; ``stray_pixels`` counts the non-black pixels outside it."""

    num_objects: int
    stray_pixels: int
    centroid: tuple[float, float] | None
    mean_color: tuple[float, float, float] | None


def frame_objects(frame: np.ndarray, criteria: CleanClipCriteria = CLEAN_CLIP_CRITERIA) -> FrameObjects:
    """The objects of one ``uint8 [H, W, 3]`` frame, as :class:`CleanClipCriteria` defines them.

    Example:
        >>> from flashvideo.data.shapes import render_clip
        >>> found = frame_objects(render_clip("red", "square", "right", size=16, start=(0, 0))[0])
        >>> found.num_objects, found.stray_pixels, found.centroid
        (1, 0, (7.5, 7.5))
    """
    frame = np.asarray(frame)
    if frame.ndim != 3 or frame.shape[-1] != 3 or frame.dtype != np.uint8:
        raise ValueError(f"frame must be uint8 [H, W, 3], got {frame.dtype} {frame.shape}")
    bright = frame.max(axis=-1) > criteria.bright_level
    labels, count = _ndimage().label(bright, structure=_EIGHT_CONNECTED)
    sizes = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    objects = np.flatnonzero(sizes >= criteria.min_object_pixels)
    total = int(bright.sum())
    if len(objects) == 0:
        return FrameObjects(0, total, None, None)
    largest = int(objects[np.argmax(sizes[objects])])
    mask = labels == largest + 1
    rows, cols = np.nonzero(mask)
    color = frame[mask].astype(np.float64).mean(axis=0)
    return FrameObjects(
        len(objects), total - int(sizes[largest]), (float(cols.mean()), float(rows.mean())), tuple(map(float, color))
    )


def nearest_palette_color(rgb: Sequence[float]) -> str:
    """The Shapes palette color nearest (Euclidean, in RGB) to ``rgb``.

    Example:
        >>> nearest_palette_color((200, 30, 30))
        'red'
    """
    distances = ((_PALETTE - np.asarray(rgb, dtype=np.float64)) ** 2).sum(axis=1)
    return _PALETTE_NAMES[int(np.argmin(distances))]


def fit_constant_velocity(
    times: Sequence[float], points: Sequence[tuple[float, float]]
) -> tuple[np.ndarray, tuple[float, float]]:
    """Least-squares fit ``p(t) = p0 + v t`` of a centroid track: the residuals ``[N, 2]`` (px, x then y) and ``v``.

    Raises:
        ValueError: with fewer than two points, two equal times, or lengths that differ.

    Example:
        >>> residuals, velocity = fit_constant_velocity([0, 1, 2], [(0, 0), (2, 1), (4, 0)])
        >>> [round(v, 6) + 0.0 for v in velocity]
        [2.0, 0.0]
    """
    times, points = np.asarray(times, dtype=np.float64), np.asarray(points, dtype=np.float64).reshape(-1, 2)
    if len(times) != len(points) or len(times) < 2 or len(np.unique(times)) != len(times):
        raise ValueError(
            f"a track needs two or more points at distinct times, got {len(times)} times and {len(points)} points"
        )
    design = np.stack([np.ones_like(times), times], axis=1)
    coefficients, *_ = np.linalg.lstsq(design, points, rcond=None)
    return points - design @ coefficients, (float(coefficients[1, 0]), float(coefficients[1, 1]))


def fit_track(times: Sequence[float], points: Sequence[tuple[float, float]]) -> tuple[float, float]:
    """:func:`fit_constant_velocity` summed up: ``(rms, speed)``, the root mean square distance (px) of the points
    from the fitted positions and ``|v|`` in px per unit of ``times``.

    Raises:
        ValueError: as :func:`fit_constant_velocity`.

    Example:
        >>> [round(value, 6) for value in fit_track([0, 1, 2], [(0, 0), (2, 0), (4, 0)])]
        [0.0, 2.0]
    """
    residuals, velocity = fit_constant_velocity(times, points)
    return float(np.sqrt((residuals**2).sum(axis=1).mean())), float(np.hypot(*velocity))


def track_passes(
    rms: float | None, speed: float | None, jump: float | None, criteria: CleanClipCriteria = CLEAN_CLIP_CRITERIA
) -> dict[str, bool]:
    """Which track criteria (``track_rms``, ``speed``, ``jump``) a track's figures pass; ``None`` (no track) fails.

    Example:
        >>> track_passes(0.4, 2.0, 6.0)
        {'track_rms': True, 'speed': True, 'jump': False}
    """
    return {
        "track_rms": rms is not None and rms <= criteria.max_track_rms,
        "speed": speed is not None and criteria.min_speed <= speed <= criteria.max_speed,
        "jump": jump is not None and jump <= criteria.max_jump,
    }


def largest_jump(times: Sequence[float], points: Sequence[tuple[float, float]]) -> float:
    """The largest distance (px) between consecutive points of a track, per unit of ``times`` between them.

    Raises:
        ValueError: with fewer than two points, times that do not increase, or lengths that differ.

    Example:
        >>> largest_jump([0, 1, 3], [(0, 0), (2, 0), (12, 0)])
        5.0
    """
    times, points = np.asarray(times, dtype=np.float64), np.asarray(points, dtype=np.float64).reshape(-1, 2)
    steps = np.diff(times)
    if len(times) != len(points) or len(times) < 2 or (steps <= 0).any():
        raise ValueError(
            f"a track needs two or more points at increasing times, got {len(times)} times and {len(points)} points"
        )
    return float((np.hypot(*np.diff(points, axis=0).T) / steps).max())


def clean_clip_report(
    frames: Any,
    color: str,
    *,
    frame_stride: int = 1,
    criteria: CleanClipCriteria = CLEAN_CLIP_CRITERIA,
) -> dict[str, Any]:
    """Is the clip clean (DESIGN §10), and if not, which criteria does it fail?

    Args:
        frames: a clip as :func:`analyze_clip` takes it.
        color: the prompted palette color (a name from the Shapes palette).
        frame_stride: original frames between two given frames (5 for key frames 0, 5, 10, 15); speeds and jumps are
            per original frame.
        criteria: the thresholds (default: DESIGN §10's).

    Returns:
        ``clean`` (bool); ``failures``: the names in :data:`CLEAN_CLIP_FAILURES` of the criteria it fails; the parts:
        ``one_object_frames`` (share of frames with exactly one object), ``stray_free_frames`` (share with at most
        ``max_stray_pixels`` non-black pixels outside the largest object), ``color_frames`` (share whose largest object
        has the prompted color; frames without one count as wrong), ``track_rms``, ``speed`` (px/frame) and
        ``largest_jump`` (px/frame) of the largest object's centroid track, ``None`` when fewer than two frames hold
        an object; and per frame ``num_objects`` and ``stray_pixels``.

    Raises:
        ValueError: if ``color`` is not a palette color, or as :func:`analyze_clip` does.

    Example:
        >>> from flashvideo.data.shapes import render_clip
        >>> clip = render_clip("red", "circle", "right", size=16)
        >>> clean_clip_report(clip, "red")["clean"]
        True
        >>> clip[7] = 0  # one frame blanked
        >>> clean_clip_report(clip, "red")["failures"]  # the blank frame has no object, so not the color either
        ['objects', 'color']
    """
    check_choice("color", color, _PALETTE_NAMES)
    check_int("frame_stride", frame_stride, 1)
    found = [frame_objects(frame, criteria) for frame in _as_uint8_clip(frames)]
    tracked = [(t * frame_stride, f.centroid) for t, f in enumerate(found) if f.centroid is not None]
    report: dict[str, Any] = {
        "one_object_frames": float(np.mean([f.num_objects == 1 for f in found])),
        "stray_free_frames": float(np.mean([f.stray_pixels <= criteria.max_stray_pixels for f in found])),
        "color_frames": float(
            np.mean([f.mean_color is not None and nearest_palette_color(f.mean_color) == color for f in found])
        ),
        "track_rms": None,
        "speed": None,
        "largest_jump": None,
        "num_objects": [f.num_objects for f in found],
        "stray_pixels": [f.stray_pixels for f in found],
    }
    if len(tracked) >= 2:
        times, points = zip(*tracked)
        report["track_rms"], report["speed"] = fit_track(times, points)
        report["largest_jump"] = largest_jump(times, points)
    passed = {
        "objects": report["one_object_frames"] == 1.0,
        "stray_pixels": report["stray_free_frames"] == 1.0,
        "color": report["color_frames"] >= criteria.min_color_share,
        **track_passes(report["track_rms"], report["speed"], report["largest_jump"], criteria),
    }
    report["failures"] = [name for name in CLEAN_CLIP_FAILURES if not passed[name]]
    report["clean"] = not report["failures"]
    return report


def summarize_clean_clips(reports: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Aggregate :func:`clean_clip_report` results over clips.

    Returns:
        ``clean_rate`` and its binomial standard error ``clean_rate_stderr`` (``sqrt(p (1 - p) / n)``),
        ``num_clips``; ``one_object_rate``, ``stray_free_rate`` and ``color_frame_share`` over all frames;
        ``median_track_rms``, ``median_largest_jump`` and ``median_speed`` over the ``clips_with_track`` clips that
        have a track (``None`` if none has); ``failure_rates``: for each criterion, the share of clips failing it.

    Raises:
        ValueError: if ``reports`` is empty.

    Example:
        >>> from flashvideo.data.shapes import render_clip
        >>> summary = summarize_clean_clips([clean_clip_report(render_clip("red", "circle", "up"), "red")])
        >>> summary["clean_rate"], round(summary["median_speed"], 6)
        (1.0, 2.0)
    """
    if not reports:
        raise ValueError("reports is empty; give at least one clip's clean_clip_report")
    n = len(reports)
    rate = sum(report["clean"] for report in reports) / n

    def frame_share(key: str) -> float:
        return float(np.average([r[key] for r in reports], weights=[len(r["num_objects"]) for r in reports]))

    def median(key: str) -> float | None:
        values = [r[key] for r in reports if r[key] is not None]
        return float(np.median(values)) if values else None

    return {
        "clean_rate": rate,
        "clean_rate_stderr": float(np.sqrt(rate * (1 - rate) / n)),
        "num_clips": n,
        "one_object_rate": frame_share("one_object_frames"),
        "stray_free_rate": frame_share("stray_free_frames"),
        "color_frame_share": frame_share("color_frames"),
        "median_track_rms": median("track_rms"),
        "median_largest_jump": median("largest_jump"),
        "median_speed": median("speed"),
        "clips_with_track": sum(r["track_rms"] is not None for r in reports),
        "failure_rates": {name: sum(name in r["failures"] for r in reports) / n for name in CLEAN_CLIP_FAILURES},
    }


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
    labels, count = _ndimage().label(mask, structure=_IN_FRAME)
    if count == 0:
        return []
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    best: dict[int, tuple[int, int, tuple[slice, ...]]] = {}
    for label, box in enumerate(_ndimage().find_objects(labels), start=1):
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
