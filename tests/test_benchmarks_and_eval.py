"""The benchmark and evaluation commands run end to end and write their reports (no timing assertions)."""

import json

import pytest
import torch

from flashvideo import FlashVideoConfig
from flashvideo.evaluation.bench_decode import run_decode_benchmark, same_size_llama
from flashvideo.evaluation.bench_video import run_video_benchmark
from flashvideo.evaluation.evaluate import (
    INFERENCE_MODES, evaluate_pipeline, evaluation_set, results_markdown, select_modes,
)  # fmt: skip
from flashvideo.evaluation.shapes import analyze_clip


def test_same_size_llama_matches_the_sizes():
    config = FlashVideoConfig(hidden_size=64, num_hidden_layers=3, num_attention_heads=4, intermediate_size=96)
    llama = same_size_llama(config).config
    assert (llama.hidden_size, llama.num_hidden_layers, llama.num_attention_heads, llama.intermediate_size) == (
        64, 3, 4, 96,
    )  # fmt: skip
    assert llama.vocab_size == config.vocab_size


def test_decode_benchmark_writes_table_plot_and_json(tmp_path):
    config = FlashVideoConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    markdown = run_decode_benchmark([16, 64], tmp_path, steps=2, config=config)
    text = markdown.read_text()
    assert "| FlashVideo (RetNet, recurrent) |" in text and "| Llama (KV cache) |" in text
    rows = json.loads((tmp_path / "decode_latency.json").read_text())
    retnet = {r["position"]: r["cache_mib"] for r in rows if r["model"].startswith("FlashVideo")}
    llama = {r["position"]: r["cache_mib"] for r in rows if r["model"].startswith("Llama")}
    assert retnet[16] == retnet[64]  # the recurrent state does not grow
    assert llama[64] > 3 * llama[16]  # the KV cache grows with the position
    assert (tmp_path / "decode_latency.png").stat().st_size > 1000
    with pytest.raises(ValueError, match="positions"):
        run_decode_benchmark([], tmp_path)


def test_video_benchmark_counts_the_sequential_calls_of_each_method(tiny_benchmark_pipeline, tmp_path):
    pipe = tiny_benchmark_pipeline
    config = pipe.model.config
    report = run_video_benchmark(tmp_path, repeats=1, pipe=pipe).read_text()
    results = json.loads((tmp_path / "video_generation.json").read_text())
    rows = {row["method"].split()[0]: row for row in results["methods"]}
    tokens = 16 * config.tokens_per_frame
    assert rows["(b)"]["model_calls"] == 16 * (1 + config.tokens_per_frame)  # prefix, then one call per token
    assert rows["(c)"]["model_calls"] == tokens  # generate(): the prefix call samples the first token
    assert rows["(d)"]["model_calls"] == tokens and rows["(d)"]["estimated"]
    # Key frames 0, 5, 10, 15, then the three pairs' 4 inserted frames as one batch: far fewer calls than tokens.
    assert rows["(a0)"]["model_calls"] <= 4 * (1 + 16) + 1 + 4 * (1 + 16)
    # Speculation verifies drafts in the same calls: fewer of them, the same tokens sampled or inherited.
    assert rows["(a)"]["tokens_drafted"] > 0 and rows["(a)"]["model_calls"] < rows["(a0)"]["model_calls"]
    assert rows["(a)"]["stages"]["interpolation"]["model_calls"] > 0 and rows["(a0)"]["tokens_drafted"] == 0
    calls = {(row["inherit_ratio"], row["speculative"]): row for row in results["interpolation_calls"]}
    assert set(calls) == {(ratio, on) for ratio in (0.0, 0.2, 0.5, 1.0) for on in (False, True)}
    assert calls[(0.0, False)]["calls_per_inserted_frame"] == 1 + 16  # the prefix, then one call per code
    assert calls[(1.0, False)]["calls_per_inserted_frame"] <= calls[(0.0, False)]["calls_per_inserted_frame"]
    assert results["recursive"]["num_frames"] == 61 and results["recursive"]["frames_per_second"] > 0
    assert "fewer sequential calls × cheaper calls" in report and "(a) vs (c)" in report
    assert "calls per inserted frame" in report and "Recursive interpolation" in report
    # FlashVideo is timed on tokens, as the Llama is; the VQ decode is measured on its own.
    assert results["vq_decode_seconds"] > 0 and 'output_type="latent"' in report
    assert (tmp_path / "video_generation.png").stat().st_size > 1000


def test_evaluation_reports_every_mode(shapes_sized_pipeline, monkeypatch):
    pipe = shapes_sized_pipeline
    frames_asked, call = [], type(pipe).__call__

    def recording_call(self, *args, **kwargs):
        frames_asked.append(kwargs["num_frames"])
        return call(self, *args, **kwargs)

    monkeypatch.setattr(type(pipe), "__call__", recording_call)
    modes = select_modes(["keyframes", "interpolation", "rf1.0"])
    results = evaluate_pipeline(pipe, num_samples=2, batch_size=2, modes=modes, sampling={"top_k": 5})
    assert set(results["modes"]) == set(modes) and results["sampling"] == {"top_k": 5}
    # the key-frame-only mode asks for frames 0, 5, 10, 15 (generated and first-frame conditioned), the others 16
    assert frames_asked == [4, 4, 16, 16, 16, 16]
    assert "frame_stride" in INFERENCE_MODES["key frames only (every 5th frame)"]  # not consumed by the evaluation
    for row in results["modes"].values():
        for key in ("color_accuracy", "shape_accuracy", "direction_accuracy"):
            assert 0.0 <= row[key] <= 1.0
        assert row["conditioned_ssim"] <= 1.0 and row["tokens_per_second"] > 0
        assert 0.0 <= row["clean_clip_rate"] <= 1.0 and row["clean_clip_rate_stderr"] >= 0.0
        assert 0.0 <= row["one_object_rate"] <= 1.0 and set(row["failure_rates"]) >= {"objects", "jump", "speed"}
        # both clips are prompted "moving left" (the set cycles colors first), so left holds the whole mean
        assert row["direction_accuracy_by_prompt"] == {"left": row["direction_accuracy"]}
    assert 0 < results["vq_reconstruction_psnr"] < 100 and 0.0 <= results["vq_reconstruction_clean_rate"] <= 1.0
    assert results["clean_clip_criteria"]["max_jump"] == 5.0
    assert "| mode | clean | one object |" in results_markdown(results, "random")
    assert "| redundant-free, inherit 1.0 |" in results_markdown(results, "random")
    assert "| mode | left |" in results_markdown(results, "random")
    assert "Sampling: top_k=5." in results_markdown(results, "random")
    for row in results["modes"].values():  # results written before the per-direction breakdown still render
        del row["direction_accuracy_by_prompt"]
    assert "per prompted direction" not in results_markdown(results, "random")
    for row in results["modes"].values():  # and so do those written before the clean-clip rate
        del row["clean_clip_rate"]
    assert "Clean clips" not in results_markdown(results, "random")


def test_evaluation_set_covers_every_color_direction_pair_and_is_judged_correct():
    videos, prompts, labels = evaluation_set(24, seed=3)
    assert videos.shape == (24, 16, 64, 64, 3) and len(set(prompts)) >= 20
    assert len({(label["color"], label["direction"]) for label in labels}) == 24
    assert sorted(label["shape"] for label in labels).count("triangle") == 8
    assert all(analyze_clip(clip) | label == analyze_clip(clip) for clip, label in zip(videos, labels))
    again, _, _ = evaluation_set(24, seed=3)
    assert (again == videos).all()


def test_modes_are_chosen_by_short_names_in_table_order():
    assert select_modes(None) == INFERENCE_MODES
    chosen = select_modes(["rf0.5", "interpolation"])
    assert list(chosen) == ["key frames + interpolation", "redundant-free, inherit 0.5"]
    assert chosen["redundant-free, inherit 0.5"]["inherit_ratio"] == 0.5
    with pytest.raises(ValueError, match="modes must be among"):
        select_modes(["fast"])


def test_training_benchmark_measures_both_forms(tmp_path):
    from flashvideo.evaluation.bench_training import run_training_benchmark

    config = FlashVideoConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, chunk_size=16)
    markdown = run_training_benchmark(tmp_path, [48], steps=1, config=config).read_text()
    rows = json.loads((tmp_path / "training_throughput.json").read_text())
    assert {(r["forward_mode"], r["sequence_length"]) for r in rows} == {("parallel", 48), ("chunkwise", 48)}
    assert all(r["tokens_per_second"] > 0 and r["peak_memory_mib"] > 0 for r in rows)
    assert "| chunkwise | 48 |" in markdown
