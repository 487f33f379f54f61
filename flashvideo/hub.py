"""Publishing a FlashVideo checkpoint on the 🤗 Hub.

    flashvideo push runs/shapes --repo-id ORG/NAME [--private] [--eval-results eval/eval_results.json]

What is uploaded is everything a Hub user needs, written into a temporary folder first:

- the key-frame model (`config.json`, `model.safetensors`), the interpolation model (`interpolation/`), the image
  tokenizer (`image_tokenizer/`, a `diffusers.VQModel`), the processor (`processor_config.json`, `text_tokenizer/`);
- the modelling and pipeline code with `auto_map` and `custom_pipelines` in `config.json`
  (`FlashVideoPipeline.save_pretrained(..., hub_ready=True)`), so that
  `pipeline(model="ORG/NAME", trust_remote_code=True)` works where flashvideo is not installed;
- a model card (`README.md`): pipeline tag `text-to-video`, tags, data set, metrics and the `eval_results` of
  `flashvideo eval`, with usage both with the installed package and with `trust_remote_code=True`;
- `eval_results.json` itself, when given.

The card's `library_name` is "transformers": the repo loads with transformers' own `AutoModelForCausalLM` and
`pipeline()` (through `trust_remote_code`), so the Hub's "Use this model" snippet and its `custom_code` handling are
the right ones; "flashvideo" is not a library the Hub knows, which would give no snippet at all. Downloads are
counted on `config.json` either way.

Only `HfApi.create_repo` and `HfApi.upload_folder` talk to the Hub; pass `api=` to use another client.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData
from transformers.pipelines import PIPELINE_REGISTRY

from .retention import retnet_decay_exponents


PIPELINE_TAG = "text-to-video"
LIBRARY_NAME = "transformers"
TAGS = ("retnet", "text-to-video", "flashvideo")
LICENSE = "apache-2.0"
# The procedural Shapes set (DESIGN §6) has no Hub repo: `flashvideo.data.shapes_dataset` generates it from a seed.
SHAPES_DATASET = "flashvideo-shapes"
METRICS = ("accuracy", "psnr", "ssim")
EVAL_RESULTS_FILE = "eval_results.json"
DEFAULT_COMMIT_MESSAGE = "Upload FlashVideo checkpoint"

# (key in a mode of eval_results.json, metric type, readable name)
_MODE_METRICS = (
    ("all_attributes_accuracy", "accuracy", "all-attributes accuracy"),
    ("color_accuracy", "accuracy", "color accuracy"),
    ("shape_accuracy", "accuracy", "shape accuracy"),
    ("direction_accuracy", "accuracy", "direction accuracy"),
    ("conditioned_psnr", "psnr", "PSNR, conditioned on the first frame"),
    ("conditioned_ssim", "ssim", "SSIM, conditioned on the first frame"),
    ("tokens_per_second", "tokens_per_second", "image tokens per second"),
    ("frames_per_second", "frames_per_second", "frames per second"),
)


def _flashvideo_version() -> str:
    try:
        return metadata.version("flashvideo")
    except metadata.PackageNotFoundError:
        return "unknown"


def _new_api(token: str | bool | None = None) -> HfApi:
    return HfApi(token=token, library_name="flashvideo", library_version=_flashvideo_version())


# ---------------------------------------------------------------------------------------------- eval results


def load_eval_results(path: str | Path) -> dict[str, Any]:
    """Read and check the JSON that `flashvideo eval` writes (`eval_results.json`)."""
    path = Path(path)
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"No evaluation results at {path}; write them with `flashvideo eval`.") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from None
    if not isinstance(results, dict) or not isinstance(results.get("modes"), dict) or not results["modes"]:
        raise ValueError(f"{path} is not `flashvideo eval` output: it needs a non-empty 'modes' object.")
    for name, row in results["modes"].items():
        if not isinstance(row, dict):
            raise ValueError(f"{path}: mode {name!r} must map metric names to numbers.")
    return results


def eval_results_entries(results: dict[str, Any]) -> list[EvalResult]:
    """One `EvalResult` per (inference mode, metric) of `flashvideo eval`'s results, plus the VQ reconstruction PSNR.

    `flashvideo eval` always measures on the procedural Shapes set, whatever the model was trained on. All entries
    share one task and data set (so the Hub groups them in one table); the mode is in the metric name and in
    `metric_args`.
    """
    num_samples, seed = results.get("num_samples"), results.get("seed")
    common = dict(
        task_type=PIPELINE_TAG,
        task_name="Text-to-video",
        dataset_type=SHAPES_DATASET,
        dataset_name=f"Shapes (procedural; {num_samples} clips, seed {seed})",
        dataset_split="test",
        dataset_args={"num_samples": num_samples, "seed": seed},
    )
    entries = []
    if isinstance(results.get("vq_reconstruction_psnr"), (int, float)):
        entries.append(
            EvalResult(
                metric_type="psnr",
                metric_name="image tokenizer reconstruction PSNR",
                metric_value=round(float(results["vq_reconstruction_psnr"]), 4),
                **common,
            )
        )
    for mode, row in results["modes"].items():
        for key, metric_type, readable in _MODE_METRICS:
            value = row.get(key)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            entries.append(
                EvalResult(
                    metric_type=metric_type,
                    metric_name=f"{mode}: {readable}",
                    metric_value=round(float(value), 4),
                    metric_args={"mode": mode},
                    **common,
                )
            )
    return entries


def _results_table(results: dict[str, Any]) -> str:
    lines = [
        "| mode | color | shape | direction | all | PSNR (cond.) | SSIM (cond.) | tokens/s | frames/s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def cell(row: dict, key: str, spec: str) -> str:
        value = row.get(key)
        return format(value, spec) if isinstance(value, (int, float)) and not isinstance(value, bool) else "–"

    for mode, row in results["modes"].items():
        lines.append(
            f"| {mode} | {cell(row, 'color_accuracy', '.1%')} | {cell(row, 'shape_accuracy', '.1%')} | "
            f"{cell(row, 'direction_accuracy', '.1%')} | {cell(row, 'all_attributes_accuracy', '.1%')} | "
            f"{cell(row, 'conditioned_psnr', '.2f')} | {cell(row, 'conditioned_ssim', '.3f')} | "
            f"{cell(row, 'tokens_per_second', '.0f')} | {cell(row, 'frames_per_second', '.2f')} |"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- model card


def _positions_text(config: Any) -> str:
    """How the model tells positions apart: its retention decays, and code position embeddings if it has them."""
    exponents = config.decay_exponents or retnet_decay_exponents(config.num_attention_heads)
    text = "decay γ_h = 1 − 2^(−e_h), e_h = " + ", ".join(f"{exponent:g}" for exponent in exponents)
    if getattr(config, "code_position_embeddings", False):
        text += "; learned code position embeddings"
    return text


def _interpolation_text(config: Any | None) -> str:
    if config is None:
        return "- a separate interpolation model under `interpolation/`"
    return (
        f"- a separate interpolation model under `interpolation/`: {config.num_hidden_layers} layers, hidden size "
        f"{config.hidden_size}, {config.num_attention_heads} retention heads ({_positions_text(config)})"
    )


def build_model_card(
    repo_id: str,
    config: Any,
    eval_results: dict[str, Any] | None = None,
    datasets: list[str] | tuple[str, ...] = (SHAPES_DATASET,),
    tags: list[str] | tuple[str, ...] = (),
    has_interpolation_model: bool = True,
    interpolation_config: Any | None = None,
) -> ModelCard:
    """The README.md of a FlashVideo Hub repo: metadata (pipeline tag, library, tags, data sets, metrics,
    `eval_results`) and a body with usage, layout, model details and the evaluation table. `config` is the
    key-frame model's; `interpolation_config`, when given, the interpolation model's."""
    model_name = repo_id.split("/")[-1]
    all_tags = list(dict.fromkeys([*TAGS, *tags]))
    card_data = ModelCardData(
        model_name=model_name,
        pipeline_tag=PIPELINE_TAG,
        library_name=LIBRARY_NAME,
        license=LICENSE,
        tags=all_tags,
        datasets=list(datasets) or None,
        metrics=list(METRICS),
        eval_results=eval_results_entries(eval_results) if eval_results else None,
    )
    geometry = (
        f"{config.image_size}×{config.image_size} RGB frames, {config.code_grid_size}×{config.code_grid_size} "
        f"image codes per frame ({config.image_vocab_size} codes)"
    )
    details = [
        (
            f"- RetNet decoder: {config.num_hidden_layers} layers, hidden size {config.hidden_size}, "
            f"{config.num_attention_heads} retention heads ({_positions_text(config)}), "
            f"vocabulary {config.vocab_size} tokens"
        ),
        f"- {geometry}; serial numbers `<SN_1>` … `<SN_{config.max_frames}>`",
        _interpolation_text(interpolation_config)
        if has_interpolation_model
        else "- the key-frame model also interpolates (no `interpolation/` folder)",
        f"- written by flashvideo {_flashvideo_version()}",
    ]
    if eval_results:
        evaluation = (
            f"`flashvideo eval` on {eval_results.get('num_samples')} Shapes clips (seed {eval_results.get('seed')}), "
            "one row per inference mode: color, shape and direction accuracy judged by the Shapes analyzer; PSNR and "
            "SSIM of frames 2… against the true continuation when conditioned on the true first frame; speed on the "
            "machine that ran the evaluation."
        )
        if isinstance(eval_results.get("vq_reconstruction_psnr"), (int, float)):
            evaluation += f" Image tokenizer reconstruction PSNR: {eval_results['vq_reconstruction_psnr']:.2f} dB."
        evaluation += "\n\n" + _results_table(eval_results) + f"\n\nThe raw numbers are in `{EVAL_RESULTS_FILE}`."
    else:
        evaluation = "No evaluation results were uploaded with this checkpoint; run `flashvideo eval --model REPO`."
    body = f"""
# {model_name}

A [FlashVideo](https://arxiv.org/abs/2401.00869) text-to-video model: a RetNet decoder over text, serial-number and
image-code tokens. Key frames are generated recurrently — constant time and memory per token however long the video
already is — and the gaps are filled by (redundant-free) frame interpolation.

## Usage

With the `flashvideo` package (its own code, no `trust_remote_code` needed):

```bash
# from a checkout of the FlashVideo repository (the PyPI name `flashvideo` belongs to an unrelated project)
pip install torch==2.13.0 && pip install .
```

```python
import torch
import flashvideo

pipe = flashvideo.FlashVideoPipeline.from_pretrained("{repo_id}")
out = pipe("a red circle moving right", num_frames=16, key_frame_spacing=5, redundant_free=True,
           inherit_ratio=0.2, generator=torch.Generator().manual_seed(0))
out.frames.shape                 # (1, 16, H, W, 3) uint8
out.stats                        # tokens sampled vs inherited, seconds per stage, frames per second
flashvideo.export_to_video(out.frames[0], "clip.mp4")
```

```bash
flashvideo generate "a red circle moving right" --checkpoint {repo_id} -o clip.mp4 --redundant-free
```

Without it, with the code stored in this repo (`trust_remote_code=True`; needs `torch`, `transformers`, `diffusers`).
This is also what `pipeline()` runs whenever it loads this repo, since `config.json` declares the pipeline under
`custom_pipelines`:

```python
from transformers import AutoModelForCausalLM, pipeline

pipe = pipeline("text-to-video", model="{repo_id}", trust_remote_code=True)
frames = pipe("a red circle moving right", num_frames=16, output_type="pil").frames[0]
frames[0].save("clip.gif", save_all=True, append_images=frames[1:], duration=125, loop=0)

model = AutoModelForCausalLM.from_pretrained("{repo_id}", trust_remote_code=True)  # the key-frame model alone
```

## Files

- `config.json`, `model.safetensors`: the key-frame model (`FlashVideoForCausalLM`), with `auto_map` and
  `custom_pipelines` pointing at the code in this repo;
- `interpolation/`: the interpolation model (same architecture, its own weights);
- `image_tokenizer/` (a `diffusers.VQModel`): the image tokenizer, frames to codes and back;
- `processor_config.json`, `text_tokenizer/`: the processor (caption tokenizer and sequence layout);
- `*.py`: the modelling and pipeline code used by `trust_remote_code=True`.

## Model details

{chr(10).join(details)}

## Evaluation

{evaluation}

## Limitations

Trained on small data (by default the procedural Shapes set: one colored shape moving on a black background); it
does not generate open-domain video.

## Citation

```bibtex
@article{{lei2023flashvideo,
  title   = {{FlashVideo: A Framework for Swift Inference in Text-to-Video Generation}},
  author  = {{Lei, Bin and Chen, Le and Ding, Caiwen}},
  journal = {{arXiv preprint arXiv:2401.00869}},
  year    = {{2023}}
}}
```
"""
    return ModelCard(f"---\n{card_data.to_yaml()}\n---\n{body}")


# ---------------------------------------------------------------------------------------------- pushing


def write_hub_folder(
    pipe,
    folder: str | Path,
    repo_id: str,
    eval_results_path: str | Path | None = None,
    datasets: list[str] | tuple[str, ...] = (SHAPES_DATASET,),
    tags: list[str] | tuple[str, ...] = (),
) -> Path:
    """Write everything the Hub repo holds into `folder`: the Hub-ready pipeline, the model card, the eval JSON."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    eval_results = load_eval_results(eval_results_path) if eval_results_path is not None else None
    config = pipe.model.config
    pipe.save_pretrained(folder, hub_ready=True)  # leaves the live pipeline as it was
    card = build_model_card(
        repo_id, config, eval_results, datasets=datasets, tags=tags,
        has_interpolation_model=pipe.interpolation_model is not pipe.model,
        interpolation_config=pipe.interpolation_model.config,
    )  # fmt: skip
    card.save(folder / "README.md")
    if eval_results_path is not None:
        shutil.copyfile(eval_results_path, folder / EVAL_RESULTS_FILE)
    return folder


def push_pipeline(
    pipe,
    repo_id: str,
    *,
    private: bool | None = False,
    eval_results_path: str | Path | None = None,
    commit_message: str | None = None,
    commit_description: str | None = None,
    token: str | bool | None = None,
    revision: str | None = None,
    create_pr: bool = False,
    datasets: list[str] | tuple[str, ...] = (SHAPES_DATASET,),
    tags: list[str] | tuple[str, ...] | None = None,
    api: HfApi | None = None,
):
    """Upload a loaded `FlashVideoPipeline` as a Hub-ready repo; returns the `CommitInfo` (a `str`: the commit URL)."""
    api = api if api is not None else _new_api(token)
    repo_id = api.create_repo(repo_id, private=private, token=token, exist_ok=True).repo_id
    with tempfile.TemporaryDirectory(prefix="flashvideo-push-") as tmp:
        folder = write_hub_folder(pipe, tmp, repo_id, eval_results_path, datasets=datasets, tags=tags or ())
        return api.upload_folder(
            repo_id=repo_id, folder_path=folder, commit_message=commit_message or DEFAULT_COMMIT_MESSAGE,
            commit_description=commit_description, token=token, revision=revision, create_pr=create_pr,
        )  # fmt: skip


def push_checkpoint(
    checkpoint_dir: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    eval_results_path: str | Path | None = None,
    commit_message: str = DEFAULT_COMMIT_MESSAGE,
    token: str | bool | None = None,
    datasets: list[str] | tuple[str, ...] = (SHAPES_DATASET,),
    tags: list[str] | tuple[str, ...] | None = None,
    api: HfApi | None = None,
) -> str:
    """Publish a checkpoint directory (as written by training or `FlashVideoPipeline.save_pretrained`) to `repo_id`.

    The checkpoint is loaded and saved again, Hub-ready, into a temporary folder with its model card, so only what a
    Hub user needs is uploaded (not optimizer states, logs, …). Returns the `CommitInfo` of the upload: a `str`, the
    commit URL, with `.oid` and `.repo_url`.
    """
    checkpoint_dir = Path(checkpoint_dir)
    if not (checkpoint_dir / "config.json").is_file():
        raise FileNotFoundError(
            f"{checkpoint_dir} is not a FlashVideo checkpoint directory (no config.json); write one with training or "
            "FlashVideoPipeline.save_pretrained."
        )
    if eval_results_path is not None:
        load_eval_results(eval_results_path)  # fail before anything is created on the Hub
    # The pipeline registered for the task (FlashVideoPipeline once flashvideo is imported), looked up rather than
    # imported: the pipeline module imports this one to push itself.
    pipeline_class = PIPELINE_REGISTRY.check_task(PIPELINE_TAG)[1]["impl"]
    pipe = pipeline_class.from_pretrained(checkpoint_dir, device="cpu")
    return push_pipeline(
        pipe, repo_id, private=private, eval_results_path=eval_results_path, commit_message=commit_message,
        token=token, datasets=datasets, tags=tags, api=api,
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------- command line


def add_push_parser(subparsers) -> argparse.ArgumentParser:
    """Add `flashvideo push CHECKPOINT --repo-id ORG/NAME [--private] [--eval-results JSON]`."""
    push = subparsers.add_parser(
        "push",
        help="publish a checkpoint on the Hugging Face Hub (weights, code, processor, model card)",
        description="Upload a checkpoint directory to a Hub model repo, ready for `pipeline(model=REPO)` with "
        "flashvideo installed and for `trust_remote_code=True` without it, with a model card (and the evaluation "
        "results of `flashvideo eval`, when given). Log in first with `hf auth login` or set HF_TOKEN.",
    )
    push.add_argument("checkpoint", type=Path, help="checkpoint directory")
    push.add_argument("--repo-id", required=True, help="Hub repo to create or update, e.g. ORG/NAME")
    push.add_argument("--private", action="store_true", help="create the repo as private (if it does not exist)")
    push.add_argument(
        "--eval-results", type=Path, default=None, help="eval_results.json from `flashvideo eval`, for the model card"
    )
    push.add_argument(
        "--commit-message", default=DEFAULT_COMMIT_MESSAGE,
        help=f'the Hub commit message (default "{DEFAULT_COMMIT_MESSAGE}")',
    )  # fmt: skip
    push.add_argument(
        "--dataset", action="append", default=None, dest="datasets",
        help=f"training data set id for the model card (repeatable; default {SHAPES_DATASET})",
    )  # fmt: skip
    push.add_argument("--token", default=None, help="Hub token (default: the stored login or HF_TOKEN)")
    return push


def run_push(args: argparse.Namespace) -> str:
    commit = push_checkpoint(
        args.checkpoint, args.repo_id, private=args.private, eval_results_path=args.eval_results,
        commit_message=args.commit_message, token=args.token, datasets=args.datasets or (SHAPES_DATASET,),
    )  # fmt: skip
    sys.stdout.write(f"pushed {args.checkpoint} to {args.repo_id}: {commit}\n")
    return commit


__all__ = [
    "add_push_parser",
    "build_model_card",
    "eval_results_entries",
    "load_eval_results",
    "push_checkpoint",
    "push_pipeline",
    "run_push",
    "write_hub_folder",
]
