"""Which stage loses direction: per-direction accuracy of a checkpoint's clips, its key frames alone, and its
interpolation model filling in the true (VQ-encoded) key frames; and, for the latter, how close each inserted
frame's object is to where the object really is in that frame.

    python scripts/direction_by_stage.py flashvideo/default_checkpoint --num-samples 96 --seed 2000

Uses the evaluation set of `flashvideo eval` (same prompts for the same seed) and the pipeline's default sampling
(redundant-free interpolation, inherit ratio 0.2). The generator seeds differ from `flashvideo eval`'s, so the
totals differ from its table by a few clips.
"""

import argparse

import numpy as np
import torch

from flashvideo.data.shapes import DIRECTIONS
from flashvideo.evaluation.evaluate import evaluation_set
from flashvideo.evaluation.shapes import accuracy, analyze_clip
from flashvideo.pipeline_flashvideo import FlashVideoPipeline

KEY_FRAME_SPACING = 5
NEAR_PX = 5  # an inserted object this close to the true one (centroids, in px) counts as in place


def inserted_frame_placement(generated: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Over the inserted frames of `generated` clips: the fraction with a visible object, and among those the fraction
    within NEAR_PX of the true object's centroid and the median distance to it."""
    distances, num_inserted = [], 0
    for clip, true_clip in zip(generated, truth):
        found, expected = analyze_clip(clip)["centroids"], analyze_clip(true_clip)["centroids"]
        inserted = [t for t in range(len(clip)) if t % KEY_FRAME_SPACING]
        num_inserted += len(inserted)
        distances += [float(np.hypot(*np.subtract(found[t], expected[t]))) for t in inserted if t in found]
    distances = np.asarray(distances)
    return {
        "visible": len(distances) / num_inserted,
        "near": float((distances <= NEAR_PX).mean()) if len(distances) else 0.0,
        "median_px": float(np.median(distances)) if len(distances) else float("nan"),
    }


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
    clips, from_truth = [], []
    for start in range(0, args.num_samples, args.batch_size):
        batch = slice(start, start + args.batch_size)
        clips.append(
            pipe(prompts[batch], num_frames=num_frames, generator=torch.Generator().manual_seed(start)).frames
        )
        true_key_frames = np.ascontiguousarray(videos[batch, ::KEY_FRAME_SPACING])
        count, num_key_frames = true_key_frames.shape[:2]
        codes = pipe.processor.encode_frames(true_key_frames.reshape(-1, *true_key_frames.shape[2:]))
        ids = pipe.processor.codes_to_ids(codes).reshape(count, num_key_frames, -1).to(pipe.device)
        filled = pipe.interpolate(
            prompts[batch], ids, KEY_FRAME_SPACING - 1, redundant_free=True, inherit_ratio=0.2,
            generator=torch.Generator().manual_seed(start),
        )  # fmt: skip
        from_truth.append(
            pipe.processor.decode_frames(pipe.processor.ids_to_codes(filled).reshape(count, -1, grid, grid))
        )
    clips, from_truth = np.concatenate(clips), np.concatenate(from_truth)
    rows = {
        "clip": accuracy(clips, labels),
        "its key frames alone": accuracy(clips[:, ::KEY_FRAME_SPACING], labels, frame_stride=KEY_FRAME_SPACING),
        "from true key frames": accuracy(from_truth, labels),
    }
    totals = {direction: sum(label["direction"] == direction for label in labels) for direction in DIRECTIONS}
    print("| direction right in | " + " | ".join(DIRECTIONS) + " | all |")
    print("|---|" + "---:|" * (len(DIRECTIONS) + 1))
    for row, scores in rows.items():
        right = {d: round(scores["direction_by_prompt"].get(d, 0.0) * totals[d]) for d in DIRECTIONS}
        cells = [f"{right[d]}/{totals[d]}" for d in DIRECTIONS]
        cells.append(f"{round(scores['direction'] * args.num_samples)}/{args.num_samples}")
        print(f"| {row} | " + " | ".join(cells) + " |")
    placement = inserted_frame_placement(from_truth, videos)
    print(
        f"\nInserted frames, from true key frames: object visible in {placement['visible']:.0%}; of those, "
        f"{placement['near']:.0%} within {NEAR_PX} px of the true object (median distance {placement['median_px']:.1f} px)."
    )


if __name__ == "__main__":
    with torch.no_grad():
        main()
