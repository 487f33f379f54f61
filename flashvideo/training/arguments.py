"""Command-line / YAML arguments of `python -m flashvideo.training` (also under `accelerate launch`).

Three dataclasses parsed by `transformers.HfArgumentParser`:

- [`ModelArguments`]: what to train — the stage, where to start from (a checkpoint or a fresh model with the
  given sizes), the vocabulary layout and image-tokenizer shape for the tokenizer stage;
- [`DataArguments`]: where the videos come from (the procedural Shapes set, a video folder, or a 🤗 Hub data
  set) and how samples are cut from them (key frames, interpolation windows);
- [`FlashVideoTrainingArguments`]: the optimisation loop. Names follow `transformers.TrainingArguments`
  wherever the meaning is the same (`output_dir`, `max_steps`, `per_device_train_batch_size`, `learning_rate`,
  ...).

Every argument is checked when the dataclass is built (from the command line or a YAML file alike); a bad
value raises a `ValueError` that names the argument.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, fields
from typing import Literal

from transformers import HfArgumentParser

from ..configuration_flashvideo import is_decay_exponent
from ..data.tokenized import is_proportion
from ..data.shapes import check_speed_range
from ..data.video_folders import FOLDER_FORMATS
from ..validation import check_choice, check_int, check_number

STAGES = ("tokenizer", "keyframe", "interpolation")
# The forms of `modeling_flashvideo.FORWARD_MODES` that training may use: whole sequences at once, with labels
# ("recurrent" is for decoding, "auto" picks by length).
TRAINING_FORWARD_MODES = ("chunkwise", "parallel")
MIXED_PRECISION = ("no", "fp16", "bf16")
OPTIMIZERS = ("adamw_torch", "sgd")
# The transformers schedulers (`transformers.get_scheduler` names) that need nothing beyond warm-up and
# length.
LR_SCHEDULERS = (
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
    "constant",
    "constant_with_warmup",
    "inverse_sqrt",
)
RESUME_LATEST = "latest"
DEFAULT_CHECKPOINT = "default"


def _fail(name: str, requirement: str, value: object) -> None:
    raise ValueError(f"--{name} {requirement}, got {value!r}.")


# The dataclasses' fields are checked by name, as the command line spells them (`--name`), with the package's one
# set of validators (flashvideo/validation.py).
def _check_int(obj: object, name: str, minimum: int, optional: bool = False) -> None:
    check_int(f"--{name}", getattr(obj, name), minimum, optional=optional)


def _check_float(obj: object, name: str, minimum: float, strict: bool = False) -> None:
    check_number(f"--{name}", getattr(obj, name), minimum, exclusive_minimum=strict)


def _check_choice(obj: object, name: str, choices: tuple[str, ...]) -> None:
    check_choice(f"--{name}", getattr(obj, name), choices)


@dataclass
class ModelArguments:
    """What is trained, and from where."""

    stage: Literal["tokenizer", "keyframe", "interpolation"] = field(
        default="keyframe",
        metadata={
            "help": "Training stage: 'tokenizer' (caption tokenizer + VQ image tokenizer, saved as the "
            "processor), 'keyframe' (the key-frame model, saved at the top of --output_dir) or "
            "'interpolation' (the interpolation model, saved under --output_dir/interpolation)."
        },
    )
    model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "Fine-tune from this checkpoint directory or Hub repo id ('default': the shipped "
            "default checkpoint). The interpolation stage reads its `interpolation/` subfolder when there "
            "is one; the tokenizer stage continues training the checkpoint's image tokenizer. Unset: a "
            "fresh model."
        },
    )
    processor_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "Key-frame / interpolation stages: where the processor (text + image tokenizer) is "
            "('default': the shipped default checkpoint's). Default: --model_name_or_path when fine-tuning, "
            "else --output_dir (where the tokenizer stage saved it)."
        },
    )
    forward_mode: Literal["chunkwise", "parallel"] = field(
        default="chunkwise",
        metadata={
            "help": "Retention form used in training: 'chunkwise' (blocks of --chunk_size) or 'parallel'."
        },
    )

    # Architecture of a fresh model (None: the FlashVideoConfig default).
    hidden_size: int | None = field(default=None, metadata={"help": "Fresh model: hidden size d."})
    num_hidden_layers: int | None = field(
        default=None, metadata={"help": "Fresh model: number of RetNet blocks."}
    )
    num_attention_heads: int | None = field(default=None, metadata={"help": "Fresh model: retention heads."})
    intermediate_size: int | None = field(default=None, metadata={"help": "Fresh model: GLU width."})
    chunk_size: int | None = field(
        default=None, metadata={"help": "Fresh model: chunk length of the chunkwise form."}
    )
    decay_exponents: list[float] | None = field(
        default=None,
        metadata={
            "help": "Retention decay γ_h = 1 − 2^(−e_h), one e_h per head (default: RetNet's 5 + h). Unlike the "
            "sizes above it may also be given when fine-tuning: it changes no weight shape, only how far back "
            "each head sees, and the model is then trained with (and saved with) the new decay.",
            "nargs": "+",
        },
    )
    code_position_embeddings: bool = field(
        default=False,
        metadata={
            "help": "Add a learned embedding of each token's place in its frame's code grid (FlashVideoConfig."
            "code_position_embeddings). Unset: a fresh model has none and a fine-tuned one keeps what it has. May "
            "be given when fine-tuning: the new table starts at zero, so training starts from the checkpoint's "
            "outputs."
        },
    )
    interpolation_order: Literal["forward", "outside_in"] | None = field(
        default=None,
        metadata={
            "help": "Interpolation stage: the order of the inserted frames after A and B in its samples "
            "(FlashVideoConfig.interpolation_order), saved with the model so that the pipeline generates in that "
            "order: 'forward' (the paper's F_2, F_3, …) or 'outside_in' (F_2, F_{n+1}, F_3, F_n, …). Unset: a "
            "fresh model is 'forward' and a fine-tuned one keeps its own."
        },
    )

    # Vocabulary layout and frame geometry, fixed by the tokenizer stage (None: the FlashVideoConfig default).
    image_size: int | None = field(
        default=None,
        metadata={"help": "Tokenizer stage: frame side in pixels (frames are resized to it; default 64)."},
    )
    code_grid_size: int | None = field(
        default=None, metadata={"help": "Tokenizer stage: side of a frame's code grid (default 16)."}
    )
    codebook_size: int | None = field(
        default=None,
        metadata={"help": "Tokenizer stage: VQ codebook size = the model's image_vocab_size (default 512)."},
    )
    text_vocab_size: int | None = field(
        default=None, metadata={"help": "Tokenizer stage: most caption-tokenizer tokens (default 1024)."}
    )
    max_frames: int | None = field(
        default=None,
        metadata={"help": "Tokenizer stage: number of serial-number tokens <SN_i> (default 32)."},
    )

    # Shape of a fresh VQ image tokenizer (see flashvideo.image_tokenizer.build_vq_model).
    vq_block_out_channels: list[int] | None = field(
        default=None,
        metadata={
            "help": "Tokenizer stage: channels per VQ encoder block (default 32 then 64s).",
            "nargs": "+",
        },
    )
    vq_embed_dim: int = field(
        default=32, metadata={"help": "Tokenizer stage: dimension of the codebook vectors."}
    )
    vq_layers_per_block: int = field(
        default=1, metadata={"help": "Tokenizer stage: ResNet layers per VQ block."}
    )
    vq_dead_code_threshold: float = field(
        default=1.0,
        metadata={
            "help": "Tokenizer stage: restart VQ codes picked less than this many times per step (moving average) "
            "onto encoder outputs during the first 3/4 of training; 0 disables."
        },
    )
    vq_norm_num_groups: int = field(
        default=32, metadata={"help": "Tokenizer stage: GroupNorm groups of the VQ."}
    )
    vq_mid_block_attention: bool = field(
        default=True,
        metadata={
            "help": "Tokenizer stage: a self-attention layer in the VQ's middle blocks (--no_vq_mid_block_attention: "
            "none, so that each code depends only on the pixels near its cell)."
        },
    )

    def __post_init__(self) -> None:
        _check_choice(self, "stage", STAGES)
        _check_choice(self, "forward_mode", TRAINING_FORWARD_MODES)
        for name in self.architecture_overrides_names() + self.layout_overrides_names():
            _check_int(self, name, 1, optional=True)
        for name in ("vq_embed_dim", "vq_layers_per_block", "vq_norm_num_groups"):
            _check_int(self, name, 1)
        _check_float(self, "vq_dead_code_threshold", 0.0)
        exponents = self.decay_exponents
        if exponents is not None and not (exponents and all(map(is_decay_exponent, exponents))):
            _fail("decay_exponents", "must be numbers in (0, 52], one per retention head", exponents)
        channels = self.vq_block_out_channels
        if channels is not None and (
            not channels or any(isinstance(c, bool) or not isinstance(c, int) or c < 1 for c in channels)
        ):
            _fail("vq_block_out_channels", "must be a list of positive integers", channels)
        if self.model_name_or_path is not None and self.architecture_overrides():
            raise ValueError(
                f"--model_name_or_path fine-tunes an existing model, whose architecture is fixed; drop "
                f"{['--' + name for name in self.architecture_overrides()]} or drop --model_name_or_path."
            )
        for name in ("model_name_or_path", "processor_name_or_path"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                _fail(name, "must be a non-empty path or repo id", value)

    @staticmethod
    def architecture_overrides_names() -> list[str]:
        return ["hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "chunk_size"]

    @staticmethod
    def layout_overrides_names() -> list[str]:
        return ["image_size", "code_grid_size", "codebook_size", "text_vocab_size", "max_frames"]

    def architecture_overrides(self) -> dict[str, int]:
        """The FlashVideoConfig keyword arguments given for a fresh model."""
        return {
            name: getattr(self, name) for name in self.architecture_overrides_names() if getattr(self, name)
        }

    def config_overrides(self) -> dict[str, object]:
        """The FlashVideoConfig keyword arguments that change no weight of a trained model, so may also be given
        when fine-tuning (`decay_exponents`, `code_position_embeddings`, `interpolation_order`)."""
        overrides = {}
        if self.decay_exponents is not None:
            overrides["decay_exponents"] = self.decay_exponents
        if self.code_position_embeddings:  # a flag: unset means "as the checkpoint has it"
            overrides["code_position_embeddings"] = True
        if self.interpolation_order is not None:
            overrides["interpolation_order"] = self.interpolation_order
        return overrides

    def layout_overrides(self) -> dict[str, int]:
        """The layout values given, as FlashVideoConfig kwargs (codebook_size -> image_vocab_size)."""
        values = {name: getattr(self, name) for name in self.layout_overrides_names() if getattr(self, name)}
        if "codebook_size" in values:
            values["image_vocab_size"] = values.pop("codebook_size")
        return values


@dataclass
class DataArguments:
    """Where the videos come from, and how training samples are cut from them."""

    dataset: Literal["shapes"] = field(
        default="shapes",
        metadata={
            "help": "The built-in data set, used unless --video_folder or --dataset_name is given: 'shapes' "
            "(the procedural Shapes clips, generated locally; see --num_clips and --data_seed)."
        },
    )
    num_clips: int = field(default=1024, metadata={"help": "Shapes: number of clips."})
    data_seed: int = field(
        default=0,
        metadata={
            "help": "Shapes: the seed that generates the clips; every source: the seed that picks the held-out "
            "clips (--validation_split_percentage). Not the shuffling seed, which is --seed (unlike "
            "transformers' TrainingArguments.data_seed)."
        },
    )
    speed_range: list[float] | None = field(
        default=None,
        metadata={
            "help": "Shapes: draw each clip's speed uniformly from LOW HIGH px/frame (e.g. '0.5 4.5' for the "
            "interpolation stage to see key-frame gaps of many sizes); default: every clip at 2 px/frame.",
        },
    )
    video_folder: str | None = field(
        default=None,
        metadata={
            "help": "Train on a local folder of videos or frame folders (see "
            "flashvideo.data.load_video_folder)."
        },
    )
    # The folder's format (load_video_folder's `folder_format`). The field keeps its old name: it is a public flag,
    # a key of YAML configs and part of the run identity saved in checkpoints; --video_folder_format is its alias.
    video_folder_layout: Literal["auto", "ucf101", "metadata", "frames"] = field(
        default="auto",
        metadata={
            "help": "--video_folder's format: 'auto', 'ucf101', 'metadata' or 'frames' (also --video_folder_format).",
            "aliases": ["--video_folder_format"],
        },
    )
    video_folder_text: str | None = field(
        default=None, metadata={"help": "--video_folder, 'frames' format: caption of folders that have none."}
    )
    caption_template: str = field(
        default="{label}",
        metadata={"help": "--video_folder, 'ucf101' format: caption template with {label}."},
    )
    dataset_name: str | None = field(
        default=None,
        metadata={
            "help": "Train on a 🤗 data set: a Hub id or a local data set path, loaded with "
            "datasets.load_dataset (a Hub id needs network access, or the local cache with "
            "HF_DATASETS_OFFLINE=1)."
        },
    )
    codes_dataset: str | None = field(
        default=None,
        metadata={
            "help": "Key-frame / interpolation stages: train on videos encoded once into VQ codes (a folder written "
            "by `python -m flashvideo.training.encode`, or a Hub data set of one) instead of encoding videos; it "
            "must have been encoded with this run's image tokenizer (checked)."
        },
    )
    streaming: bool = field(
        default=False,
        metadata={
            "help": "Stream --codes_dataset (a 🤗 IterableDataset) instead of loading it: each process reads its own "
            "part (split_dataset_by_node), epoch after epoch, and every checkpoint saves each process's stream "
            "position (resume on as many processes)."
        },
    )
    streaming_shuffle_buffer_size: int = field(
        default=1,
        metadata={
            "help": "--streaming: 1 shuffles the shards' order and interleaves them (with --seed, every epoch), "
            "exactly resumable; N > 1 also shuffles through a buffer of N examples, whose content checkpoints do "
            "not hold (a resumed run refills it and sees other batches)."
        },
    )
    dataset_config_name: str | None = field(
        default=None, metadata={"help": "--dataset_name: configuration name."}
    )
    dataset_split: str = field(default="train", metadata={"help": "--dataset_name: split to train on."})
    video_column: str = field(
        default="video",
        metadata={
            "help": "--dataset_name: column of the videos (uint8 [T, H, W, 3] arrays, frame lists or Video)."
        },
    )
    text_column: str = field(default="text", metadata={"help": "--dataset_name: column of the captions."})
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Keep only the first N videos (quick runs and debugging)."}
    )
    validation_split_percentage: float = field(
        default=5.0,
        metadata={
            "help": "Key-frame / interpolation stages: the percentage of the clips held out from training, picked "
            "with --data_seed, whose loss is reported as eval/loss every --eval_steps and at the end. Rounded "
            "down (5 of fewer than 20 clips holds none out), at most --max_eval_samples clips; 0: none. Not with "
            "--streaming."
        },
    )
    max_eval_samples: int | None = field(
        default=256,
        metadata={"help": "The most clips --validation_split_percentage holds out (unset: no limit)."},
    )
    num_frames: int = field(
        default=16, metadata={"help": "Frames per clip (Shapes, video folders, Hub videos)."}
    )
    frame_stride: int = field(
        default=1, metadata={"help": "Video folders / Hub videos: take every N-th frame."}
    )
    num_key_frames: int = field(
        default=4,
        metadata={
            "help": "Key-frame stage: K key frames spread evenly over the clip (16 frames, K=4: 0, 5, 10, "
            "15)."
        },
    )
    interpolation_frames: int = field(
        default=4,
        metadata={
            "help": "Interpolation stage: n frames inserted between adjacent key frames (windows of n + 2)."
        },
    )
    label_key_frames: bool = field(
        default=True,
        metadata={"help": "Interpolation stage: also put the loss on the codes of the two given key frames."},
    )
    proportion_empty_prompts: float = field(
        default=0.0,
        metadata={
            "help": "Share of the training samples whose caption is removed (drawn once from --seed), so that the "
            "model also learns the unconditional distribution that classifier-free guidance (the pipeline's "
            "guidance_scale) needs. 0 (default): every sample keeps its caption.",
        },
    )
    preprocessing_num_workers: int | None = field(
        default=None, metadata={"help": "Worker processes for the tokenizing Dataset.map."}
    )
    tokenize_batch_size: int = field(
        default=16, metadata={"help": "Videos per tokenizing Dataset.map batch."}
    )

    def __post_init__(self) -> None:
        _check_choice(self, "dataset", ("shapes",))
        _check_choice(self, "video_folder_layout", FOLDER_FORMATS)
        sources = [name for name in ("video_folder", "dataset_name", "codes_dataset") if getattr(self, name) is not None]
        if len(sources) > 1:
            raise ValueError(f"Give at most one of --video_folder, --dataset_name and --codes_dataset (got {sources}).")
        if self.streaming and self.codes_dataset is None:
            raise ValueError(
                "--streaming reads a --codes_dataset: encode the videos once with `python -m flashvideo.training.encode "
                "--output_dir codes ...`, then pass --codes_dataset codes."
            )
        _check_int(self, "streaming_shuffle_buffer_size", 1)
        if self.video_folder is not None and not os.path.isdir(self.video_folder):
            _fail("video_folder", "must be an existing folder", self.video_folder)
        _check_int(self, "num_clips", 1)
        _check_int(self, "data_seed", 0)
        if self.speed_range is not None:
            try:
                self.speed_range = list(check_speed_range(self.speed_range))
            except ValueError:
                _fail("speed_range", "must be two numbers LOW HIGH with 0 < LOW <= HIGH (px/frame)", self.speed_range)
        _check_int(self, "max_train_samples", 1, optional=True)
        check_number("--validation_split_percentage", self.validation_split_percentage, 0, 100)
        if self.validation_split_percentage == 100:
            _fail("validation_split_percentage", "must be below 100 (some clips must be left to train on)", 100)
        _check_int(self, "max_eval_samples", 1, optional=True)
        _check_int(self, "num_frames", 2)
        _check_int(self, "frame_stride", 1)
        _check_int(self, "num_key_frames", 1)
        _check_int(self, "interpolation_frames", 1)
        if not is_proportion(self.proportion_empty_prompts):
            _fail("proportion_empty_prompts", "must be a number in [0, 1]", self.proportion_empty_prompts)
        _check_int(self, "preprocessing_num_workers", 1, optional=True)
        _check_int(self, "tokenize_batch_size", 1)
        if self.num_key_frames > self.num_frames:
            raise ValueError(
                f"--num_key_frames ({self.num_key_frames}) must be at most --num_frames ({self.num_frames})."
            )
        if self.interpolation_frames + 2 > self.num_frames:
            raise ValueError(
                f"--interpolation_frames + 2 ({self.interpolation_frames + 2}) must be at most --num_frames "
                f"({self.num_frames}): a sample needs two key frames and the frames between them."
            )
        if "{label}" not in self.caption_template:
            _fail("caption_template", "must contain '{label}'", self.caption_template)


@dataclass
class FlashVideoTrainingArguments:
    """The optimisation loop; names as in `transformers.TrainingArguments` where the meaning is the same."""

    output_dir: str = field(
        default="flashvideo-checkpoint",
        metadata={
            "help": "The checkpoint directory. Running the three stages with the same --output_dir gives a "
            "complete pipeline checkpoint (processor + key-frame model + interpolation/). Resumable "
            "training states go to --output_dir/checkpoints/<stage>/checkpoint-<step>, TensorBoard logs to "
            "--output_dir/runs."
        },
    )
    max_steps: int = field(default=1000, metadata={"help": "Optimizer steps to train for."})
    per_device_train_batch_size: int = field(
        default=8, metadata={"help": "Samples per process and micro-batch."}
    )
    gradient_accumulation_steps: int = field(
        default=1, metadata={"help": "Micro-batches per optimizer step."}
    )
    learning_rate: float = field(default=3e-4, metadata={"help": "Peak learning rate."})
    weight_decay: float = field(
        default=0.0, metadata={"help": "Weight decay of matrices (not of norms/biases)."}
    )
    adam_beta1: float = field(default=0.9, metadata={"help": "AdamW beta1."})
    adam_beta2: float = field(default=0.999, metadata={"help": "AdamW beta2."})
    adam_epsilon: float = field(default=1e-8, metadata={"help": "AdamW epsilon."})
    optim: Literal["adamw_torch", "sgd"] = field(
        default="adamw_torch", metadata={"help": "'adamw_torch' or 'sgd'."}
    )
    warmup_steps: int = field(default=0, metadata={"help": "Linear warm-up steps."})
    lr_scheduler_type: str = field(
        default="cosine",
        metadata={"help": f"transformers scheduler after the warm-up: one of {', '.join(LR_SCHEDULERS)}."},
    )
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping norm (0 disables)."})
    save_steps: int = field(default=500, metadata={"help": "Save a resumable training state every N steps."})
    save_total_limit: int | None = field(
        default=2,
        metadata={"help": "Keep at most N training states per stage (oldest deleted first; unset: all)."},
    )
    logging_steps: int = field(default=10, metadata={"help": "Log every N optimizer steps."})
    eval_steps: int | None = field(
        default=None,
        metadata={
            "help": "Key-frame / interpolation stages: compute the held-out loss (eval/loss) every N optimizer steps "
            "and at the end. Default: --save_steps (one evaluation is a forward pass over the held-out clips)."
        },
    )
    resume_from_checkpoint: str | None = field(
        default=None,
        metadata={
            "help": "'latest' (the newest state under --output_dir/checkpoints/<stage>, or a fresh start "
            "when there is none) or the path of a checkpoint-<step> folder."
        },
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": "Start afresh even though --output_dir already holds checkpoints of this stage: they are "
            "deleted first (without it a fresh run refuses such a directory). Not with --resume_from_checkpoint."
        },
    )
    seed: int = field(default=42, metadata={"help": "Seed of model initialisation and data shuffling."})
    mixed_precision: Literal["no", "fp16", "bf16"] = field(
        default="no", metadata={"help": "'no', 'fp16' or 'bf16' (autocast; fp16 with loss scaling)."}
    )
    report_to: list[str] = field(
        default_factory=lambda: ["tensorboard"],
        metadata={
            "help": "Experiment trackers for accelerate ('tensorboard', 'wandb', ..., 'all' or 'none')."
        },
    )
    gradient_checkpointing: bool = field(
        default=False, metadata={"help": "Recompute activations in backward."}
    )
    dataloader_num_workers: int = field(default=0, metadata={"help": "DataLoader worker processes."})
    psnr_num_frames: int = field(
        default=256,
        metadata={"help": "Tokenizer stage: frames whose reconstruction PSNR is reported at the end."},
    )
    changing_code_loss_weight: float = field(
        default=1.0,
        metadata={
            "help": "Key-frame / interpolation stages: weigh the training loss on the codes of every cell that is "
            "not the same in all frames of a sample (where the object moves) by this, the other codes by 1 "
            "(training.changing_codes). 1: the plain mean over image codes. The held-out loss stays the plain mean."
        },
    )

    def __post_init__(self) -> None:
        if not isinstance(self.output_dir, str) or not self.output_dir.strip():
            _fail("output_dir", "must be a non-empty path", self.output_dir)
        for name in ("max_steps", "per_device_train_batch_size", "gradient_accumulation_steps", "save_steps",
                     "logging_steps", "psnr_num_frames"):  # fmt: skip
            _check_int(self, name, 1)
        for name in ("warmup_steps", "seed", "dataloader_num_workers"):
            _check_int(self, name, 0)
        _check_int(self, "save_total_limit", 1, optional=True)
        _check_int(self, "eval_steps", 1, optional=True)
        _check_float(self, "learning_rate", 0.0, strict=True)
        _check_float(self, "changing_code_loss_weight", 0.0, strict=True)
        for name in ("weight_decay", "max_grad_norm", "adam_epsilon"):
            _check_float(self, name, 0.0)
        for name in ("adam_beta1", "adam_beta2"):
            _check_float(self, name, 0.0)
            if getattr(self, name) >= 1:
                _fail(name, "must be in [0, 1)", getattr(self, name))
        _check_choice(self, "optim", OPTIMIZERS)
        _check_choice(self, "mixed_precision", MIXED_PRECISION)
        _check_choice(self, "lr_scheduler_type", LR_SCHEDULERS)
        if isinstance(self.report_to, str):
            self.report_to = [self.report_to]
        if not self.report_to or any(not isinstance(r, str) or not r for r in self.report_to):
            _fail("report_to", "must name trackers ('tensorboard', ...), 'all' or 'none'", self.report_to)
        if len(self.report_to) > 1 and ("none" in self.report_to or "all" in self.report_to):
            _fail("report_to", "must be 'none' or 'all' alone", self.report_to)
        if self.resume_from_checkpoint is not None and not str(self.resume_from_checkpoint).strip():
            _fail(
                "resume_from_checkpoint",
                f"must be '{RESUME_LATEST}' or a checkpoint path",
                self.resume_from_checkpoint,
            )
        if self.overwrite_output_dir and self.resume_from_checkpoint is not None:
            raise ValueError(
                "--overwrite_output_dir starts afresh and --resume_from_checkpoint continues a run: pass one of them."
            )

    @property
    def log_with(self) -> list[str] | str | None:
        """`Accelerator(log_with=...)` for `report_to`."""
        if self.report_to == ["none"]:
            return None
        if self.report_to == ["all"]:
            return "all"
        return list(self.report_to)


ARGUMENT_CLASSES = (ModelArguments, DataArguments, FlashVideoTrainingArguments)


def build_parser() -> HfArgumentParser:
    # No abbreviations: `--max_step 3` is an error, not a silent `--max_steps 3`.
    parser = HfArgumentParser(ARGUMENT_CLASSES, allow_abbrev=False)
    parser.prog = "python -m flashvideo.training"
    parser.description = (
        "Train FlashVideo with 🤗 Accelerate: --stage tokenizer, then keyframe, then interpolation, with the "
        "same --output_dir. Pass the arguments on the command line, or a single YAML/JSON file holding them."
    )
    return parser


def parse_args(
    argv: list[str] | None = None,
) -> tuple[ModelArguments, DataArguments, FlashVideoTrainingArguments]:
    """
    Parse the training arguments from `argv` (default: `sys.argv[1:]`), or from a YAML/JSON file when `argv`
    is a single `.yaml`/`.yml`/`.json` path.

    Raises:
        SystemExit: on arguments argparse rejects (unknown flags, a value outside its choices, `--help`).
        ValueError: on a bad value (naming the argument), or an unknown key in the file.
    """
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if len(argv) == 1 and argv[0].lower().endswith((".yaml", ".yml", ".json")):
        path = os.path.abspath(argv[0])
        if not os.path.isfile(path):
            raise ValueError(f"The arguments file {path} does not exist.")
        if path.lower().endswith(".json"):
            return tuple(parser.parse_json_file(path))
        return tuple(parser.parse_yaml_file(path))
    return tuple(parser.parse_args_into_dataclasses(args=argv))


def arguments_to_dict(*arguments: object) -> dict[str, object]:
    """Flatten argument dataclasses into one dict (for trackers and the results file)."""
    values: dict[str, object] = {}
    for obj in arguments:
        for f in fields(obj):
            values[f.name] = getattr(obj, f.name)
    return values


# Arguments that may change between a run and its resumption (where files go, how long and how often, how it
# is logged, how many workers); every other argument is part of the run's identity, recorded in its checkpoints.
# The batching and order settings (seed, batch size, accumulation) may change too: resuming then only warns that
# the data order is not the interrupted run's.
RESUMABLE_CHANGES = frozenset({
    "output_dir", "overwrite_output_dir", "resume_from_checkpoint", "max_steps", "save_steps", "save_total_limit",
    "logging_steps", "report_to", "dataloader_num_workers", "preprocessing_num_workers", "tokenize_batch_size",
    "psnr_num_frames", "seed", "per_device_train_batch_size", "gradient_accumulation_steps", "eval_steps",
})  # fmt: skip


# Arguments added after checkpoints started recording identities, with the value that a checkpoint without them
# implies: how flashvideo behaved before them (it held no clip out). `max_eval_samples` only bounds what
# `validation_split_percentage` holds out, so its absence agrees with any value.
IDENTITY_BEFORE_ARGUMENT: dict[str, object] = {"validation_split_percentage": 0.0}
IDENTITY_IRRELEVANT_WHEN_ABSENT = frozenset({"max_eval_samples"})


def run_identity(*arguments: object) -> dict[str, object]:
    """The arguments that make a run the run it is (all but `RESUMABLE_CHANGES`), as JSON values."""
    values = {name: value for name, value in arguments_to_dict(*arguments).items() if name not in RESUMABLE_CHANGES}
    return json.loads(json.dumps(values, default=str))


def first_identity_difference(saved: dict[str, object], current: dict[str, object]) -> str | None:
    """`--name: A in the checkpoint, B now` for the first argument that differs, or None when they all agree.
    A checkpoint saved before an argument existed stands for its `IDENTITY_BEFORE_ARGUMENT` value."""
    for name in [*current, *(name for name in saved if name not in current)]:
        if name not in saved and name in IDENTITY_IRRELEVANT_WHEN_ABSENT:
            continue
        before = saved.get(name, IDENTITY_BEFORE_ARGUMENT.get(name))
        if before != current.get(name):
            return f"--{name}: {before!r} in the checkpoint, {current.get(name)!r} now"
    return None


__all__ = [
    "RESUMABLE_CHANGES",
    "STAGES",
    "DataArguments",
    "FlashVideoTrainingArguments",
    "ModelArguments",
    "arguments_to_dict",
    "build_parser",
    "first_identity_difference",
    "parse_args",
    "run_identity",
]
