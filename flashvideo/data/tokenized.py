"""Tokenized video data sets: videos + captions → FlashVideo key-frame or interpolation token sequences.

The result is an ordinary 🤗 `datasets.Dataset` with `input_ids` and `labels` columns, produced by a batched
`Dataset.map` whose fingerprint depends only on the input data set, the processor (vocabulary layout, text
tokenizer), the image tokenizer (its config and weights) and the arguments. Mapping the same data set with the same
processor and image tokenizer twice therefore loads the cached Arrow files instead of re-encoding every frame.
"""

from __future__ import annotations

import os
import warnings
from typing import Any, Literal

import datasets
import numpy as np
import torch
from datasets.fingerprint import Hasher
from transformers.utils import logging

from ..configuration_flashvideo import INTERPOLATION_ORDERS
from ..image_tokenizer import frames_to_codes, image_tokenizer_fingerprint
from ..validation import check_choice, check_int


logger = logging.get_logger(__name__)

# What one training sample is: key frames of a video, or an interpolation window between two of them. (Called
# `layout` before; that word now means only the vocabulary layout, `processor.layout`.)
SAMPLE_KINDS = ("keyframe", "interpolation")


def keyframe_indices(num_frames: int, num_key_frames: int) -> list[int]:
    """
    `num_key_frames` frame indices spread evenly over `num_frames` frames, first and last included.

    Example:

    ```python
    >>> keyframe_indices(16, 4)
    [0, 5, 10, 15]
    ```
    """
    if num_key_frames > num_frames:
        raise ValueError(
            f"num_key_frames ({num_key_frames}) must be at most the video length ({num_frames} frames)."
        )
    if num_key_frames == 1:
        return [0]
    # With num_key_frames <= num_frames the spacing is >= 1, so rounding never merges two indices.
    return [int(i) for i in np.linspace(0, num_frames - 1, num_key_frames).round()]


def interpolation_windows(num_frames: int, interpolation_frames: int) -> list[tuple[int, int]]:
    """
    Adjacent key-frame pairs `(a, b)` with `interpolation_frames` frames between them: key frames every
    `interpolation_frames + 1` frames from frame 0, as long as they fit in the video.

    Example:

    ```python
    >>> interpolation_windows(16, 4)
    [(0, 5), (5, 10), (10, 15)]
    ```
    """
    step = interpolation_frames + 1
    if step >= num_frames:
        raise ValueError(
            f"interpolation_frames ({interpolation_frames}) + 2 must be at most the video length "
            f"({num_frames} frames): every sample needs two key frames and the frames between them."
        )
    return [(start, start + step) for start in range(0, num_frames - step, step)]


class _TokenizeVideos:
    """The batched map function: picklable (for `num_proc`) and deterministic (for fingerprint caching)."""

    def __init__(
        self,
        processor: Any,
        sample_kind: str,
        num_key_frames: int,
        interpolation_frames: int | None,
        video_column: str,
        text_column: str,
        label_key_frames: bool,
        encode_batch_size: int | None,
        image_tokenizer: Any = None,
        interpolation_order: str = "forward",
    ) -> None:
        self.processor = processor
        self.image_tokenizer = image_tokenizer
        self.sample_kind = sample_kind
        self.num_key_frames = num_key_frames
        self.interpolation_frames = interpolation_frames
        self.video_column = video_column
        self.text_column = text_column
        self.label_key_frames = label_key_frames
        self.encode_batch_size = encode_batch_size
        if sample_kind == "interpolation":  # checked here for every data set built from these samples
            check_choice("interpolation_order", interpolation_order, INTERPOLATION_ORDERS)
        self.interpolation_order = interpolation_order
        self.parent_pid = os.getpid()

    def order_fingerprint(self) -> list[str]:
        """The frame order's part of a cache fingerprint: empty for key-frame samples and for the paper's order,
        so that caches made before the order existed still hit."""
        if self.sample_kind == "interpolation" and self.interpolation_order != "forward":
            return [self.interpolation_order]
        return []

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[list[int]]]:
        if os.getpid() != self.parent_pid and torch.get_num_threads() > 1:
            # A `num_proc` worker: the workers already share the cores, and intra-op threads in forked
            # children only oversubscribe them.
            torch.set_num_threads(1)
        videos = [_as_uint8_video(video, self.video_column) for video in batch[self.video_column]]
        texts = [str(text) for text in batch[self.text_column]]
        plans = [self._plan(video) for video in videos]
        # Encode every frame the batch needs in one pass through the image tokenizer.
        needed = [video[indices] for video, indices in zip(videos, plans)]
        codes = frames_to_codes(self.image_tokenizer, np.concatenate(needed), batch_size=self.encode_batch_size).cpu()
        per_video = codes.split([len(indices) for indices in plans])
        output: dict[str, list[list[int]]] = {"input_ids": [], "labels": []}
        for text, video_codes in zip(texts, per_video):
            for sample in self._samples(text, video_codes):
                output["input_ids"].append(sample["input_ids"])
                output["labels"].append(sample["labels"])
        return output

    def _plan(self, video: np.ndarray) -> list[int]:
        num_frames = video.shape[0]
        if self.sample_kind == "keyframe":
            return keyframe_indices(num_frames, self.num_key_frames)
        windows = interpolation_windows(num_frames, self.interpolation_frames)
        return list(range(windows[0][0], windows[-1][1] + 1))

    def _samples(self, text: str, codes: torch.Tensor) -> list[dict[str, list[int]]]:
        if self.sample_kind == "keyframe":
            return [self.processor.build_keyframe_sample(text, codes)]
        # `codes` holds frames windows[0][0] .. windows[-1][1]; windows start at frame 0, so frame t is
        # codes[t].
        samples = []
        for start, end in interpolation_windows(len(codes), self.interpolation_frames):
            samples.append(
                self.processor.build_interpolation_sample(
                    text,
                    codes[start],
                    codes[end],
                    codes[start + 1 : end],
                    label_key_frames=self.label_key_frames,
                    order=self.interpolation_order,
                )
            )
        return samples


def tokenize_video_dataset(
    dataset: datasets.Dataset,
    processor: Any,
    *,
    image_tokenizer: Any = None,
    sample_kind: Literal["keyframe", "interpolation"] = "keyframe",
    num_key_frames: int = 4,
    interpolation_frames: int | None = None,
    batch_size: int = 16,
    encode_batch_size: int | None = None,
    num_proc: int | None = None,
    video_column: str = "video",
    text_column: str = "text",
    label_key_frames: bool = True,
    interpolation_order: str = "forward",
    load_from_cache_file: bool | None = None,
    desc: str | None = None,
    layout: Literal["keyframe", "interpolation"] | None = None,
) -> datasets.Dataset:
    """
    Tokenize a video data set into FlashVideo training sequences with a cached, fingerprinted `Dataset.map`.

    Args:
        dataset: rows with a uint8 video `[T, H, W, 3]` (`video_column`) and its caption (`text_column`), such
            as `flashvideo.data.shapes_dataset`.
        processor: a [`FlashVideoProcessor`] (or the icetk adapter): anything with `build_keyframe_sample`,
            `build_interpolation_sample` and `fingerprint()`.
        image_tokenizer: what turns frames into codes: a `diffusers.VQModel` (a checkpoint's `image_tokenizer/`,
            `flashvideo.image_tokenizer.load_image_tokenizer`) or an adapter with `encode_frames`; by default the
            processor itself when it has `encode_frames` (the icetk adapter holds both).
        sample_kind: `"keyframe"` — one sample per video, `num_key_frames` frames evenly spaced with serial numbers
            1 … K (16 frames, K = 4 → frames 0, 5, 10, 15); or `"interpolation"` — one sample per adjacent
            key-frame pair, key frames every `interpolation_frames + 1` frames, the frames between them as the
            frames to insert (16 frames, n = 4 → pairs (0, 5), (5, 10), (10, 15)).
        num_key_frames: K for key-frame samples (at most `max_frames`).
        interpolation_frames: n for interpolation samples (required there; `n + 2` at most `max_frames`).
        batch_size: videos per `map` batch; their frames go through the image tokenizer together.
        encode_batch_size: frames per image-tokenizer call (all of the batch's frames at once when `None`).
        num_proc: worker processes for `map`.
        video_column, text_column: the input columns.
        label_key_frames: interpolation samples only: whether the key frames' codes carry labels (see
            `build_interpolation_sample`).
        interpolation_order: interpolation samples only: the order of the inserted frames after A and B, the
            interpolation model's `config.interpolation_order` ("forward" or "outside_in").
        load_from_cache_file: passed to `map` (`None`: use the cache when caching is enabled).
        desc: progress-bar description.
        layout: the old name of `sample_kind` (deprecated; still accepted, with a FutureWarning).

    Returns:
        A `datasets.Dataset` with `input_ids` and `labels` (int32 sequences; labels -100 off the image codes).

    Example:

    ```python
    >>> from flashvideo.data.shapes import shapes_dataset
    >>> from flashvideo.data.tokenized import tokenize_video_dataset
    >>> train = tokenize_video_dataset(shapes_dataset(64, seed=0), processor, image_tokenizer=vq, num_key_frames=4)
    >>> train.column_names
    ['input_ids', 'labels']
    ```
    """
    if layout is not None:
        warnings.warn(
            "tokenize_video_dataset(layout=...) is now sample_kind=... ('layout' is the processor's vocabulary "
            "layout); the old keyword will be removed.",
            FutureWarning,
            stacklevel=2,
        )
        sample_kind = layout
    check_choice("sample_kind", sample_kind, SAMPLE_KINDS)
    if image_tokenizer is None and hasattr(processor, "encode_frames"):
        image_tokenizer = processor
    if image_tokenizer is None:
        raise ValueError("image_tokenizer (the VQ model that turns frames into codes) is required.")
    max_frames = processor.layout.max_frames
    if sample_kind == "keyframe":
        check_int("num_key_frames", num_key_frames, 1, max_frames, why=" (max_frames)")
        interpolation_frames = None  # irrelevant here; keep it out of the fingerprint
    else:
        if interpolation_frames is None:
            raise ValueError(
                "interpolation_frames (the number of frames between two key frames) is required for "
                "sample_kind='interpolation'."
            )
        check_int("interpolation_frames", interpolation_frames, 1, max_frames - 2, why=" (max_frames - 2)")
        num_key_frames = None
    check_int("batch_size", batch_size, 1)
    for name, column in (("video_column", video_column), ("text_column", text_column)):
        if column not in dataset.column_names:
            raise ValueError(
                f"{name} {column!r} is not a column of the data set (columns: {dataset.column_names})."
            )

    function = _TokenizeVideos(
        processor, sample_kind, num_key_frames, interpolation_frames, video_column, text_column, label_key_frames,
        encode_batch_size, image_tokenizer, interpolation_order,
    )  # fmt: skip
    # datasets would hash the function by pickling the processor, whose tokenizer state may change with use;
    # key the cache on what determines the output instead. encode_batch_size is left out: it only changes how
    # frames are grouped for the VQ model, not their codes.
    new_fingerprint = Hasher.hash(
        [
            "flashvideo.tokenize_video_dataset/1",
            dataset._fingerprint,
            processor.fingerprint(),
            image_tokenizer_fingerprint(image_tokenizer),
            sample_kind,  # the value, as before the rename: caches made under `layout=` still hit
            num_key_frames,
            interpolation_frames,
            video_column,
            text_column,
            label_key_frames,
            *function.order_fingerprint(),
        ]
    )
    features = datasets.Features(
        {
            "input_ids": datasets.List(datasets.Value("int32")),
            "labels": datasets.List(datasets.Value("int32")),
        }
    )
    if not dataset.cache_files:
        logger.info(
            "tokenize_video_dataset: the data set lives in memory, so the tokenized result is not cached on "
            "disk (save_to_disk + load_from_disk, or a Hub/`load_dataset` data set, enables caching)."
        )
    # Read videos as NumPy arrays rather than nested Python lists (much faster for Array4D columns). NumPy
    # formatting widens integers to int64 unless told the dtype; keep uint8 storage uint8.
    video_feature = dataset.features[video_column]
    dtype = np.uint8 if getattr(video_feature, "dtype", None) == "uint8" else None
    source = dataset.with_format("numpy", columns=[video_column], output_all_columns=True, dtype=dtype)
    tokenized = source.map(
        function,
        batched=True,
        batch_size=batch_size,
        remove_columns=dataset.column_names,
        features=features,
        num_proc=num_proc,
        load_from_cache_file=load_from_cache_file,
        new_fingerprint=new_fingerprint,
        desc=desc or f"Tokenizing videos ({sample_kind})",
    )
    return tokenized.with_format(None)


def _as_uint8_video(video: Any, column: str) -> np.ndarray:
    """A video `[T, H, W, 3]` as uint8; only integer pixels in [0, 255] of another dtype are converted."""
    video = np.asarray(video)
    if video.ndim != 4 or video.shape[-1] != 3:
        raise ValueError(f"column {column!r} must hold videos [T, H, W, 3], got shape {video.shape}.")
    if video.dtype == np.uint8:
        return video
    if not np.issubdtype(video.dtype, np.integer) or (video.size and (video.min() < 0 or video.max() > 255)):
        raise ValueError(
            f"column {column!r} must hold uint8 pixels (integers in [0, 255]), got dtype {video.dtype}."
        )
    return video.astype(np.uint8)


def is_proportion(value: Any) -> bool:
    """Whether `value` is a number in [0, 1]."""
    return not isinstance(value, bool) and isinstance(value, (int, float)) and 0.0 <= value <= 1.0


def drop_prompts(
    dataset: datasets.Dataset, proportion: float, seed: int, text_token_range: tuple[int, int]
) -> datasets.Dataset:
    """
    Remove the caption tokens from a `proportion` of the tokenized samples, for classifier-free guidance.

    A model trained this way also learns the unconditional distribution (serial numbers and image codes
    only), which the pipeline's `guidance_scale` contrasts with the conditional one. Which samples lose their
    text is drawn once from `seed`, so a resumed run sees the same data.

    Example:

    ```python
    >>> train = drop_prompts(train, 0.1, seed=0, text_token_range=processor.layout.text_token_range)
    ```
    """
    if not is_proportion(proportion):
        raise ValueError(f"proportion must be a number in [0, 1], got {proportion!r}.")
    if proportion == 0 or len(dataset) == 0:
        return dataset
    dropped = np.random.default_rng(seed).random(len(dataset)) < proportion
    start, end = text_token_range

    def strip_text(sample: dict[str, list[int]], index: int) -> dict[str, list[int]]:
        if not dropped[index]:
            return sample
        ids = np.asarray(sample["input_ids"])
        keep = (ids < start) | (ids >= end)
        return {"input_ids": ids[keep].tolist(), "labels": np.asarray(sample["labels"])[keep].tolist()}

    logger.info(f"drop_prompts: {int(dropped.sum())} of {len(dataset)} samples without their caption")
    return dataset.map(
        strip_text,
        with_indices=True,
        new_fingerprint=Hasher.hash(["flashvideo.drop_prompts/1", dataset._fingerprint, proportion, seed, start, end]),
        desc="dropping prompts",
    )


__all__ = ["drop_prompts", "interpolation_windows", "is_proportion", "keyframe_indices", "tokenize_video_dataset"]
