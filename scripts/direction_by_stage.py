"""Which stage loses direction: per-direction accuracy of a checkpoint's clips, its key frames alone, and its
interpolation model filling in the true (VQ-encoded) key frames.

    python scripts/direction_by_stage.py flashvideo/default_checkpoint --num-samples 96 --seed 2000

Uses the evaluation set of `flashvideo eval` (same prompts for the same seed) and the pipeline's default sampling
(redundant-free interpolation, inherit ratio 0.2). The generator seeds differ from `flashvideo eval`'s, so the
totals differ from its table by a few clips.
"""

import argparse
import collections

import numpy as np
import torch

from flashvideo.data.shapes import DIRECTIONS
from flashvideo.evaluation.evaluate import evaluation_set
from flashvideo.evaluation.shapes import analyze_clip
from flashvideo.pipeline_flashvideo import FlashVideoPipeline

KEY_FRAME_SPACING = 5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--num-samples", type=int, default=96)
    parser.add_argument("--seed", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()

    videos, prompts, labels = evaluation_set(args.num_samples, args.seed)
    pipe = FlashVideoPipeline.from_pretrained(args.checkpoint)
    pipe.show_progress = False
    grid, num_frames = pipe.model.config.code_grid_size, videos.shape[1]
    right = {row: collections.Counter() for row in ("clip", "its key frames alone", "from true key frames")}
    totals = collections.Counter(label["direction"] for label in labels)
    for start in range(0, args.num_samples, args.batch_size):
        batch = slice(start, start + args.batch_size)
        clips = pipe(prompts[batch], num_frames=num_frames, generator=torch.Generator().manual_seed(start)).frames
        true_key_frames = np.ascontiguousarray(videos[batch, ::KEY_FRAME_SPACING])
        count, num_key_frames = true_key_frames.shape[:2]
        codes = pipe.processor.encode_frames(true_key_frames.reshape(-1, *true_key_frames.shape[2:]))
        ids = pipe.processor.codes_to_ids(codes).reshape(count, num_key_frames, -1).to(pipe.device)
        filled = pipe.interpolate(
            prompts[batch], ids, KEY_FRAME_SPACING - 1, redundant_free=True, inherit_ratio=0.2,
            generator=torch.Generator().manual_seed(start),
        )  # fmt: skip
        filled = pipe.processor.decode_frames(pipe.processor.ids_to_codes(filled).reshape(count, -1, grid, grid))
        for clip, from_truth, label in zip(clips, filled, labels[batch]):
            direction = label["direction"]
            judged = {
                "clip": analyze_clip(clip),
                "its key frames alone": analyze_clip(clip[::KEY_FRAME_SPACING], frame_stride=KEY_FRAME_SPACING),
                "from true key frames": analyze_clip(from_truth),
            }
            for row, result in judged.items():
                right[row][direction] += result["direction"] == direction
    print("| direction right | " + " | ".join(DIRECTIONS) + " | all |")
    print("|---|" + "---:|" * (len(DIRECTIONS) + 1))
    for row, counts in right.items():
        cells = [f"{counts[d]}/{totals[d]}" for d in DIRECTIONS]
        print(f"| {row} | " + " | ".join(cells) + f" | {sum(counts.values())}/{args.num_samples} |")


if __name__ == "__main__":
    with torch.no_grad():
        main()
