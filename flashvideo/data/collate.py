"""Collating tokenized samples into padded batches: the `collate_fn` of FlashVideo's training data loaders.

Example:

```python
>>> import functools
>>> from flashvideo.data.collate import pad_batch
>>> samples = [{"input_ids": [5, 6, 7], "labels": [-100, 6, 7]}, {"input_ids": [5], "labels": [5]}]
>>> batch = pad_batch(samples, pad_token_id=0)
>>> batch["input_ids"].tolist(), batch["attention_mask"].tolist()
([[5, 6, 7], [5, 0, 0]], [[1, 1, 1], [1, 0, 0]])
>>> collate_fn = functools.partial(pad_batch, pad_token_id=0, pad_to_multiple_of=8)  # for a DataLoader
```
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ..processing_flashvideo import IGNORE_INDEX, _as_long_tensor


def pad_batch(
    samples: Sequence[Mapping[str, Any]],
    pad_token_id: int | None,
    pad_to_multiple_of: int | None = None,
    padding_side: str = "right",
) -> dict[str, torch.LongTensor]:
    """
    Collate samples (dicts with `input_ids` and optionally `labels`) into padded LongTensors.

    Returns `input_ids` (padded with `pad_token_id`, the layout's: `processor.layout.pad_token_id`),
    `attention_mask` (1 on real tokens) and, when the samples have them, `labels` (padded with -100).
    """
    if len(samples) == 0:
        raise ValueError("samples must hold at least one sample.")
    if padding_side not in ("right", "left"):
        raise ValueError(f"padding_side must be 'right' or 'left', got {padding_side!r}.")
    if pad_to_multiple_of is not None and (
        isinstance(pad_to_multiple_of, bool) or not isinstance(pad_to_multiple_of, int) or pad_to_multiple_of < 1
    ):
        raise ValueError(f"pad_to_multiple_of must be a positive integer or None, got {pad_to_multiple_of!r}.")
    if pad_token_id is None:
        raise ValueError("pad_batch needs a pad_token_id, but the layout's pad_token_id is None.")
    with_labels = ["labels" in sample for sample in samples]
    if any(with_labels) and not all(with_labels):
        raise ValueError("samples must either all have labels or none.")
    ids = [_as_long_tensor(sample["input_ids"], "input_ids").reshape(-1) for sample in samples]
    labels = None
    if all(with_labels):
        labels = [_as_long_tensor(sample["labels"], "labels").reshape(-1) for sample in samples]
        for index, (sample_ids, sample_labels) in enumerate(zip(ids, labels)):
            if sample_ids.shape != sample_labels.shape:
                raise ValueError(
                    f"sample {index}: labels ({sample_labels.numel()}) and input_ids "
                    f"({sample_ids.numel()}) must have the same length."
                )
    length = max(sample_ids.numel() for sample_ids in ids)
    if pad_to_multiple_of:
        length = -(-length // pad_to_multiple_of) * pad_to_multiple_of
    batch = {
        "input_ids": torch.full((len(ids), length), pad_token_id, dtype=torch.long),
        "attention_mask": torch.zeros((len(ids), length), dtype=torch.long),
    }
    if labels is not None:
        batch["labels"] = torch.full((len(ids), length), IGNORE_INDEX, dtype=torch.long)
    for row, sample_ids in enumerate(ids):
        size = sample_ids.numel()
        span = slice(0, size) if padding_side == "right" else slice(length - size, length)
        batch["input_ids"][row, span] = sample_ids
        batch["attention_mask"][row, span] = 1
        if labels is not None:
            batch["labels"][row, span] = labels[row]
    return batch


__all__ = ["pad_batch"]
