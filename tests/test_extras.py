"""The lean core install: SciPy comes with the `eval` extra, and where it is missing the error names that extra."""

import configparser
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from flashvideo.data.shapes import render_clip
from flashvideo.evaluation.metrics import frechet_distance, psnr
from flashvideo.evaluation.shapes import analyze_clip
from flashvideo.cli import main
from flashvideo.extras import import_extra, require_extra


ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def without_scipy(monkeypatch):
    """Make `import scipy...` fail as it does where the eval extra is not installed."""
    for name in [name for name in sys.modules if name == "scipy" or name.startswith("scipy.")]:
        monkeypatch.delitem(sys.modules, name)
    for name in ("scipy", "scipy.linalg", "scipy.ndimage"):
        monkeypatch.setitem(sys.modules, name, None)  # None in sys.modules: the import raises ImportError


def test_setup_cfg_keeps_scipy_out_of_the_core_install():
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    core = config["options"]["install_requires"].split()
    extras = config["options.extras_require"]
    assert not any(requirement.startswith("scipy") for requirement in core)
    assert "scipy" in extras["eval"].split() and "scipy" in extras["dev"].split()


def test_missing_scipy_names_the_eval_extra(without_scipy):
    with pytest.raises(ImportError, match=r'FVD.*needs scipy.*pip install "flashvideo\[eval\]"'):
        frechet_distance(np.zeros(3), np.eye(3), np.ones(3), np.eye(3))
    with pytest.raises(ImportError, match=r"Shapes analyzer.*needs scipy.*'eval' extra"):
        analyze_clip(render_clip("red", "circle", "right", size=16))
    with pytest.raises(ImportError, match=r'pip install "\.\[eval\]"'):
        import_extra("scipy.ndimage", "this")
    with pytest.raises(ImportError, match=r"flashvideo eval needs scipy"):
        require_extra("eval", "flashvideo eval")
    # What needs no SciPy still works.
    frames = torch.rand(2, 3, 8, 8)
    assert psnr(frames, frames).tolist() == [100.0, 100.0]


def test_the_package_imports_without_scipy():
    # A fresh interpreter with SciPy blocked: every module a core install uses must import.
    script = textwrap.dedent(
        """
        import sys
        for name in ("scipy", "scipy.linalg", "scipy.ndimage"):
            sys.modules[name] = None
        import flashvideo, flashvideo.cli, flashvideo.training.train
        import flashvideo.evaluation.metrics, flashvideo.evaluation.shapes, flashvideo.evaluation.evaluate
        flashvideo.cli.build_parser()
        print("ok")
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("ok")


def test_flashvideo_eval_without_scipy_is_a_one_line_error(without_scipy, capsys):
    assert main(["eval", "--num-samples", "1"]) == 2  # refused before the checkpoint is even loaded
    err = capsys.readouterr().err
    assert err.startswith("flashvideo eval: error: flashvideo eval needs scipy") and err.count("\n") == 1
    assert 'pip install "flashvideo[eval]"' in err
