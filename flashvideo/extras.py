"""Optional dependencies: import them where they are used, and name the install extra that brings them.

The core install (`pip install flashvideo` from a checkout) generates, trains and benchmarks. Evaluation needs
more: SciPy for the Shapes analyzer's connected components and for FVD's matrix square root. Those come with
the `eval` extra, and a missing one raises an `ImportError` that says which extra to install, instead of a bare
`No module named 'scipy'` at `import flashvideo...` time.

Example:
    >>> from flashvideo.extras import import_extra
    >>> ndimage = import_extra("scipy.ndimage", "the Shapes analyzer")  # raises if SciPy is missing
    >>> ndimage.label([[1, 0, 1]])[1]  # two separate blobs
    2
    >>> require_extra("eval", "flashvideo eval")  # before a long run that needs it at the end
"""

from __future__ import annotations

import importlib
from types import ModuleType


# The extra of setup.cfg that installs each optional top-level package.
EXTRA_OF: dict[str, str] = {"scipy": "eval"}


def install_hint(extra: str) -> str:
    """The command that installs `extra` (from a checkout: the name `flashvideo` on PyPI is another project)."""
    return f'pip install "flashvideo[{extra}]" (from a checkout: pip install ".[{extra}]")'


def import_extra(module: str, purpose: str) -> ModuleType:
    """Import `module` (e.g. "scipy.linalg"), or raise an ImportError naming the extra that provides it.

    Args:
        module: the dotted module name; its top-level package must be listed in `EXTRA_OF`.
        purpose: what needs it, for the message (e.g. "FVD").
    """
    package = module.partition(".")[0]
    extra = EXTRA_OF[package]
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(
            f"{purpose} needs {package}, which the core install of flashvideo leaves out; install the "
            f"'{extra}' extra: {install_hint(extra)}."
        ) from error


def require_extra(extra: str, purpose: str) -> None:
    """Import every package of `extra` now, or raise the ImportError of `import_extra`: for a command that would
    otherwise find out only after minutes of work."""
    for package, provider in EXTRA_OF.items():
        if provider == extra:
            import_extra(package, purpose)
