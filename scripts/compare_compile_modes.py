"""The decode step and a whole clip of the shipped checkpoint eager, with `torch.compile`, and compiled ahead of time
(AOTInductor, the default of `compile_recurrent_step`), in one process, timed round-robin; writes a markdown table.

    OMP_NUM_THREADS=1 python scripts/compare_compile_modes.py --rounds 5 --output benchmarks/compile_modes.md

Each variant is a pipeline of its own, compiled (two untimed clips compile every shape) before the timed rounds; a
round times one clip and 100 decode steps of the key-frame model (batch 1, from a cache of 7 tokens) per variant.
"""

import argparse
import statistics
import sys
import time
from datetime import date
from pathlib import Path

import torch

from flashvideo import FlashVideoPipeline, RetNetCache, default_checkpoint


PROMPT = "a red circle moving right"


def time_clip(pipe: FlashVideoPipeline, seed: int) -> float:
    start = time.perf_counter()
    pipe(PROMPT, generator=torch.Generator().manual_seed(seed))
    return time.perf_counter() - start


def time_decode_step(model, steps: int = 100) -> float:
    """Milliseconds per `decode` of one token, steps back to back as a decoding loop makes them."""
    config = model.config
    cache = RetNetCache(config.num_hidden_layers)
    generator = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        prompt = torch.randint(config.image_token_start, config.vocab_size, (1, 7), generator=generator)
        model(prompt, cache=cache, use_cache=True)
        step = prompt[:, -1:]
        for _ in range(5):
            model.decode(step, cache)
        start = time.perf_counter()
        for _ in range(steps):
            model.decode(step, cache)
    return (time.perf_counter() - start) / steps * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="timed round-robin rounds (medians over them), >= 5")
    parser.add_argument("--output", type=Path, default=Path("benchmarks/compile_modes.md"))
    args = parser.parse_args()
    if args.rounds < 5:
        parser.error(f"--rounds must be >= 5 (medians of at least 5), got {args.rounds}")
    torch.set_num_threads(1)
    variants = {name: FlashVideoPipeline.from_pretrained(default_checkpoint(), show_progress=False) for name in (
        "eager", "torch.compile", "ahead of time (AOTInductor)")}  # fmt: skip
    variants["torch.compile"].compile_recurrent_step(ahead_of_time=False)
    variants["ahead of time (AOTInductor)"].compile_recurrent_step()
    for pipe in variants.values():  # every call shape compiled before timing
        time_clip(pipe, 0)
        time_clip(pipe, 1)
    clips = {name: [] for name in variants}
    steps = {name: [] for name in variants}
    for round_index in range(args.rounds):
        for name, pipe in variants.items():
            clips[name].append(time_clip(pipe, 100 + round_index))
            steps[name].append(time_decode_step(pipe.model))
    lines = [
        "# Decode step and clip: eager, `torch.compile`, ahead of time",
        "",
        f"Shipped checkpoint, 1 torch thread, {date.today().isoformat()}; `python {' '.join(sys.argv)}`.",
        f"One process, round-robin, median (min) of {args.rounds} rounds.",
        "",
        "| variant | ms per decode step | × eager | seconds per clip | × eager |",
        "|---|---:|---:|---:|---:|",
    ]
    eager_step, eager_clip = statistics.median(steps["eager"]), statistics.median(clips["eager"])
    for name in variants:
        step, clip = statistics.median(steps[name]), statistics.median(clips[name])
        lines.append(
            f"| {name} | {step:.3f} ({min(steps[name]):.3f}) | {step / eager_step:.2f} | {clip:.2f} "
            f"({min(clips[name]):.2f}) | {clip / eager_clip:.2f} |"
        )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
