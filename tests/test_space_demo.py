"""The Gradio Space demo (`spaces_demo/app.py`), served for real on a free localhost port with a tiny checkpoint:

- a `gradio_client` round trip on `/generate` with only the prompt (every other input defaults);
- a headless Chromium (Debian's, driven by Playwright) that types a prompt, clicks Generate and gets a playable
  `<video>`; the page is saved to `test-artifacts/space_demo.png`;
- four requests at once through the queue;
- too many frames: the error shows in the page, and the server goes on serving.

The browser tests need `/usr/bin/chromium` (`scripts/install_browser.sh`): without it they are skipped, except in CI
(`CI` set), where they fail.
"""

import importlib.util
import inspect
import os
import socket
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch


ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "spaces_demo" / "app.py"
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-dev-shm-usage",
]  # fmt: skip
PROMPT = "a red circle moving right"
TIMEOUT_MS = 90_000
# The tiny checkpoint allows (max_frames - 1) * spacing + 1 = 26 frames at the default spacing 5.
TOO_MANY_FRAMES_ERROR = "num_frames must be an integer in [2, 26]"

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
# gradio's queue calls pandas options that pandas 3 deprecates; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore::Warning:gradio.queueing")


def _load_app(name: str):
    """A fresh import of spaces_demo/app.py (it is a script folder, not a package)."""
    spec = importlib.util.spec_from_file_location(name, APP)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _save_tiny_checkpoint(folder: Path) -> Path:
    """The conftest's tiny random pipeline (16×16 frames, 4×4 codes, max_frames=6), saved."""
    from conftest import PROMPTS

    from flashvideo import FlashVideoConfig, FlashVideoForCausalLM, FlashVideoPipeline
    from flashvideo.image_tokenizer import build_vq_model
    from flashvideo.processing_flashvideo import FlashVideoProcessor
    from flashvideo.text_tokenizer import build_text_tokenizer

    config = FlashVideoConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, chunk_size=8,
        text_vocab_size=40, image_vocab_size=60, max_frames=6, image_size=16, code_grid_size=4,
    )  # fmt: skip
    torch.manual_seed(0)
    model = FlashVideoForCausalLM(config).eval()
    vq = build_vq_model(16, 4, 60, block_out_channels=(8, 16, 16), norm_num_groups=8, vq_embed_dim=8)
    processor = FlashVideoProcessor(build_text_tokenizer(PROMPTS, vocab_size=40), config)
    FlashVideoPipeline(model=model, processor=processor, vqvae=vq, device="cpu").save_pretrained(folder)
    return folder


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _serve(app) -> str:
    """Launch the app as `python spaces_demo/app.py` does (`app.serve`), in a background thread on a free
    localhost port; returns its URL. The caller closes it (`app.demo.close()`)."""
    port = _free_port()
    app.serve(prevent_thread_lock=True, server_name="127.0.0.1", server_port=port, quiet=True)
    return f"http://127.0.0.1:{port}/"


@pytest.fixture(scope="module")
def space(tmp_path_factory):
    """The demo, served in a background thread, on a tiny checkpoint."""
    root = tmp_path_factory.mktemp("space")
    checkpoint = _save_tiny_checkpoint(root / "checkpoint")
    patch = pytest.MonkeyPatch()
    patch.setenv("FLASHVIDEO_CHECKPOINT", str(checkpoint))
    app = _load_app("flashvideo_space_app")
    assert app._pipeline is None, "the checkpoint must load lazily, on first use"
    try:
        yield SimpleNamespace(app=app, url=_serve(app), root=root)
    finally:
        app.demo.close()
        patch.undo()
        sys.modules.pop("flashvideo_space_app", None)


@pytest.fixture(scope="module")
def client(space):
    from gradio_client import Client

    return Client(space.url, verbose=False, download_files=str(space.root / "downloads"))


@pytest.fixture(scope="module")
def browser():
    if not os.path.exists(CHROMIUM):
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing in CI: scripts/install_browser.sh (`make browser`) must install it.")
        pytest.skip(f"{CHROMIUM} is not installed; run scripts/install_browser.sh to run the browser tests.")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser, space):
    context = browser.new_context(viewport={"width": 1400, "height": 1100})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(space.url)
    page.locator("#model-info").get_by_text("Checkpoint").wait_for()  # the app is up and the checkpoint loaded
    try:
        yield page
    finally:
        context.close()


def _wait_for_playable_video(page) -> str:
    """Wait until the page's `<video>` has a source that the browser has loaded; returns that source."""
    page.wait_for_function(
        "() => { const v = document.querySelector('#video video');"
        " return v !== null && v.src.length > 0 && v.readyState >= 1 && v.duration > 0; }",
        timeout=TIMEOUT_MS,
    )
    src = page.locator("#video video").get_attribute("src")
    response = page.request.get(src)
    assert response.status == 200, response.status
    assert response.headers["content-type"].startswith("video/mp4"), response.headers["content-type"]
    return src


# ---------------------------------------------------------------------------------------------- the app itself


def test_app_contract():
    """`demo` is a Blocks that is not launched on import; `generate(prompt, ...)` has defaults for all but prompt."""
    import gradio as gr

    app = _load_app("flashvideo_space_app_contract")
    sys.modules.pop("flashvideo_space_app_contract")
    assert isinstance(app.demo, gr.Blocks)
    assert app._pipeline is None  # nothing is loaded on import
    parameters = list(inspect.signature(app.generate).parameters.values())
    assert parameters[0].name == "prompt" and parameters[0].default is inspect.Parameter.empty
    assert [p.name for p in parameters[1:]] == [
        "num_frames", "key_frame_spacing", "redundant_free", "inherit_ratio", "temperature", "seed",
    ]  # fmt: skip
    assert all(p.default is not inspect.Parameter.empty for p in parameters[1:])
    assert len(app.EXAMPLES) >= 4 and all(text.startswith("a ") and " moving " in text for text in app.EXAMPLES)
    assert "serve()" in APP.read_text().split('if __name__ == "__main__":')[1]


def test_missing_checkpoint_is_a_clear_error(monkeypatch):
    import gradio as gr

    import flashvideo

    def no_checkpoint():
        raise FileNotFoundError("No default checkpoint in this installation")

    monkeypatch.delenv("FLASHVIDEO_CHECKPOINT", raising=False)
    monkeypatch.setattr(flashvideo, "default_checkpoint", no_checkpoint)
    app = _load_app("flashvideo_space_app_missing")
    try:
        with pytest.raises(gr.Error, match="Could not load the checkpoint: No default checkpoint"):
            next(app.generate(PROMPT))
        assert "No checkpoint could be loaded" in app.model_info()
    finally:
        sys.modules.pop("flashvideo_space_app_missing", None)


def test_space_metadata_matches_the_installed_gradio():
    import gradio as gr
    from huggingface_hub import SpaceCard

    data = SpaceCard.load(ROOT / "spaces_demo" / "README.md").data
    assert data.sdk == "gradio" and data.sdk_version == gr.__version__
    assert (ROOT / "spaces_demo" / data.app_file).is_file()
    assert data.title and data.emoji and data.license
    assert data.colorFrom in {"red", "yellow", "green", "blue", "indigo", "purple", "pink", "gray"}
    assert data.colorTo in {"red", "yellow", "green", "blue", "indigo", "purple", "pink", "gray"}
    assert isinstance(data.pinned, bool) and 0 < len(data.short_description) <= 60
    requirements = [
        line.strip() for line in (ROOT / "spaces_demo" / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]  # fmt: skip
    assert any(line.startswith("torch==") for line in requirements)
    assert any("download.pytorch.org/whl/cpu" in line for line in requirements)  # CPU torch, not the CUDA build
    assert any(line.startswith(".[demo]") or "flashvideo" in line for line in requirements)


# ---------------------------------------------------------------------------------------------- served


def test_client_round_trip_with_defaults(space, client):
    endpoint = client.view_api(return_format="dict", print_info=False)["named_endpoints"]["/generate"]
    parameters = endpoint["parameters"]
    assert parameters[0]["parameter_name"] == "prompt"
    assert all(p["parameter_has_default"] for p in parameters[1:])

    job = client.submit(PROMPT, api_name="/generate")
    video, gif, stats, summary, timeline = job.result(timeout=120)
    from PIL import Image

    from flashvideo.video_io import read_video

    frames = np.asarray(read_video(video))
    assert frames.shape[0] == 16 and frames.shape[-1] == 3  # 16 frames, enlarged for display
    with Image.open(gif) as image:
        assert image.format == "GIF" and image.n_frames == 16
    assert Path(timeline).suffix == ".png"
    assert stats["key_frames"]["frames"] == 4 and stats["interpolation"]["frames"] == 12
    assert stats["key_frames"]["tokens_sampled"] == 4 * 16
    assert stats["tokens_sampled"] + stats["tokens_inherited"] == 16 * 16
    for stage in ("key_frames", "interpolation", "decode"):
        assert stats[stage]["seconds"] >= 0
    assert stats["total_seconds"] > 0 and "inherited" in summary
    # progressive: an update per key frame (4) and per interpolation step (4), then the clip
    assert len(job.outputs()) >= 9


def test_concurrent_requests_all_complete(space, client):
    jobs = [client.submit(PROMPT, seed=seed, num_frames=11, api_name="/generate") for seed in range(4)]
    results = [job.result(timeout=180) for job in jobs]
    videos = set()
    for video, gif, stats, summary, timeline in results:
        assert Path(video).is_file() and Path(gif).is_file()
        assert stats["key_frames"]["frames"] + stats["interpolation"]["frames"] == 11
        videos.add(Path(video).read_bytes())
    assert len(videos) == 4  # four seeds, four different clips


def test_browser_generates_a_playable_video(page):
    page.locator("#prompt textarea").fill("a blue square moving up")
    page.locator("#generate").click()
    src = _wait_for_playable_video(page)
    assert src.endswith(".mp4")
    page.locator("#gif img").wait_for()
    page.locator("#preview img").wait_for()
    page.locator("#summary").get_by_text("inherited").wait_for()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "space_demo.png"), full_page=True)


def test_too_many_frames_shows_an_error_and_the_server_goes_on(page, client):
    frames = page.locator("#num-frames input[type=number]")
    frames.fill("61")
    frames.press("Enter")
    page.locator("#generate").click()
    toast = page.locator('[data-testid="toast-text"]').filter(has_text=TOO_MANY_FRAMES_ERROR)
    toast.wait_for(state="visible")
    assert "got 61" in toast.inner_text()
    page.wait_for_function(  # the toast has faded in: the message is on screen, not only in the DOM
        "message => [...document.querySelectorAll('[data-testid=\"toast-text\"]')].some(element =>"
        " element.textContent.includes(message) && getComputedStyle(element.closest('.toast-body')).opacity === '1')",
        arg=TOO_MANY_FRAMES_ERROR,
    )
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "space_demo_error.png"))
    # the same page, valid input: a clip
    frames.fill("11")
    frames.press("Enter")
    page.locator("#generate").click()
    _wait_for_playable_video(page)
    # and the API still answers
    _, _, stats, _, _ = client.predict(PROMPT, num_frames=6, api_name="/generate")
    assert stats["key_frames"]["frames"] + stats["interpolation"]["frames"] == 6
