"""Added to SB3's tests by scripts/sb3_suite/run.sh (not part of Stable-Baselines3).

1. ``SB3_SWAP_PPO`` (``none``, ``default``, ``trajectory`` or ``step``): before any test module is
   imported (the tests bind ``PPO`` at import time), ``stable_baselines3.PPO`` and its aliases are
   replaced by a subclass of ``egsw_gym.PPO`` whose ``egsw`` defaults to ``None``, ``EGSW()``,
   ``EGSW(mode="trajectory")`` or ``EGSW(mode="step")``. Unset: plain SB3 (the baseline).
2. ``PPO_ONLY=1`` (default): only tests that involve PPO are kept: a test parametrized by algorithm
   is kept when one of its parameters is PPO (the class or ``"ppo"``); any other test is kept when
   its source names PPO.
"""

from __future__ import annotations

import inspect
import os
import re

import pytest  # noqa: F401  (pytest loads this file as a plugin)

_MODE = os.environ.get("SB3_SWAP_PPO", "").strip()
_MODES = ("none", "default", "trajectory", "step")

if _MODE:
    if _MODE not in _MODES:
        raise ValueError(f"SB3_SWAP_PPO={_MODE!r}; allowed: {', '.join(_MODES)} (unset for plain SB3)")
    import stable_baselines3
    import stable_baselines3.ppo
    import stable_baselines3.ppo.ppo

    from egsw_gym import EGSW
    from egsw_gym import PPO as EGSWPPO

    _UNSET = object()

    class PPO(EGSWPPO):
        """egsw_gym.PPO whose ``egsw`` defaults to the mode under test."""

        def __init__(self, *args, egsw=_UNSET, **kwargs):
            if egsw is _UNSET:
                egsw = {
                    "none": None,
                    "default": EGSW(),
                    "trajectory": EGSW(mode="trajectory"),
                    "step": EGSW(mode="step"),
                }[_MODE]
            super().__init__(*args, egsw=egsw, **kwargs)

    PPO.__module__ = "stable_baselines3.ppo.ppo"  # as the original; only used in reprs and messages
    stable_baselines3.PPO = PPO
    stable_baselines3.ppo.PPO = PPO
    stable_baselines3.ppo.ppo.PPO = PPO
else:
    from stable_baselines3 import PPO

_PPO_CLASSES = (PPO,)
_ALGO_NAMES = {"a2c", "ppo", "dqn", "sac", "td3", "ddpg", "her"}


def pytest_report_header(config):
    import stable_baselines3

    mro = [c.__name__ for c in stable_baselines3.PPO.__mro__[:4]]
    return f"SB3_SWAP_PPO={_MODE or '(baseline)'}; stable_baselines3.PPO mro={mro}"


def _is_algo_class(value) -> bool:
    from stable_baselines3.common.base_class import BaseAlgorithm

    return inspect.isclass(value) and issubclass(value, BaseAlgorithm)


def pytest_collection_modifyitems(config, items):
    if os.environ.get("PPO_ONLY", "1") != "1":
        return
    keep, drop = [], []
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        classes = [v for v in params.values() if _is_algo_class(v)]
        names = [v.lower() for v in params.values() if isinstance(v, str) and v.lower() in _ALGO_NAMES]
        if classes or names:
            ok = any(v in _PPO_CLASSES for v in classes) or "ppo" in names
        else:
            try:
                source = inspect.getsource(item.function)
            except (OSError, TypeError):
                source = ""
            ok = re.search(r"\b(PPO|ppo)\b", source) is not None
        (keep if ok else drop).append(item)
    items[:] = keep
    config.hook.pytest_deselected(items=drop)
