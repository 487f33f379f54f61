"""Publishing to the Hub (`flashvideo push`, `FlashVideoPipeline.push_to_hub`) and loading back what was pushed.

Only the Hub's network boundary is replaced: `FakeHfApi` answers `create_repo` / `upload_folder` / `create_commit`
by writing the committed files into a local Hub cache, laid out as a download would have left it
(`models--ORG--NAME/{blobs,snapshots/<commit>,refs/main}`, DESIGN §8). Everything after that is the real thing:
subprocesses with `HF_HUB_OFFLINE=1` and `HF_HUB_CACHE` on that cache load "ORG/NAME" with
`AutoModelForCausalLM`, `FlashVideoPipeline.from_pretrained` and `transformers.pipeline(...)`, one of them with
flashvideo made unimportable (the `trust_remote_code` path a Hub user without the package takes), and generate clips
identical to the original pipeline's.
"""

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from huggingface_hub import CommitInfo, CommitOperationAdd, CommitOperationDelete, ModelCard, RepoUrl
from huggingface_hub.utils import filter_repo_objects

import flashvideo.hub
from flashvideo import FlashVideoForCausalLM, FlashVideoPipeline
from flashvideo.hub import push_checkpoint
from remote_code_helpers import BLOCK_FLASHVIDEO_IMPORT


REPO_ID = "flashvideo-test/tiny-shapes"
PROMPT = "a red circle moving right"
CALL = dict(num_frames=6, key_frame_spacing=5, redundant_free=True, inherit_ratio=0.5)
EVAL_RESULTS = {
    "num_samples": 4,
    "seed": 0,
    "vq_reconstruction_psnr": 21.25,
    "modes": {
        "full autoregressive": {
            "color_accuracy": 0.5, "shape_accuracy": 0.25, "direction_accuracy": 0.75,
            "all_attributes_accuracy": 0.25, "conditioned_psnr": 18.5, "conditioned_ssim": 0.625,
            "tokens_per_second": 1500.0, "frames_per_second": 9.5,
        },
        "redundant-free, inherit 0.2": {
            "color_accuracy": 0.75, "shape_accuracy": 0.5, "direction_accuracy": 1.0,
            "all_attributes_accuracy": 0.5, "conditioned_psnr": 19.0, "conditioned_ssim": 0.7,
            "tokens_per_second": 2500.0, "frames_per_second": 20.0,
        },
    },
}  # fmt: skip
# What `upload_folder` never uploads (huggingface_hub's DEFAULT_IGNORE_PATTERNS, in short).
UPLOAD_IGNORED = [".git", ".git/*", "*/.git", "*/.git/*", ".cache/huggingface", ".cache/huggingface/*"]


# ---------------------------------------------------------------------------------------------- the fake Hub


class FakeHub:
    """The server side: repos and commits, kept as a Hub cache under `cache` (what `HF_HUB_CACHE` points at)."""

    def __init__(self, cache: Path):
        self.cache = Path(cache)
        self.repos: dict[str, dict] = {}  # repo_id → {"private": bool, "commits": [CommitInfo]}

    def repo_folder(self, repo_id: str) -> Path:
        return self.cache / ("models--" + repo_id.replace("/", "--"))

    def files(self, repo_id: str, revision: str = "main") -> dict[str, Path]:
        """path in repo → file in the snapshot of `revision` (empty before the first commit)."""
        folder = self.repo_folder(repo_id)
        ref = folder / "refs" / revision
        if not ref.is_file():
            return {}
        snapshot = folder / "snapshots" / ref.read_text()
        return {path.relative_to(snapshot).as_posix(): path for path in snapshot.rglob("*") if path.is_file()}


class FakeHfApi:
    """`huggingface_hub.HfApi`'s upload methods, answered by a `FakeHub` instead of huggingface.co."""

    hub: FakeHub  # set on a subclass per test (see `bind`)

    def __init__(self, *args, **kwargs):
        self.init_kwargs = kwargs

    @classmethod
    def bind(cls, hub: FakeHub) -> type["FakeHfApi"]:
        return type("BoundFakeHfApi", (cls,), {"hub": hub})

    def create_repo(self, repo_id: str, *, token=None, private=None, repo_type=None, exist_ok=False, **kwargs):
        if repo_type not in (None, "model"):
            raise NotImplementedError(f"the fake Hub only holds model repos, not {repo_type!r}")
        if repo_id.count("/") != 1 or not all(repo_id.split("/")):
            raise ValueError(f"repo_id must be 'namespace/name' here (no whoami offline), got {repo_id!r}")
        if repo_id in self.hub.repos and not exist_ok:
            raise FileExistsError(f"409: {repo_id} already exists")
        self.hub.repos.setdefault(repo_id, {"private": bool(private), "commits": []})
        return RepoUrl(f"https://huggingface.co/{repo_id}")

    def upload_folder(
        self, *, repo_id: str, folder_path, path_in_repo=None, commit_message=None, commit_description=None,
        token=None, repo_type=None, revision=None, create_pr=None, allow_patterns=None, ignore_patterns=None,
        delete_patterns=None, **kwargs,
    ):  # fmt: skip
        folder = Path(folder_path)
        ignore = [ignore_patterns] if isinstance(ignore_patterns, str) else list(ignore_patterns or [])
        ignore += UPLOAD_IGNORED
        relative = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
        prefix = f"{path_in_repo.strip('/')}/" if path_in_repo else ""
        operations = [
            CommitOperationAdd(path_in_repo=prefix + name, path_or_fileobj=str(folder / name))
            for name in filter_repo_objects(relative, allow_patterns=allow_patterns, ignore_patterns=ignore)
        ]
        if delete_patterns:
            existing = [p for p in self.hub.files(repo_id, revision or "main") if p.startswith(prefix)]
            added = {op.path_in_repo for op in operations}
            doomed = filter_repo_objects([p[len(prefix):] for p in existing], allow_patterns=delete_patterns)
            operations += [CommitOperationDelete(path_in_repo=prefix + p) for p in doomed if prefix + p not in added]
        return self.create_commit(
            repo_id, operations, commit_message=commit_message or "Upload folder using huggingface_hub",
            commit_description=commit_description, revision=revision, create_pr=create_pr,
        )  # fmt: skip

    def create_commit(
        self, repo_id: str, operations, *, commit_message: str, commit_description=None, token=None, repo_type=None,
        revision=None, create_pr=None, parent_commit=None, **kwargs,
    ):  # fmt: skip
        if repo_id not in self.hub.repos:
            raise LookupError(f"404: repository {repo_id} not found (create_repo first)")
        if create_pr:
            raise NotImplementedError("the fake Hub does not open pull requests")
        revision = revision or "main"
        folder = self.hub.repo_folder(repo_id)
        contents = {path: file.read_bytes() for path, file in self.hub.files(repo_id, revision).items()}
        for operation in operations:
            if isinstance(operation, CommitOperationAdd):
                source = operation.path_or_fileobj
                if isinstance(source, (str, Path)):
                    data = Path(source).read_bytes()
                elif isinstance(source, bytes):
                    data = source
                else:
                    data = source.read()
                contents[operation.path_in_repo] = data
            elif isinstance(operation, CommitOperationDelete):
                path = operation.path_in_repo
                for name in [n for n in contents if n == path or n.startswith(path.rstrip("/") + "/")]:
                    del contents[name]
            else:
                raise NotImplementedError(f"unsupported commit operation {operation!r}")
        parent = (folder / "refs" / revision).read_text() if (folder / "refs" / revision).is_file() else ""
        digests = {path: hashlib.sha256(data).hexdigest() for path, data in contents.items()}
        oid = hashlib.sha1(json.dumps([parent, sorted(digests.items()), commit_message]).encode()).hexdigest()
        snapshot = folder / "snapshots" / oid
        for path, data in contents.items():
            blob = folder / "blobs" / digests[path]
            blob.parent.mkdir(parents=True, exist_ok=True)
            if not blob.exists():
                blob.write_bytes(data)
            link = snapshot / path
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(os.path.relpath(blob, link.parent))  # as huggingface_hub's own downloads do
        (folder / "refs").mkdir(parents=True, exist_ok=True)
        (folder / "refs" / revision).write_text(oid)
        info = CommitInfo(
            commit_url=f"https://huggingface.co/{repo_id}/commit/{oid}", commit_message=commit_message,
            commit_description=commit_description or "", oid=oid,
        )  # fmt: skip
        self.hub.repos[repo_id]["commits"].append(info)
        return info


# ---------------------------------------------------------------------------------------------- fixtures


def _tiny_pipeline() -> FlashVideoPipeline:
    """The conftest's tiny pipeline, with an interpolation model of its own (so that `interpolation/` is pushed)."""
    from conftest import PROMPTS

    from flashvideo import FlashVideoConfig
    from flashvideo.image_tokenizer import build_vq_model
    from flashvideo.processing_flashvideo import FlashVideoProcessor
    from flashvideo.text_tokenizer import build_text_tokenizer

    sizes = dict(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, chunk_size=8,
        text_vocab_size=40, image_vocab_size=60, max_frames=6, image_size=16, code_grid_size=4,
    )  # fmt: skip
    config = FlashVideoConfig(**sizes)
    torch.manual_seed(0)
    model = FlashVideoForCausalLM(config).eval()
    interpolation_model = FlashVideoForCausalLM(
        FlashVideoConfig(**sizes, decay_exponents=[5, 6, 8, 10], code_position_embeddings=True)
    ).eval()
    vq = build_vq_model(16, 4, 60, block_out_channels=(8, 16, 16), norm_num_groups=8, vq_embed_dim=8)
    processor = FlashVideoProcessor(build_text_tokenizer(PROMPTS, vocab_size=40), config)
    return FlashVideoPipeline(
        model=model, processor=processor, vqvae=vq, interpolation_model=interpolation_model, device="cpu",
        show_progress=False,
    )  # fmt: skip


def _write_eval_results(folder: Path) -> Path:
    path = folder / "eval_results.json"
    path.write_text(json.dumps(EVAL_RESULTS, indent=2))
    return path


@pytest.fixture(scope="module")
def pushed(tmp_path_factory):
    """A checkpoint pushed with `push_checkpoint` to a fake Hub, and what the original pipeline generates."""
    root = tmp_path_factory.mktemp("hub")
    pipe = _tiny_pipeline()
    checkpoint = root / "checkpoint"
    pipe.save_pretrained(checkpoint)
    eval_path = _write_eval_results(root)
    hub = FakeHub(root / "hub_cache")
    commit = push_checkpoint(checkpoint, REPO_ID, private=True, eval_results_path=eval_path, api=FakeHfApi.bind(hub)())

    out = pipe(PROMPT, generator=torch.Generator().manual_seed(0), **CALL)
    np.save(root / "frames.npy", out.frames)
    ids = torch.randint(3, 100, (1, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.save({"ids": ids, "logits": pipe.model(ids).logits}, root / "logits.pt")
    return {"root": root, "hub": hub, "commit": commit, "pipe": pipe, "out": out}


def _run_offline(script: str, root: Path, name: str, block_flashvideo: bool = False) -> subprocess.CompletedProcess:
    """Run `script` in a fresh interpreter whose Hub is `root/hub_cache`, offline (constants are read at import).

    With `block_flashvideo`, the package cannot be imported there, as for a Hub user who never installed it.
    """
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_HUB_CACHE": str(root / "hub_cache"),
        "HF_HOME": str(root / f"hf_home_{name}"),
        "HF_MODULES_CACHE": str(root / f"modules_{name}"),
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "OMP_NUM_THREADS": "1",
    }
    env.pop("HF_HUB_ENABLE_HF_TRANSFER", None)
    prelude = textwrap.dedent(
        f"""
        import numpy as np, torch
        torch.set_num_threads(1)
        ROOT, REPO_ID, PROMPT, CALL = {str(root)!r}, {REPO_ID!r}, {PROMPT!r}, {CALL!r}
        EXPECTED = np.load(ROOT + "/frames.npy")
        LOGITS = torch.load(ROOT + "/logits.pt", weights_only=True)

        def check_clip(pipe, label):
            out = pipe(PROMPT, generator=torch.Generator().manual_seed(0), **CALL)
            assert out.frames.shape == EXPECTED.shape, (label, out.frames.shape)
            assert np.array_equal(out.frames, EXPECTED), label + ": not the original pipeline's clip"
            assert out.stats.interpolation.frames == 4, out.stats
            print(label, "OK")
        """
    )
    return subprocess.run(
        [sys.executable, "-c", (BLOCK_FLASHVIDEO_IMPORT if block_flashvideo else "") + prelude + textwrap.dedent(script)],
        cwd=root, env=env, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------- tests


def test_push_uploads_a_hub_ready_repo(pushed):
    hub, commit = pushed["hub"], pushed["commit"]
    assert hub.repos[REPO_ID]["private"] is True
    assert [c.oid for c in hub.repos[REPO_ID]["commits"]] == [commit.oid]
    assert isinstance(commit, str) and commit.startswith(f"https://huggingface.co/{REPO_ID}/commit/")
    assert commit.commit_message == "Upload FlashVideo checkpoint"
    files = hub.files(REPO_ID)
    for name in (
        "README.md", "config.json", "model.safetensors", "generation_config.json", "processor_config.json",
        "eval_results.json", "interpolation/config.json", "interpolation/model.safetensors",
        "text_tokenizer/tokenizer.json", "image_tokenizer/config.json",
        "configuration_flashvideo.py", "modeling_flashvideo.py", "retention.py", "pipeline_flashvideo.py",
        "processing_flashvideo.py", "frame_sampler.py", "redundant_free.py", "image_tokenizer.py",
    ):  # fmt: skip
        assert name in files, name
    assert not [name for name in files if name.endswith((".bin", ".pt", ".pth"))]
    config = json.loads(files["config.json"].read_text())
    assert config["auto_map"]["AutoModelForCausalLM"] == "modeling_flashvideo.FlashVideoForCausalLM"
    assert config["custom_pipelines"]["text-to-video"]["impl"] == "pipeline_flashvideo.FlashVideoPipeline"
    assert config["custom_pipelines"]["text-to-video"]["pt"] == ["AutoModelForCausalLM"]
    # the cache layout of a real download: refs/main → snapshots/<commit>/… → ../../blobs/<hash>
    folder = hub.repo_folder(REPO_ID)
    assert (folder / "refs" / "main").read_text() == commit.oid
    weights = folder / "snapshots" / commit.oid / "model.safetensors"
    assert weights.is_symlink() and weights.resolve().parent == (folder / "blobs").resolve()


def test_model_card_metadata_and_body(pushed):
    card = ModelCard.load(pushed["hub"].files(REPO_ID)["README.md"])
    data = card.data
    assert data.pipeline_tag == "text-to-video"
    assert data.library_name == "transformers"
    assert {"retnet", "text-to-video", "flashvideo"} <= set(data.tags)
    assert data.datasets == ["flashvideo-shapes"]
    assert set(data.metrics) == {"accuracy", "psnr", "ssim"}
    assert data.model_name == "tiny-shapes"
    results = {r.metric_name: r for r in data.eval_results}
    modes, metrics_per_mode = EVAL_RESULTS["modes"], 8
    assert len(results) == 1 + len(modes) * metrics_per_mode
    color = results["full autoregressive: color accuracy"]
    assert (color.metric_type, color.metric_value, color.task_type) == ("accuracy", 0.5, "text-to-video")
    assert color.dataset_type == "flashvideo-shapes" and color.dataset_args == {"num_samples": 4, "seed": 0}
    assert results["redundant-free, inherit 0.2: frames per second"].metric_value == 20.0
    assert results["redundant-free, inherit 0.2: SSIM, conditioned on the first frame"].metric_type == "ssim"
    assert results["image tokenizer reconstruction PSNR"].metric_value == 21.25
    # the body: both ways of using the repo, and the evaluation table
    assert "pip install ." in card.text and "pip install flashvideo" not in card.text  # the PyPI name is taken
    assert f'FlashVideoPipeline.from_pretrained("{REPO_ID}")' in card.text
    assert f'pipeline("text-to-video", model="{REPO_ID}", trust_remote_code=True)' in card.text
    assert "4 retention heads (decay γ_h = 1 − 2^(−e_h), e_h = 5, 6, 7, 8)" in card.text  # RetNet's default
    assert "interpolation model under `interpolation/`: 2 layers, hidden size 32, 4 retention heads (decay" in card.text
    assert "e_h = 5, 6, 8, 10; learned code position embeddings)" in card.text
    row = "| redundant-free, inherit 0.2 | 75.0% | 50.0% | 100.0% | 50.0% | 19.00 | 0.700 | 2500 | 20.00 |"
    assert row in card.text
    assert json.loads(pushed["hub"].files(REPO_ID)["eval_results.json"].read_text()) == EVAL_RESULTS


def test_pushed_repo_loads_offline_with_flashvideo(pushed):
    """`AutoModelForCausalLM`, `FlashVideoPipeline.from_pretrained` and `pipeline()` load "ORG/NAME" from the cache."""
    result = _run_offline(
        """
        import flashvideo
        from flashvideo import FlashVideoForCausalLM, FlashVideoPipeline
        from transformers import AutoModelForCausalLM, pipeline

        model = AutoModelForCausalLM.from_pretrained(REPO_ID).eval()
        assert type(model) is FlashVideoForCausalLM, type(model)
        with torch.no_grad():
            assert torch.equal(model(LOGITS["ids"]).logits, LOGITS["logits"])
        print("AutoModelForCausalLM OK")

        pipe = FlashVideoPipeline.from_pretrained(REPO_ID)
        assert pipe.interpolation_model is not pipe.model
        check_clip(pipe, "FlashVideoPipeline.from_pretrained")

        pipe = pipeline("text-to-video", model=REPO_ID, trust_remote_code=True, device="cpu")
        pipe.show_progress = False
        assert type(pipe).__name__ == "FlashVideoPipeline"
        # the repo id (not a local folder) is the source here: interpolation/ must still be found on the "Hub"
        assert pipe.interpolation_model is not pipe.model
        check_clip(pipe, "transformers.pipeline")
        """,
        pushed["root"], "installed",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    for label in ("AutoModelForCausalLM", "FlashVideoPipeline.from_pretrained", "transformers.pipeline"):
        assert f"{label} OK" in result.stdout


def test_pushed_repo_runs_as_remote_code_without_flashvideo(pushed):
    """A Hub user without the package: `pipeline(model=..., trust_remote_code=True)` runs the repo's own code."""
    result = _run_offline(
        """
        from transformers import AutoModelForCausalLM, pipeline

        pipe = pipeline(model=REPO_ID, trust_remote_code=True, device="cpu")  # task from custom_pipelines
        pipe.show_progress = False
        assert type(pipe).__module__.startswith("transformers_modules"), type(pipe).__module__
        assert type(pipe.model).__module__.startswith("transformers_modules"), type(pipe.model).__module__
        assert pipe.interpolation_model is not pipe.model
        check_clip(pipe, "remote-code pipeline")

        model = AutoModelForCausalLM.from_pretrained(REPO_ID, trust_remote_code=True).eval()
        with torch.no_grad():
            assert torch.equal(model(LOGITS["ids"]).logits, LOGITS["logits"])
        assert not any(name == "flashvideo" or name.startswith("flashvideo.") for name in sys.modules)
        print("remote-code AutoModelForCausalLM OK")
        """,
        pushed["root"], "remote", block_flashvideo=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "remote-code pipeline OK" in result.stdout
    assert "remote-code AutoModelForCausalLM OK" in result.stdout


@pytest.fixture
def fake_hub(tmp_path, monkeypatch):
    """Every `HfApi` that flashvideo.hub creates talks to a `FakeHub` in `tmp_path`."""
    hub = FakeHub(tmp_path / "hub_cache")
    monkeypatch.setattr(flashvideo.hub, "HfApi", FakeHfApi.bind(hub))
    return hub


def test_pipeline_push_to_hub_writes_the_same_repo(fake_hub, pushed, tmp_path):
    pipe = pushed["pipe"]
    assert not hasattr(pipe.model.config, "custom_pipelines")
    commit = pipe.push_to_hub("flashvideo-test/from-method", eval_results_path=_write_eval_results(tmp_path))
    assert commit.oid == fake_hub.repos["flashvideo-test/from-method"]["commits"][-1].oid
    files = fake_hub.files("flashvideo-test/from-method")
    assert set(files) == set(pushed["hub"].files(REPO_ID))
    config = json.loads(files["config.json"].read_text())
    assert config["custom_pipelines"]["text-to-video"]["impl"] == "pipeline_flashvideo.FlashVideoPipeline"
    assert ModelCard.load(files["README.md"]).data.pipeline_tag == "text-to-video"
    # the same weights as `flashvideo push` uploaded, and the caller's pipeline is left as it was
    for name in ("model.safetensors", "interpolation/model.safetensors"):
        assert files[name].read_bytes() == pushed["hub"].files(REPO_ID)[name].read_bytes(), name
    assert not hasattr(pipe.model.config, "custom_pipelines")
    # a second push is a second commit on top of the first; the repo's privacy is not changed
    again = pipe.push_to_hub("flashvideo-test/from-method", commit_message="Again")
    assert [c.commit_message for c in fake_hub.repos["flashvideo-test/from-method"]["commits"]] == [
        "Upload FlashVideo checkpoint", "Again",
    ]  # fmt: skip
    assert again.oid != commit.oid and fake_hub.repos["flashvideo-test/from-method"]["private"] is False
    card = ModelCard.load(fake_hub.files("flashvideo-test/from-method")["README.md"])
    assert card.data.eval_results is None and "No evaluation results" in card.text


def test_push_command(fake_hub, pushed, tmp_path, capsys):
    from flashvideo.cli import main

    assert main(
        ["push", str(pushed["root"] / "checkpoint"), "--repo-id", "flashvideo-test/cli", "--private",
         "--eval-results", str(_write_eval_results(tmp_path))]
    ) == 0  # fmt: skip
    assert fake_hub.repos["flashvideo-test/cli"]["private"] is True
    assert "flashvideo-test/cli" in capsys.readouterr().out
    card = ModelCard.load(fake_hub.files("flashvideo-test/cli")["README.md"])
    assert len(card.data.eval_results) == 17


def test_push_refuses_bad_input_before_touching_the_hub(fake_hub, pushed, tmp_path):
    checkpoint = pushed["root"] / "checkpoint"
    with pytest.raises(FileNotFoundError, match="not a FlashVideo checkpoint"):
        push_checkpoint(tmp_path, "flashvideo-test/nothing")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"num_samples": 2}))
    with pytest.raises(ValueError, match="'modes'"):
        push_checkpoint(checkpoint, "flashvideo-test/bad", eval_results_path=bad)
    with pytest.raises(FileNotFoundError, match="flashvideo eval"):
        push_checkpoint(checkpoint, "flashvideo-test/bad", eval_results_path=tmp_path / "missing.json")
    assert fake_hub.repos == {}
