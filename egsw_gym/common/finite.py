"""Clear errors for NaN and inf, raised where they enter training (never silently NaN parameters).

One vectorised ``np.isfinite`` per environment step (rewards, and observations with a floating
dtype; integer observations such as token ids cannot be non-finite and are skipped), and a check
of the loss before every optimizer step, using the loss value the algorithms already read for
logging.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["NonFiniteError", "check_step_finite", "check_loss_finite"]


class NonFiniteError(FloatingPointError):
    """A NaN or inf reward, observation or loss; the message names where it came from."""


def _first_bad(array: np.ndarray) -> tuple[int, Any] | None:
    """``(env index, value)`` of the first non-finite entry of a ``(n_envs, ...)`` array, else ``None``."""
    if array.dtype.kind not in "fc":
        return None
    finite = np.isfinite(array)
    if finite.all():
        return None
    bad = np.argwhere(~finite)[0]
    return int(bad[0]) if array.ndim else 0, array[tuple(bad)]


def _where(where: str | Callable[[], str]) -> str:
    return where() if callable(where) else where


def check_step_finite(algo: str, rewards: Any, obs: Any, where: str | Callable[[], str]) -> None:
    """Raise :class:`NonFiniteError` if a reward or an observation of one vectorised step is NaN or inf.

    Parameters
    ----------
    algo : str
        Name used in the message (``"GRPO"``, ``"PPO"``).
    rewards : array-like or None
        ``(n_envs,)`` rewards of the step (``None`` for a reset).
    obs : numpy.ndarray, dict of them, or None
        The observations returned with them.
    where : str or Callable[[], str]
        Where in training, e.g. ``"at step 17 (num_timesteps=340)"``; a callable is only called to
        build an error message, so the hot path formats nothing.
    """
    if rewards is not None:
        bad = _first_bad(np.asarray(rewards))
        if bad is not None:
            raise NonFiniteError(
                f"{algo}: reward from env {bad[0]} {_where(where)} is {bad[1]}. Check the environment's reward "
                "(or a reward wrapper); training on it would make the parameters NaN"
            )
    if obs is None:
        return
    items = obs.items() if isinstance(obs, dict) else [(None, obs)]
    for key, value in items:
        bad = _first_bad(np.asarray(value))
        if bad is not None:
            name = "observation" if key is None else f"observation[{key!r}]"
            raise NonFiniteError(
                f"{algo}: {name} from env {bad[0]} {_where(where)} contains {bad[1]}. Check the environment "
                "(or an observation wrapper); the policy would output NaN"
            )


def check_loss_finite(algo: str, terms: dict[str, float], where: str) -> None:
    """Raise :class:`NonFiniteError` before the optimizer step if a loss term is NaN or inf.

    Parameters
    ----------
    algo : str
        Name used in the message.
    terms : dict of str to float
        Loss terms already read as Python floats (no extra device sync).
    where : str
        Where in training, e.g. ``"in update 3, epoch 1, minibatch 2"``.
    """
    bad = [name for name, value in terms.items() if not np.isfinite(value)]
    if bad:
        values = ", ".join(f"{name}={value}" for name, value in terms.items())
        raise NonFiniteError(
            f"{algo}: non-finite {' and '.join(bad)} {where} ({values}); the update was not applied. "
            "Common causes: a too large learning rate, inf advantages from extreme rewards, or log-probs of "
            "actions the policy cannot produce"
        )
