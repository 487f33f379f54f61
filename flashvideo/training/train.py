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

Reading order: `train()` is the whole loop, top to bottom. The stage-specific pieces (data set, model, loss,
what is saved at the end) come from `training.stages`, checkpointing from `training.checkpointing`, the videos
from `flashvideo.data.video_frames`.

Resuming (`--resume_from_checkpoint latest|PATH`) restores what `accelerator.save_state` wrote (model,
optimizer, LR scheduler, every process's RNG states, the gradient-accumulation counter) plus
`training_state.json` (optimizer step, epoch, and micro-batches already consumed in that epoch). The data
order is a function of `--seed` and the epoch: the DataLoader is prepared with accelerate's seedable sampler
(`DataLoaderConfiguration(use_seedable_sampler=True, data_seed=seed)`), which reshuffles with seed `seed +
epoch`; on resume the loop sets the epoch back and skips the batches already seen with
`accelerator.skip_first_batches`. A resumed run therefore sees exactly the batches the uninterrupted run would
have seen, and ends with the same weights.

Example:
    >>> from flashvideo.training import parse_args, train
    >>> output = train(*parse_args(["--stage", "keyframe", "--output_dir", "ckpt", "--max_steps", "10"]))  # doctest: +SKIP
    >>> output.global_step, sorted(output.metrics)  # doctest: +SKIP
    (10, ['train/global_step'])
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import torch
import transformers
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration, set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import get_scheduler

from ..data.video_frames import load_videos
from ..processing_flashvideo import FlashVideoProcessor
from . import sharding
from .arguments import (
    DataArguments,
    FlashVideoTrainingArguments,
    ModelArguments,
    arguments_to_dict,
    build_parser,
    parse_args,
    run_identity,
)
from .checkpointing import (
    CHECKPOINTS_FOLDER,
    TRAINING_STATE_NAME,
    TrainingProgress,
    check_output_dir,
    checkpoint_dirs,
    checkpoint_problem,
    load_checkpoint,
    remove_partial_checkpoints,
    resolve_checkpoint,
    save_checkpoint,
)
from .errors import TrainingSetupError, run_command
from .held_out import held_out_loss
from .stages import Stage, setup_lm_stage, setup_tokenizer_stage
from .streaming import StreamingBatches

logger = get_logger(__name__)

LOGGING_FOLDER = "runs"


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
        remove_partial_checkpoints(stage_checkpoints)
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
        progress = load_checkpoint(accelerator, checkpoint, model_args.stage, args, stage.step_hook, stream)
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

    eval_steps = args.eval_steps or args.save_steps

    def evaluate() -> dict[str, float]:
        """The loss on the held-out clips' samples now (training.held_out)."""
        loss = held_out_loss(
            accelerator, model, stage.eval_dataset, stage.eval_loss or stage.compute_loss, stage.collate_fn,
            args.per_device_train_batch_size,
        )  # fmt: skip
        logger.info(
            f"step {progress.global_step}: eval loss={loss:.5g} on {len(stage.eval_dataset)} held-out samples"
        )
        return {"eval/loss": loss, "eval/num_samples": len(stage.eval_dataset)}

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
            # The last step's evaluation is the final one, below, logged with the results.
            if stage.eval_dataset is not None and progress.global_step % eval_steps == 0:
                if progress.global_step < args.max_steps:
                    accelerator.log({"eval/loss": evaluate()["eval/loss"]}, step=progress.global_step)
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
    eval_metrics = evaluate() if stage.eval_dataset is not None else {}
    metrics = stage.finish(accelerator, model)
    metrics = {"train/global_step": progress.global_step, **eval_metrics, **metrics}
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
    return run_command(build_parser().prog, lambda: parse_args(argv), lambda arguments: train(*arguments))


# `flashvideo.training.train` keeps the public names it had before the split; they live where their job is.
__all__ = [
    "Stage",
    "TRAINING_STATE_NAME",
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
