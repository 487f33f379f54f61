"""
`flashvideo.training`: the three stages end to end into a pipeline checkpoint, 2-process data parallelism on
CPU (gloo) against a 1-process run, the documented `accelerate launch --multi_gpu` command, SIGKILL +
`--resume_from_checkpoint latest` against an uninterrupted run, data sources, and argument parsing.

Everything runs for real on tiny models: Shapes clips resized to 16 px, a 16 px → 4×4 VQ with 32 codes, a
2-layer RetNet of width 32.
"""

import importlib
import json
import logging
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from accelerate import PartialState, debug_launcher
from accelerate.state import AcceleratorState
from accelerate.utils import set_seed
from safetensors.torch import load_file

import flashvideo
from flashvideo import FlashVideoConfig, FlashVideoForCausalLM, FlashVideoPipeline, FlashVideoProcessor
from flashvideo.data.shapes import shapes_dataset
from flashvideo.data.splits import held_out_split
from flashvideo.data.tokenized import drop_prompts, tokenize_video_dataset
from flashvideo.data.video_folders import resize_and_center_crop
from flashvideo.image_tokenizer import load_image_tokenizer
from flashvideo.training import DataArguments, main, parse_args, train
from flashvideo.data.video_frames import load_videos
from flashvideo.training.checkpointing import TRAINING_STATE_NAME, checkpoint_dirs

stages_module = importlib.import_module("flashvideo.training.stages")  # where the key-frame stage calls drop_prompts


REPO = Path(__file__).resolve().parents[1]

TOKENIZER = """
    --stage tokenizer --num_clips 16 --data_seed 0
    --image_size 16 --code_grid_size 4 --codebook_size 32 --text_vocab_size 32 --max_frames 8
    --vq_block_out_channels 8 16 16 --vq_norm_num_groups 8 --vq_embed_dim 8
    --max_steps 20 --per_device_train_batch_size 16 --learning_rate 3e-3 --warmup_steps 2
    --logging_steps 5 --save_steps 100 --seed 0 --psnr_num_frames 64
""".split()
TINY_LM = (
    "--hidden_size 32 --num_hidden_layers 2 --num_attention_heads 4 --intermediate_size 64 --chunk_size 32"
)
LM = """
    --num_clips 16 --data_seed 0 --per_device_train_batch_size 4 --learning_rate 3e-3 --warmup_steps 3
    --logging_steps 5 --save_steps 100 --seed 0 --report_to none
"""


def lm_args(stage, output_dir, extra="", *paths, fresh=True):
    """Key-frame / interpolation arguments; `extra` is a string of flags, `paths` more (unsplit) arguments."""
    flags = f"--stage {stage} {TINY_LM if fresh else ''} {LM} {extra}".split()
    return [*flags, *map(str, paths), "--output_dir", str(output_dir)]


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    """Accelerate keeps process-wide singletons; every run in this process starts from a clean slate."""
    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


@pytest.fixture(scope="module")
def datasets_cache(tmp_path_factory):
    """A private 🤗 Datasets cache (the runs write their prepared videos and tokenized sets there)."""
    cache = tmp_path_factory.mktemp("hf_datasets_cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)
        yield cache


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory, datasets_cache):
    """The tokenizer stage, run once: a processor (word-level captions + trained tiny VQ) in output_dir."""
    output_dir = tmp_path_factory.mktemp("tokenizer_stage")
    AcceleratorState._reset_state(reset_partial_state=True)
    assert main([*TOKENIZER, "--output_dir", str(output_dir), "--report_to", "tensorboard"]) == 0
    AcceleratorState._reset_state(reset_partial_state=True)
    return output_dir


def scalars(run_dir, tag):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(run_dir))
    accumulator.Reload()
    return [event.value for event in accumulator.Scalars(tag)]


def sigkill_after_first_checkpoint(command, env, log_path, stage_checkpoints, kill=None) -> subprocess.Popen:
    """Run `command` until its first checkpoint appears under `stage_checkpoints` (240 s at most), then SIGKILL it
    (`kill(pid)`; default: the process itself) as the OOM killer or a preempted node would; the finished process."""
    kill = kill or (lambda pid: os.kill(pid, signal.SIGKILL))
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 240
        try:
            while not checkpoint_dirs(stage_checkpoints):
                assert process.poll() is None, log_path.read_text()[-3000:]
                assert time.monotonic() < deadline, "no checkpoint appeared"
                time.sleep(0.02)
        finally:
            if process.poll() is None:  # also when an assertion failed: do not leave it running
                kill(process.pid)
            process.wait(timeout=60)
    return process


def subprocess_env(datasets_cache, **extra):
    return {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "HF_DATASETS_CACHE": str(datasets_cache),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        **extra,
    }


# ----------------------------------------------------------------------------------------------- end to end


def test_three_stages_give_a_pipeline_checkpoint(tokenizer_dir, tmp_path, monkeypatch, capsys):
    # Tokenizer stage (fixture): the processor, its PSNR, TensorBoard curves.
    results = json.loads((tokenizer_dir / "train_results_tokenizer.json").read_text())
    assert results["train/global_step"] == 20 and results["eval/num_frames"] == 64
    assert 5 < results["eval/psnr"] < 60 and 0 < results["eval/codebook_usage"] <= 1
    losses = scalars(tokenizer_dir / "runs" / "tokenizer", "train/loss")
    assert len(losses) == 4 and losses[-1] < losses[0]
    assert len(scalars(tokenizer_dir / "runs" / "tokenizer", "train/psnr")) == 4
    processor = FlashVideoProcessor.from_pretrained(tokenizer_dir)
    assert processor.layout.image_size == 16 and processor.layout.code_grid_size == 4
    assert load_image_tokenizer(tokenizer_dir).config.num_vq_embeddings == 32
    words = processor.text_tokenizer.convert_ids_to_tokens(processor.text_tokenizer.encode("a red"))
    assert words == ["a", "red"]

    # Key-frame and interpolation stages into the same directory.
    output_dir = tmp_path / "checkpoint"
    shutil.copytree(tokenizer_dir, output_dir)
    assert main(lm_args("keyframe", output_dir, "--max_steps 30 --report_to tensorboard")) == 0
    assert main(lm_args("interpolation", output_dir, "--max_steps 20 --forward_mode parallel")) == 0
    assert (output_dir / "model.safetensors").is_file()
    assert (output_dir / "interpolation" / "model.safetensors").is_file()
    keyframe_losses = scalars(output_dir / "runs" / "keyframe", "train/loss")
    assert len(keyframe_losses) == 6 and keyframe_losses[-1] < keyframe_losses[0] - 0.3
    assert checkpoint_dirs(output_dir / "checkpoints" / "keyframe") == []  # every 100 steps: none here

    # Fine-tuning: the interpolation stage starts from the checkpoint's interpolation/ model, the key-frame
    # stage from its top-level model ("default" = flashvideo.default_checkpoint()); the processor comes along.
    keyframe_weights = load_file(output_dir / "model.safetensors")
    interpolation_weights = load_file(output_dir / "interpolation" / "model.safetensors")
    assert (keyframe_weights["lm_head.weight"] - interpolation_weights["lm_head.weight"]).abs().max() > 1e-2
    finetuned = tmp_path / "finetuned"
    slow = "--learning_rate 1e-6 --model_name_or_path"
    output = train(
        *parse_args(lm_args("interpolation", finetuned, f"--max_steps 2 {slow}", output_dir, fresh=False))
    )
    torch.testing.assert_close(
        output.model.lm_head.weight.detach(), interpolation_weights["lm_head.weight"], rtol=0, atol=1e-4
    )
    assert (finetuned / "interpolation" / "config.json").is_file()
    assert (finetuned / "processor_config.json").is_file()
    AcceleratorState._reset_state(reset_partial_state=True)
    monkeypatch.setattr(flashvideo, "default_checkpoint", lambda: output_dir, raising=False)
    output = train(*parse_args(lm_args("keyframe", finetuned, f"--max_steps 1 {slow} default", fresh=False)))
    torch.testing.assert_close(
        output.model.lm_head.weight.detach(), keyframe_weights["lm_head.weight"], rtol=0, atol=1e-4
    )
    AcceleratorState._reset_state(reset_partial_state=True)
    # The retention decay can change when fine-tuning (no weight changes shape), and code position embeddings can
    # be added (a new table, from zero); both are saved. Also with every caption dropped
    # (--proportion_empty_prompts), which is what the run trains on.
    retuned = tmp_path / "retuned"
    seen = []
    monkeypatch.setattr(
        stages_module, "drop_prompts", lambda *args: seen.append(drop_prompts(*args)) or seen[-1], raising=True
    )
    argv = lm_args(
        "keyframe", retuned,
        f"--max_steps 2 --proportion_empty_prompts 1 --decay_exponents 5 7 9 11 --code_position_embeddings {slow}",
        output_dir, fresh=False,
    )  # fmt: skip
    output = train(*parse_args(argv))
    start, end = output.model.config.text_token_range
    assert seen and all(not start <= token < end for ids in seen[0]["input_ids"] for token in ids)
    assert output.model.config.decay_exponents == [5, 7, 9, 11]
    reloaded = FlashVideoForCausalLM.from_pretrained(retuned)
    assert reloaded.config.decay_exponents == [5, 7, 9, 11] and reloaded.config.code_position_embeddings
    assert reloaded.model.code_positions.weight.any()  # trained from zero (the first step has learning rate 0)
    AcceleratorState._reset_state(reset_partial_state=True)
    capsys.readouterr()
    argv = lm_args("keyframe", retuned, "--max_steps 1 --decay_exponents 5 6 --model_name_or_path", output_dir, fresh=False)
    assert main(argv) == 1
    assert "--decay_exponents" in capsys.readouterr().err  # 2 exponents for 4 heads
    AcceleratorState._reset_state(reset_partial_state=True)
    # Sizes cannot be given for a model that already exists.
    assert main(lm_args("keyframe", finetuned, "--max_steps 1 --model_name_or_path", output_dir)) == 2

    pipe = FlashVideoPipeline.from_pretrained(output_dir, device="cpu")
    pipe.show_progress = False
    assert pipe.interpolation_model is not pipe.model
    generator = torch.Generator().manual_seed(0)
    out = pipe("a red circle moving right", num_frames=16, key_frame_spacing=5, generator=generator)
    assert out.frames.shape == (1, 16, 16, 16, 3) and out.frames.dtype == np.uint8
    assert out.stats.key_frames.frames == 4 and out.stats.interpolation.frames == 12


def test_keyframe_and_interpolation_stages_report_a_held_out_loss(tokenizer_dir, tmp_path, caplog):
    """--validation_split_percentage holds clips out of training; the loss on their samples is logged every
    --eval_steps (eval/loss) and written into train_results, and it is the final model's loss on those samples."""
    output_dir = tmp_path / "held_out"
    shutil.copytree(tokenizer_dir, output_dir)
    flags = "--max_steps 4 --eval_steps 2 --validation_split_percentage 25 --report_to tensorboard"
    with caplog.at_level(logging.INFO, logger="flashvideo"):
        assert main(lm_args("keyframe", output_dir, flags)) == 0
    assert "12 keyframe samples" in caplog.text and "4 held out for eval/loss" in caplog.text  # 25% of 16 clips
    results = json.loads((output_dir / "train_results_keyframe.json").read_text())
    assert results["eval/num_samples"] == 4 and math.isfinite(results["eval/loss"]) and results["eval/loss"] > 0
    eval_losses = scalars(output_dir / "runs" / "keyframe", "eval/loss")  # steps 2 and 4 (the final one)
    assert len(eval_losses) == 2 and eval_losses[-1] == pytest.approx(results["eval/loss"])
    # Evaluating leaves training as it is: evaluated at every step, the run ends with the same weights.
    AcceleratorState._reset_state(reset_partial_state=True)
    every_step = tmp_path / "every_step"
    shutil.copytree(tokenizer_dir, every_step)
    assert main(lm_args("keyframe", every_step, flags.replace("--eval_steps 2", "--eval_steps 1"))) == 0
    weights, again = load_file(output_dir / "model.safetensors"), load_file(every_step / "model.safetensors")
    assert all(torch.equal(weights[name], again[name]) for name in weights)
    assert len(scalars(every_step / "runs" / "keyframe", "eval/loss")) == 4

    # The held-out clips are those held_out_split draws with --data_seed, and eval/loss is the saved model's mean
    # loss on their samples.
    processor = FlashVideoProcessor.from_pretrained(output_dir)
    videos = load_videos(DataArguments(num_clips=16, data_seed=0), image_size=16)
    _, held_out_videos = held_out_split(videos, 25, 256, seed=0)
    held_out = tokenize_video_dataset(
        held_out_videos, processor, image_tokenizer=load_image_tokenizer(output_dir), sample_kind="keyframe"
    )
    model = FlashVideoForCausalLM.from_pretrained(output_dir).eval()
    with torch.no_grad():
        losses = [
            model(input_ids=torch.tensor([ids]), labels=torch.tensor([labels])).loss.item()
            for ids, labels in zip(held_out["input_ids"], held_out["labels"])
        ]
    assert results["eval/loss"] == pytest.approx(float(np.mean(losses)), rel=1e-5)

    # The interpolation stage: the 3 windows of each of the 4 held-out clips.
    AcceleratorState._reset_state(reset_partial_state=True)
    assert main(lm_args("interpolation", output_dir, "--max_steps 2 --validation_split_percentage 25")) == 0
    results = json.loads((output_dir / "train_results_interpolation.json").read_text())
    assert results["eval/num_samples"] == 12 and math.isfinite(results["eval/loss"])


def _held_out_losses(output_dir, subfolder=None, **sample_kwargs):
    """The saved model's plain loss on each held-out sample of the runs above (16 clips, 25% held out)."""
    processor = FlashVideoProcessor.from_pretrained(output_dir)
    videos = load_videos(DataArguments(num_clips=16, data_seed=0), image_size=16)
    _, held_out_videos = held_out_split(videos, 25, 256, seed=0)
    held_out = tokenize_video_dataset(
        held_out_videos, processor, image_tokenizer=load_image_tokenizer(output_dir), **sample_kwargs
    )
    model = FlashVideoForCausalLM.from_pretrained(output_dir, **({"subfolder": subfolder} if subfolder else {}))
    with torch.no_grad():
        return [
            model.eval()(input_ids=torch.tensor([ids]), labels=torch.tensor([labels])).loss.item()
            for ids, labels in zip(held_out["input_ids"], held_out["labels"])
        ]


def test_interpolation_order_is_trained_on_and_saved(tokenizer_dir, tmp_path, capsys):
    """--interpolation_order cuts the samples in that order and saves it in the model's config; eval/loss is the
    model's loss on held-out samples in that order. It is refused for the key-frame stage."""
    output_dir = tmp_path / "outside_in"
    shutil.copytree(tokenizer_dir, output_dir)
    flags = "--max_steps 2 --validation_split_percentage 25 --interpolation_order outside_in"
    assert main(lm_args("interpolation", output_dir, flags)) == 0
    config = FlashVideoConfig.from_pretrained(output_dir / "interpolation")
    assert config.interpolation_order == "outside_in"
    results = json.loads((output_dir / "train_results_interpolation.json").read_text())
    samples = dict(sample_kind="interpolation", interpolation_frames=4)
    outside_in = _held_out_losses(output_dir, "interpolation", **samples, interpolation_order="outside_in")
    forward = _held_out_losses(output_dir, "interpolation", **samples)
    # After two steps the model is close to uniform, so the two orders' losses are close; eval/loss is outside-in's.
    off = {name: abs(results["eval/loss"] - np.mean(losses)) for name, losses in (("outside_in", outside_in),
                                                                                   ("forward", forward))}  # fmt: skip
    assert off["outside_in"] < 1e-5 * results["eval/loss"] and off["outside_in"] < off["forward"] / 10
    AcceleratorState._reset_state(reset_partial_state=True)
    assert main(lm_args("keyframe", tmp_path / "keyframe", "--max_steps 1 --interpolation_order outside_in",
                        "--processor_name_or_path", tokenizer_dir)) == 1  # fmt: skip
    assert "--interpolation_order is for --stage interpolation" in capsys.readouterr().err


def test_changing_code_loss_weight_trains_differently_and_keeps_a_plain_held_out_loss(tokenizer_dir, tmp_path):
    """--changing_code_loss_weight changes the training loss (other weights after the same steps) but not what
    eval/loss measures: the saved model's plain mean loss on the held-out samples."""
    runs = {}
    for weight in (1, 4):
        output_dir = runs[weight] = tmp_path / f"weight_{weight}"
        shutil.copytree(tokenizer_dir, output_dir)
        AcceleratorState._reset_state(reset_partial_state=True)
        flags = f"--max_steps 3 --validation_split_percentage 25 --changing_code_loss_weight {weight}"
        assert main(lm_args("keyframe", output_dir, flags)) == 0
    plain, weighted = (load_file(runs[weight] / "model.safetensors") for weight in (1, 4))
    assert any(not torch.equal(plain[name], weighted[name]) for name in plain)
    results = json.loads((runs[4] / "train_results_keyframe.json").read_text())
    losses = _held_out_losses(runs[4], sample_kind="keyframe")
    assert results["eval/loss"] == pytest.approx(float(np.mean(losses)), rel=1e-5)


# -------------------------------------------------------------------------------------------- data parallel


def _data_parallel_worker(tokenizer_argv, keyframe_argv, result_dir):
    """Runs in each of the 2 processes started by `debug_launcher` (gloo, CPU)."""
    torch.set_num_threads(1)
    # debug_launcher initialises gloo itself and sets no RANK / LOCAL_RANK.
    rank = torch.distributed.get_rank()
    os.environ["LOCAL_RANK"] = str(rank)
    outputs = {}
    for name, argv in (("tokenizer", tokenizer_argv), ("keyframe", keyframe_argv)):
        output = train(*parse_args(argv))
        outputs[name] = {key: value.detach().clone() for key, value in output.model.state_dict().items()}
    torch.save(outputs, os.path.join(result_dir, f"rank{rank}.pt"))


def test_two_processes_match_one_process_on_the_combined_batch(tokenizer_dir, tmp_path, monkeypatch):
    """Per-device batch b on 2 ranks ≡ batch 2b on 1 rank: same samples per step, same averaged gradient."""
    # Without it accelerate gives each CPU process (cores / local processes) threads: 2 each on 2 cores here.
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    sgd = "--optim sgd --lr_scheduler_type linear --report_to none".split()
    tokenizer_argv = [*TOKENIZER, *sgd, *"--max_steps 3 --learning_rate 0.05 --psnr_num_frames 16".split()]
    keyframe_argv = lm_args("keyframe", "unused", "--optim sgd --lr_scheduler_type linear --max_steps 4")
    keyframe_argv += ["--learning_rate", "0.5", "--processor_name_or_path", str(tokenizer_dir)]

    def with_batch(argv, output_dir, batch):
        argv = [*argv, "--output_dir", str(output_dir)]
        argv[argv.index("--per_device_train_batch_size") + 1] = str(batch)
        return argv

    debug_launcher(
        _data_parallel_worker,
        args=(
            with_batch(tokenizer_argv, tmp_path / "tok-2p", 8),
            with_batch(keyframe_argv, tmp_path / "kf-2p", 2),
            str(tmp_path),
        ),
        num_processes=2,
    )
    AcceleratorState._reset_state(reset_partial_state=True)
    ranks = [torch.load(tmp_path / f"rank{rank}.pt", weights_only=True) for rank in range(2)]
    one_process = {"tokenizer": train(*parse_args(with_batch(tokenizer_argv, tmp_path / "tok-1p", 16))).model}
    AcceleratorState._reset_state(reset_partial_state=True)
    one_process["keyframe"] = train(*parse_args(with_batch(keyframe_argv, tmp_path / "kf-1p", 4))).model

    for stage, model in one_process.items():
        for name, value in model.state_dict().items():
            assert torch.equal(ranks[0][stage][name], ranks[1][stage][name]), f"{stage}: {name} differs"
            torch.testing.assert_close(ranks[0][stage][name], value, rtol=1e-5, atol=1e-6, msg=name)

    # The saved model is rank 0's, and training moved it away from its initialisation (same seed, same init).
    saved = load_file(tmp_path / "kf-2p" / "model.safetensors")
    assert saved.keys() == ranks[0]["keyframe"].keys()
    assert all(torch.equal(saved[name], ranks[0]["keyframe"][name]) for name in saved)
    layout = FlashVideoProcessor.from_pretrained(tokenizer_dir).layout
    set_seed(0)
    sizes = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64}
    initial = FlashVideoForCausalLM(FlashVideoConfig(**layout.to_dict(), **sizes, chunk_size=32))
    assert (initial.lm_head.weight - saved["lm_head.weight"]).abs().max() > 1e-3
    assert (tmp_path / "tok-2p" / "processor_config.json").is_file()


@pytest.mark.slow
def test_accelerate_launch_multi_gpu_command_runs_two_cpu_processes(tokenizer_dir, tmp_path, datasets_cache):
    """The documented `accelerate launch --multi_gpu --num_processes N -m flashvideo.training`, on CPU."""
    output_dir = tmp_path / "launched"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    launch = f"""
        -m accelerate.commands.launch --multi_gpu --num_processes 2 --num_machines 1 --mixed_precision no
        --dynamo_backend no --main_process_port {port} -m flashvideo.training
    """.split()
    training = lm_args("keyframe", output_dir, "--max_steps 3 --save_steps 2 --per_device_train_batch_size 2")
    training += ["--processor_name_or_path", str(tokenizer_dir)]
    # ACCELERATE_USE_CPU: gloo on CPU (`--cpu --num_processes 2` would silently run a single process).
    result = subprocess.run(
        [sys.executable, *launch, *training],
        env=subprocess_env(datasets_cache, ACCELERATE_USE_CPU="true"),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert "on 2 process(es)" in result.stderr and "Backend: gloo" in result.stderr
    assert (output_dir / "model.safetensors").is_file() and (output_dir / "processor_config.json").is_file()
    ((_, checkpoint),) = checkpoint_dirs(output_dir / "checkpoints" / "keyframe")
    state = json.loads((checkpoint / TRAINING_STATE_NAME).read_text())
    assert state["num_processes"] == 2 and state["global_step"] == 2
    assert (checkpoint / "random_states_0.pkl").is_file() and (checkpoint / "random_states_1.pkl").is_file()


# ------------------------------------------------------------------------------------------ SIGKILL, resume


@pytest.mark.slow
def test_sigkill_then_resume_latest_matches_an_uninterrupted_run(tokenizer_dir, tmp_path, datasets_cache):
    # 16 clips, 2 per batch, 2 accumulation steps: 4 optimizer steps per epoch; checkpoints every 3 steps fall
    # inside epochs, so the resumed run has to replay the epoch's shuffled order and skip what it has seen.
    def argv(output_dir):
        flags = """
            --max_steps 40 --save_steps 3 --save_total_limit 2 --per_device_train_batch_size 2
            --gradient_accumulation_steps 2 --lr_scheduler_type cosine --processor_name_or_path
        """
        return lm_args("keyframe", output_dir, flags, tokenizer_dir)

    killed_dir = tmp_path / "killed"
    stage_checkpoints = killed_dir / "checkpoints" / "keyframe"
    process = sigkill_after_first_checkpoint(
        [sys.executable, "-m", "flashvideo.training", *argv(killed_dir)], subprocess_env(datasets_cache),
        tmp_path / "killed.log", stage_checkpoints,
    )  # fmt: skip
    assert process.returncode == -signal.SIGKILL
    assert not (killed_dir / "model.safetensors").exists()  # it died mid-training
    steps = [step for step, _ in checkpoint_dirs(stage_checkpoints)]
    assert steps and max(steps) < 40 and all(step % 3 == 0 for step in steps)
    latest = stage_checkpoints / f"checkpoint-{max(steps)}"
    state = json.loads((latest / TRAINING_STATE_NAME).read_text())
    assert state["global_step"] == max(steps) and state["epoch"] == (max(steps) * 4) // 16
    # Killed inside an epoch (8 micro-batches): resuming must replay its order and skip what was seen.
    assert 0 < state["batch_in_epoch"] < 8

    resumed = train(*parse_args([*argv(killed_dir), "--resume_from_checkpoint", "latest"]))
    assert resumed.resumed_from == str(latest) and resumed.global_step == 40
    assert len(checkpoint_dirs(stage_checkpoints)) == 2  # save_total_limit
    AcceleratorState._reset_state(reset_partial_state=True)
    reference = train(*parse_args(argv(tmp_path / "uninterrupted")))

    # Same weights, to the bit: same data order, same optimizer and scheduler states.
    for name, value in reference.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[name], value), name
    saved = load_file(killed_dir / "model.safetensors")
    expected = load_file(tmp_path / "uninterrupted" / "model.safetensors")
    assert saved.keys() == expected.keys() and all(torch.equal(saved[k], expected[k]) for k in saved)


def test_resume_latest_without_checkpoints_starts_afresh_and_bad_path_fails(tokenizer_dir, tmp_path, capsys):
    flags = "--max_steps 2 --resume_from_checkpoint latest --processor_name_or_path"
    output = train(*parse_args(lm_args("keyframe", tmp_path / "a", flags, tokenizer_dir)))
    assert output.resumed_from is None and output.global_step == 2
    AcceleratorState._reset_state(reset_partial_state=True)
    flags = "--max_steps 2 --processor_name_or_path"
    argv = lm_args(
        "keyframe", tmp_path / "b", flags, tokenizer_dir, "--resume_from_checkpoint", tmp_path / "no"
    )
    assert main(argv) == 1
    assert "--resume_from_checkpoint" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------- data sources


def test_video_folder_local_dataset_and_shapes_sources(tmp_path, datasets_cache):
    """`--video_folder` (PNG frame folders) and `--dataset_name` (a local data set, not the Hub) load."""
    from PIL import Image

    clips = shapes_dataset(3, seed=1)
    for i in range(2):
        folder = tmp_path / "frames" / f"clip{i}"
        folder.mkdir(parents=True)
        for t, frame in enumerate(clips[i]["video"]):
            Image.fromarray(frame).save(folder / f"{t:03d}.png")
    (tmp_path / "local").mkdir()
    renamed = clips.select_columns(["video", "text"]).rename_columns({"video": "clip", "text": "caption"})
    renamed.to_parquet(str(tmp_path / "local" / "train.parquet"))
    PartialState()  # accelerate's logger wants one

    folder_args = DataArguments(
        video_folder=str(tmp_path / "frames"), video_folder_layout="frames", video_folder_text="a shape"
    )
    folder = load_videos(folder_args, image_size=16)
    assert len(folder) == 2 and folder[0]["text"] == "a shape"
    assert folder[0]["video"].shape == (16, 16, 16, 3) and folder[0]["video"].dtype == np.uint8
    assert folder.cache_files  # written to the datasets cache, so the maps after it are cached too

    local_args = DataArguments(
        dataset_name=str(tmp_path / "local"),
        video_column="clip",
        text_column="caption",
        num_frames=8,
        frame_stride=2,
    )
    local = load_videos(local_args, image_size=16)
    assert (
        len(local) == 3 and local[0]["video"].shape == (8, 16, 16, 3) and local[1]["text"] == clips[1]["text"]
    )
    np.testing.assert_array_equal(local[2]["video"], resize_and_center_crop(clips[2]["video"][::2], 16))

    # Shapes with --speed_range: every clip at its own speed, inside the range.
    varied = load_videos(DataArguments(num_clips=8, num_frames=11, speed_range=[0.5, 4.5]), image_size=64)
    speeds = np.asarray(varied["speed"])
    assert len(set(speeds)) == 8 and speeds.min() >= 0.5 and speeds.max() <= 4.5


# ------------------------------------------------------------------------------------------------ arguments


def test_yaml_arguments(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_text(
        "stage: interpolation\noutput_dir: out\nmax_steps: 7\nlearning_rate: 0.001\nreport_to: [none]\n"
        "interpolation_frames: 3\nvq_block_out_channels: [8, 16]\nmixed_precision: bf16\n"
        "resume_from_checkpoint: latest\n"
    )
    model_args, data_args, training_args = parse_args([str(path)])
    assert model_args.stage == "interpolation" and model_args.vq_block_out_channels == [8, 16]
    assert data_args.interpolation_frames == 3 and data_args.dataset == "shapes"
    assert training_args.max_steps == 7 and training_args.learning_rate == 0.001
    assert training_args.log_with is None and training_args.mixed_precision == "bf16"
    assert training_args.resume_from_checkpoint == "latest"
    # The same through the command line.
    argv = "--stage interpolation --max_steps 7 --report_to tensorboard --vq_block_out_channels 8 16".split()
    model_args, data_args, training_args = parse_args(argv)
    assert model_args.vq_block_out_channels == [8, 16] and training_args.log_with == ["tensorboard"]
    assert model_args.vq_mid_block_attention  # on unless switched off
    assert not parse_args([*argv, "--no_vq_mid_block_attention"])[0].vq_mid_block_attention

    for text, named in [
        ("stage: keyframe\nmax_stepz: 3\n", "max_stepz"),
        ("stage: keyframe\nmax_steps: 0\n", "--max_steps"),
        ("stage: decoder\n", "--stage"),
    ]:
        path.write_text(text)
        with pytest.raises(ValueError, match=named):
            parse_args([str(path)])


@pytest.mark.parametrize(
    "argv, named",
    [
        ("--stage decoder", "--stage"),
        ("--max_steps -1", "--max_steps"),
        ("--per_device_train_batch_size 0", "--per_device_train_batch_size"),
        ("--learning_rate 0", "--learning_rate"),
        ("--mixed_precision fp8", "--mixed_precision"),
        ("--lr_scheduler_type bogus", "--lr_scheduler_type"),
        ("--save_total_limit 0", "--save_total_limit"),
        ("--report_to none tensorboard", "--report_to"),
        ("--num_key_frames 20", "--num_key_frames"),
        ("--interpolation_frames 15", "--interpolation_frames"),
        ("--speed_range 3 1", "--speed_range"),
        ("--speed_range 1 2 3", "--speed_range"),
        ("--decay_exponents 5 0 7 8", "--decay_exponents"),
        ("--interpolation_order backward", "--interpolation_order"),
        ("--changing_code_loss_weight 0", "--changing_code_loss_weight"),
        ("--proportion_empty_prompts 1.5", "--proportion_empty_prompts"),
        ("--video_folder /nonexistent/videos", "--video_folder"),
        ("--model_name_or_path x --hidden_size 64", "--hidden_size"),
        ("--max_step 3", "--max_step"),  # no abbreviations
        ("--max_stepz 3", "--max_stepz"),
    ],
)
def test_bad_arguments_are_named(argv, named, capsys):
    assert main(argv.split()) == 2
    assert named in capsys.readouterr().err


def test_lm_stage_without_processor_or_with_a_conflicting_layout(tokenizer_dir, tmp_path, capsys):
    assert main(lm_args("keyframe", tmp_path / "empty", "--max_steps 1")) == 1
    assert "--stage tokenizer" in capsys.readouterr().err
    AcceleratorState._reset_state(reset_partial_state=True)
    argv = lm_args(
        "keyframe", tmp_path / "x", "--max_steps 1 --code_grid_size 8 --processor_name_or_path", tokenizer_dir
    )
    assert main(argv) == 1
    assert "--code_grid_size 8 (the processor has 4)" in capsys.readouterr().err


def test_fine_tuning_a_float16_checkpoint_trains_float32_weights(tmp_path):
    """A float16 export (what the shipped checkpoint's weights are) is fine-tuned in float32: loaded as saved it
    would train in float16, many times slower on a CPU and with small updates rounded away."""
    config = FlashVideoConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64, image_vocab_size=32,
        text_vocab_size=32, code_grid_size=4, image_size=16, max_frames=8,
    )  # fmt: skip
    FlashVideoForCausalLM(config).to(torch.float16).save_pretrained(tmp_path / "interpolation")
    config.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "interpolation" / "config.json").read_text())["dtype"] == "float16"
    model = stages_module.load_lm(str(tmp_path), "interpolation")
    assert {parameter.dtype for parameter in model.parameters()} == {torch.float32}
