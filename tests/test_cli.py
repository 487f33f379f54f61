"""`flashvideo generate` writes a real, readable clip; `flashvideo eval` writes its results."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from flashvideo import FlashVideoPipeline
from flashvideo.cli import main
from flashvideo.video_io import read_video


@pytest.fixture
def checkpoint(tiny_pipeline, tmp_path):
    path = tmp_path / "checkpoint"
    tiny_pipeline.save_pretrained(path)
    return path


def test_generate_mp4_and_gif(checkpoint, tmp_path, capsys):
    mp4 = tmp_path / "clip.mp4"
    assert main(["generate", "a red circle moving right", "-o", str(mp4), "--checkpoint", str(checkpoint),
                 "--num-frames", "6", "--key-frame-spacing", "5", "--redundant-free", "--seed", "1"]) == 0  # fmt: skip
    frames = read_video(mp4)
    assert frames.shape == (6, 16, 16, 3) and frames.dtype == np.uint8
    assert "interpolation: 4 frames" in capsys.readouterr().out
    gif = tmp_path / "clip.gif"
    main(["generate", "a blue square moving up", "-o", str(gif), "--checkpoint", str(checkpoint), "--num-frames", "3",
          "--no-interpolation"])  # fmt: skip
    from PIL import Image

    with Image.open(gif) as image:
        assert image.n_frames == 3 and image.size == (16, 16)


def test_bad_arguments_are_reported(checkpoint, tmp_path, capsys):
    """One line on stderr and exit status 2 (more cases in test_robustness_cli.py)."""
    assert main(["generate", "a red circle", "-o", str(tmp_path / "clip.avi"), "--checkpoint", str(checkpoint)]) == 2
    assert "flashvideo generate: error: output must end in one of" in capsys.readouterr().err
    assert main(["generate", "a red circle", "-o", str(tmp_path / "c.mp4"), "--checkpoint", str(checkpoint),
                 "--inherit-ratio", "2"]) == 2  # fmt: skip
    assert "inherit_ratio" in capsys.readouterr().err


def test_console_script_help():
    result = subprocess.run(
        [sys.executable, "-m", "flashvideo.cli", "generate", "--help"], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0
    for option in (
        "--num-frames", "--key-frame-spacing", "--redundant-free", "--no-redundant-free", "--inherit-ratio",
        "--checkpoint",
    ):  # fmt: skip
        assert option in result.stdout


@pytest.mark.skipif(shutil.which(os.environ.get("CXX", "g++")) is None, reason="torch.compile needs a C++ compiler")
def test_eval_writes_results_with_compiled_decoding(shapes_sized_pipeline, tmp_path, capsys, monkeypatch):
    compiled, compile_step = [], FlashVideoPipeline.compile_recurrent_step
    monkeypatch.setattr(
        FlashVideoPipeline, "compile_recurrent_step", lambda pipe: compiled.append(pipe) or compile_step(pipe)
    )
    shapes_sized_pipeline.save_pretrained(tmp_path / "checkpoint")
    output_dir = tmp_path / "eval"
    assert main(["eval", "--model", str(tmp_path / "checkpoint"), "--num-samples", "2", "--modes", "keyframes",
                 "--top-k", "5", "--compile", "--output-dir", str(output_dir)]) == 0  # fmt: skip
    results = json.loads((output_dir / "eval_results.json").read_text())
    assert len(compiled) == 1 and results["compiled"] is True
    assert results["sampling"] == {"top_k": 5} and results["num_samples"] == 2
    assert list(results["modes"]) == ["key frames only (every 5th frame)"]
    assert "Decode step compiled" in capsys.readouterr().out


def test_bench_all_runs_each_benchmark_with_its_own_defaults(monkeypatch, tmp_path):
    # `bench all` states no defaults of its own: each benchmark gets what `flashvideo bench NAME` gets.
    from flashvideo import cli

    seen: dict[str, list[dict]] = {}

    def fake(name):
        def run(args):
            settings = {key: value for key, value in vars(args).items() if key not in ("command", "benchmark", "func")}
            seen.setdefault(name, []).append(settings)
            (args.output_dir / f"{name}.md").write_text(f"# {name}\n")
            return args.output_dir / f"{name}.md"

        return run

    names = ("decode", "video", "scaling", "training")
    for name in names:
        monkeypatch.setattr(cli, f"_bench_{name}", fake(name))
    assert main(["bench", "all", "--output-dir", str(tmp_path)]) == 0
    assert list(seen) == list(names)
    for name in names:
        assert main(["bench", name, "--output-dir", str(tmp_path)]) == 0
        assert seen[name][0] == seen[name][1], name
    assert seen["scaling"][0]["lengths"] == [16, 31, 61, 121] and seen["video"][0]["repeats"] == 5
    assert (tmp_path / "README.md").is_file()
