"""Copy a pipeline checkpoint with one of its language models grown deeper (`flashvideo.training.growth.deepen`):
the new RetNet blocks start as identities, so the copy generates what the original does until it is fine-tuned.

    python scripts/grow_model_depth.py runs/base flashvideo-deep --num_hidden_layers 8 --model interpolation
    python -m flashvideo.training --stage interpolation --model_name_or_path flashvideo-deep ...

The grown model is saved in float32 (what fine-tuning loads); the rest of the checkpoint is copied as it is.
"""

import argparse
import shutil
from pathlib import Path

import torch

from flashvideo import FlashVideoForCausalLM
from flashvideo.pipeline_flashvideo import INTERPOLATION_SUBFOLDER
from flashvideo.training.growth import deepen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path, help="a pipeline checkpoint directory")
    parser.add_argument("destination", type=Path, help="a new directory")
    parser.add_argument("--num_hidden_layers", type=int, required=True, help="blocks of the grown model")
    parser.add_argument("--model", choices=["keyframe", INTERPOLATION_SUBFOLDER], default=INTERPOLATION_SUBFOLDER)
    args = parser.parse_args()
    if args.destination.exists():
        raise SystemExit(f"{args.destination} exists; remove it first.")
    folder = {"keyframe": Path(), INTERPOLATION_SUBFOLDER: Path(INTERPOLATION_SUBFOLDER)}[args.model]
    model = FlashVideoForCausalLM.from_pretrained(args.source / folder, dtype=torch.float32)
    grown = deepen(model, args.num_hidden_layers)
    shutil.copytree(args.source, args.destination, ignore=shutil.ignore_patterns("checkpoints", "runs"))
    grown.save_pretrained(args.destination / folder)
    size = sum(p.numel() for p in grown.parameters())
    print(f"wrote {args.destination / folder}: {model.config.num_hidden_layers} -> {args.num_hidden_layers} blocks, "
          f"{size / 1e6:.2f}M parameters ({2 * size / 2**20:.1f} MiB in float16)")


if __name__ == "__main__":
    main()
