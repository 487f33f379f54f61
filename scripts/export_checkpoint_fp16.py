"""Copy a trained pipeline checkpoint with its weights stored in float16, e.g. to ship it inside the package.

    python scripts/export_checkpoint_fp16.py /path/to/trained flashvideo/default_checkpoint

Copies the models, the interpolation model and the processor (not `checkpoints/`, `runs/`, the training
results, or the copies of the modelling code that `trust_remote_code` would use: with flashvideo installed they
are not needed, and `flashvideo push` writes them afresh together with `auto_map`) and rewrites every
`*.safetensors` file with its floating-point tensors in float16, which halves the size. The configs keep
`dtype: float32`, so `from_pretrained` still builds float32 models (CPU inference) and upcasts the stored weights
on load.
"""

import argparse
import json
import shutil
from pathlib import Path

from safetensors.torch import load_file, save_file

LEFT_OUT = ("checkpoints", "runs", "train_results_*.json", "eval_results.*", "*.py", "__pycache__")


def export_fp16(source: Path, destination: Path) -> int:
    """Copy `source` into a new `destination` with float16 safetensors; returns the total size in bytes."""
    if destination.exists():
        raise SystemExit(f"{destination} exists; remove it first.")
    shutil.copytree(source, destination, ignore=shutil.ignore_patterns(*LEFT_OUT))
    for path in destination.rglob("*.safetensors"):
        tensors = {
            name: tensor.half() if tensor.is_floating_point() else tensor for name, tensor in load_file(path).items()
        }
        save_file(tensors, path, metadata={"format": "pt"})
    for path in destination.rglob("config.json"):
        config = json.loads(path.read_text())
        if config.pop("auto_map", None) is not None:  # its code files were left out
            path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return sum(path.stat().st_size for path in destination.rglob("*") if path.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path, help="a trained checkpoint (the stages' --output_dir)")
    parser.add_argument("destination", type=Path, help="a new directory")
    args = parser.parse_args()
    size = export_fp16(args.source, args.destination)
    print(f"wrote {args.destination} ({size / 2**20:.2f} MiB)")


if __name__ == "__main__":
    main()
