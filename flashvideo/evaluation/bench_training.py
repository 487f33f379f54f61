"""Training throughput of the parallel vs the chunkwise retention form at long sequence lengths, with peak memory.

The parallel form materialises an L×L decay matrix per head (O(L²) memory); the chunkwise form keeps blocks of
`chunk_size` and a carried state (O(L·B)). Each (form, length) runs in its own process, so that its peak memory
(the process's maximum resident set on CPU, `torch.cuda.max_memory_allocated` on GPU) is its own.

    flashvideo bench training --lengths 1024 4096 8192
"""

import multiprocessing
import resource
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..configuration_flashvideo import FlashVideoConfig
from ..modeling_flashvideo import FlashVideoForCausalLM
from .bench_decode import machine_description
from .plotting import save_line_panels


@dataclass
class TrainingThroughput:
    forward_mode: str
    sequence_length: int
    tokens_per_second: float | None
    peak_memory_mib: float | None
    error: str | None = None


def _measure(forward_mode: str, length: int, steps: int, config_dict: dict, result_queue) -> None:
    try:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        torch.manual_seed(0)
        model = FlashVideoForCausalLM(FlashVideoConfig(**config_dict)).to(device).train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        ids = torch.randint(3, model.config.vocab_size, (1, length), device=device)
        timings = []
        for step in range(steps + 1):
            started = time.perf_counter()
            loss = model(ids, labels=ids, forward_mode=forward_mode).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if device.type == "cuda":
                torch.cuda.synchronize()
            if step:  # the first step allocates optimizer state and warms up
                timings.append(time.perf_counter() - started)
        if device.type == "cuda":
            peak = torch.cuda.max_memory_allocated() / 2**20
        else:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
        result_queue.put(TrainingThroughput(forward_mode, length, length / statistics.median(timings), peak))
    except (RuntimeError, MemoryError) as error:  # out of memory is a result, not a crash of the benchmark
        result_queue.put(
            TrainingThroughput(forward_mode, length, None, None, f"{type(error).__name__}: {error}"[:200])
        )


def measure_training(
    lengths: list[int], steps: int = 3, config: FlashVideoConfig | None = None
) -> list[TrainingThroughput]:
    config = config or FlashVideoConfig()
    context = multiprocessing.get_context("spawn")
    results = []
    for length in lengths:
        for forward_mode in ("parallel", "chunkwise"):
            queue = context.Queue()
            process = context.Process(
                target=_measure, args=(forward_mode, length, steps, config.to_dict(), queue)
            )
            process.start()
            process.join()
            if process.exitcode == 0:
                results.append(queue.get())
            else:  # killed, e.g. by the kernel's out-of-memory killer
                results.append(
                    TrainingThroughput(forward_mode, length, None, None, f"exit code {process.exitcode}")
                )
    return results


def run_training_benchmark(
    output_dir: Path, lengths: list[int], steps: int = 3, config: FlashVideoConfig | None = None
) -> Path:
    import json

    config = config or FlashVideoConfig()
    results = measure_training(lengths, steps, config)
    output_dir.mkdir(parents=True, exist_ok=True)
    lines = [
        "# Training throughput: parallel vs chunkwise retention",
        "",
        f"One forward + backward + AdamW step on one sequence, median of {steps} steps; model: hidden "
        f"{config.hidden_size}, {config.num_hidden_layers} layers, {config.num_attention_heads} heads, chunk size "
        f"{config.chunk_size}. Peak memory: the process's maximum resident set (CPU) or peak CUDA allocation.",
        f"Machine: {machine_description()}. Date: {time.strftime('%Y-%m-%d')}.",
        "",
        "| form | sequence length | tokens/s | peak memory (MiB) |",
        "|---|---:|---:|---:|",
    ]
    for r in results:
        speed = f"{r.tokens_per_second:.0f}" if r.tokens_per_second else f"failed ({r.error})"
        memory = f"{r.peak_memory_mib:.0f}" if r.peak_memory_mib else "—"
        lines.append(f"| {r.forward_mode} | {r.sequence_length} | {speed} | {memory} |")
    path = output_dir / "training_throughput.md"
    path.write_text("\n".join(lines) + "\n")
    (output_dir / "training_throughput.json").write_text(json.dumps([asdict(r) for r in results], indent=2))

    measured = {
        form: [r for r in results if r.forward_mode == form and r.tokens_per_second]
        for form in ("parallel", "chunkwise")
    }

    def series(field: str) -> dict:
        return {
            form: ([r.sequence_length for r in rows], [getattr(r, field) for r in rows])
            for form, rows in measured.items()
        }

    save_line_panels(
        output_dir / "training_throughput.png",
        "sequence length",
        {"training tokens/s": series("tokens_per_second"), "peak memory (MiB)": series("peak_memory_mib")},
    )
    return path
