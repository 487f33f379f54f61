"""Auto classes, safetensors round trip, and loading with trust_remote_code where flashvideo is not importable."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

import flashvideo
from flashvideo import FlashVideoConfig, FlashVideoForCausalLM, FlashVideoModel
from remote_code_helpers import BLOCK_FLASHVIDEO_IMPORT


def test_auto_classes_are_registered(tiny_config):
    assert isinstance(AutoConfig.for_model("flashvideo"), FlashVideoConfig)
    assert type(AutoModel.from_config(tiny_config)) is FlashVideoModel
    assert type(AutoModelForCausalLM.from_config(tiny_config)) is FlashVideoForCausalLM


def test_save_and_load_give_identical_logits_and_buffers(tiny_model, tmp_path):
    tiny_model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    assert not list(tmp_path.glob("*.bin"))
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert type(loaded) is FlashVideoForCausalLM
    ids = torch.randint(3, 90, (2, 20))
    with torch.no_grad():
        assert torch.equal(tiny_model(ids).logits, loaded(ids).logits)
    # the non-persistent buffers are recomputed, not left uninitialised
    for name in ("log_decay", "angles"):
        assert torch.equal(getattr(loaded.model.positions, name), getattr(tiny_model.model.positions, name))


def test_saved_directory_declares_remote_code(tiny_model, tmp_path):
    tiny_model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == "flashvideo"
    assert config["auto_map"]["AutoModelForCausalLM"] == "modeling_flashvideo.FlashVideoForCausalLM"
    for name in ("configuration_flashvideo.py", "modeling_flashvideo.py", "retention.py"):
        assert (tmp_path / name).exists(), name


@pytest.mark.parametrize("original_format", [False, True], ids=["fused", "pre-fusion layout"])
def test_loads_with_trust_remote_code_without_the_package(tiny_model, tmp_path, original_format):
    """Also a checkpoint in the layout from before the fused projections: the repo's own modelling file converts it."""
    checkpoint = tmp_path / "checkpoint"
    tiny_model.save_pretrained(checkpoint, save_original_format=original_format)
    weights = load_file(checkpoint / "model.safetensors")
    assert ("model.layers.0.retention.q_proj.weight" in weights) == original_format
    ids = torch.randint(3, 90, (1, 15))
    with torch.no_grad():
        expected = tiny_model(ids).logits
    torch.save({"ids": ids, "logits": expected}, tmp_path / "expected.pt")
    script = BLOCK_FLASHVIDEO_IMPORT + textwrap.dedent(
        f"""
        import torch
        from transformers import AutoModelForCausalLM
        model = AutoModelForCausalLM.from_pretrained({str(checkpoint)!r}, trust_remote_code=True).eval()
        assert not type(model).__module__.startswith("flashvideo"), type(model).__module__
        data = torch.load({str(tmp_path / "expected.pt")!r}, weights_only=True)
        with torch.no_grad():
            logits = model(data["ids"]).logits
        assert torch.equal(logits, data["logits"]), (logits - data["logits"]).abs().max()
        out = model.generate(data["ids"], max_new_tokens=5, do_sample=False)
        assert type(out) is torch.Tensor and out.shape == (1, 20)
        print("remote code OK", type(model).__module__)
        """
    )
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "remote code OK transformers_modules" in result.stdout
    assert flashvideo.__name__ == "flashvideo"
