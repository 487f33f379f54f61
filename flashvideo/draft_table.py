"""Learned drafts for speculative frame decoding: the commonest code of a grid cell given the codes around it.

Speculative decoding (`frame_sampler.py`) proposes each image code before the model judges it; the better the
proposal, the more codes one verify call accepts, and the fewer calls a clip takes. The code at the same cell of the
previous frame is right about two times in three on the shipped image tokenizer: the VQ model's encoder sees the
whole frame (its middle block has attention), so even a black background is spread over ~100 codes that shift with
the object. Those codes are far from random, though: given the code above a cell and the code left of it, one code is
the commonest by far. A `CodeDraftTable` holds, counted over a set of encoded clips:

- `neighbours`: (code above, code left) → the commonest code there;
- `with_reference[gap]`: (code at the same cell `gap` frames earlier, code above, code left) → the commonest code.

A draft looks the cell up with the reference frame first, then without it, and falls back to the reference cell
itself (or the row above in a first frame). A draft only decides how many codes a call may accept, never which code
is sampled (speculative sampling keeps the model's distribution exactly), so a table that fits another data set less
well costs calls, not quality.

Example:

```python
>>> table = CodeDraftTable.fit(codes, reference_gaps=(1, 5))   # codes: [clips, frames, h, w] codebook indices
>>> table.save_pretrained("checkpoint")                       # checkpoint/draft_table.safetensors
>>> table = CodeDraftTable.from_pretrained("checkpoint")      # None where a checkpoint has none
>>> table.draft(reference=None, above=12, left=7)             # a code, or None when the table knows nothing
```
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.numpy import load_file, save_file


DRAFT_TABLE_FILE = "draft_table.safetensors"
FORMAT_VERSION = "1"


class CodeDraftTable:
    """The commonest code per context of neighbouring codes (see the module docstring), for drafting.

    Build one with `fit`, or load one saved with `save_pretrained`; `draft` answers in codebook indices.
    """

    def __init__(
        self,
        vocab_size: int,
        neighbours: dict[int, int],
        with_reference: dict[int, dict[int, int]],
        num_clips: int = 0,
    ):
        self.vocab_size = vocab_size
        # Keys are packed into one int (above · V + left; (reference · V + above) · V + left): a dict lookup per
        # draft, a few hundred nanoseconds in the sampler's Python loop.
        self.neighbours = neighbours
        self.with_reference = with_reference
        self.num_clips = num_clips
        self._nearest: dict[int, dict[int, int]] = {}

    @property
    def reference_gaps(self) -> tuple[int, ...]:
        return tuple(sorted(self.with_reference))

    def __repr__(self) -> str:
        return (
            f"CodeDraftTable(vocab_size={self.vocab_size}, neighbours={len(self.neighbours)}, "
            f"with_reference={ {gap: len(table) for gap, table in sorted(self.with_reference.items())} }, "
            f"num_clips={self.num_clips})"
        )

    def draft(self, reference: int | None, above: int | None, left: int | None, gap: int | None = None) -> int | None:
        """The table's code for a cell with these neighbours (codebook indices; None where unknown), or None when
        it has seen no such context. `gap`: frames between the reference frame and this one (the nearest gap the
        table was fitted for is used; None: the table without reference)."""
        if above is None or left is None:
            return None
        vocab = self.vocab_size
        if reference is not None and gap is not None and self.with_reference:
            code = self._table_for_gap(gap).get((reference * vocab + above) * vocab + left)
            if code is not None:
                return code
        return self.neighbours.get(above * vocab + left)

    def _table_for_gap(self, gap: int) -> dict[int, int]:
        """The reference table fitted for the gap nearest to `gap` (the smaller on a tie), remembered per gap."""
        table = self._nearest.get(gap)
        if table is None:
            nearest = min(self.with_reference, key=lambda fitted: (abs(fitted - gap), fitted))
            table = self._nearest[gap] = self.with_reference[nearest]
        return table

    @classmethod
    def fit(
        cls, codes: torch.Tensor | np.ndarray, vocab_size: int, reference_gaps: Iterable[int] = (1,)
    ) -> CodeDraftTable:
        """Count contexts over `codes` `[clips, frames, h, w]` (codebook indices in `[0, vocab_size)`): every cell
        with a cell above and one to its left, and for each gap in `reference_gaps` every frame with one `gap`
        frames before it. Ties go to the smaller code."""
        codes = np.asarray(codes, dtype=np.int64)
        if codes.ndim != 4:
            raise ValueError(f"codes must be [clips, frames, h, w], got shape {codes.shape}.")
        if codes.size and (codes.min() < 0 or codes.max() >= vocab_size):
            raise ValueError(
                f"codes must be in [0, {vocab_size - 1}] (vocab_size), got [{codes.min()}, {codes.max()}]."
            )
        gaps = sorted(set(int(gap) for gap in reference_gaps))
        if any(gap < 1 for gap in gaps):
            raise ValueError(f"reference_gaps must be positive frame counts, got {gaps}.")
        cell, above, left = codes[..., 1:, 1:], codes[..., :-1, 1:], codes[..., 1:, :-1]
        neighbours = _commonest(above * vocab_size + left, cell, vocab_size)
        with_reference = {}
        for gap in gaps:
            if codes.shape[1] <= gap:
                raise ValueError(f"reference_gaps: a gap of {gap} frames needs clips of more than {gap} frames.")
            reference = codes[:, :-gap, 1:, 1:]
            key = (reference * vocab_size + above[:, gap:]) * vocab_size + left[:, gap:]
            with_reference[gap] = _commonest(key, cell[:, gap:], vocab_size)
        return cls(vocab_size, neighbours, with_reference, num_clips=codes.shape[0])

    def save_pretrained(self, save_directory: str | os.PathLike) -> Path:
        """Write `draft_table.safetensors` into `save_directory` (per table its packed contexts, int32, and codes,
        int16); returns its path."""
        tensors = {}
        for name, table in (("neighbours", self.neighbours), *((f"with_reference.{gap}", table) for gap, table in
                                                               sorted(self.with_reference.items()))):
            contexts, codes = _to_arrays(table)
            tensors[f"{name}.contexts"], tensors[f"{name}.codes"] = contexts, codes
        metadata = {"format": FORMAT_VERSION, "vocab_size": str(self.vocab_size), "num_clips": str(self.num_clips)}
        path = Path(save_directory) / DRAFT_TABLE_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file(tensors, str(path), metadata=metadata)
        return path

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, vocab_size: int | None = None) -> CodeDraftTable | None:
        """The table saved in `directory`, or None when it has no `draft_table.safetensors`. A file that is not a
        draft table (corrupt, another format, codes outside `vocab_size`) is refused with a ValueError naming it."""
        path = Path(directory) / DRAFT_TABLE_FILE
        if not path.is_file():
            return None
        try:
            with safe_open(str(path), framework="numpy") as opened:
                metadata = opened.metadata() or {}
            arrays = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as error:
            raise ValueError(f"{path} is not a readable safetensors file (corrupt or truncated?): {error}") from None
        if metadata.get("format") != FORMAT_VERSION or "neighbours.codes" not in arrays:
            raise ValueError(
                f"{path} is not a FlashVideo draft table of format {FORMAT_VERSION} (its format: "
                f"{metadata.get('format')!r}, its entries: {sorted(arrays)[:4]})."
            )
        saved_vocab = int(metadata.get("vocab_size", -1))
        if vocab_size is not None and saved_vocab != vocab_size:
            raise ValueError(
                f"{path} was fitted for {saved_vocab} image codes, but the image tokenizer has {vocab_size}; fit it "
                "again for this tokenizer (`flashvideo draft-table`)."
            )
        tables = {}
        for name in arrays:
            table, _, part = name.rpartition(".")
            prefix, _, gap = table.partition(".")
            known = table == "neighbours" or (prefix == "with_reference" and gap.isdigit())
            if part not in ("contexts", "codes") or not known:
                raise ValueError(f"{path}: unexpected entry {name!r}.")
            tables[table] = _from_arrays(arrays, table, saved_vocab, 2 if table == "neighbours" else 3, path)
        neighbours = tables.pop("neighbours")
        with_reference = {int(table.partition(".")[2]): entries for table, entries in tables.items()}
        return cls(saved_vocab, neighbours, with_reference, num_clips=int(metadata.get("num_clips", 0)))


def _commonest(keys: np.ndarray, codes: np.ndarray, vocab_size: int) -> dict[int, int]:
    """key → the code most often found with it (ties: the smaller code)."""
    pairs, counts = np.unique(keys.reshape(-1) * vocab_size + codes.reshape(-1), return_counts=True)
    pair_keys, pair_codes = pairs // vocab_size, pairs % vocab_size
    order = np.lexsort((-counts, pair_keys))  # by key, then most frequent first (stable: smaller code on ties)
    pair_keys, pair_codes = pair_keys[order], pair_codes[order]
    first = np.ones(len(pair_keys), dtype=bool)
    first[1:] = pair_keys[1:] != pair_keys[:-1]
    return dict(zip(pair_keys[first].tolist(), pair_codes[first].tolist()))


def _to_arrays(table: dict[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """A table as sorted packed contexts (int32: a context of three codes of 512 is < 2³¹) and their codes (int16)."""
    contexts = np.array(sorted(table), dtype=np.int64)
    return contexts.astype(np.int32), np.array([table[context] for context in contexts.tolist()], dtype=np.int16)


def _from_arrays(arrays: dict[str, np.ndarray], name: str, vocab_size: int, parts: int, path: Path) -> dict[int, int]:
    """The table `name` of a loaded file, checked: matching 1-D arrays, codes and contexts within the vocabulary."""
    contexts, codes = arrays.get(f"{name}.contexts"), arrays.get(f"{name}.codes")
    if contexts is None or codes is None or contexts.ndim != 1 or contexts.shape != codes.shape:
        raise ValueError(f"{path}: table {name!r} must have 1-D contexts and codes of one length.")
    contexts, codes = contexts.astype(np.int64), codes.astype(np.int64)
    if len(codes) and (
        codes.min() < 0 or codes.max() >= vocab_size or contexts.min() < 0 or contexts.max() >= vocab_size**parts
    ):
        raise ValueError(f"{path}: table {name!r} has codes or contexts outside the {vocab_size} image codes.")
    return dict(zip(contexts.tolist(), codes.tolist()))

