"""The shared argument validators (egsw_gym.common.checks): one rule set for PPO, GRPO and EGSW."""

from __future__ import annotations

import math

import numpy as np
import pytest

from egsw_gym.common.checks import (
    ArgumentError,
    check_bool,
    check_choice,
    check_int,
    check_learning_rate,
    check_number,
    check_probability,
    check_schedule,
    check_schedule_value,
    check_total_timesteps,
)


@pytest.mark.parametrize("value", [0, 3, np.int64(7), np.int32(1)])
def test_int_accepts_python_and_numpy_ints(value):
    assert check_int("n", value, low=0) is value


@pytest.mark.parametrize("value", [True, False, np.bool_(True), 2.0, "3", None, 1.5])
def test_int_rejects_bools_floats_strings(value):
    with pytest.raises(ValueError, match=r"^n_steps must be an integer >= 1, got .*; steps per env"):
        check_int("n_steps", value, low=1, hint="steps per env per rollout")


def test_int_bounds_and_none():
    assert check_int("k", 5, low=1, high=5) == 5
    with pytest.raises(ValueError, match=r"k must be an integer in \[1, 5\], got 6"):
        check_int("k", 6, low=1, high=5)
    with pytest.raises(ValueError, match=r"k must be an integer >= 1, got 0"):
        check_int("k", 0, low=1)
    assert check_int("cap", None, low=1, allow_none=True) is None
    with pytest.raises(ValueError, match="cap must be None or an integer >= 1"):
        check_int("cap", 0, low=1, allow_none=True)


@pytest.mark.parametrize(
    "value", [True, np.bool_(False), math.nan, math.inf, -math.inf, np.float32("nan"), "0.1", None]
)
def test_number_rejects_bools_and_non_finite(value):
    with pytest.raises(ValueError, match=r"^ent_coef must be a finite number, got "):
        check_number("ent_coef", value)


def test_number_interval_ends():
    assert check_number("x", 0.0, low=0.0) == 0.0
    with pytest.raises(ValueError, match=r"x must be a finite number > 0, got 0.0"):
        check_number("x", 0.0, low=0.0, low_open=True)
    with pytest.raises(ValueError, match=r"gamma must be a finite number in \(0, 1\], got 0"):
        check_number("gamma", 0, low=0, high=1, low_open=True)
    assert check_number("gamma", 1, low=0, high=1, low_open=True) == 1
    with pytest.raises(ValueError, match=r"clip must be a finite number in \(0, 1\), got 1"):
        check_number("clip", 1, low=0, high=1, low_open=True, high_open=True)
    assert check_number("x", np.float32(0.5), high=1) == np.float32(0.5)
    # finite=False lets inf through (never NaN)
    assert check_number("cap", math.inf, low=1, finite=False) == math.inf
    with pytest.raises(ValueError, match=r"cap must be a number \(not NaN\) >= 1, got nan"):
        check_number("cap", math.nan, low=1, finite=False)
    assert check_number("t", None, allow_none=True) is None


def test_probability():
    assert check_probability("p", 0) == 0 and check_probability("p", 1.0) == 1.0
    for bad in (-0.1, 1.01, True, math.nan):
        with pytest.raises(ValueError, match=r"p must be a finite number in \[0, 1\]"):
            check_probability("p", bad)


def test_bool_and_choice():
    assert check_bool("flag", True) is True
    assert check_bool("flag", np.bool_(False)) == np.False_
    for bad in (0, 1, "True", None):
        with pytest.raises(ValueError, match=r"flag must be True or False, got"):
            check_bool("flag", bad)
    assert check_choice("mode", "step", ("step", "trajectory")) == "step"
    with pytest.raises(ValueError, match=r"mode must be one of 'step', 'trajectory', got 'Step'"):
        check_choice("mode", "Step", ("step", "trajectory"))
    # True == 1 in Python, but a bool is not the choice 1 (nor 1 the choice True)
    with pytest.raises(ValueError, match="n must be one of 1, 2, got True"):
        check_choice("n", True, (1, 2))
    with pytest.raises(ValueError, match="b must be one of True, None, got 1"):
        check_choice("b", 1, (True, None))
    with pytest.raises(ValueError, match="must be one of"):
        check_choice("m", np.zeros(3), ("a",))  # ambiguous truth value is a rejection, not a crash
    with pytest.raises(ValueError, match="must be one of"):
        check_choice("m", [1], ("a",))  # unhashable


@pytest.mark.parametrize("value", [math.inf, math.nan, 0.0, -1e-3, True, "3e-4", None, 1e308, 1e3 + 1])
def test_learning_rate_constant_rejected(value):
    with pytest.raises(
        ValueError, match=r"^learning_rate must be a finite number in \(0, 1000\], got .*schedule"
    ):
        check_learning_rate(value)
    assert check_learning_rate(1e3) == 1e3  # MAX_LEARNING_RATE itself is allowed


def test_learning_rate_schedule_checked_at_both_ends():
    assert check_learning_rate(3e-4) == 3e-4
    linear = lambda p: 3e-4 * p  # noqa: E731 (SB3 docs: a linear schedule decays to 0)
    assert check_learning_rate(linear) is linear
    with pytest.raises(
        ValueError,
        match=r"learning_rate\(0\) must be a finite number in \[0, 1000\], got -1e-05.*progress_remaining=0",
    ):
        check_learning_rate(lambda p: 3e-4 * p - 1e-5)  # negative at the end of training
    with pytest.raises(
        ValueError, match=r"learning_rate\(1\) must be a finite number in \(0, 1000\], got 0.0"
    ):
        check_learning_rate(lambda p: 3e-4 * (1 - p))  # starts at 0: no training at all
    with pytest.raises(ValueError, match=r"learning_rate\(1\) .* got inf.*progress_remaining=1"):
        check_learning_rate(lambda p: math.inf)
    with pytest.raises(ValueError, match=r"learning_rate\(1\) .* got 1e\+308"):
        check_learning_rate(lambda p: 1e308)  # finite, but no optimizer trains with it
    with pytest.raises(
        ValueError, match=r"learning_rate is a schedule but calling it .* raised ZeroDivisionError"
    ):
        check_learning_rate(lambda p: 1 / (1 - p))
    with pytest.raises(ValueError, match=r"lr\(1\) must be a finite number in \(0, 1000\], got 'x'"):
        check_learning_rate(lambda p: "x", name="lr")


def test_schedule_value_during_training():
    assert check_schedule_value("clip_range", 0.1, 0.5, low=0, low_open=True) == 0.1
    with pytest.raises(
        ValueError,
        match=r"clip_range\(0.25\) must be a finite number >= 0, got nan.*progress_remaining=0.25",
    ):
        check_schedule_value("clip_range", math.nan, 0.25, low=0, low_open=True)
    # the lower bound itself is reachable after the start (decay to 0), never below it
    assert check_schedule_value("learning_rate", 0.0, 0.0, low=0, low_open=True) == 0.0
    with pytest.raises(ValueError, match=r"learning_rate\(0.5\) must be a finite number >= 0, got -1"):
        check_schedule_value("learning_rate", -1, 0.5, low=0, low_open=True)
    # SB3 evaluates a negative progress when the last rollout overshoots: only finiteness is checked
    assert check_schedule_value("learning_rate", -1e-6, -0.02, low=0, low_open=True) == -1e-6
    with pytest.raises(ValueError, match=r"learning_rate\(-0.02\) must be a finite number, got inf"):
        check_schedule_value("learning_rate", math.inf, -0.02, low=0, low_open=True)


def test_errors_are_value_errors_that_sb3_assert_handlers_also_catch():
    with pytest.raises(ArgumentError) as err:
        check_number("clip_range_vf", -0.2, low=0, low_open=True)
    assert isinstance(err.value, ValueError) and isinstance(err.value, AssertionError)


def test_schedule_constant_or_none():
    assert check_schedule("clip_range_vf", None, low=0, low_open=True, allow_none=True) is None
    assert check_schedule("clip_range", 0.2, low=0, low_open=True) == 0.2
    with pytest.raises(
        ValueError, match=r"clip_range must be a finite number > 0, got -0.2; pass a schedule"
    ):
        check_schedule("clip_range", -0.2, low=0, low_open=True)


@pytest.mark.parametrize("value", [0, 100, 1e5, np.int64(64), 12.5])
def test_total_timesteps_accepts_sb3_values(value):
    assert check_total_timesteps(value) == value


@pytest.mark.parametrize("value", [-100, -1e-9, math.nan, math.inf, True, "100", None])
def test_total_timesteps_rejects(value):
    with pytest.raises(
        ValueError, match=r"^total_timesteps must be a finite number >= 0, got .*number of environment steps"
    ):
        check_total_timesteps(value)
