"""A held-out split of the training clips, for a validation loss the model never trained on.

The split is taken on clips (videos, or rows of a codes data set) before samples are cut from them: the
interpolation stage cuts several windows from one clip, and a window of a held-out clip must not have a sibling
in the training set. Which clips are held out is drawn from a seed, so the same arguments give the same split.

Example:
    >>> import datasets
    >>> clips = datasets.Dataset.from_dict({"text": [f"clip {i}" for i in range(40)]})
    >>> train, held_out = held_out_split(clips, percentage=10, max_rows=256, seed=0)
    >>> len(train), len(held_out)
    (36, 4)
    >>> held_out_split(clips, percentage=1, max_rows=256, seed=0)[1] is None  # 1% of 40 is under one clip
    True
"""

from __future__ import annotations

import math

import datasets
import numpy as np

from ..validation import check_int, check_number


def held_out_count(num_rows: int, percentage: float, max_rows: int | None) -> int:
    """
    How many of `num_rows` clips `percentage` % holds out: rounded down (a small set keeps every clip for
    training), at most `max_rows` (the cost of one evaluation stays bounded on a large corpus), and never all.

    Example:
        >>> held_out_count(1000, 5, None), held_out_count(1000, 5, 16), held_out_count(16, 5, None)
        (50, 16, 0)
    """
    check_int("num_rows", num_rows, 0)
    check_number("percentage", percentage, 0, 100)
    check_int("max_rows", max_rows, 1, optional=True)
    count = math.floor(num_rows * percentage / 100)
    if max_rows is not None:
        count = min(count, max_rows)
    return min(count, max(num_rows - 1, 0))


def held_out_split(
    dataset: datasets.Dataset, percentage: float, max_rows: int | None, seed: int
) -> tuple[datasets.Dataset, datasets.Dataset | None]:
    """
    `(training rows, held-out rows)`: `held_out_count` rows drawn with `seed`, both parts in their original
    order. With nothing to hold out, `(dataset, None)`: the very same data set, so its fingerprint, and every
    cached map after it, stay as they were.
    """
    count = held_out_count(len(dataset), percentage, max_rows)
    if count == 0:
        return dataset, None
    held = np.zeros(len(dataset), dtype=bool)
    held[np.random.default_rng(seed).permutation(len(dataset))[:count]] = True
    return dataset.select(np.flatnonzero(~held)), dataset.select(np.flatnonzero(held))


__all__ = ["held_out_count", "held_out_split"]
