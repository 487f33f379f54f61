"""Key-frame models' next-token loss on the TRUE (VQ-encoded) key frames, split into the cells whose code changes
across a clip's key frames and the cells whose code does not: what `--changing_code_loss_weight` weighs
(`flashvideo.training.changing_codes`; phase 22 in docs/default_checkpoint.md). Also prints the share of cells whose
*pixels* change in the true key frames, for comparison with the share whose codes change.

    OMP_NUM_THREADS=2 python scripts/changing_cell_loss.py --seed 26400 --num-samples 96 \
        shipped "control=runs/evalkf_control" "weight 4=runs/evalkf_moving"

Each model is `shipped` (the default checkpoint's key-frame model) or `NAME=PATH` (a checkpoint directory).
"""

import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from flashvideo import FlashVideoForCausalLM, default_checkpoint
from flashvideo.evaluation.evaluate import evaluation_set
from flashvideo.image_tokenizer import frames_to_codes
from flashvideo.pipeline_flashvideo import FlashVideoPipeline
from flashvideo.processing_flashvideo import IGNORE_INDEX
from flashvideo.training.changing_codes import changing_code_weights


sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare_interpolation_models import model_comparison_parser  # noqa: E402
from direction_by_stage import KEY_FRAME_SPACING  # noqa: E402


def changing_pixel_cell_share(key_frames: np.ndarray, grid: int) -> float:
    """The share of code cells of `key_frames` `[N, K, H, W, 3]` whose pixels are not the same in all K frames."""
    clips, frames, height, width, channels = key_frames.shape
    cell = height // grid
    cells = key_frames.reshape(clips, frames, grid, cell, grid, cell, channels).transpose(0, 1, 2, 4, 3, 5, 6)
    cells = cells.reshape(clips, frames, grid, grid, -1)
    return float((cells != cells[:, :1]).any(axis=(1, 4)).mean())


def main() -> None:
    args = model_comparison_parser(__doc__, "evaluation set seed").parse_args()

    pipe = FlashVideoPipeline.from_pretrained(default_checkpoint(), show_progress=False)
    videos, prompts, _ = evaluation_set(args.num_samples, args.seed)
    key_frames = np.ascontiguousarray(videos[:, ::KEY_FRAME_SPACING])
    codes = frames_to_codes(pipe.vqvae, key_frames)
    samples = [pipe.processor.build_keyframe_sample(prompt, clip) for prompt, clip in zip(prompts, codes)]
    input_ids = torch.tensor([sample["input_ids"] for sample in samples])
    labels = torch.tensor([sample["labels"] for sample in samples])
    changing = changing_code_weights(labels, pipe.processor.layout.tokens_per_frame, 2.0)[:, 1:] == 2.0
    labelled = labels[:, 1:] != IGNORE_INDEX
    grid = pipe.processor.layout.code_grid_size
    print(
        f"cells whose codes change: {changing.sum() / labelled.sum():.1%} of {int(labelled.sum())} codes; cells "
        f"whose pixels change in the true key frames: {changing_pixel_cell_share(key_frames, grid):.1%}"
    )
    for spec in args.models:
        name, _, path = ("shipped", "", default_checkpoint()) if spec == "shipped" else spec.partition("=")
        model = FlashVideoForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
        losses = []
        with torch.no_grad():
            for start in range(0, len(samples), args.batch_size):
                batch = slice(start, start + args.batch_size)
                logits = model(input_ids=input_ids[batch], use_cache=False).logits[:, :-1]
                losses.append(F.cross_entropy(logits.transpose(1, 2).float(), labels[batch, 1:], reduction="none"))
        loss = torch.cat(losses)
        static = labelled & ~changing
        print(
            f"{name}: changing cells {loss[changing].mean():.4f}, static cells {loss[static].mean():.4f}, "
            f"all {loss[labelled].mean():.4f} (next-token cross-entropy)"
        )


if __name__ == "__main__":
    main()
