"""Which stage loses direction or clean clips: per-direction accuracy and clean-clip rate (DESIGN §10) of a
checkpoint's clips, its key frames alone, and its interpolation model filling in the true (VQ-encoded) key frames;
for the latter, how close each inserted frame's object is to where the object really is in that frame; and, for the
clips and the clips from true key frames, what goes wrong at the key-frame places and at the inserted ones.

    python scripts/direction_by_stage.py flashvideo/default_checkpoint --num-samples 96 --seed 2000
    python scripts/direction_by_stage.py flashvideo/default_checkpoint --seed 10000 --output by_stage.json \
        --save-clips clips.npz   # then --load-clips clips.npz judges the same clips again without generating them

Uses the evaluation set of `flashvideo eval` (same prompts for the same seed) and the pipeline's default sampling
(redundant-free interpolation, inherit ratio 0.2). The generator seeds differ from `flashvideo eval`'s, so the
totals differ from its table by a few clips.
"""

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from flashvideo.data.shapes import DIRECTIONS
from flashvideo.evaluation.evaluate import evaluation_set
from flashvideo.evaluation.shapes import (
    CLEAN_CLIP_CRITERIA,
    accuracy,
    analyze_clip,
    clean_clip_report,
    fit_constant_velocity,
    fit_track,
    frame_objects,
    largest_jump,
    track_passes,
)
from flashvideo.image_tokenizer import codes_to_frames, frames_to_codes
from flashvideo.pipeline_flashvideo import FlashVideoPipeline

KEY_FRAME_SPACING = 5
NEAR_PX = 5  # an inserted object this close to the true one (centroids, in px) counts as in place


def inserted_frame_placement(
    generated: np.ndarray, truth: np.ndarray, labels: list[dict[str, str]], cell: int
) -> dict[str, object]:
    """Over the inserted frames of `generated` clips: the fraction with a visible object, and among those the fraction
    within NEAR_PX of the true object's centroid, the median distance to it, and which way it is off: median |dx| and
    |dy| (also for horizontal and vertical movers apart), the median distance per place in the gap (1 = just after A),
    and the commonest offsets rounded to code cells of `cell` px (`[columns, rows]`, share)."""
    offsets, places, horizontal, num_inserted = [], [], [], 0
    for clip, true_clip, label in zip(generated, truth, labels):
        found, expected = analyze_clip(clip)["centroids"], analyze_clip(true_clip)["centroids"]
        inserted = [t for t in range(len(clip)) if t % KEY_FRAME_SPACING]
        num_inserted += len(inserted)
        for t in (t for t in inserted if t in found):
            offsets.append(np.subtract(found[t], expected[t]))
            places.append(t % KEY_FRAME_SPACING)
            horizontal.append(label["direction"] in ("left", "right"))
    if not offsets:
        return {"visible": 0.0}
    offsets, places, horizontal = np.asarray(offsets), np.asarray(places), np.asarray(horizontal)
    distances = np.hypot(*offsets.T)
    cells, counts = np.unique(np.rint(offsets / cell).astype(int), axis=0, return_counts=True)
    commonest = np.argsort(-counts, kind="stable")[:6]

    def abs_medians(rows: np.ndarray) -> list[float]:
        return np.median(np.abs(offsets[rows]), axis=0).tolist() if rows.any() else [float("nan")] * 2

    return {
        "visible": len(distances) / num_inserted,
        "near": float((distances <= NEAR_PX).mean()),
        "median_px": float(np.median(distances)),
        "median_abs_dx_dy": abs_medians(np.ones(len(offsets), dtype=bool)),
        "median_abs_dx_dy_horizontal_movers": abs_medians(horizontal),
        "median_abs_dx_dy_vertical_movers": abs_medians(~horizontal),
        "median_px_by_place_in_gap": {int(k): float(np.median(distances[places == k])) for k in np.unique(places)},
        "commonest_cell_offsets": [(cells[i].tolist(), float(counts[i] / len(offsets))) for i in commonest],
    }


def key_frame_residuals(clips: np.ndarray) -> list[float]:
    """Median over clips of the key frames' RMS residual from their constant-velocity fit, in x and in y (px)."""
    residuals = []
    for clip in clips:
        points = [frame_objects(frame).centroid for frame in clip[::KEY_FRAME_SPACING]]
        if any(point is None for point in points):
            continue
        off_track, _ = fit_constant_velocity(np.arange(len(points)) * KEY_FRAME_SPACING, points)
        residuals.append(np.sqrt((off_track**2).mean(axis=0)))
    return np.median(residuals, axis=0).tolist()


def perfectly_interpolated_clean_rate(clips: np.ndarray, colors: list[str]) -> float:
    """The clean-clip rate the clips' key frames would allow with perfect interpolation: clean key frames (one object,
    no strays, prompted color) whose centroids, joined by straight lines frame by frame, pass the track criteria."""
    clean = []
    for clip, color in zip(clips, colors):
        key_frames = clip[::KEY_FRAME_SPACING]
        report = clean_clip_report(key_frames, color, frame_stride=KEY_FRAME_SPACING)
        if set(report["failures"]) & {"objects", "stray_pixels", "color"}:
            clean.append(False)
            continue
        points = np.asarray([frame_objects(frame).centroid for frame in key_frames])
        times = np.arange(len(points)) * KEY_FRAME_SPACING
        every = np.arange(times[-1] + 1)
        track = np.stack([np.interp(every, times, points[:, 0]), np.interp(every, times, points[:, 1])], axis=1)
        clean.append(all(track_passes(*fit_track(every, track), largest_jump(every, track)).values()))
    return float(np.mean(clean))


def generate_stages(
    pipe: FlashVideoPipeline, videos: np.ndarray, prompts: list[str], batch_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """The pipeline's clips (default settings), and its interpolation model's clips from the true key frames."""
    num_frames = videos.shape[1]
    clips, from_truth = [], []
    for start in range(0, len(videos), batch_size):
        batch = slice(start, start + batch_size)
        texts = list(prompts[batch])
        outs = pipe(texts, batch_size=len(texts), num_frames=num_frames, generator=torch.Generator().manual_seed(start))
        clips.append(np.concatenate([out.frames for out in outs]))
        true_key_frames = np.ascontiguousarray(videos[batch, ::KEY_FRAME_SPACING])
        codes = frames_to_codes(pipe.vqvae, true_key_frames)  # [count, key frames, grid, grid]
        filled = pipe.interpolate(
            texts, codes, KEY_FRAME_SPACING - 1, redundant_free=True, inherit_ratio=0.2,
            generator=torch.Generator().manual_seed(start),
        )  # fmt: skip
        from_truth.append(codes_to_frames(pipe.vqvae, filled))
    return np.concatenate(clips), np.concatenate(from_truth)


def frames_by_place(clips: np.ndarray, colors: list[str]) -> dict[str, dict[str, float]]:
    """What goes wrong at the key-frame places (every KEY_FRAME_SPACING-th frame) and at the inserted ones: the share
    of frames with no object, with two or more, and with more stray non-black pixels than a clean clip allows."""
    reports = [clean_clip_report(clip, color) for clip, color in zip(clips, colors)]
    places = {"key frames": [], "inserted frames": []}
    for report in reports:
        for t, (objects, stray) in enumerate(zip(report["num_objects"], report["stray_pixels"])):
            places["inserted frames" if t % KEY_FRAME_SPACING else "key frames"].append((objects, stray))
    return {
        place: {
            "no_object": float(np.mean([objects == 0 for objects, _ in frames])),
            "two_or_more_objects": float(np.mean([objects >= 2 for objects, _ in frames])),
            "stray_pixels": float(np.mean([stray > CLEAN_CLIP_CRITERIA.max_stray_pixels for _, stray in frames])),
        }
        for place, frames in places.items()
    }


def background_cells(frames: np.ndarray, grid: int, bright_level: int) -> np.ndarray:
    """`[..., grid, grid]` booleans: the code cells of frames `[..., H, W, 3]` (uint8) whose patch and eight
    neighbouring patches are all black (no channel above `bright_level`)."""
    cell = frames.shape[-2] // grid
    patches = frames.reshape(-1, grid, cell, grid, cell, 3).max(axis=(2, 4, 5)) <= bright_level
    black = ndimage.binary_erosion(patches, structure=np.ones((1, 3, 3), dtype=bool), border_value=1)
    return black.reshape(*frames.shape[:-3], grid, grid)


def background_codes(key_frames: np.ndarray, codes: np.ndarray) -> dict[str, float]:
    """How the image tokenizer codes plain black background in true key frames (`[N, K, H, W, 3]`, codes `[N, K, g,
    g]`): over the code cells whose patch and eight neighbouring patches are all black, how many distinct codes occur,
    the most common one's share, and the share of cells black in two adjacent key frames whose codes differ anyway
    (cells that redundant-free interpolation counts as different although nothing changed there)."""
    black = background_cells(key_frames, codes.shape[-1], bright_level=0)
    values, counts = np.unique(codes[black], return_counts=True)
    both = black[:, 1:] & black[:, :-1]
    return {
        "distinct_codes": int(len(values)),
        "most_common_share": float(counts.max() / counts.sum()),
        "black_in_both_yet_different": float((codes[:, 1:] != codes[:, :-1])[both].mean()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--num-samples", type=int, default=96)
    parser.add_argument("--seed", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--output", type=Path, default=None, help="also write the figures to this JSON file")
    parser.add_argument(
        "--save-clips", type=Path, default=None, help="save the clips, the clips from true key frames and the truth (.npz)"
    )
    parser.add_argument("--load-clips", type=Path, default=None, help="judge clips saved by --save-clips instead")
    args = parser.parse_args()

    videos, prompts, labels = evaluation_set(args.num_samples, args.seed)
    pipe = FlashVideoPipeline.from_pretrained(args.checkpoint)
    pipe.show_progress = False
    if args.load_clips is not None:
        saved = np.load(args.load_clips)
        if not np.array_equal(saved["truth"], videos):
            raise ValueError(f"{args.load_clips} holds clips of another evaluation set than --num-samples/--seed")
        clips, from_truth = saved["clips"], saved["from_true_key_frames"]
    else:
        clips, from_truth = generate_stages(pipe, videos, prompts, args.batch_size)
    if args.save_clips is not None:
        np.savez_compressed(args.save_clips, clips=clips, from_true_key_frames=from_truth, truth=videos)
    true_key_frames = np.ascontiguousarray(videos[:, ::KEY_FRAME_SPACING])
    true_codes = frames_to_codes(pipe.vqvae, true_key_frames.reshape(-1, *videos.shape[2:]), batch_size=64)
    grid = pipe.model.config.code_grid_size
    true_codes = np.asarray(true_codes).reshape(*true_key_frames.shape[:2], grid, grid)
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
    cell = videos.shape[2] // pipe.model.config.code_grid_size
    placement = inserted_frame_placement(from_truth, videos, labels, cell)
    print(
        f"\nInserted frames, from true key frames: object visible in {placement['visible']:.0%}; of those, "
        f"{placement['near']:.0%} within {NEAR_PX} px of the true object (median distance {placement['median_px']:.1f} px)."
    )
    print(
        "Which way: median |dx|, |dy| {} px; horizontal movers {}, vertical movers {}; median distance by place in the "
        "gap {}; commonest offsets in {} px cells [columns, rows]: {}.".format(
            *(np.round(placement[key], 1).tolist() for key in (
                "median_abs_dx_dy", "median_abs_dx_dy_horizontal_movers", "median_abs_dx_dy_vertical_movers")),
            {k: round(v, 1) for k, v in placement["median_px_by_place_in_gap"].items()}, cell,
            ", ".join(f"{offset} {share:.0%}" for offset, share in placement["commonest_cell_offsets"]),
        )
    )  # fmt: skip
    residuals = key_frame_residuals(clips)
    print(f"The clips' key frames: median RMS residual from their straight track x {residuals[0]:.2f} px, "
          f"y {residuals[1]:.2f} px.")  # fmt: skip
    colors = [label["color"] for label in labels]
    ideal = perfectly_interpolated_clean_rate(clips, colors)
    print(f"Clean clips if the clips' key frames were interpolated perfectly (straight lines): {ideal:.1%}.")
    print("\n| clean clips (DESIGN §10) | clean | one object | stray-free | track RMS | largest jump | speed |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for row, scores in rows.items():
        clean = scores["clean_clips"]
        print(
            f"| {row} | {clean['clean_rate']:.1%} ± {clean['clean_rate_stderr']:.1%} | {clean['one_object_rate']:.1%} | "
            f"{clean['stray_free_rate']:.1%} | {clean['median_track_rms']:.2f} px | "
            f"{clean['median_largest_jump']:.1f} px | {clean['median_speed']:.2f} px |"
        )
    by_place = {"clip": frames_by_place(clips, colors), "from true key frames": frames_by_place(from_truth, colors)}
    print("\n| frames | no object | two or more objects | stray pixels |")
    print("|---|---:|---:|---:|")
    for row, places in by_place.items():
        for place, shares in places.items():
            print(
                f"| {row}, {place} | {shares['no_object']:.1%} | {shares['two_or_more_objects']:.1%} | "
                f"{shares['stray_pixels']:.1%} |"
            )
    background = background_codes(true_key_frames, true_codes)
    print(
        f"\nBlack background in the true key frames: {background['distinct_codes']} distinct codes, the commonest "
        f"{background['most_common_share']:.0%} of cells; black in two adjacent key frames yet coded differently: "
        f"{background['black_in_both_yet_different']:.1%} of cells."
    )
    if args.output is not None:
        figures = {
            "checkpoint": args.checkpoint, "num_samples": args.num_samples, "seed": args.seed,
            "stages": rows, "inserted_frame_placement_from_true_key_frames": placement, "frames_by_place": by_place,
            "clean_rate_with_perfect_interpolation_of_the_key_frames": ideal,
            "key_frame_residual_rms_xy": residuals,
            "background_codes": background,
        }  # fmt: skip
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    with torch.no_grad():
        main()
