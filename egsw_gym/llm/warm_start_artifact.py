"""The warm start as a saved artifact: one safetensors file per (task, seed, warm-start config).

Both arms of a comparison (GRPO and GRPO+EGSW of one seed) must start RL from the same policy.
Training the warm start in each run gives that only where floating point is reproduced exactly
(same machine, same code); :func:`cached_warm_start` trains it once, saves the weights under
``<cache_dir>/<key>.safetensors`` (``key``: :func:`warm_start_key`, a hash of the config) and
loads that file into every run that asks for the same config, so the arms start from
byte-identical weights on any machine that has the file. A file lock makes two runs started at
the same time train it once.

The file's metadata holds the config (checked on load: a file under a key must be that key's),
the warm start's summary and the code version that made it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["warm_start_key", "cached_warm_start", "weights_sha256", "isolated_rng"]


def _canonical(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), default=float)


def warm_start_key(config: dict[str, Any]) -> str:
    """First 16 hex digits of the SHA-256 of ``config`` as canonical JSON (sorted keys)."""
    if not isinstance(config, dict):
        raise TypeError(f"config must be a dict of plain data, got {type(config).__name__}")
    return hashlib.sha256(_canonical(config).encode("utf-8")).hexdigest()[:16]


def weights_sha256(model: torch.nn.Module) -> str:
    """SHA-256 over the model's state dict (names in sorted order, then each tensor's raw bytes)."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode("utf-8"))
        h.update(str(t.dtype).encode("utf-8"))
        h.update(t.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


@contextlib.contextmanager
def isolated_rng() -> Iterator[None]:
    """Restore torch's, NumPy's and Python's global generators after the block.

    What follows a warm start then draws the same random numbers whether the warm start was
    trained in this process or loaded from a file.
    """
    np_state, py_state = np.random.get_state(), random.getstate()
    with torch.random.fork_rng(devices=[]):
        try:
            yield
        finally:
            np.random.set_state(np_state)
            random.setstate(py_state)


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock (two runs may then both train the same file)
        yield
        return
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _module(policy_or_model: Any) -> torch.nn.Module:
    return policy_or_model.model if hasattr(policy_or_model, "evaluate_sequences") else policy_or_model


def _save(model: torch.nn.Module, path: Path, metadata: dict[str, str]) -> None:
    from safetensors.torch import save_model

    tmp = path.with_name(path.name + ".tmp")
    save_model(model, str(tmp), metadata=metadata)
    os.replace(tmp, path)  # atomic: a reader sees no file or the whole file


def _load(model: torch.nn.Module, path: Path, config: dict[str, Any]) -> dict[str, Any]:
    from safetensors import safe_open
    from safetensors.torch import load_model

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if meta.get("config") != _canonical(config):
        raise ValueError(
            f"{path} holds a warm start of another config than the one its name keys; "
            "delete the file (it is retrained on the next run)"
        )
    missing, unexpected = load_model(model, str(path), strict=True)
    if missing or unexpected:  # strict=True raises first; kept for older safetensors
        raise ValueError(f"{path} does not fit the model: missing {missing}, unexpected {unexpected}")
    return json.loads(meta.get("summary", "{}"))


def cached_warm_start(
    policy_or_model: Any,
    cache_dir: str | os.PathLike,
    config: dict[str, Any],
    train: Callable[[], dict[str, Any]],
    code_version: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Load the warm start of ``config`` from ``cache_dir``, training and saving it first if absent.

    Parameters
    ----------
    policy_or_model : LMPolicy or torch.nn.Module
        Its (causal LM) module receives the weights.
    cache_dir : path
        Directory of the artifacts (created if needed).
    config : dict
        Everything the warm start depends on (task, seed, model config, steps, optimizer
        settings): its hash names the file.
    train : callable
        Trains ``policy_or_model`` in place and returns its summary (called only when the file is
        absent).
    code_version : dict or None
        Stored in the file's metadata (what made it).

    Returns
    -------
    dict
        The summary stored with the file, plus ``key``, ``file`` (name in ``cache_dir``) and
        ``weights_sha256`` of the loaded weights. Every run of one config gets the same dict.
    """
    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    key = warm_start_key(config)
    path = cache / f"{key}.safetensors"
    model = _module(policy_or_model)
    with _file_lock(cache / f"{key}.lock"):
        if not path.exists():
            summary = train()
            meta = {
                "config": _canonical(config),
                "summary": _canonical(summary),
                "code_version": _canonical(code_version),
            }
            _save(model, path, meta)
        # The creator loads the file too: every run starts from exactly the saved bytes.
        summary = _load(model, path, config)
    return {**summary, "key": key, "file": path.name, "weights_sha256": weights_sha256(model)}
