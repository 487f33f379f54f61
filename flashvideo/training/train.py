"""
Train FlashVideo with 🤗 Accelerate, from 🤗 Datasets: the image tokenizer, the key-frame model, the
interpolation model.

    python -m flashvideo.training --stage tokenizer     --output_dir ckpt ...
    python -m flashvideo.training --stage keyframe      --output_dir ckpt ...
    python -m flashvideo.training --stage interpolation --output_dir ckpt ...
    accelerate launch --multi_gpu --num_processes 4 -m flashvideo.training --stage keyframe --output_dir ckpt
    accelerate launch --use_fsdp --fsdp_version 2 ... -m flashvideo.training ...        # sharded: training.sharding
    python -m flashvideo.training --stage keyframe --codes_dataset codes [--streaming] ...  # training.encode, .streaming

After the three stages `ckpt` is a complete pipeline checkpoint
(`FlashVideoPipeline.from_pretrained("ckpt")`).

Reading order: `train()` is the whole loop, top to bottom; the stage-specific pieces (data set, model, loss,
what is saved at the end) come from `setup_tokenizer_stage` / `setup_lm_stage`, and checkpointing from the
helpers below.

Resuming (`--resume_from_checkpoint latest|PATH`) restores what `accelerator.save_state` wrote (model,
optimizer, LR scheduler, every process's RNG states, the gradient-accumulation counter) plus
`training_state.json` (optimizer step, epoch, and micro-batches already consumed in that epoch). The data
order is a function of `--seed` and the epoch: the DataLoader is prepared with accelerate's seedable sampler
(`DataLoaderConfiguration(use_seedable_sampler=True, data_seed=seed)`), which reshuffles with seed `seed +
epoch`; on resume the loop sets the epoch back and skips the batches already seen with
`accelerator.skip_first_batches`. A resumed run therefore sees exactly the batches the uninterrupted run would
have seen, and ends with the same weights.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import re
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch
import torch.nn.functional as F
import transformers
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration, set_seed
from diffusers import VQModel
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import get_scheduler

from ..configuration_flashvideo import FlashVideoConfig
from ..data.collate import pad_batch
from ..data.codes import codes_info, codes_to_samples, load_codes
from ..data.shapes import DEFAULT_IMAGE_SIZE, shapes_dataset
from ..data.tokenized import drop_prompts, tokenize_video_dataset
from ..data.video_folders import load_video_folder, resize_and_center_crop
from ..evaluation.metrics import psnr
from ..image_tokenizer import (
    IMAGE_TOKENIZER_SUBFOLDER,
    build_vq_model,
    codes_to_frames,
    frames_to_codes,
    frames_to_model_input,
    load_image_tokenizer,
)
from ..modeling_flashvideo import FlashVideoForCausalLM
from ..pipeline_flashvideo import INTERPOLATION_SUBFOLDER, has_interpolation_model
from ..processing_flashvideo import PROCESSOR_CONFIG_NAME, FlashVideoProcessor, SequenceLayout
from ..text_tokenizer import build_text_tokenizer
from .arguments import (
    DEFAULT_CHECKPOINT,
    RESUME_LATEST,
    DataArguments,
    FlashVideoTrainingArguments,
    ModelArguments,
    arguments_to_dict,
    build_parser,
    first_identity_difference,
    parse_args,
    run_identity,
)
from .codebook import CodebookRestarter
from . import sharding
from .streaming import StreamingBatches, split_stream

logger = get_logger(__name__)

CHECKPOINTS_FOLDER = "checkpoints"
LOGGING_FOLDER = "runs"
TRAINING_STATE_NAME = "training_state.json"
STEP_HOOK_STATE_NAME = "step_hook_state.safetensors"
# Dead VQ codes are restarted during the first 3/4 of the steps only, so the decoder learns the last new codes.
RESTART_SHARE_OF_STEPS = 0.75
_CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")


class TrainingSetupError(ValueError):
    """A problem with what the user asked for (missing processor, mismatched layout, empty data set...)."""


@dataclass
class TrainingProgress:
    """Where the loop is; stored in every checkpoint as `training_state.json`."""

    global_step: int = 0  # optimizer steps done
    epoch: int = 0  # current pass over the data set (the sampler's shuffling seed is seed + epoch)
    batch_in_epoch: int = 0  # micro-batches of `epoch` already consumed by this process


@dataclass
class Stage:
    """What differs between stages; `train()` does the rest."""

    model: torch.nn.Module
    train_dataset: Any
    collate_fn: Callable[[list], Any]
    compute_loss: Callable[[torch.nn.Module, Any], tuple[torch.Tensor, dict[str, torch.Tensor]]]
    # Called once after the last step with (accelerator, prepared model): saves the results, returns metrics.
    finish: Callable[[Accelerator, torch.nn.Module], dict[str, float]]
    processor: FlashVideoProcessor | None = None
    # Called after every optimizer step as `after_step(accelerator, global_step)`; its `state_dict()` is saved in
    # every checkpoint (safetensors) and restored on resume. The tokenizer stage's codebook restarts use it.
    step_hook: CodebookRestarter | None = None


@dataclass
class TrainOutput:
    """What `train()` returns: this process's trained (unwrapped) model, the processor and the metrics."""

    stage: str
    global_step: int
    model: torch.nn.Module
    processor: FlashVideoProcessor | None
    metrics: dict[str, float] = field(default_factory=dict)
    resumed_from: str | None = None


# ======================================================================================== the training loop


def train(
    model_args: ModelArguments, data_args: DataArguments, args: FlashVideoTrainingArguments
) -> TrainOutput:
    """Run one training stage; see the module docstring."""
    output_dir = Path(args.output_dir)
    accelerator = Accelerator(
        mixed_precision=args.mixed_precision,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        log_with=args.log_with,
        project_config=ProjectConfiguration(
            project_dir=str(output_dir), logging_dir=str(output_dir / LOGGING_FOLDER)
        ),
        # A sampler reseeded with `seed + epoch` at every epoch, identical on every process: the data order is
        # a function of (seed, epoch) and can be replayed on resume.
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=args.seed),
    )
    _set_library_verbosity(accelerator)
    try:  # `accelerate launch --use_fsdp` shards on CPU processes too; a launch of lone processes is refused
        sharding.check_process_count(accelerator)
        sharding.enable_fsdp(accelerator, model_args.stage)
    except sharding.ShardingError as error:
        raise TrainingSetupError(str(error)) from None
    logger.info(f"Stage {model_args.stage!r} on {accelerator.num_processes} process(es); {accelerator.state}")
    set_seed(args.seed)

    # ---- which checkpoint to resume from (if any), before any work: never another run's
    identity = run_identity(model_args, data_args, args)
    stage_checkpoints = output_dir / CHECKPOINTS_FOLDER / model_args.stage
    if accelerator.is_main_process:
        _remove_partial_checkpoints(stage_checkpoints)
    check_output_dir(stage_checkpoints, args, identity, accelerator)
    checkpoint = resolve_checkpoint(args.resume_from_checkpoint, stage_checkpoints, identity)

    # ---- stage-specific parts: data, model, loss, final artefacts
    if model_args.stage == "tokenizer":
        stage = setup_tokenizer_stage(model_args, data_args, args, accelerator)
    else:
        stage = setup_lm_stage(model_args, data_args, args, accelerator)
    model = stage.model
    num_parameters = sum(p.numel() for p in model.parameters())
    logger.info(
        f"{type(model).__name__}: {num_parameters / 1e6:.2f}M parameters; "
        + ("samples streamed" if data_args.streaming else f"{len(stage.train_dataset)} samples")
    )

    # ---- optimizer, LR schedule, data loader; then hand everything to accelerate
    optimizer = build_optimizer(model, args)
    # The prepared scheduler steps once per process at every optimizer step (accelerate's convention for data
    # parallelism without split_batches), so the schedule is laid out in process-steps.
    lr_scheduler = get_scheduler(
        args.lr_scheduler_type,
        optimizer,
        num_warmup_steps=args.warmup_steps * accelerator.num_processes,
        num_training_steps=args.max_steps * accelerator.num_processes,
    )
    stream = None
    if data_args.streaming:  # each process reads its own part of the stream (see training.streaming)
        stream = StreamingBatches(
            stage.train_dataset,
            batch_size=args.per_device_train_batch_size,
            collate_fn=stage.collate_fn,
            device=accelerator.device,
            buffer_size=data_args.streaming_shuffle_buffer_size,
        )
        model, optimizer, lr_scheduler = accelerator.prepare(model, optimizer, lr_scheduler)
    else:
        train_dataloader = DataLoader(
            stage.train_dataset,
            batch_size=args.per_device_train_batch_size,
            shuffle=True,
            collate_fn=stage.collate_fn,
            num_workers=args.dataloader_num_workers,
        )
        model, optimizer, train_dataloader, lr_scheduler = accelerator.prepare(
            model, optimizer, train_dataloader, lr_scheduler
        )

    # ---- resume
    progress = TrainingProgress()
    if checkpoint is not None:
        # Model, optimizer, LR scheduler, every process's RNG states, the gradient-accumulation counter.
        sharding.load_state(accelerator, checkpoint)  # accelerator.load_state; model weights in safetensors
        progress = read_training_state(checkpoint, model_args.stage, accelerator, args)
        if stage.step_hook is not None:
            stage.step_hook.load_state_dict(load_file(checkpoint / STEP_HOOK_STATE_NAME))
        if stream is not None:  # this process's stream position
            try:
                stream.load(checkpoint, accelerator.process_index, accelerator.num_processes)
            except ValueError as error:
                raise TrainingSetupError(f"--resume_from_checkpoint {checkpoint}: {error}") from None
        logger.info(
            f"Resumed from {checkpoint}: step {progress.global_step}, epoch {progress.epoch}, "
            f"{progress.batch_in_epoch} batch(es) of that epoch already seen"
        )
    if stream is None and progress.batch_in_epoch >= len(train_dataloader):
        progress.epoch, progress.batch_in_epoch = progress.epoch + 1, 0

    accelerator.init_trackers(model_args.stage, config=_tracker_config(model_args, data_args, args))
    total_batch = (
        args.per_device_train_batch_size * accelerator.num_processes * args.gradient_accumulation_steps
    )
    logger.info(
        f"Training {args.max_steps} steps of {total_batch} samples ({args.per_device_train_batch_size} per "
        f"process x {accelerator.num_processes} process(es) x {args.gradient_accumulation_steps} "
        f"accumulation step(s)); "
        + ("streamed" if stream is not None else f"{len(train_dataloader)} batches per epoch per process")
    )
    progress_bar = tqdm(
        total=args.max_steps,
        initial=progress.global_step,
        desc=f"{model_args.stage}",
        disable=not accelerator.is_local_main_process,
    )

    # ---- the loop
    model.train()
    running: dict[str, torch.Tensor] = {}
    running_batches = 0
    grad_norm = None
    window_start = time.perf_counter()
    while progress.global_step < args.max_steps:
        if stream is not None:  # endless: epoch after epoch, from the saved position when resuming
            batches = stream
        else:
            train_dataloader.set_epoch(progress.epoch)  # the sampler shuffles with seed + epoch
            batches = train_dataloader
            if progress.batch_in_epoch:  # resuming inside an epoch: replay the same order, skip what was seen
                batches = accelerator.skip_first_batches(train_dataloader, progress.batch_in_epoch)
        for batch in batches:
            with accelerator.accumulate(model):
                loss, extras = stage.compute_loss(model, batch)
                accelerator.backward(loss)
                if accelerator.sync_gradients and args.max_grad_norm > 0:
                    grad_norm = accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                # These three are no-ops until the last micro-batch of an accumulation window.
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            progress.batch_in_epoch += 1
            if stream is not None:  # the main process's position is the one training_state.json records
                progress.epoch, progress.batch_in_epoch = stream.epoch, stream.batches_in_epoch
            for name, value in {"loss": loss, **extras}.items():
                running[name] = running.get(name, 0.0) + value.detach().float()
            running_batches += 1
            if not accelerator.sync_gradients:
                continue

            # -- one optimizer step done
            progress.global_step += 1
            progress_bar.update(1)
            if stage.step_hook is not None:
                stage.step_hook.after_step(accelerator, progress.global_step)
            if progress.global_step % args.logging_steps == 0 or progress.global_step == args.max_steps:
                names = sorted(running)
                # One collective per log, in the same order on every process.
                means = (
                    accelerator.reduce(torch.stack([running[n] for n in names]), reduction="mean")
                    / running_batches
                )
                seconds = time.perf_counter() - window_start
                logs = {f"train/{name}": value.item() for name, value in zip(names, means)}
                logs["train/learning_rate"] = lr_scheduler.get_last_lr()[0]
                logs["train/epoch"] = progress.epoch + (
                    0 if stream is not None else progress.batch_in_epoch / len(train_dataloader)
                )
                logs["train/samples_per_second"] = (
                    running_batches * args.per_device_train_batch_size * accelerator.num_processes / seconds
                )
                if grad_norm is not None:
                    logs["train/grad_norm"] = float(grad_norm)
                accelerator.log(logs, step=progress.global_step)
                progress_bar.set_postfix(
                    loss=f"{logs['train/loss']:.4f}", lr=f"{logs['train/learning_rate']:.2e}"
                )
                logger.info(
                    f"step {progress.global_step}: "
                    + ", ".join(f"{key.split('/')[1]}={value:.5g}" for key, value in logs.items())
                )
                running, running_batches, window_start = {}, 0, time.perf_counter()
            if progress.global_step % args.save_steps == 0:
                save_checkpoint(
                    accelerator, stage_checkpoints, progress, model_args.stage, args, stage.step_hook, identity,
                    stream,
                )
            if progress.global_step >= args.max_steps:
                break
        else:  # the epoch ran out before max_steps
            progress.epoch, progress.batch_in_epoch = progress.epoch + 1, 0
    progress_bar.close()

    # ---- final artefacts
    accelerator.wait_for_everyone()
    metrics = stage.finish(accelerator, model)
    metrics = {"train/global_step": progress.global_step, **metrics}
    if metrics and accelerator.is_main_process:
        accelerator.log(
            {k: v for k, v in metrics.items() if isinstance(v, (int, float))}, step=progress.global_step
        )
        with open(output_dir / f"train_results_{model_args.stage}.json", "w", encoding="utf-8") as handle:
            json.dump(metrics, handle, indent=2, sort_keys=True)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return TrainOutput(
        stage=model_args.stage,
        global_step=progress.global_step,
        model=accelerator.unwrap_model(model),
        processor=stage.processor,
        metrics=metrics,
        resumed_from=str(checkpoint) if checkpoint is not None else None,
    )


def build_optimizer(model: torch.nn.Module, args: FlashVideoTrainingArguments) -> torch.optim.Optimizer:
    """AdamW (or SGD); weight decay on matrices and convolution kernels, not on norms, biases, gains."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    groups = [
        {"params": decay, "weight_decay": args.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    if args.optim == "sgd":
        return torch.optim.SGD(groups, lr=args.learning_rate)
    return torch.optim.AdamW(
        groups, lr=args.learning_rate, betas=(args.adam_beta1, args.adam_beta2), eps=args.adam_epsilon
    )


# ============================================================================================== checkpoints


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


def _remove_partial_checkpoints(stage_checkpoints: Path) -> None:
    if stage_checkpoints.is_dir():
        for path in stage_checkpoints.glob(".partial-checkpoint-*"):
            shutil.rmtree(path, ignore_errors=True)


# =================================================================================================== stages


def setup_tokenizer_stage(
    model_args: ModelArguments,
    data_args: DataArguments,
    args: FlashVideoTrainingArguments,
    accelerator: Accelerator,
) -> Stage:
    """
    The caption tokenizer (word level, built from the data set's captions) and the VQ image tokenizer
    (trained).

    Loss: `MSE(reconstruction, frame) + VQ loss`, frames in [-1, 1]. The VQ loss is diffusers' `commit_loss`
    with the quantizer's `legacy` flag turned off, i.e. van den Oord et al.'s weighting: `‖sg[z] − e‖²`
    (codebook, weight 1) + `β‖z − sg[e]‖²` (commitment, β = 0.25). diffusers' default `legacy=True` swaps the
    two weights.
    """
    output_dir = Path(args.output_dir)
    if data_args.codes_dataset is not None:
        raise TrainingSetupError(
            "--stage tokenizer learns from pixels: give it videos (Shapes, --video_folder or --dataset_name), not "
            "--codes_dataset."
        )
    source = resolve_model_source(model_args.model_name_or_path)
    if source is not None:
        # Keep training its image tokenizer; its caption tokenizer (and the text ids) stay as they are.
        processor = load_processor(source, "--model_name_or_path")
        check_layout_overrides(model_args, processor.layout, source)
        layout, text_tokenizer, vq = processor.layout, processor.text_tokenizer, load_vq(source, "--model_name_or_path")
    else:
        layout = SequenceLayout.from_config(FlashVideoConfig(**model_args.layout_overrides()))
    # The main process fills the datasets cache, the others then read it.
    with accelerator.main_process_first():
        videos = load_videos(data_args, layout.image_size)
        frames = frames_dataset(videos)
    if source is None:
        text_tokenizer = build_text_tokenizer(videos["text"], vocab_size=layout.text_vocab_size)
        try:
            vq = build_vq_model(
                layout.image_size,
                layout.code_grid_size,
                layout.image_vocab_size,
                block_out_channels=model_args.vq_block_out_channels,
                vq_embed_dim=model_args.vq_embed_dim,
                layers_per_block=model_args.vq_layers_per_block,
                norm_num_groups=model_args.vq_norm_num_groups,
            )
        except ValueError as error:
            raise TrainingSetupError(
                f"The VQ image tokenizer arguments do not fit together: {error}"
            ) from None
        logger.info(
            f"Caption tokenizer: {len(text_tokenizer)} tokens (text_vocab_size {layout.text_vocab_size})"
        )
    vq.quantize.legacy = False  # codebook term weight 1, commitment term weight β (see the docstring)
    restarter = CodebookRestarter(
        vq.quantize,
        threshold=model_args.vq_dead_code_threshold,
        seed=args.seed,
        stop_after_step=int(RESTART_SHARE_OF_STEPS * args.max_steps),
    )

    def compute_loss(vq_model, pixels):
        output = vq_model(pixels)
        reconstruction_loss = F.mse_loss(output.sample.float(), pixels.float())
        vq_loss = output.commit_loss.float().mean()
        with torch.no_grad():
            # The VQ works on [-1, 1]; PSNR is taken on [0, 1], as everywhere else.
            psnr_db = psnr((output.sample.float().clamp(-1, 1) + 1) / 2, (pixels.float() + 1) / 2).mean()
        return reconstruction_loss + vq_loss, {
            "reconstruction_loss": reconstruction_loss,
            "vq_loss": vq_loss,
            "psnr": psnr_db,
            "codes_in_use": torch.tensor(float(restarter.codes_in_use)),
        }

    def finish(accelerator: Accelerator, prepared: torch.nn.Module) -> dict[str, float]:
        state_dict = accelerator.get_state_dict(prepared)  # the full weights, also under FSDP
        metrics: dict[str, float] = {}
        if accelerator.is_main_process:
            trained = type(vq).from_config(vq.config)
            trained.load_state_dict(state_dict)
            trained.eval()
            final_processor = FlashVideoProcessor(text_tokenizer, layout)
            if (output_dir / "config.json").is_file() or (output_dir / INTERPOLATION_SUBFOLDER).is_dir():
                logger.warning(
                    f"{output_dir} already holds FlashVideo models; they were trained on the previous image "
                    "tokenizer's codes. Retrain the keyframe and interpolation stages with this one."
                )
            final_processor.save_pretrained(output_dir)
            trained.save_pretrained(output_dir / IMAGE_TOKENIZER_SUBFOLDER, safe_serialization=True)
            metrics = evaluate_reconstruction(trained, frames, args.psnr_num_frames, accelerator.device)
            metrics["train/codes_restarted"] = restarter.restarted
            logger.info(
                f"Image tokenizer: reconstruction PSNR {metrics['eval/psnr']:.2f} dB on "
                f"{metrics['eval/num_frames']} frames, {metrics['eval/codebook_usage']:.0%} of the codebook "
                f"used; processor saved in {output_dir}"
            )
        return metrics

    processor = FlashVideoProcessor(text_tokenizer, layout)
    return Stage(
        model=vq,
        train_dataset=frames,
        collate_fn=collate_frames,
        compute_loss=compute_loss,
        finish=finish,
        processor=processor,
        step_hook=restarter,
    )


def setup_lm_stage(
    model_args: ModelArguments,
    data_args: DataArguments,
    args: FlashVideoTrainingArguments,
    accelerator: Accelerator,
) -> Stage:
    """The key-frame or the interpolation model: next-token loss on image codes (the rest is -100)."""
    stage_name = model_args.stage
    output_dir = Path(args.output_dir)
    source = resolve_model_source(model_args.model_name_or_path)
    processor_source = (
        resolve_model_source(model_args.processor_name_or_path, "--processor_name_or_path") or source or str(output_dir)
    )
    if processor_source == str(output_dir) and not (output_dir / PROCESSOR_CONFIG_NAME).is_file():
        raise TrainingSetupError(
            f"No FlashVideo processor in --output_dir {output_dir}: run `--stage tokenizer --output_dir "
            f"{output_dir}` first, or pass --processor_name_or_path (or --model_name_or_path to fine-tune a "
            "checkpoint)."
        )
    processor = load_processor(processor_source, "--processor_name_or_path")
    vq = load_vq(processor_source, "--processor_name_or_path")
    layout = processor.layout
    check_layout_overrides(model_args, layout, processor_source)

    # ---- data: token sequences from videos (a cached, fingerprinted Dataset.map), or from codes encoded once
    if data_args.codes_dataset is not None:
        tokenized = samples_from_codes(data_args, processor, vq, stage_name, args, accelerator)
    else:
        with accelerator.main_process_first():
            videos = load_videos(data_args, layout.image_size)
            vq.to(accelerator.device)  # encode frames on the accelerator
            try:
                tokenized = tokenize_video_dataset(
                    videos,
                    processor,
                    image_tokenizer=vq,
                    sample_kind=stage_name,
                    num_key_frames=data_args.num_key_frames,
                    interpolation_frames=data_args.interpolation_frames,
                    batch_size=data_args.tokenize_batch_size,
                    num_proc=data_args.preprocessing_num_workers,
                    label_key_frames=data_args.label_key_frames,
                )
            except ValueError as error:
                raise TrainingSetupError(f"Cannot cut {stage_name} samples from the data set: {error}") from None
            vq.to("cpu")
            tokenized = drop_prompts(tokenized, data_args.proportion_empty_prompts, args.seed, layout.text_token_range)
    if not data_args.streaming:
        lengths = {len(ids) for ids in tokenized[: min(len(tokenized), 64)]["input_ids"]}
        logger.info(f"{len(tokenized)} {stage_name} samples of {sorted(lengths)} tokens (first 64 samples)")

    # ---- model: fine-tuned from a checkpoint, or fresh with the processor's layout
    set_seed(args.seed)
    if source is not None:
        model = load_lm(source, stage_name, model_args.config_overrides())
        mismatched = {
            name: (getattr(model.config, name), value)
            for name, value in layout.to_dict().items()
            if getattr(model.config, name) != value
        }
        if mismatched:
            raise TrainingSetupError(
                f"The model from {source} does not use the processor's vocabulary layout (model vs "
                f"processor: {mismatched}); pass the processor it was trained with "
                "(--processor_name_or_path)."
            )
    else:
        try:
            config = FlashVideoConfig(
                **layout.to_dict(), **model_args.architecture_overrides(), **model_args.config_overrides()
            )
        except ValueError as error:
            raise TrainingSetupError(f"Invalid model size arguments: {error}") from None
        model = FlashVideoForCausalLM(config)
    if args.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    forward_mode = model_args.forward_mode

    def compute_loss(lm, batch):
        output = lm(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            labels=batch["labels"],
            forward_mode=forward_mode,
            use_cache=False,
        )
        return output.loss, {}

    def finish(accelerator: Accelerator, prepared: torch.nn.Module) -> dict[str, float]:
        target = output_dir if stage_name == "keyframe" else output_dir / INTERPOLATION_SUBFOLDER
        state_dict = accelerator.get_state_dict(prepared)  # the full weights, also under FSDP
        # Under FSDP 2, a plain model of the original class (see sharding.unsharded_model).
        unwrapped = sharding.unsharded_model(
            accelerator.unwrap_model(prepared), state_dict if accelerator.is_main_process else None
        )
        if args.gradient_checkpointing:
            unwrapped.gradient_checkpointing_disable()
        unwrapped.save_pretrained(
            target,
            is_main_process=accelerator.is_main_process,
            save_function=accelerator.save,
            state_dict=state_dict,
        )
        if accelerator.is_main_process:
            processor_dir = Path(processor_source)
            if not (processor_dir.is_dir() and processor_dir.resolve() == output_dir.resolve()):
                processor.save_pretrained(output_dir)  # the checkpoint directory carries its processor and VQ
                vq.save_pretrained(output_dir / IMAGE_TOKENIZER_SUBFOLDER, safe_serialization=True)
            logger.info(f"{stage_name} model saved in {target}")
        return {}

    return Stage(
        model=model,
        train_dataset=tokenized,
        collate_fn=functools.partial(pad_batch, pad_token_id=layout.pad_token_id),
        compute_loss=compute_loss,
        finish=finish,
        processor=processor,
    )


# ==================================================================================== models and processors


def resolve_model_source(name: str | None, argument: str = "--model_name_or_path") -> str | None:
    """`--model_name_or_path` (or the `argument` named), with 'default' replaced by the shipped checkpoint."""
    if name != DEFAULT_CHECKPOINT:
        return name
    import flashvideo

    default_checkpoint = getattr(flashvideo, "default_checkpoint", None)
    if default_checkpoint is None:
        raise TrainingSetupError(
            f"{argument} default: this flashvideo installation has no default checkpoint "
            "(flashvideo.default_checkpoint() is missing); pass a checkpoint directory or Hub repo id."
        )
    return str(default_checkpoint())


def load_processor(source: str, argument: str) -> FlashVideoProcessor:
    path = Path(source)
    if path.is_dir() and not (path / PROCESSOR_CONFIG_NAME).is_file():
        raise TrainingSetupError(
            f"No FlashVideo processor in {source} ({argument}): it needs the {PROCESSOR_CONFIG_NAME}, "
            "text_tokenizer/ and image_tokenizer/ that `--stage tokenizer` writes."
        )
    try:
        return FlashVideoProcessor.from_pretrained(source)
    except (OSError, ValueError) as error:
        raise TrainingSetupError(
            f"Cannot load a FlashVideo processor from {source} ({argument}): {error}"
        ) from None


def load_vq(source: str, argument: str) -> VQModel:
    """The checkpoint's VQ image tokenizer (`image_tokenizer/`, which `--stage tokenizer` writes)."""
    try:
        return load_image_tokenizer(source)
    except (OSError, ValueError) as error:
        raise TrainingSetupError(f"Cannot load the VQ image tokenizer from {source} ({argument}): {error}") from None


def load_lm(source: str, stage: str, config_overrides: dict[str, object] | None = None) -> FlashVideoForCausalLM:
    """A checkpoint's key-frame model, or for the interpolation stage its `interpolation/` model if any;
    `config_overrides` (`ModelArguments.config_overrides()`) replace config values it was trained with."""
    subfolder = {}
    if stage == "interpolation":
        if has_interpolation_model(source):
            subfolder = {"subfolder": INTERPOLATION_SUBFOLDER}
        else:
            logger.warning(f"{source} has no {INTERPOLATION_SUBFOLDER}/ model: starting from its key-frame model")
    try:
        config = FlashVideoConfig.from_pretrained(source, **subfolder)
        if config_overrides:
            config = with_config_overrides(config, config_overrides)
        return FlashVideoForCausalLM.from_pretrained(source, config=config, **subfolder)
    except OSError as error:
        raise TrainingSetupError(f"Cannot load a FlashVideo model from {source}: {error}") from None


def with_config_overrides(config: FlashVideoConfig, overrides: dict[str, object]) -> FlashVideoConfig:
    """The config with other values for the given fields, checked as a new config would be."""
    try:  # rebuilt rather than updated in place, so that the config's own checks run
        config = FlashVideoConfig(**{**config.to_dict(), **overrides})
    except ValueError as error:
        raise TrainingSetupError(f"{' '.join('--' + name for name in overrides)}: {error}") from None
    if "decay_exponents" in overrides:
        logger.warning(
            f"Fine-tuning with the retention decay exponents {config.decay_exponents} (γ_h = 1 − 2^(−e_h))"
        )
    if "code_position_embeddings" in overrides:
        logger.warning(f"Fine-tuning with code_position_embeddings={config.code_position_embeddings}")
    return config


def check_layout_overrides(model_args: ModelArguments, layout: SequenceLayout, source: str) -> None:
    """Layout arguments given alongside an existing processor must agree with it (they cannot change it)."""
    current = {
        "image_size": layout.image_size,
        "code_grid_size": layout.code_grid_size,
        "image_vocab_size": layout.image_vocab_size,
        "text_vocab_size": layout.text_vocab_size,
        "max_frames": layout.max_frames,
    }
    conflicts = [
        f"--{'codebook_size' if name == 'image_vocab_size' else name} {value} (the processor has "
        f"{current[name]})"
        for name, value in model_args.layout_overrides().items()
        if current[name] != value
    ]
    if conflicts:
        raise TrainingSetupError(
            f"The processor from {source} fixes the vocabulary layout; these arguments disagree with it: "
            f"{', '.join(conflicts)}. Drop them, or train a new tokenizer stage."
        )


# ===================================================================================================== data


def load_videos(
    data_args: DataArguments,
    image_size: int,
    shard: tuple[int, int] | None = None,
    cache: bool = True,
) -> datasets.Dataset:
    """
    The training videos as a 🤗 Dataset with `video` (uint8 `[num_frames, image_size, image_size, 3]`, NumPy
    format) and `text`: the Shapes set (default), a `--video_folder`, or a `--dataset_name`.

    `shard=(index, count)` keeps the videos `index, index + count, ...` (after `--max_train_samples`); a video
    folder then decodes only those. `cache=False` leaves the decoded videos in memory instead of writing them
    to the 🤗 Datasets cache (the encode step, which keeps only their codes).
    """
    folder_shard = shard if data_args.max_train_samples is None else None  # else: cut after the first N
    if data_args.video_folder is not None:
        dataset, report = load_video_folder(
            data_args.video_folder,
            folder_format=data_args.video_folder_layout,
            num_frames=data_args.num_frames,
            stride=data_args.frame_stride,
            image_size=image_size,
            text=data_args.video_folder_text,
            caption_template=data_args.caption_template,
            shard=folder_shard,
        )
        logger.info(f"{data_args.video_folder}: {report.summary()}")
        source = f"--video_folder {data_args.video_folder}"
    elif data_args.dataset_name is not None:
        dataset = datasets.load_dataset(
            data_args.dataset_name, data_args.dataset_config_name, split=data_args.dataset_split
        )
        for argument, column in (
            ("video_column", data_args.video_column),
            ("text_column", data_args.text_column),
        ):
            if column not in dataset.column_names:
                raise TrainingSetupError(
                    f"--{argument} {column!r} is not a column of {data_args.dataset_name} "
                    f"(columns: {dataset.column_names})."
                )
        if data_args.max_train_samples is not None:
            dataset = dataset.select(range(min(data_args.max_train_samples, len(dataset))))
        dataset = standardize_videos(
            dataset,
            data_args.video_column,
            data_args.text_column,
            data_args.num_frames,
            data_args.frame_stride,
            image_size,
        )
        source = f"--dataset_name {data_args.dataset_name}"
    else:
        try:
            dataset = shapes_dataset(
                data_args.num_clips,
                seed=data_args.data_seed,
                num_frames=data_args.num_frames,
                speed_range=data_args.speed_range,
            )
        except ValueError as error:
            raise TrainingSetupError(f"Shapes: {error}") from None
        if image_size != DEFAULT_IMAGE_SIZE:  # Shapes is drawn at 64 px; other sizes are resized from it
            dataset = standardize_videos(dataset, "video", "text", data_args.num_frames, 1, image_size)
        source = "Shapes"
    if data_args.max_train_samples is not None and len(dataset) > data_args.max_train_samples:
        dataset = dataset.select(range(data_args.max_train_samples))
    if shard is not None and not (data_args.video_folder is not None and folder_shard is not None):
        dataset = dataset.shard(num_shards=shard[1], index=shard[0], contiguous=False)
    if len(dataset) == 0 and shard is None:
        raise TrainingSetupError(f"{source}: no usable video (see the log for the videos that were skipped).")
    return cache_on_disk(dataset) if cache else dataset


def samples_from_codes(
    data_args: DataArguments,
    processor: FlashVideoProcessor,
    vq: VQModel,
    stage_name: str,
    args: FlashVideoTrainingArguments,
    accelerator: Accelerator,
) -> datasets.Dataset | datasets.IterableDataset:
    """
    `--codes_dataset`: key-frame or interpolation samples cut from videos encoded once (`python -m
    flashvideo.training.encode`), after checking that this run's image tokenizer made the codes. With
    `--streaming`, an `IterableDataset` of this process's part of the stream (shuffled with `--seed`).
    """
    source = data_args.codes_dataset
    try:
        info = codes_info(source)
        info.check_matches(vq, processor.layout)
        needed = data_args.num_key_frames if stage_name == "keyframe" else data_args.interpolation_frames + 2
        if needed > info.num_frames:
            name = "--num_key_frames" if stage_name == "keyframe" else "--interpolation_frames + 2"
            raise ValueError(f"{name} ({needed}) is more than the {info.num_frames} frames of each encoded clip")
        if data_args.streaming and data_args.proportion_empty_prompts:
            raise ValueError("--proportion_empty_prompts is not supported with --streaming yet")
        with accelerator.main_process_first():  # a loaded (not streamed) data set is cached by the main process
            codes = load_codes(source, streaming=data_args.streaming)
            if data_args.max_train_samples is not None:
                codes = (
                    codes.take(data_args.max_train_samples)
                    if data_args.streaming
                    else codes.select(range(min(data_args.max_train_samples, len(codes))))
                )
            if data_args.streaming:
                codes = split_stream(
                    codes,
                    seed=args.seed,
                    buffer_size=data_args.streaming_shuffle_buffer_size,
                    process_index=accelerator.process_index,
                    num_processes=accelerator.num_processes,
                )
            samples = codes_to_samples(
                codes,
                processor,
                layout=stage_name,
                num_key_frames=data_args.num_key_frames,
                interpolation_frames=data_args.interpolation_frames,
                label_key_frames=data_args.label_key_frames,
            )
            if not data_args.streaming:
                samples = drop_prompts(
                    samples, data_args.proportion_empty_prompts, args.seed, processor.layout.text_token_range
                )
    except (OSError, ValueError) as error:
        raise TrainingSetupError(f"--codes_dataset {source}: {error}") from None
    logger.info(
        f"--codes_dataset {source}: {info.num_rows} clip(s) of {info.num_frames} frames in {info.num_shards} "
        f"shard(s), encoded from {info.source}" + (", streamed" if data_args.streaming else "")
    )
    return samples


def cache_on_disk(dataset: datasets.Dataset) -> datasets.Dataset:
    """
    Write an in-memory data set (Shapes, video folders) to an Arrow file in the 🤗 Datasets cache, keyed on its
    fingerprint, so that the `Dataset.map`s after it (frames, tokenization) are cached too and a second run or
    a resumed one loads their results instead of recomputing them.
    """
    if dataset.cache_files or not datasets.is_caching_enabled():
        return dataset
    folder = Path(datasets.config.HF_DATASETS_CACHE) / "flashvideo"
    folder.mkdir(parents=True, exist_ok=True)
    # Written unformatted: the map inside flatten_indices would apply a format's dtype (uint8 for `video`) to
    # every column, truncating e.g. Shapes' float `speed`. The format is put back on the result.
    on_disk = dataset.with_format(None).flatten_indices(
        cache_file_name=str(folder / f"videos-{dataset._fingerprint}.arrow"),
        new_fingerprint=f"{dataset._fingerprint}-on-disk",
    )
    return on_disk.with_format(**dataset.format)


def standardize_videos(
    dataset: datasets.Dataset,
    video_column: str,
    text_column: str,
    num_frames: int,
    stride: int,
    image_size: int,
) -> datasets.Dataset:
    """
    Map any video column (uint8 arrays `[T, H, W, 3]`, lists of PIL images, or decoders of the
    `datasets.Video` feature) to `video`: uint8 `[num_frames, image_size, image_size, 3]` (frames `0, stride,
    ...`, resized and centre-cropped) and `text`. Videos with fewer frames are dropped.
    """
    feature = dataset.features[video_column]
    if isinstance(feature, (datasets.Array2D, datasets.Array3D, datasets.Array4D)):
        dataset = dataset.with_format(
            "numpy", columns=[video_column], output_all_columns=True, dtype=np.uint8
        )
    features = datasets.Features(
        {
            "video": datasets.Array4D(shape=(num_frames, image_size, image_size, 3), dtype="uint8"),
            "text": datasets.Value("string"),
        }
    )

    def convert(batch: dict[str, list]) -> dict[str, list]:
        out: dict[str, list] = {"video": [], "text": []}
        for video, text in zip(batch[video_column], batch[text_column]):
            frames = _video_frames(video, num_frames, stride)
            if frames is None:
                continue
            out["video"].append(resize_and_center_crop(frames, image_size))
            out["text"].append(str(text))
        return out

    converted = dataset.map(
        convert,
        batched=True,
        batch_size=16,
        remove_columns=dataset.column_names,
        features=features,
        new_fingerprint=datasets.fingerprint.Hasher.hash(
            [
                "flashvideo.standardize_videos/1",
                dataset._fingerprint,
                video_column,
                text_column,
                num_frames,
                stride,
                image_size,
            ]
        ),
        desc=f"Preparing videos ({num_frames} frames, {image_size} px)",
    )
    if len(converted) < len(dataset):
        logger.warning(
            f"{len(dataset) - len(converted)} of {len(dataset)} videos have fewer than {num_frames} frames "
            f"(stride {stride}) and were skipped"
        )
    converted.set_format("numpy", columns=["video"], output_all_columns=True, dtype=np.uint8)
    return converted


def _video_frames(video: Any, num_frames: int, stride: int) -> np.ndarray | None:
    """Frames `0, stride, …, (num_frames - 1) * stride` as uint8 `[num_frames, H, W, 3]` (None: too short)."""
    indices = list(range(0, num_frames * stride, stride))
    if hasattr(video, "get_frames_at"):  # a torchcodec VideoDecoder (the datasets.Video feature)
        if len(video) <= indices[-1]:
            return None
        return video.get_frames_at(indices=indices).data.permute(0, 2, 3, 1).cpu().numpy()
    if isinstance(video, (list, tuple)) and video and hasattr(video[0], "convert"):  # PIL images
        if len(video) <= indices[-1]:
            return None
        return np.stack([np.asarray(video[i].convert("RGB")) for i in indices])
    frames = np.asarray(video)
    if frames.ndim == 3:  # grayscale [T, H, W]
        frames = np.repeat(frames[..., None], 3, axis=-1)
    if frames.ndim == 4 and frames.shape[-1] != 3 and frames.shape[1] == 3:  # channels first [T, 3, H, W]
        frames = frames.transpose(0, 2, 3, 1)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise TrainingSetupError(f"Videos must be [T, H, W, 3] frames; got an array of shape {frames.shape}.")
    if frames.dtype != np.uint8:
        if not np.issubdtype(frames.dtype, np.integer) or (
            frames.size and (frames.min() < 0 or frames.max() > 255)
        ):
            raise TrainingSetupError(f"Video pixels must be integers in [0, 255]; got dtype {frames.dtype}.")
        frames = frames.astype(np.uint8)
    if len(frames) <= indices[-1]:
        return None
    return frames[indices]


def frames_dataset(videos: datasets.Dataset) -> datasets.Dataset:
    """Every frame of every video as its own row `frame` (uint8 `[H, W, 3]`): the VQ's training set."""
    size = videos.features["video"].shape[1:]

    def explode(batch: dict[str, list]) -> dict[str, list]:
        return {"frame": [frame for video in batch["video"] for frame in np.asarray(video, dtype=np.uint8)]}

    frames = (
        videos.select_columns(["video"])
        .with_format("numpy", dtype=np.uint8)
        .map(
            explode,
            batched=True,
            batch_size=16,
            remove_columns=["video"],
            features=datasets.Features({"frame": datasets.Array3D(shape=size, dtype="uint8")}),
            new_fingerprint=datasets.fingerprint.Hasher.hash(
                ["flashvideo.frames_dataset/1", videos._fingerprint]
            ),
            desc="Splitting videos into frames",
        )
    )
    return frames.with_format("numpy", dtype=np.uint8)


def collate_frames(rows: list[dict[str, np.ndarray]]) -> torch.Tensor:
    """Rows of uint8 frames → the VQ model's input, float `[N, 3, H, W]` in [-1, 1]."""
    return frames_to_model_input(torch.from_numpy(np.stack([row["frame"] for row in rows])))


@torch.no_grad()
def evaluate_reconstruction(
    vq: VQModel, frames: datasets.Dataset, num_frames: int, device: torch.device
) -> dict[str, float]:
    """Encode → codes → decode the first `num_frames` frames: reconstruction PSNR and codebook usage."""
    subset = np.stack(frames[: min(num_frames, len(frames))]["frame"]).astype(np.uint8)
    vq.to(device)
    codes = frames_to_codes(vq, subset, batch_size=64)
    decoded = codes_to_frames(vq, codes, batch_size=64)
    vq.to("cpu")
    original = torch.from_numpy(subset).float().div(255)
    reconstructed = torch.from_numpy(decoded).float().div(255)
    return {
        "eval/psnr": psnr(original.permute(0, 3, 1, 2), reconstructed.permute(0, 3, 1, 2)).mean().item(),
        "eval/num_frames": len(subset),
        "eval/codebook_usage": codes.unique().numel() / vq.config.num_vq_embeddings,
    }


# ================================================================================== logging and entry point


def _tracker_config(*arguments: object) -> dict[str, Any]:
    """Hyperparameters for the trackers: TensorBoard's hparams take only numbers, strings and booleans."""
    config = {}
    for name, value in arguments_to_dict(*arguments).items():
        config[name] = value if isinstance(value, (int, float, str, bool)) else str(value)
    return config


def _set_library_verbosity(accelerator: Accelerator) -> None:
    if accelerator.is_local_main_process:
        datasets.utils.logging.set_verbosity_warning()
        transformers.utils.logging.set_verbosity_warning()
    else:  # one process speaks for all
        datasets.utils.logging.set_verbosity_error()
        datasets.utils.logging.disable_progress_bar()
        transformers.utils.logging.set_verbosity_error()
        logging.getLogger("flashvideo").setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    """
    Entry point of `python -m flashvideo.training`, `accelerate launch -m flashvideo.training` (and
    `flashvideo train`). Returns the exit status: 0 on success, 2 on bad arguments, 1 on a setup problem (e.g.
    no processor yet).
    """
    prog = build_parser().prog
    try:
        model_args, data_args, training_args = parse_args(argv)
    except SystemExit as exit_:  # argparse already printed the usage and the error (or the help)
        return exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 2)
    except ValueError as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 2
    logging.basicConfig(
        format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", datefmt="%H:%M:%S", level=logging.INFO
    )
    try:
        train(model_args, data_args, training_args)
    except TrainingSetupError as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 1
    return 0


__all__ = [
    "Stage",
    "TrainOutput",
    "TrainingProgress",
    "TrainingSetupError",
    "checkpoint_dirs",
    "checkpoint_problem",
    "load_videos",
    "main",
    "resolve_checkpoint",
    "train",
]
