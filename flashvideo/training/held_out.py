"""
The held-out validation loss of the key-frame and interpolation stages: the stage's own loss, without gradients,
on clips the model does not train on (`--validation_split_percentage`, `--max_eval_samples`; the split itself is
`flashvideo.data.splits.held_out_split`).

Every held-out sample counts once, whatever the number of processes: process r takes the samples r, r + N, ...,
and the sums of loss and sample count are added over the processes. That the mean of a batch's loss is the mean
of its samples' losses holds because every sample of a stage has the same number of labelled codes.

Example:
    >>> loss = held_out_loss(accelerator, model, stage.eval_dataset, stage.compute_loss, stage.collate_fn,
    ...                      batch_size=8)  # doctest: +SKIP
    >>> round(loss, 3)  # doctest: +SKIP
    5.412
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from accelerate import Accelerator


@torch.no_grad()
def held_out_loss(
    accelerator: Accelerator,
    model: torch.nn.Module,
    dataset: Any,
    compute_loss: Callable[[torch.nn.Module, Any], tuple[torch.Tensor, dict[str, torch.Tensor]]],
    collate_fn: Callable[[list], Any],
    batch_size: int,
) -> float:
    """The mean of `compute_loss` over every sample of `dataset` (the same value on every process)."""
    mine = list(range(accelerator.process_index, len(dataset), accelerator.num_processes))
    batches = [mine[start : start + batch_size] for start in range(0, len(mine), batch_size)]
    # Every process runs the same number of forward passes: a sharded (FSDP) model gathers its parameters inside
    # each one, collectively. A process with fewer samples runs the first held-out sample in passes that count
    # nothing.
    passes = math.ceil(math.ceil(len(dataset) / accelerator.num_processes) / batch_size)
    totals = torch.zeros(2, dtype=torch.float64, device=accelerator.device)  # sum of losses, number of samples
    was_training = model.training
    model.eval()
    # No draw of the evaluation may move the training's random streams: a run that evaluates stays the run that
    # does not, and a resumed run the uninterrupted one.
    device = accelerator.device
    on_cpu = device.type == "cpu"  # the CPU's stream is always forked; an accelerator's only when named
    with torch.random.fork_rng(devices=[] if on_cpu else [device], device_type=None if on_cpu else device.type):
        for index in range(passes):
            rows = batches[index] if index < len(batches) else [0]
            batch = collate_fn([dataset[row] for row in rows])
            batch = _to_device(batch, device)
            loss, _ = compute_loss(model, batch)
            if index < len(batches):
                totals[0] += loss.detach().double() * len(rows)
                totals[1] += len(rows)
    model.train(was_training)
    totals = accelerator.reduce(totals, reduction="sum")
    return (totals[0] / totals[1]).item()


def _to_device(batch: Any, device: torch.device) -> Any:
    """Tensors (alone or in a mapping) on `device`, as a prepared DataLoader would hand them over."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, dict):
        return {key: _to_device(value, device) for key, value in batch.items()}
    return batch


__all__ = ["held_out_loss"]
