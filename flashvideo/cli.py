"""The `flashvideo` command line.

flashvideo generate "a red circle moving right" -o clip.mp4      # from the shipped default checkpoint
flashvideo train --stage keyframe --output_dir runs/shapes ...   # same as `python -m flashvideo.training`
flashvideo bench decode                                          # speed benchmarks → benchmarks/
flashvideo push runs/shapes --repo-id ORG/NAME [--private] [--eval-results eval/eval_results.json]
flashvideo demo                                                  # what `make demo` runs
flashvideo draft-table runs/shapes                               # the draft table for speculative decoding

Each subcommand registers itself: its `_add_*` function builds its parser and names the function that runs it
(`set_defaults(func=...)`), and `build_parser` calls the functions listed in `SUBCOMMANDS`. A new subcommand is one
more `_add_*` function in that list; `main` knows none of them by name (except `train`, below).
"""

import argparse
import functools
import json
import logging as python_logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from .checkpoint_files import check_local_or_repo_id
from .hub import add_push_parser, run_push
from .validation import check_int, check_number


VIDEO_SUFFIXES = (".mp4", ".gif")
MAX_FPS = 240.0
DEFAULT = "default"  # a checkpoint argument naming the shipped checkpoint, wherever the command runs
BENCH_OUTPUT_HELP = "where the tables and plots go (default benchmarks)"


def _add_generate(subparsers) -> None:
    generate = subparsers.add_parser(
        "generate",
        help="generate a clip from a prompt",
        description="Generate a clip with FlashVideo: key frames, then (redundant-free) interpolation. Writes an "
        "H.264 mp4 or a gif, chosen by the output's suffix.",
    )
    generate.add_argument("prompt", help='what to show, e.g. "a red circle moving right"')
    generate.add_argument(
        "-o", "--output", type=Path, default=Path("clip.mp4"), help="output .mp4 or .gif (default clip.mp4)"
    )
    generate.add_argument(
        "--checkpoint",
        default=None,
        help="checkpoint directory or Hub repo id ('default' or unset: the shipped checkpoint)",
    )
    generate.add_argument("--num-frames", type=int, default=16, help="frames in the clip (default 16)")
    generate.add_argument(
        "--key-frame-spacing", type=int, default=5, help="frames from one key frame to the next (default 5)"
    )
    generate.add_argument(
        "--no-interpolation",
        action="store_true",
        help="generate every frame as a key frame (fully autoregressive)",
    )
    generate.add_argument(
        "--redundant-free",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="inherit stable tokens from key frames when interpolating (default: on; --no-redundant-free samples "
        "every inserted token)",
    )
    generate.add_argument(
        "--inherit-ratio", type=float, default=0.2, help="share of stable tokens inherited, in [0, 1]"
    )
    generate.add_argument(
        "--unstable-radius", type=int, default=1, help="code-grid radius kept around changed tokens"
    )
    generate.add_argument(
        "--temperature", type=float, default=None,
        help="sampling temperature (default: the checkpoint's generation_config, else 1.0)",
    )  # fmt: skip
    generate.add_argument(
        "--top-k", type=int, default=None,
        help="sample among the k likeliest codes (default: the checkpoint's generation_config, else all)",
    )  # fmt: skip
    generate.add_argument(
        "--top-p", type=float, default=None,
        help="nucleus sampling: the likeliest codes whose probabilities add up to p, in (0, 1] (default: the "
        "checkpoint's generation_config, else 1)",
    )  # fmt: skip
    generate.add_argument(
        "--guidance-scale", type=float, default=None,
        help="classifier-free guidance for the key frames, >= 1 (default: the checkpoint's generation_config, else 1)",
    )  # fmt: skip
    generate.add_argument("--negative-prompt", default=None, help="text of the unconditional stream (default: none)")
    generate.add_argument(
        "--speculative", action=argparse.BooleanOptionalAction, default=True,
        help="lossless speculative decoding: drafts from frames already known, verified in each call (default: on; "
        "--no-speculative: one call per sampled code)",
    )  # fmt: skip
    generate.add_argument(
        "--num-draft-tokens", type=int, default=None, help="drafts verified per call (default: the pipeline's, 4)"
    )
    generate.add_argument(
        "--recursive-spacings", type=int, nargs="+", default=(),
        help="interpolate again between adjacent frames, one level per spacing (e.g. --num-frames 61 "
        "--recursive-spacings 4: 4 key frames, 16 frames, then 61)",
    )  # fmt: skip
    generate.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    generate.add_argument(
        "--fps", type=float, default=8.0,
        help=f"frames per second of the written clip, in (0, {MAX_FPS:g}] (default 8)",
    )  # fmt: skip
    generate.add_argument(
        "--device", default=None, help='torch device, e.g. "cuda" (default: cuda if available)'
    )
    generate.set_defaults(func=_run_generate)


def _add_benchmark(kinds, name: str, run: Callable[[argparse.Namespace], Path], **parser_kwargs):
    """A `flashvideo bench NAME` parser whose arguments `run` reads; `run` returns the report it wrote."""
    parser = kinds.add_parser(name, **parser_kwargs)
    parser.add_argument("--output-dir", type=Path, default=Path("benchmarks"), help=BENCH_OUTPUT_HELP)
    parser.set_defaults(func=_run_benchmark, run_benchmark=run)
    return parser


def _add_bench(subparsers) -> None:
    bench = subparsers.add_parser(
        "bench", help="speed benchmarks; results go to tables and plots under benchmarks/"
    )
    kinds = bench.add_subparsers(dest="benchmark", required=True)
    decode = _add_benchmark(
        kinds, "decode", _bench_decode,
        help="per-token decode latency and cache memory vs position, FlashVideo vs a same-size Llama",
    )  # fmt: skip
    decode.add_argument(
        "--positions", type=int, nargs="+", default=[256, 1024, 4096, 8192],
        help="sequence positions to time a decode step at (default 256 1024 4096 8192)",
    )  # fmt: skip
    decode.add_argument("--steps", type=int, default=64, help="timed single-token steps per position")
    decode.add_argument(
        "--checkpoint", default=None,
        help="also measure one call of this checkpoint's key-frame model against the hardware floor ('default' = "
        "the shipped one); the random-weight model always is",
    )  # fmt: skip
    decode.add_argument(
        "--compile", action="store_true",
        help="also measure those calls with the step compiled (compile_recurrent_step; needs a C++ compiler on a CPU)",
    )  # fmt: skip
    video = _add_benchmark(
        kinds, "video", _bench_video,
        help="seconds per 16-frame clip: FlashVideo modes vs a same-size Llama with and without KV cache",
    )  # fmt: skip
    video.add_argument(
        "--repeats", type=int, default=5, help="clips timed per method, round-robin; the median is reported (default 5)"
    )
    video.add_argument(
        "--checkpoint",
        default=None,
        help="time a trained pipeline ('default' = the shipped one) instead of random weights; writes "
        "video_generation_trained.*",
    )
    video.add_argument(
        "--compile",
        action="store_true",
        help="also time (a), (b) and (c) with compiled decoding (FlashVideo: compile_recurrent_step, ahead of time; the "
        "Llama: torch.compile with a static cache; needs a C++ compiler on a CPU)",
    )
    scaling = _add_benchmark(
        kinds, "scaling", _bench_scaling,
        help="frames per second vs clip length and resolution (the paper's Figure 6): the default pipeline, "
        "fully autoregressive FlashVideo, the Llama with and without KV cache",
    )  # fmt: skip
    scaling.add_argument(
        "--lengths", type=int, nargs="+", default=[16, 31, 61, 121],
        help="clip lengths in frames at 64x64; each minus 1 a multiple of 5 (default 16 31 61 121)",
    )  # fmt: skip
    scaling.add_argument("--repeats", type=int, default=1, help="clips timed per method and point (median; default 1)")
    scaling.add_argument(
        "--checkpoint", default=DEFAULT,
        help="the trained pipeline of the length sweep's default-pipeline rows ('default' = the shipped one)",
    )  # fmt: skip
    training = _add_benchmark(
        kinds, "training", _bench_training,
        help="training tokens/s and peak memory, parallel vs chunkwise form, at long sequence lengths",
    )  # fmt: skip
    training.add_argument(
        "--lengths", type=int, nargs="+", default=[1024, 4096, 8192],
        help="training sequence lengths in tokens (default 1024 4096 8192)",
    )  # fmt: skip
    every = kinds.add_parser(
        "all", help="every benchmark above with its defaults, then benchmarks/README.md with all tables and plots"
    )
    every.add_argument("--output-dir", type=Path, default=Path("benchmarks"), help=BENCH_OUTPUT_HELP)
    # `all` runs each benchmark as `flashvideo bench NAME` would with no arguments: its defaults are its parser's.
    every.set_defaults(func=functools.partial(_run_every_benchmark, parsers=(decode, video, scaling, training)))


def _add_eval(subparsers) -> None:
    from .evaluation.evaluate import MODE_KEYS

    evaluate = subparsers.add_parser(
        "eval", help="Shapes accuracy, conditioned PSNR/SSIM and speed of a checkpoint, per inference mode"
    )
    evaluate.add_argument(
        "--model", default=None, help="checkpoint directory or Hub id ('default' or unset: the shipped one)"
    )
    evaluate.add_argument("--num-samples", type=int, default=24, help="Shapes clips to evaluate (default 24)")
    evaluate.add_argument("--seed", type=int, default=0, help="seed of the Shapes clips and of sampling (default 0)")
    evaluate.add_argument(
        "--modes",
        nargs="+",
        choices=list(MODE_KEYS),
        default=None,
        help="inference modes to evaluate (default: all): "
        + ", ".join(f"{key} = {name}" for key, name in MODE_KEYS.items()),
    )
    evaluate.add_argument(
        "--temperature", type=float, default=None,
        help="sampling temperature (default: the checkpoint's generation_config, else 1.0)",
    )  # fmt: skip
    evaluate.add_argument("--top-k", type=int, default=None, help="sample among the k likeliest codes")
    evaluate.add_argument(
        "--guidance-scale", type=float, default=None,
        help="classifier-free guidance for the key frames, >= 1 (default: the checkpoint's generation_config, else 1)",
    )  # fmt: skip
    evaluate.add_argument(
        "--compile",
        action="store_true",
        help="compile the decode step (compile_recurrent_step; the same clips, needs a C++ compiler on a CPU; the "
        "speeds then include the compilation)",
    )
    evaluate.add_argument(
        "--output-dir", type=Path, default=Path("eval"), help="where eval_results.{json,md} go"
    )
    evaluate.set_defaults(func=_run_eval)


def _add_demo(subparsers) -> None:
    demo = subparsers.add_parser(
        "demo", help="generate example clips from the shipped checkpoint (what `make demo` runs)"
    )
    demo.add_argument("--output-dir", type=Path, default=Path("outputs"), help="where the clips go (default outputs)")
    demo.add_argument(
        "--prompt", default="a red circle moving right", help='what to show (default "a red circle moving right")'
    )
    demo.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    demo.set_defaults(func=_run_demo)


def _add_train(subparsers) -> None:
    # Listed for `flashvideo --help`; `main` hands `train`'s arguments to its own parser before this one runs.
    subparsers.add_parser(
        "train",
        help="train a stage (tokenizer | keyframe | interpolation); see `flashvideo train --help`",
        add_help=False,
    )


def _add_encode(subparsers) -> None:
    # Listed for `flashvideo --help`; `main` hands `encode`'s arguments to its own parser, as for `train`.
    subparsers.add_parser(
        "encode",
        help="encode videos once into a 🤗 data set of VQ codes for --codes_dataset; see `flashvideo encode --help`",
        add_help=False,
    )


def _add_draft_table(subparsers) -> None:
    table = subparsers.add_parser(
        "draft-table",
        help="fit a checkpoint's draft table for speculative decoding (draft_table.safetensors) on Shapes clips",
        description="Count, over Shapes clips encoded by the checkpoint's image tokenizer, the commonest code of a "
        "cell given the codes above and left of it and the cell a few frames earlier, and write the table into the "
        "checkpoint, where the pipeline drafts from it (draft_source='code_table'). Drafts never change what is "
        "sampled, only how many codes a model call accepts.",
    )
    table.add_argument("checkpoint", help=f"checkpoint directory ({DEFAULT!r}: the shipped one)")
    table.add_argument("--num-clips", type=int, default=2048, help="Shapes clips to count over (default 2048)")
    table.add_argument("--seed", type=int, default=31, help="their data seed (default 31)")
    table.add_argument("--num-frames", type=int, default=16, help="frames per clip (default 16)")
    table.add_argument(
        "--gaps", type=int, nargs="+", default=[1, 5],
        help="frames back to the reference cell, one table each (default 1 5: inserted frames, key frames 5 apart)",
    )  # fmt: skip
    table.add_argument("--output-dir", type=Path, default=None, help="where the file goes (default the checkpoint)")
    table.set_defaults(func=_run_draft_table)


def _run_draft_table(args: argparse.Namespace) -> int:
    import torch

    from . import FlashVideoConfig, default_checkpoint
    from .data.shapes import shapes_dataset
    from .draft_table import CodeDraftTable
    from .image_tokenizer import frames_to_codes, load_image_tokenizer

    check_int("--num-clips", args.num_clips, 1)
    check_int("--seed", args.seed, 0)
    check_int("--num-frames", args.num_frames, 2)
    for gap in args.gaps:
        check_int("--gaps", gap, 1, args.num_frames - 1, why=" (--num-frames - 1)")
    checkpoint = Path(default_checkpoint()) if args.checkpoint == DEFAULT else Path(args.checkpoint)
    if not checkpoint.is_dir():
        raise ValueError(f"checkpoint must be a checkpoint directory, got {str(checkpoint)!r}.")
    config = FlashVideoConfig.from_pretrained(checkpoint)
    videos = shapes_dataset(args.num_clips, seed=args.seed, num_frames=args.num_frames, image_size=config.image_size)
    with torch.no_grad():
        codes = frames_to_codes(load_image_tokenizer(checkpoint), videos[:]["video"], batch_size=64)
    table = CodeDraftTable.fit(codes.cpu().numpy(), config.image_vocab_size, args.gaps)
    path = table.save_pretrained(args.output_dir or checkpoint)
    sys.stdout.write(f"wrote {path}: {table}\n")
    return 0


def _add_push(subparsers) -> None:
    add_push_parser(subparsers).set_defaults(func=_run_push)


# The subcommands, in `flashvideo --help` order; each `_add_*` builds its parser and registers its `func`.
SUBCOMMANDS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (
    _add_generate, _add_train, _add_encode, _add_eval, _add_bench, _add_demo, _add_draft_table, _add_push,
)  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flashvideo", description="FlashVideo: RetNet-based swift text-to-video."
    )
    subparsers = parser.add_subparsers(dest="command", required=True)
    for add_subcommand in SUBCOMMANDS:
        add_subcommand(subparsers)
    return parser


def _device(name: str | None):
    import torch

    return torch.device(name) if name else torch.device("cuda" if torch.cuda.is_available() else "cpu")


def check_output(output: Path) -> None:
    """Raise a ValueError unless `output` can take a clip: a supported suffix, not a directory, in an existing
    writable folder."""
    if output.suffix.lower() not in VIDEO_SUFFIXES:
        raise ValueError(f"output must end in one of {VIDEO_SUFFIXES}, got {str(output)!r}.")
    if output.is_dir():
        raise ValueError(f"output {str(output)!r} is a directory; name a file, e.g. {str(output / 'clip.mp4')!r}.")
    folder = output.parent
    if not folder.is_dir():
        raise ValueError(f"output's folder {str(folder)!r} does not exist (create it first).")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"output's folder {str(folder)!r} is not writable.")


def check_fps(fps: float) -> None:
    """Raise a ValueError unless `fps` is a finite number in (0, MAX_FPS]."""
    check_number("fps", fps, 0, MAX_FPS, exclusive_minimum=True)


def write_clip(frames, output: Path, fps: float) -> None:
    """Write `frames` to `output` (.mp4 or .gif) through a temporary file in the same folder and a rename: an
    existing clip is replaced only by a complete one, and a failed write leaves nothing behind."""
    from .video_io import export_to_gif, export_to_video

    export = export_to_gif if output.suffix.lower() == ".gif" else export_to_video
    partial = output.with_name(f".{output.stem}.partial-{os.getpid()}{output.suffix}")
    try:
        export(frames, partial, fps=fps)
        os.replace(partial, output)
    finally:
        partial.unlink(missing_ok=True)


def generate_clip(
    prompt: str, output: Path, checkpoint: str | None = None, device: str | None = None, fps: float = 8.0,
    seed: int = 0, **call_kwargs,
):  # fmt: skip
    """Load the pipeline, generate one clip and write it to `output` (.mp4 or .gif); returns the pipeline output.

    `output`, `fps` and `checkpoint` are checked before anything is loaded or generated (ValueError or
    FileNotFoundError)."""
    import torch

    from . import default_checkpoint
    from .pipeline_flashvideo import FlashVideoPipeline

    check_output(output)
    check_fps(fps)
    if checkpoint == DEFAULT:
        checkpoint = None
    if checkpoint is not None:
        check_local_or_repo_id(checkpoint, "--checkpoint")
    pipe = FlashVideoPipeline.from_pretrained(checkpoint or default_checkpoint(), device=_device(device))
    generator = torch.Generator().manual_seed(seed)
    result = pipe(prompt, generator=generator, **call_kwargs)
    write_clip(result.frames[0], output, fps)
    return result


def _run_generate(args: argparse.Namespace) -> int:
    try:
        result = _generate_from_args(args)
    except (ValueError, OSError) as error:  # bad arguments, a missing checkpoint, an unwritable output
        return _user_error("generate", error)
    sys.stdout.write(f"wrote {args.output}\n{result.stats.summary()}\n")
    return 0


def _generate_from_args(args: argparse.Namespace):
    return generate_clip(
        args.prompt, args.output, checkpoint=args.checkpoint, device=args.device, fps=args.fps, seed=args.seed,
        num_frames=args.num_frames, key_frame_spacing=args.key_frame_spacing, interpolate=not args.no_interpolation,
        redundant_free=args.redundant_free, inherit_ratio=args.inherit_ratio, unstable_radius=args.unstable_radius,
        temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, guidance_scale=args.guidance_scale,
        negative_prompt=args.negative_prompt, speculative=args.speculative, recursive_spacings=tuple(args.recursive_spacings),
        **({} if args.num_draft_tokens is None else {"num_draft_tokens": args.num_draft_tokens}),
    )  # fmt: skip


def _run_demo(args: argparse.Namespace) -> int:
    """Clips of one prompt, plain and redundant-free interpolation, plus the Shapes ground truth for reference.

    Uses the shipped default checkpoint; an installation without it runs the same pipeline on random weights (the
    clip is noise, the machinery is real) and the output says so.
    """
    from . import default_checkpoint
    from .data.shapes import parse_prompt, render_clip
    from .video_io import export_to_video

    args.output_dir.mkdir(parents=True, exist_ok=True)
    try:
        checkpoint = str(default_checkpoint())
    except FileNotFoundError as error:
        checkpoint = None
        sys.stdout.write(f"NOTE: {error}\nRunning the pipeline on RANDOM weights: the clips show noise.\n")
    summary = {"prompt": args.prompt, "checkpoint": checkpoint or "random weights"}
    for name, redundant_free in (("interpolated", False), ("redundant_free", True)):
        output = args.output_dir / f"{name}.mp4"
        if checkpoint:
            result = generate_clip(
                args.prompt, output, checkpoint=checkpoint, seed=args.seed, redundant_free=redundant_free
            )
        else:
            result = _generate_with_random_weights(args.prompt, output, args.seed, redundant_free)
        summary[name] = {"file": str(output), "frames_per_second": result.stats.frames_per_second}
        sys.stdout.write(f"wrote {output}\n{result.stats.summary()}\n")
    reference = args.output_dir / "ground_truth.mp4"
    export_to_video(render_clip(**parse_prompt(args.prompt)), reference)
    sys.stdout.write(f"wrote {reference} (the Shapes clip the prompt describes)\n")
    (args.output_dir / "demo.json").write_text(json.dumps(summary, indent=2))
    return 0


def _generate_with_random_weights(prompt: str, output: Path, seed: int, redundant_free: bool):
    import torch

    from .evaluation.bench_video import random_pipeline
    from .video_io import export_to_video

    result = random_pipeline()(
        prompt, generator=torch.Generator().manual_seed(seed), redundant_free=redundant_free
    )
    export_to_video(result.frames[0], output)
    return result


BENCHMARK_REPORTS = ("decode_latency", "video_generation", "video_generation_trained", "scaling", "training_throughput")


def write_benchmarks_readme(output_dir: Path) -> Path:
    """`benchmarks/README.md`: every benchmark report present in `output_dir`, with its plot."""
    from .evaluation.bench_decode import machine_description

    # Each report starts with a level-1 title; one more "#" makes it a section of the README.
    sections = [
        "#" + (output_dir / f"{name}.md").read_text() + f"\n![{name}]({name}.png)\n"
        for name in BENCHMARK_REPORTS
        if (output_dir / f"{name}.md").is_file()
    ]
    header = (
        "# Benchmarks\n\nWritten by `flashvideo bench` (`make bench` runs them all); each section names the machine "
        f"and date of its own run. Last update: {machine_description()}, {time.strftime('%Y-%m-%d')}.\n\n"
    )
    path = output_dir / "README.md"
    path.write_text(header + "\n".join(sections))
    return path


def _checkpoint_path(name: str | None) -> str | None:
    """A checkpoint argument as a path: "default" is the shipped checkpoint, wherever the command runs."""
    if name != DEFAULT:
        return name
    from . import default_checkpoint

    return str(default_checkpoint())


def _bench_decode(args: argparse.Namespace) -> Path:
    from .evaluation import bench_decode

    return bench_decode.run_decode_benchmark(
        args.positions, args.output_dir, steps=args.steps, checkpoint=_checkpoint_path(args.checkpoint),
        compile=args.compile,
    )


def _bench_video(args: argparse.Namespace) -> Path:
    from .evaluation import bench_video

    return bench_video.run_video_benchmark(
        args.output_dir, repeats=args.repeats, checkpoint=_checkpoint_path(args.checkpoint), compile=args.compile
    )


def _bench_scaling(args: argparse.Namespace) -> Path:
    from .evaluation import bench_scaling
    from .pipeline_flashvideo import FlashVideoPipeline

    pipe = FlashVideoPipeline.from_pretrained(_checkpoint_path(args.checkpoint), device="cpu")
    return bench_scaling.run_scaling_benchmark(args.output_dir, pipe, lengths=tuple(args.lengths), repeats=args.repeats)


def _bench_training(args: argparse.Namespace) -> Path:
    from .evaluation import bench_training

    return bench_training.run_training_benchmark(args.output_dir, args.lengths)


def _run_benchmark(args: argparse.Namespace) -> int:
    """`flashvideo bench NAME`: run it, print its report, then rewrite `benchmarks/README.md`."""
    sys.stdout.write(args.run_benchmark(args).read_text())
    sys.stdout.write(f"updated {write_benchmarks_readme(args.output_dir)}\n")
    return 0


def _run_every_benchmark(args: argparse.Namespace, parsers: tuple[argparse.ArgumentParser, ...]) -> int:
    """`flashvideo bench all`: every benchmark with its own parser's defaults, into `args.output_dir`."""
    for parser in parsers:
        defaults = parser.parse_args([])
        defaults.output_dir = args.output_dir
        sys.stdout.write(defaults.run_benchmark(defaults).read_text())
    sys.stdout.write(f"updated {write_benchmarks_readme(args.output_dir)}\n")
    return 0


def _run_eval(args: argparse.Namespace) -> int:
    from . import default_checkpoint
    from .evaluation import evaluate
    from .extras import require_extra

    try:
        require_extra("eval", "flashvideo eval")
    except ImportError as error:  # a one-line error naming the extra, not a traceback
        return _user_error("eval", error)
    sampling = {
        name: value
        for name, value in (
            ("temperature", args.temperature), ("top_k", args.top_k), ("guidance_scale", args.guidance_scale)
        )  # fmt: skip
        if value is not None
    }
    path = evaluate.run_evaluation(
        str(default_checkpoint()) if args.model in (None, DEFAULT) else args.model,
        args.output_dir,
        args.num_samples,
        args.seed,
        modes=args.modes,
        sampling=sampling,
        compile=args.compile,
    )
    sys.stdout.write(path.read_text())
    return 0


def _run_push(args: argparse.Namespace) -> int:
    run_push(args)
    return 0


def _user_error(command: str, error: Exception) -> int:
    """Report a user error as one line on stderr, as argparse does; returns the exit status 2."""
    message = " ".join(str(error).split())
    sys.stderr.write(f"flashvideo {command}: error: {message}\n")
    return 2


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["train"]:
        # The training arguments are dataclasses parsed by HfArgumentParser, with their own --help.
        from .training.__main__ import main as train_main

        return train_main(argv[1:])
    if argv[:1] == ["encode"]:  # the same: an HfArgumentParser of its own
        from .training.encode import main as encode_main

        return encode_main(argv[1:])
    args = build_parser().parse_args(argv)
    # Our own progress messages at INFO; transformers' (generation configs etc.) only from WARNING up.
    python_logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
    python_logging.getLogger("flashvideo").setLevel(python_logging.INFO)
    return args.func(args)  # the subcommand's own function (set_defaults), which returns the exit status


if __name__ == "__main__":
    raise SystemExit(main())
