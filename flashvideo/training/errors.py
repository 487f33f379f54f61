"""The one error type of a training run that the user can fix, and how a command turns errors into exit statuses
(`run_command`: 2 for bad arguments, 1 for a setup problem, with the message on stderr).

Example:
    >>> from flashvideo.training.errors import TrainingSetupError
    >>> raise TrainingSetupError("No FlashVideo processor in ckpt")  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any


class TrainingSetupError(ValueError):
    """A problem with what the user asked for (missing processor, mismatched layout, empty data set...)."""


def run_command(
    prog: str,
    parse: Callable[[], Any],
    run: Callable[[Any], object],
    setup_errors: tuple[type[BaseException], ...] = (TrainingSetupError,),
) -> int:
    """The exit status of a command line program that parses its arguments with `parse()` and then does `run(parsed)`:
    argparse's own status for --help or a usage error (it has printed them), 2 for arguments refused with a
    ValueError, 1 for one of `setup_errors` (the message printed as `prog: error: ...`), 0 on success.

    Example:
        >>> sys.exit(run_command("python -m flashvideo.training", lambda: parse_args(argv), lambda a: train(*a)))
    """
    try:
        parsed = parse()
    except SystemExit as exit_:  # argparse already printed the usage and the error (or the help)
        return exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 2)
    except ValueError as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 2
    logging.basicConfig(
        format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", datefmt="%H:%M:%S", level=logging.INFO
    )
    try:
        run(parsed)
    except setup_errors as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 1
    return 0


__all__ = ["TrainingSetupError", "run_command"]
