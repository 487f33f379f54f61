"""flashvideo.validation: the one set of argument checks, and their messages."""

import math
from fractions import Fraction

import numpy as np
import pytest

from flashvideo.modeling_flashvideo import FORWARD_MODES
from flashvideo.training.arguments import TRAINING_FORWARD_MODES
from flashvideo.validation import check_bool, check_choice, check_int, check_number, is_int, is_real


def test_int_and_real_exclude_bool_and_include_numpy():
    assert is_int(3) and is_int(np.int64(3)) and not is_int(True) and not is_int(3.0)
    assert is_real(0.5) and is_real(np.float32(0.5)) and is_real(Fraction(1, 3)) and not is_real(False)
    assert not is_real("1")


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: check_int("num_frames", 30, 2, 26), "num_frames must be an integer in [2, 26], got 30."),
        (lambda: check_int("size", 1, 2), "size must be an integer >= 2, got 1."),
        (lambda: check_int("n", True, 0), "n must be an integer >= 0, got True."),
        (lambda: check_int("top_k", 0, 1, optional=True), "top_k must be None or an integer >= 1, got 0."),
        (lambda: check_int("seed", -1, 0, 2**64 - 1), "seed must be an integer in [0, 18446744073709551615], got -1."),
        (
            lambda: check_int("d", 9, 1, 4, why=" (tokens_per_frame)", where=" (from a config)"),
            "d must be an integer in [1, 4] (tokens_per_frame), got 9 (from a config).",
        ),
        (lambda: check_number("fps", 0, 0, 240.0, exclusive_minimum=True), "fps must be a number in (0, 240], got 0."),
        (lambda: check_number("fps", math.nan, 0, 240.0), "fps must be a number in [0, 240], got nan."),
        (lambda: check_number("t", math.inf, 0, exclusive_minimum=True), "t must be a finite number > 0, got inf."),
        (lambda: check_number("g", 0.5, 1, optional=True), "g must be None or a finite number >= 1, got 0.5."),
        (lambda: check_bool("lockstep", 1), "lockstep must be True or False, got 1."),
        (lambda: check_bool("do_sample", "yes", optional=True), "do_sample must be None, True or False, got 'yes'."),
        (lambda: check_choice("mode", "x", ("a", "b")), "mode must be one of ['a', 'b'], got 'x'."),
    ],
)
def test_messages_name_the_argument_the_requirement_and_the_value(call, message):
    with pytest.raises(ValueError) as error:
        call()
    assert str(error.value) == message


def test_valid_values_pass():
    check_int("n", np.int32(4), 1, 4)
    check_int("n", None, 1, optional=True)
    check_number("r", np.float64(1.0), 0, 1)
    check_number("fps", Fraction(30000, 1001), 0, exclusive_minimum=True)
    check_bool("b", np.bool_(True))
    check_choice("c", "a", ["a"])


def test_training_forward_modes_are_modeling_forward_modes():
    # FORWARD_MODES means the model's forms; training offers those of them that run whole sequences.
    assert set(TRAINING_FORWARD_MODES) < set(FORWARD_MODES) and "recurrent" not in TRAINING_FORWARD_MODES
