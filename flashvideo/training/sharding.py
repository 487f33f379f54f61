"""
Sharded training (FSDP) for `flashvideo.training`, on GPUs and on CPUs alike, with safetensors checkpoints.

`accelerate launch --use_fsdp --fsdp_version 2 ...` builds accelerate's `FullyShardedDataParallelPlugin` from the
launcher's flags (FSDP_* environment variables). accelerate 1.15 then switches to FSDP only on accelerator-like
device types: on CPU processes (`ACCELERATE_USE_CPU=true`, gloo) its state stays `DistributedType.MULTI_CPU` and
`prepare` wraps the model in DDP, silently (see `accelerate/state.py`, the `elif self.distributed_type in
[MULTI_GPU, ...]` branch that sets `DistributedType.FSDP`). PyTorch's FSDP2 (`fully_shard`) itself runs on CPU
over gloo, so `enable_fsdp` promotes the state to FSDP there, and accelerate's own FSDP2 path (`fully_shard` of
every `FlashVideoDecoderLayer` and of the root, sharded optimizer states, full-state-dict gathering) does the rest.

Checkpoints: `save_state` / `load_state` wrap `accelerator.save_state` / `load_state`. Under FSDP the model
weights are gathered into one full state dict and written as `model.safetensors` (the file a DDP checkpoint has;
accelerate itself would write `pytorch_model_fsdp.bin` or a torch.distributed.checkpoint folder), the optimizer
through accelerate's `save_fsdp_optimizer` (`optimizer.bin`, full state dict, as with DDP), and the rest
(scheduler, RNG states, data-loader states) through `accelerator.save_state`. Resuming loads the weights back into
the sharded model (`set_model_state_dict`, broadcast from rank 0), so a checkpoint does not depend on how the
model was sharded.

Example (two CPU processes; on GPUs leave out `ACCELERATE_USE_CPU`):

```bash
ACCELERATE_USE_CPU=true accelerate launch --use_fsdp --fsdp_version 2 --num_processes 2 \\
    --fsdp_auto_wrap_policy TRANSFORMER_BASED_WRAP --fsdp_transformer_layer_cls_to_wrap FlashVideoDecoderLayer \\
    --fsdp_state_dict_type FULL_STATE_DICT -m flashvideo.training --stage keyframe --output_dir ckpt ...
```
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.state import PartialState
from accelerate.utils import (
    DistributedType,
    FullyShardedDataParallelPlugin,
    load_fsdp_optimizer,
    save_fsdp_optimizer,
)
from safetensors.torch import load_file
from transformers.utils import logging

logger = logging.get_logger(__name__)

MODEL_WEIGHTS_NAME = "model.safetensors"  # the name accelerate gives a DDP checkpoint's weights, kept under FSDP


class ShardingError(ValueError):
    """A sharding request that cannot be honoured (e.g. FSDP for the tokenizer stage)."""


def fsdp_requested() -> bool:
    """Whether the launcher asked for FSDP (`accelerate launch --use_fsdp` sets `ACCELERATE_USE_FSDP=true`)."""
    return os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"


def is_fsdp(accelerator: Accelerator) -> bool:
    """Whether `accelerator` shards the model with FSDP."""
    return accelerator.distributed_type == DistributedType.FSDP


def enable_fsdp(accelerator: Accelerator, stage: str) -> None:
    """
    Make `accelerate launch --use_fsdp` shard the model on CPU processes too (see the module docstring), and
    refuse the stages that cannot be sharded. Call it right after building the `Accelerator`, before `prepare`.

    Raises:
        ShardingError: FSDP was asked for the tokenizer stage, whose codebook restarts
            (`flashvideo.training.codebook`) write whole codebook rows, which FSDP holds in shards; or FSDP 1 on
            CPU processes (only FSDP 2 is promoted there: torch's FSDP 1 refuses the `cpu:0` device accelerate
            passes it, "Inconsistent compute device and `device_id` on rank 0: cpu vs cpu:0").
    """
    if not fsdp_requested():
        return
    if stage == "tokenizer":
        raise ShardingError(
            "--stage tokenizer does not run under FSDP (`accelerate launch --use_fsdp`): its dead-code restarts "
            "rewrite whole codebook rows, which FSDP shards. The VQ is small; train it data parallel "
            "(`accelerate launch --multi_gpu ...`) and shard the keyframe / interpolation stages."
        )
    if accelerator.distributed_type == DistributedType.FSDP:
        return
    if accelerator.distributed_type != DistributedType.MULTI_CPU:
        logger.warning(
            f"FSDP was requested but accelerate runs {accelerator.distributed_type} on "
            f"{accelerator.num_processes} process(es); training without sharding."
        )
        return
    # On CPU accelerate drops the plugin it built from the launcher's FSDP_* variables; build it again.
    plugin = FullyShardedDataParallelPlugin()
    if accelerator.mixed_precision != "no":
        plugin.set_mixed_precision(accelerator.mixed_precision)
    if plugin.fsdp_version != 2:
        raise ShardingError(
            "FSDP on CPU processes needs FSDP 2: add --fsdp_version 2 to `accelerate launch --use_fsdp` (got "
            f"fsdp_version {plugin.fsdp_version}; torch's FSDP 1 refuses the CPU device accelerate gives it, "
            "'Inconsistent compute device and `device_id`')."
        )
    # accelerate keeps its state in two process-wide dicts; an AcceleratorState built later copies the partial
    # state over its own, so both say FSDP.
    accelerator.state.fsdp_plugin = plugin
    accelerator.state.distributed_type = DistributedType.FSDP
    PartialState._shared_state["distributed_type"] = DistributedType.FSDP
    logger.info(f"FSDP 2 on {accelerator.num_processes} CPU processes (gloo): the model is sharded, not replicated")


def check_process_count(accelerator: Accelerator | PartialState) -> None:
    """
    Refuse a launch whose processes do not form one group: `accelerate launch --num_processes 2` on a machine
    without a GPU and without `ACCELERATE_USE_CPU=true` starts 2 processes that each train alone (and write the
    same files).
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world_size > 1 and accelerator.num_processes == 1:
        raise ShardingError(
            f"The launcher started {world_size} processes, but each of them trains alone "
            f"({accelerator.distributed_type}): on CPUs set ACCELERATE_USE_CPU=true (gloo) or launch with "
            "--multi_gpu on GPUs."
        )


def _model_and_optimizer(accelerator: Accelerator) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    if len(accelerator._models) != 1 or len(accelerator._optimizers) != 1:
        raise ShardingError(
            f"FSDP checkpoints expect one prepared model and one optimizer, got {len(accelerator._models)} and "
            f"{len(accelerator._optimizers)}."
        )
    return accelerator._models[0], accelerator._optimizers[0]


class _WithoutModelAndOptimizer:
    """accelerate's save_state/load_state for everything but the model and optimizer (handled by the caller)."""

    def __init__(self, accelerator: Accelerator) -> None:
        self.accelerator = accelerator

    def __enter__(self) -> None:
        self.saved = self.accelerator._models, self.accelerator._optimizers
        self.accelerator._models, self.accelerator._optimizers = [], []

    def __exit__(self, *exc: object) -> None:
        self.accelerator._models, self.accelerator._optimizers = self.saved


def save_state(accelerator: Accelerator, folder: str | os.PathLike) -> None:
    """
    `accelerator.save_state(folder)`; under FSDP with the full model weights as `model.safetensors`. Every
    process must call it (the weights are gathered).

    Example:
        >>> save_state(accelerator, "ckpt/checkpoints/keyframe/checkpoint-100")  # doctest: +SKIP
    """
    if not is_fsdp(accelerator):
        accelerator.save_state(str(folder))
        return
    from accelerate.utils import save
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    model, optimizer = _model_and_optimizer(accelerator)
    folder = Path(folder)
    full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if accelerator.is_main_process:
        # accelerate's `save` drops tied duplicates, as accelerator.save_state does for an unsharded model.
        save({k: v.contiguous() for k, v in full.items()}, folder / MODEL_WEIGHTS_NAME, safe_serialization=True)
    del full
    save_fsdp_optimizer(accelerator.state.fsdp_plugin, accelerator, optimizer, model, str(folder))
    with _WithoutModelAndOptimizer(accelerator):
        accelerator.save_state(str(folder))


def load_state(accelerator: Accelerator, folder: str | os.PathLike) -> None:
    """`accelerator.load_state(folder)` for a folder written by `save_state`, sharded or not."""
    if not is_fsdp(accelerator):
        accelerator.load_state(str(folder))
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    model, optimizer = _model_and_optimizer(accelerator)
    folder = Path(folder)
    weights = load_file(folder / MODEL_WEIGHTS_NAME) if accelerator.is_main_process else {}
    tied = bool(getattr(getattr(model, "config", None), "tie_word_embeddings", False))
    set_model_state_dict(
        model,
        weights,
        options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True, strict=not tied),
    )
    del weights
    load_fsdp_optimizer(accelerator.state.fsdp_plugin, accelerator, optimizer, model, str(folder))
    with _WithoutModelAndOptimizer(accelerator):
        accelerator.load_state(str(folder))


def unsharded_model(model: torch.nn.Module, state_dict: dict[str, torch.Tensor] | None) -> torch.nn.Module:
    """
    A model to call `save_pretrained` on. FSDP 2 turns the model's class into a subclass of its own
    (`FSDPFlashVideoForCausalLM`, defined in torch), whose custom-code export would copy torch's files into the
    checkpoint; this returns a plain model of the original class holding `state_dict` (the full weights, from
    `accelerator.get_state_dict`). Any other model (or `state_dict=None`: a process that does not save) is
    returned as it is.

    Example:
        >>> full = accelerator.get_state_dict(prepared)  # doctest: +SKIP
        >>> unsharded_model(accelerator.unwrap_model(prepared), full).save_pretrained("ckpt")  # doctest: +SKIP
    """
    from torch.distributed.fsdp import FSDPModule

    if not isinstance(model, FSDPModule) or state_dict is None:
        return model
    original = next(cls for cls in type(model).__mro__ if not issubclass(cls, FSDPModule))
    plain = original(model.config)
    plain.load_state_dict(state_dict, strict=not getattr(model.config, "tie_word_embeddings", False))
    return plain


__all__ = [
    "ShardingError",
    "check_process_count",
    "enable_fsdp",
    "fsdp_requested",
    "is_fsdp",
    "load_state",
    "save_state",
    "unsharded_model",
]
