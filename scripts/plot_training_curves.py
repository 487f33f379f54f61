"""Plot the training curves of a checkpoint's stages from their tensorboard logs.

    python scripts/plot_training_curves.py CHECKPOINT_DIR docs/default_checkpoint [--continued DIR ...]

writes `training_curves.png` (one panel per stage and logged quantity) into the second directory. The logs are
the ones `python -m flashvideo.training --report_to tensorboard` writes under `CHECKPOINT_DIR/runs/<stage>/`.
`--continued` names the output directories of runs that fine-tuned those stages further (`--model_name_or_path`),
in order; their curves are drawn after the first run's, each past a dashed line.
Needs `tensorboard` (a dev dependency) to read the event files.
"""

import argparse
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from flashvideo.evaluation.plotting import pyplot

# What each stage's panel row shows: the tags worth reading, in order.
STAGE_TAGS = {
    "tokenizer": ("train/reconstruction_loss", "train/vq_loss", "train/psnr"),
    "keyframe": ("train/loss",),
    "interpolation": ("train/loss",),
}


def read_scalars(log_dir: Path, tags: tuple[str, ...]) -> dict[str, tuple[list[int], list[float]]]:
    """`{tag: (steps, values)}` for the tags the event files under `log_dir` hold."""
    events = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})  # 0: keep every point
    events.Reload()
    present = set(events.Tags()["scalars"])
    return {
        tag: ([e.step for e in events.Scalars(tag)], [e.value for e in events.Scalars(tag)])
        for tag in tags
        if tag in present
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path, help="the --output_dir of the training stages")
    parser.add_argument("output_dir", type=Path, help="where training_curves.png goes")
    parser.add_argument(
        "--continued", type=Path, nargs="+", default=[], help="output_dirs of runs that continued these, in order"
    )
    args = parser.parse_args()

    rows = {
        stage: read_scalars(args.checkpoint / "runs" / stage, tags)
        for stage, tags in STAGE_TAGS.items()
        if (args.checkpoint / "runs" / stage).is_dir()
    }
    rows = {stage: curves for stage, curves in rows.items() if curves}
    boundaries = {stage: [] for stage in rows}  # stage → the steps where continued runs start
    for continued in args.continued:
        for stage, curves in rows.items():
            log_dir = continued / "runs" / stage
            if not log_dir.is_dir():
                continue
            offset = max(steps[-1] for steps, _ in curves.values())
            boundaries[stage].append(offset)
            for tag, (steps, values) in read_scalars(log_dir, tuple(curves)).items():
                curves[tag] = (curves[tag][0] + [offset + step for step in steps], curves[tag][1] + values)
    if not rows:
        raise SystemExit(f"No tensorboard logs under {args.checkpoint / 'runs'}/<stage>/.")
    plt = pyplot()
    columns = max(len(curves) for curves in rows.values())
    figure, axes = plt.subplots(len(rows), columns, figsize=(4.5 * columns, 3.2 * len(rows)), squeeze=False)
    for row, (stage, curves) in zip(axes, rows.items()):
        for axis in row[len(curves) :]:
            axis.axis("off")
        for axis, (tag, (steps, values)) in zip(row, curves.items()):
            axis.plot(steps, values)
            for boundary in boundaries[stage]:
                axis.axvline(boundary, color="gray", linestyle="--", linewidth=1)
            axis.set_title(f"{stage}: {tag.removeprefix('train/')}")
            axis.set_xlabel("optimizer step")
            if tag.endswith("loss"):
                axis.set_yscale("log")
            axis.grid(True, alpha=0.3)
    figure.tight_layout()
    args.output_dir.mkdir(parents=True, exist_ok=True)
    path = args.output_dir / "training_curves.png"
    figure.savefig(path, dpi=110)
    plt.close(figure)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
