"""Adapter: any gymnasium ``VectorEnv`` with SAME_STEP autoreset, seen as an SB3 ``VecEnv``.

SB3-style algorithms (``PPO``, ``GRPO``, ``evaluate_policy``) talk to a
``stable_baselines3.common.vec_env.VecEnv``; gymnasium's batched environments (e.g.
:class:`egsw_gym.envs.vector.TextGenerationVectorEnv`, ``gym.make_vec(...,
vector_kwargs={"autoreset_mode": AutoresetMode.SAME_STEP})``) are ``gymnasium.vector.VectorEnv``.
Both reset a finished environment inside the same step, so the translation is only about
seeds, options and infos:

- ``reset()`` passes SB3's per-env seeds (``venv.seed(s)`` -> ``_seeds``) as the gymnasium
  per-env seed list, and SB3's per-env options (``set_options``) as one dict when they are all
  equal, or, for environments that declare ``supports_per_env_options``, as a dict of per-env
  lists (``{"prompt_index": [3, 3, 7, 7]}``). Both are consumed by the reset, as in
  ``DummyVecEnv``. The reset infos are in ``reset_infos``.
- ``step_wait()`` returns ``(obs, rewards float32 (n,), dones bool (n,), infos list of n dicts)``.
  Every ``infos[i]`` has ``"TimeLimit.truncated"`` (truncated and not terminated). For an env
  whose episode ended, ``infos[i]`` is the finished episode's final info plus
  ``"terminal_observation"`` (its last observation); the new
  episode's reset info goes to ``reset_infos[i]``, exactly as ``DummyVecEnv`` does.

A vector env that also offers ``reset_entries``/``step_entries`` (the same results with the infos
as ``(env index, info dict)`` pairs, as :class:`egsw_gym.envs.vector.TextGenerationVectorEnv` does)
is driven through them: the same SB3 infos, without building gymnasium's dict-of-arrays info and
splitting it again. Only the env's own class counts:
a wrapper around it (which may change infos, rewards or observations) is stepped through its
``step``, even one that forwards attribute lookups.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode
from stable_baselines3.common.env_util import is_wrapped
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices, VecEnvObs, VecEnvStepReturn

__all__ = ["VectorEnvAdapter", "unbatch_info"]


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _split_entries(
    entries: Iterable[tuple[int, dict[str, Any]]], num_envs: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[Any]]:
    """Per env: its top-level info, its ``final_info`` and its ``final_obs`` (``None``), from
    ``(env, info)`` pairs (later pairs win), as :func:`unbatch_info` splits the merged info; values
    are kept as the env made them (as ``DummyVecEnv`` passes its envs' infos on)."""
    top: list[dict[str, Any]] = [{} for _ in range(num_envs)]
    finals: list[dict[str, Any]] = [{} for _ in range(num_envs)]
    final_obs: list[Any] = [None] * num_envs
    for i, info in entries:
        for key, value in info.items():
            if key == "final_info":
                finals[i] = dict(value)  # its own dict: the adapter and VecMonitor add keys to it
            elif key == "final_obs":
                final_obs[i] = value
            else:
                top[i][key] = value
    return top, finals, final_obs


def unbatch_info(info: dict[str, Any], num_envs: int) -> list[dict[str, Any]]:
    """Split a gymnasium vector info (dict of arrays with ``_key`` masks) into one dict per env.

    Nested dicts (``final_info``) are split recursively; numpy scalars become Python scalars.

    Parameters
    ----------
    info : dict
        The vector environment's info.
    num_envs : int
        Number of environments.

    Returns
    -------
    list of dict
        ``num_envs`` dicts holding only the keys whose mask is set for that env.
    """
    out: list[dict[str, Any]] = [{} for _ in range(num_envs)]
    everyone = range(num_envs)
    for key, value in info.items():
        if key.startswith("_") and key[1:] in info:
            continue
        mask = info.get(f"_{key}")
        # Only the envs the mask marks: a step that ends a few of many episodes touches only those.
        envs = everyone if mask is None else np.flatnonzero(mask).tolist()
        if isinstance(value, dict):
            parts = unbatch_info(value, num_envs)
            for i in envs:
                out[i][key] = parts[i]
            continue
        if isinstance(value, np.ndarray) and value.ndim == 1 and value.dtype != object:
            value = value.tolist()  # Python scalars in one call (what _plain gives one by one)
            for i in envs:
                out[i][key] = value[i]
            continue
        for i in envs:
            out[i][key] = _plain(value[i])
    return out


class VectorEnvAdapter(VecEnv):
    """Wrap a gymnasium ``VectorEnv`` (autoreset mode SAME_STEP) as an SB3 ``VecEnv``.

    Parameters
    ----------
    venv : gymnasium.vector.VectorEnv
        The batched environment; its ``metadata["autoreset_mode"]`` must be
        ``AutoresetMode.SAME_STEP`` (SB3 expects the reset observation of a finished env in the
        same step).

    Attributes
    ----------
    venv : gymnasium.vector.VectorEnv
        The wrapped environment.
    """

    def __init__(self, venv: gym.vector.VectorEnv):
        if not isinstance(venv, gym.vector.VectorEnv):
            raise TypeError(f"venv must be a gymnasium.vector.VectorEnv, got {type(venv).__name__}")
        mode = venv.metadata.get("autoreset_mode")
        if mode not in (AutoresetMode.SAME_STEP, "SameStep", "same_step"):
            raise ValueError(
                f"venv's autoreset_mode must be AutoresetMode.SAME_STEP (SB3 semantics), got {mode!r}; "
                "create it with vector_kwargs={'autoreset_mode': AutoresetMode.SAME_STEP}"
            )
        self.venv = venv
        self._actions: np.ndarray | None = None
        # Looked up on the class: a wrapper that forwards attribute lookups must not be bypassed.
        self._per_env_entries = all(
            callable(getattr(type(venv), m, None)) for m in ("reset_entries", "step_entries")
        )
        super().__init__(venv.num_envs, venv.single_observation_space, venv.single_action_space)

    # -------------------------------------------------------------------------------- stepping
    def _reset_arguments(self) -> tuple[list | None, dict | None]:
        seeds = None if all(s is None for s in self._seeds) else list(self._seeds)
        opts = [o or {} for o in self._options]
        if all(o == opts[0] for o in opts):
            return seeds, (opts[0] or None)
        if not getattr(self.venv, "supports_per_env_options", False):
            raise ValueError(
                f"per-env options differ ({opts}) but {type(self.venv).__name__} takes one options dict for all "
                "envs; pass the same options to every env, or use a vector env with supports_per_env_options"
            )
        keys = sorted({k for o in opts for k in o})
        return seeds, {k: [o.get(k) for o in opts] for k in keys}

    def reset(self) -> VecEnvObs:
        """Reset all envs with the pending per-env seeds and options (then cleared).

        Returns
        -------
        numpy.ndarray or dict
            The batched first observation; reset infos in ``reset_infos``.
        """
        seeds, options = self._reset_arguments()
        if self._per_env_entries:
            obs, entries = self.venv.reset_entries(seed=seeds, options=options)
            self.reset_infos = _split_entries(entries, self.num_envs)[0]
        else:
            obs, info = self.venv.reset(seed=seeds, options=options)
            self.reset_infos = unbatch_info(info, self.num_envs)
        self._reset_seeds()
        self._reset_options()
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        """Store the actions for :meth:`step_wait`.

        Parameters
        ----------
        actions : numpy.ndarray
            One action per env.
        """
        self._actions = actions

    def step_wait(self) -> VecEnvStepReturn:
        """Step the wrapped env with the stored actions.

        Returns
        -------
        tuple
            ``(obs, rewards, dones, infos)`` in SB3's format (see the module docstring).
        """
        if self._actions is None:
            raise RuntimeError("call step_async(actions) before step_wait()")
        if self._per_env_entries:
            obs, rewards, terminated, truncated, entries = self.venv.step_entries(self._actions)
            parts = _split_entries(entries, self.num_envs) if entries else None
        else:
            obs, rewards, terminated, truncated, info = self.venv.step(self._actions)
            parts = None
            if info:
                rest = {
                    k: v
                    for k, v in info.items()
                    if k not in ("final_obs", "_final_obs", "final_info", "_final_info")
                }
                final = info.get("final_obs")
                parts = (
                    unbatch_info(rest, self.num_envs),
                    unbatch_info(info.get("final_info", {}), self.num_envs),
                    [None] * self.num_envs if final is None else final,
                )
        self._actions = None
        terminated, truncated = np.asarray(terminated, dtype=bool), np.asarray(truncated, dtype=bool)
        dones = terminated | truncated
        infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        final_obs = None if parts is None else parts[2]
        if parts is not None:
            top, finals, _ = parts
            for i, done in enumerate(dones.tolist()):
                if done:
                    infos[i] = finals[i]
                    self.reset_infos[i] = top[i]
                else:
                    infos[i] = top[i]
        time_limit = (truncated & ~terminated).tolist()
        for i in range(self.num_envs):  # as DummyVecEnv: on every step, for every env
            infos[i]["TimeLimit.truncated"] = time_limit[i]
        for i in np.flatnonzero(dones).tolist():
            infos[i]["terminal_observation"] = None if final_obs is None else final_obs[i]
        return obs, np.asarray(rewards, dtype=np.float32), dones, infos

    def close(self) -> None:
        """Close the wrapped env."""
        self.venv.close()

    # ------------------------------------------------------------------------------ attributes
    def _sub_envs(self) -> list | None:
        envs = getattr(self.venv, "envs", None)
        return list(envs) if isinstance(envs, (list, tuple)) else None

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        """An attribute per env: from each sub-env of a ``SyncVectorEnv``, else the batched env's own.

        Parameters
        ----------
        attr_name : str
            The attribute.
        indices : None, int or iterable of int
            Which envs (default all).

        Returns
        -------
        list
        """
        idx = self._get_indices(indices)
        envs = self._sub_envs()
        if envs is not None:
            return [envs[i].get_wrapper_attr(attr_name) for i in idx]
        value = getattr(self.venv, attr_name)
        return [value for _ in idx]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        """Set an attribute on the selected sub-envs (or, for a batched env, on the env itself).

        Parameters
        ----------
        attr_name : str
            The attribute.
        value : Any
            The value.
        indices : None, int or iterable of int
            Which envs (default all); a batched env without sub-envs only accepts all.
        """
        idx = list(self._get_indices(indices))
        envs = self._sub_envs()
        if envs is not None:
            for i in idx:
                envs[i].set_wrapper_attr(attr_name, value)
            return
        if sorted(idx) != list(range(self.num_envs)):
            raise ValueError(
                f"{type(self.venv).__name__} is one batched object; set_attr needs indices=None (all envs)"
            )
        setattr(self.venv, attr_name, value)

    def env_method(
        self, method_name: str, *method_args: Any, indices: VecEnvIndices = None, **method_kwargs: Any
    ) -> list[Any]:
        """Call a method of each selected sub-env (or once on a batched env, its result repeated).

        Parameters
        ----------
        method_name : str
            The method.
        *method_args
            Positional arguments.
        indices : None, int or iterable of int
            Which envs (default all).
        **method_kwargs
            Keyword arguments.

        Returns
        -------
        list
        """
        idx = list(self._get_indices(indices))
        envs = self._sub_envs()
        if envs is not None:
            return [envs[i].get_wrapper_attr(method_name)(*method_args, **method_kwargs) for i in idx]
        result = getattr(self.venv, method_name)(*method_args, **method_kwargs)
        return [result for _ in idx]

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        """Whether each selected sub-env is wrapped with ``wrapper_class`` (``False`` for a batched env).

        Parameters
        ----------
        wrapper_class : type
            A ``gymnasium.Wrapper`` subclass.
        indices : None, int or iterable of int
            Which envs (default all).

        Returns
        -------
        list of bool
        """
        idx = list(self._get_indices(indices))
        envs = self._sub_envs()
        if envs is not None:
            return [is_wrapped(envs[i], wrapper_class) for i in idx]
        return [False for _ in idx]

    def get_images(self) -> Sequence[np.ndarray | None]:
        """The wrapped env's ``render()`` output, one entry per env.

        Returns
        -------
        list
        """
        frames = self.venv.render()
        if frames is None:
            return [None] * self.num_envs
        return (
            list(frames) if isinstance(frames, Iterable) and not isinstance(frames, np.ndarray) else [frames]
        )
