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
"""

from __future__ import annotations

import collections
import importlib
import io
import json
import os
import warnings
import zipfile
from typing import Any

import numpy as np
from gymnasium import spaces

__all__ = ["SafeSerializationMixin", "encode_plain", "decode_plain", "SAFE_DATA_MEMBER", "UnsafeCheckpointError"]

SAFE_DATA_MEMBER = "egsw_gym_safe_data.json"
#: classes are only ever rebuilt by import path from these packages (importing them runs no file content)
ALLOWED_CLASS_PREFIXES = ("egsw_gym.", "stable_baselines3.", "torch.nn.", "torch.optim.", "gymnasium.spaces.",
                          "transformers.")


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
        return {"__kind__": "tuple" if isinstance(obj, tuple) else "list", "items": [encode_plain(x) for x in obj]}
    if isinstance(obj, dict):
        if not all(isinstance(k, str) for k in obj):
            raise TypeError("dict keys must be strings")
        return {"__kind__": "dict", "items": {k: encode_plain(v) for k, v in obj.items()}}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        if obj.dtype == object:
            raise TypeError("object arrays have no plain encoding")
        return {"__kind__": "ndarray", "dtype": str(obj.dtype), "shape": list(obj.shape), "data": obj.ravel().tolist()}
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
        return {"__kind__": "linear_schedule", "start": float(obj.start), "end": float(obj.end),
                "end_fraction": float(obj.end_fraction)}
    if isinstance(obj, spaces.Space):
        return {"__kind__": "space", "space": _encode_space(obj)}
    if hasattr(obj, "to_dict") and type(obj).__module__.startswith("transformers.") and hasattr(obj, "model_type"):
        return {"__kind__": "hf_config", "class": f"{type(obj).__module__}.{type(obj).__qualname__}",
                "config": json.loads(obj.to_json_string(use_diff=False))}
    raise TypeError(f"no plain-data encoding for {type(obj).__module__}.{type(obj).__qualname__}")


def _encode_space(space: spaces.Space) -> dict[str, Any]:
    if isinstance(space, spaces.Box):
        return {"type": "Box", "low": space.low.tolist(), "high": space.high.tolist(), "shape": list(space.shape),
                "dtype": str(space.dtype)}
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
        return spaces.Box(np.array(d["low"], dtype=dtype), np.array(d["high"], dtype=dtype), tuple(d["shape"]), dtype)
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
        raise UnsafeCheckpointError(f"checkpoint names class {path!r}, outside the allow-list {ALLOWED_CLASS_PREFIXES}")
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
    raise UnsafeCheckpointError(f"cannot import class {path!r} named in checkpoint ({module_name}, {qualname})")


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
    if kind == "hf_config":
        cls = _import_class(d["class"])
        return cls.from_dict(d["config"])
    raise UnsafeCheckpointError(f"unknown plain-data kind {kind!r} in checkpoint")


def _read_member(path_or_file, name: str) -> str | None:
    if isinstance(path_or_file, (str, os.PathLike)):
        path = os.fspath(path_or_file)
        if not path.endswith(".zip") and not os.path.exists(path):
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


class SafeSerializationMixin:
    """Mix into an SB3 algorithm (before the SB3 class) to make ``load`` pickle-free. See module docs."""

    def save(self, path, exclude=None, include=None) -> None:  # noqa: D102 (SB3's docstring applies)
        super().save(path, exclude=exclude, include=include)
        if isinstance(path, (str, os.PathLike)):
            path = os.fspath(path)
            if not path.endswith(".zip"):
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

    @classmethod
    def load(cls, path, env=None, device="auto", custom_objects=None, print_system_info=False,
             force_reset=True, allow_pickle: bool = False, **kwargs):
        """Load a model like SB3's ``load``, without unpickling anything unless ``allow_pickle``.

        Parameters
        ----------
        path : str, os.PathLike or file-like
            The zip written by ``save``.
        env, device, custom_objects, print_system_info, force_reset, **kwargs
            As in :meth:`stable_baselines3.common.base_class.BaseAlgorithm.load`.
        allow_pickle : bool
            Let SB3 unpickle entries that have no plain-data form. Only for files you trust:
            unpickling runs code the file chooses.
        """
        custom = dict(custom_objects or {})
        if not allow_pickle:
            data_text = _read_member(path, "data")
            if data_text is None:
                raise UnsafeCheckpointError(f"{path!r} has no 'data' member: not an SB3/egsw-gym checkpoint")
            data = json.loads(data_text)
            safe_text = _read_member(path, SAFE_DATA_MEMBER)
            safe = json.loads(safe_text) if safe_text is not None else {}
            for key, value in data.items():
                if key in custom or not (isinstance(value, dict) and ":serialized:" in value):
                    continue
                encoded = safe.get(key)
                if encoded is None or (isinstance(encoded, dict) and encoded.get("__kind__") == "unencodable"):
                    if key in ("policy_class", "observation_space", "action_space"):
                        raise UnsafeCheckpointError(
                            f"checkpoint entry {key!r} can only be restored by unpickling it. Pass "
                            f"custom_objects={{{key!r}: ...}}, or allow_pickle=True if you trust the file."
                        )
                    warnings.warn(f"checkpoint entry {key!r} has no plain-data form and is not unpickled; "
                                  "it is set to None (pass allow_pickle=True to restore it from a trusted file)",
                                  stacklevel=2)
                    custom[key] = None
                else:
                    custom[key] = decode_plain(encoded)
        return super().load(path, env=env, device=device, custom_objects=custom,
                            print_system_info=print_system_info, force_reset=force_reset, **kwargs)
