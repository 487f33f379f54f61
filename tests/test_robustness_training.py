"""Training checkpoints under faults and abuse (issue 22, items 3-4, and `--processor_name_or_path default`):

- a fresh run never takes, prunes or resumes another run's checkpoints; checkpoints record the run's identity;
- a damaged latest checkpoint (each file kind, missing or truncated) is detected before resuming, named, and
  resume falls back to the newest intact one; none intact is a clear error.

Real runs of the tiny models of tests/test_training.py (its fixtures).
"""

import json
import logging
import shutil

import pytest
from accelerate import PartialState
from accelerate.state import AcceleratorState
from test_training import datasets_cache, fresh_accelerate_state, lm_args, tokenizer_dir  # noqa: F401 (fixtures)

from flashvideo.training import main, parse_args, train
from flashvideo.training.checkpointing import TRAINING_STATE_NAME, checkpoint_dirs, resolve_checkpoint
from flashvideo.training.errors import TrainingSetupError


RUN = "--max_steps 4 --save_steps 2 --report_to none --processor_name_or_path"


def _reset() -> None:
    AcceleratorState._reset_state(reset_partial_state=True)


@pytest.fixture(scope="module")
def two_checkpoints(tokenizer_dir, tmp_path_factory):  # noqa: F811
    """A key-frame run of 4 steps saved at steps 2 and 4: (its arguments, its checkpoints folder)."""
    output_dir = tmp_path_factory.mktemp("two_checkpoints")
    argv = lm_args("keyframe", output_dir, RUN, tokenizer_dir)
    _reset()
    assert main(argv) == 0
    _reset()
    return argv, output_dir / "checkpoints" / "keyframe"


def test_a_fresh_run_refuses_a_folder_with_another_runs_checkpoints(two_checkpoints, capsys):
    argv, stage_checkpoints = two_checkpoints
    output_dir = stage_checkpoints.parents[1]
    other = [*argv, "--learning_rate", "1e-3", "--max_steps", "2"]
    assert main(other) == 1
    error = capsys.readouterr().err
    assert f"--output_dir {output_dir} already holds checkpoints of a different run" in error
    assert "--learning_rate: 0.003 in the checkpoint, 0.001 now" in error and "--overwrite_output_dir" in error
    assert [step for step, _ in checkpoint_dirs(stage_checkpoints)] == [2, 4]  # nothing pruned or overwritten
    _reset()
    assert main(argv) == 1  # the same arguments, afresh: refused too (its pruning would mix the two runs)
    assert "checkpoints of a run with the same arguments" in capsys.readouterr().err
    _reset()
    assert main([*argv, "--resume_from_checkpoint", "latest", "--overwrite_output_dir"]) == 2
    assert "pass one of them" in capsys.readouterr().err


def test_overwrite_output_dir_and_resuming_refuses_a_different_run(two_checkpoints, tmp_path, capsys):
    argv, stage_checkpoints = two_checkpoints
    copy = tmp_path / "copy"
    shutil.copytree(stage_checkpoints.parents[1], copy)
    argv = [*argv[:-1], str(copy)]  # lm_args puts --output_dir last
    other = [*argv, "--learning_rate", "1e-3", "--max_steps", "2"]
    _reset()
    assert main([*other, "--overwrite_output_dir"]) == 0
    checkpoints = copy / "checkpoints" / "keyframe"
    assert [step for step, _ in checkpoint_dirs(checkpoints)] == [2]  # the other run's checkpoint-4 is gone
    state = json.loads((checkpoints / "checkpoint-2" / TRAINING_STATE_NAME).read_text())
    assert state["identity"]["learning_rate"] == 1e-3 and "max_steps" not in state["identity"]
    _reset()
    assert main([*argv, "--resume_from_checkpoint", "latest"]) == 1
    error = capsys.readouterr().err
    assert "checkpoint-2 belongs to a run with other arguments (--learning_rate: 0.001 in the checkpoint" in error


DAMAGES = {
    "model.safetensors": "truncate",
    "optimizer.bin": "delete",
    "scheduler.bin": "truncate",
    "random_states_0.pkl": "delete",
    TRAINING_STATE_NAME: "truncate",
}


def _damage(path, how: str) -> None:
    if how == "delete":
        path.unlink()
    else:
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize("name", list(DAMAGES))
def test_latest_skips_a_damaged_checkpoint_naming_the_file(two_checkpoints, tmp_path, name, caplog):
    _, stage_checkpoints = two_checkpoints
    checkpoints = tmp_path / "keyframe"
    shutil.copytree(stage_checkpoints, checkpoints)
    _damage(checkpoints / "checkpoint-4" / name, DAMAGES[name])
    PartialState()  # accelerate's logger, as in a run
    with caplog.at_level(logging.WARNING):
        assert resolve_checkpoint("latest", checkpoints) == checkpoints / "checkpoint-2"
    assert f"Skipping the damaged checkpoint {checkpoints / 'checkpoint-4'}" in caplog.text
    assert str(checkpoints / "checkpoint-4" / name) in caplog.text
    _damage(checkpoints / "checkpoint-2" / name, DAMAGES[name])
    with pytest.raises(TrainingSetupError, match=f"no intact checkpoint in .*checkpoint-4: .*{name}.*checkpoint-2"):
        resolve_checkpoint("latest", checkpoints)
    with pytest.raises(TrainingSetupError, match=f"checkpoint-2 is damaged: .*{name}"):
        resolve_checkpoint(str(checkpoints / "checkpoint-2"), checkpoints)


def test_resume_falls_back_to_the_newest_intact_checkpoint(two_checkpoints, tmp_path):
    argv, stage_checkpoints = two_checkpoints
    copy = tmp_path / "copy"
    shutil.copytree(stage_checkpoints.parents[1], copy)
    _damage(copy / "checkpoints" / "keyframe" / "checkpoint-4" / "model.safetensors", "truncate")
    _reset()
    output = train(*parse_args([*argv[:-1], str(copy), "--max_steps", "6", "--resume_from_checkpoint", "latest"]))
    assert output.resumed_from == str(copy / "checkpoints" / "keyframe" / "checkpoint-2")
    assert output.global_step == 6


def test_processor_default_is_the_shipped_checkpoints(tmp_path):
    """`--processor_name_or_path default` means the shipped checkpoint, as `--model_name_or_path default` does."""
    _reset()
    argv = lm_args("keyframe", tmp_path / "run", "--max_steps 1 --num_clips 2 --per_device_train_batch_size 2")
    output = train(*parse_args([*argv, "--processor_name_or_path", "default"]))
    assert output.global_step == 1 and output.processor.layout.image_size == 64


def test_checkpoints_saved_before_identities_were_recorded(two_checkpoints, tmp_path, capsys, caplog):
    """An older checkpoint (no identity in its training state): a fresh run still refuses the folder; resuming it
    warns that its arguments cannot be checked."""
    argv, stage_checkpoints = two_checkpoints
    copy = tmp_path / "copy"
    shutil.copytree(stage_checkpoints.parents[1], copy)
    for _, checkpoint in checkpoint_dirs(copy / "checkpoints" / "keyframe"):
        state = json.loads((checkpoint / TRAINING_STATE_NAME).read_text())
        del state["identity"]
        (checkpoint / TRAINING_STATE_NAME).write_text(json.dumps(state))
    argv = [*argv[:-1], str(copy)]
    _reset()
    assert main(argv) == 1
    assert "checkpoints of a run whose arguments were not recorded" in capsys.readouterr().err
    _reset()
    with caplog.at_level(logging.WARNING):
        output = train(*parse_args([*argv, "--max_steps", "5", "--resume_from_checkpoint", "latest"]))
    assert output.global_step == 5 and "does not record its run's arguments" in caplog.text
