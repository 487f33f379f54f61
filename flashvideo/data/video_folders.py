"""Load folders of real videos into a 🤗 ``datasets.Dataset`` with the columns of Shapes.

Three folder formats are understood (`folder_format`; "layout", in this package, means only the vocabulary
layout):

``ucf101``
    ``root/<ClassName>/*.avi`` (UCF-101, Kinetics-style class folders, any video extension).
    The caption comes from the folder name: ``ApplyEyeMakeup`` → ``apply eye makeup``,
    ``playing_guitar`` → ``playing guitar``.
``metadata``
    ``root/metadata.csv`` (or ``metadata.jsonl``) with ``file_name`` and ``text`` columns, paths
    relative to ``root``, like 🤗 ``videofolder`` / ``imagefolder``.
``frames``
    ``root/<clip>/*.png`` (BAIR-style folders of frames, naturally sorted so ``2.png`` comes
    before ``10.png``). Captions come from an optional ``metadata.csv`` whose ``file_name`` is the
    clip folder, or from the ``text`` argument.

Each kept clip gives ``num_frames`` frames taken every ``stride`` frames from ``start``, resized
so the shorter side is ``image_size`` and centre-cropped to a square. Unreadable, truncated,
missing and too-short clips are skipped (never padded), counted in a :class:`LoadReport` and
logged; they never stop the run.

Example:
    >>> ds, report = load_video_folder("UCF-101", num_frames=16, stride=2)  # doctest: +SKIP
    >>> ds[0]["video"].shape, ds[0]["text"], report.num_skipped  # doctest: +SKIP
    ((16, 64, 64, 3), 'apply eye makeup', 0)
"""

from __future__ import annotations

import csv
import json
import os
import re
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import datasets
import numpy as np
import pyarrow as pa
from datasets.features.features import Array4DExtensionType
from PIL import Image
from tqdm.auto import tqdm
from transformers.utils import logging

from ..validation import check_choice, check_int
from ..video_io import VideoDecodeError, read_video
from .shapes import _to_array4d, clips_per_chunk  # shared packing: both data sets store video alike

logger = logging.get_logger(__name__)

FOLDER_FORMATS: tuple[str, ...] = ("auto", "ucf101", "metadata", "frames")
VIDEO_EXTENSIONS: frozenset[str] = frozenset(
    {".avi", ".mp4", ".m4v", ".mkv", ".webm", ".mov", ".mpg", ".mpeg", ".flv", ".wmv", ".gif", ".ogv"}
)
IMAGE_EXTENSIONS: frozenset[str] = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"})
METADATA_FILES: tuple[str, ...] = ("metadata.csv", "metadata.jsonl")
# How many skipped paths the warning names; the full list is in the report.
_MAX_PATHS_IN_WARNING = 5


@dataclass
class LoadReport:
    """What :func:`load_video_folder` kept and skipped.

    Attributes:
        num_ok: clips in the data set.
        skipped_files: paths of skipped clips (files or frame folders), in the order met.
        reasons: a short reason for each skipped path.
        num_corrupt: skipped because they could not be decoded (random bytes, truncated, ...).
        num_too_short: skipped because they have fewer frames than requested.
        num_missing: skipped because a metadata row names a path that does not exist, or a
            frame folder has no caption.

    Example:
        >>> report = LoadReport(num_ok=3)
        >>> report.num_skipped
        0
    """

    num_ok: int = 0
    skipped_files: list[str] = field(default_factory=list)
    reasons: dict[str, str] = field(default_factory=dict)
    num_corrupt: int = 0
    num_too_short: int = 0
    num_missing: int = 0

    @property
    def num_skipped(self) -> int:
        """Number of skipped clips."""
        return len(self.skipped_files)

    def skip(self, path: str, kind: str, reason: str) -> None:
        """Record a skipped clip; ``kind`` is ``"corrupt"``, ``"too_short"`` or ``"missing"``."""
        counter = f"num_{kind}"
        if not hasattr(self, counter):
            raise ValueError(f"kind must be one of 'corrupt', 'too_short', 'missing', got {kind!r}")
        setattr(self, counter, getattr(self, counter) + 1)
        self.skipped_files.append(path)
        self.reasons[path] = reason

    def summary(self) -> str:
        """One line: kept and skipped counts, by reason."""
        return (
            f"{self.num_ok} clips loaded, {self.num_skipped} skipped ({self.num_corrupt} corrupt, "
            f"{self.num_too_short} too short, {self.num_missing} missing)"
        )


@dataclass(frozen=True)
class _Entry:
    path: str  # absolute path of a video file or a frame folder
    text: str
    is_frame_folder: bool


def caption_from_class_name(name: str) -> str:
    """Turn a class folder name into a caption.

    CamelCase is split into words (runs of capitals stay together as an acronym), underscores
    and hyphens become spaces, and everything is lower-cased.

    Example:
        >>> caption_from_class_name("ApplyEyeMakeup")
        'apply eye makeup'
        >>> caption_from_class_name("playing_guitar")
        'playing guitar'
    """
    words = re.findall(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|\d+", name)
    return " ".join(word.lower() for word in words) if words else name.strip().lower()


def resize_and_center_crop(frames: np.ndarray, image_size: int) -> np.ndarray:
    """Resize frames so the shorter side is ``image_size``, then crop the centre square.

    Args:
        frames: ``uint8 [T, H, W, 3]``.
        image_size: output side (>= 1).

    Returns:
        ``uint8 [T, image_size, image_size, 3]``.

    Example:
        >>> resize_and_center_crop(np.zeros((2, 48, 80, 3), np.uint8), 32).shape
        (2, 32, 32, 3)
    """
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise ValueError(f"image_size must be an integer >= 1, got {image_size!r}")
    height, width = frames.shape[1:3]
    scale = image_size / min(height, width)
    new_h, new_w = max(image_size, round(height * scale)), max(image_size, round(width * scale))
    top, left = (new_h - image_size) // 2, (new_w - image_size) // 2
    out = np.empty((len(frames), image_size, image_size, 3), dtype=np.uint8)
    for i, frame in enumerate(frames):
        image = Image.fromarray(frame)
        if (new_h, new_w) != (height, width):
            # Bicubic in Pillow widens its kernel when shrinking, so downscaling is antialiased.
            image = image.resize((new_w, new_h), Image.Resampling.BICUBIC)
        out[i] = np.asarray(image)[top : top + image_size, left : left + image_size]
    return out


def load_video_folder(
    root: str | os.PathLike,
    *,
    folder_format: str = "auto",
    num_frames: int = 16,
    stride: int = 1,
    start: int = 0,
    image_size: int = 64,
    text: str | None = None,
    caption_template: str = "{label}",
    num_workers: int = 1,
    shard: tuple[int, int] | None = None,
    layout: str | None = None,
) -> tuple[datasets.Dataset, LoadReport]:
    """Load a folder of videos (or of frame folders) as a 🤗 ``Dataset`` plus a :class:`LoadReport`.

    Args:
        root: the data set folder.
        folder_format: ``"ucf101"``, ``"metadata"``, ``"frames"`` (see the module docstring), or
            ``"auto"`` to detect it: a ``metadata.csv``/``.jsonl`` naming files → ``metadata``;
            naming folders → ``frames``; otherwise class folders of videos → ``ucf101`` and
            folders of images → ``frames``.
        num_frames: frames per clip (>= 1); shorter clips are skipped.
        stride: take every ``stride``-th frame (>= 1).
        start: first frame index (>= 0).
        image_size: output side after resizing the shorter side and centre cropping (>= 1).
        text: caption for frame folders that have none (``frames`` format); required there when
            no metadata file gives captions.
        caption_template: ``ucf101`` captions, with ``{label}`` replaced by the caption made from
            the class folder name, e.g. ``"a video of a person doing {label}"``.
        num_workers: threads decoding in parallel (>= 1); FFmpeg and Pillow release the GIL.
        shard: ``(index, count)``: only the clips ``index, index + count, ...`` of the sorted list are
            decoded (one process's share of a large folder; the encode step uses it).
        layout: the old name of `folder_format` (deprecated; still accepted, with a FutureWarning).

    Returns:
        ``(dataset, report)``: the dataset has columns ``video`` (``Array4D`` uint8
        ``[num_frames, image_size, image_size, 3]``, formatted as NumPy ``uint8``), ``text`` and
        ``file_name`` (path relative to ``root``), in sorted path order.

    Raises:
        FileNotFoundError: if ``root`` is not a folder.
        ValueError: on a bad argument, an undetectable format, or a malformed metadata file.

    Example:
        >>> ds, report = load_video_folder("bair/", folder_format="frames", text="a robot arm")  # doctest: +SKIP
        >>> print(report.summary())  # doctest: +SKIP
        256 clips loaded, 0 skipped (0 corrupt, 0 too short, 0 missing)
    """
    check_int("num_frames", num_frames, 1)
    check_int("stride", stride, 1)
    check_int("start", start, 0)
    check_int("image_size", image_size, 1)
    check_int("num_workers", num_workers, 1)
    if layout is not None:
        warnings.warn(
            "load_video_folder(layout=...) is now folder_format=... ('layout' is the processor's vocabulary "
            "layout); the old keyword will be removed.",
            FutureWarning,
            stacklevel=2,
        )
        folder_format = layout
    check_choice("folder_format", folder_format, FOLDER_FORMATS)
    if "{label}" not in caption_template:
        raise ValueError(f"caption_template must contain '{{label}}', got {caption_template!r}")
    root = os.path.abspath(os.fspath(root))
    if not os.path.isdir(root):
        raise FileNotFoundError(f"root={root!r} is not a folder")

    report = LoadReport()
    if folder_format == "auto":
        folder_format = _detect_folder_format(root)
        logger.info("Detected the %r format under %s", folder_format, root)
    if folder_format == "ucf101":
        entries = _ucf101_entries(root, caption_template)
    elif folder_format == "metadata":
        entries = _metadata_entries(root, report)
    else:
        entries = _frame_folder_entries(root, text, report)
    if not entries and not report.num_skipped:
        logger.warning("No clips found under %s with the %r format", root, folder_format)

    if shard is not None:
        index, count = shard
        if not (isinstance(index, int) and isinstance(count, int) and 0 <= index < count):
            raise ValueError(f"shard must be (index, count) with 0 <= index < count, got {shard!r}")
        entries = entries[index::count]
    indices = [start + i * stride for i in range(num_frames)]

    def load(entry: _Entry) -> np.ndarray | tuple[str, str]:
        # Return the clip, or (kind, reason) when it has to be skipped.
        try:
            if entry.is_frame_folder:
                frames = _read_frame_folder(entry.path, indices)
            else:
                frames = read_video(entry.path, num_frames=num_frames, stride=stride, start=start)
        except (VideoDecodeError, OSError, SyntaxError, EOFError, ValueError, Image.DecompressionBombError) as error:
            # Pillow reports some broken images as SyntaxError/EOFError, a huge one (a few KB of PNG can declare
            # 14000×14000 pixels) as DecompressionBombError; a bad file must not end the run.
            return "corrupt", f"{type(error).__name__}: {error}"
        if len(frames) < num_frames:
            return (
                "too_short",
                f"{len(frames)} of the {num_frames} frames requested (stride {stride}, start {start})",
            )
        return resize_and_center_crop(frames, image_size)

    video_type = Array4DExtensionType(shape=(num_frames, image_size, image_size, 3), dtype="uint8")
    per_chunk = clips_per_chunk((num_frames, image_size, image_size, 3))
    chunks: list[pa.ExtensionArray] = []
    buffer: list[np.ndarray] = []
    texts: list[str] = []
    names: list[str] = []
    with ThreadPoolExecutor(max_workers=num_workers) as pool:
        results = _ordered_map(pool, load, entries, num_workers)
        for entry, result in tqdm(
            zip(entries, results, strict=True),
            total=len(entries),
            desc="Loading videos",
            unit="clip",
            leave=False,
        ):
            if isinstance(result, tuple):
                report.skip(entry.path, *result)
                continue
            buffer.append(result)
            texts.append(entry.text)
            names.append(os.path.relpath(entry.path, root))
            if len(buffer) == per_chunk:
                chunks.append(_to_array4d(np.stack(buffer), video_type))
                buffer = []
    if buffer:
        chunks.append(_to_array4d(np.stack(buffer), video_type))
    report.num_ok = len(texts)

    dataset = _build_dataset(chunks, texts, names, video_type, root, entries, folder_format, indices, image_size)
    if report.num_skipped:
        shown = ", ".join(report.skipped_files[:_MAX_PATHS_IN_WARNING])
        more = report.num_skipped - _MAX_PATHS_IN_WARNING
        logger.warning(
            "%s under %s. Skipped: %s%s",
            report.summary(),
            root,
            shown,
            f" and {more} more" if more > 0 else "",
        )
    else:
        logger.info("%s under %s", report.summary(), root)
    return dataset, report


def video_folder_features(num_frames: int = 16, image_size: int = 64) -> datasets.Features:
    """The 🤗 ``Features`` of :func:`load_video_folder`'s output.

    Example:
        >>> list(video_folder_features())
        ['video', 'text', 'file_name']
    """
    return datasets.Features(
        {
            "video": datasets.Array4D(shape=(num_frames, image_size, image_size, 3), dtype="uint8"),
            "text": datasets.Value("string"),
            "file_name": datasets.Value("string"),
        }
    )


def _build_dataset(
    chunks: list[pa.ExtensionArray],
    texts: list[str],
    names: list[str],
    video_type: Array4DExtensionType,
    root: str,
    entries: list[_Entry],
    folder_format: str,
    indices: list[int],
    image_size: int,
) -> datasets.Dataset:
    num_frames = len(indices)
    table = pa.table(
        {
            "video": pa.chunked_array(chunks, type=video_type),
            "text": pa.array(texts, type=pa.string()),
            "file_name": pa.array(names, type=pa.string()),
        }
    )
    info = datasets.DatasetInfo(
        description=f"Videos from {root} ({folder_format} format)",
        features=video_folder_features(num_frames, image_size),
    )
    # Fingerprint from what determines the content (paths, sizes, mtimes, options) instead of hashing
    # every frame: cheap, and it changes when a file is replaced.
    stats = []
    for entry in entries:
        try:
            st = os.stat(entry.path)
            stats.append((entry.path, entry.text, st.st_size, st.st_mtime_ns))
        except OSError:
            stats.append((entry.path, entry.text, -1, -1))
    fingerprint = datasets.fingerprint.Hasher.hash(
        ("flashvideo-video-folder", 1, folder_format, indices, image_size, stats)
    )
    dataset = datasets.Dataset(datasets.table.InMemoryTable(table), info=info, fingerprint=fingerprint)
    # dtype as a string: format kwargs must be JSON-serialisable for save_to_disk.
    dataset.set_format("numpy", columns=["video"], output_all_columns=True, dtype="uint8")
    return dataset


def _ordered_map(pool: ThreadPoolExecutor, fn: Callable, items: list, num_workers: int) -> Iterator:
    if num_workers == 1:
        return map(fn, items)
    # Bound the number of decoded clips waiting in memory to a few per worker.
    window = 4 * num_workers

    def generate() -> Iterator:
        pending = []
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) >= window:
                yield pending.pop(0).result()
        for future in pending:
            yield future.result()

    return generate()


def _natural_key(name: str) -> list:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def _list(folder: str, extensions: frozenset[str]) -> list[str]:
    names = [
        name
        for name in os.listdir(folder)
        if os.path.splitext(name)[1].lower() in extensions and os.path.isfile(os.path.join(folder, name))
    ]
    return sorted(names, key=_natural_key)


def _subfolders(root: str) -> list[str]:
    names = [n for n in os.listdir(root) if os.path.isdir(os.path.join(root, n)) and not n.startswith(".")]
    return sorted(names, key=_natural_key)


def _find_metadata(root: str) -> str | None:
    for name in METADATA_FILES:
        path = os.path.join(root, name)
        if os.path.isfile(path):
            return path
    return None


def _read_metadata(path: str) -> list[dict[str, str]]:
    rows: list[dict[str, str]]
    if path.endswith(".jsonl"):
        with open(path, encoding="utf-8") as handle:
            try:
                rows = [json.loads(line) for line in handle if line.strip()]
            except json.JSONDecodeError as error:
                raise ValueError(f"{path} is not valid JSON Lines: {error}") from error
    else:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.DictReader(handle))
    for number, row in enumerate(rows, start=1):
        if not isinstance(row, dict) or "file_name" not in row or "text" not in row:
            raise ValueError(f"{path} must have 'file_name' and 'text' columns; row {number} is {row!r}")
    return rows


def _detect_folder_format(root: str) -> str:
    metadata = _find_metadata(root)
    if metadata is not None:
        rows = _read_metadata(metadata)
        for row in rows:
            target = os.path.join(root, row["file_name"])
            if os.path.exists(target):
                return "frames" if os.path.isdir(target) else "metadata"
        return "metadata"  # nothing listed exists: report every row as missing
    for name in _subfolders(root):
        folder = os.path.join(root, name)
        if _list(folder, VIDEO_EXTENSIONS):
            return "ucf101"
        if _list(folder, IMAGE_EXTENSIONS):
            return "frames"
    raise ValueError(
        f"Cannot detect the folder format of {root}: expected class folders of videos (folder_format='ucf101'), "
        f"a metadata.csv with file_name,text columns (folder_format='metadata'), or folders of frames "
        f"(folder_format='frames')"
    )


def _ucf101_entries(root: str, caption_template: str) -> list[_Entry]:
    entries = []
    for name in _subfolders(root):
        folder = os.path.join(root, name)
        caption = caption_template.format(label=caption_from_class_name(name))
        entries += [_Entry(os.path.join(folder, f), caption, False) for f in _list(folder, VIDEO_EXTENSIONS)]
    return entries


def _metadata_entries(root: str, report: LoadReport) -> list[_Entry]:
    metadata = _find_metadata(root)
    if metadata is None:
        raise ValueError(f"folder_format='metadata' needs one of {list(METADATA_FILES)} in {root}")
    entries = []
    for row in _read_metadata(metadata):
        path = os.path.join(root, row["file_name"])
        if not os.path.isfile(path):
            report.skip(path, "missing", f"listed in {os.path.basename(metadata)} but not a file")
            continue
        entries.append(_Entry(path, str(row["text"]), False))
    return sorted(entries, key=lambda e: _natural_key(e.path))


def _frame_folder_entries(root: str, text: str | None, report: LoadReport) -> list[_Entry]:
    metadata = _find_metadata(root)
    captions: dict[str, str] = {}
    if metadata is not None:
        for row in _read_metadata(metadata):
            captions[os.path.normpath(row["file_name"])] = str(row["text"])
    elif text is None:
        raise ValueError(
            "text must be given for folder_format='frames' when there is no metadata.csv giving captions, "
            "e.g. text='a robot arm pushing objects'"
        )
    entries = []
    for name in _subfolders(root):
        folder = os.path.join(root, name)
        caption = captions.get(os.path.normpath(name), text)
        if caption is None:
            report.skip(
                folder, "missing", f"no caption in {os.path.basename(metadata or '')} and no text given"
            )
            continue
        entries.append(_Entry(folder, caption, True))
    return entries


def _read_frame_folder(folder: str, indices: list[int]) -> np.ndarray:
    names = _list(folder, IMAGE_EXTENSIONS)
    if len(names) <= indices[-1]:
        # Too short: only the count matters to the caller, so skip decoding.
        return np.zeros((sum(i < len(names) for i in indices), 0, 0, 3), dtype=np.uint8)
    frames = []
    size = None
    for index in indices:
        path = os.path.join(folder, names[index])
        with Image.open(path) as image:
            _check_pixels(image, path)
            frame = np.asarray(image.convert("RGB"))
        # Frames of one clip should agree; scale strays to the first frame's size so they stack.
        if size is not None and frame.shape[:2] != size:
            frame = np.asarray(Image.fromarray(frame).resize((size[1], size[0]), Image.Resampling.BICUBIC))
        size = frame.shape[:2]
        frames.append(frame)
    return np.stack(frames)


def _check_pixels(image: Image.Image, path: str) -> None:
    """Refuse (ValueError) an image over Pillow's `Image.MAX_IMAGE_PIXELS` before decoding it: between that and
    twice that, Pillow only warns (DecompressionBombWarning) and would decode it all."""
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and image.width * image.height > limit:
        raise ValueError(
            f"{path} is {image.width}×{image.height} pixels, more than PIL.Image.MAX_IMAGE_PIXELS ({limit})"
        )
