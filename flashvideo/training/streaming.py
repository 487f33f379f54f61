"""
`--streaming`: training samples from a 🤗 `IterableDataset` that no process holds whole, for corpora larger than
a disk. Each process reads its own part (`datasets.distributed.split_dataset_by_node`: whole shards when their
number divides by the process count, else every N-th example), epoch after epoch, and saves where it is in
every checkpoint, so that a run killed with SIGKILL and resumed sees exactly the batches the uninterrupted run
would have seen.

The stream is a codes data set (`--codes_dataset`: the Parquet shards that `python -m flashvideo.training.encode`
writes, a local folder or a Hub data set), so the image tokenizer never runs inside the training loop:

```bash
ACCELERATE_USE_CPU=true accelerate launch --multi_gpu --num_processes 2 -m flashvideo.training \\
    --stage keyframe --codes_dataset codes --streaming --output_dir ckpt ...
```

Order: the shards' order is shuffled and their examples interleaved with `--seed` (`IterableDataset.shuffle`,
reseeded every epoch with `set_epoch`), then split across processes, then cut into samples. With
`--streaming_shuffle_buffer_size` above 1, a buffer of that many examples is shuffled too; the buffer's
content is not in the stream position 🤗 Datasets saves, so a resumed run refills it (a warning says so) and no
longer follows the interrupted run's order exactly.

🤗 Datasets 5.2 pauses 5 s at the end of every pass over Parquet shards read interleaved (its
`config.SLEEP_TIME_ON_THREADS_SHUTDOWN`, a workaround for an Arrow shutdown bug): once per epoch and process,
nothing on a real corpus, noticeable on a toy one.

Position: `StreamingBatches.state_dict()` is the `IterableDataset.state_dict()` (which shard, which row) plus the
epoch, one file per process in each checkpoint (`stream_state_<rank>.json`).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import datasets
import torch
from accelerate.utils import send_to_device
from datasets.distributed import split_dataset_by_node
from transformers.utils import logging as hf_logging

logger = hf_logging.get_logger(__name__)

STREAM_STATE_NAME = "stream_state_{rank}.json"


def split_stream(
    dataset: datasets.IterableDataset, *, seed: int, buffer_size: int, process_index: int, num_processes: int
) -> datasets.IterableDataset:
    """
    Shuffle (shard order, interleaving, and a buffer of `buffer_size` examples when above 1) with `seed`, then
    keep this process's part.

    Example:
        >>> part = split_stream(codes, seed=0, buffer_size=1, process_index=0, num_processes=2)  # doctest: +SKIP
    """
    if buffer_size < 1:
        raise ValueError(f"--streaming_shuffle_buffer_size must be a positive integer, got {buffer_size!r}.")
    shuffled = dataset.shuffle(seed=seed, buffer_size=buffer_size)
    if num_processes == 1:
        return shuffled
    if shuffled.num_shards % num_processes:
        logger.info(
            f"{shuffled.num_shards} shard(s) for {num_processes} processes: every process reads all of them and "
            f"keeps every {num_processes}-th example (write a multiple of {num_processes} shards to read less)"
        )
    return split_dataset_by_node(shuffled, rank=process_index, world_size=num_processes)


class StreamingBatches:
    """
    Endless batches of one process's part of a stream, epoch after epoch, on `device`, resumable.

    Args:
        dataset: this process's part of the samples (see `split_stream`), rows with `input_ids` and `labels`.
        batch_size: samples per batch; the last batch of an epoch may be smaller.
        collate_fn: rows → a batch of tensors (the stage's padding).
        device: where batches go.
        buffer_size: the shuffle buffer, to warn when resuming cannot be exact.

    Example:
        >>> stream = StreamingBatches(part, batch_size=8, collate_fn=pad, device="cpu")  # doctest: +SKIP
        >>> batch = next(iter(stream))  # doctest: +SKIP
        >>> stream.state_dict()["epoch"]  # doctest: +SKIP
        0
    """

    def __init__(
        self,
        dataset: datasets.IterableDataset,
        *,
        batch_size: int,
        collate_fn: Callable[[list[dict[str, Any]]], Any],
        device: torch.device | str,
        buffer_size: int = 1,
    ) -> None:
        self.dataset = dataset
        self.batch_size = batch_size
        self.collate_fn = collate_fn
        self.device = device
        self.buffer_size = buffer_size
        self.epoch = 0
        self.batches_in_epoch = 0

    def __iter__(self) -> Iterator[Any]:
        while True:
            self.dataset.set_epoch(self.epoch)  # reseeds the shuffle: a function of (seed, epoch)
            rows: list[dict[str, Any]] = []
            for row in self.dataset:  # after load_state_dict, from the saved position
                rows.append(row)
                if len(rows) == self.batch_size:
                    self.batches_in_epoch += 1
                    yield send_to_device(self.collate_fn(rows), self.device)
                    rows = []
            if rows:
                self.batches_in_epoch += 1
                yield send_to_device(self.collate_fn(rows), self.device)
            if self.batches_in_epoch == 0:
                raise ValueError("The stream is empty for this process: there is nothing to train on.")
            logger.info(f"Stream epoch {self.epoch} done after {self.batches_in_epoch} batch(es)")
            # A saved position applies to its own epoch only: the next epoch starts from the beginning.
            self.epoch, self.batches_in_epoch = self.epoch + 1, 0

    def state_dict(self) -> dict[str, Any]:
        """Where the stream is: the epoch, batches done in it, and the 🤗 Datasets position (JSON-serialisable)."""
        return {"epoch": self.epoch, "batches_in_epoch": self.batches_in_epoch, "dataset": self.dataset.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from `state_dict()`'s position: the next batch is the one after the last saved."""
        self.epoch, self.batches_in_epoch = int(state["epoch"]), int(state["batches_in_epoch"])
        self.dataset.set_epoch(self.epoch)
        if self.buffer_size > 1:
            logger.warning(
                f"Resuming a stream shuffled through a buffer of {self.buffer_size} examples: the buffer is not "
                "saved in checkpoints, so the batches after resuming differ from the interrupted run's."
            )
            self.dataset.load_state_dict(state["dataset"])
            return
        # Without a buffer the position is exact; 🤗 Datasets still says the (empty) buffer is refilled.
        iterable_logger = logging.getLogger("datasets.iterable_dataset")
        level = iterable_logger.level
        iterable_logger.setLevel(logging.ERROR)
        try:
            self.dataset.load_state_dict(state["dataset"])
        finally:
            iterable_logger.setLevel(level)

    def save(self, folder: str | os.PathLike, process_index: int) -> Path:
        """Write this process's position into a checkpoint folder."""
        path = Path(folder) / STREAM_STATE_NAME.format(rank=process_index)
        path.write_text(json.dumps(self.state_dict()), encoding="utf-8")
        return path

    def load(self, folder: str | os.PathLike, process_index: int, num_processes: int) -> None:
        """
        Read this process's position from a checkpoint folder. `ValueError` when the checkpoint was saved by
        another number of processes (each held its own part of the stream) or holds no position.
        """
        saved = len(list(Path(folder).glob(STREAM_STATE_NAME.format(rank="*"))))
        if saved != num_processes:
            raise ValueError(
                f"it holds the stream positions of {saved} process(es), and this run has {num_processes}: a "
                f"--streaming run resumes on as many processes as it was saved with."
            )
        path = Path(folder) / STREAM_STATE_NAME.format(rank=process_index)
        if not path.is_file():
            raise ValueError(f"it has no stream position for process {process_index} ({path.name}).")
        self.load_state_dict(json.loads(path.read_text(encoding="utf-8")))


__all__ = ["STREAM_STATE_NAME", "StreamingBatches", "split_stream"]
