"""Reading the files of a checkpoint directory with errors that name the file: JSON, sub-folders, components.

Every loader of the package (processor, image tokenizer, pipeline) goes through these, so that a missing, corrupt or
misplaced file is reported the same way wherever it is found.

Example:

```python
>>> from diffusers import VQModel
>>> from flashvideo.checkpoint_files import load_component
>>> vq = load_component(VQModel, "checkpoint/image_tokenizer", required=("config.json",))
```
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_json(path: str | Path) -> Any:
    """The JSON in `path`; a file that is not valid JSON is a ValueError naming it."""
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not valid JSON (corrupt or truncated?): {error}") from None


def inside_checkpoint(root: Path, name: Any, key: str, config_file: Path) -> Path:
    """`root / name` for a folder name read from `config_file` under `key`; it must stay inside the checkpoint
    `root` (no absolute path, no `..` out of it, no symlink out of it)."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"{config_file}: {key} must be a folder name, got {name!r}.")
    folder = root / name
    if Path(name).is_absolute() or not folder.resolve().is_relative_to(root.resolve()):
        raise ValueError(
            f"{config_file}: {key} {name!r} points outside the checkpoint {root}; the processor's files must be "
            "inside it."
        )
    return folder


def load_component(loader: Any, folder: str | Path, required: tuple[str, ...], optional: tuple[str, ...] = ()) -> Any:
    """`loader.from_pretrained(folder)`, after checking that its `required` files are there and that its JSON files
    parse, so that a missing or corrupt file is named; other load errors name the folder."""
    folder = Path(folder)
    for name in required:
        if not (folder / name).is_file():
            raise FileNotFoundError(f"{folder / name} is missing: the checkpoint is incomplete.")
    for name in (*required, *optional):
        if name.endswith(".json") and (folder / name).is_file():
            read_json(folder / name)
    try:
        return loader.from_pretrained(str(folder))
    except OSError as error:
        raise OSError(f"Could not load {loader.__name__} from {folder}: {error}") from None
    except Exception as error:  # tokenizers and safetensors raise their own exception types
        raise ValueError(f"Could not load {loader.__name__} from {folder}: {type(error).__name__}: {error}") from None


def check_local_or_repo_id(source: str | Path, name: str = "checkpoint") -> None:
    """
    Raise a `FileNotFoundError` naming `source` when it is meant as a local path and does not exist: an absolute
    path, one starting with `.` or `~`, one with more than one `/`, or anything that is not a valid Hub repo id
    (`name` or `namespace/name`). Instead of a repo-id validation error, the caller learns that the folder is
    missing. A valid repo id passes (the Hub or its cache decides).
    """
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    text = str(source)
    if Path(text).expanduser().exists():
        return
    meant_local = Path(text).is_absolute() or text.startswith((".", "~")) or text.count("/") > 1
    if not meant_local:
        try:
            validate_repo_id(text)
        except HFValidationError:
            meant_local = True
    if meant_local:
        raise FileNotFoundError(f"{name} {text!r} does not exist (no such directory, and not a Hub repo id).")


__all__ = ["check_local_or_repo_id", "inside_checkpoint", "load_component", "read_json"]
