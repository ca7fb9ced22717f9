"""One environment factory for GRPO and the experiment runner, and one rule for "is this a text env".

:func:`is_text_env` and :func:`build_vec_env` are the only place that decides how an environment id
becomes an SB3 ``VecEnv``:

- an id whose registered ``vector_entry_point`` resets finished slots within the same step
  (``AutoresetMode.SAME_STEP``, SB3's semantics: the batched text-generation environments) is built
  as that one batched env behind :class:`~egsw_gym.common.vec_env.VectorEnvAdapter` and SB3's
  ``VecMonitor``, so that its hot path steps all slots with a few numpy ops instead of ``n_envs``
  Python env objects;
- every other id (classic control, MuJoCo, including gymnasium's ``NEXT_STEP`` vector envs such as
  CartPole's) gets a ``DummyVecEnv`` of ``Monitor``-ed copies;
- a single ``gymnasium.Env`` is replicated to ``n_envs`` copies (``gym.make(env.spec)``, or
  ``deepcopy`` without a spec).
"""

from __future__ import annotations

import copy
from typing import Any

import gymnasium as gym
from gymnasium.envs.registration import load_env_creator
from gymnasium.vector import AutoresetMode
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecMonitor

import egsw_gym.envs  # noqa: F401  (registers the egsw/ ids that is_text_env looks up)
from egsw_gym.common.vec_env import VectorEnvAdapter

__all__ = ["build_vec_env", "is_text_env"]


def is_text_env(env_id: str) -> bool:
    """Whether ``env_id`` registers a batched ``vector_entry_point`` with SB3 (SAME_STEP) autoreset.

    That is the definition of a text environment in this project (the ``egsw/`` text-generation ids
    are the registered envs that have one), and the rule :func:`build_vec_env` builds by. It reads
    the class's ``metadata`` without building it; an unknown id returns ``False`` (``gym.make`` then
    raises its usual error).

    Parameters
    ----------
    env_id : str
        A registered Gymnasium id.

    Returns
    -------
    bool
        ``True`` for an id whose batched vector env :func:`build_vec_env` uses.
    """
    try:
        spec = gym.spec(env_id)
    except gym.error.Error:
        return False
    if not isinstance(spec.vector_entry_point, str):
        return False
    creator = load_env_creator(spec.vector_entry_point)
    return getattr(creator, "metadata", {}).get("autoreset_mode") == AutoresetMode.SAME_STEP


def build_vec_env(
    env: gym.Env | str,
    n_envs: int,
    *,
    env_kwargs: dict[str, Any] | None = None,
    seed: int | None = None,
) -> VecEnv:
    """An id string or a single env -> an SB3 ``VecEnv`` of ``n_envs`` environments.

    Parameters
    ----------
    env : str or gymnasium.Env
        A registered id (built with ``env_kwargs``), or one environment that is replicated
        (``gym.make(env.spec)`` when it has a spec, else ``copy.deepcopy``; the given object is
        the first copy).
    n_envs : int
        Number of environments, ``>= 1``.
    env_kwargs : dict or None
        Keyword arguments of ``gym.make`` (or of the batched vector env) for an id string.
    seed : int or None
        ``VecEnv.seed(seed)``: env ``i``'s next reset gets ``seed + i``. ``None`` leaves them unseeded.

    Returns
    -------
    VecEnv
        A ``VecMonitor(VectorEnvAdapter(...))`` for a text env (:func:`is_text_env`), otherwise a
        ``DummyVecEnv`` of monitored envs.

    Raises
    ------
    ValueError
        For anything that is neither an id string nor a ``gymnasium.Env``, or a bad ``n_envs``.
    """
    if isinstance(n_envs, bool) or not isinstance(n_envs, int) or n_envs < 1:
        raise ValueError(f"n_envs must be an integer >= 1, got {n_envs!r}")
    if env_kwargs is not None and not isinstance(env_kwargs, dict):
        raise ValueError(f"env_kwargs must be a dict or None, got {type(env_kwargs).__name__}")
    kwargs = dict(env_kwargs or {})
    venv: VecEnv
    if isinstance(env, str):
        if is_text_env(env):
            vector = gym.make_vec(env, n_envs, vectorization_mode="vector_entry_point", **kwargs)
            venv = VecMonitor(VectorEnvAdapter(vector))
        else:
            # Not make_vec_env(env_id): it forces render_mode="rgb_array", which envs without that
            # mode reject, and which training never needs.
            venv = make_vec_env(lambda: gym.make(env, **kwargs), n_envs=n_envs)
    elif isinstance(env, gym.Env):
        copies: list[gym.Env] = [env]
        for _ in range(n_envs - 1):
            # A group needs identical envs; rebuild from the spec when there is one.
            copies.append(gym.make(env.spec) if env.spec is not None else copy.deepcopy(env))
        venv = DummyVecEnv([lambda e=e: e if isinstance(e, Monitor) else Monitor(e) for e in copies])
    else:
        raise ValueError(
            f"env must be a gymnasium.Env, an env id string or an SB3 VecEnv, got {type(env).__name__}"
        )
    if seed is not None:
        venv.seed(seed)
    return venv
