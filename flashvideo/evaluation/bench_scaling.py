"""Frames per second against clip length and resolution, the paper's Figure 6, in one run.

Four methods at every point: (a) the default pipeline (key frames + redundant-free interpolation + speculative
decoding), (b) FlashVideo fully autoregressive (every frame a key frame, one call per code), (c) a same-size Llama
through `generate()` with its KV cache, (d) the same Llama without a cache (estimated, as in `bench_video`).

- Length: 16, 31, 61 and 121 frames at 64² (the lengths nearest 16/32/64/128 that key-frame spacing 5 allows), with a
  trained pipeline for (a) — speculation and inheritance depend on trained weights; the shipped checkpoint by
  default — and random weights of the same size for (b) (plain decoding's speed does not depend on the weights; a
  random model can number more frames than the shipped one's 32 serial numbers).
- Resolution: 64² with a 16² code grid and 128² with a 32² grid, 16 frames, random weights for every method (a
  random model accepts almost no drafts, so (a)'s rows there show the structure's speed without speculation's gain).

    flashvideo bench scaling --output-dir benchmarks
"""

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import LlamaForCausalLM
from transformers.utils import logging

from ..configuration_flashvideo import FlashVideoConfig
from ..pipeline_flashvideo import FlashVideoPipeline
from .bench_decode import machine_description, same_size_llama
from .bench_video import PAPER_SPEED_UP, PROMPT, interleaved_medians, llama_clip_with_cache, random_pipeline
from .plotting import pyplot


logger = logging.get_logger(__name__)

CLIP_LENGTHS = (16, 31, 61, 121)
RESOLUTIONS = ((64, 16), (128, 32))  # (image size, code grid size)
METHODS = {
    "a": "(a) FlashVideo, the default pipeline",
    "b": "(b) FlashVideo, fully autoregressive",
    "c": "(c) Llama, generate() with KV cache",
    "d": "(d) Llama without cache (estimated)",
}


@dataclass
class ScalingPoint:
    sweep: str  # "length" or "resolution"
    num_frames: int
    image_size: int
    code_grid_size: int
    seconds: dict[str, float]  # method key -> seconds per clip

    @property
    def frames_per_second(self) -> dict[str, float]:
        return {method: self.num_frames / seconds for method, seconds in self.seconds.items()}


def estimate_without_cache(llama: LlamaForCausalLM, prefix: int, total: int, samples: int = 6, longest: int = 8192) -> float:
    """Seconds to decode tokens `prefix … total` without a cache: Σ over steps of one full forward at that length.

    Forwards are timed at evenly spaced lengths up to `longest` (longer ones would need the whole attention matrix
    in memory); beyond it the per-forward time follows a quadratic fitted to the timed lengths (the report says so).
    """
    lengths = np.linspace(prefix, min(total - 1, longest), samples).astype(int)
    seconds = []
    with torch.inference_mode():
        for length in lengths:
            ids = torch.randint(3, llama.config.vocab_size, (1, int(length)))
            started = time.perf_counter()
            llama(ids, use_cache=False, logits_to_keep=1)
            seconds.append(time.perf_counter() - started)
    steps = np.arange(prefix, total)
    fit = np.polyfit(lengths, seconds, deg=min(2, samples - 1))
    every_step = np.where(steps <= lengths[-1], np.interp(steps, lengths, seconds), np.polyval(fit, steps))
    return float(every_step.sum())


def _time_point(
    sweep: str, trained: FlashVideoPipeline, autoregressive: FlashVideoPipeline, llama: LlamaForCausalLM,
    num_frames: int, repeats: int,
) -> ScalingPoint:  # fmt: skip
    processor = autoregressive.processor  # numbers as many frames as the clip has, for the Llama too
    generator = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    measured = interleaved_medians(
        {
            "a": lambda: trained(PROMPT, num_frames=num_frames, generator=generator()),
            "b": lambda: autoregressive(
                PROMPT, num_frames=num_frames, interpolate=False, speculative=False, generator=generator()
            ),
            "c": lambda: llama_clip_with_cache(llama, processor, num_frames),
        },
        repeats,
    )
    seconds = {method: result[0] for method, result in measured.items()}
    prefix = len(processor.keyframe_prefix(PROMPT, 1))
    seconds["d"] = estimate_without_cache(llama, prefix, num_frames * (prefix + processor.layout.tokens_per_frame))
    config = trained.model.config
    return ScalingPoint(sweep, num_frames, config.image_size, config.code_grid_size, seconds)


def random_like(config: FlashVideoConfig, **overrides) -> FlashVideoPipeline:
    """A random-weight pipeline with `config`'s sizes, changed by `overrides`."""
    fields = {
        key: getattr(config, key)
        for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "value_dim",
                    "text_vocab_size", "image_vocab_size", "max_frames", "image_size", "code_grid_size")
    }  # fmt: skip
    return random_pipeline(FlashVideoConfig(**{**fields, **overrides}))


def run_scaling_benchmark(
    output_dir: Path,
    pipe: FlashVideoPipeline | None = None,
    lengths: tuple[int, ...] = CLIP_LENGTHS,
    resolutions: tuple[tuple[int, int], ...] = RESOLUTIONS,
    repeats: int = 1,
) -> Path:
    """Time every method at every clip length and resolution; write `scaling.{md,json,png}` under `output_dir`.

    `pipe`: the trained pipeline of the length sweep (default: the shipped checkpoint).
    """
    if pipe is None:
        from .. import default_checkpoint

        pipe = FlashVideoPipeline.from_pretrained(default_checkpoint(), device="cpu")
    pipe.show_progress = False
    config = pipe.model.config
    autoregressive = random_like(config, max_frames=max(max(lengths), config.max_frames))
    torch.manual_seed(0)
    llama = same_size_llama(autoregressive.model.config).eval()
    points = []
    progress = tqdm(total=len(lengths) + len(resolutions), desc="scaling benchmark")
    for num_frames in lengths:
        points.append(_time_point("length", pipe, autoregressive, llama, num_frames, repeats))
        progress.update()
    for image_size, grid in resolutions:
        random = random_like(config, image_size=image_size, code_grid_size=grid, max_frames=max(16, config.max_frames))
        points.append(_time_point("resolution", random, random, llama, 16, repeats))
        progress.update()
    progress.close()
    return write_scaling_report(points, config, output_dir, repeats)


def crossing(points: list[ScalingPoint], sweep: str) -> str:
    """Where the default pipeline's speed-up over the Llama with KV cache first reaches the paper's 9.17×."""
    rows = [p for p in points if p.sweep == sweep]
    key = (lambda p: p.num_frames) if sweep == "length" else (lambda p: p.image_size)
    ratios = [(key(p), p.seconds["c"] / p.seconds["a"]) for p in rows]
    for (x0, r0), (x1, r1) in zip([(None, None)] + ratios[:-1], ratios):
        if r1 >= PAPER_SPEED_UP:
            if x0 is None:
                return f"already at {x1} ({r1:.2f}×)"
            x = x0 + (PAPER_SPEED_UP - r0) / (r1 - r0) * (x1 - x0)  # linear between the two measured points
            return f"between {x0} ({r0:.2f}×) and {x1} ({r1:.2f}×), at about {x:.0f} by linear interpolation"
    return f"not within the measured range (largest {max(r for _, r in ratios):.2f}×)" if ratios else "not measured"


def write_scaling_report(points: list[ScalingPoint], config: FlashVideoConfig, output_dir: Path, repeats: int) -> Path:
    plt = pyplot()
    output_dir.mkdir(parents=True, exist_ok=True)
    lines = [
        "# Frames per second against clip length and resolution (the paper's Figure 6)",
        "",
        f"Batch 1, float32; model size hidden {config.hidden_size}, {config.num_hidden_layers} layers, "
        f"{config.num_attention_heads} heads, FFN {config.intermediate_size}, the Llama the same. Length sweep: "
        f"{config.image_size}² with the trained pipeline for (a), random weights of the same size for (b); resolution "
        "sweep: random weights throughout, 16 frames. (d) is estimated: one full forward per generated token, timed at "
        "6 lengths up to 8,192 tokens, a quadratic fit beyond.",
        f"Machine: {machine_description()}. Date: {time.strftime('%Y-%m-%d')}. Median of {repeats} run(s), the "
        "methods of a point timed round-robin.",
        "",
        "| sweep | frames | resolution (codes) | " + " | ".join(f"{METHODS[m]} frames/s" for m in METHODS)
        + " | (a) vs (c) |",
        "|---|---:|---|" + "---:|" * (len(METHODS) + 1),
    ]
    for p in points:
        fps = p.frames_per_second
        lines.append(
            f"| {p.sweep} | {p.num_frames} | {p.image_size}² ({p.code_grid_size}²) | "
            + " | ".join(f"{fps[m]:.3g}" for m in METHODS)
            + f" | {p.seconds['c'] / p.seconds['a']:.2f}× |"
        )
    lines += [
        "",
        f"- The default pipeline's speed-up over (c) reaches {PAPER_SPEED_UP}×: against clip length "
        f"{crossing(points, 'length')}; against resolution {crossing(points, 'resolution')}.",
    ]
    path = output_dir / "scaling.md"
    path.write_text("\n".join(lines) + "\n")
    records = [{**asdict(p), "frames_per_second": p.frames_per_second} for p in points]
    (output_dir / "scaling.json").write_text(json.dumps(records, indent=2))

    figure, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for axis, sweep, label in ((axes[0], "length", "frames per clip"), (axes[1], "resolution", "image size (px)")):
        rows = [p for p in points if p.sweep == sweep]
        xs = [p.num_frames if sweep == "length" else p.image_size for p in rows]
        for method, name in METHODS.items():
            axis.plot(xs, [p.frames_per_second[method] for p in rows], marker="o", label=name)
        axis.set_xscale("log", base=2)
        axis.set_yscale("log")
        axis.set_xlabel(label)
        axis.set_ylabel("frames per second")
        axis.set_xticks(xs, [str(x) for x in xs])
    axes[0].legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(output_dir / "scaling.png", dpi=120)
    plt.close(figure)
    return path
