"""The benchmarks' plots: written to PNG files, no display needed."""

from pathlib import Path


def pyplot():
    """`matplotlib.pyplot` on the file-only Agg backend (benchmarks run on machines without a screen)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_line_panels(
    path: Path, x_label: str, panels: dict[str, dict[str, tuple[list, list]]], title: str | None = None
) -> None:
    """One row of line plots over a shared log-2 x axis, saved to `path`.

    `panels` maps each panel's y label to its series: `{series label: (xs, ys)}`.
    """
    plt = pyplot()
    figure, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    for axis, (y_label, series) in zip(axes[0], panels.items()):
        for label, (xs, ys) in series.items():
            axis.plot(xs, ys, "o-", label=label)
        axis.set_xscale("log", base=2)
        axis.set_xlabel(x_label)
        axis.set_ylabel(y_label)
        axis.grid(True, alpha=0.3)
        axis.legend()
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
