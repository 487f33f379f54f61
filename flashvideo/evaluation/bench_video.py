"""Time to generate a 16-frame 64×64 clip: FlashVideo's inference modes vs a same-size autoregressive Llama.

(a) FlashVideo key frames + interpolation + redundant-free, (b) FlashVideo fully autoregressive (every frame a
key frame), (c) a same-size `LlamaForCausalLM` through `generate()` with its KV cache, (d) the same Llama without a
cache. All on the same token layout ([text][SN_i][256 codes] per frame), in one run, median of repeats.

(d) recomputes the whole prefix for each of the ~4k new tokens — an hour on a CPU — so it is timed on single
forward passes at evenly spaced prefix lengths and summed over every step (linear interpolation between samples);
the report says so.

    flashvideo bench video --repeats 3 --output-dir benchmarks
"""

import json
import os
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import DynamicCache, LlamaForCausalLM, StaticCache
from transformers.generation import CompileConfig
from transformers.utils import logging

from ..configuration_flashvideo import FlashVideoConfig
from ..frame_sampler import ImageCodesOnlyLogitsProcessor
from ..image_tokenizer import codes_to_frames
from ..modeling_flashvideo import FlashVideoForCausalLM
from ..pipeline_flashvideo import FlashVideoPipeline, GenerationStats
from ..processing_flashvideo import FlashVideoProcessor
from .bench_decode import machine_description, same_size_llama
from .plotting import pyplot


logger = logging.get_logger(__name__)

PROMPT = "a red circle moving right"
FLASHVIDEO_A = "(a) FlashVideo, the default pipeline: key frames + interpolation + redundant-free (0.2), speculative"
FLASHVIDEO_A_PLAIN = "(a0) the same without speculative decoding"
FLASHVIDEO_B = "(b) FlashVideo: fully autoregressive"
LLAMA_C = "(c) Llama, generate() with KV cache"
FLASHVIDEO_A_COMPILED = "(a*) (a) with the decode step compiled"
LLAMA_C_COMPILED = "(c*) Llama, generate() with a static cache, compiled"


@dataclass
class VideoTiming:
    method: str
    median_seconds: float
    tokens_sampled: int
    tokens_inherited: int
    model_calls: int  # forward passes made one after another (a batched call counts once)
    estimated: bool = False
    compiled: bool = False
    tokens_drafted: int = 0
    tokens_accepted: int = 0
    stages: dict | None = None  # per stage: seconds, model calls, tokens sampled / inherited / drafted / accepted

    @property
    def frames_per_second(self) -> float:
        return 16 / self.median_seconds


def random_pipeline(config: FlashVideoConfig | None = None) -> FlashVideoPipeline:
    """A FlashVideo pipeline with random weights at the default size (speed does not depend on the weights)."""
    from ..data.shapes import prompts_for_all_attributes
    from ..image_tokenizer import build_vq_model
    from ..text_tokenizer import build_text_tokenizer

    config = config or FlashVideoConfig()
    torch.manual_seed(0)
    vq = build_vq_model(config.image_size, config.code_grid_size, config.image_vocab_size)
    tokenizer = build_text_tokenizer(prompts_for_all_attributes(), vocab_size=config.text_vocab_size)
    processor = FlashVideoProcessor(tokenizer, config)
    return FlashVideoPipeline(
        model=FlashVideoForCausalLM(config), processor=processor, vqvae=vq, device="cpu", show_progress=False
    )


def _median_time(fn, repeats: int, warm_up: bool = False) -> tuple[float, object]:
    """Median seconds of `repeats` calls of `fn` (after one untimed call with `warm_up`) and the last result."""
    return interleaved_medians({"": fn}, repeats, warm_up)[""]


def interleaved_medians(fns: dict, repeats: int, warm_up: bool = False) -> dict[str, tuple[float, object]]:
    """Median seconds and last result of each function, timed round-robin (one call of each, `repeats` times), so
    that a machine's slow spell hits every method alike; with `warm_up`, one untimed round first."""
    if warm_up:
        for fn in fns.values():
            fn()
    timings, results = {name: [] for name in fns}, {}
    for _ in range(repeats):
        for name, fn in fns.items():
            started = time.perf_counter()
            results[name] = fn()
            timings[name].append(time.perf_counter() - started)
    return {name: (statistics.median(timings[name]), results[name]) for name in fns}


def stage_summary(stats: GenerationStats) -> dict:
    """Seconds, model calls and token counts of the two sampling stages of a `GenerationStats`."""
    summary = stats.to_dict()
    return {name: summary[name] for name in ("key_frames", "interpolation")}


def flashvideo_timing(method: str, seconds: float, stats, compiled: bool = False) -> VideoTiming:
    """A `VideoTiming` from a pipeline call's `GenerationStats`."""
    stages = (stats.key_frames, stats.interpolation)
    return VideoTiming(
        method, seconds, sum(s.tokens_sampled for s in stages), stats.interpolation.tokens_inherited,
        sum(s.model_calls for s in stages), compiled=compiled, tokens_drafted=sum(s.tokens_drafted for s in stages),
        tokens_accepted=sum(s.tokens_accepted for s in stages), stages=stage_summary(stats),
    )  # fmt: skip


@torch.inference_mode()
def llama_clip_with_cache(
    llama: LlamaForCausalLM, processor: FlashVideoProcessor, num_frames: int, seed: int = 0, compiled: bool = False
):
    """Generate a clip with the Llama as an autoregressive transformer would: one generate() call per frame.

    `compiled`: a `StaticCache` sized for the clip, with which `generate()` compiles the forward (transformers'
    own compiled decoding; told to do so on a CPU too). Otherwise a `DynamicCache` in eager mode.
    """
    torch.manual_seed(seed)
    config = llama.config
    restrict = [ImageCodesOnlyLogitsProcessor(processor.layout.image_token_range)]
    tokens = processor.layout.tokens_per_frame
    compile_config = None
    if compiled:
        clip_length = num_frames * (len(processor.keyframe_prefix(PROMPT, 1)) + tokens)
        cache = StaticCache(config=config, max_cache_len=clip_length)
        compile_config = CompileConfig(fullgraph=False, mode="default")
        compile_config._compile_all_devices = True  # generate() compiles only on accelerators unless told
    else:
        cache = DynamicCache(config=config)
    sequence = torch.empty(1, 0, dtype=torch.long)
    for number in range(1, num_frames + 1):
        sequence = torch.cat([sequence, torch.tensor([processor.keyframe_prefix(PROMPT, number)])], dim=1)
        sequence = llama.generate(
            sequence, attention_mask=torch.ones_like(sequence), cache=cache, max_new_tokens=tokens,
            min_new_tokens=tokens, do_sample=True, logits_processor=restrict, eos_token_id=None, pad_token_id=0,
            compile_config=compile_config,
        )  # fmt: skip
    return sequence


@torch.inference_mode()
def estimate_llama_without_cache(
    llama: LlamaForCausalLM, prefix_length: int, total_length: int, samples: int = 6
) -> float:
    """Seconds for greedy-free decoding without a cache: Σ over steps of one full forward at that length."""
    lengths = np.linspace(prefix_length, total_length - 1, samples).astype(int)
    seconds = []
    for length in lengths:
        ids = torch.randint(3, llama.config.vocab_size, (1, int(length)))
        started = time.perf_counter()
        llama(ids, use_cache=False, logits_to_keep=1)
        seconds.append(time.perf_counter() - started)
    every_step = np.interp(np.arange(prefix_length, total_length), lengths, seconds)
    return float(every_step.sum())


def profile_decode_step(model: FlashVideoForCausalLM, steps: int = 64) -> list[tuple[str, float, float]]:
    """(operator, ms per decode step, share of the step) for the recurrent step, from torch.profiler."""
    from torch.profiler import ProfilerActivity, profile

    with torch.inference_mode():
        out = model(torch.randint(3, model.config.vocab_size, (1, 300)), use_cache=True)
        cache, token = out.cache, torch.tensor([[5]])
        for _ in range(8):
            model(token, cache=cache, use_cache=True)
        with profile(activities=[ProfilerActivity.CPU]) as profiler:
            for _ in range(steps):
                model(token, cache=cache, use_cache=True)
    events = profiler.key_averages()
    total = sum(event.self_cpu_time_total for event in events)
    top = sorted(events, key=lambda event: event.self_cpu_time_total, reverse=True)[:10]
    return [(e.key, e.self_cpu_time_total / steps / 1000, e.self_cpu_time_total / total) for e in top]


def run_video_benchmark(
    output_dir: Path,
    repeats: int = 3,
    pipe: FlashVideoPipeline | None = None,
    checkpoint: str | None = None,
    compile: bool = False,
) -> Path:
    """
    Time (a)–(d), profile the decode step, and write the report under `output_dir`.

    On random weights (the default) the report is `video_generation.{md,json,png}`. With `checkpoint` (a trained
    pipeline) it is `video_generation_trained.*`: trained key frames share most of their codes, so this is where
    redundant-free interpolation inherits tokens. `compile` adds (a), (b) and (c) again with compiled decoding
    (`FlashVideoPipeline.compile_recurrent_step`; the Llama through `generate()` with a static cache), each timed
    after one untimed run that compiles.
    """
    if checkpoint is not None:
        pipe = FlashVideoPipeline.from_pretrained(checkpoint, device="cpu")
        pipe.show_progress = False
    pipe = pipe or random_pipeline()
    config, processor = pipe.model.config, pipe.processor
    torch.manual_seed(0)
    llama = same_size_llama(config).eval()
    timings = []

    flashvideo_methods = {
        FLASHVIDEO_A: dict(),  # the pipeline's defaults
        FLASHVIDEO_A_PLAIN: dict(speculative=False),
        "(a′) the default, inheriting every stable token (1.0)": dict(inherit_ratio=1.0),
        FLASHVIDEO_B: dict(interpolate=False, speculative=False),
    }

    # Token generation, what the Llama's generate() does too: the codes, not decoded (the VQ model's time to turn
    # them into pixels is the same for both and measured on its own below).
    def clip(kwargs: dict):
        return lambda: pipe(
            PROMPT, num_frames=16, generator=torch.Generator().manual_seed(0), output_type="latent", **kwargs
        )

    tokens = 16 * config.tokens_per_frame
    llama_passes = []  # one entry per forward pass of (c)'s eager runs; (c*) makes the same passes, compiled

    # FlashVideo's methods and the Llama timed round-robin in one loop; a compiled set after one untimed round.
    def time_together(methods: dict, llama_method: str, compiled: bool = False) -> None:
        functions = {method: clip(kwargs) for method, kwargs in methods.items()}
        functions[llama_method] = lambda: llama_clip_with_cache(llama, processor, 16, compiled=compiled)
        # The pass counter stays off compiled runs, where it would be traced into the graph.
        handle = None if compiled else llama.register_forward_pre_hook(lambda module, args: llama_passes.append(1))
        try:
            measured = interleaved_medians(functions, repeats, warm_up=compiled)
        finally:
            if handle is not None:
                handle.remove()
        for method, (seconds, result) in measured.items():
            if method == llama_method:
                timings.append(VideoTiming(method, seconds, tokens, 0, len(llama_passes) // repeats, compiled=compiled))
            else:
                timings.append(flashvideo_timing(method, seconds, result.stats, compiled=compiled))
        progress.update(len(functions))

    progress = tqdm(total=6 + 3 * compile, desc="video benchmark")
    time_together(flashvideo_methods, LLAMA_C)
    prefix = len(processor.keyframe_prefix(PROMPT, 1))
    total = 16 * (prefix + config.tokens_per_frame)
    seconds = estimate_llama_without_cache(llama, prefix, total)
    timings.append(VideoTiming("(d) Llama without cache", seconds, tokens, 0, tokens, estimated=True))
    progress.update()
    profile = profile_decode_step(pipe.model)  # the eager step, before any compilation
    if compile:
        pipe.compile_recurrent_step()
        compiled_methods = {
            FLASHVIDEO_A_COMPILED: flashvideo_methods[FLASHVIDEO_A],
            "(b*) (b) with the decode step compiled": flashvideo_methods[FLASHVIDEO_B],
        }
        time_together(compiled_methods, LLAMA_C_COMPILED, compiled=True)
    progress.close()
    timings.sort(key=lambda t: METHOD_ORDER.index(t.method.split()[0]) if t.method.split()[0] in METHOD_ORDER else 99)

    extras = {
        "interpolation_calls": interpolation_call_counts(pipe),
        "recursive": recursive_clip_timing(pipe, repeats),
        "vq_decode_seconds": vq_decode_seconds(pipe, repeats),
    }
    return write_video_report(timings, profile, config, output_dir, repeats, checkpoint, extras)


INHERIT_RATIOS = (0.0, 0.2, 0.5, 1.0)


def interpolation_call_counts(pipe: FlashVideoPipeline, seed: int = 0) -> list[dict]:
    """Sequential interpolation calls per inserted frame (the three pairs of a 16-frame clip form one batch) at each
    inherit ratio, with and without speculative decoding, from the same key frames."""
    key_frames = pipe.generate_key_frames([PROMPT], 4, generator=torch.Generator().manual_seed(seed))
    rows = []
    for ratio in INHERIT_RATIOS:
        for speculative in (False, True):
            stats = GenerationStats()
            pipe.interpolate(
                [PROMPT], key_frames, 4, stats, redundant_free=True, inherit_ratio=ratio, speculative=speculative,
                generator=torch.Generator().manual_seed(seed),
            )  # fmt: skip
            stage = stats.interpolation
            rows.append(
                {"inherit_ratio": ratio, "speculative": speculative, "calls_per_inserted_frame": stage.model_calls / 4,
                 "tokens_inherited": stage.tokens_inherited, "tokens_drafted": stage.tokens_drafted,
                 "tokens_accepted": stage.tokens_accepted}
            )  # fmt: skip
    return rows


def recursive_clip_timing(pipe: FlashVideoPipeline, repeats: int) -> dict:
    """Frames per second of a 61-frame clip by recursive interpolation: 4 key frames, 16 frames, then 61."""
    kwargs = dict(num_frames=61, key_frame_spacing=5, recursive_spacings=(4,))
    if pipe.max_num_frames(5, True, (4,)) < 61:
        return {}
    seconds, result = _median_time(
        lambda: pipe(PROMPT, generator=torch.Generator().manual_seed(0), output_type="latent", **kwargs), repeats
    )
    return {**kwargs, "recursive_spacings": [4], "median_seconds": seconds, "frames_per_second": 61 / seconds,
            "stages": stage_summary(result.stats)}  # fmt: skip


def vq_decode_seconds(pipe: FlashVideoPipeline, repeats: int) -> float:
    """Median seconds the VQ model takes to turn a 16-frame clip's codes into pixels (either model's clip needs it)."""
    codes = pipe(PROMPT, num_frames=16, generator=torch.Generator().manual_seed(0), output_type="latent").frames
    return _median_time(lambda: codes_to_frames(pipe.vqvae, codes), repeats)[0]


METHOD_ORDER = ["(a)", "(a0)", "(a′)", "(b)", "(c)", "(d)", "(a*)", "(b*)", "(c*)"]
PAPER_SPEED_UP = 9.17  # FlashVideo's headline against an autoregressive transformer


def speed_up_decomposition(timings: list[VideoTiming]) -> list[str]:
    """Markdown lines splitting each (a) vs (c) speed-up into fewer sequential calls × cheaper calls."""
    by_method = {t.method: t for t in timings}
    lines = ["", "## The speed-up = fewer sequential calls × cheaper calls", ""]
    for flashvideo, llama in ((FLASHVIDEO_A, LLAMA_C), (FLASHVIDEO_A_COMPILED, LLAMA_C_COMPILED)):
        if flashvideo not in by_method or llama not in by_method:
            continue
        a, c = by_method[flashvideo], by_method[llama]
        fewer = c.model_calls / a.model_calls
        cheaper = (c.median_seconds / c.model_calls) / (a.median_seconds / a.model_calls)
        a_label, c_label = flashvideo.split()[0], llama.split()[0]  # "(a)", "(c*)", …
        lines.append(
            f"- {a_label} vs {c_label}: {a.model_calls} calls against {c.model_calls}, {fewer:.2f}× fewer; "
            f"{a.median_seconds / a.model_calls * 1e3:.2f} ms per call (batched calls and the sampler's work "
            f"included) against {c.median_seconds / c.model_calls * 1e3:.2f} ms, {cheaper:.2f}× cheaper; "
            f"together {fewer * cheaper:.2f}×. The paper's {PAPER_SPEED_UP}× would take calls "
            f"{PAPER_SPEED_UP / fewer:.2f}× cheaper than {c_label}'s at this call count."
        )
    return lines


def stage_lines(timings: list[VideoTiming]) -> list[str]:
    """Per stage of each FlashVideo method: seconds, calls, tokens sampled / inherited, drafts and acceptance."""
    lines = ["", "Per stage (drafts: accepted / verified, and the share accepted from each draft source):", "",
             "| method | stage | seconds | model calls | sampled | inherited | drafts | by source |",
             "|---|---|---:|---:|---:|---:|---:|---|"]  # fmt: skip
    for t in timings:
        for stage, row in (t.stages or {}).items():
            if not row["frames"]:
                continue
            drafts = f"{row['tokens_accepted']} / {row['tokens_drafted']}" if row["tokens_drafted"] else "—"
            sources = ", ".join(
                f"{source} {accepted / drafted:.0%}" for source, (drafted, accepted) in row["drafts_by_source"].items()
            )
            lines.append(
                f"| {t.method.split()[0]} | {stage} | {row['seconds']:.2f} | {row['model_calls']} | "
                f"{row['tokens_sampled']} | {row['tokens_inherited']} | {drafts} | {sources or '—'} |"
            )
    return lines


def extra_lines(extras: dict) -> list[str]:
    lines = []
    if extras.get("interpolation_calls"):
        lines += ["", "## Redundant-free interpolation: sequential calls per inserted frame", "",
                  "The three pairs of the clip as one batch, the same key frames for every row; a sampled token and the "
                  "run of inherited tokens after it go in one call.", "",
                  "| inherit ratio | speculative | calls per inserted frame | tokens inherited | drafts accepted / verified |",
                  "|---:|---|---:|---:|---:|"]  # fmt: skip
        for row in extras["interpolation_calls"]:
            drafts = f"{row['tokens_accepted']} / {row['tokens_drafted']}" if row["tokens_drafted"] else "—"
            lines.append(
                f"| {row['inherit_ratio']} | {'yes' if row['speculative'] else 'no'} | "
                f"{row['calls_per_inserted_frame']:.1f} | {row['tokens_inherited']} | {drafts} |"
            )
    if extras.get("vq_decode_seconds"):
        lines += ["", f"Times are token generation: the pipeline with `output_type=\"latent\"` (the clip's codes), the "
                  "Llama's `generate()`. Turning a clip's codes into pixels with the VQ model takes "
                  f"{extras['vq_decode_seconds']:.3f} s more for either (median of the same repeats), not included."]
    if extras.get("recursive"):
        r = extras["recursive"]
        lines += ["", "## Recursive interpolation", "",
                  f"A {r['num_frames']}-frame clip (4 key frames, spacing {r['key_frame_spacing']}, then "
                  f"`recursive_spacings={r['recursive_spacings']}`): {r['median_seconds']:.2f} s, "
                  f"**{r['frames_per_second']:.1f} frames/s**; interpolation "
                  f"{r['stages']['interpolation']['model_calls']} calls for {r['stages']['interpolation']['frames']} "
                  "inserted frames."]  # fmt: skip
    return lines


def write_video_report(
    timings, profile, config, output_dir: Path, repeats: int, checkpoint: str | None = None, extras: dict | None = None
) -> Path:
    plt = pyplot()
    output_dir.mkdir(parents=True, exist_ok=True)
    baseline = next(t for t in timings if t.method == LLAMA_C)
    name, title, weights = (
        ("video_generation", "Video generation speed", "random weights (speed does not depend on them; "
         "redundant-free savings do, see the inherited column)")
        if checkpoint is None
        else ("video_generation_trained", "Video generation speed, trained checkpoint",
              f"the trained checkpoint `{os.path.relpath(checkpoint)}`")
    )  # fmt: skip
    lines = [
        f"# {title}",
        "",
        f"One 16-frame {config.image_size}×{config.image_size} clip ({config.tokens_per_frame} codes per frame), "
        f"batch 1, float32, {weights}. Model size: hidden {config.hidden_size}, {config.num_hidden_layers} "
        f"layers, {config.num_attention_heads} heads, FFN {config.intermediate_size}; the Llama has the same sizes "
        "and vocabulary.",
        f"Machine: {machine_description()}. Date: {time.strftime('%Y-%m-%d')}. Median of {repeats} runs.",
        "",
        "| method | seconds per clip | frames/s | tokens sampled | tokens inherited | drafts accepted / verified | "
        "model calls | speed-up vs (c) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for t in timings:
        mark = " (estimated†)" if t.estimated else ""
        drafts = f"{t.tokens_accepted} / {t.tokens_drafted}" if t.tokens_drafted else "—"
        lines.append(
            f"| {t.method}{mark} | {t.median_seconds:.2f} | {t.frames_per_second:.2f} | {t.tokens_sampled} | "
            f"{t.tokens_inherited} | {drafts} | {t.model_calls} | {baseline.median_seconds / t.median_seconds:.2f}× |"
        )
    lines += stage_lines(timings)
    lines += extra_lines(extras or {})
    lines += [
        "",
        "† (d) is the sum, over every generated token, of one full forward pass at that prefix length, timed at 6 "
        "evenly spaced lengths and interpolated linearly.",
        *(
            [
                "",
                "\\* Compiled rows (`flashvideo bench video --compile`) are timed after one untimed run that compiles: "
                "FlashVideo through `FlashVideoPipeline.compile_recurrent_step()` (ahead of time, AOTInductor), the "
                "Llama through transformers' own compiled decoding (`generate()` with a `StaticCache`).",
            ]
            if any(t.compiled for t in timings)
            else []
        ),
        "",
        "Model calls: forward passes made one after another (a batch of interpolation pairs is one call per "
        "position); decoding cannot overlap them.",
        *speed_up_decomposition(timings),
        "",
        "## Where the time goes: one recurrent decode step (torch.profiler, self CPU time)",
        "",
        "| operator | ms per step | share |",
        "|---|---:|---:|",
        *(f"| `{name}` | {ms:.4f} | {share:.1%} |" for name, ms, share in profile),
    ]
    path = output_dir / f"{name}.md"
    path.write_text("\n".join(lines) + "\n")
    results = [{**asdict(t), "frames_per_second": t.frames_per_second} for t in timings]
    (output_dir / f"{name}.json").write_text(json.dumps({"methods": results, **(extras or {})}, indent=2))
    figure, axis = plt.subplots(figsize=(8, 3.5))
    axis.barh([t.method for t in timings][::-1], [t.median_seconds for t in timings][::-1], color="tab:blue")
    axis.set_xscale("log")
    axis.set_xlabel("seconds per 16-frame clip (log scale)")
    figure.tight_layout()
    figure.savefig(output_dir / f"{name}.png", dpi=120)
    plt.close(figure)
    return path
