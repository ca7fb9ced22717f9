"""Rebuilding the entries of zips written by plain Stable-Baselines3, without unpickling anything.

Such zips have no plain-data member: every entry SB3 could not write as JSON is a base64 cloudpickle
plus a printed description. These helpers read what can be read safely: a class from the pickle's
opcodes when the pickle is nothing but an import-path reference (read with ``pickletools``, never
executed, then resolved under the same class-slot rules as the plain-data member), a space from its
printed attributes (or from the ``env`` passed to ``load``), a schedule from its printed form.
"""

from __future__ import annotations

import base64
import pickletools
import re
from typing import Any

import numpy as np
from gymnasium import spaces

from egsw_gym.common.plain_data import CLASS_SLOTS, DecodeContext, UnsafeCheckpointError, decode_plain

__all__ = ["rebuild_from_description"]

#: opcodes of a pickle that is nothing but a reference to a global (how cloudpickle writes importable classes)
_GLOBAL_REF_OPCODES = {
    "PROTO", "FRAME", "MEMOIZE", "PUT", "BINPUT", "LONG_BINPUT", "SHORT_BINUNICODE", "BINUNICODE",
    "UNICODE", "STACK_GLOBAL", "GLOBAL", "STOP",
}  # fmt: skip
_MAX_PICKLE_CHARS = 4096  # a bare global reference is a few hundred bytes


def _class_from_pickle_opcodes(serialized: Any, key: str, ctx: DecodeContext) -> type | None:
    """The class a pickle refers to, read from its opcodes without executing it; ``None`` if it does more."""
    if not isinstance(serialized, str) or len(serialized) > _MAX_PICKLE_CHARS:
        return None
    try:
        raw = base64.b64decode(serialized.encode(), validate=True)
        ops = list(pickletools.genops(raw))
    except Exception:  # noqa: BLE001 - any malformed payload simply has no safe reading
        return None
    strings: list[str] = []
    module = qualname = None
    for op, arg, _ in ops:
        if op.name not in _GLOBAL_REF_OPCODES:
            return None
        if op.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE"):
            strings.append(arg)
        elif op.name in ("STACK_GLOBAL", "GLOBAL"):
            if module is not None or (op.name == "STACK_GLOBAL" and len(strings) < 2):
                return None
            module, qualname = (
                (strings[-2], strings[-1]) if op.name == "STACK_GLOBAL" else str(arg).split(" ", 1)
            )
    if module is None:
        return None
    return decode_plain({"__kind__": "class", "module": module, "qualname": qualname}, ctx, key)


_FLOAT = r"[-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?|inf|nan)"
_SCHEDULE_PATTERNS = {
    "constant": re.compile(rf"^ConstantSchedule\(val=({_FLOAT})\)$"),
    "linear": re.compile(rf"^LinearSchedule\(start=({_FLOAT}), end=({_FLOAT}), end_fraction=({_FLOAT})\)$"),
}


def _schedule_from_description(text: Any) -> Any:
    from stable_baselines3.common.utils import ConstantSchedule, LinearSchedule

    if not isinstance(text, str) or len(text) > 1000:
        return None
    if m := _SCHEDULE_PATTERNS["constant"].match(text):
        return ConstantSchedule(float(m.group(1)))
    if m := _SCHEDULE_PATTERNS["linear"].match(text):
        return LinearSchedule(float(m.group(1)), float(m.group(2)), float(m.group(3)))
    return None


def _array_from_description(text: Any, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray | None:
    """Parse numpy's printed form of an array (``'[-4.8 -inf 0.42]'``); ``None`` if summarised or malformed."""
    if not isinstance(text, str) or "..." in text or len(text) > 1_000_000:
        return None
    tokens = text.replace("[", " ").replace("]", " ").replace(",", " ").split()
    try:
        values = np.array([float(t) for t in tokens], dtype=np.float64)
    except ValueError:
        return None
    size = int(np.prod(shape)) if shape else 1
    if values.size == 1 and size > 1 and size <= 10_000_000:
        values = np.full(size, values[0])
    if values.size != size:
        return None
    return values.reshape(shape).astype(dtype)


def _space_from_description(desc: dict[str, Any]) -> spaces.Space | None:
    kind = desc.get(":type:", "")
    if not isinstance(kind, str):
        return None
    try:
        shape = tuple(int(x) for x in desc.get("_shape") or ())
        if len(shape) > 32 or any(s < 0 for s in shape):
            return None
        if kind.endswith("spaces.discrete.Discrete'>"):
            return spaces.Discrete(int(desc["n"]), start=int(desc.get("start", 0)))
        if kind.endswith("spaces.box.Box'>"):
            dtype = np.dtype(str(desc["dtype"]))
            if dtype.kind not in "biuf":
                return None
            low = _array_from_description(desc.get("low"), shape, dtype)
            high = _array_from_description(desc.get("high"), shape, dtype)
            if low is None or high is None:
                return None
            return spaces.Box(low, high, shape, dtype)
        if (
            kind.endswith("spaces.multi_binary.MultiBinary'>")
            and 0 < len(shape)
            and int(np.prod(shape)) < 10**7
        ):
            return spaces.MultiBinary(list(shape) if len(shape) > 1 else int(shape[0]))
    except (KeyError, TypeError, ValueError, OverflowError, AssertionError):
        return None
    return None


def rebuild_from_description(
    key: str, value: dict[str, Any], env: Any, ctx: DecodeContext
) -> tuple[bool, Any]:
    """Rebuild an SB3-pickled entry from the description SB3 writes next to it. ``(ok, object)``."""
    from stable_baselines3.common.utils import FloatSchedule

    kind = value.get(":type:", "")
    if not isinstance(kind, str):
        return False, None
    if kind in ("<class 'abc.ABCMeta'>", "<class 'type'>"):
        if key not in CLASS_SLOTS:
            return False, None
        try:
            cls = _class_from_pickle_opcodes(value.get(":serialized:"), key, ctx)
        except UnsafeCheckpointError:
            return False, None
        return cls is not None, cls
    if kind.endswith("FloatSchedule'>"):
        inner = _schedule_from_description(value.get("value_schedule"))
        return inner is not None, FloatSchedule(inner) if inner is not None else None
    if kind.endswith("ConstantSchedule'>") or kind.endswith("LinearSchedule'>"):
        name = kind.rsplit(".", 1)[-1].rstrip("'>")
        fields = ", ".join(f"{k}={value.get(k)}" for k in ("val",) if k in value) or ", ".join(
            f"{k}={value.get(k)}" for k in ("start", "end", "end_fraction")
        )
        schedule = _schedule_from_description(f"{name}({fields})")
        return schedule is not None, schedule
    if key in ("observation_space", "action_space"):
        space = _space_from_description(value)
        if space is None and env is not None:
            space = getattr(env, key, None)
        return space is not None, space
    return False, None
