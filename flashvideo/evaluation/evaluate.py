"""`flashvideo eval`: quality and speed of a checkpoint on Shapes, one row per inference mode.

For each mode (key frames only, fully autoregressive, key frames + interpolation, redundant-free at several
inherit ratios):
- Shapes accuracy: clips generated from the prompts, judged by `evaluation.shapes.analyze_clip`;
- conditioned quality: clips generated from the true first frame, PSNR / SSIM of frames 2…16 (key frames 2…4 in
  the key-frame-only mode) against the true continuation (the paper's protocol);
- clean clips (DESIGN §10, `evaluation.shapes.clean_clip_report`): the share of clips a person would call right, with
  its standard error, and its parts (one-object rate, median track RMS, largest jump and speed, color-frame share,
  the share of clips failing each criterion);
- speed: image tokens per second (sampled + inherited) and frames per second.
Plus the image tokenizer's reconstruction PSNR and clean-clip rate on the same clips.

    flashvideo eval --model path/to/checkpoint --num-samples 24 --seed 0 --output-dir eval
"""

import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers.utils import logging

from ..extras import require_extra
from ..image_tokenizer import codes_to_frames, frames_to_codes
from ..pipeline_flashvideo import FlashVideoPipeline
from .metrics import psnr, ssim
from .shapes import CLEAN_CLIP_CRITERIA, CLEAN_CLIP_FAILURES, accuracy


logger = logging.get_logger(__name__)

INFERENCE_MODES = {
    # Only the key-frame model: frames 0, 5, 10, 15 (its training layout), judged against the same true frames.
    "key frames only (every 5th frame)": dict(interpolate=False, frame_stride=5),
    "full autoregressive": dict(interpolate=False),
    "key frames + interpolation": dict(key_frame_spacing=5, redundant_free=False),
    "redundant-free, inherit 0.2": dict(key_frame_spacing=5, redundant_free=True, inherit_ratio=0.2),
    "redundant-free, inherit 0.5": dict(key_frame_spacing=5, redundant_free=True, inherit_ratio=0.5),
    "redundant-free, inherit 1.0": dict(key_frame_spacing=5, redundant_free=True, inherit_ratio=1.0),
}
# Short names for the command line (`flashvideo eval --modes interpolation rf0.2`).
MODE_KEYS = dict(zip(("keyframes", "autoregressive", "interpolation", "rf0.2", "rf0.5", "rf1.0"), INFERENCE_MODES))


def select_modes(keys: list[str] | None) -> dict:
    """The inference modes named by their short keys (all of them for None), in the table's order."""
    if keys is None:
        return dict(INFERENCE_MODES)
    unknown = sorted(set(keys) - set(MODE_KEYS))
    if unknown:
        raise ValueError(f"modes must be among {list(MODE_KEYS)}, got {unknown}.")
    return {MODE_KEYS[key]: INFERENCE_MODES[MODE_KEYS[key]] for key in MODE_KEYS if key in keys}


def _as_unit_float(frames: np.ndarray) -> torch.Tensor:
    """uint8 `[..., H, W, 3]` → float `[..., 3, H, W]` in [0, 1], as the metrics take them."""
    return torch.from_numpy(frames).movedim(-1, -3).double() / 255.0


def evaluation_set(num_samples: int, seed: int) -> tuple[np.ndarray, list[str], list[dict[str, str]]]:
    """
    Shapes clips whose attributes cycle, so that 24 clips hold every color × direction pair once and every shape
    8 times: clip i has color i mod 6 and direction (i div 6) mod 4; the shapes are a shuffled cycle. Sizes and
    start positions are drawn from `seed`. Returns the videos (uint8 `[N, 16, 64, 64, 3]`), prompts and labels.
    """
    from ..data.shapes import COLORS, DIRECTIONS, SHAPES, make_prompt, render_clip, sample_clip_params, start_range

    rng = np.random.default_rng(seed)
    colors, shapes = list(COLORS), rng.permutation([SHAPES[i % len(SHAPES)] for i in range(num_samples)])
    videos, prompts, labels = [], [], []
    for i in range(num_samples):
        label = {
            "color": colors[i % len(colors)],
            "shape": str(shapes[i]),
            "direction": DIRECTIONS[(i // len(colors)) % len(DIRECTIONS)],
        }
        size = sample_clip_params(rng)["size"]
        (x_low, x_high), (y_low, y_high) = start_range(label["direction"], size)
        start = (int(rng.integers(x_low, x_high + 1)), int(rng.integers(y_low, y_high + 1)))
        videos.append(render_clip(**label, size=size, start=start))
        prompts.append(make_prompt(**label))
        labels.append(label)
    return np.stack(videos), prompts, labels


def evaluate_pipeline(
    pipe: FlashVideoPipeline,
    num_samples: int = 24,
    seed: int = 0,
    batch_size: int = 8,
    modes: dict | None = None,
    sampling: dict | None = None,
) -> dict:
    """
    Run every inference mode on `num_samples` Shapes clips; returns a JSON-serialisable result dict.

    `sampling` (e.g. `{"temperature": 0.8, "top_k": 20}`) goes to every pipeline call and into the results.
    """
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}.")
    videos, prompts, labels = evaluation_set(num_samples, seed)

    reconstructed = codes_to_frames(pipe.vqvae, frames_to_codes(pipe.vqvae, videos, batch_size=64))
    results = {
        "num_samples": num_samples,
        "seed": seed,
        "sampling": dict(sampling or {}),
        "vq_reconstruction_psnr": float(psnr(_as_unit_float(reconstructed), _as_unit_float(videos)).mean()),
        "vq_reconstruction_clean_rate": accuracy(reconstructed, labels)["clean_clips"]["clean_rate"],
        "clean_clip_criteria": asdict(CLEAN_CLIP_CRITERIA),
        "modes": {},
    }
    for name, kwargs in tqdm((modes or INFERENCE_MODES).items(), desc="eval modes"):
        kwargs = dict(kwargs)
        frame_stride = kwargs.pop("frame_stride", 1)
        truth = videos[:, ::frame_stride]
        generated, conditioned, seconds, tokens, frames = [], [], 0.0, 0, 0
        for start in range(0, num_samples, batch_size):
            batch = slice(start, start + batch_size)
            generator = torch.Generator().manual_seed(seed + start)
            for first_frames, sink in ((None, generated), (videos[batch, 0], conditioned)):
                inputs = list(prompts[batch])
                if first_frames is not None:  # each prompt conditioned on its own clip's first frame
                    inputs = [{"prompt": text, "first_frame": frame} for text, frame in zip(inputs, first_frames)]
                began = time.perf_counter()
                outs = pipe(  # the batch in one generation, one output per prompt
                    inputs,
                    batch_size=len(inputs),
                    num_frames=truth.shape[1],
                    generator=generator,
                    **kwargs,
                    **(sampling or {}),
                )
                seconds += time.perf_counter() - began
                stats = outs[0].stats  # the batch's, shared by its outputs
                tokens += stats.tokens_sampled + stats.tokens_inherited
                clips = np.concatenate([out.frames for out in outs])
                frames += clips.shape[0] * clips.shape[1]
                sink.append(clips)
        generated, conditioned = np.concatenate(generated), np.concatenate(conditioned)
        scores = accuracy(generated, labels, frame_stride=frame_stride)
        continuation_true, continuation_generated = (
            _as_unit_float(truth[:, 1:]),
            _as_unit_float(conditioned[:, 1:]),
        )
        results["modes"][name] = {
            "color_accuracy": scores["color"],
            "shape_accuracy": scores["shape"],
            "direction_accuracy": scores["direction"],
            "all_attributes_accuracy": scores["all"],
            "direction_accuracy_by_prompt": scores["direction_by_prompt"],
            **_clean_clip_fields(scores["clean_clips"]),
            "conditioned_psnr": float(psnr(continuation_generated, continuation_true).mean()),
            "conditioned_ssim": float(ssim(continuation_generated, continuation_true).mean()),
            "tokens_per_second": tokens / seconds,
            "frames_per_second": frames / seconds,
        }
        logger.info("%s: %s", name, results["modes"][name])
    return results


def _clean_clip_fields(summary: dict) -> dict:
    """A mode's clean-clip entries in the results, from `shapes.summarize_clean_clips`."""
    parts = {key: value for key, value in summary.items() if key not in ("clean_rate", "clean_rate_stderr", "num_clips")}
    return {"clean_clip_rate": summary["clean_rate"], "clean_clip_rate_stderr": summary["clean_rate_stderr"], **parts}


def _clean_clip_markdown(modes: dict) -> list[str]:
    """The clean-clip table (DESIGN §10), for results that have it."""
    rows = {name: row for name, row in modes.items() if "clean_clip_rate" in row}
    if not rows:
        return []
    number = lambda value, spec: "—" if value is None else format(value, spec)  # noqa: E731
    lines = [
        "",
        "Clean clips (DESIGN §10: one object in every frame, prompted color, straight track at 1.5–2.5 px/frame, no "
        "jump over 5 px/frame); medians over the clips with a track; clips failing each criterion:",
        "",
        "| mode | clean | one object | stray-free | color frames | track RMS | largest jump | speed | "
        + " | ".join(CLEAN_CLIP_FAILURES)
        + " |",
        "|---|---:|---:|---:|---:|---:|---:|---:|" + "---:|" * len(CLEAN_CLIP_FAILURES),
    ]
    for name, row in rows.items():
        cells = [
            f"{row['clean_clip_rate']:.1%} ± {row['clean_clip_rate_stderr']:.1%}",
            f"{row['one_object_rate']:.1%}",
            f"{row['stray_free_rate']:.1%}",
            f"{row['color_frame_share']:.1%}",
            number(row["median_track_rms"], ".2f") + " px",
            number(row["median_largest_jump"], ".1f") + " px",
            number(row["median_speed"], ".2f") + " px",
            *(f"{row['failure_rates'][failure]:.0%}" for failure in CLEAN_CLIP_FAILURES),
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def results_markdown(results: dict, checkpoint: str) -> str:
    sampling = ", ".join(f"{k}={v}" for k, v in results.get("sampling", {}).items()) or "pipeline defaults"
    lines = [
        "# Evaluation on Shapes",
        "",
        f"Checkpoint: `{checkpoint}`; {results['num_samples']} clips (seed {results['seed']}); "
        f"date {time.strftime('%Y-%m-%d')}. Image tokenizer reconstruction PSNR: "
        f"{results['vq_reconstruction_psnr']:.2f} dB"
        + (
            f", clean clips {results['vq_reconstruction_clean_rate']:.1%}"
            if "vq_reconstruction_clean_rate" in results
            else ""
        )
        + f". Sampling: {sampling}."
        + (" Decode step compiled; the speeds include the compilation." if results.get("compiled") else ""),
        "",
        "| mode | color | shape | direction | all | PSNR (cond.) | SSIM (cond.) | tokens/s | frames/s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, row in results["modes"].items():
        lines.append(
            f"| {name} | {row['color_accuracy']:.1%} | {row['shape_accuracy']:.1%} | {row['direction_accuracy']:.1%} | "
            f"{row['all_attributes_accuracy']:.1%} | {row['conditioned_psnr']:.2f} | {row['conditioned_ssim']:.3f} | "
            f"{row['tokens_per_second']:.0f} | {row['frames_per_second']:.2f} |"
        )
    # .get: results written before the per-direction breakdown existed have none
    by_prompt = {name: row.get("direction_accuracy_by_prompt", {}) for name, row in results["modes"].items()}
    directions = sorted({direction for row in by_prompt.values() for direction in row})
    if directions:
        lines += [
            "",
            "Direction accuracy per prompted direction:",
            "",
            "| mode | " + " | ".join(directions) + " |",
            "|---|" + "---:|" * len(directions),
        ]
        for name, row in by_prompt.items():
            cells = [f"{row[d]:.1%}" if d in row else "—" for d in directions]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += _clean_clip_markdown(results["modes"])
    return "\n".join(lines) + "\n"


def run_evaluation(
    checkpoint: str,
    output_dir: Path,
    num_samples: int = 24,
    seed: int = 0,
    modes: list[str] | None = None,
    sampling: dict | None = None,
    compile: bool = False,
) -> Path:
    """
    Evaluate `checkpoint` and write `eval_results.json` and `eval_results.md` under `output_dir`.

    `modes` are short keys of `MODE_KEYS` (default: every mode); `sampling` as in `evaluate_pipeline`. `compile`
    compiles the decode step of both models (`FlashVideoPipeline.compile_recurrent_step`); the clips are the same, and
    the speeds measured include the compilation on the first batch of each shape.
    """
    selected = select_modes(modes)
    require_extra("eval", "flashvideo eval")  # before minutes of generation, not after
    pipe = FlashVideoPipeline.from_pretrained(checkpoint)
    pipe.show_progress = False
    if compile:
        pipe.compile_recurrent_step()
    results = evaluate_pipeline(pipe, num_samples=num_samples, seed=seed, modes=selected, sampling=sampling)
    results["checkpoint"] = str(checkpoint)
    results["compiled"] = compile
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "eval_results.json").write_text(json.dumps(results, indent=2))
    path = output_dir / "eval_results.md"
    path.write_text(results_markdown(results, str(checkpoint)))
    return path
