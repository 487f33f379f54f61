"""Interpolation models compared on the same clips, from the TRUE (VQ-encoded) key frames: stage (b) of issue 21's
diagnosis (docs/default_checkpoint.md, "Clean clips: diagnosis per stage"), for several models in one run.

    OMP_NUM_THREADS=2 python scripts/compare_interpolation_models.py --seed 26000 --num-samples 96 \
        --output docs/default_checkpoint/phase21/from_true_key_frames_96_seed26000.jsonl \
        shipped "phase 20=docs/default_checkpoint/phase20/interpolation" "phase 21=runs/phase21/interpolation"

Each model is `shipped` (the default checkpoint's interpolation model) or `NAME=PATH` (a model directory; a training
checkpoint without its config.json takes the one of the shipped interpolation model). Every model fills in the same
key frames with the pipeline's default interpolation settings (redundant-free, inherit ratio 0.2, sampling) and the
same generator seeds. `--one-background-code` measures issue 21's background-code lever without retraining: before
interpolation, every key-frame cell that decodes to plain black together with its eight neighbours gets one code,
the commonest such code of Shapes clips of `--background-seed` or the one given, so that A and B agree wherever both
are background. Writes one JSON line per model: the clean-clip summary (`summarize_clean_clips`) and the placement
of the inserted objects (`direction_by_stage.inserted_frame_placement`).
"""

import argparse
import itertools
import json
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open

from flashvideo import FlashVideoConfig, FlashVideoForCausalLM, default_checkpoint
from flashvideo.evaluation.evaluate import evaluation_set
from flashvideo.evaluation.metrics import psnr
from flashvideo.evaluation.shapes import CLEAN_CLIP_CRITERIA, clean_clip_report, frame_objects, summarize_clean_clips
from flashvideo.image_tokenizer import codes_to_frames, frames_to_codes
from flashvideo.pipeline_flashvideo import INTERPOLATION_SUBFOLDER, FlashVideoPipeline

sys.path.insert(0, str(Path(__file__).parent))
from direction_by_stage import KEY_FRAME_SPACING, background_cells, inserted_frame_placement  # noqa: E402

BRIGHT_LEVEL = CLEAN_CLIP_CRITERIA.bright_level  # a background cell has no channel above the clean clips' level


def commonest_background_code(pipe: FlashVideoPipeline, seed: int, num_clips: int = 64) -> int:
    """The code the image tokenizer gives background cells most often, over the frames of Shapes clips of `seed`."""
    videos, _, _ = evaluation_set(num_clips, seed)
    frames = np.ascontiguousarray(videos[:, ::KEY_FRAME_SPACING])
    codes = frames_to_codes(pipe.vqvae, frames).numpy()
    return int(np.bincount(codes[background_cells(frames, codes.shape[-1], BRIGHT_LEVEL)]).argmax())


def with_one_background_code(pipe: FlashVideoPipeline, codes: torch.Tensor, code: int) -> torch.Tensor:
    """`codes` `[batch, K, grid, grid]` with every cell that decodes to background (`background_cells`) set to
    `code`."""
    decoded = codes_to_frames(pipe.vqvae, codes)
    black = torch.from_numpy(background_cells(decoded, codes.shape[-1], BRIGHT_LEVEL))
    return torch.where(black, torch.as_tensor(code, dtype=codes.dtype), codes)


def load_interpolation_model(spec: str) -> tuple[str, FlashVideoForCausalLM]:
    """`shipped` or `NAME=PATH` -> (name, float32 model in eval mode), loaded from its float16 or float32 weights."""
    if spec == "shipped":
        name, path = spec, Path(default_checkpoint()) / INTERPOLATION_SUBFOLDER
    else:
        name, _, path = spec.partition("=")
        path = Path(path)
    if (path / "config.json").exists():
        config = FlashVideoConfig.from_pretrained(path)
    else:  # a training checkpoint: the shipped interpolation model's config, with the depth its weights have
        config = FlashVideoConfig.from_pretrained(Path(default_checkpoint()) / INTERPOLATION_SUBFOLDER)
        with safe_open(path / "model.safetensors", "pt") as weights:
            layers = {int(key.split(".")[2]) for key in weights.keys() if key.startswith("model.layers.")}
        config = FlashVideoConfig(**{**config.to_dict(), "num_hidden_layers": len(layers)})
    model = FlashVideoForCausalLM.from_pretrained(path, config=config, dtype=torch.float32)
    return name, model.eval()


def uniformly_black_codes(pipe: FlashVideoPipeline) -> list[int]:
    """The codes that decode to black (no channel above `bright_level`) when they fill a whole frame's grid: the
    candidates for one background code. The tokenizer's decoder mixes neighbouring cells, so a code that is black in
    the encoder's usual background texture need not be black on its own."""
    grid = pipe.processor.layout.code_grid_size
    codes = torch.arange(pipe.processor.layout.image_vocab_size)[:, None, None, None].expand(-1, 1, grid, grid)
    brightest = codes_to_frames(pipe.vqvae, codes.contiguous()).reshape(len(codes), -1).max(axis=1)
    return np.nonzero(brightest <= BRIGHT_LEVEL)[0].tolist()


def key_frames_with_one_code(
    pipe: FlashVideoPipeline, frames: np.ndarray, codes: torch.Tensor, one_code: torch.Tensor, code: int
) -> dict[str, float]:
    """What one background code does to the true key frames themselves (`frames`, their `codes`, and `one_code`: the
    same with `code` in every background cell), before any interpolation: their VQ reconstruction's PSNR against the
    truth and the share of frames with one object and with no stray pixels, for either codes."""
    result = {"background_code": code, "uniformly_black_codes": uniformly_black_codes(pipe)}
    for variant, variant_codes in (("own codes", codes), ("one code", one_code)):
        decoded = codes_to_frames(pipe.vqvae, variant_codes)
        found = [frame_objects(frame) for frame in decoded.reshape(-1, *decoded.shape[2:])]
        result[variant] = {
            "psnr_db": psnr(torch.from_numpy(decoded) / 255.0, torch.from_numpy(frames) / 255.0).mean().item(),
            "one_object_frames": float(np.mean([f.num_objects == 1 for f in found])),
            "stray_free_frames": float(
                np.mean([f.stray_pixels <= CLEAN_CLIP_CRITERIA.max_stray_pixels for f in found])
            ),
        }
    return result


def interpolate(
    pipe: FlashVideoPipeline, key_frames: torch.Tensor, prompts: list[str], seed: int, batch_size: int
) -> np.ndarray:
    """The clips `pipe.interpolation_model` makes from `key_frames` (codes `[N, K, grid, grid]`) with the pipeline's
    default interpolation settings, `batch_size` clips at a time."""
    clips = []
    for start in range(0, len(key_frames), batch_size):
        filled = pipe.interpolate(
            list(prompts[start : start + batch_size]), key_frames[start : start + batch_size], KEY_FRAME_SPACING - 1,
            redundant_free=True, inherit_ratio=0.2, generator=torch.Generator().manual_seed(seed + start),
        )  # fmt: skip
        clips.append(codes_to_frames(pipe.vqvae, filled))
    return np.concatenate(clips)


def model_comparison_parser(description: str, seed_help: str) -> argparse.ArgumentParser:
    """The arguments of a script that compares models on the same Shapes clips: the models (`shipped` or
    `NAME=PATH`), `--seed`, `--num-samples`, `--batch-size`."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", help="'shipped' or NAME=PATH, one or more")
    parser.add_argument("--seed", type=int, required=True, help=seed_help)
    parser.add_argument("--num-samples", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=8)
    return parser


def main() -> None:
    parser = model_comparison_parser(__doc__, "evaluation set and generator seeds")
    parser.add_argument("--output", type=Path, help="a .jsonl file (default: print only)")
    parser.add_argument(
        "--one-background-code", nargs="?", const=-1, type=int, metavar="CODE",
        help="also each model with one background code (CODE; without it, the commonest, see --background-seed)",
    )  # fmt: skip
    parser.add_argument("--background-seed", type=int, default=1, help="Shapes clips the commonest code is found on")
    args = parser.parse_args()

    pipe = FlashVideoPipeline.from_pretrained(default_checkpoint(), show_progress=False)
    videos, prompts, labels = evaluation_set(args.num_samples, args.seed)
    frames = np.ascontiguousarray(videos[:, ::KEY_FRAME_SPACING])
    codes = frames_to_codes(pipe.vqvae, frames)  # the true key frames, encoded once for every model
    variants = {None: codes}
    if args.one_background_code is not None:
        code = args.one_background_code
        code = commonest_background_code(pipe, args.background_seed) if code < 0 else code
        variants[code] = with_one_background_code(pipe, codes, code)
        print(json.dumps(key_frames_with_one_code(pipe, frames, codes, variants[code], code)), flush=True)
    cell = videos.shape[2] // pipe.processor.layout.code_grid_size
    lines = []
    for spec, background_code in itertools.product(args.models, variants):
        name, pipe.interpolation_model = load_interpolation_model(spec)
        if background_code is not None:
            name = f"{name}, one background code ({background_code})"
        clips = interpolate(pipe, variants[background_code], prompts, args.seed, args.batch_size)
        summary = summarize_clean_clips([clean_clip_report(c, label["color"]) for c, label in zip(clips, labels)])
        placement = inserted_frame_placement(clips, videos, labels, cell=cell)
        lines.append(
            {"model": name, "spec": spec, "seed": args.seed, "background_code": background_code, **summary,
             "placement": placement}
        )  # fmt: skip
        print(
            f"{name}: clean {summary['clean_rate']:.1%} ± {summary['clean_rate_stderr']:.1%}, one object "
            f"{summary['one_object_rate']:.1%}, stray-free {summary['stray_free_rate']:.1%}, track RMS "
            f"{summary['median_track_rms']:.2f} px, largest jump {summary['median_largest_jump']:.1f} px, within 5 px "
            f"{placement['near']:.1%}, median distance {placement['median_px']:.2f} px",
            flush=True,
        )
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text("".join(json.dumps(line) + "\n" for line in lines))


if __name__ == "__main__":
    main()
