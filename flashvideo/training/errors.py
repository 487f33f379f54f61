"""The one error type of a training run that the user can fix: `main` turns it into exit status 1 and a message.

Example:
    >>> from flashvideo.training.errors import TrainingSetupError
    >>> raise TrainingSetupError("No FlashVideo processor in ckpt")  # doctest: +SKIP
"""

from __future__ import annotations


class TrainingSetupError(ValueError):
    """A problem with what the user asked for (missing processor, mismatched layout, empty data set...)."""


__all__ = ["TrainingSetupError"]
