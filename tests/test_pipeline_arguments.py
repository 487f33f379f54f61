"""Bad pipeline arguments get a ValueError that names the parameter; nothing else escapes."""

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st


PROMPT = "a red circle moving right"


@pytest.mark.parametrize(
    "kwargs, parameter",
    [
        ({"prompt": ""}, "prompt"),
        ({"prompt": "   "}, "prompt"),
        ({"prompt": [PROMPT, ""]}, "prompt"),
        ({"num_frames": 1}, "num_frames"),
        ({"num_frames": 27, "key_frame_spacing": 5}, "num_frames"),  # max_frames=6 → at most 26 with spacing 5
        ({"num_frames": 7, "interpolate": False}, "num_frames"),
        ({"num_frames": 8, "key_frame_spacing": 5}, "num_frames"),  # 8 - 1 is not a multiple of 5
        ({"key_frame_spacing": 0}, "key_frame_spacing"),
        ({"key_frame_spacing": 6}, "key_frame_spacing"),
        ({"inherit_ratio": -0.1}, "inherit_ratio"),
        ({"inherit_ratio": 1.5}, "inherit_ratio"),
        ({"unstable_radius": -1}, "unstable_radius"),
        ({"temperature": 0.0}, "temperature"),
        ({"top_k": 0}, "top_k"),
        ({"top_p": 0.0}, "top_p"),
        ({"do_sample": "yes"}, "do_sample"),
        ({"first_frame": np.zeros((8, 8, 3), dtype=np.uint8)}, "first_frame"),
        ({"first_frame": np.zeros((16, 16, 3), dtype=np.float32)}, "first_frame"),
        ({"output_type": "mp4"}, "output_type"),
        ({"generator": 3}, "generator"),
        ({"guidance_scale": 0.5}, "guidance_scale"),
        ({"guidance_scale": float("nan")}, "guidance_scale"),
        ({"negative_prompt": 3}, "negative_prompt"),
    ],
)
def test_bad_arguments_name_the_parameter(tiny_pipeline, kwargs, parameter):
    kwargs = {"prompt": PROMPT, "num_frames": 6, **kwargs}
    prompt = kwargs.pop("prompt")  # the pipeline's input, positional as in every transformers pipeline
    with pytest.raises(ValueError, match=parameter):
        tiny_pipeline(prompt, **kwargs)


def test_arguments_are_checked_before_any_work(tiny_pipeline, monkeypatch):
    """`_sanitize_parameters` checks the call's arguments up front, before a prompt is tokenized."""
    monkeypatch.setattr(tiny_pipeline, "preprocess", lambda *args, **kwargs: pytest.fail("preprocess ran"))
    with pytest.raises(ValueError, match="inherit_ratio"):
        tiny_pipeline([PROMPT, "a blue square moving up"], num_frames=6, inherit_ratio=2.0)
    with pytest.raises(ValueError, match="Unknown arguments"):
        tiny_pipeline(PROMPT, num_frame=6)


def test_num_frames_error_states_the_accepted_range(tiny_pipeline):
    with pytest.raises(ValueError, match=r"num_frames must be an integer in \[2, 26\] for key_frame_spacing=5"):
        tiny_pipeline(PROMPT, num_frames=40)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    prompt=st.one_of(st.text(max_size=30), st.sampled_from([PROMPT, "a blue square moving up", "zebra"])),
    num_frames=st.one_of(st.integers(-3, 30), st.floats(), st.none()),
    key_frame_spacing=st.one_of(st.integers(-2, 8), st.just(2.5)),
    interpolate=st.booleans(),
    redundant_free=st.booleans(),
    inherit_ratio=st.one_of(st.floats(-1, 2), st.just(float("nan")), st.integers(-1, 2)),
    unstable_radius=st.integers(-2, 6),
    temperature=st.one_of(st.floats(-1, 3), st.sampled_from([float("nan"), float("inf"), 1])),
    top_k=st.one_of(st.none(), st.integers(-1, 100)),
    top_p=st.one_of(st.none(), st.floats(-0.5, 1.5), st.just(float("nan"))),
    output_type=st.sampled_from(["np", "pil", "latent", ""]),
)
def test_property_only_value_errors(tiny_pipeline, **kwargs):
    """Any combination either generates a clip or raises ValueError — never another exception type."""
    torch.manual_seed(0)
    prompt = kwargs.pop("prompt")
    try:
        out = tiny_pipeline(prompt, **kwargs)
    except ValueError:
        return
    assert len(out.frames) == 1
