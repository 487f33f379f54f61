"""The procedural Shapes data set (DESIGN §6).

Each clip shows one colored shape (circle, square or triangle) moving left, right, up or down at
2 px per frame (or at a speed drawn per clip, see ``speed_range``) over a black background, with the
prompt ``a {color} {shape} moving {direction}``.
Everything is derived from a seed, so the same seed always gives the same data set; no file is
downloaded.

Example:
    >>> from flashvideo.data.shapes import shapes_dataset
    >>> ds = shapes_dataset(8, seed=0)
    >>> ds[0]["video"].shape, ds[0]["text"]  # doctest: +SKIP
    ((16, 64, 64, 3), 'a cyan square moving up')
"""

from __future__ import annotations

import functools
import itertools
import re
from typing import Any

import datasets
import numpy as np
import pyarrow as pa
from datasets.features.features import Array4DExtensionType
from tqdm.auto import tqdm
from transformers.utils import logging

from ..validation import check_choice, check_int, check_number

logger = logging.get_logger(__name__)

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (230, 40, 40),
    "green": (40, 200, 60),
    "blue": (50, 90, 240),
    "yellow": (240, 220, 40),
    "magenta": (220, 60, 220),
    "cyan": (40, 220, 230),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
DIRECTIONS: tuple[str, ...] = ("left", "right", "up", "down")

#: Unit step per frame for each direction, as (dx, dy) in image coordinates (y grows downwards).
DIRECTION_VECTORS: dict[str, tuple[int, int]] = {
    "left": (-1, 0),
    "right": (1, 0),
    "up": (0, -1),
    "down": (0, 1),
}
SPEED = 2  # pixels per frame, unless a speed range is asked for
DEFAULT_NUM_FRAMES = 16
DEFAULT_IMAGE_SIZE = 64
FPS = 8
# Object size range at the reference 64 px resolution; scaled proportionally for other sizes.
_MIN_SIZE_64, _MAX_SIZE_64 = 14, 18

PROMPT_TEMPLATE = "a {color} {shape} moving {direction}"
_PROMPT_RE = re.compile(
    r"^\s*an?\s+(?P<color>{})\s+(?P<shape>{})\s+moving\s+(?P<direction>{})\s*\.?\s*$".format(
        "|".join(COLORS), "|".join(SHAPES), "|".join(DIRECTIONS)
    ),
    re.IGNORECASE,
)


def make_prompt(color: str, shape: str, direction: str) -> str:
    """Return the Shapes prompt for the given attributes.

    Example:
        >>> make_prompt("red", "circle", "right")
        'a red circle moving right'
    """
    check_choice("color", color, COLORS)
    check_choice("shape", shape, SHAPES)
    check_choice("direction", direction, DIRECTIONS)
    return PROMPT_TEMPLATE.format(color=color, shape=shape, direction=direction)


def parse_prompt(text: str) -> dict[str, str]:
    """Parse a Shapes prompt back into its attributes.

    Raises:
        ValueError: if ``text`` does not follow ``a {color} {shape} moving {direction}``.

    Example:
        >>> parse_prompt("a blue triangle moving up")
        {'color': 'blue', 'shape': 'triangle', 'direction': 'up'}
    """
    match = _PROMPT_RE.match(text)
    if match is None:
        raise ValueError(
            f"text={text!r} is not a Shapes prompt; expected 'a {{color}} {{shape}} moving {{direction}}' "
            f"with color in {list(COLORS)}, shape in {list(SHAPES)}, direction in {list(DIRECTIONS)}"
        )
    return {key: value.lower() for key, value in match.groupdict().items()}


def prompts_for_all_attributes() -> list[str]:
    """Every Shapes prompt: one per (color, shape, direction) combination, 72 in all.

    Example:
        >>> prompts_for_all_attributes()[:2]
        ['a red circle moving left', 'a red circle moving right']
    """
    return [make_prompt(c, s, d) for c, s, d in itertools.product(COLORS, SHAPES, DIRECTIONS)]


def size_range(image_size: int = DEFAULT_IMAGE_SIZE) -> tuple[int, int]:
    """Inclusive range of object sizes (px across) used at ``image_size``: 14–18 px at 64 px."""
    check_int("image_size", image_size, 8)
    low = max(2, round(_MIN_SIZE_64 * image_size / DEFAULT_IMAGE_SIZE))
    high = max(low, round(_MAX_SIZE_64 * image_size / DEFAULT_IMAGE_SIZE))
    return low, high


def shape_mask(shape: str, size: int) -> np.ndarray:
    """Boolean ``[size, size]`` mask of a shape filling its bounding box.

    The circle is inscribed in the box (fill ≈ π/4), the square fills it, and the triangle is
    isosceles with its apex at the top centre and its base on the bottom row (fill ≈ 1/2).

    Example:
        >>> bool(shape_mask("square", 3).all())
        True
    """
    check_choice("shape", shape, SHAPES)
    check_int("size", size, 2)
    # Pixel centres relative to the box centre.
    centres = np.arange(size) + 0.5 - size / 2
    if shape == "square":
        return np.ones((size, size), dtype=bool)
    if shape == "circle":
        return centres[:, None] ** 2 + centres[None, :] ** 2 <= (size / 2) ** 2
    # Triangle: row i (0 = top) spans a half-width growing linearly to size/2 on the last row.
    half_width = (np.arange(size) + 1) / 2
    return np.abs(centres)[None, :] <= half_width[:, None]


def start_range(
    direction: str,
    size: int,
    *,
    num_frames: int = DEFAULT_NUM_FRAMES,
    image_size: int = DEFAULT_IMAGE_SIZE,
    speed: float = SPEED,
) -> tuple[tuple[int, int], tuple[int, int]]:
    """Inclusive ranges ``((x_min, x_max), (y_min, y_max))`` of valid top-left start positions.

    A start is valid when the object's bounding box stays fully inside the frame for all
    ``num_frames`` frames while moving ``speed`` px per frame in ``direction``.

    Raises:
        ValueError: if no such position exists (object plus travel longer than ``image_size``).
    """
    check_choice("direction", direction, DIRECTIONS)
    check_int("size", size, 2)
    check_int("num_frames", num_frames, 1)
    check_int("image_size", image_size, 8)
    _check_speed("speed", speed)
    travel = int(_offsets(speed, num_frames)[-1])
    free = image_size - size
    if free - travel < 0:
        raise ValueError(
            f"num_frames={num_frames} is too many for image_size={image_size}, size={size} and speed={speed}: "
            f"the object would travel {travel} px with {free} px free; accepted: speed <= "
            f"{max_speed(size, num_frames=num_frames, image_size=image_size):.3g} px/frame at this length "
            "(or fewer frames, or a larger image_size)"
        )
    dx, dy = DIRECTION_VECTORS[direction]
    # Moving towards negative coordinates means starting at least `travel` px from the low edge.
    x_range = (travel if dx < 0 else 0, free - travel if dx > 0 else free)
    y_range = (travel if dy < 0 else 0, free - travel if dy > 0 else free)
    return x_range, y_range


def max_speed(size: int, *, num_frames: int = DEFAULT_NUM_FRAMES, image_size: int = DEFAULT_IMAGE_SIZE) -> float:
    """The fastest speed (px/frame) at which a ``size`` px object stays inside the frame for ``num_frames``.

    Example:
        >>> max_speed(18)  # (64 - 18) px over 15 steps
        3.066666666666667
    """
    check_int("size", size, 2)
    check_int("num_frames", num_frames, 2)
    check_int("image_size", image_size, 8)
    return (image_size - size) / (num_frames - 1)


def sample_clip_params(
    rng: np.random.Generator | int,
    *,
    num_frames: int = DEFAULT_NUM_FRAMES,
    image_size: int = DEFAULT_IMAGE_SIZE,
    speed_range: tuple[float, float] | None = None,
) -> dict[str, Any]:
    """Draw the attributes of one clip: color, shape, direction, size, speed and start position.

    Args:
        rng: a ``numpy.random.Generator`` (advanced in place) or an integer seed.
        num_frames: clip length, used to keep the object inside the frame.
        image_size: frame side in pixels.
        speed_range: ``(low, high)`` px/frame to draw the speed from, uniformly; the top is lowered to
            :func:`max_speed` for objects too large to travel that fast. ``None`` keeps :data:`SPEED` and
            draws nothing for it, so the other attributes are those drawn without a range.

    Returns:
        ``dict(color=str, shape=str, direction=str, size=int, speed=float, start=(x, y))``, ready to pass
        as keyword arguments to :func:`render_clip`.

    Raises:
        ValueError: if ``speed_range`` is not ``0 < low <= high``, or ``low`` is too fast for the drawn size.

    Example:
        >>> params = sample_clip_params(np.random.default_rng(0))
        >>> sorted(params)
        ['color', 'direction', 'shape', 'size', 'speed', 'start']
    """
    if not isinstance(rng, np.random.Generator):
        rng = np.random.default_rng(rng)
    color = list(COLORS)[int(rng.integers(len(COLORS)))]
    shape = SHAPES[int(rng.integers(len(SHAPES)))]
    direction = DIRECTIONS[int(rng.integers(len(DIRECTIONS)))]
    low, high = size_range(image_size)
    size = int(rng.integers(low, high + 1))
    speed = float(SPEED)
    if speed_range is not None:
        slowest, fastest = check_speed_range(speed_range)
        fastest = min(fastest, max_speed(size, num_frames=num_frames, image_size=image_size))
        if slowest > fastest:
            raise ValueError(
                f"speed_range={tuple(speed_range)} is too fast for a {size} px object over {num_frames} frames of "
                f"{image_size} px; accepted: a low end <= {fastest:.3g} px/frame"
            )
        speed = float(rng.uniform(slowest, fastest))
    (x_min, x_max), (y_min, y_max) = start_range(
        direction, size, num_frames=num_frames, image_size=image_size, speed=speed
    )
    start = (int(rng.integers(x_min, x_max + 1)), int(rng.integers(y_min, y_max + 1)))
    return {"color": color, "shape": shape, "direction": direction, "size": size, "speed": speed, "start": start}


def check_speed_range(speed_range: Any) -> tuple[float, float]:
    """Validate a ``(low, high)`` speed range in px/frame and return it as floats.

    Raises:
        ValueError: unless it is two numbers with ``0 < low <= high``.
    """
    try:
        slowest, fastest = (float(v) for v in speed_range)
    except (TypeError, ValueError):
        raise ValueError(f"speed_range must be two numbers (low, high) in px/frame, got {speed_range!r}") from None
    if not 0 < slowest <= fastest or not np.isfinite(fastest):
        raise ValueError(f"speed_range must satisfy 0 < low <= high (px/frame), got {speed_range!r}")
    return slowest, fastest


def render_clip(
    color: str | tuple[int, int, int],
    shape: str,
    direction: str,
    *,
    size: int = 16,
    start: tuple[int, int] | None = None,
    num_frames: int = DEFAULT_NUM_FRAMES,
    image_size: int = DEFAULT_IMAGE_SIZE,
    speed: float = SPEED,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Render one Shapes clip.

    Args:
        color: a name from :data:`COLORS` or an explicit RGB triple.
        shape: one of :data:`SHAPES`.
        direction: one of :data:`DIRECTIONS`.
        size: object side (bounding box) in pixels.
        start: top-left corner ``(x, y)`` of the bounding box in the first frame; ``None``
            centres the motion path in the frame.
        num_frames: number of frames ``T``.
        image_size: frame side ``H = W``.
        speed: pixels moved per frame (> 0); positions are rounded to whole pixels.
        out: optional zero-filled ``uint8 [T, H, W, 3]`` buffer to draw into (avoids an
            allocation when rendering many clips).

    Returns:
        ``uint8`` array ``[T, H, W, 3]``.

    Raises:
        ValueError: on an unknown attribute or a start that lets the object leave the frame.

    Example:
        >>> clip = render_clip("red", "circle", "right", size=16, start=(4, 20))
        >>> clip.shape, clip.dtype
        ((16, 64, 64, 3), dtype('uint8'))
    """
    rgb = _resolve_color(color)
    (x_min, x_max), (y_min, y_max) = start_range(
        direction, size, num_frames=num_frames, image_size=image_size, speed=speed
    )
    if start is None:
        start = ((x_min + x_max) // 2, (y_min + y_max) // 2)
    x0, y0 = (int(v) for v in start)
    if not (x_min <= x0 <= x_max and y_min <= y0 <= y_max):
        raise ValueError(
            f"start={tuple(start)} lets a {size} px object moving {direction} at {speed} px/frame leave the "
            "frame; accepted: "
            f"x in [{x_min}, {x_max}], y in [{y_min}, {y_max}]"
        )
    shape_mask_ = shape_mask(shape, size)
    expected = (num_frames, image_size, image_size, 3)
    if out is None:
        out = np.zeros(expected, dtype=np.uint8)
    elif out.shape != expected or out.dtype != np.uint8:
        raise ValueError(f"out must be a uint8 array of shape {expected}, got {out.dtype} {out.shape}")

    # One fancy-index assignment draws all frames: the mask's pixel coordinates shifted per frame.
    ys, xs = np.nonzero(shape_mask_)
    dx, dy = DIRECTION_VECTORS[direction]
    t = np.arange(num_frames)[:, None]
    offsets = _offsets(speed, num_frames)[:, None]
    rows = y0 + dy * offsets + ys[None, :]
    cols = x0 + dx * offsets + xs[None, :]
    out[np.broadcast_to(t, rows.shape), rows, cols] = rgb
    return out


def shapes_features(
    num_frames: int = DEFAULT_NUM_FRAMES, image_size: int = DEFAULT_IMAGE_SIZE
) -> datasets.Features:
    """The 🤗 ``Features`` of :func:`shapes_dataset`: ``video`` (``Array4D`` uint8 ``[T, H, W, 3]``),
    ``text``, ``color``, ``shape`` and ``direction`` (strings), and ``speed`` (px/frame).

    Example:
        >>> shapes_features()["video"]
        Array4D(shape=(16, 64, 64, 3), dtype='uint8')
    """
    return datasets.Features(
        {
            "video": datasets.Array4D(shape=(num_frames, image_size, image_size, 3), dtype="uint8"),
            "text": datasets.Value("string"),
            "color": datasets.Value("string"),
            "shape": datasets.Value("string"),
            "direction": datasets.Value("string"),
            "speed": datasets.Value("float32"),
        }
    )


def shapes_dataset(
    num_clips: int,
    seed: int = 0,
    num_frames: int = DEFAULT_NUM_FRAMES,
    image_size: int = DEFAULT_IMAGE_SIZE,
    speed_range: tuple[float, float] | None = None,
) -> datasets.Dataset:
    """Build the procedural Shapes data set as an in-memory 🤗 ``datasets.Dataset``.

    Columns: ``video`` (uint8 ``[num_frames, image_size, image_size, 3]``), ``text`` (the prompt),
    the ground truth ``color``, ``shape`` and ``direction``, and the ``speed`` in px/frame. Clip ``i`` depends only on
    ``seed`` and ``i``'s position in the random stream, so the same arguments always give an
    identical data set (and the same ``_fingerprint``, so ``.map`` caches are reused).

    The format is set to NumPy for ``video`` with its dtype kept (``uint8``) and Python objects for
    the other columns, so ``ds[i]["video"]`` is a ``uint8`` array. Note that
    ``ds.with_format("numpy")`` / ``("torch")`` without ``dtype=`` follow 🤗 Datasets' default and
    upcast integers to ``int64``; pass ``dtype=np.uint8`` / ``torch.uint8`` to keep bytes.

    Args:
        num_clips: number of clips (>= 1).
        seed: random seed (>= 0).
        num_frames: frames per clip (>= 1; at most 24 at 64 px, so that objects stay inside the frame).
        image_size: frame side in pixels (>= 8).
        speed_range: ``(low, high)`` px/frame: each clip's speed is drawn uniformly from it (see
            :func:`sample_clip_params`), e.g. to teach frame interpolation gaps of many sizes. ``None`` (the
            default) moves every object at :data:`SPEED`.

    Example:
        >>> ds = shapes_dataset(4, seed=1)
        >>> ds[0]["video"].dtype, ds.column_names
        (dtype('uint8'), ['video', 'text', 'color', 'shape', 'direction', 'speed'])
    """
    check_int("num_clips", num_clips, 1)
    check_int("seed", seed, 0)
    check_int("num_frames", num_frames, 1)
    check_int("image_size", image_size, 8)
    # Fail early (before any rendering) when the largest object cannot travel the whole clip.
    slowest = SPEED if speed_range is None else check_speed_range(speed_range)[0]
    start_range("right", size_range(image_size)[1], num_frames=num_frames, image_size=image_size, speed=slowest)

    rng = np.random.default_rng(seed)
    params = [
        sample_clip_params(rng, num_frames=num_frames, image_size=image_size, speed_range=speed_range)
        for _ in range(num_clips)
    ]
    features = shapes_features(num_frames, image_size)
    video_type = Array4DExtensionType(shape=(num_frames, image_size, image_size, 3), dtype="uint8")

    chunks = []
    per_chunk = clips_per_chunk((num_frames, image_size, image_size, 3))
    for begin in tqdm(range(0, num_clips, per_chunk), desc="Rendering Shapes", unit="chunk", leave=False):
        chunk = params[begin : begin + per_chunk]
        # A fresh buffer per chunk: Arrow wraps it without copying, so it must not be reused.
        frames = np.zeros((len(chunk), num_frames, image_size, image_size, 3), dtype=np.uint8)
        for p, out in zip(chunk, frames, strict=True):
            render_clip(**p, num_frames=num_frames, image_size=image_size, out=out)
        chunks.append(_to_array4d(frames, video_type))

    def strings(key: str) -> pa.Array:
        return pa.array([p[key] for p in params], type=pa.string())

    table = pa.table(
        {
            "video": pa.chunked_array(chunks, type=video_type),
            "text": pa.array(
                [make_prompt(p["color"], p["shape"], p["direction"]) for p in params], pa.string()
            ),
            "color": strings("color"),
            "shape": strings("shape"),
            "direction": strings("direction"),
            "speed": pa.array([p["speed"] for p in params], type=pa.float32()),
        }
    )
    info = datasets.DatasetInfo(
        description=f"Procedural Shapes clips (FlashVideo DESIGN §6), seed={seed}, speed_range={speed_range}",
        features=features,
    )
    # An explicit fingerprint skips hashing gigabytes of frames, and is stable across runs.
    fingerprint = datasets.fingerprint.Hasher.hash(
        ("flashvideo-shapes", _SHAPES_VERSION, num_clips, seed, num_frames, image_size, speed_range)
    )
    dataset = datasets.Dataset(datasets.table.InMemoryTable(table), info=info, fingerprint=fingerprint)
    # dtype as a string: format kwargs must be JSON-serialisable for save_to_disk.
    dataset.set_format("numpy", columns=["video"], output_all_columns=True, dtype="uint8")
    logger.info(
        "Built %d Shapes clips (seed=%d, %d frames, %d px, speed %s px/frame)",
        num_clips, seed, num_frames, image_size, SPEED if speed_range is None else tuple(speed_range),
    )
    return dataset


# Bytes of video per Arrow chunk: large enough to amortise per-chunk overhead, small enough that
# the shared offset buffers (one int32 per pixel of a chunk) stay a few tens of MB and the int32
# offsets of Arrow lists cannot overflow.
_CHUNK_BYTES = 1 << 26
# Bump when the rendering changes, so fingerprints (and downstream caches) change with it.
_SHAPES_VERSION = 2  # 2: the speed column


def clips_per_chunk(clip_shape: tuple[int, ...]) -> int:
    """How many clips of ``clip_shape`` (``[T, H, W, 3]``, uint8) to pack per Arrow chunk (1..256)."""
    return int(max(1, min(256, _CHUNK_BYTES // int(np.prod(clip_shape)))))


def _to_array4d(frames: np.ndarray, video_type: Array4DExtensionType) -> pa.ExtensionArray:
    """Wrap a ``uint8 [N, T, H, W, 3]`` array as 🤗 Datasets' ``Array4D`` storage without copying it."""
    values = pa.array(frames.reshape(-1))
    for offsets in _nested_offsets(frames.shape):
        values = pa.ListArray.from_arrays(offsets, values)
    return pa.ExtensionArray.from_storage(video_type, values)


@functools.lru_cache(maxsize=4)
def _nested_offsets(shape: tuple[int, ...]) -> tuple[pa.Array, ...]:
    # Array4D is stored as list<list<list<list<uint8>>>>; the offsets only depend on the batch
    # shape, so chunks of equal size share them instead of each holding ~4 bytes per pixel.
    result = []
    count = int(np.prod(shape))
    for dim in reversed(shape[1:]):
        count //= dim
        result.append(pa.array(np.arange(count + 1, dtype=np.int32) * dim, type=pa.int32()))
    return tuple(result)


def _offsets(speed: float, num_frames: int) -> np.ndarray:
    """Whole-pixel distance travelled by each frame: ``round(speed * t)``, exact for integer speeds."""
    return np.round(speed * np.arange(num_frames)).astype(np.int64)


def _check_speed(name: str, value: Any) -> None:
    check_number(name, value, 0, exclusive_minimum=True, why=" (px/frame)")


def _resolve_color(color: str | tuple[int, int, int]) -> np.ndarray:
    if isinstance(color, str):
        check_choice("color", color, COLORS)
        return np.asarray(COLORS[color], dtype=np.uint8)
    rgb = np.asarray(color)
    if rgb.shape != (3,) or rgb.min() < 0 or rgb.max() > 255:
        raise ValueError(
            f"color must be a name in {list(COLORS)} or an RGB triple in [0, 255], got {color!r}"
        )
    return rgb.astype(np.uint8)
