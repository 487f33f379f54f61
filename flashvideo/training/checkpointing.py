"""
Resumable training states: where they go, how they are written (never half), how one is picked and checked
before resuming.

Every `--save_steps` optimizer steps `save_checkpoint` writes `OUTPUT_DIR/checkpoints/STAGE/checkpoint-STEP`:
what `accelerator.save_state` saves (model, optimizer, LR scheduler, every process's RNG states), the stage's
step-hook state, every process's stream position under `--streaming`, and `training_state.json` (the
`TrainingProgress`, the batch / process / seed settings, the run's identity, and each file's size and SHA-256).
It is written under a temporary name and renamed when complete.

Example:
    >>> from pathlib import Path
    >>> from flashvideo.training.checkpointing import checkpoint_dirs, resolve_checkpoint
    >>> checkpoint_dirs(Path("ckpt/checkpoints/keyframe"))  # doctest: +SKIP
    [(500, PosixPath('ckpt/checkpoints/keyframe/checkpoint-500')), (1000, ...)]
    >>> resolve_checkpoint("latest", Path("ckpt/checkpoints/keyframe"))  # doctest: +SKIP
    PosixPath('ckpt/checkpoints/keyframe/checkpoint-1000')
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from accelerate import Accelerator
from accelerate.logging import get_logger
from safetensors.torch import load_file, save_file

from . import sharding
from .arguments import RESUME_LATEST, FlashVideoTrainingArguments, first_identity_difference
from .codebook import CodebookRestarter
from .errors import TrainingSetupError
from .streaming import StreamingBatches

# accelerate's logger: under several processes only the main one speaks (as the loop's logger does).
logger = get_logger(__name__)

CHECKPOINTS_FOLDER = "checkpoints"
TRAINING_STATE_NAME = "training_state.json"
STEP_HOOK_STATE_NAME = "step_hook_state.safetensors"
_CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")


@dataclass
class TrainingProgress:
    """Where the loop is; stored in every checkpoint as `training_state.json`."""

    global_step: int = 0  # optimizer steps done
    epoch: int = 0  # current pass over the data set (the sampler's shuffling seed is seed + epoch)
    batch_in_epoch: int = 0  # micro-batches of `epoch` already consumed by this process



def checkpoint_dirs(stage_checkpoints: Path) -> list[tuple[int, Path]]:
    """The `checkpoint-<step>` folders of a stage, oldest first (`checkpoint_problem` says which are intact)."""
    if not stage_checkpoints.is_dir():
        return []
    found = []
    for path in stage_checkpoints.iterdir():
        match = _CHECKPOINT_RE.match(path.name)
        if match and path.is_dir():
            found.append((int(match.group(1)), path))
    return sorted(found)


def check_output_dir(
    stage_checkpoints: Path, args: FlashVideoTrainingArguments, identity: dict[str, object], accelerator: Accelerator
) -> None:
    """A fresh run (no `--resume_from_checkpoint`) refuses a folder that already holds checkpoints of this stage,
    whose pruning and `latest` would mix with its own, unless `--overwrite_output_dir`, which deletes them."""
    found = checkpoint_dirs(stage_checkpoints)
    if args.resume_from_checkpoint is not None or not found:
        return
    if args.overwrite_output_dir:
        if accelerator.is_main_process:
            logger.warning(f"--overwrite_output_dir: deleting the {len(found)} checkpoint(s) in {stage_checkpoints}")
            for _, path in found:
                shutil.rmtree(path)
        accelerator.wait_for_everyone()
        return
    latest = found[-1][1]
    saved = _saved_identity(latest)
    difference = None if saved is None else first_identity_difference(saved, identity)
    if saved is None:
        whose = "of a run whose arguments were not recorded"
    elif difference is None:
        whose = "of a run with the same arguments"
    else:
        whose = f"of a different run (first difference: {difference})"
    raise TrainingSetupError(
        f"--output_dir {args.output_dir} already holds checkpoints {whose}, in {stage_checkpoints} (latest: "
        f"{latest.name}). Pass --resume_from_checkpoint latest to continue that run, --overwrite_output_dir to "
        "delete them and start afresh, or another --output_dir."
    )


def _saved_identity(checkpoint: Path) -> dict[str, object] | None:
    """The run identity `checkpoint` records (None: unreadable, or saved before identities were recorded)."""
    try:
        saved = json.loads((checkpoint / TRAINING_STATE_NAME).read_text(encoding="utf-8")).get("identity")
    except (OSError, ValueError, AttributeError):
        return None
    return saved if isinstance(saved, dict) else None


def resolve_checkpoint(
    value: str | None, stage_checkpoints: Path, identity: dict[str, object] | None = None
) -> Path | None:
    """
    `--resume_from_checkpoint`: None, 'latest' or a folder. 'latest' is the newest intact checkpoint: a newer one
    with a missing, truncated or changed file (see `checkpoint_problem`) is skipped with a warning naming the file;
    None when there is no checkpoint at all, a `TrainingSetupError` when none is intact. A checkpoint of a run
    whose arguments differ from `identity` (other than `RESUMABLE_CHANGES`) is refused, naming the first
    difference.
    """
    if value is None:
        return None
    if value == RESUME_LATEST:
        found = checkpoint_dirs(stage_checkpoints)
        if not found:
            logger.info(
                f"--resume_from_checkpoint latest: no checkpoint under {stage_checkpoints}; starting afresh"
            )
            return None
        problems = []
        for _, path in reversed(found):
            problem = checkpoint_problem(path)
            if problem is None:
                _check_identity(path, identity)
                if problems:
                    logger.warning(f"--resume_from_checkpoint latest: resuming from {path}, the newest intact one")
                return path
            logger.warning(f"Skipping the damaged checkpoint {path}: {problem}")
            problems.append(f"{path.name}: {problem}")
        raise TrainingSetupError(
            f"--resume_from_checkpoint latest: no intact checkpoint in {stage_checkpoints} ("
            + "; ".join(problems)
            + "). Pass --overwrite_output_dir to start afresh."
        )
    path = Path(value)
    if not (path / TRAINING_STATE_NAME).is_file():
        raise TrainingSetupError(
            f"--resume_from_checkpoint {value}: not a checkpoint written by flashvideo.training (no "
            f"{TRAINING_STATE_NAME} in it); use '{RESUME_LATEST}' or a {stage_checkpoints}/checkpoint-<step> "
            "folder."
        )
    problem = checkpoint_problem(path)
    if problem is not None:
        raise TrainingSetupError(f"--resume_from_checkpoint {value} is damaged: {problem}")
    _check_identity(path, identity)
    return path


def _check_identity(checkpoint: Path, identity: dict[str, object] | None) -> None:
    """Refuse `checkpoint` when its run's arguments differ from `identity` (None: nothing to check against)."""
    if identity is None:
        return
    saved = _saved_identity(checkpoint)
    if saved is None:
        logger.warning(f"{checkpoint} does not record its run's arguments (an older flashvideo saved it): not checked")
        return
    difference = first_identity_difference(saved, identity)
    if difference is not None:
        raise TrainingSetupError(
            f"{checkpoint} belongs to a run with other arguments ({difference}); resume it with the same "
            "arguments, or start afresh with --overwrite_output_dir or another --output_dir."
        )


def checkpoint_problem(checkpoint: Path) -> str | None:
    """What makes `checkpoint` unusable, naming the file (missing, truncated, changed since it was saved, or an
    unreadable training_state.json); None when it is intact. Checkpoints record each file's size and SHA-256."""
    state_path = checkpoint / TRAINING_STATE_NAME
    try:
        state = json.loads(state_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return f"{state_path} is missing"
    except (OSError, ValueError) as error:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        return f"{state_path} is unreadable ({type(error).__name__}: {error})"
    progress_fields = ("global_step", "epoch", "batch_in_epoch")
    if not isinstance(state, dict) or any(type(state.get(name)) is not int for name in progress_fields):
        return f"{state_path} is unreadable (it needs the integers {', '.join(progress_fields)})"
    files = state.get("files", {})  # absent in checkpoints saved before checksums were recorded
    if not isinstance(files, dict):
        return f"{state_path} is unreadable (its 'files' is not a mapping)"
    for name, expected in files.items():
        path = checkpoint / name
        if not path.is_file():
            return f"{path} is missing"
        try:
            size, digest = path.stat().st_size, _sha256(path)
        except OSError as error:
            return f"{path} is unreadable ({error})"
        if not isinstance(expected, dict) or size != expected.get("size"):
            return f"{path} is truncated or changed ({size} bytes, {expected.get('size')} when saved)"
        if digest != expected.get("sha256"):
            return f"{path} has changed since it was saved (its SHA-256 differs)"
    return None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _file_manifest(folder: Path) -> dict[str, dict[str, object]]:
    """Size and SHA-256 of every file under `folder` (but the training state itself), by relative path."""
    return {
        path.relative_to(folder).as_posix(): {"size": path.stat().st_size, "sha256": _sha256(path)}
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name != TRAINING_STATE_NAME
    }


def save_checkpoint(
    accelerator: Accelerator,
    stage_checkpoints: Path,
    progress: TrainingProgress,
    stage: str,
    args: FlashVideoTrainingArguments,
    step_hook: CodebookRestarter | None = None,
    identity: dict[str, object] | None = None,
    stream: StreamingBatches | None = None,
) -> Path:
    """
    `accelerator.save_state` (plus the stage's step-hook state) into a temporary folder, then rename it to
    `checkpoint-<step>`: a run killed while saving leaves no half-written checkpoint behind for `latest` to pick
    up. `training_state.json` also records the run's `identity` and each file's size and SHA-256, checked before
    resuming. Then prune to `save_total_limit`.
    """
    final = stage_checkpoints / f"checkpoint-{progress.global_step}"
    partial = stage_checkpoints / f".partial-checkpoint-{progress.global_step}"
    if accelerator.is_main_process:
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
    accelerator.wait_for_everyone()
    sharding.save_state(accelerator, partial)  # accelerator.save_state; under FSDP the gathered weights too
    if stream is not None:  # every process's own stream position
        stream.save(partial, accelerator.process_index)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        state = {
            **asdict(progress),
            "stage": stage,
            "seed": args.seed,
            "num_processes": accelerator.num_processes,
            "per_device_train_batch_size": args.per_device_train_batch_size,
            "gradient_accumulation_steps": args.gradient_accumulation_steps,
            "identity": identity,
        }
        if step_hook is not None:
            save_file(step_hook.state_dict(), partial / STEP_HOOK_STATE_NAME)
        state["files"] = _file_manifest(partial)
        with open(partial / TRAINING_STATE_NAME, "w", encoding="utf-8") as handle:
            json.dump(state, handle, indent=2, sort_keys=True)
        if final.exists():
            shutil.rmtree(final)
        os.replace(partial, final)
        if args.save_total_limit is not None:
            for _, old in checkpoint_dirs(stage_checkpoints)[: -args.save_total_limit]:
                shutil.rmtree(old, ignore_errors=True)
        logger.info(f"Saved the training state in {final}")
    accelerator.wait_for_everyone()
    return final


def read_training_state(
    checkpoint: Path, stage: str, accelerator: Accelerator, args: FlashVideoTrainingArguments
) -> TrainingProgress:
    """The `TrainingProgress` in `checkpoint`'s training_state.json; refuses another stage's, warns when the batch
    settings (batch size, accumulation) or seed differ (the data order after resuming is then not the interrupted
    run's)."""
    with open(checkpoint / TRAINING_STATE_NAME, encoding="utf-8") as handle:
        state = json.load(handle)
    if state.get("stage") != stage:
        raise TrainingSetupError(
            f"--resume_from_checkpoint {checkpoint} holds a {state.get('stage')!r} training state, not "
            f"{stage!r}."
        )
    same_layout = (
        state.get("num_processes") == accelerator.num_processes
        and state.get("per_device_train_batch_size") == args.per_device_train_batch_size
        and state.get("gradient_accumulation_steps") == args.gradient_accumulation_steps
        and state.get("seed") == args.seed
    )
    if not same_layout:
        logger.warning(
            f"{checkpoint} was written with num_processes={state.get('num_processes')}, "
            f"per_device_train_batch_size={state.get('per_device_train_batch_size')}, "
            f"gradient_accumulation_steps={state.get('gradient_accumulation_steps')}, "
            f"seed={state.get('seed')}; this run differs, so the data order after resuming is not the one "
            "the interrupted run would have followed."
        )
    return TrainingProgress(
        global_step=int(state["global_step"]),
        epoch=int(state["epoch"]),
        batch_in_epoch=int(state["batch_in_epoch"]),
    )


def remove_partial_checkpoints(stage_checkpoints: Path) -> None:
    """Delete what a run killed while saving left behind (`.partial-checkpoint-*`); the main process calls it."""
    if stage_checkpoints.is_dir():
        for path in stage_checkpoints.glob(".partial-checkpoint-*"):
            shutil.rmtree(path, ignore_errors=True)



def load_checkpoint(
    accelerator: Accelerator,
    checkpoint: Path,
    stage: str,
    args: FlashVideoTrainingArguments,
    step_hook: CodebookRestarter | None = None,
    stream: StreamingBatches | None = None,
) -> TrainingProgress:
    """
    Restore `checkpoint` into the prepared objects: model, optimizer, LR scheduler, every process's RNG states
    and the gradient-accumulation counter (`accelerator.load_state`, weights in safetensors, also under FSDP),
    the step hook's state and this process's stream position. Returns where the loop was.
    """
    sharding.load_state(accelerator, checkpoint)
    progress = read_training_state(checkpoint, stage, accelerator, args)
    if step_hook is not None:
        step_hook.load_state_dict(load_file(checkpoint / STEP_HOOK_STATE_NAME))
    if stream is not None:  # this process's stream position
        try:
            stream.load(checkpoint, accelerator.process_index, accelerator.num_processes)
        except ValueError as error:
            raise TrainingSetupError(f"--resume_from_checkpoint {checkpoint}: {error}") from None
    logger.info(
        f"Resumed from {checkpoint}: step {progress.global_step}, epoch {progress.epoch}, "
        f"{progress.batch_in_epoch} batch(es) of that epoch already seen"
    )
    return progress


__all__ = [
    "CHECKPOINTS_FOLDER",
    "STEP_HOOK_STATE_NAME",
    "TRAINING_STATE_NAME",
    "TrainingProgress",
    "check_output_dir",
    "checkpoint_dirs",
    "checkpoint_problem",
    "load_checkpoint",
    "read_training_state",
    "remove_partial_checkpoints",
    "resolve_checkpoint",
    "save_checkpoint",
]
