"""`flashvideo generate` and the pipeline's argument checks under abuse (issue 22, item 7): the output and fps are
checked before any work, user errors are one line and exit status 2, a clip is replaced only by a complete one,
NumPy scalars work wherever Python numbers do, and error suggestions are valid values."""

import os
import re

import numpy as np
import pytest
import torch

import flashvideo.video_io
from flashvideo import FlashVideoPipeline
from flashvideo.cli import main


PROMPT = "a red circle moving right"


@pytest.fixture
def checkpoint(tiny_pipeline, tmp_path):
    path = tmp_path / "checkpoint"
    tiny_pipeline.save_pretrained(path)
    return path


def _generate(*argv: str) -> int:
    return main(["generate", PROMPT, *argv])


def _one_line_error(capsys) -> str:
    """The one error line on stderr (loading may also draw progress bars there), with no traceback."""
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and errors[0].startswith("flashvideo generate: error: ") and "Traceback" not in err, err
    return errors[0]


def test_output_and_fps_are_checked_before_anything_is_loaded(tmp_path, capsys, monkeypatch):
    def not_now(*args, **kwargs):
        raise AssertionError("the checkpoint was loaded before the arguments were checked")

    monkeypatch.setattr(FlashVideoPipeline, "from_pretrained", not_now)
    (tmp_path / "folder.mp4").mkdir()
    cases = [
        (["-o", str(tmp_path / "folder.mp4")], "is a directory"),
        (["-o", str(tmp_path / "missing" / "clip.mp4")], "does not exist"),
        (["-o", str(tmp_path / "clip.avi")], "output must end in one of ('.mp4', '.gif')"),
        (["-o", str(tmp_path / "clip.mp4"), "--fps", "0"], "fps must be a number in (0, 240]"),
        (["-o", str(tmp_path / "clip.gif"), "--fps", "nan"], "fps must be a number in (0, 240]"),
        (["-o", str(tmp_path / "clip.mp4"), "--checkpoint", str(tmp_path / "nowhere")], "does not exist"),
    ]
    for argv, message in cases:
        assert _generate(*argv) == 2, argv
        assert message in _one_line_error(capsys), argv
    assert list(tmp_path.iterdir()) == [tmp_path / "folder.mp4"]  # nothing written


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_an_unwritable_output_folder_is_refused(tmp_path, capsys):
    folder = tmp_path / "read-only"
    folder.mkdir(mode=0o555)
    assert _generate("-o", str(folder / "clip.mp4")) == 2
    assert "is not writable" in _one_line_error(capsys)


def test_pipeline_errors_are_one_line_and_exit_2(checkpoint, tmp_path, capsys):
    output = str(tmp_path / "clip.mp4")
    assert _generate("-o", output, "--checkpoint", str(checkpoint), "--num-frames", "0") == 2
    assert "num_frames must be an integer in [2, 26]" in _one_line_error(capsys)
    assert _generate("-o", output, "--checkpoint", str(checkpoint), "--inherit-ratio", "2") == 2
    assert "inherit_ratio must be a number in [0, 1]" in _one_line_error(capsys)
    assert not os.path.exists(output)


def test_an_existing_clip_is_never_replaced_by_a_truncated_one(checkpoint, tmp_path, monkeypatch):
    output = tmp_path / "clip.mp4"
    argv = ["-o", str(output), "--checkpoint", str(checkpoint), "--num-frames", "6"]
    assert _generate(*argv) == 0
    before = output.read_bytes()

    def interrupted(frames, path, fps=8):
        with open(path, "wb") as handle:
            handle.write(before[: len(before) // 3])
        raise KeyboardInterrupt  # the user pressed Ctrl-C while the clip was being written

    monkeypatch.setattr(flashvideo.video_io, "export_to_video", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _generate(*argv, "--seed", "1")
    assert output.read_bytes() == before
    assert sorted(path.name for path in tmp_path.iterdir()) == ["checkpoint", "clip.mp4"]  # no partial file left


def test_numpy_scalars_are_accepted_wherever_python_numbers_are(tiny_pipeline):
    numbers = dict(num_frames=6, key_frame_spacing=5, top_k=5, top_p=0.9, temperature=0.8, inherit_ratio=0.2,
                   unstable_radius=1, guidance_scale=1.5, do_sample=True)  # fmt: skip
    numpy = dict(num_frames=np.int64(6), key_frame_spacing=np.int32(5), top_k=np.int64(5), top_p=np.float64(0.9),
                 temperature=np.float64(0.8), inherit_ratio=np.float64(0.2), unstable_radius=np.int64(1),
                 guidance_scale=np.float64(1.5), do_sample=np.bool_(True))  # fmt: skip
    expected = tiny_pipeline(PROMPT, generator=torch.Generator().manual_seed(0), **numbers).frames
    got = tiny_pipeline(PROMPT, generator=torch.Generator().manual_seed(0), **numpy).frames
    np.testing.assert_array_equal(got, expected)  # the same values: the same clip
    single = dict(temperature=np.float32(0.8), top_p=np.float32(0.9), top_k=np.int16(3))
    assert tiny_pipeline(PROMPT, num_frames=6, **single).frames.shape == (1, 6, 16, 16, 3)


@pytest.mark.parametrize("num_frames, spacing", [(2, 5), (3, 5), (9, 5), (12, 5), (5, 3), (2, 2), (25, 5)])
def test_the_suggested_num_frames_is_accepted(tiny_pipeline, num_frames, spacing):
    with pytest.raises(ValueError, match="Try num_frames=") as caught:
        tiny_pipeline(PROMPT, num_frames=num_frames, key_frame_spacing=spacing)
    for suggestion in re.findall(r"num_frames=(\d+)", str(caught.value).split("Try ")[1]):
        assert tiny_pipeline(PROMPT, num_frames=int(suggestion), key_frame_spacing=spacing).frames.shape[1] == int(
            suggestion
        )
