"""Plain-data (JSON) encoding of the checkpoint entries SB3 would pickle, and its strict decoder.

Nothing here executes what a file says. The decoder builds only: JSON values, numpy arrays of numeric
dtypes, deques, Gymnasium spaces, SB3's three schedule classes, tabulated schedules (a Python-callable
schedule stored as its values, :mod:`egsw_gym.common.schedules`), ``torch.dtype`` values, Hugging Face
configs (``PretrainedConfig.from_dict``) and classes. A class is only ever accepted in a *class slot*,
an entry path that declares the base class it must subclass (:data:`CLASS_SLOTS`), and it is resolved
by its exact ``module`` + ``qualname``: the module must be in :data:`ALLOWED_CLASS_MODULES` (checked
before it is imported), every step of the qualname must be a class, and the resolved class's own
``__module__`` / ``__qualname__`` must be the stored ones (so a path cannot walk through a module
attribute to a class defined elsewhere). User classes pass through ``trusted_classes`` (matched by
identity of module and qualname, never imported by name). Sizes are checked before memory is spent.
"""

from __future__ import annotations

import collections
import importlib
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from gymnasium import spaces

from egsw_gym.common import schedules

__all__ = [
    "UnsafeCheckpointError",
    "ALLOWED_CLASS_MODULES",
    "CLASS_SLOTS",
    "SCHEDULE_ENTRIES",
    "PlainDataLimits",
    "DecodeContext",
    "encode_plain",
    "decode_plain",
    "resolve_class",
    "parse_json",
    "ENTRY_VALUE_LIMITS",
    "check_entry_sizes",
]

#: classes are only imported by name from these packages (a module is allowed when it is one of them or
#: inside one); importing them runs no file content. Anything else needs ``trusted_classes``.
ALLOWED_CLASS_MODULES = ("egsw_gym", "stable_baselines3", "torch.nn", "torch.optim", "transformers")

#: entry path -> the base class a class found there must subclass (``module:qualname`` of the base)
CLASS_SLOTS: dict[str, str] = {
    "policy_class": "stable_baselines3.common.policies:BasePolicy",
    "rollout_buffer_class": "stable_baselines3.common.buffers:BaseBuffer",
    "replay_buffer_class": "stable_baselines3.common.buffers:BaseBuffer",
    "policy_kwargs.features_extractor_class": "stable_baselines3.common.torch_layers:BaseFeaturesExtractor",
    "policy_kwargs.activation_fn": "torch.nn:Module",
    "policy_kwargs.optimizer_class": "torch.optim:Optimizer",
}
#: entry path -> the base a Hugging Face config object found there must subclass
CONFIG_SLOTS: dict[str, str] = {"policy_kwargs.model_config": "transformers:PretrainedConfig"}
#: top-level entries that hold schedules (SB3's ConstantSchedule / LinearSchedule / FloatSchedule, or a
#: Python callable, stored as a table of its values)
SCHEDULE_ENTRIES = ("learning_rate", "lr_schedule", "clip_range", "clip_range_vf")
#: top-level entries that hold Gymnasium spaces
SPACE_ENTRIES = ("observation_space", "action_space")

#: top-level entry -> most JSON values (numbers, strings, containers) it may hold, by what it is for:
#: spaces and last observations are as large as an observation (twice, for a Box's bounds); a
#: schedule is at most a table of ``TABLE_POINTS`` values; episode buffers hold a window of episode
#: dicts; ``policy_kwargs`` holds layer widths and a model config. Anything else: ``DEFAULT_ENTRY_VALUES``.
ENTRY_VALUE_LIMITS: dict[str, int] = {
    **{k: 2**21 for k in ("observation_space", "action_space", "_last_obs", "_last_original_obs",
                          "_last_episode_starts")},
    **{k: 4 * schedules.TABLE_POINTS for k in ("learning_rate", "lr_schedule", "clip_range", "clip_range_vf")},
    "ep_info_buffer": 2**20,
    "ep_success_buffer": 2**20,
    "policy_kwargs": 2**16,
}  # fmt: skip
DEFAULT_ENTRY_VALUES = 2**16

_DOTTED = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")
_ARRAY_KINDS = "biuf"  # bool, signed, unsigned, float: nothing that can hold objects
_INNER_SCHEDULE_KINDS = ("constant_schedule", "linear_schedule", schedules.KIND)


class UnsafeCheckpointError(ValueError):
    """A checkpoint cannot be loaded safely: it names code, claims absurd sizes, or is malformed.

    The message names the zip member and the entry path (``policy_kwargs.features_extractor_class``).
    """


@dataclass(frozen=True)
class PlainDataLimits:
    """Bounds applied before any memory is spent on what a file claims.

    Attributes
    ----------
    max_depth : int
        Deepest nesting of JSON containers.
    max_int_digits : int
        Longest integer literal in a JSON member.
    max_array_elements : int
        Most elements of one plain-data array (and of one space's bounds).
    """

    max_depth: int = 64
    max_int_digits: int = 40
    max_array_elements: int = 50_000_000


@dataclass
class DecodeContext:
    """What a decode may use: the member name (for messages), the limits and the user's trusted classes."""

    member: str
    limits: PlainDataLimits = field(default_factory=PlainDataLimits)
    trusted_classes: tuple[type, ...] = ()

    def error(self, path: str, message: str) -> UnsafeCheckpointError:
        return UnsafeCheckpointError(f"checkpoint member {self.member!r}, entry {path!r}: {message}")


# --------------------------------------------------------------------------- JSON with bounds
def parse_json(text: str, member: str, limits: PlainDataLimits | None = None) -> Any:
    """``json.loads`` with bounded integer literals and nesting; errors name the member."""
    limits = limits or PlainDataLimits()

    def bounded_int(literal: str) -> int:
        if len(literal.lstrip("-")) > limits.max_int_digits:
            raise UnsafeCheckpointError(
                f"checkpoint member {member!r}: integer literal of {len(literal)} digits "
                f"(more than {limits.max_int_digits})"
            )
        return int(literal)

    try:
        value = json.loads(text, parse_int=bounded_int)
    except RecursionError:
        raise UnsafeCheckpointError(f"checkpoint member {member!r}: JSON nested too deeply") from None
    except json.JSONDecodeError as err:
        raise UnsafeCheckpointError(
            f"checkpoint member {member!r}: invalid JSON ({err.msg} at line {err.lineno} column {err.colno})"
        ) from err
    _check_depth(value, member, limits.max_depth)
    return value


def check_entry_sizes(data: dict[str, Any], member: str) -> None:
    """Refuse an entry holding more JSON values than :data:`ENTRY_VALUE_LIMITS` allows for it."""
    for key, value in data.items():
        limit = ENTRY_VALUE_LIMITS.get(key, DEFAULT_ENTRY_VALUES)
        count, stack = 0, [value]
        while stack:
            item = stack.pop()
            count += 1
            if isinstance(item, dict):
                stack.extend(item.values())
            elif isinstance(item, list):
                stack.extend(item)
            if count > limit:
                raise UnsafeCheckpointError(
                    f"checkpoint member {member!r}, entry {key!r}: holds more than {limit} values, more than "
                    "this entry ever needs"
                )


def _check_depth(value: Any, member: str, max_depth: int) -> None:
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            if depth > max_depth:
                raise UnsafeCheckpointError(
                    f"checkpoint member {member!r}: JSON nested deeper than {max_depth} levels"
                )
            children = item.values() if isinstance(item, dict) else item
            stack.extend((c, depth + 1) for c in children if isinstance(c, (dict, list)))


# --------------------------------------------------------------------------- classes
def _module_allowed(module: str) -> bool:
    if any(p.startswith("__") and p.endswith("__") for p in module.split(".")):
        return False  # e.g. pkg.__main__: importing it runs a program
    return any(module == p or module.startswith(p + ".") for p in ALLOWED_CLASS_MODULES)


def _base(spec: str) -> type:
    module, _, qualname = spec.partition(":")
    return getattr(importlib.import_module(module), qualname)


def resolve_class(module: Any, qualname: Any, base: type, ctx: DecodeContext, path: str) -> type:
    """The class ``module``.``qualname``, accepted only when it is safe and subclasses ``base``.

    Raises
    ------
    UnsafeCheckpointError
        Naming ``path``, for anything but an allow-listed (or trusted) subclass of ``base``.
    """
    if not (isinstance(module, str) and isinstance(qualname, str)):
        raise ctx.error(path, "a class must be given as strings 'module' and 'qualname'")
    if not (_DOTTED.fullmatch(module) and _DOTTED.fullmatch(qualname)):
        raise ctx.error(path, f"{module!r}:{qualname!r} is not a valid class name")
    name = f"{module}:{qualname}"
    trusted = [c for c in ctx.trusted_classes if c.__module__ == module and c.__qualname__ == qualname]
    if trusted:
        obj: Any = trusted[0]
    else:
        if not _module_allowed(module):
            raise ctx.error(
                path,
                f"class {name} is outside the allow-list {ALLOWED_CLASS_MODULES}; if it is your own class, "
                "pass it to load(..., trusted_classes=[...]) or the entry through custom_objects",
            )
        try:
            obj = importlib.import_module(module)
        except ImportError as err:
            raise ctx.error(path, f"cannot import module {module!r} of class {name}") from err
        for part in qualname.split("."):
            # Own namespaces only (no module __getattr__, no inherited attributes), and only classes.
            obj = vars(obj).get(part)
            if not isinstance(obj, type):
                break
        if not isinstance(obj, type):
            raise ctx.error(path, f"{name} is not a class defined in {module!r}")
        if obj.__module__ != module or obj.__qualname__ != qualname or not _module_allowed(obj.__module__):
            raise ctx.error(
                path,
                f"{name} resolves to {obj.__module__}:{obj.__qualname__}, not a class defined under that name",
            )
    if not isinstance(obj, type) or not issubclass(obj, base):
        raise ctx.error(path, f"{name} is not a subclass of {base.__module__}.{base.__qualname__}")
    return obj


def _class_from_legacy_path(dotted: Any, base: type, ctx: DecodeContext, path: str) -> type:
    """Files of earlier versions stored ``module.qualname`` as one dotted string: try each split."""
    if not isinstance(dotted, str) or not _DOTTED.fullmatch(dotted):
        raise ctx.error(path, f"{dotted!r} is not a valid class path")
    parts = dotted.split(".")
    last: UnsafeCheckpointError | None = None
    for cut in range(len(parts) - 1, 0, -1):
        try:
            return resolve_class(".".join(parts[:cut]), ".".join(parts[cut:]), base, ctx, path)
        except UnsafeCheckpointError as err:
            last = err
    raise last or ctx.error(path, f"{dotted!r} is not a class path")


# --------------------------------------------------------------------------- encode
def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def encode_plain(obj: Any, path: str = "") -> Any:
    """Encode ``obj`` (found at entry ``path``) as JSON-compatible data; ``TypeError`` when it has no safe form."""
    from stable_baselines3.common.utils import ConstantSchedule, FloatSchedule, LinearSchedule

    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if isinstance(obj, float):
        return obj
    if isinstance(obj, (list, tuple)):
        items = [encode_plain(x, _join(path, str(i))) for i, x in enumerate(obj)]
        return {"__kind__": "tuple" if isinstance(obj, tuple) else "list", "items": items}
    if isinstance(obj, dict):
        if not all(isinstance(k, str) for k in obj):
            raise TypeError(f"{path or 'entry'}: dict keys must be strings")
        return {"__kind__": "dict", "items": {k: encode_plain(v, _join(path, k)) for k, v in obj.items()}}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind not in _ARRAY_KINDS:
            raise TypeError(f"{path}: arrays of dtype {obj.dtype} have no plain encoding")
        return {
            "__kind__": "ndarray",
            "dtype": obj.dtype.str,
            "shape": list(obj.shape),
            "data": obj.ravel().tolist(),
        }
    if isinstance(obj, collections.deque):
        return {"__kind__": "deque", "maxlen": obj.maxlen, "items": [encode_plain(x, path) for x in obj]}
    if isinstance(obj, type):
        if path not in CLASS_SLOTS:
            raise TypeError(
                f"{path}: a class outside a class slot ({sorted(CLASS_SLOTS)}) has no plain encoding"
            )
        return {"__kind__": "class", "module": obj.__module__, "qualname": obj.__qualname__}
    if isinstance(obj, FloatSchedule):
        return {"__kind__": "float_schedule", "inner": encode_plain(obj.value_schedule, path)}
    if isinstance(obj, ConstantSchedule):
        return {"__kind__": "constant_schedule", "val": float(obj.val)}
    if isinstance(obj, LinearSchedule):
        return {"__kind__": "linear_schedule", "start": float(obj.start), "end": float(obj.end),
                "end_fraction": float(obj.end_fraction)}  # fmt: skip
    if callable(obj) and path in SCHEDULE_ENTRIES:  # a lambda / closure schedule: its values, not its code
        return schedules.encode_tabulated(obj, path)
    if isinstance(obj, spaces.Space):
        return {"__kind__": "space", "space": _encode_space(obj)}
    if type(obj).__module__ == "torch" and type(obj).__name__ == "dtype":
        return {"__kind__": "torch_dtype", "name": str(obj).removeprefix("torch.")}
    if (
        path in CONFIG_SLOTS
        and hasattr(obj, "to_json_string")
        and type(obj).__module__.startswith("transformers.")
    ):
        return {"__kind__": "hf_config", "module": type(obj).__module__, "qualname": type(obj).__qualname__,
                "config": json.loads(obj.to_json_string(use_diff=False))}  # fmt: skip
    raise TypeError(f"{path}: no plain-data encoding for {type(obj).__module__}.{type(obj).__qualname__}")


def _encode_space(space: spaces.Space) -> dict[str, Any]:
    if isinstance(space, spaces.Box):
        return {"type": "Box", "low": space.low.tolist(), "high": space.high.tolist(),
                "shape": list(space.shape), "dtype": str(space.dtype)}  # fmt: skip
    if isinstance(space, spaces.Discrete):
        return {"type": "Discrete", "n": int(space.n), "start": int(space.start)}
    if isinstance(space, spaces.MultiDiscrete):
        return {"type": "MultiDiscrete", "nvec": space.nvec.tolist(), "dtype": str(space.dtype)}
    if isinstance(space, spaces.MultiBinary):
        return {"type": "MultiBinary", "n": np.asarray(space.n).tolist()}
    if isinstance(space, spaces.Dict):
        return {"type": "Dict", "spaces": {k: _encode_space(s) for k, s in space.spaces.items()}}
    if isinstance(space, spaces.Tuple):
        return {"type": "Tuple", "spaces": [_encode_space(s) for s in space.spaces]}
    raise TypeError(f"no plain-data encoding for space {space}")


# --------------------------------------------------------------------------- decode
def _int(value: Any, ctx: DecodeContext, path: str, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ctx.error(path, f"expected an integer >= {minimum}, got {value!r}")
    return value


def _is_plain_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _float(value: Any, ctx: DecodeContext, path: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ctx.error(path, f"expected a number, got {value!r}")
    return float(value)


def _numeric_array(values: Any, dtype: Any, shape: Any, ctx: DecodeContext, path: str) -> np.ndarray:
    """An array from a flat (or nested) list, with its claimed size checked against the data first."""
    try:
        dt = np.dtype(dtype) if isinstance(dtype, str) and len(dtype) < 16 else None
    except TypeError:
        dt = None
    if dt is None or dt.kind not in _ARRAY_KINDS:
        raise ctx.error(path, f"array dtype {dtype!r} is not a numeric dtype")
    if not isinstance(shape, list) or len(shape) > 32:
        raise ctx.error(path, f"array shape {shape!r} is not a list of at most 32 integers")
    dims = [_int(s, ctx, path) for s in shape]
    claimed = math.prod(dims)  # Python ints: no overflow
    if claimed > ctx.limits.max_array_elements:
        raise ctx.error(path, f"array claims {claimed} elements, more than {ctx.limits.max_array_elements}")
    if not isinstance(values, list):
        values = [values]
    flat = values if all(not isinstance(v, list) for v in values) else None
    if flat is None:  # nested lists (space bounds): count the leaves without building anything
        flat, stack = [], [values]
        while stack:
            item = stack.pop()
            if isinstance(item, list):
                stack.extend(reversed(item))
            else:
                flat.append(item)
    if len(flat) != claimed:
        raise ctx.error(path, f"array claims shape {dims} ({claimed} elements) but holds {len(flat)}")
    if not all(isinstance(v, (int, float)) for v in flat):
        raise ctx.error(path, "array data must be numbers")
    try:
        return np.array(flat, dtype=dt).reshape(dims)
    except (OverflowError, ValueError) as err:
        raise ctx.error(path, f"array data does not fit dtype {dt}: {err}") from err


def _decode_space(d: Any, ctx: DecodeContext, path: str) -> spaces.Space:
    if not isinstance(d, dict):
        raise ctx.error(path, "a space must be an object")
    kind = d.get("type")
    try:
        if kind == "Box":
            shape = d.get("shape")
            low = _numeric_array(d.get("low"), d.get("dtype"), shape, ctx, path + ".low")
            high = _numeric_array(d.get("high"), d.get("dtype"), shape, ctx, path + ".high")
            return spaces.Box(low, high, tuple(low.shape), low.dtype)
        if kind == "Discrete":
            n, start = _int(d.get("n"), ctx, path + ".n", 1), d.get("start", 0)
            if n >= 2**62 or not (_is_plain_int(start) and abs(start) < 2**62):
                raise ctx.error(path, f"Discrete(n={n}, start={start!r}) does not fit int64")
            return spaces.Discrete(n, start=start)
        if kind == "MultiDiscrete":
            nvec = d.get("nvec")
            shape = (
                [len(nvec)] if isinstance(nvec, list) and all(not isinstance(v, list) for v in nvec) else None
            )
            if shape is None:
                raise ctx.error(path, "MultiDiscrete nvec must be a flat list of integers")
            return spaces.MultiDiscrete(
                _numeric_array(nvec, d.get("dtype", "int64"), shape, ctx, path + ".nvec")
            )
        if kind == "MultiBinary":
            n = d.get("n")
            dims = [_int(x, ctx, path + ".n", 1) for x in (n if isinstance(n, list) else [n])]
            if math.prod(dims) > ctx.limits.max_array_elements:
                raise ctx.error(path, f"MultiBinary claims {math.prod(dims)} elements")
            return spaces.MultiBinary(dims if isinstance(n, list) else dims[0])
        if kind == "Dict" and isinstance(d.get("spaces"), dict):
            return spaces.Dict({k: _decode_space(s, ctx, f"{path}.{k}") for k, s in d["spaces"].items()})
        if kind == "Tuple" and isinstance(d.get("spaces"), list):
            return spaces.Tuple([_decode_space(s, ctx, f"{path}.{i}") for i, s in enumerate(d["spaces"])])
    except (TypeError, ValueError, AssertionError, OverflowError) as err:
        if isinstance(err, UnsafeCheckpointError):
            raise
        raise ctx.error(path, f"invalid {kind} space: {err}") from err
    raise ctx.error(path, f"unknown space type {kind!r}")


def _decode_schedule(d: dict[str, Any], kind: str, ctx: DecodeContext, path: str) -> Any:
    from stable_baselines3.common.utils import ConstantSchedule, FloatSchedule, LinearSchedule

    if "." in path:
        raise ctx.error(path, "schedules are only allowed in the top-level schedule entries")
    if kind == "float_schedule":
        inner = d.get("inner")
        if not (isinstance(inner, dict) and inner.get("__kind__") in _INNER_SCHEDULE_KINDS):
            raise ctx.error(path, "float_schedule must wrap a constant, linear or tabulated schedule")
        return FloatSchedule(_decode_schedule(inner, inner["__kind__"], ctx, path))
    if kind == schedules.KIND:
        if path not in SCHEDULE_ENTRIES:
            raise ctx.error(
                path, f"a tabulated schedule is only allowed in the schedule entries {SCHEDULE_ENTRIES}"
            )
        return schedules.decode_tabulated(d, ctx, path)
    if kind == "constant_schedule":
        return ConstantSchedule(_float(d.get("val"), ctx, path))
    return LinearSchedule(
        _float(d.get("start"), ctx, path),
        _float(d.get("end"), ctx, path),
        _float(d.get("end_fraction"), ctx, path),
    )


def decode_plain(d: Any, ctx: DecodeContext, path: str = "") -> Any:
    """Inverse of :func:`encode_plain` for the value at entry ``path``; refuses everything else."""
    if isinstance(d, list):  # plain JSON list (SB3 writes JSON-able entries as they are)
        return [decode_plain(x, ctx, _join(path, str(i))) for i, x in enumerate(d)]
    if not isinstance(d, dict):
        return d
    kind = d.get("__kind__")
    if kind is None:  # a plain JSON object
        return {k: decode_plain(v, ctx, _join(path, k)) for k, v in d.items()}
    if kind in ("list", "tuple") and isinstance(d.get("items"), list):
        items = [decode_plain(x, ctx, _join(path, str(i))) for i, x in enumerate(d["items"])]
        return tuple(items) if kind == "tuple" else items
    if kind == "dict" and isinstance(d.get("items"), dict):
        return {k: decode_plain(v, ctx, _join(path, k)) for k, v in d["items"].items()}
    if kind == "ndarray":
        return _numeric_array(d.get("data"), d.get("dtype"), d.get("shape"), ctx, path)
    if kind == "deque" and isinstance(d.get("items"), list):
        maxlen = d.get("maxlen")
        if maxlen is not None:
            _int(maxlen, ctx, path + ".maxlen", 1)
        return collections.deque((decode_plain(x, ctx, path) for x in d["items"]), maxlen=maxlen)
    if kind == "class":
        if path not in CLASS_SLOTS:
            raise ctx.error(path, "a class is not allowed here (this entry declares no base class)")
        base = _base(CLASS_SLOTS[path])
        if "path" in d:  # written by an earlier egsw-gym
            return _class_from_legacy_path(d["path"], base, ctx, path)
        return resolve_class(d.get("module"), d.get("qualname"), base, ctx, path)
    if kind in ("float_schedule", *_INNER_SCHEDULE_KINDS):
        return _decode_schedule(d, kind, ctx, path)
    if kind == "space":
        if path not in SPACE_ENTRIES:
            raise ctx.error(path, f"spaces are only allowed in {SPACE_ENTRIES}")
        return _decode_space(d.get("space"), ctx, path)
    if kind == "torch_dtype":
        import torch

        dtype = getattr(torch, d["name"], None) if isinstance(d.get("name"), str) else None
        if not isinstance(dtype, torch.dtype):
            raise ctx.error(path, f"unknown torch dtype {d.get('name')!r}")
        return dtype
    if kind == "hf_config":
        return _decode_hf_config(d, ctx, path)
    raise ctx.error(path, f"unknown plain-data kind {kind!r}")


def _decode_hf_config(d: dict[str, Any], ctx: DecodeContext, path: str) -> Any:
    if path not in CONFIG_SLOTS:
        raise ctx.error(path, f"a Hugging Face config is only allowed in {sorted(CONFIG_SLOTS)}")
    base = _base(CONFIG_SLOTS[path])
    if "class" in d:  # written by an earlier egsw-gym
        cls = _class_from_legacy_path(d["class"], base, ctx, path)
    else:
        cls = resolve_class(d.get("module"), d.get("qualname"), base, ctx, path)
    config = d.get("config")
    if not isinstance(config, dict) or _contains_kind(config):
        raise ctx.error(path, "a Hugging Face config must be a plain JSON object")
    try:
        return cls.from_dict(config)
    except (TypeError, ValueError, KeyError, AttributeError) as err:
        raise ctx.error(path, f"invalid {cls.__name__}: {err}") from err


def _contains_kind(value: Any) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if "__kind__" in item:
                return True
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False
