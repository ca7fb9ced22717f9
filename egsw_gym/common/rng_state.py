"""The global Python, NumPy and torch RNG states as plain integers (saved next to a model for exact resume)."""

from __future__ import annotations

import random
from typing import Any

import numpy as np

from egsw_gym.common.plain_data import UnsafeCheckpointError

__all__ = ["RNG_STATE_MEMBER", "get_rng_state", "set_rng_state"]

RNG_STATE_MEMBER = "egsw_gym_rng_state.json"


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


def _ints(values: Any, name: str, high: int) -> list[int]:
    if not isinstance(values, list) or not all(
        isinstance(v, int) and not isinstance(v, bool) and 0 <= v < high for v in values
    ):
        raise UnsafeCheckpointError(
            f"checkpoint member {RNG_STATE_MEMBER!r}, entry {name!r}: not a list of integers in [0, {high})"
        )
    return values


def set_rng_state(state: Any) -> None:
    """Restore what :func:`get_rng_state` returned (validated: integers only, no objects).

    Raises
    ------
    UnsafeCheckpointError
        Naming the entry, for anything that is not a state :func:`get_rng_state` could have written.
    """
    import torch

    entry = "python"
    try:
        py = state["python"]
        gauss = py["gauss_next"]
        if gauss is not None and not isinstance(gauss, float):
            raise TypeError("gauss_next is not a float")
        internal = tuple(_ints(py["internal"], "python.internal", 2**32))
        entry = "numpy"
        npy = state["numpy"]
        numpy_state = (
            str(npy["kind"]),
            np.array(_ints(npy["key"], "numpy.key", 2**32), dtype=np.uint32),
            int(npy["pos"]),
            int(npy["has_gauss"]),
            float(npy["cached_gaussian"]),
        )
        entry = "torch"
        torch_state = torch.tensor(_ints(state["torch"], "torch", 256), dtype=torch.uint8)
        cuda = None
        if "torch_cuda" in state and torch.cuda.is_available():
            entry = "torch_cuda"
            cuda = [torch.tensor(_ints(s, "torch_cuda", 256), dtype=torch.uint8) for s in state["torch_cuda"]]
        # Everything validated: now set (a failure below leaves the earlier streams restored, never garbage).
        entry = "python"
        random.setstate((int(py["version"]), internal, gauss))
        entry = "numpy"
        np.random.set_state(numpy_state)
        entry = "torch"
        torch.set_rng_state(torch_state)
        if cuda is not None and len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
    except UnsafeCheckpointError:
        raise
    except (KeyError, TypeError, ValueError, OverflowError, RuntimeError, IndexError) as err:
        raise UnsafeCheckpointError(
            f"checkpoint member {RNG_STATE_MEMBER!r}, entry {entry!r}: not a valid RNG state ({err})"
        ) from err
