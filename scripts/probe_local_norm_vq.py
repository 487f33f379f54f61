"""A probe of issue 21's lever 4 (one code for the black background, docs/default_checkpoint.md, phase 23): does the
image tokenizer spread plain black over many codes because every normalisation in diffusers' VQModel is per frame?
GroupNorm's statistics are taken over the whole frame, so a background cell's features, and so its code, depend on
the object elsewhere in the frame. Here every GroupNorm is replaced by a per-position norm over the channels
(`ChannelNorm2d`, `--probe-norm channel`), which sees one position's features only, or by no normalisation at all
(`ChannelNorm2d(normalize=False)`, a learnt scale and shift only: `--probe-norm none`), and the middle blocks have no attention: a tokenizer whose codes depend on nearby pixels alone. Not a shipped component: diffusers' VQModel cannot express this norm in
its config, so the weights load only through this script.

    # train it with the recipe's tokenizer arguments (every argument after `train` goes to the training CLI)
    OMP_NUM_THREADS=2 python scripts/probe_local_norm_vq.py train --probe-norm channel --stage tokenizer --output_dir runs/phase23local \
        --num_clips 512 --per_device_train_batch_size 32 --learning_rate 2e-3 --warmup_steps 20 --max_steps 600 \
        --save_steps 100 --logging_steps 10 --seed 0 --vq_norm_num_groups 1 --no_vq_mid_block_attention
    # compare it with others (the arguments of scripts/compare_image_tokenizers.py)
    OMP_NUM_THREADS=2 python scripts/probe_local_norm_vq.py compare --seed 26500 --num-samples 96 \
        shipped "local norm=runs/phase23local"
"""

import json
import sys
from pathlib import Path

import torch
from diffusers import VQModel
from safetensors.torch import load_file
from torch import nn

import flashvideo.training.stages as stages
from flashvideo.image_tokenizer import IMAGE_TOKENIZER_SUBFOLDER, build_vq_model, load_image_tokenizer
from flashvideo.training.train import main as train_main


sys.path.insert(0, str(Path(__file__).resolve().parent))
import compare_image_tokenizers  # noqa: E402

MARK = "probe_norm"  # written into the VQ's config.json ("channel" or "none"), so that `load` swaps the norms back in


class ChannelNorm2d(nn.Module):
    """Normalise `[N, C, H, W]` over the channels at each position (a per-pixel LayerNorm), with a learnt scale and
    shift per channel: the same statistics wherever the same pixels are, whatever else the frame holds."""

    def __init__(self, num_channels: int, eps: float, normalize: bool = True) -> None:
        super().__init__()
        # The same parameter names and shapes as GroupNorm's, so the training stage's GroupNorm copy loads them.
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.eps = eps
        self.normalize = normalize

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        if self.normalize:
            mean = hidden.mean(dim=1, keepdim=True)
            variance = hidden.var(dim=1, keepdim=True, unbiased=False)
            hidden = (hidden - mean) * torch.rsqrt(variance + self.eps)
        return hidden * self.weight[:, None, None] + self.bias[:, None, None]


def with_local_norms(vq: VQModel, norm: str) -> VQModel:
    """`vq` with each of its GroupNorms replaced by a `ChannelNorm2d` of the same channels (weights reset) that
    normalises (`norm="channel"`) or only scales and shifts (`norm="none"`)."""
    for name, module in list(vq.named_modules()):
        if isinstance(module, nn.GroupNorm):
            parent_name, _, child = name.rpartition(".")
            local = ChannelNorm2d(module.num_channels, module.eps, normalize=norm == "channel")
            setattr(vq.get_submodule(parent_name), child, local)
    return vq


def builder(norm: str):
    """A `build_vq_model` whose VQ has `norm` in place of its GroupNorms, marked as such in its config."""

    def build(*args, **kwargs) -> VQModel:
        vq = with_local_norms(build_vq_model(*args, **kwargs), norm)
        vq.register_to_config(**{MARK: norm})
        return vq

    return build


def load(path: str) -> VQModel:
    """`load_image_tokenizer`, and for a probe's tokenizer its norms swapped back in with their trained weights."""
    vq = load_image_tokenizer(path)
    folder = Path(path) / IMAGE_TOKENIZER_SUBFOLDER
    norm = json.loads((folder / "config.json").read_text()).get(MARK)
    if norm is None:
        return vq
    with_local_norms(vq, norm).load_state_dict(load_file(folder / "diffusion_pytorch_model.safetensors"))
    return vq.eval()


def main() -> int:
    command, argv = (sys.argv[1], sys.argv[2:]) if len(sys.argv) > 1 else ("", [])
    if command == "train":
        norm = "channel"
        if argv[:1] == ["--probe-norm"]:
            norm, argv = argv[1], argv[2:]
        if norm not in ("channel", "none"):
            sys.exit(f"--probe-norm must be 'channel' or 'none', got {norm!r}")
        stages.build_vq_model = builder(norm)
        return train_main(argv)
    if command == "compare":
        compare_image_tokenizers.load_image_tokenizer = load
        sys.argv = [sys.argv[0], *argv]
        compare_image_tokenizers.main()
        return 0
    sys.exit(f"usage: {sys.argv[0]} train [--probe-norm channel|none] ARGUMENTS | compare ARGUMENTS (the docstring)")


if __name__ == "__main__":
    sys.exit(main())
