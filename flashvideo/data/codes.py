"""
Codes data sets: videos encoded once into VQ codes, stored as a 🤗 data set of Parquet shards, from which every
later training run cuts its key-frame or interpolation samples without running the image tokenizer again.

Layout of a codes data set folder (what `python -m flashvideo.training.encode` writes):

```
codes/
  flashvideo_codes.json                 what was encoded, with which image tokenizer (see `CodesInfo`)
  data/train-00000-of-00004.parquet     columns: codes (int32 [num_frames, grid, grid]), text
  data/train-00001-of-00004.parquet
  ...
```

It is an ordinary 🤗 data set: `datasets.load_dataset("codes")` (or `load_dataset("parquet", data_files=...)`)
reads it, `streaming=True` streams it shard by shard, and the folder can be pushed to the Hub as it is
(`huggingface-cli upload`), then read back by its repo id.

Example:

```python
>>> from flashvideo.data.codes import load_codes, codes_to_samples
>>> codes = load_codes("codes")                                  # a datasets.Dataset
>>> train = codes_to_samples(codes, processor, sample_kind="keyframe", num_key_frames=4)
>>> train.column_names
['input_ids', 'labels']
```
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pyarrow.parquet as pq
import torch
from datasets.fingerprint import Hasher
from transformers.utils import logging

from ..image_tokenizer import frames_to_codes, image_tokenizer_fingerprint
from .tokenized import _TokenizeVideos

logger = logging.get_logger(__name__)

CODES_INFO_NAME = "flashvideo_codes.json"
SAMPLE_KINDS = ("keyframe", "interpolation")
CODES_FORMAT = 1
DATA_FOLDER = "data"


def shard_file_name(index: int, num_shards: int, split: str = "train") -> str:
    """`train-00001-of-00004.parquet`: the Hub's naming, which `datasets.load_dataset` maps to the split."""
    return f"{split}-{index:05d}-of-{num_shards:05d}.parquet"


def codes_features(num_frames: int, code_grid_size: int) -> datasets.Features:
    """The features of a codes data set: `codes` int32 `[num_frames, grid, grid]` and `text`."""
    return datasets.Features(
        {
            "codes": datasets.Array3D(shape=(num_frames, code_grid_size, code_grid_size), dtype="int32"),
            "text": datasets.Value("string"),
        }
    )


def encode_clips(image_tokenizer: Any, clips: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """uint8 clips `[N, T, H, W, 3]` → int32 codes `[N, T, grid, grid]`, `batch_size` frames per call."""
    return frames_to_codes(image_tokenizer, clips, batch_size=batch_size).cpu().numpy().astype(np.int32)


@dataclass
class CodesInfo:
    """`flashvideo_codes.json`: how a codes data set was made."""

    num_frames: int
    image_size: int
    code_grid_size: int
    image_vocab_size: int
    image_tokenizer_fingerprint: str
    num_shards: int
    num_rows: int
    source: str = ""
    processor: str = ""
    format: int = CODES_FORMAT

    def save(self, folder: str | os.PathLike) -> Path:
        path = Path(folder) / CODES_INFO_NAME
        path.write_text(json.dumps(asdict(self), indent=2, sort_keys=True) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, folder: str | os.PathLike) -> CodesInfo:
        path = Path(folder) / CODES_INFO_NAME
        try:
            values = json.loads(path.read_text(encoding="utf-8"))
            return cls(**values)
        except FileNotFoundError:
            raise ValueError(
                f"{folder} is not a codes data set: it has no {CODES_INFO_NAME} (write one with "
                "`python -m flashvideo.training.encode`)."
            ) from None
        except (ValueError, TypeError) as error:
            raise ValueError(f"{path} is unreadable: {error}") from None

    def check_matches(self, image_tokenizer: Any, layout: Any, argument: str = "--codes_dataset") -> None:
        """
        Refuse a training run whose processor layout (frame size, code grid, codebook) or VQ image tokenizer did
        not make these codes: they would stand for other images.
        """
        mine = (self.image_size, self.code_grid_size, self.image_vocab_size)
        theirs = (layout.image_size, layout.code_grid_size, layout.image_vocab_size)
        if mine != theirs:
            raise ValueError(
                f"{argument}: the codes are {mine[0]} px frames in {mine[1]}x{mine[1]} grids of {mine[2]} codes; "
                f"the processor has {theirs[0]} px, {theirs[1]}x{theirs[1]}, {theirs[2]} codes."
            )
        if image_tokenizer_fingerprint(image_tokenizer) != self.image_tokenizer_fingerprint:
            raise ValueError(
                f"{argument}: these codes were made by another image tokenizer ({self.processor or 'unknown'}) "
                "than the processor's; encode the videos again with it, or train with the processor that "
                "encoded them (--processor_name_or_path)."
            )


def write_codes_shard(
    codes: np.ndarray, texts: list[str], path: str | os.PathLike, features: datasets.Features
) -> int:
    """
    Write one Parquet shard of a codes data set: `codes` int32 `[N, num_frames, grid, grid]` and their `texts`,
    atomically (a temporary name, then renamed). Returns its row count.
    """
    if len(codes) != len(texts):
        raise ValueError(f"codes and texts must have the same length, got {len(codes)} and {len(texts)}.")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    shard = datasets.Dataset.from_dict({"codes": np.asarray(codes, dtype=np.int32), "text": list(texts)}, features=features)
    partial = path.with_name(f".{path.name}.partial")
    shard.to_parquet(str(partial))
    os.replace(partial, path)
    return len(texts)


def count_rows(folder: str | os.PathLike) -> dict[str, int]:
    """Rows per Parquet shard of a codes data set folder, from the files' footers (no data is read)."""
    return {path.name: pq.read_metadata(path).num_rows for path in shard_paths(folder)}


def shard_paths(folder: str | os.PathLike, split: str = "train") -> list[Path]:
    """The Parquet shards of `split`, in order."""
    return sorted((Path(folder) / DATA_FOLDER).glob(f"{split}-*-of-*.parquet"))


def load_codes(
    path_or_repo: str, *, split: str = "train", streaming: bool = False
) -> datasets.Dataset | datasets.IterableDataset:
    """
    A codes data set: a local folder written by the encode step (Parquet shards under `data/`) or a Hub repo id
    of one (network, or the local cache with `HF_DATASETS_OFFLINE=1`). `streaming=True` gives an
    `IterableDataset` that reads the shards one after the other.

    Example:
        >>> codes = load_codes("codes", streaming=True)  # doctest: +SKIP
        >>> next(iter(codes))["codes"].shape  # doctest: +SKIP
        (16, 16, 16)
    """
    if os.path.isdir(path_or_repo):
        files = shard_paths(path_or_repo, split)
        if not files:
            raise ValueError(
                f"{path_or_repo} holds no {split} shards ({DATA_FOLDER}/{split}-*-of-*.parquet); write them with "
                "`python -m flashvideo.training.encode`."
            )
        dataset = datasets.load_dataset(
            "parquet", data_files={split: [str(f) for f in files]}, split=split, streaming=streaming
        )
    else:
        dataset = datasets.load_dataset(path_or_repo, split=split, streaming=streaming)
    missing = {"codes", "text"} - set(dataset.column_names or [])
    if missing:
        raise ValueError(f"{path_or_repo} is not a codes data set: it has no {sorted(missing)} column(s).")
    return dataset


def codes_info(path_or_repo: str) -> CodesInfo:
    """The `CodesInfo` of a local codes folder or of a Hub repo (its `flashvideo_codes.json`)."""
    if os.path.isdir(path_or_repo):
        return CodesInfo.load(path_or_repo)
    from huggingface_hub import hf_hub_download

    try:
        local = hf_hub_download(path_or_repo, CODES_INFO_NAME, repo_type="dataset")
    except Exception as error:  # noqa: BLE001 - any Hub failure means the same thing here
        raise ValueError(f"Cannot read {CODES_INFO_NAME} of the Hub data set {path_or_repo}: {error}") from None
    return CodesInfo.load(Path(local).parent)


class _CodesToSamples:
    """The batched map function codes + text → input_ids + labels (picklable, deterministic)."""

    def __init__(self, tokenize: _TokenizeVideos) -> None:
        self.tokenize = tokenize

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[list[int]]]:
        output: dict[str, list[list[int]]] = {"input_ids": [], "labels": []}
        for codes, text in zip(batch["codes"], batch["text"]):
            codes = torch.as_tensor(np.asarray(codes, dtype=np.int64))
            frames = self.tokenize._plan(codes)  # the frames this sample kind uses, as for videos
            for sample in self.tokenize._samples(str(text), codes[frames]):
                output["input_ids"].append(sample["input_ids"])
                output["labels"].append(sample["labels"])
        return output


def codes_to_samples(
    codes: datasets.Dataset | datasets.IterableDataset,
    processor: Any,
    *,
    sample_kind: str = "keyframe",
    num_key_frames: int = 4,
    interpolation_frames: int | None = None,
    label_key_frames: bool = True,
    batch_size: int = 64,
    interpolation_order: str = "forward",
) -> datasets.Dataset | datasets.IterableDataset:
    """
    Key-frame or interpolation samples (`input_ids`, `labels`) from a codes data set, as
    `flashvideo.data.tokenized.tokenize_video_dataset` cuts them from videos (same frames, same layout), but
    without the image tokenizer: only the captions are tokenized. Works on a `Dataset` (a cached map) and on an
    `IterableDataset` (a lazy map). `interpolation_order`: the interpolation model's `config.interpolation_order`.

    Example:
        >>> codes = load_codes("codes")  # doctest: +SKIP
        >>> train = codes_to_samples(codes, processor, sample_kind="interpolation", interpolation_frames=4)  # doctest: +SKIP
    """
    if sample_kind not in SAMPLE_KINDS:
        raise ValueError(f"sample_kind must be one of {SAMPLE_KINDS}, got {sample_kind!r}.")
    if sample_kind == "keyframe":
        interpolation_frames = None
    elif interpolation_frames is None:
        raise ValueError("interpolation_frames is required for sample_kind='interpolation'.")
    else:
        num_key_frames = None
    tokenize = _TokenizeVideos(
        processor, sample_kind, num_key_frames, interpolation_frames, "codes", "text", label_key_frames, None,
        interpolation_order=interpolation_order,
    )
    function = _CodesToSamples(tokenize)
    columns = list(codes.column_names or ["codes", "text"])
    if isinstance(codes, datasets.IterableDataset):
        return codes.map(function, batched=True, batch_size=batch_size, remove_columns=columns)
    fingerprint = Hasher.hash(
        [
            "flashvideo.codes_to_samples/1",
            codes._fingerprint,
            processor.fingerprint(),
            sample_kind,
            num_key_frames,
            interpolation_frames,
            label_key_frames,
            *tokenize.order_fingerprint(),
        ]
    )
    return codes.with_format("numpy", columns=["codes"], output_all_columns=True).map(
        function,
        batched=True,
        batch_size=batch_size,
        remove_columns=columns,
        features=datasets.Features(
            {
                "input_ids": datasets.List(datasets.Value("int32")),
                "labels": datasets.List(datasets.Value("int32")),
            }
        ),
        new_fingerprint=fingerprint,
        desc=f"Cutting {sample_kind} samples from codes",
    ).with_format(None)


__all__ = [
    "CODES_INFO_NAME",
    "CodesInfo",
    "codes_features",
    "codes_info",
    "codes_to_samples",
    "count_rows",
    "encode_clips",
    "load_codes",
    "shard_file_name",
    "shard_paths",
    "write_codes_shard",
]
