"""Training videos as a 🤗 Dataset: the Shapes set, a video folder or any 🤗 data set of videos, standardized to
uint8 `[num_frames, image_size, image_size, 3]` clips with a caption; and, for the image tokenizer, their frames.

Every source ends in the same two columns, `video` (NumPy format) and `text`, so that tokenization, encoding and
the tokenizer stage never ask where a clip came from. In-memory sets are written to the 🤗 Datasets cache
(`cache_on_disk`), so that the fingerprinted maps after them are cached too.

Example:
    >>> from flashvideo.training import DataArguments
    >>> from flashvideo.data.video_frames import frames_dataset, load_videos
    >>> videos = load_videos(DataArguments(num_clips=8), image_size=64)  # doctest: +SKIP
    >>> videos[0]["video"].shape, len(frames_dataset(videos))  # doctest: +SKIP
    ((16, 64, 64, 3), 128)
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import datasets
import numpy as np
import torch
from transformers.utils import logging

from ..image_tokenizer import frames_to_model_input
from .shapes import DEFAULT_IMAGE_SIZE, shapes_dataset
from .video_folders import load_video_folder, resize_and_center_crop

if TYPE_CHECKING:  # only for the annotation: the data sets do not depend on the training package
    from ..training.arguments import DataArguments

logger = logging.get_logger(__name__)


class VideoDataError(ValueError):
    """The videos asked for cannot be used (a missing column, no usable clip, pixels that are not uint8 RGB)."""


def load_videos(
    data_args: DataArguments,
    image_size: int,
    shard: tuple[int, int] | None = None,
    cache: bool = True,
) -> datasets.Dataset:
    """
    The training videos as a 🤗 Dataset with `video` (uint8 `[num_frames, image_size, image_size, 3]`, NumPy
    format) and `text`: the Shapes set (default), a `--video_folder`, or a `--dataset_name`.

    `shard=(index, count)` keeps the videos `index, index + count, ...` (after `--max_train_samples`); a video
    folder then decodes only those. `cache=False` leaves the decoded videos in memory instead of writing them
    to the 🤗 Datasets cache (the encode step, which keeps only their codes).
    """
    folder_shard = shard if data_args.max_train_samples is None else None  # else: cut after the first N
    if data_args.video_folder is not None:
        dataset, report = load_video_folder(
            data_args.video_folder,
            folder_format=data_args.video_folder_layout,
            num_frames=data_args.num_frames,
            stride=data_args.frame_stride,
            image_size=image_size,
            text=data_args.video_folder_text,
            caption_template=data_args.caption_template,
            shard=folder_shard,
        )
        logger.info(f"{data_args.video_folder}: {report.summary()}")
        source = f"--video_folder {data_args.video_folder}"
    elif data_args.dataset_name is not None:
        dataset = datasets.load_dataset(
            data_args.dataset_name, data_args.dataset_config_name, split=data_args.dataset_split
        )
        for argument, column in (
            ("video_column", data_args.video_column),
            ("text_column", data_args.text_column),
        ):
            if column not in dataset.column_names:
                raise VideoDataError(
                    f"--{argument} {column!r} is not a column of {data_args.dataset_name} "
                    f"(columns: {dataset.column_names})."
                )
        if data_args.max_train_samples is not None:
            dataset = dataset.select(range(min(data_args.max_train_samples, len(dataset))))
        dataset = standardize_videos(
            dataset,
            data_args.video_column,
            data_args.text_column,
            data_args.num_frames,
            data_args.frame_stride,
            image_size,
        )
        source = f"--dataset_name {data_args.dataset_name}"
    else:
        try:
            dataset = shapes_dataset(
                data_args.num_clips,
                seed=data_args.data_seed,
                num_frames=data_args.num_frames,
                speed_range=data_args.speed_range,
            )
        except ValueError as error:
            raise VideoDataError(f"Shapes: {error}") from None
        if image_size != DEFAULT_IMAGE_SIZE:  # Shapes is drawn at 64 px; other sizes are resized from it
            dataset = standardize_videos(dataset, "video", "text", data_args.num_frames, 1, image_size)
        source = "Shapes"
    if data_args.max_train_samples is not None and len(dataset) > data_args.max_train_samples:
        dataset = dataset.select(range(data_args.max_train_samples))
    if shard is not None and not (data_args.video_folder is not None and folder_shard is not None):
        dataset = dataset.shard(num_shards=shard[1], index=shard[0], contiguous=False)
    if len(dataset) == 0 and shard is None:
        raise VideoDataError(f"{source}: no usable video (see the log for the videos that were skipped).")
    return cache_on_disk(dataset) if cache else dataset



def cache_on_disk(dataset: datasets.Dataset) -> datasets.Dataset:
    """
    Write an in-memory data set (Shapes, video folders) to an Arrow file in the 🤗 Datasets cache, keyed on its
    fingerprint, so that the `Dataset.map`s after it (frames, tokenization) are cached too and a second run or
    a resumed one loads their results instead of recomputing them.
    """
    if dataset.cache_files or not datasets.is_caching_enabled():
        return dataset
    folder = Path(datasets.config.HF_DATASETS_CACHE) / "flashvideo"
    folder.mkdir(parents=True, exist_ok=True)
    # Written unformatted: the map inside flatten_indices would apply a format's dtype (uint8 for `video`) to
    # every column, truncating e.g. Shapes' float `speed`. The format is put back on the result.
    on_disk = dataset.with_format(None).flatten_indices(
        cache_file_name=str(folder / f"videos-{dataset._fingerprint}.arrow"),
        new_fingerprint=f"{dataset._fingerprint}-on-disk",
    )
    return on_disk.with_format(**dataset.format)


def standardize_videos(
    dataset: datasets.Dataset,
    video_column: str,
    text_column: str,
    num_frames: int,
    stride: int,
    image_size: int,
) -> datasets.Dataset:
    """
    Map any video column (uint8 arrays `[T, H, W, 3]`, lists of PIL images, or decoders of the
    `datasets.Video` feature) to `video`: uint8 `[num_frames, image_size, image_size, 3]` (frames `0, stride,
    ...`, resized and centre-cropped) and `text`. Videos with fewer frames are dropped.
    """
    feature = dataset.features[video_column]
    if isinstance(feature, (datasets.Array2D, datasets.Array3D, datasets.Array4D)):
        dataset = dataset.with_format(
            "numpy", columns=[video_column], output_all_columns=True, dtype=np.uint8
        )
    features = datasets.Features(
        {
            "video": datasets.Array4D(shape=(num_frames, image_size, image_size, 3), dtype="uint8"),
            "text": datasets.Value("string"),
        }
    )

    def convert(batch: dict[str, list]) -> dict[str, list]:
        out: dict[str, list] = {"video": [], "text": []}
        for video, text in zip(batch[video_column], batch[text_column]):
            frames = video_frames(video, num_frames, stride)
            if frames is None:
                continue
            out["video"].append(resize_and_center_crop(frames, image_size))
            out["text"].append(str(text))
        return out

    converted = dataset.map(
        convert,
        batched=True,
        batch_size=16,
        remove_columns=dataset.column_names,
        features=features,
        new_fingerprint=datasets.fingerprint.Hasher.hash(
            [
                "flashvideo.standardize_videos/1",
                dataset._fingerprint,
                video_column,
                text_column,
                num_frames,
                stride,
                image_size,
            ]
        ),
        desc=f"Preparing videos ({num_frames} frames, {image_size} px)",
    )
    if len(converted) < len(dataset):
        logger.warning(
            f"{len(dataset) - len(converted)} of {len(dataset)} videos have fewer than {num_frames} frames "
            f"(stride {stride}) and were skipped"
        )
    converted.set_format("numpy", columns=["video"], output_all_columns=True, dtype=np.uint8)
    return converted


def video_frames(video: Any, num_frames: int, stride: int) -> np.ndarray | None:
    """
    Frames `0, stride, …, (num_frames - 1) * stride` of one video as uint8 `[num_frames, H, W, 3]` (None: too
    short): a torchcodec decoder (the `datasets.Video` feature), a list of PIL images or an array.

    Example:
        >>> video_frames(np.zeros((5, 8, 8, 3), np.uint8), num_frames=3, stride=2).shape
        (3, 8, 8, 3)
    """
    indices = list(range(0, num_frames * stride, stride))
    if hasattr(video, "get_frames_at"):  # a torchcodec VideoDecoder (the datasets.Video feature)
        if len(video) <= indices[-1]:
            return None
        return video.get_frames_at(indices=indices).data.permute(0, 2, 3, 1).cpu().numpy()
    if isinstance(video, (list, tuple)) and video and hasattr(video[0], "convert"):  # PIL images
        if len(video) <= indices[-1]:
            return None
        return np.stack([np.asarray(video[i].convert("RGB")) for i in indices])
    frames = np.asarray(video)
    if frames.ndim == 3:  # grayscale [T, H, W]
        frames = np.repeat(frames[..., None], 3, axis=-1)
    if frames.ndim == 4 and frames.shape[-1] != 3 and frames.shape[1] == 3:  # channels first [T, 3, H, W]
        frames = frames.transpose(0, 2, 3, 1)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise VideoDataError(f"Videos must be [T, H, W, 3] frames; got an array of shape {frames.shape}.")
    if frames.dtype != np.uint8:
        if not np.issubdtype(frames.dtype, np.integer) or (
            frames.size and (frames.min() < 0 or frames.max() > 255)
        ):
            raise VideoDataError(f"Video pixels must be integers in [0, 255]; got dtype {frames.dtype}.")
        frames = frames.astype(np.uint8)
    if len(frames) <= indices[-1]:
        return None
    return frames[indices]


def frames_dataset(videos: datasets.Dataset) -> datasets.Dataset:
    """Every frame of every video as its own row `frame` (uint8 `[H, W, 3]`): the VQ's training set."""
    size = videos.features["video"].shape[1:]

    def explode(batch: dict[str, list]) -> dict[str, list]:
        return {"frame": [frame for video in batch["video"] for frame in np.asarray(video, dtype=np.uint8)]}

    frames = (
        videos.select_columns(["video"])
        .with_format("numpy", dtype=np.uint8)
        .map(
            explode,
            batched=True,
            batch_size=16,
            remove_columns=["video"],
            features=datasets.Features({"frame": datasets.Array3D(shape=size, dtype="uint8")}),
            new_fingerprint=datasets.fingerprint.Hasher.hash(
                ["flashvideo.frames_dataset/1", videos._fingerprint]
            ),
            desc="Splitting videos into frames",
        )
    )
    return frames.with_format("numpy", dtype=np.uint8)


def collate_frames(rows: list[dict[str, np.ndarray]]) -> torch.Tensor:
    """Rows of uint8 frames → the VQ model's input, float `[N, 3, H, W]` in [-1, 1]."""
    return frames_to_model_input(torch.from_numpy(np.stack([row["frame"] for row in rows])))



__all__ = [
    "VideoDataError",
    "cache_on_disk",
    "collate_frames",
    "frames_dataset",
    "load_videos",
    "standardize_videos",
    "video_frames",
]
