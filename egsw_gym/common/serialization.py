"""Checkpoints that load without unpickling anything.

Stable-Baselines3 stores every attribute it cannot write as JSON (spaces, schedules, the policy
class, ``policy_kwargs`` holding classes, numpy arrays) as a base64 cloudpickle, and
``BaseAlgorithm.load`` unpickles those entries, so loading a checkpoint from elsewhere can run
arbitrary code. Tensors are already safe (SB3 reads them with ``torch.load(weights_only=True)``).

:class:`SafeSerializationMixin` closes the gap for our algorithms:

- ``save`` adds one more member to the zip, ``egsw_gym_safe_data.json``: a plain-data encoding
  (JSON) of each entry SB3 pickled, for the types a model needs (Gymnasium spaces, SB3 schedules,
  classes named by import path from an allow-list of packages, numpy arrays, episode-info deques,
  Hugging Face configs).
- ``load`` reads SB3's ``data`` member and ours with ``json.loads`` only, rebuilds every pickled
  entry from the plain data and hands the results to SB3 as ``custom_objects``, so SB3 never calls
  ``cloudpickle.loads``. Entries with no safe encoding are dropped (set to ``None``) with a warning;
  the policy class is required and its absence is an error. ``allow_pickle=True`` restores SB3's
  behaviour for files you trust.
- Zips written by plain SB3 (or before the mixin existed) have no plain-data member. Their entries
  are rebuilt from what SB3 writes next to each pickle, still without unpickling: a class from the
  pickle's opcodes when the pickle is nothing but an import-path reference (read with
  ``pickletools``, never executed), a space from its printed attributes (or from the ``env`` passed
  to ``load``), a schedule from its printed form. What cannot be rebuilt that way is dropped with a
  warning, or, for entries a model cannot work without, refused with an error naming
  ``allow_pickle``.
- Tensor files (``*.pth``) are read by SB3 with ``torch.load(weights_only=True)``; one holding any
  other pickled object is refused with :class:`UnsafeCheckpointError`.
- ``save`` also writes ``egsw_gym_rng_state.json``: the Python, NumPy and torch global RNG states as
  plain integers. ``load`` restores them (``restore_rng=True``), so ``learn(..., reset_num_timesteps=False)``
  after a load continues the random stream of the saved run (exact resume, see ``docs/RESUME.md``).
"""

from __future__ import annotations

import base64
import collections
import importlib
import io
import json
import os
import pickle
import pickletools
import random
import re
import warnings
import zipfile
from typing import Any

import numpy as np
from gymnasium import spaces

__all__ = [
    "SafeSerializationMixin",
    "encode_plain",
    "decode_plain",
    "SAFE_DATA_MEMBER",
    "RNG_STATE_MEMBER",
    "UnsafeCheckpointError",
    "get_rng_state",
    "set_rng_state",
]

SAFE_DATA_MEMBER = "egsw_gym_safe_data.json"
RNG_STATE_MEMBER = "egsw_gym_rng_state.json"
#: classes are only ever rebuilt by import path from these packages (importing them runs no file content)
ALLOWED_CLASS_PREFIXES = (
    "egsw_gym.",
    "stable_baselines3.",
    "torch.nn.",
    "torch.optim.",
    "gymnasium.spaces.",
    "transformers.",
)


class UnsafeCheckpointError(ValueError):
    """A checkpoint entry needed for loading cannot be rebuilt without unpickling."""


def _is_class_allowed(path: str) -> bool:
    return any(path.startswith(p) for p in ALLOWED_CLASS_PREFIXES)


def encode_plain(obj: Any) -> Any:
    """Encode ``obj`` as JSON-compatible plain data, or raise ``TypeError`` when there is no safe form."""
    from stable_baselines3.common.utils import ConstantSchedule, FloatSchedule, LinearSchedule

    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, (list, tuple)):
        return {
            "__kind__": "tuple" if isinstance(obj, tuple) else "list",
            "items": [encode_plain(x) for x in obj],
        }
    if isinstance(obj, dict):
        if not all(isinstance(k, str) for k in obj):
            raise TypeError("dict keys must be strings")
        return {"__kind__": "dict", "items": {k: encode_plain(v) for k, v in obj.items()}}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        if obj.dtype == object:
            raise TypeError("object arrays have no plain encoding")
        return {
            "__kind__": "ndarray",
            "dtype": str(obj.dtype),
            "shape": list(obj.shape),
            "data": obj.ravel().tolist(),
        }
    if isinstance(obj, collections.deque):
        return {"__kind__": "deque", "maxlen": obj.maxlen, "items": [encode_plain(x) for x in obj]}
    if isinstance(obj, type):
        path = f"{obj.__module__}.{obj.__qualname__}"
        if not _is_class_allowed(path):
            raise TypeError(f"class {path} is outside the allow-list {ALLOWED_CLASS_PREFIXES}")
        return {"__kind__": "class", "path": path}
    if isinstance(obj, FloatSchedule):
        return {"__kind__": "float_schedule", "inner": encode_plain(obj.value_schedule)}
    if isinstance(obj, ConstantSchedule):
        return {"__kind__": "constant_schedule", "val": float(obj.val)}
    if isinstance(obj, LinearSchedule):
        return {
            "__kind__": "linear_schedule",
            "start": float(obj.start),
            "end": float(obj.end),
            "end_fraction": float(obj.end_fraction),
        }
    if isinstance(obj, spaces.Space):
        return {"__kind__": "space", "space": _encode_space(obj)}
    if type(obj).__module__ == "torch" and type(obj).__name__ == "dtype":
        return {"__kind__": "torch_dtype", "name": str(obj).removeprefix("torch.")}
    if (
        hasattr(obj, "to_dict")
        and type(obj).__module__.startswith("transformers.")
        and hasattr(obj, "model_type")
    ):
        return {
            "__kind__": "hf_config",
            "class": f"{type(obj).__module__}.{type(obj).__qualname__}",
            "config": json.loads(obj.to_json_string(use_diff=False)),
        }
    raise TypeError(f"no plain-data encoding for {type(obj).__module__}.{type(obj).__qualname__}")


def _encode_space(space: spaces.Space) -> dict[str, Any]:
    if isinstance(space, spaces.Box):
        return {
            "type": "Box",
            "low": space.low.tolist(),
            "high": space.high.tolist(),
            "shape": list(space.shape),
            "dtype": str(space.dtype),
        }
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


def _decode_space(d: dict[str, Any]) -> spaces.Space:
    kind = d["type"]
    if kind == "Box":
        dtype = np.dtype(d["dtype"])
        return spaces.Box(
            np.array(d["low"], dtype=dtype), np.array(d["high"], dtype=dtype), tuple(d["shape"]), dtype
        )
    if kind == "Discrete":
        return spaces.Discrete(int(d["n"]), start=int(d["start"]))
    if kind == "MultiDiscrete":
        return spaces.MultiDiscrete(np.array(d["nvec"]), dtype=np.dtype(d["dtype"]))
    if kind == "MultiBinary":
        return spaces.MultiBinary(d["n"])
    if kind == "Dict":
        return spaces.Dict({k: _decode_space(s) for k, s in d["spaces"].items()})
    if kind == "Tuple":
        return spaces.Tuple([_decode_space(s) for s in d["spaces"]])
    raise UnsafeCheckpointError(f"unknown space type {kind!r} in checkpoint")


def _import_class(path: str) -> type:
    if not _is_class_allowed(path):
        raise UnsafeCheckpointError(
            f"checkpoint names class {path!r}, outside the allow-list {ALLOWED_CLASS_PREFIXES}"
        )
    module_name, _, qualname = path.rpartition(".")
    # Nested qualnames (Outer.Inner) are resolved attribute by attribute from the longest importable module.
    parts = path.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        if not isinstance(obj, type):
            raise UnsafeCheckpointError(f"{path!r} in checkpoint is not a class")
        return obj
    raise UnsafeCheckpointError(
        f"cannot import class {path!r} named in checkpoint ({module_name}, {qualname})"
    )


def decode_plain(d: Any) -> Any:
    """Inverse of :func:`encode_plain`. Only builds plain values, allow-listed classes and configs."""
    from stable_baselines3.common.utils import ConstantSchedule, FloatSchedule, LinearSchedule

    if not isinstance(d, dict):
        return d
    kind = d.get("__kind__")
    if kind == "list":
        return [decode_plain(x) for x in d["items"]]
    if kind == "tuple":
        return tuple(decode_plain(x) for x in d["items"])
    if kind == "dict":
        return {k: decode_plain(v) for k, v in d["items"].items()}
    if kind == "ndarray":
        return np.array(d["data"], dtype=np.dtype(d["dtype"])).reshape(d["shape"])
    if kind == "deque":
        return collections.deque((decode_plain(x) for x in d["items"]), maxlen=d["maxlen"])
    if kind == "class":
        return _import_class(d["path"])
    if kind == "float_schedule":
        return FloatSchedule(decode_plain(d["inner"]))
    if kind == "constant_schedule":
        return ConstantSchedule(float(d["val"]))
    if kind == "linear_schedule":
        return LinearSchedule(float(d["start"]), float(d["end"]), float(d["end_fraction"]))
    if kind == "space":
        return _decode_space(d["space"])
    if kind == "torch_dtype":
        import torch

        dtype = getattr(torch, str(d["name"]), None)
        if not isinstance(dtype, torch.dtype):
            raise UnsafeCheckpointError(f"unknown torch dtype {d['name']!r} in checkpoint")
        return dtype
    if kind == "hf_config":
        from transformers import PretrainedConfig

        cls = _import_class(d["class"])
        if not issubclass(cls, PretrainedConfig):
            raise UnsafeCheckpointError(
                f"{d['class']!r} in checkpoint is not a transformers PretrainedConfig"
            )
        return cls.from_dict(d["config"])
    raise UnsafeCheckpointError(f"unknown plain-data kind {kind!r} in checkpoint")


def _read_member(path_or_file, name: str) -> str | None:
    if isinstance(path_or_file, (str, os.PathLike)):
        path = os.fspath(path_or_file)
        if not os.path.exists(path):  # as SB3's load: try the name, then the name + ".zip"
            path += ".zip"
        source: Any = path
    else:
        source = path_or_file
        source.seek(0)
    with zipfile.ZipFile(source) as archive:
        try:
            return archive.read(name).decode("utf-8")
        except KeyError:
            return None
        finally:
            if not isinstance(source, str):
                source.seek(0)


# --------------------------------------------------------------------------- zips without our member
#: opcodes of a pickle that is nothing but a reference to a global (how cloudpickle writes importable classes)
_GLOBAL_REF_OPCODES = {
    "PROTO",
    "FRAME",
    "MEMOIZE",
    "PUT",
    "BINPUT",
    "LONG_BINPUT",
    "SHORT_BINUNICODE",
    "BINUNICODE",
    "UNICODE",
    "STACK_GLOBAL",
    "GLOBAL",
    "STOP",
}


def _class_from_pickle_opcodes(serialized: str) -> type | None:
    """The class a pickle refers to, read from its opcodes without executing it; ``None`` if it does more."""
    try:
        raw = base64.b64decode(serialized.encode(), validate=True)
        ops = list(pickletools.genops(raw))
    except Exception:  # noqa: BLE001 - any malformed payload simply has no safe reading
        return None
    strings: list[str] = []
    path = None
    for op, arg, _ in ops:
        if op.name not in _GLOBAL_REF_OPCODES:
            return None
        if op.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE"):
            strings.append(arg)
        elif op.name == "STACK_GLOBAL":
            if len(strings) < 2 or path is not None:
                return None
            path = f"{strings[-2]}.{strings[-1]}"
        elif op.name == "GLOBAL":
            if path is not None:
                return None
            path = str(arg).replace(" ", ".")
    return _import_class(path) if path is not None else None


_FLOAT = r"[-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?|inf|nan)"
_SCHEDULE_PATTERNS = {
    "constant": re.compile(rf"^ConstantSchedule\(val=({_FLOAT})\)$"),
    "linear": re.compile(rf"^LinearSchedule\(start=({_FLOAT}), end=({_FLOAT}), end_fraction=({_FLOAT})\)$"),
}


def _schedule_from_description(text: Any) -> Any:
    from stable_baselines3.common.utils import ConstantSchedule, LinearSchedule

    if not isinstance(text, str):
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
    if values.size == 1 and size > 1:
        values = np.full(size, values[0])
    if values.size != size:
        return None
    return values.reshape(shape).astype(dtype)


def _space_from_description(desc: dict[str, Any]) -> spaces.Space | None:
    kind = desc.get(":type:", "")
    try:
        shape = tuple(int(x) for x in desc.get("_shape") or ())
        if kind.endswith("spaces.discrete.Discrete'>"):
            return spaces.Discrete(int(desc["n"]), start=int(desc.get("start", 0)))
        if kind.endswith("spaces.box.Box'>"):
            dtype = np.dtype(desc["dtype"])
            low = _array_from_description(desc.get("low"), shape, dtype)
            high = _array_from_description(desc.get("high"), shape, dtype)
            if low is None or high is None:
                return None
            return spaces.Box(low, high, shape, dtype)
        if kind.endswith("spaces.multi_binary.MultiBinary'>"):
            return spaces.MultiBinary(list(shape) if len(shape) > 1 else int(shape[0]))
    except (KeyError, TypeError, ValueError):
        return None
    return None


def _rebuild_from_description(key: str, value: dict[str, Any], env: Any) -> tuple[bool, Any]:
    """Rebuild an SB3-pickled entry from the description SB3 writes next to it. ``(ok, object)``."""
    from stable_baselines3.common.utils import FloatSchedule

    kind = value.get(":type:", "")
    if kind in ("<class 'abc.ABCMeta'>", "<class 'type'>"):
        try:
            cls = _class_from_pickle_opcodes(value.get(":serialized:", ""))
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


# --------------------------------------------------------------------------- RNG state as plain data
def get_rng_state() -> dict[str, Any]:
    """The Python, NumPy (legacy global) and torch (CPU, and CUDA when initialised) RNG states as plain data."""
    import torch

    version, internal, gauss_next = random.getstate()
    kind, key, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": {"version": version, "internal": list(internal), "gauss_next": gauss_next},
        "numpy": {
            "kind": kind,
            "key": key.tolist(),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state().tolist(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["torch_cuda"] = [s.tolist() for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`get_rng_state` returned (validated: integers only, no objects)."""
    import torch

    def ints(values: Any, name: str) -> list[int]:
        if not isinstance(values, list) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in values
        ):
            raise UnsafeCheckpointError(f"RNG state {name!r} in checkpoint is not a list of integers")
        return values

    py = state["python"]
    gauss = py["gauss_next"]
    if gauss is not None and not isinstance(gauss, float):
        raise UnsafeCheckpointError("RNG state 'python.gauss_next' in checkpoint is not a float")
    random.setstate((int(py["version"]), tuple(ints(py["internal"], "python")), gauss))
    npy = state["numpy"]
    np.random.set_state(
        (
            str(npy["kind"]),
            np.array(ints(npy["key"], "numpy"), dtype=np.uint32),
            int(npy["pos"]),
            int(npy["has_gauss"]),
            float(npy["cached_gaussian"]),
        )
    )
    torch.set_rng_state(torch.tensor(ints(state["torch"], "torch"), dtype=torch.uint8))
    if "torch_cuda" in state and torch.cuda.is_available():
        cuda_states = [torch.tensor(ints(s, "torch_cuda"), dtype=torch.uint8) for s in state["torch_cuda"]]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)


# --------------------------------------------------------------------------- the mixin
class SafeSerializationMixin:
    """Mix into an SB3 algorithm (before the SB3 class) to make ``load`` pickle-free. See module docs."""

    #: entries a model cannot work without: refused (not set to None) when they cannot be rebuilt safely
    _safe_required_entries: tuple[str, ...] = ("policy_class", "observation_space", "action_space")
    #: what each class-valued entry must subclass (checked on load, so a file cannot name another class)
    _safe_class_bases: dict[str, str] = {
        "policy_class": "stable_baselines3.common.policies.BasePolicy",
        "rollout_buffer_class": "stable_baselines3.common.buffers.BaseBuffer",
        "replay_buffer_class": "stable_baselines3.common.buffers.BaseBuffer",
    }

    def save(self, path, exclude=None, include=None) -> None:  # noqa: D102 (SB3's docstring applies)
        rng_state = get_rng_state()  # before anything else runs: the state of the training loop
        super().save(path, exclude=exclude, include=include)
        if isinstance(path, (str, os.PathLike)):
            path = os.fspath(path)
            if os.path.splitext(path)[1] == "":  # as SB3: ".zip" only when the name has no suffix
                path += ".zip"
        data = json.loads(_read_member(path, "data"))
        safe: dict[str, Any] = {}
        for key, value in data.items():
            if isinstance(value, dict) and ":serialized:" in value:
                try:
                    safe[key] = encode_plain(getattr(self, key))
                except (TypeError, AttributeError) as err:
                    safe[key] = {"__kind__": "unencodable", "reason": str(err)}
        if not isinstance(path, str):
            path.seek(0, io.SEEK_END)
        with zipfile.ZipFile(path, mode="a") as archive:
            archive.writestr(SAFE_DATA_MEMBER, json.dumps(safe))
            archive.writestr(RNG_STATE_MEMBER, json.dumps(rng_state))

    @classmethod
    def _safe_custom_objects(cls, path, env, custom: dict[str, Any]) -> dict[str, Any]:
        """Every pickled entry of ``data``, rebuilt from plain data (see the module docs)."""
        data_text = _read_member(path, "data")
        if data_text is None:
            raise UnsafeCheckpointError(f"{path!r} has no 'data' member: not an SB3/egsw-gym checkpoint")
        data = json.loads(data_text)
        safe_text = _read_member(path, SAFE_DATA_MEMBER)
        safe = json.loads(safe_text) if safe_text is not None else {}
        dropped = []
        for key, value in data.items():
            if key in custom or not (isinstance(value, dict) and ":serialized:" in value):
                continue
            encoded = safe.get(key)
            if encoded is not None and not (
                isinstance(encoded, dict) and encoded.get("__kind__") == "unencodable"
            ):
                custom[key] = decode_plain(encoded)
                continue
            ok, rebuilt = _rebuild_from_description(key, value, env)
            if ok:
                custom[key] = rebuilt
            elif key in cls._safe_required_entries:
                hint = " or pass the env to load()" if key in ("observation_space", "action_space") else ""
                raise UnsafeCheckpointError(
                    f"checkpoint entry {key!r} can only be restored by unpickling it (the file was probably "
                    f"written by plain Stable-Baselines3 or an older egsw-gym). Pass custom_objects={{{key!r}: ...}}"
                    f"{hint}, or allow_pickle=True if you trust the file (unpickling runs code the file chooses)."
                )
            else:
                custom[key] = None
                dropped.append(key)
        for key, base_path in cls._safe_class_bases.items():
            value = custom.get(key)
            if isinstance(value, type):
                module_name, _, name = base_path.rpartition(".")
                base = getattr(importlib.import_module(module_name), name)
                if not issubclass(value, base):
                    raise UnsafeCheckpointError(
                        f"checkpoint entry {key!r} names {value!r}, not a subclass of {base_path}"
                    )
        if dropped:
            # Run-time state that the next learn() rebuilds (last observation, episode statistics).
            harmless = {
                "_last_obs",
                "_last_episode_starts",
                "_last_original_obs",
                "ep_info_buffer",
                "ep_success_buffer",
            }
            note = " (run-time state that the next learn() rebuilds)" if set(dropped) <= harmless else ""
            warnings.warn(
                f"checkpoint entries {dropped} have no plain-data form and are not unpickled; they are set to "
                f"None{note}. Pass allow_pickle=True to restore them from a file you trust.",
                stacklevel=3,
            )
        return custom

    @classmethod
    def load(
        cls,
        path,
        env=None,
        device="auto",
        custom_objects=None,
        print_system_info=False,
        force_reset=True,
        allow_pickle: bool = False,
        restore_rng: bool = True,
        **kwargs,
    ):
        """Load a model like SB3's ``load``, without unpickling anything unless ``allow_pickle``.

        Parameters
        ----------
        path : str, os.PathLike or file-like
            The zip written by ``save`` (or by plain Stable-Baselines3).
        env, device, custom_objects, print_system_info, force_reset, **kwargs
            As in :meth:`stable_baselines3.common.base_class.BaseAlgorithm.load`. Pass
            ``force_reset=False`` (and an env in the saved state) to keep the saved last observation.
        allow_pickle : bool
            Opt-in for files you trust: let SB3 unpickle entries that have no plain-data form.
            Unpickling runs code the file chooses; never use it on files from elsewhere.
        restore_rng : bool
            Restore the global Python, NumPy and torch RNG states saved with the model, so that
            ``learn(..., reset_num_timesteps=False)`` continues the saved run's random stream.
        """
        custom = dict(custom_objects or {})
        if not allow_pickle:
            custom = cls._safe_custom_objects(path, env, custom)
        try:
            model = super().load(
                path,
                env=env,
                device=device,
                custom_objects=custom,
                print_system_info=print_system_info,
                force_reset=force_reset,
                **kwargs,
            )
        except pickle.UnpicklingError as err:
            raise UnsafeCheckpointError(
                f"a tensor file (*.pth) in {path!r} holds pickled objects other than tensors; "
                "torch.load(weights_only=True) refused to run them. The file is corrupt or malicious."
            ) from err
        rng_text = _read_member(path, RNG_STATE_MEMBER) if restore_rng else None
        if rng_text is not None:
            set_rng_state(json.loads(rng_text))
        return model
