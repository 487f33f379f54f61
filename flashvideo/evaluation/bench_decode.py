"""Per-token decode latency and cache memory against position: FlashVideo (recurrent) vs a same-size Llama (KV cache);
then one FlashVideo call against the hardware floor.

The paper's central claim is that the cost of one more token does not depend on how long the video already is.
This measures it: for each position P, fill the cache with P tokens, then time single-token steps at P, P+1, …
and report the median. Both models are timed in the same run on the same machine.

Then, for the random-weight model and (with `--checkpoint`) a trained key-frame model: ms per call (a decode step,
and a 16-token call from the cache, at batch 1 and 3), aten operators per call, and the floor measured in the same
run (weight bytes ÷ copy bandwidth of a tensor that size; FLOPs ÷ measured GEMM rate). With `--compile`, the same
models again with their step compiled (`compile_recurrent_step`), timed round-robin with the eager ones.

    flashvideo bench decode --positions 256 1024 4096 8192 --checkpoint default --compile --output-dir benchmarks
"""

import copy
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


STEP_CALL_LENGTHS = (1, 16)  # tokens per call in the step measurements: a decode step, a multi-token call


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


# --- One call's cost against the hardware floor -------------------------------------------------------------------
#
# A decode step at these sizes reads a few MB of weights and does a few MFLOPs, so at batch 1 it is bound by how fast
# the weights stream through the core, not by arithmetic; what eager PyTorch adds on top is per-operator overhead.
# The floor is measured in the same run as the calls, so that the ratio holds on whatever machine (and load) it ran.


@dataclass
class StepMeasurement:
    model: str
    batch_size: int
    tokens_per_call: int  # 1: a decode step; more: one multi-token call from the cache (e.g. verifying drafts)
    median_ms_per_call: float  # wall clock
    median_cpu_ms_per_call: float  # this thread's CPU time: what a shared machine's load changes least
    aten_ops_per_call: int  # every aten operator torch.profiler records, nested ones included
    top_level_aten_ops_per_call: int  # those called from Python
    weight_mb_read: float
    mflops: float
    floor_ms: float  # max(weight bytes / copy bandwidth, FLOPs / GEMM rate), measured in this run (CPU time)
    ratio_to_floor: float  # CPU ms per call / floor


@dataclass
class MachineFloor:
    copy_gb_per_s: float  # copying a tensor as large as the weights read per call (it stays in cache, as they do)
    memory_copy_gb_per_s: float  # copying 256 MiB (from and to memory)
    gemm_gflop_per_s: float  # a 512×512×512 float32 matrix product


def weight_bytes_per_call(model: torch.nn.Module, tokens: int) -> int:
    """Bytes of parameters one call of `tokens` tokens reads: every matrix in full, embedding tables only the rows
    looked up (tied weights counted once)."""
    embeddings = {
        module.weight.data_ptr(): module.weight
        for module in model.modules()
        if isinstance(module, torch.nn.Embedding) or type(module).__name__ == "FlashVideoCodePositions"
    }
    linear = {module.weight.data_ptr() for module in model.modules() if isinstance(module, torch.nn.Linear)}
    total, seen = 0, set()
    for parameter in model.parameters():
        if parameter.data_ptr() in seen:
            continue
        seen.add(parameter.data_ptr())
        if parameter.data_ptr() in embeddings and parameter.data_ptr() not in linear:
            rows = min(tokens, parameter.shape[0])
            total += rows * parameter[0].numel() * parameter.element_size()
        else:
            total += parameter.numel() * parameter.element_size()
    return total


def flops_per_call(model: FlashVideoForCausalLM, tokens: int) -> int:
    """Multiply-adds ×2 of every projection and the LM head, plus the recurrent retention per token (state update
    and read-out: 4·d_k·d_v per head and layer); norms and activations are left out (linear in d, not d²)."""
    config = model.config
    linear = sum(module.weight.numel() for module in model.modules() if isinstance(module, torch.nn.Linear))
    retention = 4 * config.num_hidden_layers * config.num_attention_heads * config.head_dim * config.value_head_dim
    return tokens * (2 * linear + retention)


def _median_times(fn, repeats: int) -> tuple[float, float]:
    """Median seconds of `fn()`, wall clock and this thread's CPU time (which leaves out the time other processes
    take the core)."""
    wall, cpu = [], []
    for _ in range(repeats):
        wall_start, cpu_start = time.perf_counter(), time.thread_time()
        fn()
        cpu.append(time.thread_time() - cpu_start)
        wall.append(time.perf_counter() - wall_start)
    return statistics.median(wall), statistics.median(cpu)


def _median_seconds(fn, repeats: int) -> float:
    """Median CPU seconds of `fn()`: the floor is measured in CPU time, like the calls it is compared with."""
    return _median_times(fn, repeats)[1]


def measure_floor(weight_bytes: int, repeats: int = 20, memory: bool = True) -> MachineFloor:
    """Copy bandwidth of a tensor as large as the weights (and of 256 MiB unless `memory=False`: then 0), and the
    float32 GEMM rate, on this thread."""
    source = torch.randn(max(weight_bytes // 4, 1))
    target = torch.empty_like(source)
    target.copy_(source)
    copy = source.nbytes / _median_seconds(lambda: target.copy_(source), repeats)
    memory_copy = 0.0
    if memory:
        big_source = torch.ones(64 * 2**20)
        big_target = torch.empty_like(big_source)
        memory_copy = big_source.nbytes / _median_seconds(lambda: big_target.copy_(big_source), 3)
    a, b = torch.randn(512, 512), torch.randn(512, 512)
    gemm = 2 * 512**3 / _median_seconds(lambda: a @ b, repeats)
    return MachineFloor(copy / 1e9, memory_copy / 1e9, gemm / 1e9)


def count_aten_ops(fn) -> tuple[int, int]:
    """(all, top-level) aten operators torch.profiler records during one `fn()`."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        fn()
    events = [event for event in profiler.events() if event.name.startswith("aten::")]
    top = [event for event in events if event.cpu_parent is None or not event.cpu_parent.name.startswith("aten::")]
    return len(events), len(top)


@torch.inference_mode()
def measure_step_cost(
    models: dict[str, FlashVideoForCausalLM],
    batch_sizes: tuple[int, ...] = (1, 3),
    tokens_per_call: tuple[int, ...] = STEP_CALL_LENGTHS,
    rounds: int = 15,
    calls_per_round: int = 50,
    position: int = 256,
    seed: int = 0,
) -> tuple[list[StepMeasurement], dict[str, MachineFloor]]:
    """Median time of one call from a `RetNetCache` filled to `position`, per model, batch size and call length,
    with its aten operator count and the floor measured in the same run.

    Calls are made through `decode`, as the pipeline's sampler makes them (ids validated once, at the prefill; the
    logits of every fed position over the whole vocabulary, what `model(ids, cache=cache).logits` gives), and every
    configuration is timed round-robin with the others and with the floor, `rounds` times, so that a change of
    machine load affects them alike. The cache keeps growing (a call's cost does not depend on the position). A
    round makes `calls_per_round` calls back to back, as a decoding loop does, and keeps their median: the first
    calls after the floor's copies, which evict the weights from the caches, are slow (the shipped key-frame
    model's compiled step: 0.40-0.44 ms as the median of 10 calls, 0.27-0.28 ms of 50, in the same session).
    """
    generator = torch.Generator().manual_seed(seed)
    cases = {}
    for name, model in models.items():
        for batch in batch_sizes:
            cache = RetNetCache(model.config.num_hidden_layers)
            low = getattr(model.config, "image_token_start", 3)
            prompt = torch.randint(low, model.config.vocab_size, (batch, position), generator=generator)
            model(prompt, cache=cache, use_cache=True, logits_to_keep=1)
            for length in tokens_per_call:
                ids = torch.randint(low, model.config.vocab_size, (batch, length), generator=generator)

                def call(model=model, cache=cache, ids=ids, length=length):
                    model.decode(ids, cache, logits_to_keep=length)

                cases[(name, batch, length)] = call
    # Each model's floor copies a tensor as large as its own weights: that size decides which cache level it sees.
    weight_bytes = {name: weight_bytes_per_call(model, 1) for name, model in models.items()}
    memory_copy = measure_floor(1, repeats=1).memory_copy_gb_per_s
    floor_rounds = {name: [] for name in models}
    timings = {key: [] for key in cases}  # (wall, CPU) medians per round
    for _ in range(rounds):
        for name in models:
            floor_rounds[name].append(measure_floor(weight_bytes[name], repeats=5, memory=False))
        for key, call in cases.items():
            timings[key].append(_median_times(call, calls_per_round))
    floors = {
        name: MachineFloor(
            statistics.median(f.copy_gb_per_s for f in measured), memory_copy,
            statistics.median(f.gemm_gflop_per_s for f in measured),
        )  # fmt: skip
        for name, measured in floor_rounds.items()
    }
    results = []
    for (name, batch, length), call in cases.items():
        model, tokens, floor = models[name], batch * length, floors[name]
        call()  # the profiler's first call is not counted twice
        all_ops, top_ops = count_aten_ops(call)
        read, flops = weight_bytes_per_call(model, tokens), flops_per_call(model, tokens)
        floor_s = max(read / (floor.copy_gb_per_s * 1e9), flops / (floor.gemm_gflop_per_s * 1e9))
        wall, cpu = (statistics.median(times) for times in zip(*timings[(name, batch, length)]))
        results.append(
            StepMeasurement(
                name, batch, length, 1000 * wall, 1000 * cpu, all_ops, top_ops, read / 1e6, flops / 1e6,
                1000 * floor_s, cpu / floor_s,
            )  # fmt: skip
        )
        logger.info("%s batch %d × %d tokens: %.3f ms/call, %d aten ops", name, batch, length, 1000 * cpu, all_ops)
    return results, floors


def step_cost_markdown(results: list[StepMeasurement], floors: dict[str, MachineFloor]) -> list[str]:
    lines = [
        "### One call against the hardware floor",
        "",
        "A call from a `RetNetCache` filled to 256 tokens, made as the pipeline's sampler makes it "
        "(`decode`, ids validated before; logits over the whole vocabulary); \"compiled\": the same model after "
        "`compile_recurrent_step()` (ahead of time: AOTInductor programs, whose kernels call aten's matrix products "
        "and a few others, which the profiler counts); 1 token is a decode step, 16 tokens one multi-token call (e.g. verifying drafts). "
        "Each round makes 50 calls back to back, as a decoding loop does; medians over round-robin rounds, wall "
        "clock and this thread's CPU time (on a shared machine the CPU time "
        "is the steadier; the floor is CPU time too); aten operators counted with torch.profiler (nested ones "
        "included; top level: called from Python).",
        "Floor measured in the same run, interleaved with the calls: floor = max(weight bytes ÷ copy bandwidth of a "
        "tensor as large as the model's weights, FLOPs ÷ float32 GEMM rate (512³)).",
        "",
        *(
            f"- {name}: copy {floor.copy_gb_per_s:.1f} GB/s ({floor.memory_copy_gb_per_s:.1f} GB/s for 256 MiB), "
            f"GEMM {floor.gemm_gflop_per_s:.1f} GFLOP/s"
            for name, floor in floors.items()
        ),
        "",
        "| model | batch | tokens per call | ms per call (wall) | CPU ms per call | aten ops (top level) "
        "| weights read (MB) | MFLOPs | floor (ms) | CPU time × floor |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r.model} | {r.batch_size} | {r.tokens_per_call} | {r.median_ms_per_call:.3f} | "
            f"{r.median_cpu_ms_per_call:.3f} | "
            f"{r.aten_ops_per_call} ({r.top_level_aten_ops_per_call}) | {r.weight_mb_read:.2f} | {r.mflops:.1f} | "
            f"{r.floor_ms:.3f} | {r.ratio_to_floor:.2f} |"
        )
    return lines


def machine_description() -> str:
    device = (
        torch.cuda.get_device_name()
        if torch.cuda.is_available()
        else f"CPU ({platform.processor() or platform.machine()})"
    )
    return f"{device}, {torch.get_num_threads()} torch threads, torch {torch.__version__}, Python {platform.python_version()}"


def write_report(
    results: list[DecodeMeasurement],
    config: FlashVideoConfig,
    output_dir: Path,
    step_costs: tuple[list[StepMeasurement], dict[str, MachineFloor]] | None = None,
) -> Path:
    """Write `decode_latency.{md,json,png}` (and `decode_step.json` with `step_costs`) under `output_dir`; returns
    the markdown path."""
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
    if step_costs is not None:
        lines += ["", *step_cost_markdown(*step_costs)]
        calls, floors = step_costs
        floors_json = {name: asdict(floor) for name, floor in floors.items()}
        (output_dir / "decode_step.json").write_text(
            json.dumps({"floors": floors_json, "calls": [asdict(r) for r in calls]}, indent=2)
        )
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
    positions: list[int],
    output_dir: Path,
    steps: int = 64,
    config: FlashVideoConfig | None = None,
    checkpoint: str | Path | None = None,
    step_rounds: int = 15,
    compile: bool = False,
) -> Path:
    """Measure both models at every position, then one call's cost against the floor (the random-weight model,
    and the key-frame model of `checkpoint` when given; with `compile`, each also with its step compiled), and
    write the report; returns the markdown path."""
    if not positions or min(positions) < 1:
        raise ValueError(f"positions must be a non-empty list of integers >= 1, got {positions}.")
    if step_rounds < 5:
        raise ValueError(f"step_rounds must be >= 5 (medians of at least 5 rounds), got {step_rounds}.")
    config = config or FlashVideoConfig()
    torch.manual_seed(0)
    # One thread: at batch 1 these matrices are too small to gain from more, and a single thread does not
    # spin-wait against other processes, which makes the medians far steadier on a shared machine.
    torch.set_num_threads(1)
    models = [FlashVideoForCausalLM(config).eval(), same_size_llama(config).eval()]
    results = []
    for model in tqdm(models, desc="decode benchmark"):
        results += measure_decode(model, positions, steps=steps)
    step_models = {f"random weights, hidden {config.hidden_size}": models[0]}
    if checkpoint is not None:
        trained = FlashVideoForCausalLM.from_pretrained(checkpoint).eval()
        step_models[f"{Path(checkpoint).name} (key frames), hidden {trained.config.hidden_size}"] = trained
    if compile:
        for name, model in list(step_models.items()):
            compiled = copy.deepcopy(model)
            compiled.compile_recurrent_step(call_lengths=tuple(n for n in STEP_CALL_LENGTHS if n > 1))
            step_models[f"{name}, compiled"] = compiled
    step_costs = measure_step_cost(step_models, rounds=step_rounds)
    return write_report(results, config, output_dir, step_costs)
