"""The checkpoint shipped inside the package: small, float16 on disk, float32 in memory, and it draws Shapes.

Also the two entry points that default to it: `flashvideo generate` without `--checkpoint`, and
`python spaces_demo/app.py` served offline.
"""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

import flashvideo
from flashvideo import FlashVideoPipeline
from flashvideo.cli import main
from flashvideo.data.shapes import COLORS, shapes_dataset
from flashvideo.draft_table import DRAFT_TABLE_FILE
from flashvideo.evaluation.metrics import psnr
from flashvideo.evaluation.shapes import analyze_clip
from flashvideo.image_tokenizer import codes_to_frames, frames_to_codes
from flashvideo.video_io import read_video

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def checkpoint() -> Path:
    return flashvideo.default_checkpoint()


@pytest.fixture(scope="module")
def pipe(checkpoint) -> FlashVideoPipeline:
    pipe = FlashVideoPipeline.from_pretrained(checkpoint)
    pipe.show_progress = False
    return pipe


def test_shipped_files_are_small_and_float16(checkpoint):
    files = [path for path in checkpoint.rglob("*") if path.is_file()]
    assert sum(path.stat().st_size for path in files) < 25 * 2**20
    weights = [path for path in files if path.suffix == ".safetensors"]
    assert {path.parent.name for path in weights} >= {"default_checkpoint", "interpolation", "image_tokenizer"}
    for path in weights:
        with safe_open(path, framework="pt") as handle:
            dtypes = {handle.get_slice(name).get_dtype() for name in handle.keys()}
        # Weights in float16; the draft table (draft_table.safetensors) holds integer contexts and codes only.
        allowed = {"I32", "I16"} if path.name == DRAFT_TABLE_FILE else {"F16", "I64"}
        assert dtypes <= allowed, (path, dtypes)
    assert not list(checkpoint.rglob("*.pt")) and not list(checkpoint.rglob("*.bin"))  # nothing to unpickle


def test_loads_in_float32_with_both_models(pipe):
    assert pipe.model.dtype == torch.float32 and pipe.interpolation_model.dtype == torch.float32
    assert pipe.interpolation_model is not pipe.model
    assert pipe.vqvae.dtype == torch.float32


def test_image_tokenizer_reconstructs_unseen_clips(pipe):
    videos = np.stack(shapes_dataset(4, seed=4242)["video"])  # not among the training clips (seeds 0 and 1)
    frames = videos.reshape(-1, *videos.shape[2:])
    restored = codes_to_frames(pipe.vqvae, frames_to_codes(pipe.vqvae, frames))
    as_unit = lambda x: torch.from_numpy(x).movedim(-1, -3).double() / 255  # noqa: E731
    assert psnr(as_unit(restored), as_unit(frames)).mean() > 30.0


def test_generated_clips_follow_the_prompted_color(pipe):
    """Key frames + interpolation, two clips per color: the analyzer reads the prompted color back.

    The evaluation (docs/default_checkpoint.md) measured 96–100% color accuracy in the interpolating modes. At 90%,
    9 or more hits out of 12 has a probability of about 0.97; a model that ignores the text (1 in 6) reaches it
    with a probability of about 1e-5.
    """
    wanted = [color for color in COLORS for _ in range(2)]
    prompts = [f"a {color} {shape} moving right" for color, shape in zip(wanted, ["square", "circle"] * 6)]
    outs = pipe(prompts, batch_size=12, num_frames=6, key_frame_spacing=5, generator=torch.Generator().manual_seed(0))
    assert len(outs) == 12 and outs[0].frames.shape == (1, 6, 64, 64, 3)
    found = [analyze_clip(out.frames[0])["color"] for out in outs]
    assert sum(a == b for a, b in zip(found, wanted)) >= 9, list(zip(found, wanted))


def test_generate_command_defaults_to_the_shipped_checkpoint(tmp_path):
    gif = tmp_path / "clip.gif"
    assert main(["generate", "a green circle moving up", "-o", str(gif), "--num-frames", "6"]) == 0
    assert read_video(gif).shape == (6, 64, 64, 3)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_space_app_script_serves_the_shipped_checkpoint_offline(tmp_path):
    """`python spaces_demo/app.py`, as a Space runs it: no network, no FLASHVIDEO_CHECKPOINT."""
    from gradio_client import Client

    port = _free_port()
    env = {key: value for key, value in os.environ.items() if key != "FLASHVIDEO_CHECKPOINT"}
    env.update(HF_HUB_OFFLINE="1", GRADIO_SERVER_PORT=str(port), GRADIO_ANALYTICS_ENABLED="False")
    server = subprocess.Popen(
        [sys.executable, str(ROOT / "spaces_demo" / "app.py")],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 300  # generous: a cold start on a loaded 2-core machine
        while True:
            assert server.poll() is None, server.stdout.read()
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                assert time.monotonic() < deadline, "the app did not start serving within 300 s"
                time.sleep(0.5)
        client = Client(f"http://127.0.0.1:{port}/", verbose=False, download_files=str(tmp_path / "downloads"))
        _, _, stats, _, _ = client.predict("a blue triangle moving left", num_frames=6, api_name="/generate")
        assert stats["key_frames"]["frames"] + stats["interpolation"]["frames"] == 6
    finally:
        server.terminate()
        server.wait(timeout=30)
