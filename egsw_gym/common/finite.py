"""Clear errors for NaN and inf, raised where they enter training (never silently NaN parameters).

The one place PPO and GRPO share for finiteness:

- environment side: :func:`check_step_finite`, one vectorised ``np.isfinite`` per environment step
  (rewards, and observations with a floating dtype; integer observations such as token ids
  cannot be non-finite and are skipped). PPO gets it through :class:`VecCheckFinite`, SB3's
  :class:`~stable_baselines3.common.vec_env.VecCheckNan` raising :class:`NonFiniteError` with our
  message; GRPO calls it in its collection loop.
- update side: :func:`guard_optimizer_step` registers a pre-step hook on the optimizer that
  refuses the step when a gradient is NaN or inf (a non-finite loss always gives one), naming the
  parameters; :func:`check_loss_finite` checks loss values an algorithm already read as floats.
  Either way the optimizer step is not applied, so the parameters never become NaN silently.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from stable_baselines3.common.vec_env import VecCheckNan, VecEnv

__all__ = [
    "NonFiniteError",
    "check_step_finite",
    "check_loss_finite",
    "VecCheckFinite",
    "guard_optimizer_step",
    "OptimizerGuard",
]


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


class VecCheckFinite(VecCheckNan):
    """SB3's :class:`~stable_baselines3.common.vec_env.VecCheckNan` that raises :class:`NonFiniteError` with context.

    Same checks as ``VecCheckNan(venv, raise_exception=True, check_inf=True)`` (actions sent to the
    environments, observations and rewards coming back, reset observations), but the error names
    the algorithm, the environment index and where in training it happened (``where``), in the
    words of :func:`check_step_finite`.

    Parameters
    ----------
    venv : VecEnv
        The environments to watch.
    algo : str
        Name used in the message (``"PPO"``).
    where : Callable[[], str]
        Called only to build an error message, e.g. ``lambda: f"at rollout step {t}"``.
    """

    def __init__(self, venv: VecEnv, algo: str, where: Callable[[], str]) -> None:
        super().__init__(venv, raise_exception=True, warn_once=False, check_inf=True)
        self.algo = algo
        self.where = where

    def _check_val(self, event: str, **kwargs: Any) -> None:
        if event == "step_wait":
            check_step_finite(self.algo, kwargs["rewards"], kwargs["observations"], self.where)
        elif event == "reset":
            check_step_finite(self.algo, None, kwargs["observations"], "at a reset (the start observation)")
        else:  # step_async: the actions the policy chose
            bad = _first_bad(np.asarray(kwargs["actions"]))
            if bad is not None:
                raise NonFiniteError(
                    f"{self.algo}: action for env {bad[0]} {_where(self.where)} is {bad[1]}: the policy's "
                    "parameters or its input are non-finite"
                )


def _all_finite(grads: list[torch.Tensor]) -> bool:
    """Whether every tensor is finite: one fused norm per device (fast path), exact per-tensor check if not.

    The norms of finite tensors can only overflow for entries beyond ~1e19, so a non-finite sum of
    norms is confirmed tensor by tensor before it counts as non-finite.
    """
    by_device: dict[torch.device, list[torch.Tensor]] = {}
    for g in grads:
        by_device.setdefault(g.device, []).append(g)
    if all(bool(torch.stack(torch._foreach_norm(gs)).sum().isfinite()) for gs in by_device.values()):
        return True
    return all(bool(torch.isfinite(g).all()) for g in grads)


class OptimizerGuard:
    """The guard :func:`guard_optimizer_step` installs: its hook's handle, and a cheaper path for loops that clip.

    Checking every gradient costs a pass over them before each step (small for SB3's default MLP,
    a full extra read of the gradients for a large model). A loop that has just computed their total norm (``clip_grad_norm_`` returns it) passes
    it to :meth:`norm_checked`: a finite norm means every gradient is finite, so the next
    ``step()`` skips the check. A non-finite norm changes nothing: the hook then runs its full
    check at ``step()`` and raises, naming the parameters.
    """

    def __init__(self) -> None:
        self.handle: Any = None
        self._verified = False

    def norm_checked(self, total_norm: torch.Tensor | float) -> None:
        """Record the total gradient norm the loop computed for the coming ``optimizer.step()``."""
        self._verified = math.isfinite(float(total_norm))

    def remove(self) -> None:
        """Take the guard off the optimizer."""
        self.handle.remove()


def guard_optimizer_step(
    optimizer: torch.optim.Optimizer, module: torch.nn.Module, algo: str, where: Callable[[], str]
) -> Any:
    """Refuse every ``optimizer.step()`` whose gradients contain NaN or inf, raising :class:`NonFiniteError`.

    A pre-step hook (``optimizer.register_step_pre_hook``), so it guards the step wherever the
    algorithm calls it, without a line in its update loop. A NaN or inf loss always leaves a
    non-finite gradient (after ``clip_grad_norm_`` too: a non-finite total norm makes the clipped
    gradients NaN), so this also covers the loss. The message names the parameters whose gradient
    is non-finite (e.g. ``value_net.weight`` points at the value loss).

    Parameters
    ----------
    optimizer : torch.optim.Optimizer
        The optimizer to guard.
    module : torch.nn.Module
        The module owning the parameters (for their names in the message); held by weak reference.
    algo : str
        Name used in the message.
    where : Callable[[], str]
        Called only to build an error message, e.g. ``lambda: f"in update 3 (num_timesteps=640)"``.

    Returns
    -------
    OptimizerGuard
        ``guard.remove()`` takes the guard off; ``guard.norm_checked(total_norm)`` spares it its
        own pass over the gradients when the loop has already computed their norm.
    """
    module_ref = weakref.ref(module)
    guard = OptimizerGuard()

    def hook(opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        if guard._verified:  # the loop's finite clip norm covers every gradient of this step
            guard._verified = False
            return
        grads = [p.grad for group in opt.param_groups for p in group["params"] if p.grad is not None]
        if _all_finite(grads):
            return
        owner = module_ref()
        names = {} if owner is None else {id(p): name for name, p in owner.named_parameters()}
        bad = [
            names.get(id(p), f"parameter {i}")
            for i, p in enumerate(p for group in opt.param_groups for p in group["params"])
            if p.grad is not None and not bool(torch.isfinite(p.grad).all())
        ]
        shown = ", ".join(bad[:6]) + (f" and {len(bad) - 6} more" if len(bad) > 6 else "")
        raise NonFiniteError(
            f"{algo}: non-finite gradient of {shown} {where()}; the optimizer step was not applied. Common "
            "causes: a too large learning rate, inf advantages or returns from extreme rewards, or "
            "log-probs of actions the policy cannot produce"
        )

    guard.handle = optimizer.register_step_pre_hook(hook)
    return guard
