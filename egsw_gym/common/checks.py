"""Argument validators shared by PPO, GRPO and EGSW: one rule per kind of argument, one error style.

Every check raises :class:`ValueError` whose message names the argument, repeats the value it got
and says what is allowed (and, where one is given, how to fix it). The rules are the same
everywhere:

- booleans are never numbers (``True`` is rejected where an int or a float is expected, although
  Python's ``bool`` subclasses ``int``), and numbers are never booleans;
- NumPy scalars count as what they hold (``np.int64`` is an int, ``np.float32`` a float);
- a number is finite unless the check says otherwise (``finite=False``): NaN is always rejected;
- bounds are inclusive unless ``low_open`` / ``high_open`` say otherwise;
- ``allow_none=True`` accepts ``None`` as "off" (the caller documents what ``None`` means).

Schedules (SB3's learning-rate and clip-range callables of the remaining progress, 1 -> 0) are
checked at progress ``1.0`` and ``0.0`` when given, and the algorithms check each value again
where they evaluate it during training (:func:`check_schedule_value`).

Each check returns the value it accepted, unchanged, so a caller may write ``x = check_int(...)``.
The error is :class:`ArgumentError`, a :class:`ValueError` that is also an :class:`AssertionError`:
Stable-Baselines3 ``assert``s some of the same conditions (e.g. ``clip_range_vf > 0``), and code
written for SB3 that expects an ``AssertionError`` keeps working.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np

__all__ = [
    "ArgumentError",
    "check_int",
    "check_number",
    "check_probability",
    "check_bool",
    "check_choice",
    "check_schedule",
    "check_schedule_value",
    "check_learning_rate",
    "check_total_timesteps",
]


class ArgumentError(ValueError, AssertionError):
    """A bad argument: a :class:`ValueError` naming the argument, the value and the fix.

    Also an :class:`AssertionError` because Stable-Baselines3 asserts some of the same conditions,
    so ``except AssertionError`` written against SB3 still catches it. Catch it as ``ValueError``.
    """


def _is_bool(value: Any) -> bool:
    return isinstance(value, (bool, np.bool_))


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not _is_bool(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not _is_bool(value)


def _fix(hint: str) -> str:
    return f"; {hint}" if hint else ""


def _interval(low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
    """Human-readable bound: ``>= 0``, ``> 0``, ``in [0, 1]``, ``in (0, 1]``..."""
    if low is None and high is None:
        return ""
    if high is None:
        return f" {'>' if low_open else '>='} {low:g}"
    if low is None:
        return f" {'<' if high_open else '<='} {high:g}"
    return f" in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"


#: Sanity bounds for the algorithms' rules: past them training never ends or the loss overflows float32.
MAX_EPOCHS = 1_000_000
MAX_COEF = 1e6
#: a learning rate above this moves an Adam parameter by about that much per step: no optimizer here
#: trains with it (1e308 would pass every finiteness check and overflow the first update)
MAX_LEARNING_RATE = 1e3


def apply_rules(rules: dict[str, Any], values: dict[str, Any]) -> None:
    """Check each value that has a rule (``rules[name](name, value)``); names without one are ignored.

    The algorithms keep one rule per constructor argument in such a table, so the same call checks
    a constructor's arguments and the entries a checkpoint brings back.
    """
    for name, value in values.items():
        rule = rules.get(name)
        if rule is not None:
            rule(name, value)


def check_int(
    name: str,
    value: Any,
    *,
    low: int | None = None,
    high: int | None = None,
    allow_none: bool = False,
    hint: str = "",
) -> Any:
    """An integer (Python or NumPy, never a bool) in ``[low, high]``.

    Parameters
    ----------
    name : str
        The argument's name, as the user wrote it (it starts the message).
    value : Any
        The value to check.
    low, high : int or None
        Inclusive bounds; ``None`` for no bound.
    allow_none : bool
        Accept ``None`` (the caller documents what it means).
    hint : str
        How to fix it, appended to the message (e.g. what the argument counts).

    Returns
    -------
    The value, unchanged.

    Raises
    ------
    ValueError
        Naming ``name`` and the value.
    """
    if value is None and allow_none:
        return value
    if not _is_int(value) or (low is not None and value < low) or (high is not None and value > high):
        what = "None or an integer" if allow_none else "an integer"
        raise ArgumentError(
            f"{name} must be {what}{_interval(low, high, False, False)}, got {value!r}{_fix(hint)}"
        )
    return value


def check_number(
    name: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    finite: bool = True,
    allow_none: bool = False,
    hint: str = "",
) -> Any:
    """A real number (int or float, Python or NumPy, never a bool), never NaN, within the bounds.

    Parameters
    ----------
    name : str
        The argument's name.
    value : Any
        The value to check.
    low, high : float or None
        Bounds; ``None`` for no bound.
    low_open, high_open : bool
        Exclude the bound itself (``low_open=True`` with ``low=0`` means ``> 0``).
    finite : bool
        Reject ``inf`` and ``-inf`` (default). NaN is rejected either way.
    allow_none : bool
        Accept ``None``.
    hint : str
        How to fix it, appended to the message.

    Returns
    -------
    The value, unchanged.

    Raises
    ------
    ValueError
        Naming ``name`` and the value.
    """
    if value is None and allow_none:
        return value
    ok = _is_number(value) and not math.isnan(value) and (not finite or math.isfinite(value))
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        kind = "a finite number" if finite else "a number (not NaN)"
        what = f"None or {kind}" if allow_none else kind
        raise ArgumentError(
            f"{name} must be {what}{_interval(low, high, low_open, high_open)}, got {value!r}{_fix(hint)}"
        )
    return value


def check_probability(name: str, value: Any, *, allow_none: bool = False, hint: str = "") -> Any:
    """A finite number in ``[0, 1]`` (a probability, a fraction, a discount factor)."""
    return check_number(name, value, low=0.0, high=1.0, allow_none=allow_none, hint=hint)


def check_bool(name: str, value: Any, *, hint: str = "") -> Any:
    """``True`` or ``False`` (``np.bool_`` too); never ``0``/``1``, strings or ``None``."""
    if not _is_bool(value):
        raise ArgumentError(f"{name} must be True or False, got {value!r}{_fix(hint)}")
    return value


def check_choice(name: str, value: Any, choices: Iterable[Any], *, hint: str = "") -> Any:
    """One of ``choices`` (compared with ``==``; a bool never matches a number choice)."""
    choices = tuple(choices)

    def same(choice: Any) -> bool:
        if _is_bool(value) != _is_bool(choice):  # True is not 1 here
            return False
        try:
            return bool(value == choice)
        except Exception:  # an odd __eq__ (arrays...): not one of the choices
            return False

    ok = any(same(c) for c in choices)
    if not ok:
        allowed = ", ".join(repr(c) for c in choices)
        raise ArgumentError(f"{name} must be one of {allowed}, got {value!r}{_fix(hint)}")
    return value


def check_schedule_value(
    name: str,
    value: Any,
    progress_remaining: float,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> Any:
    """A schedule's value at ``progress_remaining``: a finite number within the bounds.

    Used at construction (progress 1.0 and 0.0) and by the algorithms wherever they evaluate a
    schedule during training, so a schedule that turns NaN, inf or negative halfway through stops
    training with this error instead of corrupting the parameters. The bounds apply as given at
    the start (progress 1.0); later the lower bound is inclusive, because a schedule may decay to it
    (SB3's documented linear schedule takes the learning rate to 0 at progress 0). At a negative
    progress (SB3 evaluates one for the last update when the last rollout overshoots
    ``total_timesteps``) only finiteness is checked, so a schedule that extrapolates slightly below
    its bound there behaves as in SB3.
    """
    if progress_remaining < 0:
        low = high = None
    elif progress_remaining < 1:
        low_open = False
    try:
        return check_number(
            f"{name}({progress_remaining:g})",
            value,
            low=low,
            high=high,
            low_open=low_open,
            high_open=high_open,
        )
    except ValueError as err:
        raise ArgumentError(
            f"{err}: the schedule {name} returned it at progress_remaining={progress_remaining:g} "
            "(1 at the start of training, 0 at the end); fix the schedule so it stays within the bounds"
        ) from None


def check_schedule(
    name: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    allow_none: bool = False,
    hint: str = "",
) -> Any:
    """A constant (a finite number within the bounds) or a schedule, a callable of the remaining progress.

    A callable is evaluated at progress ``1.0`` (start of training), where its value must satisfy
    the same bounds as a constant, and ``0.0`` (end), where it may also equal the lower bound
    (:func:`check_schedule_value`); values in between are checked where the algorithm evaluates
    the schedule.
    """
    if value is None and allow_none:
        return value
    if callable(value) and not _is_number(value):
        for progress in (1.0, 0.0):
            try:
                out = value(progress)
            except Exception as err:
                raise ArgumentError(
                    f"{name} is a schedule but calling it with progress_remaining={progress:g} raised "
                    f"{type(err).__name__}: {err}; a schedule takes one float (1 -> 0) and returns a number"
                ) from err
            check_schedule_value(
                name, out, progress, low=low, high=high, low_open=low_open, high_open=high_open
            )
        return value
    what = "a schedule (callable of the remaining progress) or"
    return check_number(
        name,
        value,
        low=low,
        high=high,
        low_open=low_open,
        high_open=high_open,
        allow_none=allow_none,
        hint=hint or f"pass {what} a constant",
    )


def check_learning_rate(value: Any, name: str = "learning_rate") -> Any:
    """A learning rate: a number in ``(0, MAX_LEARNING_RATE]``, or a schedule (checked at progress 1.0 and 0.0).

    A schedule must start ``> 0`` and stay finite and ``>= 0`` (it may decay to 0, as SB3's
    documented linear schedule does). A non-finite learning rate turns every parameter into NaN at
    the first optimizer step, and a negative one ascends the loss; both are refused here, naming
    the argument.
    """
    return check_schedule(
        name,
        value,
        low=0.0,
        low_open=True,
        high=MAX_LEARNING_RATE,
        hint="pass a finite number > 0 (e.g. 3e-4) or a schedule callable(progress_remaining) -> float >= 0",
    )


def check_total_timesteps(total_timesteps: Any) -> Any:
    """``learn(total_timesteps)``: a number ``>= 0`` (``0`` is a no-op; a float such as ``1e5`` is fine, as in SB3).

    Negative, NaN, infinite, boolean and non-numeric values raise instead of silently training for
    zero steps (or forever).
    """
    return check_number(
        "total_timesteps",
        total_timesteps,
        low=0,
        hint="pass the number of environment steps to train for (e.g. 100_000); "
        "to train until a callback stops it, pass a large finite number",
    )
