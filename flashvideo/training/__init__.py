"""
Training of FlashVideo with 🤗 Accelerate from 🤗 Datasets: the image tokenizer, the key-frame model and the
interpolation model, on one process or many.

```bash
python -m flashvideo.training --stage tokenizer --output_dir ckpt
python -m flashvideo.training --stage keyframe --output_dir ckpt
python -m flashvideo.training --stage interpolation --output_dir ckpt
accelerate launch --multi_gpu --num_processes 4 -m flashvideo.training --stage keyframe --output_dir ckpt
accelerate launch --use_fsdp --fsdp_version 2 --num_processes 4 -m flashvideo.training --stage keyframe ...
python -m flashvideo.training.encode --processor_name_or_path ckpt --video_folder videos --output_dir codes
python -m flashvideo.training --stage keyframe --codes_dataset codes --streaming --output_dir ckpt
```

Modules, one job each: `train` (the loop, top to bottom, and `main`), `stages` (what differs between the stages:
data, model, loss, final artefacts), `checkpointing` (saving, picking, checking and restoring training states),
`held_out` (the held-out validation loss), `arguments`, `codebook` (VQ dead-code restarts), `sharding` (FSDP),
`streaming` (`--streaming`), `encode` (videos to a codes data set). The videos themselves come from
`flashvideo.data` (`video_frames`, `splits`). See `docs/training.md`.
"""

from .arguments import DataArguments, FlashVideoTrainingArguments, ModelArguments, build_parser, parse_args
from .train import TrainingSetupError, TrainOutput, main, train

__all__ = [
    "DataArguments",
    "FlashVideoTrainingArguments",
    "ModelArguments",
    "TrainOutput",
    "TrainingSetupError",
    "build_parser",
    "main",
    "parse_args",
    "train",
]
