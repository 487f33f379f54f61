"""The Space under faults and abuse (issue 22, items 1-2): bounded work per request, readable errors, its own files.

The served tests run the real app (`app.serve`) on the shipped checkpoint in a background thread, through
`gradio_client`, as tests/test_space_demo.py does.
"""

import os
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from test_space_demo import PROMPT, _load_app, _save_tiny_checkpoint, _serve


os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
pytestmark = pytest.mark.filterwarnings("ignore::Warning:gradio.queueing")

WORKER_NAME = "flashvideo-generate"
LONG_CLIP = 61  # 13 key frames on the shipped checkpoint: tens of seconds if it ran to the end
SHORT_CLIP = {"num_frames": 6, "key_frame_spacing": 5}


@pytest.fixture(scope="module")
def shipped_space():
    """The demo on the shipped checkpoint (already loaded), at most 2 requests waiting in its queue."""
    patch = pytest.MonkeyPatch()
    patch.delenv("FLASHVIDEO_CHECKPOINT", raising=False)
    app = _load_app("flashvideo_space_robustness")
    app.QUEUE_MAX_SIZE = 2
    app.get_pipeline()
    try:
        yield SimpleNamespace(app=app, url=_serve(app))
    finally:
        app.demo.close()
        patch.undo()
        sys.modules.pop("flashvideo_space_robustness", None)


@pytest.fixture(scope="module")
def shipped_client(shipped_space, tmp_path_factory):
    from gradio_client import Client

    return Client(shipped_space.url, verbose=False, download_files=str(tmp_path_factory.mktemp("downloads")))


def _workers() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == WORKER_NAME]


def _wait_for_no_workers(timeout: float = 10.0) -> None:
    """Until no generation thread runs (a cancelled one stops before its next token), or `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while _workers() and time.monotonic() < deadline:
        time.sleep(0.05)


def _wait_until_generating(job, timeout: float = 60.0) -> None:
    """Until the request has sent its first frame update (its generation is under way)."""
    deadline = time.monotonic() + timeout
    while not job.outputs():
        assert time.monotonic() < deadline, "the request never started generating"
        assert not job.done(), job.status()
        time.sleep(0.02)


def _timed_request(client) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this whole process — the server and its workers) for one short request."""
    wall, cpu = time.perf_counter(), time.process_time()
    client.predict(PROMPT, **SHORT_CLIP, api_name="/generate")
    return time.perf_counter() - wall, time.process_time() - cpu


def test_cancelled_requests_stop_and_free_the_worker(shipped_client):
    """N requests cancelled mid-generation leave no generation running: their workers end within seconds, and the
    next request costs at most 1.5× an idle one (measured just before, same inputs).

    The cost compared is the server process's CPU time during the request: generations left running after a
    cancel burn it (each a core), while the load of other processes on a shared machine does not, which would
    make wall time flaky. Wall times are reported with it."""
    _timed_request(shipped_client)  # warm-up
    idle_wall, idle_cpu = _timed_request(shipped_client)
    for seed in range(3):
        job = shipped_client.submit(PROMPT, num_frames=LONG_CLIP, seed=seed, api_name="/generate")
        _wait_until_generating(job)
        job.cancel()
    cancelled = time.perf_counter()
    _wait_for_no_workers()  # a cancelled worker stops before its next token; uncancelled ones run for tens of s
    stopped = time.perf_counter() - cancelled
    assert not _workers(), f"{len(_workers())} generation threads still running {stopped:.1f} s after the cancels"
    after_wall, after_cpu = _timed_request(shipped_client)
    report = (
        f"workers gone {stopped:.2f} s after the last cancel; idle request {idle_wall:.2f} s wall / "
        f"{idle_cpu:.2f} s CPU; after 3 cancels {after_wall:.2f} s wall / {after_cpu:.2f} s CPU"
    )
    print(report)
    assert after_cpu <= 1.5 * idle_cpu, report
    assert not _workers()


def test_a_client_that_disconnects_stops_its_generation(shipped_space):
    """A browser tab closed mid-generation: the queue's event stream is dropped, and the worker stops."""
    import httpx

    url = shipped_space.url
    dependencies = httpx.get(f"{url}config", timeout=30).json()["dependencies"]
    fn_index = next(i for i, dependency in enumerate(dependencies) if dependency.get("api_name") == "generate")
    session = "disconnecting-client"
    inputs = [PROMPT, LONG_CLIP, 5, True, 0.2, 1.0, 0]
    joined = httpx.post(
        f"{url}gradio_api/queue/join",
        json={"data": inputs, "fn_index": fn_index, "session_hash": session, "event_data": None, "trigger_id": None},
        timeout=30,
    )
    assert joined.status_code == 200, joined.text
    with httpx.stream("GET", f"{url}gradio_api/queue/data?session_hash={session}", timeout=60) as stream:
        for line in stream.iter_lines():
            if "process_generating" in line:  # the first frame is out: generation is under way
                assert _workers()
                break  # and the client goes away
    _wait_for_no_workers()
    assert not _workers(), "the generation went on after its client disconnected"


def test_a_full_queue_is_refused_with_a_message(shipped_space, shipped_client):
    """Beyond `QUEUE_MAX_SIZE` waiting requests, a new one is refused with Gradio's "Queue is full" message."""

    running = shipped_client.submit(PROMPT, num_frames=LONG_CLIP, api_name="/generate")
    _wait_until_generating(running)
    size = shipped_space.app.QUEUE_MAX_SIZE
    waiting = [shipped_client.submit(PROMPT, **SHORT_CLIP, api_name="/generate") for _ in range(size)]
    deadline = time.monotonic() + 30
    while len(shipped_space.app.demo._queue) < size:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    refused = shipped_client.submit(PROMPT, api_name="/generate")
    try:
        with pytest.raises(Exception, match="Queue is full"):
            refused.result(timeout=30)
    finally:
        for job in [running, *waiting]:
            job.cancel()
        _wait_for_no_workers()
    assert not _workers()


def test_uploads_are_capped(shipped_space):
    import httpx

    too_big = b"\0" * (2 * 1024 * 1024)
    response = httpx.post(f"{shipped_space.url}gradio_api/upload", files={"files": ("big.bin", too_big)}, timeout=30)
    assert response.status_code == 413, (response.status_code, response.text[:200])
    small = httpx.post(f"{shipped_space.url}gradio_api/upload", files={"files": ("small.bin", b"ok")}, timeout=30)
    assert small.status_code == 200


def test_bad_prompts_and_seeds_get_a_message_through_the_api(shipped_space, shipped_client):
    from gradio_client.exceptions import AppError

    app = shipped_space.app
    cases = {
        "x" * 100_000: f"at most {app.MAX_PROMPT_CHARS} characters, got 100000",
        "red " * 70: f"at most {app.MAX_PROMPT_TOKENS} tokens, got 70",  # 280 characters
    }
    for prompt, message in cases.items():
        with pytest.raises(AppError, match=message):
            shipped_client.predict(prompt, api_name="/generate")
    for seed in (-1, 2**64, 1e30):
        with pytest.raises(AppError, match=r"seed must be an integer in \[0, 18446744073709551615\]"):
            shipped_client.predict(PROMPT, seed=seed, api_name="/generate")
    assert not _workers()  # refused before any generation started


# ---------------------------------------------------------------------------------------------- in process


def _first_error(app, *args, **kwargs) -> str:
    import gradio as gr

    with pytest.raises(gr.Error) as caught:
        next(app.generate(*args, **kwargs))
    return caught.value.message


def test_a_corrupt_checkpoint_is_a_readable_error(tmp_path, monkeypatch):
    checkpoint = _save_tiny_checkpoint(tmp_path / "checkpoint")
    weights = checkpoint / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    monkeypatch.setenv("FLASHVIDEO_CHECKPOINT", str(checkpoint))
    app = _load_app("flashvideo_space_corrupt")
    try:
        message = _first_error(app, PROMPT)
        assert message.startswith("Could not load the checkpoint: ") and len(message) > 40, message
        assert "No checkpoint could be loaded" in app.model_info()
    finally:
        sys.modules.pop("flashvideo_space_corrupt", None)


def test_a_generation_error_is_a_readable_error(tmp_path, monkeypatch):
    monkeypatch.setenv("FLASHVIDEO_CHECKPOINT", str(_save_tiny_checkpoint(tmp_path / "checkpoint")))
    app = _load_app("flashvideo_space_failing")
    try:
        pipe = app.get_pipeline()

        def broken(*args, **kwargs):
            raise RuntimeError("out of memory in a decoder")

        monkeypatch.setattr(pipe.vqvae, "decode", broken)
        assert _first_error(app, PROMPT) == "Generation failed: RuntimeError: out of memory in a decoder"
    finally:
        sys.modules.pop("flashvideo_space_failing", None)


# ---------------------------------------------------------------------------------------------- its files


def test_each_server_has_its_own_output_root(tmp_path, monkeypatch):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    first, second = _load_app("flashvideo_space_root_a"), _load_app("flashvideo_space_root_b")
    try:
        roots = {Path(first._request_dir()).parent, Path(second._request_dir()).parent}
        assert len(roots) == 2 and all(root.parent == tmp_path and not root.is_symlink() for root in roots)
    finally:
        sys.modules.pop("flashvideo_space_root_a", None)
        sys.modules.pop("flashvideo_space_root_b", None)


def test_cleanup_never_follows_a_symlink_or_leaves_its_own_folders(tmp_path, monkeypatch):
    """A symlinked `$TMPDIR/flashvideo-space` (the old fixed root) or a symlink inside the server's root leads
    cleanup nowhere; only the server's own folders, once old, are removed."""
    tmp, victim = tmp_path / "tmp", tmp_path / "someone-else"
    tmp.mkdir()
    (victim / "old-folder").mkdir(parents=True)
    (victim / "old-folder" / "data.txt").write_text("keep me")
    an_hour_ago = time.time() - 7200
    os.utime(victim / "old-folder", (an_hour_ago, an_hour_ago))
    (tmp / "flashvideo-space").symlink_to(victim, target_is_directory=True)
    monkeypatch.setattr("tempfile.tempdir", str(tmp))
    app = _load_app("flashvideo_space_cleanup")
    try:
        mine = app._request_dir()
        (mine.parent / "link").symlink_to(victim, target_is_directory=True)
        os.utime(mine, (an_hour_ago, an_hour_ago))
        os.utime(mine.parent / "link", (an_hour_ago, an_hour_ago), follow_symlinks=False)
        fresh = app._request_dir()
        assert not mine.exists() and fresh.is_dir()  # its own old folder went
        assert (victim / "old-folder" / "data.txt").read_text() == "keep me"
        assert (mine.parent / "link").is_symlink()
    finally:
        sys.modules.pop("flashvideo_space_cleanup", None)
