"""Per-token decode latency and cache memory against position: FlashVideo (recurrent) vs a same-size Llama (KV cache).

The paper's central claim is that the cost of one more token does not depend on how long the video already is.
This measures it: for each position P, fill the cache with P tokens, then time single-token steps at P, P+1, …
and report the median. Both models are timed in the same run on the same machine.

    flashvideo bench decode --positions 256 1024 4096 8192 --output-dir benchmarks
"""

import json
import platform
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM
from transformers.utils import logging

from ..configuration_flashvideo import FlashVideoConfig
from ..modeling_flashvideo import FlashVideoForCausalLM, RetNetCache
from .plotting import save_line_panels


logger = logging.get_logger(__name__)


@dataclass
class DecodeMeasurement:
    model: str
    position: int
    median_ms_per_token: float
    cache_mib: float


def same_size_llama(config: FlashVideoConfig) -> LlamaForCausalLM:
    """A Llama with FlashVideo's hidden size, layers, heads, FFN width and vocabulary."""
    llama_config = LlamaConfig(
        vocab_size=config.vocab_size,
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads,
        max_position_embeddings=1 << 16,
        pad_token_id=config.pad_token_id,
    )
    return LlamaForCausalLM(llama_config)


def _cache_bytes(cache) -> int:
    if isinstance(cache, RetNetCache):
        return cache.nbytes
    return sum(layer.keys.nbytes + layer.values.nbytes for layer in cache.layers if layer.keys is not None)


@torch.inference_mode()
def measure_decode(
    model: torch.nn.Module, positions: list[int], steps: int = 32, prefill_chunk: int = 1024, seed: int = 0
) -> list[DecodeMeasurement]:
    """Median per-token latency of single-token forward calls at each position, and the cache size there.

    Every position gets its own filled cache first; then single steps are timed round-robin across the positions,
    so that a change in machine load during the run affects all positions alike instead of biasing one of them.
    """
    generator = torch.Generator().manual_seed(seed)
    vocab_size = model.config.vocab_size
    is_retnet = isinstance(model, FlashVideoForCausalLM)
    name = "FlashVideo (RetNet, recurrent)" if is_retnet else "Llama (KV cache)"
    caches, tokens = {}, {}
    for position in positions:
        cache = (
            RetNetCache(model.config.num_hidden_layers) if is_retnet else DynamicCache(config=model.config)
        )
        prompt = torch.randint(3, vocab_size, (1, position), generator=generator)
        # Prefill in chunks: the same state either way, and the Llama's O(L²) prefill stays within memory.
        for start in range(0, position, prefill_chunk):
            model(
                prompt[:, start : start + prefill_chunk],
                cache=cache,
                use_cache=True,
                logits_to_keep=1,
            )
        caches[position], tokens[position] = cache, torch.randint(3, vocab_size, (1, 1), generator=generator)
    timings = {position: [] for position in positions}
    for step in range(steps + 3):
        for position in positions:
            started = time.perf_counter()
            logits = model(tokens[position], cache=caches[position], use_cache=True).logits
            tokens[position] = logits[:, -1:].argmax(-1)
            if step >= 3:  # the first calls at a new size warm up allocator and kernels
                timings[position].append(time.perf_counter() - started)
    results = [
        DecodeMeasurement(name, p, 1000 * statistics.median(timings[p]), _cache_bytes(caches[p]) / 2**20)
        for p in positions
    ]
    for result in results:
        logger.info("%s at %d: %.3f ms/token", name, result.position, result.median_ms_per_token)
    return results


def machine_description() -> str:
    device = (
        torch.cuda.get_device_name()
        if torch.cuda.is_available()
        else f"CPU ({platform.processor() or platform.machine()})"
    )
    return f"{device}, {torch.get_num_threads()} torch threads, torch {torch.__version__}, Python {platform.python_version()}"


def write_report(results: list[DecodeMeasurement], config: FlashVideoConfig, output_dir: Path) -> Path:
    """Write `decode_latency.{md,json,png}` under `output_dir`; returns the markdown path."""
    output_dir.mkdir(parents=True, exist_ok=True)
    models = list(dict.fromkeys(r.model for r in results))
    positions = sorted({r.position for r in results})
    by_key = {(r.model, r.position): r for r in results}

    lines = [
        "# Decode latency vs position",
        "",
        f"Model size: hidden {config.hidden_size}, {config.num_hidden_layers} layers, {config.num_attention_heads} heads, "
        f"FFN {config.intermediate_size}, vocabulary {config.vocab_size}; batch 1, float32.",
        f"Machine: {machine_description()}. Date: {time.strftime('%Y-%m-%d')}.",
        "Median over single-token steps after filling the cache to the given position; steps timed round-robin across positions.",
        "",
        "| model | "
        + " | ".join(f"ms/token @ {p}" for p in positions)
        + " | "
        + " | ".join(f"cache MiB @ {p}" for p in positions)
        + " |",
        "|---|" + "---:|" * (2 * len(positions)),
    ]
    for model in models:
        latency = " | ".join(f"{by_key[(model, p)].median_ms_per_token:.3f}" for p in positions)
        memory = " | ".join(f"{by_key[(model, p)].cache_mib:.3f}" for p in positions)
        lines.append(f"| {model} | {latency} | {memory} |")
    first, last = positions[0], positions[-1]
    lines.append("")
    for model in models:
        ratio = by_key[(model, last)].median_ms_per_token / by_key[(model, first)].median_ms_per_token
        lines.append(f"- {model}: latency at {last} / latency at {first} = {ratio:.3f}")
    markdown_path = output_dir / "decode_latency.md"
    markdown_path.write_text("\n".join(lines) + "\n")
    (output_dir / "decode_latency.json").write_text(json.dumps([asdict(r) for r in results], indent=2))

    save_line_panels(
        output_dir / "decode_latency.png",
        "position (tokens already in the sequence)",
        {
            "ms per token (median)": {
                model: (positions, [by_key[(model, p)].median_ms_per_token for p in positions])
                for model in models
            },
            "cache memory (MiB)": {
                model: (positions, [by_key[(model, p)].cache_mib for p in positions]) for model in models
            },
        },
        title="Per-token decode cost vs position",
    )
    return markdown_path


def run_decode_benchmark(
    positions: list[int], output_dir: Path, steps: int = 64, config: FlashVideoConfig | None = None
) -> Path:
    """Measure both models at every position and write the report; returns the markdown path."""
    if not positions or min(positions) < 1:
        raise ValueError(f"positions must be a non-empty list of integers >= 1, got {positions}.")
    config = config or FlashVideoConfig()
    torch.manual_seed(0)
    # One thread: at batch 1 these matrices are too small to gain from more, and a single thread does not
    # spin-wait against other processes, which makes the medians far steadier on a shared machine.
    torch.set_num_threads(1)
    models = [FlashVideoForCausalLM(config).eval(), same_size_llama(config).eval()]
    results = []
    for model in tqdm(models, desc="decode benchmark"):
        results += measure_decode(model, positions, steps=steps)
    return write_report(results, config, output_dir)
