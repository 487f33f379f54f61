"""FlashVideo text-to-video demo (a Gradio Space; also runs locally: `python spaces_demo/app.py`).

The checkpoint is `$FLASHVIDEO_CHECKPOINT` (a directory or a Hub repo id) or else the one shipped with flashvideo
(`flashvideo.default_checkpoint()`); it is loaded once, on first use. Frames appear on a timeline as the pipeline
makes them — key frames first, then the interpolated frames between them — and the finished clip comes back as an
mp4 and a GIF with per-stage timings and token counts (how many tokens were sampled vs inherited).

API: `gradio_client.Client(URL).predict("a red circle moving right", api_name="/generate")`; every other input has a
default.
"""

from __future__ import annotations

import math
import os
import queue
import shutil
import tempfile
import threading
import time
from pathlib import Path

import gradio as gr
import numpy as np
import torch
from PIL import Image

import flashvideo
from flashvideo import FlashVideoPipeline, export_to_gif, export_to_video
from flashvideo.data.shapes import prompts_for_all_attributes
from flashvideo.validation import check_int


FPS = 8
DISPLAY_SIZE = 256  # clips are small (64×64): show them enlarged, nearest-neighbour
PREVIEW_SIZE = 64  # one frame on the timeline image
OUTPUT_MAX_AGE_S = 3600
# Bounds on what one visitor can ask of the server's only worker.
QUEUE_MAX_SIZE = 16  # requests waiting at once; beyond it Gradio answers "Queue is full"
MAX_PROMPT_CHARS = 300
MAX_PROMPT_TOKENS = 64
MAX_FILE_SIZE = "1mb"  # uploads (the page has no upload input; this caps the server's upload route)
SEED_RANGE = (0, 2**64 - 1)  # the non-negative seeds `torch.Generator.manual_seed` accepts
POLL_S = 0.2  # how often a request waiting for its next frame lets Gradio stop it (a cancelled request)
# One prompt per color, cycling through shapes and directions.
EXAMPLES = prompts_for_all_attributes()[::13]
CSS = "#video video, #gif img { image-rendering: pixelated; }"

_pipeline: FlashVideoPipeline | None = None
_pipeline_lock = threading.Lock()
_output_root: Path | None = None  # created by this server on first use (`output_root()`)
_request_dirs: set[Path] = set()  # the request folders this server made: the only ones cleanup may remove


class GenerationCancelled(Exception):
    """Raised in the worker thread when the request it serves was cancelled or its client went away."""


_stop_flags: dict[int, threading.Event] = {}  # worker thread id -> set once its request is cancelled or done


def checkpoint_source() -> str:
    """`$FLASHVIDEO_CHECKPOINT` (a directory or a Hub repo id), else the checkpoint shipped with flashvideo."""
    return os.environ.get("FLASHVIDEO_CHECKPOINT") or str(flashvideo.default_checkpoint())


def get_pipeline() -> FlashVideoPipeline:
    """The pipeline, loaded on first use and then shared by every request."""
    global _pipeline
    with _pipeline_lock:
        if _pipeline is None:
            pipe = FlashVideoPipeline.from_pretrained(checkpoint_source(), device="cpu")
            pipe.show_progress = False
            for model in {id(model): model for model in (pipe.model, pipe.interpolation_model)}.values():
                model.register_forward_pre_hook(_stop_if_cancelled)
            _pipeline = pipe
    return _pipeline


def _stop_if_cancelled(module: torch.nn.Module, args: tuple) -> None:
    """A forward pre-hook on the pipeline's models: a worker whose request is gone stops before its next token."""
    stop = _stop_flags.get(threading.get_ident())
    if stop is not None and stop.is_set():
        raise GenerationCancelled


def _load_error(error: Exception) -> str:
    """A readable line for any failure to load the checkpoint (missing, corrupt, incompatible)."""
    if isinstance(error, (FileNotFoundError, OSError, ValueError)):
        return str(error)
    return f"{type(error).__name__}: {error}"


def _enlarge(frame: np.ndarray, size: int) -> np.ndarray:
    scale = max(1, size // max(frame.shape[:2]))
    return frame.repeat(scale, axis=0).repeat(scale, axis=1) if scale > 1 else frame


def output_root() -> Path:
    """This server's folder for request files: a new private one (`tempfile.mkdtemp`), made on first use."""
    global _output_root
    if _output_root is None:
        _output_root = Path(tempfile.mkdtemp(prefix="flashvideo-space-"))
    return _output_root


def _remove_old_request_dirs() -> None:
    """Remove the request folders this server made more than `OUTPUT_MAX_AGE_S` ago. Nothing else is touched:
    not a folder it did not make, not one that became a symlink, not anything outside `output_root()`."""
    root = output_root()
    for folder in list(_request_dirs):
        try:
            if folder.is_symlink() or folder.parent != root or not folder.is_dir():
                _request_dirs.discard(folder)
                continue
            if time.time() - folder.lstat().st_mtime > OUTPUT_MAX_AGE_S:
                shutil.rmtree(folder)  # refuses a symlink; never follows the links inside
                _request_dirs.discard(folder)
        except OSError:
            _request_dirs.discard(folder)


def _request_dir() -> Path:
    """A fresh folder for one request's files; this server's folders older than an hour are removed."""
    _remove_old_request_dirs()
    folder = Path(tempfile.mkdtemp(dir=output_root()))
    _request_dirs.add(folder)
    return folder


KIND_COLORS = {"key": (250, 204, 21), "interp.": (96, 165, 250), "": (64, 64, 64)}


def _timeline(frames: list, kinds: list, path: Path) -> str:
    """One image of the whole clip in time order, 8 frames a row: each frame once made (yellow border: key frame,
    blue: interpolated), a dark square until then. Written to `path` (a new file per update)."""
    cell, border, gap, columns = PREVIEW_SIZE, 3, 4, min(8, max(len(frames), 1))
    rows = max(1, -(-len(frames) // columns))
    step = cell + 2 * border + gap
    sheet = np.full((rows * step + gap, columns * step + gap, 3), 255, np.uint8)
    for t, (frame, kind) in enumerate(zip(frames, kinds)):
        top, left = gap + (t // columns) * step, gap + (t % columns) * step
        sheet[top : top + cell + 2 * border, left : left + cell + 2 * border] = KIND_COLORS[kind]
        inner = sheet[top + border : top + border + cell, left + border : left + border + cell]
        if frame is None:
            inner[:] = 24
        else:
            image = Image.fromarray(frame).resize((cell, cell), Image.Resampling.NEAREST)
            inner[:] = np.asarray(image.convert("RGB"))
    Image.fromarray(sheet).save(path)
    return str(path)


def _check_prompt(prompt: object, pipe: FlashVideoPipeline) -> str:
    """The prompt, if it is a string within `MAX_PROMPT_CHARS` characters and `MAX_PROMPT_TOKENS` tokens."""
    if not isinstance(prompt, str):
        raise gr.Error(f"prompt must be a string, got {type(prompt).__name__}.")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise gr.Error(f"prompt must be at most {MAX_PROMPT_CHARS} characters, got {len(prompt)}.")
    try:
        num_tokens = len(pipe.processor.encode_text(prompt))
    except ValueError as error:
        raise gr.Error(str(error)) from None
    if num_tokens > MAX_PROMPT_TOKENS:
        raise gr.Error(f"prompt must be at most {MAX_PROMPT_TOKENS} tokens, got {num_tokens}.")
    return prompt


def _check_seed(seed: object) -> int:
    """The seed as an int in `SEED_RANGE` (0 when left empty)."""
    if seed is None:
        return 0
    low, high = SEED_RANGE
    value = seed
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    try:
        check_int("seed", value, low, high)
    except ValueError as error:  # the page shows a gr.Error, with the package's wording
        raise gr.Error(str(error)) from None
    return value


def _start_worker(pipe: FlashVideoPipeline, prompt: str, stop: threading.Event, **kwargs) -> tuple:
    """Run the pipeline in a thread; returns (thread, events). Events: ("frame", stage, index, frames), then
    ("done", output) or ("error", exception). Before each model call (each token) and between frames the thread
    checks `stop`, and ends when it is set."""
    events: queue.Queue = queue.Queue()

    def callback(stage: str, index: int, frames: np.ndarray) -> None:
        if stop.is_set():
            raise GenerationCancelled
        events.put(("frame", stage, index, frames.copy()))

    def work() -> None:
        _stop_flags[threading.get_ident()] = stop
        try:
            events.put(("done", pipe(prompt, callback=callback, **kwargs)))
        except GenerationCancelled:
            events.put(("cancelled",))
        except Exception as error:  # reported to the page by the generator below
            events.put(("error", error))
        finally:
            _stop_flags.pop(threading.get_ident(), None)

    worker = threading.Thread(target=work, name="flashvideo-generate", daemon=True)
    worker.start()
    return worker, events


def _raise_for(error: Exception) -> None:
    if isinstance(error, ValueError):
        raise gr.Error(str(error))
    raise gr.Error(f"Generation failed: {type(error).__name__}: {error}")


def generate(
    prompt: str,
    num_frames: int = 16,
    key_frame_spacing: int = 5,
    redundant_free: bool = True,
    inherit_ratio: float = 0.2,
    temperature: float = 1.0,
    seed: int = 0,
):
    """Generate a clip; yields (video, gif, stats, summary, timeline) as frames are made, then the finished clip.

    When the request is cancelled or its client disconnects, Gradio closes this generator and the generation
    stops before its next model call; errors of any kind reach the page as a message.
    """
    try:
        num_frames = int(num_frames) if num_frames is not None else 16
        spacing = int(key_frame_spacing) if key_frame_spacing is not None else 5
    except (TypeError, ValueError, OverflowError):
        raise gr.Error(f"num_frames and key_frame_spacing must be integers, got {num_frames!r}, "
                       f"{key_frame_spacing!r}.") from None  # fmt: skip
    seed = _check_seed(seed)
    try:
        pipe = get_pipeline()
    except Exception as error:
        raise gr.Error(f"Could not load the checkpoint: {_load_error(error)}") from None
    prompt = _check_prompt(prompt, pipe)
    try:
        options = dict(
            num_frames=num_frames, key_frame_spacing=spacing, interpolate=spacing > 1,
            redundant_free=bool(redundant_free), inherit_ratio=float(inherit_ratio),
            temperature=float(temperature), generator=torch.Generator().manual_seed(seed),
        )  # fmt: skip
    except (TypeError, ValueError) as error:
        raise gr.Error(str(error)) from None
    stop = threading.Event()
    worker, events = _start_worker(pipe, prompt, stop, **options)
    try:
        yield from _follow(worker, events, num_frames)
    except gr.Error:
        raise
    except Exception as error:  # e.g. writing the clip failed
        _raise_for(error)
    finally:  # finished, failed, cancelled or disconnected (GeneratorExit): the worker stops at its next token
        stop.set()  # no join: Gradio closes a cancelled generator from its event loop, which must not block


def _follow(worker: threading.Thread, events: queue.Queue, num_frames: int):
    """The updates of one request as its worker makes frames, then the finished clip."""
    folder = _request_dir()
    slots: list = [None] * max(min(num_frames, 256), 0)  # the clip's frames in time order, as they are made
    kinds: list = [""] * len(slots)
    updates = made = 0
    while True:
        try:
            event = events.get(timeout=POLL_S)
        except queue.Empty:  # a no-op update: where Gradio can close this generator if the request is gone
            yield gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip()
            continue
        if event[0] == "error":
            _raise_for(event[1])
        if event[0] == "done":
            break
        _, stage, t, frames = event  # the pipeline reports each frame's place in the clip (one prompt: frames[0])
        if 0 <= t < len(slots):
            slots[t], kinds[t] = frames[0], "key" if stage == "key_frames" else "interp."
            made += 1
        updates += 1
        doing = "key frames" if stage == "key_frames" else "interpolation"
        status = f"Generating… {made}/{num_frames} frames ({doing})"
        timeline = _timeline(slots, kinds, folder / f"timeline-{updates:03d}.png")
        if updates == 1:  # the arguments were accepted: clear the previous clip while this one is made
            yield None, None, None, status, timeline
        else:
            yield gr.skip(), gr.skip(), gr.skip(), status, timeline
    worker.join()

    clip = event[1].frames[0]
    enlarged = np.stack([_enlarge(frame, DISPLAY_SIZE) for frame in clip])
    video = export_to_video(enlarged, folder / "flashvideo.mp4", fps=FPS)
    gif = export_to_gif(enlarged, folder / "flashvideo.gif", fps=FPS)
    stats = event[1].stats
    # The clip as decoded in one batch (the callback's frames were decoded one at a time).
    timeline = _timeline(list(clip), kinds, folder / "timeline-final.png")
    # GenerationStats formats itself (the CLI prints the same line); the Space only adds the headline.
    summary = f"**{len(clip)} frames in {stats.seconds:.2f} s** — {stats.summary()}."
    yield video, gif, stats.to_dict(), summary, timeline


def model_info() -> str:
    """A line about the loaded checkpoint (loads it on the first page view)."""
    try:
        pipe = get_pipeline()
    except Exception as error:
        return f"⚠️ No checkpoint could be loaded: {_load_error(error)}"
    config = pipe.model.config
    return (
        f"Checkpoint `{checkpoint_source()}`: {config.image_size}×{config.image_size} frames, "
        f"{config.code_grid_size}×{config.code_grid_size} tokens each; at most {pipe.max_num_frames(5)} frames with "
        f"key-frame spacing 5 (`num_frames − 1` must be a multiple of the spacing; spacing 1 = every frame a key "
        f"frame, at most {pipe.max_num_frames(1)})."
    )


with gr.Blocks(
    title="FlashVideo: swift text-to-video with RetNet", delete_cache=(OUTPUT_MAX_AGE_S, OUTPUT_MAX_AGE_S)
) as demo:
    gr.Markdown(
        "# ⚡ FlashVideo\n"
        "Text-to-video with a RetNet decoder: key frames are sampled recurrently (constant time per token), then "
        "the frames between them are interpolated — *redundant-free* interpolation inherits a share of the tokens "
        "that do not change instead of sampling them."
    )
    info = gr.Markdown(elem_id="model-info")
    with gr.Row():
        with gr.Column(scale=1):
            prompt = gr.Textbox(
                label="Prompt", value=EXAMPLES[0], lines=1, elem_id="prompt", max_length=MAX_PROMPT_CHARS,
                info="Shapes grammar: a {color} {shape} moving {direction}",
            )  # fmt: skip
            with gr.Row():
                num_frames = gr.Slider(2, 61, value=16, step=1, label="Frames", elem_id="num-frames")
                key_frame_spacing = gr.Slider(
                    1, 15, value=5, step=1, label="Key-frame spacing", elem_id="key-frame-spacing",
                    info="frames from one key frame to the next; 1 = no interpolation",
                )  # fmt: skip
            with gr.Row():
                redundant_free = gr.Checkbox(value=True, label="Redundant-free interpolation", elem_id="redundant-free")
                inherit_ratio = gr.Slider(
                    0.0, 1.0, value=0.2, step=0.05, label="Inherit ratio", elem_id="inherit-ratio",
                    info="share of the stable tokens inherited",
                )  # fmt: skip
            with gr.Row():
                temperature = gr.Slider(0.1, 2.0, value=1.0, step=0.05, label="Temperature", elem_id="temperature")
                seed = gr.Number(value=0, precision=0, label="Seed", elem_id="seed")
            button = gr.Button("Generate", variant="primary", elem_id="generate")
            gr.Examples(examples=[[text] for text in EXAMPLES], inputs=[prompt], label="Examples")
        with gr.Column(scale=1):
            summary = gr.Markdown("Frames appear below as they are generated.", label="Summary", elem_id="summary")
            gr.Markdown("Frames as they are generated: key frames (yellow) first, then the interpolated ones (blue).")
            preview = gr.Image(
                label="Frames as they are generated", show_label=False, type="filepath", elem_id="preview",
                format="png",
            )  # fmt: skip
            with gr.Row():
                video = gr.Video(label="Video (mp4)", elem_id="video", loop=True, autoplay=True)
                gif = gr.Image(label="GIF", type="filepath", elem_id="gif")
            stats = gr.JSON(label="Per-stage timings and tokens", elem_id="stats")

    inputs = [prompt, num_frames, key_frame_spacing, redundant_free, inherit_ratio, temperature, seed]
    outputs = [video, gif, stats, summary, preview]
    button.click(generate, inputs=inputs, outputs=outputs, api_name="generate")
    prompt.submit(generate, inputs=inputs, outputs=outputs, api_name=False)
    demo.load(model_info, outputs=info, api_name=False)


def serve(**launch_kwargs):
    """Queue (at most `QUEUE_MAX_SIZE` waiting requests) and launch the demo, uploads capped at `MAX_FILE_SIZE`;
    `launch_kwargs` go to `Blocks.launch`."""
    return demo.queue(max_size=QUEUE_MAX_SIZE).launch(css=CSS, max_file_size=MAX_FILE_SIZE, **launch_kwargs)


if __name__ == "__main__":
    serve()
