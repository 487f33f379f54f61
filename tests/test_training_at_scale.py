"""
Training beyond one machine's memory and disk: FSDP on 2 CPU processes (gloo) against DDP, with checkpoints
that resume; the encode-once codes data set; `--streaming` from a 🤗 IterableDataset split across processes,
SIGKILL'd and resumed.

Every run is real: `accelerate launch` of `python -m flashvideo.training` in 2 processes, tiny models (the
test_training.py configuration), video files written here.
"""

import json
import logging
import shutil
import signal
import socket
import subprocess
import sys

import numpy as np
import psutil
import pytest
import torch
from accelerate.state import AcceleratorState
from safetensors.torch import load_file
from test_training import (  # noqa: F401
    TOKENIZER,
    datasets_cache,
    lm_args,
    sigkill_after_first_checkpoint,
    subprocess_env,
    tokenizer_dir,
)

from flashvideo.training import main
from flashvideo.cli import main as cli_main
from flashvideo.training.checkpointing import TRAINING_STATE_NAME, checkpoint_dirs

FSDP = """
    --use_fsdp --fsdp_version 2 --fsdp_auto_wrap_policy TRANSFORMER_BASED_WRAP
    --fsdp_transformer_layer_cls_to_wrap FlashVideoDecoderLayer --fsdp_state_dict_type FULL_STATE_DICT
""".split()


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch_command(*launcher_flags, module="flashvideo.training"):
    """`accelerate launch` of 2 CPU processes (gloo)."""
    return [
        sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()),
        *launcher_flags, "-m", module,
    ]  # fmt: skip


def launch(cache, *launcher_flags, training_argv, module="flashvideo.training"):
    result = subprocess.run(
        [*launch_command(*launcher_flags, module=module), *map(str, training_argv)],
        env=subprocess_env(cache, ACCELERATE_USE_CPU="true"),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return result.stderr


def kill_process_tree(pid):
    """SIGKILL a process and all its descendants (found first, then killed together); the caller reaps `pid`."""
    try:
        parent = psutil.Process(pid)
        descendants = parent.children(recursive=True)
    except psutil.NoSuchProcess:
        return
    for proc in [parent, *descendants]:
        try:
            proc.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(descendants, timeout=30)


def max_difference(a, b):
    assert a.keys() == b.keys()
    return max((a[name] - b[name]).abs().max().item() for name in a)


# ------------------------------------------------------------------------------------------------------- FSDP


@pytest.mark.slow
def test_fsdp_on_two_cpu_processes_matches_ddp_and_resumes(tokenizer_dir, tmp_path, datasets_cache):
    """`accelerate launch --use_fsdp --fsdp_version 2` of the key-frame stage: sharded for real on CPU (gloo),
    the same weights as `--multi_gpu` (DDP) within float tolerance, safetensors checkpoints that resume."""
    flags = "--max_steps 4 --save_steps 2 --per_device_train_batch_size 2 --processor_name_or_path"
    ddp_log = launch(
        datasets_cache, "--multi_gpu", training_argv=lm_args("keyframe", tmp_path / "ddp", flags, tokenizer_dir)
    )
    fsdp_log = launch(datasets_cache, *FSDP, training_argv=lm_args("keyframe", tmp_path / "fsdp", flags, tokenizer_dir))
    assert "DistributedType.MULTI_CPU  Backend: gloo" in ddp_log
    assert "DistributedType.FSDP  Backend: gloo" in fsdp_log and "FSDP 2 on 2 CPU processes" in fsdp_log

    ddp = load_file(tmp_path / "ddp" / "model.safetensors")
    fsdp = load_file(tmp_path / "fsdp" / "model.safetensors")
    difference = max_difference(ddp, fsdp)
    print(f"max |FSDP - DDP| over {len(ddp)} tensors after 4 steps: {difference:.3g}")
    assert difference < 1e-5
    # Training moved the weights (a no-op run would also "match").
    at_step_2 = load_file(tmp_path / "fsdp" / "checkpoints" / "keyframe" / "checkpoint-2" / "model.safetensors")
    assert (at_step_2["lm_head.weight"] - fsdp["lm_head.weight"]).abs().max() > 1e-4
    # The saved checkpoint is an ordinary one: full weights in safetensors, this package's code beside them
    # (not torch's FSDP modules, whose class the sharded model takes).
    assert sorted(path.name for path in (tmp_path / "fsdp").glob("*.py")) == sorted(
        path.name for path in (tmp_path / "ddp").glob("*.py")
    )
    ((_, first), (_, last)) = checkpoint_dirs(tmp_path / "fsdp" / "checkpoints" / "keyframe")
    assert {path.name for path in last.iterdir()} >= {"model.safetensors", "optimizer.bin", TRAINING_STATE_NAME}
    assert not list(last.glob("pytorch_model_fsdp*"))
    assert max_difference(load_file(last / "model.safetensors"), fsdp) == 0

    # Resume the FSDP run from step 2, in another folder: the same weights, to the bit.
    resumed_flags = f"{flags.rsplit(' ', 1)[0]} --resume_from_checkpoint {first} --processor_name_or_path"
    log = launch(
        datasets_cache, *FSDP, training_argv=lm_args("keyframe", tmp_path / "resumed", resumed_flags, tokenizer_dir)
    )
    assert f"Resumed from {first}: step 2" in log
    assert max_difference(load_file(tmp_path / "resumed" / "model.safetensors"), fsdp) == 0


@pytest.mark.slow
def test_held_out_loss_on_two_processes_ddp_and_fsdp_matches_one_process(tokenizer_dir, tmp_path, datasets_cache):
    """3 held-out clips on 2 processes, 1 per batch: process 0 evaluates 2 samples, process 1 one sample and a
    pass that counts nothing (FSDP gathers parameters in every pass). eval/loss is the 1-process value."""
    flags = "--max_steps 2 --eval_steps 1 --validation_split_percentage 20 --processor_name_or_path"

    def results(name):
        return json.loads((tmp_path / name / "train_results_keyframe.json").read_text())

    for name, launcher in (("ddp", ["--multi_gpu"]), ("fsdp", FSDP)):
        argv = lm_args("keyframe", tmp_path / name, f"--per_device_train_batch_size 1 {flags}", tokenizer_dir)
        assert "eval loss=" in launch(datasets_cache, *launcher, training_argv=argv)
    AcceleratorState._reset_state(reset_partial_state=True)
    assert main(lm_args("keyframe", tmp_path / "one", f"--per_device_train_batch_size 2 {flags}", tokenizer_dir)) == 0
    one = results("one")
    assert one["eval/num_samples"] == 3 and results("ddp")["eval/num_samples"] == 3
    for name in ("ddp", "fsdp"):
        assert results(name)["eval/loss"] == pytest.approx(one["eval/loss"], rel=1e-5), name


def test_tokenizer_stage_under_fsdp_and_lone_processes_are_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    assert main([*TOKENIZER, "--max_steps", "1", "--output_dir", str(tmp_path / "tok")]) == 1
    assert "--stage tokenizer does not run under FSDP" in capsys.readouterr().err
    AcceleratorState._reset_state(reset_partial_state=True)
    monkeypatch.delenv("ACCELERATE_USE_FSDP")
    # What `accelerate launch --num_processes 2` without ACCELERATE_USE_CPU gives on a machine with no GPU.
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main([*TOKENIZER, "--max_steps", "1", "--output_dir", str(tmp_path / "tok")]) == 1
    assert "ACCELERATE_USE_CPU=true" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ encode once


@pytest.fixture(scope="module")
def video_folder(tmp_path_factory):
    """8 real mp4 files in UCF-101 class folders (Shapes clips, 64 px, 16 frames), written with PyAV."""
    from flashvideo.data.shapes import shapes_dataset
    from flashvideo.video_io import export_to_video

    root = tmp_path_factory.mktemp("videos")
    clips = shapes_dataset(8, seed=3)
    for i in range(8):
        folder = root / ("MovingRight" if i % 2 else "MovingLeft")
        folder.mkdir(exist_ok=True)
        export_to_video(clips[i]["video"], folder / f"clip{i}.mp4", fps=8)
    return root


@pytest.fixture(scope="module")
def codes_dir(video_folder, tokenizer_dir, tmp_path_factory, datasets_cache):
    """The encode step on 2 processes into 4 shards: each process decodes and encodes 2 of them."""
    output_dir = tmp_path_factory.mktemp("codes") / "codes"
    argv = [
        "--processor_name_or_path", tokenizer_dir, "--video_folder", video_folder, "--num_shards", "4",
        "--output_dir", output_dir,
    ]  # fmt: skip
    log = launch(datasets_cache, "--multi_gpu", training_argv=argv, module="flashvideo.training.encode")
    assert "Process 1 of 2: shard(s) [1, 3] of 4" in log
    return output_dir


def test_encode_once_writes_a_sharded_codes_dataset_that_training_reuses(
    codes_dir, video_folder, tokenizer_dir, tmp_path, capsys, caplog
):
    import datasets

    from flashvideo import FlashVideoProcessor
    from flashvideo.data.codes import CodesInfo, codes_to_samples, count_rows, load_codes
    from flashvideo.data.tokenized import tokenize_video_dataset
    from flashvideo.data.video_folders import load_video_folder
    from flashvideo.image_tokenizer import frames_to_codes, load_image_tokenizer

    info = CodesInfo.load(codes_dir)
    assert info.num_shards == 4 and info.num_rows == 8 and info.num_frames == 16 and info.code_grid_size == 4
    assert count_rows(codes_dir) == {f"train-{i:05d}-of-00004.parquet": 2 for i in range(4)}

    # The same codes as encoding the folder's videos directly, row for row (shard s holds videos s, s + 4).
    processor = FlashVideoProcessor.from_pretrained(tokenizer_dir)
    vq = load_image_tokenizer(tokenizer_dir)
    videos, _ = load_video_folder(video_folder, num_frames=16, image_size=16)
    codes = load_codes(str(codes_dir))
    assert isinstance(codes, datasets.Dataset) and codes.features["codes"].shape == (16, 4, 4)
    order = [s + 4 * k for s in range(4) for k in range(2)]
    expected = frames_to_codes(vq, np.stack([videos[i]["video"] for i in order])).numpy()
    np.testing.assert_array_equal(np.asarray(codes["codes"]), expected)
    assert codes["text"] == [videos[i]["text"] for i in order]
    streamed = load_codes(str(codes_dir), streaming=True)
    assert isinstance(streamed, datasets.IterableDataset) and streamed.num_shards == 4
    np.testing.assert_array_equal(np.asarray(next(iter(streamed))["codes"]), expected[0])

    # Samples cut from the codes are those cut from the videos (same frames, same layout), for both stages.
    for kind, extra in (("keyframe", {"num_key_frames": 4}), ("interpolation", {"interpolation_frames": 4})):
        from_codes = codes_to_samples(codes, processor, sample_kind=kind, **extra)
        from_videos = tokenize_video_dataset(
            videos.select(order), processor, image_tokenizer=vq, sample_kind=kind, **extra
        )
        assert from_codes["input_ids"] == from_videos["input_ids"] and from_codes["labels"] == from_videos["labels"]

    # A training run reads them (--codes_dataset): no image tokenizer in the data path.
    flags = "--max_steps 2 --processor_name_or_path"
    capsys.readouterr()
    with caplog.at_level(logging.INFO, logger="flashvideo"):
        assert main(lm_args("keyframe", tmp_path / "run", flags, tokenizer_dir, "--codes_dataset", codes_dir)) == 0
    assert (tmp_path / "run" / "model.safetensors").is_file()
    assert f"--codes_dataset {codes_dir}: 8 clip(s) of 16 frames in 4 shard(s)" in caplog.text
    assert "Tokenizing videos" not in capsys.readouterr().err

    # Codes made by another image tokenizer are refused, naming the argument.
    AcceleratorState._reset_state(reset_partial_state=True)
    other = tmp_path / "other_codes"
    shutil.copytree(codes_dir, other)
    info.image_tokenizer_fingerprint = "0" * 64
    info.save(other)
    assert main(lm_args("keyframe", tmp_path / "bad", flags, tokenizer_dir, "--codes_dataset", other)) == 1
    assert "--codes_dataset" in (err := capsys.readouterr().err) and "another image tokenizer" in err
    # ... and so is a second encode into the same folder (`flashvideo encode` = python -m flashvideo.training.encode).
    argv = ["--processor_name_or_path", str(tokenizer_dir), "--video_folder", str(video_folder), "--output_dir", str(other)]
    assert cli_main(["encode", *argv]) == 1 and "--overwrite_output_dir" in capsys.readouterr().err
    assert cli_main(["encode", *argv[:-1], str(tmp_path / "x"), "--num_shards", "0"]) == 2
    assert "--num_shards" in capsys.readouterr().err


# -------------------------------------------------------------------------------------------------- streaming


@pytest.mark.slow
def test_streaming_two_processes_sigkill_then_resume_matches_an_uninterrupted_run(
    codes_dir, tokenizer_dir, tmp_path, datasets_cache, capsys
):
    """`--streaming --codes_dataset` on 2 processes, each reading 2 of the 4 shards (split_dataset_by_node); the
    whole launch is SIGKILL'd after a checkpoint, resumed on 2 processes from each one's saved stream position,
    and ends with the weights of an uninterrupted run, to the bit. (7 steps, epochs of 4: 🤗 Datasets pauses 5 s at
    the end of every pass over interleaved Parquet shards, `datasets.config.SLEEP_TIME_ON_THREADS_SHUTDOWN`.)"""
    flags = """
        --max_steps 7 --save_steps 3 --save_total_limit 2 --per_device_train_batch_size 1 --streaming
        --lr_scheduler_type cosine --processor_name_or_path
    """

    def argv(output_dir, *extra):
        return lm_args("keyframe", output_dir, flags, tokenizer_dir, "--codes_dataset", codes_dir, *extra)

    killed_dir = tmp_path / "killed"
    stage_checkpoints = killed_dir / "checkpoints" / "keyframe"
    command = [*launch_command("--multi_gpu"), *map(str, argv(killed_dir))]
    # The launcher and both training processes (each in a session of its own) at once.
    process = sigkill_after_first_checkpoint(
        command, subprocess_env(datasets_cache, ACCELERATE_USE_CPU="true"), tmp_path / "killed.log",
        stage_checkpoints, kill=kill_process_tree,
    )  # fmt: skip
    assert process.returncode == -signal.SIGKILL, (tmp_path / "killed.log").read_text()[-3000:]
    assert not (killed_dir / "model.safetensors").exists()  # it died mid-training
    steps = [step for step, _ in checkpoint_dirs(stage_checkpoints)]
    assert steps and max(steps) < 7, (tmp_path / "killed.log").read_text()[-3000:]
    latest = stage_checkpoints / f"checkpoint-{max(steps)}"
    at_checkpoint = load_file(latest / "model.safetensors")
    positions = [json.loads((latest / f"stream_state_{rank}.json").read_text()) for rank in range(2)]
    # 4 clips per process and epoch, one per batch.
    assert all(p["epoch"] * 4 + p["batches_in_epoch"] == max(steps) for p in positions)
    # Each process reads its own part: 2 whole shards of the 4, together every clip once.
    from flashvideo.data.codes import load_codes
    from flashvideo.training.streaming import split_stream

    parts = [
        [np.asarray(row["codes"]).tobytes() for row in split_stream(
            load_codes(str(codes_dir), streaming=True), seed=0, buffer_size=1, process_index=rank, num_processes=2
        )]
        for rank in range(2)
    ]  # fmt: skip
    assert len(parts[0]) == len(parts[1]) == 4 and len(set(parts[0]) | set(parts[1])) == 8

    # Resuming on another number of processes is refused (each process held its own position).
    assert main(argv(killed_dir, "--resume_from_checkpoint", "latest")) == 1
    assert "resumes on as many processes as it was saved with" in capsys.readouterr().err

    launch(datasets_cache, "--multi_gpu", training_argv=argv(killed_dir, "--resume_from_checkpoint", "latest"))
    launch(datasets_cache, "--multi_gpu", training_argv=argv(tmp_path / "uninterrupted"))
    resumed = load_file(killed_dir / "model.safetensors")
    expected = load_file(tmp_path / "uninterrupted" / "model.safetensors")
    assert max_difference(resumed, expected) == 0
    # ... and it did train: the last steps moved the weights away from those at the checkpoint.
    assert max_difference(at_checkpoint, expected) > 1e-4


def test_streaming_a_hub_codes_dataset(codes_dir, tokenizer_dir, tmp_path, monkeypatch):
    """`--codes_dataset org/name --streaming`: the Hub is replaced at its boundary (the download of
    flashvideo_codes.json, the resolution of the repo's Parquet files), everything after it runs for real."""
    import datasets
    import huggingface_hub

    repo = "flashvideo-test/shapes-codes"
    calls = []

    def hf_hub_download(repo_id, filename, repo_type=None, **kwargs):
        calls.append(("hf_hub_download", repo_id, filename, repo_type))
        return str(codes_dir / filename)

    real_load_dataset = datasets.load_dataset

    def load_dataset(path, *args, **kwargs):
        if path != repo:
            return real_load_dataset(path, *args, **kwargs)
        calls.append(("load_dataset", path, kwargs.get("split"), kwargs.get("streaming")))
        files = sorted(str(f) for f in (codes_dir / "data").glob("train-*.parquet"))
        return real_load_dataset("parquet", data_files={"train": files}, **kwargs)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hf_hub_download)
    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    flags = "--max_steps 2 --per_device_train_batch_size 2 --streaming --processor_name_or_path"
    assert main(lm_args("keyframe", tmp_path / "hub", flags, tokenizer_dir, "--codes_dataset", repo)) == 0
    assert ("hf_hub_download", repo, "flashvideo_codes.json", "dataset") in calls
    assert ("load_dataset", repo, "train", True) in calls
    assert (tmp_path / "hub" / "model.safetensors").is_file()


def test_encode_streams_a_video_dataset_on_two_processes(tokenizer_dir, tmp_path, datasets_cache):
    """`encode --streaming --dataset_name`: each process streams its part of a 🤗 data set of videos (never
    downloaded whole) and writes a shard every --rows_per_shard clips; the shards are then named train-i-of-N."""
    from flashvideo.data.codes import CodesInfo, count_rows, load_codes
    from flashvideo.data.shapes import shapes_dataset
    from flashvideo.data.video_folders import resize_and_center_crop
    from flashvideo.image_tokenizer import frames_to_codes, load_image_tokenizer

    clips = shapes_dataset(8, seed=5).select_columns(["video", "text"])
    (tmp_path / "videos").mkdir()
    clips.to_parquet(str(tmp_path / "videos" / "train.parquet"))  # one file: the processes take every 2nd clip
    argv = [
        "--processor_name_or_path", tokenizer_dir, "--dataset_name", tmp_path / "videos", "--streaming",
        "--rows_per_shard", "3", "--output_dir", tmp_path / "codes",
    ]  # fmt: skip
    log = launch(datasets_cache, "--multi_gpu", training_argv=argv, module="flashvideo.training.encode")
    assert "Process 1 of 2: streaming its part" in log
    info = CodesInfo.load(tmp_path / "codes")
    assert info.num_rows == 8 and info.num_shards == 4  # 4 clips per process: shards of 3 and 1, twice
    assert list(count_rows(tmp_path / "codes").values()) == [3, 1, 3, 1]
    order = [0, 2, 4, 6, 1, 3, 5, 7]  # process 0's shards first
    videos = np.stack([resize_and_center_crop(np.asarray(clips[i]["video"], dtype=np.uint8), 16) for i in order])
    codes = load_codes(str(tmp_path / "codes"))
    expected = frames_to_codes(load_image_tokenizer(tokenizer_dir), videos).numpy()
    np.testing.assert_array_equal(np.asarray(codes["codes"]), expected)
    assert codes["text"] == [clips[i]["text"] for i in order]
