"""The fused decode step: one q/k/v/g projection and one GLU input projection, checkpoints from before the fusion
(the shipped one included) loading unchanged, and no host sync per call on the decoding hot path."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

import flashvideo
from flashvideo import FlashVideoForCausalLM, RetNetCache
from flashvideo.retention import rotate_every_two, rotate_pairs, rotation_phasors


LEGACY_NAMES = tuple(f"retention.{p}_proj." for p in "qkvg") + ("ffn.fc1.", "ffn.gate.", "ffn.fc2.")


def fixed_sequence() -> torch.Tensor:
    """Two rows: 8 caption tokens, <SN_0>, 40 image codes, <SN_1>, 20 image codes (shipped vocabulary layout)."""
    generator = torch.Generator().manual_seed(20)
    text = torch.randint(35, 1059, (2, 8), generator=generator)
    first, second = (torch.randint(1059, 1571, (2, n), generator=generator) for n in (40, 20))
    return torch.cat([text, torch.full((2, 1), 3), first, torch.full((2, 1), 4), second], dim=1)


# Logits of the shipped models on `fixed_sequence()`, recorded with the code before the fused projections
# (commit 2df4b48): their sum and sum of magnitudes, the last position at every 300th token, and row 1, position
# 30 at every 97th image code.
SHIPPED_REFERENCE = {
    "": {
        "sum": -488301.9753938655,
        "abs": 740240.9222994801,
        "last": [
            [-4.411937713623047, -4.309755325317383, -4.4667277336120605, -4.486797332763672, -0.36213091015815735, -4.365262985229492],  # noqa: E501
            [-3.507812976837158, -3.879594564437866, -3.3732798099517822, -3.7469918727874756, -1.7014728784561157, -3.846047878265381],  # noqa: E501
        ],
        "mid": [1.4780575037002563, 3.8986101150512695, -1.0737743377685547, -5.485902309417725, 2.340054750442505, 6.42425537109375],  # noqa: E501
        "step_sum": -37410.47829405218,
    },
    "interpolation": {
        "sum": -396630.60006539564,
        "abs": 614308.0387255042,
        "last": [
            [-0.4172385036945343, -0.4007832705974579, -0.459373414516449, -0.5087186694145203, -0.39775049686431885, -0.5163137316703796],  # noqa: E501
            [-2.1120171546936035, -2.2723684310913086, -2.2142014503479004, -2.010777711868286, 7.964542388916016, -2.270035743713379],  # noqa: E501
        ],
        "mid": [0.10163035988807678, 2.4807729721069336, -7.730649948120117, 0.3182450830936432, 1.311835765838623, 4.439425945281982],  # noqa: E501
        "step_sum": -39443.99168074876,
    },
}


@pytest.mark.parametrize("subfolder", ["", "interpolation"])
def test_shipped_models_give_the_logits_recorded_before_the_fusion(subfolder):
    path = flashvideo.default_checkpoint() / subfolder if subfolder else flashvideo.default_checkpoint()
    model = FlashVideoForCausalLM.from_pretrained(path).eval()
    reference, ids = SHIPPED_REFERENCE[subfolder], fixed_sequence()
    with torch.no_grad():
        full = model(ids, forward_mode="parallel").logits
        cache = RetNetCache(model.config.num_hidden_layers)
        model(ids[:, :60], cache=cache, use_cache=True)  # prefill, then 10 recurrent steps
        steps = torch.cat([model(ids[:, 60 + i : 61 + i], cache=cache, use_cache=True).logits for i in range(10)], 1)
    assert full.double().sum().item() == pytest.approx(reference["sum"], rel=1e-6)
    assert full.double().abs().sum().item() == pytest.approx(reference["abs"], rel=1e-6)
    torch.testing.assert_close(full[:, -1, ::300], torch.tensor(reference["last"]), rtol=1e-5, atol=2e-5)
    torch.testing.assert_close(full[1, 30, 1059::97], torch.tensor(reference["mid"]), rtol=1e-5, atol=2e-5)
    assert steps.double().sum().item() == pytest.approx(reference["step_sum"], rel=1e-6)
    torch.testing.assert_close(steps, full[:, 60:], rtol=1e-4, atol=1e-4)


def legacy_state_dict(model: FlashVideoForCausalLM) -> dict[str, torch.Tensor]:
    """The model's weights named and split as before the fusion."""
    config, legacy = model.config, {}
    for name, tensor in model.state_dict().items():
        if name.endswith("retention.qkvg_proj.weight"):
            prefix = name.removesuffix("qkvg_proj.weight")
            sizes = [config.hidden_size, config.hidden_size, config.value_dim, config.value_dim]
            for part, value in zip(("q_proj", "k_proj", "v_proj", "g_proj"), tensor.split(sizes)):
                legacy[f"{prefix}{part}.weight"] = value.clone()
        elif name.endswith("ffn.gate_up_proj.weight"):
            activated, other = tensor.chunk(2)
            prefix = name.removesuffix("gate_up_proj.weight")
            legacy[f"{prefix}fc1.weight"], legacy[f"{prefix}gate.weight"] = activated.clone(), other.clone()
        elif name.endswith("ffn.down_proj.weight"):
            legacy[name.replace("down_proj", "fc2")] = tensor.clone()
        else:
            legacy[name] = tensor.clone()
    return legacy


def test_fused_layout_is_what_the_modules_hold(tiny_model):
    names = set(tiny_model.state_dict())
    assert "model.layers.0.retention.qkvg_proj.weight" in names
    assert {"model.layers.0.ffn.gate_up_proj.weight", "model.layers.0.ffn.down_proj.weight"} <= names
    assert not any(legacy in name for name in names for legacy in LEGACY_NAMES)


def test_checkpoints_from_before_the_fusion_load_unchanged(tiny_model, tmp_path):
    """A directory written by the code before the fusion (legacy names, separate matrices) loads with
    from_pretrained, with plain load_state_dict, and saves fused by default or in its old layout when asked."""
    ids = torch.randint(3, 90, (2, 12), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = tiny_model(ids).logits
    legacy = legacy_state_dict(tiny_model)
    old = tmp_path / "old"
    tiny_model.save_pretrained(old)
    save_file(legacy, old / "model.safetensors", metadata={"format": "pt"})  # as the code before the fusion wrote it
    assert any("q_proj" in name for name in load_file(old / "model.safetensors"))

    loaded, info = FlashVideoForCausalLM.from_pretrained(old, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    with torch.no_grad():
        assert torch.equal(loaded.eval()(ids).logits, expected)

    plain = FlashVideoForCausalLM(tiny_model.config).eval()
    plain.load_state_dict(legacy)  # strict: every legacy key is consumed, every fused one filled
    with torch.no_grad():
        assert torch.equal(plain(ids).logits, expected)

    fused, original = tmp_path / "fused", tmp_path / "original"
    loaded.save_pretrained(fused)
    assert load_file(fused / "model.safetensors").keys() == tiny_model.state_dict().keys()
    loaded.save_pretrained(original, save_original_format=True)
    written = load_file(original / "model.safetensors")
    assert written.keys() == legacy.keys()
    assert all(torch.equal(written[name], legacy[name]) for name in legacy)  # split back at the right rows
    for directory in (fused, original):
        with torch.no_grad():
            assert torch.equal(FlashVideoForCausalLM.from_pretrained(directory).eval()(ids).logits, expected)


def test_complex_rotation_is_the_designs_rotate_every_two():
    """x·cos(nθ) + rotate_every_two(x)·sin(nθ) (DESIGN.md §3), with the keys' d_k^−0.5 in the phasors' modulus."""
    generator = torch.Generator().manual_seed(4)
    x = torch.randn(3, 5, 2, 4, 8, dtype=torch.float64, generator=generator)  # [batch, length, q/k, heads, d_k]
    positions, theta = torch.arange(7, 12), torch.rand(4, dtype=torch.float64, generator=generator)
    scales = torch.tensor([1.0, 8**-0.5], dtype=torch.float64)[:, None, None]
    rotated = rotate_pairs(x, rotation_phasors(positions, theta, scales))
    phase = positions[:, None, None, None].double() * theta.repeat_interleave(2)
    expected = (x * phase.cos() + rotate_every_two(x) * phase.sin()) * scales
    torch.testing.assert_close(rotated, expected, rtol=1e-12, atol=1e-12)
    per_row = rotation_phasors(positions.expand(3, -1), theta, scales)  # [batch, length] positions
    torch.testing.assert_close(rotate_pairs(x, per_row), expected, rtol=1e-12, atol=1e-12)


def test_decode_step_does_not_read_tensors_on_the_host_with_check_inputs_false(tiny_model, monkeypatch):
    """The sampler validates ids once and then passes check_inputs=False: no .item()/.tolist()/bool(tensor) per
    call (each would wait for an accelerator), and the same logits as a checked call."""
    prompt = torch.randint(3, 90, (2, 6), generator=torch.Generator().manual_seed(5))
    token = torch.randint(3, 90, (2, 1), generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        checked_cache = RetNetCache(tiny_model.config.num_hidden_layers)
        tiny_model(prompt, cache=checked_cache, use_cache=True)
        expected = tiny_model(token, cache=checked_cache, use_cache=True).logits
        cache = RetNetCache(tiny_model.config.num_hidden_layers)
        tiny_model(prompt, cache=cache, use_cache=True, check_inputs=False)

        def host_read(*args, **kwargs):
            raise AssertionError("a tensor was read on the host during a decode step")

        for name in ("item", "tolist", "__bool__"):
            monkeypatch.setattr(torch.Tensor, name, host_read)
        step = tiny_model(token, cache=cache, use_cache=True, check_inputs=False).logits
        draft = tiny_model(torch.cat([token, token], 1), cache=cache, use_cache=True, check_inputs=False).logits
        monkeypatch.undo()
    assert torch.equal(step, expected) and draft.shape == (2, 2, tiny_model.config.vocab_size)
    with pytest.raises(ValueError, match="input_ids must be in"):
        tiny_model(torch.full((1, 1), tiny_model.config.vocab_size))  # checked by default


def test_retention_layer_returns_new_states_and_the_fed_keys_and_values(tiny_model):
    """What RetNetCache's rollback relies on: the past state is left as it was, and (k, v) are the rotated, scaled
    keys and values the state was built from (S = γ S_0 + kᵀv for one token)."""
    layer = tiny_model.model.layers[0].retention
    positions = tiny_model.model.positions(torch.tensor([9]), torch.float32)
    hidden = torch.randn(2, 1, tiny_model.config.hidden_size)
    past = torch.randn(2, layer.num_heads, layer.head_dim, layer.value_head_dim)
    kept = past.clone()
    with torch.no_grad():
        _, state, (k, v) = layer(hidden, positions, None, past, "recurrent")
    assert torch.equal(past, kept) and state is not past
    expected = positions.decay * past + k.transpose(-1, -2) @ v
    torch.testing.assert_close(state, expected)


def test_decode_benchmark_reports_calls_against_the_floor(tiny_model, tmp_path):
    from flashvideo.evaluation.bench_decode import run_decode_benchmark

    checkpoint = tmp_path / "checkpoint"
    tiny_model.save_pretrained(checkpoint)
    markdown = run_decode_benchmark(
        [8], tmp_path, steps=1, config=tiny_model.config, checkpoint=checkpoint, step_rounds=5
    )
    assert "### One call against the hardware floor" in markdown.read_text()
    report = json.loads((tmp_path / "decode_step.json").read_text())
    assert len(report["floors"]) == 2
    assert all(floor["copy_gb_per_s"] > 0 and floor["gemm_gflop_per_s"] > 0 for floor in report["floors"].values())
    calls = {(c["model"].split(",")[0], c["batch_size"], c["tokens_per_call"]): c for c in report["calls"]}
    names = ("random weights", "checkpoint (key frames)")
    assert set(calls) == {(name, batch, length) for name in names for batch in (1, 3) for length in (1, 16)}
    for call in calls.values():
        assert call["median_ms_per_call"] > 0 and call["aten_ops_per_call"] > call["top_level_aten_ops_per_call"] > 10
        assert call["floor_ms"] > 0
        assert call["ratio_to_floor"] == pytest.approx(call["median_cpu_ms_per_call"] / call["floor_ms"])
    with pytest.raises(ValueError, match="step_rounds"):
        run_decode_benchmark([8], tmp_path, config=tiny_model.config, step_rounds=3)


def test_bench_decode_command_passes_the_checkpoint(monkeypatch, tmp_path):
    from flashvideo import cli
    from flashvideo.evaluation import bench_decode

    seen = {}

    def fake_benchmark(positions, output_dir, steps, checkpoint, compile):
        seen.update(positions=positions, checkpoint=checkpoint, compile=compile)
        (output_dir / "decode_latency.md").write_text("# Decode latency vs position\n")
        return output_dir / "decode_latency.md"

    monkeypatch.setattr(bench_decode, "run_decode_benchmark", fake_benchmark)
    argv = ["bench", "decode", "--positions", "8", "--checkpoint", "default", "--output-dir", str(tmp_path)]
    assert cli.main(argv) in (0, None)
    assert seen == {"positions": [8], "checkpoint": str(flashvideo.default_checkpoint()), "compile": False}
    assert cli.main(argv + ["--compile"]) in (0, None)
    assert seen["compile"] is True
