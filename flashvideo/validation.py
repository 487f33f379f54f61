"""The package's argument checks: each raises a `ValueError` that names the argument, what it must be and what it got.

The pipeline, the CLI, the training arguments, the data sets and the video writer check their arguments with these,
so that one kind of mistake reads the same everywhere (`num_frames must be an integer in [2, 26], got 30.`).
`bool` is never a number here, though Python counts it as an `int`: `num_frames=True` is a mistake, not 1.

Example:
    >>> from flashvideo.validation import check_choice, check_int, check_number
    >>> check_int("num_frames", 16, 2, 26)
    >>> check_number("inherit_ratio", 1.5, 0, 1)
    Traceback (most recent call last):
    ...
    ValueError: inherit_ratio must be a number in [0, 1], got 1.5.
    >>> check_choice("output_type", "mp4", ("np", "pil"))
    Traceback (most recent call last):
    ...
    ValueError: output_type must be one of ['np', 'pil'], got 'mp4'.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from typing import Any

import numpy as np


def is_int(value: Any) -> bool:
    """Whether `value` is an integer (Python or NumPy), not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_real(value: Any) -> bool:
    """Whether `value` is a real number (int, float, Fraction, NumPy scalar), not a bool; NaN and inf included."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _fail(name: str, requirement: str, value: Any, optional: bool, why: str, where: str) -> None:
    requirement = f"None or {requirement}" if optional else requirement
    raise ValueError(f"{name} must be {requirement}{why}, got {value!r}{where}.")


def _bound(value: float) -> str:
    # Integers as they are (a 64-bit seed bound must not become 1.84467e+19), other numbers shortest.
    return str(value) if is_int(value) else f"{value:g}"


def _range(minimum: float | None, maximum: float | None, exclusive_minimum: bool) -> str:
    """`in [a, b]`, `in (a, b]`, `>= a`, `> a` or `<= b`."""
    if minimum is not None and maximum is not None:
        return f"in {'(' if exclusive_minimum else '['}{_bound(minimum)}, {_bound(maximum)}]"
    if minimum is not None:
        return f"{'>' if exclusive_minimum else '>='} {_bound(minimum)}"
    return f"<= {_bound(maximum)}" if maximum is not None else ""


def check_int(
    name: str, value: Any, minimum: int | None = None, maximum: int | None = None, *, optional: bool = False,
    why: str = "", where: str = "",
) -> None:  # fmt: skip
    """Raise a ValueError unless `value` is an integer in `[minimum, maximum]` (None: no bound; `optional`: None
    is accepted too). In the message `why` follows the requirement (e.g. " (tokens_per_frame)") and `where` the
    value (e.g. " (from the checkpoint's generation_config)")."""
    if optional and value is None:
        return
    if not is_int(value) or (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        _fail(name, f"an integer {_range(minimum, maximum, False)}".rstrip(), value, optional, why, where)


def check_number(
    name: str, value: Any, minimum: float | None = None, maximum: float | None = None, *,
    exclusive_minimum: bool = False, optional: bool = False, why: str = "", where: str = "",
) -> None:  # fmt: skip
    """Raise a ValueError unless `value` is a finite real number in `[minimum, maximum]` (`(minimum, maximum]` with
    `exclusive_minimum`; None: no bound; `optional`: None is accepted too). NaN and inf never pass. `why` and
    `where` as in `check_int`."""
    if optional and value is None:
        return
    ok = is_real(value) and math.isfinite(value)
    if ok and minimum is not None:
        ok = value > minimum if exclusive_minimum else value >= minimum
    if ok and maximum is not None:
        ok = value <= maximum
    if not ok:
        bounded = minimum is not None and maximum is not None  # an interval says "finite" already
        kind = "a number" if bounded else "a finite number"
        _fail(name, f"{kind} {_range(minimum, maximum, exclusive_minimum)}".rstrip(), value, optional, why, where)


def check_bool(name: str, value: Any, *, optional: bool = False, where: str = "") -> None:
    """Raise a ValueError unless `value` is True or False (a NumPy bool too; `optional`: or None)."""
    if optional and value is None:
        return
    if not isinstance(value, (bool, np.bool_)):
        requirement = "None, True or False" if optional else "True or False"
        raise ValueError(f"{name} must be {requirement}, got {value!r}{where}.")


def check_choice(name: str, value: Any, choices: Iterable[Any]) -> None:
    """Raise a ValueError unless `value` is one of `choices`."""
    choices = list(choices)
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}.")
