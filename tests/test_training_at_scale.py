"""
Training beyond one machine's memory and disk: FSDP on 2 CPU processes (gloo) against DDP, with checkpoints
that resume; the encode-once codes data set; `--streaming` from a 🤗 IterableDataset split across processes,
SIGKILL'd and resumed.

Every run is real: `accelerate launch` of `python -m flashvideo.training` in 2 processes, tiny models (the
test_training.py configuration), video files written here.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch
from accelerate.state import AcceleratorState
from safetensors.torch import load_file
from test_training import TOKENIZER, datasets_cache, lm_args, subprocess_env, tokenizer_dir  # noqa: F401

from flashvideo.training import main
from flashvideo.training.train import TRAINING_STATE_NAME, checkpoint_dirs

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
