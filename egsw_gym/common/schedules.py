"""Python-callable schedules stored as plain data: a table of values over ``progress_remaining``.

A ``lambda`` or closure schedule (``learning_rate=lambda p: p * 3e-4``) cannot be written to a file
without pickling its code. ``save`` stores it instead as its values at :data:`TABLE_POINTS` evenly
spaced progress points in [0, 1] plus its ``__name__``; ``load`` rebuilds a :class:`TabulatedSchedule`
that is exact at those points and linear in between. Only the function itself
(``custom_objects={"learning_rate": fn}``) gives back the values between the points exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from numbers import Real
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from egsw_gym.common.plain_data import DecodeContext

__all__ = [
    "TABLE_POINTS",
    "MAX_NAME_CHARS",
    "TabulatedSchedule",
    "encode_tabulated",
    "decode_tabulated",
    "is_tabulated",
]

#: progress points a callable schedule is stored at: ``i / (TABLE_POINTS - 1)`` for ``i = 0 .. TABLE_POINTS - 1``
TABLE_POINTS = 1001
#: longest ``__name__`` a file may give a tabulated schedule
MAX_NAME_CHARS = 200
_STEPS = TABLE_POINTS - 1
KIND = "tabulated_schedule"


def _finite_float(value: Any) -> float | None:
    """``float(value)`` for a finite real number (not a bool, not a string); ``None`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, Real):
        return None
    out = float(value)
    return out if math.isfinite(out) else None


class TabulatedSchedule:
    """A schedule given by its values at ``TABLE_POINTS`` evenly spaced progress points in [0, 1].

    Calling it with ``progress_remaining`` returns a Python ``float``: the stored value at a grid
    point (``i / 1000``), linear interpolation between grid points, and the end values outside
    [0, 1].

    Parameters
    ----------
    values : sequence of float
        ``values[i]`` is the schedule at ``progress_remaining = i / (TABLE_POINTS - 1)``; exactly
        ``TABLE_POINTS`` finite numbers.
    name : str
        The ``__name__`` of the function it was tabulated from (``"<lambda>"`` for a lambda).

    Raises
    ------
    ValueError
        For a table of the wrong length or with a value that is not a finite number, or a name
        that is not a string of at most ``MAX_NAME_CHARS`` characters.
    """

    def __init__(self, values: Sequence[float], name: str = "<lambda>") -> None:
        if not isinstance(name, str) or len(name) > MAX_NAME_CHARS:
            raise ValueError(f"name must be a str of at most {MAX_NAME_CHARS} characters, got {_short(name)}")
        if not isinstance(values, (list, tuple)) or len(values) != TABLE_POINTS:
            size = len(values) if isinstance(values, (list, tuple)) else type(values).__name__
            raise ValueError(f"values must be a list of exactly {TABLE_POINTS} numbers, got {size}")
        table = [_finite_float(v) for v in values]
        bad = next((i for i, v in enumerate(table) if v is None), None)
        if bad is not None:
            raise ValueError(f"values[{bad}] must be a finite number, got {_short(values[bad])}")
        self.values: tuple[float, ...] = tuple(table)  # type: ignore[arg-type]
        self.__name__ = name

    @classmethod
    def from_callable(cls, fn: Callable[[float], Any]) -> TabulatedSchedule:
        """Tabulate ``fn`` at the grid points; ``ValueError`` when a value is not a finite number."""
        values = []
        for i in range(TABLE_POINTS):
            value = fn(i / _STEPS)
            number = _finite_float(value)
            if number is None:
                raise ValueError(
                    f"returned {_short(value)} at progress_remaining={i / _STEPS}, not a finite number"
                )
            values.append(number)
        name = getattr(fn, "__name__", None)
        name = name if isinstance(name, str) else type(fn).__name__
        return cls(values, name[:MAX_NAME_CHARS])

    def __call__(self, progress_remaining: float) -> float:
        p = float(progress_remaining)
        if math.isnan(p):
            raise ValueError(f"{self.__name__}: progress_remaining must be a number, got nan")
        if p <= 0.0:
            return self.values[0]
        if p >= 1.0:
            return self.values[-1]
        x = p * _STEPS
        nearest = round(x)
        if nearest / _STEPS == p:  # a grid point (as ``i / 1000`` rounds it): the stored value, exactly
            return self.values[nearest]
        i = min(int(x), _STEPS - 1)
        frac = x - i
        return self.values[i] + frac * (self.values[i + 1] - self.values[i])

    def __repr__(self) -> str:
        return (
            f"TabulatedSchedule(name={self.__name__!r}, {TABLE_POINTS} points, "
            f"{self.values[-1]:g} at progress 1 .. {self.values[0]:g} at progress 0)"
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TabulatedSchedule):
            return NotImplemented
        return self.values == other.values and self.__name__ == other.__name__

    __hash__ = None  # type: ignore[assignment]  # mutable name, compared by value


def encode_tabulated(fn: Callable[[float], Any], path: str) -> dict[str, Any]:
    """The plain-data form of a callable schedule; ``TypeError`` (no plain form) when it cannot be tabulated."""
    try:
        schedule = fn if isinstance(fn, TabulatedSchedule) else TabulatedSchedule.from_callable(fn)
    except Exception as err:  # noqa: BLE001 - any failure of user code means: no plain form
        raise TypeError(
            f"{path}: the callable schedule cannot be tabulated ({type(err).__name__}: {err})"
        ) from err
    return {"__kind__": KIND, "name": schedule.__name__, "values": list(schedule.values)}


def decode_tabulated(d: dict[str, Any], ctx: DecodeContext, path: str) -> TabulatedSchedule:
    """Rebuild a :class:`TabulatedSchedule`, refusing anything but a valid table (errors name ``path``)."""
    values, name = d.get("values"), d.get("name")
    if not isinstance(values, list) or len(values) != TABLE_POINTS:
        size = len(values) if isinstance(values, list) else type(values).__name__
        raise ctx.error(path, f"a tabulated schedule must hold exactly {TABLE_POINTS} values, got {size}")
    try:
        return TabulatedSchedule(values, name)
    except ValueError as err:
        raise ctx.error(path, f"invalid tabulated schedule: {err}") from err


def is_tabulated(value: Any) -> bool:
    """Whether ``value`` is a :class:`TabulatedSchedule`, or SB3's ``FloatSchedule`` wrapping one."""
    return isinstance(value, TabulatedSchedule) or isinstance(
        getattr(value, "value_schedule", None), TabulatedSchedule
    )


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
