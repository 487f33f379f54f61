"""
What differs between the training stages, as one `Stage` each: its data set, its model, its loss and what it
saves at the end. `train()` (flashvideo/training/train.py) runs any of them the same way.

- `setup_tokenizer_stage`: the caption tokenizer (built from the captions) and the VQ image tokenizer, trained
  on single frames; saves the processor.
- `setup_lm_stage`: the key-frame or the interpolation model, next-token loss on image codes; samples are cut
  from videos (tokenized once, cached) or from a codes data set (`--codes_dataset`, optionally streamed).

And the loading they share: processors, image tokenizers and models from a checkpoint, with errors that say
which argument to fix.

Example:
    >>> from accelerate import Accelerator
    >>> from flashvideo.training import parse_args
    >>> from flashvideo.training.stages import setup_lm_stage
    >>> model_args, data_args, args = parse_args(["--stage", "keyframe", "--output_dir", "ckpt"])
    >>> stage = setup_lm_stage(model_args, data_args, args, Accelerator())  # doctest: +SKIP
    >>> stage.compute_loss(stage.model, stage.collate_fn([stage.train_dataset[0]]))  # doctest: +SKIP
    (tensor(6.2383, grad_fn=...), {})
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import set_seed
from diffusers import VQModel

from ..configuration_flashvideo import FlashVideoConfig
from ..data.codes import codes_info, codes_to_samples, load_codes
from ..data.collate import pad_batch
from ..data.splits import held_out_split
from ..data.tokenized import drop_prompts, tokenize_video_dataset
from ..data.video_frames import VideoDataError, collate_frames, frames_dataset, load_videos
from ..evaluation.metrics import psnr
from ..image_tokenizer import (
    IMAGE_TOKENIZER_SUBFOLDER,
    build_vq_model,
    codes_to_frames,
    frames_to_codes,
    load_image_tokenizer,
)
from ..modeling_flashvideo import FlashVideoForCausalLM
from ..pipeline_flashvideo import INTERPOLATION_SUBFOLDER, has_interpolation_model
from ..processing_flashvideo import PROCESSOR_CONFIG_NAME, FlashVideoProcessor, SequenceLayout
from ..text_tokenizer import build_text_tokenizer
from . import sharding
from .arguments import DEFAULT_CHECKPOINT, DataArguments, FlashVideoTrainingArguments, ModelArguments
from .changing_codes import changing_code_weights, weighted_next_token_loss
from .codebook import CodebookRestarter
from .errors import TrainingSetupError
from .streaming import split_stream

logger = get_logger(__name__)

# Dead VQ codes are restarted during the first 3/4 of the steps only, so the decoder learns the last new codes.
RESTART_SHARE_OF_STEPS = 0.75


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
    # Samples of held-out clips whose `eval_loss` is reported as eval/loss (training.held_out); None: none.
    eval_dataset: Any = None
    # The held-out loss, `(model, batch) -> (loss, extras)`, when it is not `compute_loss` (a weighted training loss).
    eval_loss: Callable[[torch.nn.Module, Any], tuple[torch.Tensor, dict[str, torch.Tensor]]] | None = None



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
        videos = training_videos(data_args, layout.image_size)
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
                mid_block_attention=model_args.vq_mid_block_attention,
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
    if model_args.interpolation_order is not None and stage_name != "interpolation":
        raise TrainingSetupError(
            f"--interpolation_order is for --stage interpolation (the order of an interpolation sample's frames); "
            f"got it with --stage {stage_name}."
        )
    # The interpolation samples' frame order is the model's (saved in its config, read by the pipeline).
    interpolation_order = model_args.config_overrides().get("interpolation_order") or (
        lm_config(source, stage_name).interpolation_order if source is not None else "forward"
    )

    # ---- data: token sequences from videos (a cached, fingerprinted Dataset.map), or from codes encoded once;
    # the held-out clips' samples are cut the same way but never trained on (nor lose their captions)
    if data_args.codes_dataset is not None:
        tokenized, held_out = samples_from_codes(
            data_args, processor, vq, stage_name, args, accelerator, interpolation_order
        )
    else:
        with accelerator.main_process_first():
            videos = training_videos(data_args, layout.image_size)
            videos, held_out_videos = held_out_split(
                videos, data_args.validation_split_percentage, data_args.max_eval_samples, data_args.data_seed
            )
            vq.to(accelerator.device)  # encode frames on the accelerator
            tokenized, held_out = (
                None if part is None else _tokenize(part, processor, vq, stage_name, data_args, interpolation_order)
                for part in (videos, held_out_videos)
            )
            vq.to("cpu")
            tokenized = drop_prompts(tokenized, data_args.proportion_empty_prompts, args.seed, layout.text_token_range)
    if not data_args.streaming:
        lengths = {len(ids) for ids in tokenized[: min(len(tokenized), 64)]["input_ids"]}
        logger.info(
            f"{len(tokenized)} {stage_name} samples of {sorted(lengths)} tokens (first 64 samples); "
            + (
                f"{len(held_out)} held out for eval/loss"
                if held_out is not None
                else f"none held out (--validation_split_percentage {data_args.validation_split_percentage:g})"
            )
        )
    else:
        logger.info("--streaming: no held-out clips (a stream has no length to take a share of); no eval/loss")

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

    def plain_loss(lm, batch):
        output = lm(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            labels=batch["labels"],
            forward_mode=forward_mode,
            use_cache=False,
        )
        return output.loss, {}

    def changing_code_loss(lm, batch):
        logits = lm(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], forward_mode=forward_mode,
            use_cache=False,
        ).logits  # fmt: skip
        weights = changing_code_weights(batch["labels"], layout.tokens_per_frame, args.changing_code_loss_weight)
        return weighted_next_token_loss(logits, batch["labels"], weights), {}

    compute_loss = plain_loss if args.changing_code_loss_weight == 1 else changing_code_loss

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
        eval_dataset=held_out,
        eval_loss=plain_loss,
    )


def _tokenize(
    videos: datasets.Dataset,
    processor: FlashVideoProcessor,
    vq: VQModel,
    stage_name: str,
    data_args: DataArguments,
    interpolation_order: str = "forward",
) -> datasets.Dataset:
    """Key-frame or interpolation samples cut from `videos` (`tokenize_video_dataset`, cached)."""
    try:
        return tokenize_video_dataset(
            videos,
            processor,
            image_tokenizer=vq,
            sample_kind=stage_name,
            num_key_frames=data_args.num_key_frames,
            interpolation_frames=data_args.interpolation_frames,
            batch_size=data_args.tokenize_batch_size,
            num_proc=data_args.preprocessing_num_workers,
            label_key_frames=data_args.label_key_frames,
            interpolation_order=interpolation_order,
        )
    except ValueError as error:
        raise TrainingSetupError(f"Cannot cut {stage_name} samples from the data set: {error}") from None


# ================================================================================= models and processors


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
    """The FlashVideo processor in `source` (`argument` names the flag in errors)."""
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
    """A checkpoint's key-frame model, or for the interpolation stage its `interpolation/` model if any, in float32;
    `config_overrides` (`ModelArguments.config_overrides()`) replace config values it was trained with.

    Float32 whatever the checkpoint holds: these are the weights the optimiser updates (mixed precision is
    accelerate's `--mixed_precision`), and a float16 export (`scripts/export_checkpoint_fp16.py`) loaded as it is
    would train in float16 — on a CPU about 12× slower per step, and with updates rounded away."""
    config = lm_config(source, stage)
    if config_overrides:
        config = with_config_overrides(config, config_overrides)
    try:
        return FlashVideoForCausalLM.from_pretrained(
            source, config=config, dtype=torch.float32, **_lm_subfolder(source, stage)
        )
    except OSError as error:
        raise TrainingSetupError(f"Cannot load a FlashVideo model from {source}: {error}") from None


def lm_config(source: str, stage: str) -> FlashVideoConfig:
    """The config of the model `load_lm` starts from: the interpolation stage's is `interpolation/`'s if any."""
    try:
        return FlashVideoConfig.from_pretrained(source, **_lm_subfolder(source, stage))
    except OSError as error:
        raise TrainingSetupError(f"Cannot load a FlashVideo model from {source}: {error}") from None


def _lm_subfolder(source: str, stage: str) -> dict[str, str]:
    if stage != "interpolation":
        return {}
    if has_interpolation_model(source):
        return {"subfolder": INTERPOLATION_SUBFOLDER}
    logger.warning_once(f"{source} has no {INTERPOLATION_SUBFOLDER}/ model: starting from its key-frame model")
    return {}


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
    if "interpolation_order" in overrides:
        logger.warning(f"Fine-tuning with interpolation_order={config.interpolation_order!r}")
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

def training_videos(
    data_args: DataArguments, image_size: int, shard: tuple[int, int] | None = None, cache: bool = True
) -> datasets.Dataset:
    """`flashvideo.data.video_frames.load_videos`, its complaints about the videos as `TrainingSetupError`s."""
    try:
        return load_videos(data_args, image_size, shard=shard, cache=cache)
    except VideoDataError as error:
        raise TrainingSetupError(str(error)) from None


def samples_from_codes(
    data_args: DataArguments,
    processor: FlashVideoProcessor,
    vq: VQModel,
    stage_name: str,
    args: FlashVideoTrainingArguments,
    accelerator: Accelerator,
    interpolation_order: str = "forward",
) -> tuple[datasets.Dataset | datasets.IterableDataset, datasets.Dataset | None]:
    """
    `--codes_dataset`: key-frame or interpolation samples cut from videos encoded once (`python -m
    flashvideo.training.encode`), after checking that this run's image tokenizer made the codes, as `(training
    samples, held-out samples or None)`. With `--streaming`, an `IterableDataset` of this process's part of the
    stream (shuffled with `--seed`), and nothing held out.
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
                held_out_codes = None
            else:
                codes, held_out_codes = held_out_split(
                    codes, data_args.validation_split_percentage, data_args.max_eval_samples, data_args.data_seed
                )
            samples, held_out = (
                None
                if part is None
                else codes_to_samples(
                    part,
                    processor,
                    sample_kind=stage_name,
                    num_key_frames=data_args.num_key_frames,
                    interpolation_frames=data_args.interpolation_frames,
                    label_key_frames=data_args.label_key_frames,
                    interpolation_order=interpolation_order,
                )
                for part in (codes, held_out_codes)
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
    return samples, held_out



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



__all__ = [
    "RESTART_SHARE_OF_STEPS",
    "Stage",
    "check_layout_overrides",
    "evaluate_reconstruction",
    "load_lm",
    "load_processor",
    "load_vq",
    "resolve_model_source",
    "samples_from_codes",
    "setup_lm_stage",
    "setup_tokenizer_stage",
    "training_videos",
    "with_config_overrides",
]
