"""GRPO: critic-free, group-relative policy optimisation over groups of episodes that share a start state.

One class for control and language models: it only talks to a :class:`~egsw_gym.policies.GRPOPolicy`
(``act`` while collecting, ``evaluate_sequences`` while optimising) and to an SB3 ``VecEnv``.

One update, top to bottom (see :meth:`GRPO.learn`)::

    for each round (n_envs // group_size groups in parallel), until n_groups groups are collected:
        give every env of group k the same reset seed s_k, reset all envs, state = None
        step all envs until each has finished its first episode;
        steps after an env's first `done` are masked out (SB3 auto-resets; that data is ignored)
    A       = group_advantages(rewards, mask, group)            # outcome or process, see grpo_core
    w       = EGSW.sample_weights(A, H_rollout, ...) or 1        # constant for the gradient
    repeat n_epochs, minibatches of whole sequences:
        logp, H = policy.evaluate_sequences(first_obs, step_obs, actions, mask)
        loss    = aggregate(w * clip_surrogate(logp, logp_old, A) + beta * k3(logp, logp_ref) - ent_coef * H)
        Adam step with gradient-norm clipping
"""

from __future__ import annotations

import copy
import importlib
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, TypeVar

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, PyTorchObs, Schedule
from stable_baselines3.common.utils import obs_as_tensor, safe_mean
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv

from egsw_gym.algorithms.egsw_config import EGSWConfigMixin
from egsw_gym.algorithms.grpo_core import (
    ADVANTAGE_TYPES,
    LOSS_TYPES,
    discounted_returns,
    group_advantages,
    group_normalize,
    grpo_loss,
)
from egsw_gym.common import distributed as dist_utils
from egsw_gym.common.finite import check_loss_finite, check_step_finite
from egsw_gym.common.serialization import SafeSerializationMixin
from egsw_gym.egsw import EGSW, egsw_statistics
from egsw_gym.policies.base import GRPOPolicy
from egsw_gym.policies.mlp import MlpPolicy

__all__ = ["GRPO", "GroupBatch"]

SelfGRPO = TypeVar("SelfGRPO", bound="GRPO")


class _LazyPolicyAliases(dict):
    """``policy_aliases`` whose values may be ``"module:Class"`` strings, imported on first use.

    ``"LMPolicy"`` lives in a module that imports ``transformers``; resolving it lazily keeps
    ``import egsw_gym`` light and the control path free of that dependency.
    """

    def __getitem__(self, key: str) -> type[BasePolicy]:
        value = super().__getitem__(key)
        if isinstance(value, str):
            module_name, attr = value.split(":")
            value = getattr(importlib.import_module(module_name), attr)
        return value


@dataclass
class GroupBatch:
    """One update's worth of sequences, padded to ``(B, T)``; ``B = n_groups * group_size``.

    ``first_obs`` and ``step_obs`` are tensors or dicts of tensors (``Dict`` observation spaces).
    """

    first_obs: PyTorchObs
    step_obs: PyTorchObs | None
    actions: torch.Tensor
    old_log_probs: torch.Tensor
    entropies: torch.Tensor
    rewards: torch.Tensor
    mask: torch.Tensor
    group_ids: torch.Tensor


def _index_obs(obs: PyTorchObs | None, idx: torch.Tensor | slice) -> PyTorchObs | None:
    """``obs[idx]`` for a tensor or a dict of tensors."""
    if obs is None:
        return None
    if isinstance(obs, dict):
        return {k: v[idx] for k, v in obs.items()}
    return obs[idx]


def _stack_steps(steps: list[Any]) -> Any:
    """Per-step ``(n_envs, ...)`` tensors (or dicts of them) -> one ``(n_envs, T, ...)`` tensor (or dict)."""
    if isinstance(steps[0], dict):
        return {k: torch.stack([s[k] for s in steps], dim=1) for k in steps[0]}
    return torch.stack(steps, dim=1)


def _pad_cat(chunks: list[Any], length: int) -> Any:
    """Concatenate ``(n, T_r, ...)`` chunks along dim 0 after zero-padding dim 1 to ``length``."""
    if isinstance(chunks[0], dict):
        return {k: _pad_cat([c[k] for c in chunks], length) for k in chunks[0]}
    padded = []
    for c in chunks:
        if c.shape[1] < length:
            pad = c.new_zeros((c.shape[0], length - c.shape[1], *c.shape[2:]))
            c = torch.cat([c, pad], dim=1)
        padded.append(c)
    return torch.cat(padded, dim=0)


def _cat_rows(chunks: list[Any]) -> Any:
    """Concatenate tensors (or dicts of tensors) along dim 0."""
    if isinstance(chunks[0], dict):
        return {k: torch.cat([c[k] for c in chunks]) for k in chunks[0]}
    return torch.cat(chunks)


def _clone_obs(obs: PyTorchObs) -> PyTorchObs:
    # obs_as_tensor shares memory with the VecEnv's numpy buffers on CPU; copy before storing.
    if isinstance(obs, dict):
        return {k: v.clone() for k, v in obs.items()}
    return obs.clone()


def _has_same_step_vector_entry_point(env_id: str) -> bool:
    """Whether ``env_id`` registers a batched ``vector_entry_point`` with SB3 (SAME_STEP) autoreset.

    Reads the class's ``metadata`` without building it; an unknown id returns ``False`` (``gym.make``
    then raises its usual error).
    """
    from gymnasium.envs.registration import load_env_creator
    from gymnasium.vector import AutoresetMode

    try:
        spec = gym.spec(env_id)
    except gym.error.Error:
        return False
    if not isinstance(spec.vector_entry_point, str):
        return False
    creator = load_env_creator(spec.vector_entry_point)
    return getattr(creator, "metadata", {}).get("autoreset_mode") == AutoresetMode.SAME_STEP


def _obs_equal(a: Any, b: Any) -> bool:
    if isinstance(a, dict):
        return all(np.array_equal(np.asarray(a[k]), np.asarray(b[k])) for k in a)
    return bool(np.array_equal(np.asarray(a), np.asarray(b)))


def _check_more_settings(**hp: Any) -> None:
    """Settings GRPO's own check does not cover: ValueError naming the argument and what is allowed."""
    lr = hp["learning_rate"]
    if not callable(lr) and (isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0):
        raise ValueError(
            f"learning_rate must be a number > 0 or a schedule (callable of progress), got {lr!r}"
        )
    if not isinstance(hp["scale_rewards"], (bool, np.bool_)):
        raise ValueError(
            f"scale_rewards must be True (GRPO) or False (Dr. GRPO), got {hp['scale_rewards']!r}"
        )
    window = hp["stats_window_size"]
    if isinstance(window, bool) or not isinstance(window, (int, np.integer)) or window < 1:
        raise ValueError(f"stats_window_size must be an integer >= 1, got {window!r}")
    if hp["env_kwargs"] is not None and not isinstance(hp["env_kwargs"], dict):
        raise ValueError(f"env_kwargs must be a dict or None, got {type(hp['env_kwargs']).__name__}")


def _check_policy_fits_env(policy: Any, env: VecEnv | None) -> None:
    """A clearer message than SB3's (which suggests a MultiInputPolicy GRPO does not have)."""
    obs_space = getattr(env, "observation_space", None)
    if policy == "MlpPolicy" and isinstance(obs_space, spaces.Dict):
        raise ValueError(
            f"policy='MlpPolicy' needs a Box, Discrete, MultiDiscrete or MultiBinary observation space, got "
            f"{obs_space}. For the text-generation environments (Dict of input_ids and attention_mask) use "
            "'LMPolicy'; for other Dict observations pass a GRPOPolicy subclass that reads them"
        )


class GRPO(SafeSerializationMixin, EGSWConfigMixin, BaseAlgorithm):
    """Group Relative Policy Optimization with optional EGSW weighting, SB3-style.

    Parameters
    ----------
    policy : str or type of GRPOPolicy
        ``"MlpPolicy"``, ``"LMPolicy"`` (imported lazily from ``egsw_gym.policies.lm``), or a
        :class:`~egsw_gym.policies.GRPOPolicy` subclass.
    env : gymnasium.Env, str or VecEnv
        The environment. An id string is built with ``make_vec_env(env, n_envs)``; a single
        Gymnasium env is replicated to ``n_envs`` copies (``gym.make(env.spec)``, or ``deepcopy``
        without a spec); a VecEnv is used as is. ``reset(seed=s)`` must determine the start state.
    group_size : int
        Episodes per group (same reset seed, so same start state / prompt); ``>= 2``.
    n_groups : int
        Groups per update; a multiple of ``n_envs // group_size`` (the groups run in one round).
    n_envs : int or None
        Number of environments when ``env`` is a string or a single env; default
        ``group_size * n_groups`` (all groups in one round). Must be a multiple of ``group_size``.
    env_kwargs : dict or None
        Keyword arguments of ``gym.make`` when ``env`` is an id string (e.g. a text task's knobs).
    learning_rate : float or Callable[[float], float]
        Learning rate or schedule of remaining progress (1 -> 0).
    n_epochs : int
        Passes over each batch.
    batch_size : int or None
        Sequences (episodes) per minibatch; ``None`` = the whole batch (one step per epoch).
    clip_range : float
        PPO clip ``eps_low`` (and ``eps_high`` unless ``clip_range_high`` is set).
    clip_range_high : float or None
        Clip-higher upper bound (DAPO); ``None`` means symmetric.
    beta : float
        Coefficient of the k3 KL penalty to a frozen copy of the initial policy; ``0`` (default)
        creates no reference copy.
    loss_type : {"grpo", "dr_grpo", "token"}
        Loss aggregation over steps, see :func:`~egsw_gym.algorithms.grpo_core.aggregate_loss`.
    advantage : {"outcome", "process"}
        Episode return normalised in the group, or reward-to-go normalised per step across the
        group's running members.
    gamma : float
        Discount in ``(0, 1]`` for the return / reward-to-go. Default 1 (plain sum, as GRPO).
    scale_rewards : bool
        Divide group-centred returns by the group std (GRPO, default) or not (Dr. GRPO).
    ent_coef : float
        Entropy bonus coefficient.
    max_grad_norm : float
        Gradient-norm clip.
    dr_grpo_max_len : int or None
        The constant ``max_len`` of ``"dr_grpo"``; ``None`` uses the padded length of each batch.
    dynamic_sampling : bool
        DAPO's dynamic sampling (verl's ``filter_groups``): keep collecting rounds, and keep only the
        groups whose (discounted) episode returns have a non-zero spread, until ``n_groups`` such
        groups are gathered or ``dynamic_sampling_max_rounds`` rounds have run. On sparse rewards
        (Acrobot: -500 for every member that misses the goal) the update then holds only groups
        that carry a learning signal. If the cap is hit first, the batch is topped up to
        ``n_groups`` with the zero-spread groups in collection order (they get zero advantage).
        Every step of every round counts in ``num_timesteps``, the discarded rounds included.
        Logged: ``rollout/sampling_rounds`` and ``rollout/frac_reward_zero_std`` (over all sampled
        groups; ``train/frac_reward_zero_std`` is over the kept batch). Default ``False``; single
        process only.
    dynamic_sampling_max_rounds : int or None
        Cap on the rounds (``n_envs // group_size`` groups each) one update may collect with
        ``dynamic_sampling``; ``None`` means 4 times the rounds of a plain update
        (``4 * n_groups // (n_envs // group_size)``). Must be at least the plain number of rounds.
    egsw : EGSW, dict or None
        EGSW configuration; ``None`` is plain GRPO. Stored as plain data (``egsw_config``) and
        rebuilt as ``self.egsw``.
    stats_window_size : int
        Episodes averaged in ``rollout/ep_rew_mean``.
    tensorboard_log : str or None
        TensorBoard log directory.
    policy_kwargs : dict or None
        Keyword arguments of the policy class.
    verbose : int
        0 silent, 1 training logs.
    seed : int or None
        Seed of Python, NumPy, torch, the action space and the group reset seeds.
    device : torch.device or str
        ``"auto"``, ``"cpu"``, ``"cuda"``.
    _init_setup_model : bool
        Build the networks now (``False`` is used by ``load``).
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = _LazyPolicyAliases(
        MlpPolicy=MlpPolicy, LMPolicy="egsw_gym.policies.lm:LMPolicy"
    )
    policy: GRPOPolicy

    def __init__(
        self,
        policy: str | type[GRPOPolicy],
        env: GymEnv | str | None,
        group_size: int = 8,
        n_groups: int = 4,
        n_envs: int | None = None,
        env_kwargs: dict[str, Any] | None = None,
        learning_rate: float | Schedule = 3e-4,
        n_epochs: int = 4,
        batch_size: int | None = None,
        clip_range: float = 0.2,
        clip_range_high: float | None = None,
        beta: float = 0.0,
        loss_type: Literal["grpo", "dr_grpo", "token"] = "grpo",
        advantage: Literal["outcome", "process"] = "outcome",
        gamma: float = 1.0,
        scale_rewards: bool = True,
        ent_coef: float = 0.0,
        max_grad_norm: float = 0.5,
        dr_grpo_max_len: int | None = None,
        dynamic_sampling: bool = False,
        dynamic_sampling_max_rounds: int | None = None,
        egsw: EGSW | dict[str, Any] | None = None,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: torch.device | str = "auto",
        _init_setup_model: bool = True,
    ) -> None:
        self._check_hyperparameters(
            group_size=group_size,
            n_groups=n_groups,
            n_envs=n_envs,
            n_epochs=n_epochs,
            batch_size=batch_size,
            clip_range=clip_range,
            clip_range_high=clip_range_high,
            beta=beta,
            loss_type=loss_type,
            advantage=advantage,
            gamma=gamma,
            ent_coef=ent_coef,
            max_grad_norm=max_grad_norm,
            dr_grpo_max_len=dr_grpo_max_len,
            dynamic_sampling=dynamic_sampling,
            dynamic_sampling_max_rounds=dynamic_sampling_max_rounds,
        )
        _check_more_settings(
            learning_rate=learning_rate,
            scale_rewards=scale_rewards,
            stats_window_size=stats_window_size,
            env_kwargs=env_kwargs,
        )
        if env is not None and not isinstance(env, VecEnv):
            # Under torchrun n_groups is global: each rank runs its n_groups / world_size share.
            default_n_envs = group_size * dist_utils.local_n_groups(n_groups)
            env = self._make_vec_env(env, n_envs if n_envs is not None else default_n_envs, env_kwargs)
        _check_policy_fits_env(policy, env)

        super().__init__(
            policy=policy,
            env=env,
            learning_rate=learning_rate,
            policy_kwargs=policy_kwargs,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            verbose=verbose,
            device=device,
            support_multi_env=True,
            seed=seed,
            supported_action_spaces=(spaces.Discrete, spaces.Box, spaces.MultiDiscrete, spaces.MultiBinary),
        )
        self.group_size = group_size
        self.n_groups = n_groups
        self.n_epochs = n_epochs
        self.batch_size = batch_size
        self.clip_range = clip_range
        self.clip_range_high = clip_range_high
        self.beta = beta
        self.loss_type = loss_type
        self.advantage = advantage
        self.gamma = gamma
        self.scale_rewards = scale_rewards
        self.ent_coef = ent_coef
        self.max_grad_norm = max_grad_norm
        self.dr_grpo_max_len = dr_grpo_max_len
        self.dynamic_sampling = bool(dynamic_sampling)
        self.dynamic_sampling_max_rounds = dynamic_sampling_max_rounds
        self._init_egsw(egsw)  # the live EGSW object and the plain dict checkpoints store
        self.ref_policy: GRPOPolicy | None = None

        if _init_setup_model:
            self._setup_model()

    # ------------------------------------------------------------------------------------------
    # Set-up and validation
    # ------------------------------------------------------------------------------------------

    @staticmethod
    def _check_hyperparameters(**hp: Any) -> None:
        """Reject bad settings early, naming the argument and what is allowed."""

        def is_int(x: Any) -> bool:
            return isinstance(x, (int, np.integer)) and not isinstance(x, bool)

        if not is_int(hp["group_size"]) or hp["group_size"] < 2:
            raise ValueError(
                f"group_size must be an integer >= 2 (a group compares episodes), got {hp['group_size']!r}"
            )
        if not is_int(hp["n_groups"]) or hp["n_groups"] < 1:
            raise ValueError(f"n_groups must be an integer >= 1, got {hp['n_groups']!r}")
        if hp["n_envs"] is not None and (
            not is_int(hp["n_envs"]) or hp["n_envs"] < 1 or hp["n_envs"] % hp["group_size"]
        ):
            raise ValueError(
                f"n_envs must be a positive multiple of group_size={hp['group_size']}, got {hp['n_envs']!r}"
            )
        if not is_int(hp["n_epochs"]) or hp["n_epochs"] < 1:
            raise ValueError(f"n_epochs must be an integer >= 1, got {hp['n_epochs']!r}")
        if hp["batch_size"] is not None and (not is_int(hp["batch_size"]) or hp["batch_size"] < 1):
            raise ValueError(
                f"batch_size must be None (whole batch) or an integer >= 1, got {hp['batch_size']!r}"
            )
        if not (isinstance(hp["clip_range"], (int, float)) and 0 < hp["clip_range"] < 1):
            raise ValueError(f"clip_range must be a number in (0, 1), got {hp['clip_range']!r}")
        if hp["clip_range_high"] is not None and not (
            isinstance(hp["clip_range_high"], (int, float)) and hp["clip_range_high"] > 0
        ):
            raise ValueError(f"clip_range_high must be None or a number > 0, got {hp['clip_range_high']!r}")
        if not (isinstance(hp["beta"], (int, float)) and hp["beta"] >= 0):
            raise ValueError(f"beta must be a number >= 0, got {hp['beta']!r}")
        if hp["loss_type"] not in LOSS_TYPES:
            raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {hp['loss_type']!r}")
        if hp["advantage"] not in ADVANTAGE_TYPES:
            raise ValueError(f"advantage must be one of {ADVANTAGE_TYPES}, got {hp['advantage']!r}")
        if not (isinstance(hp["gamma"], (int, float)) and 0 < hp["gamma"] <= 1):
            raise ValueError(f"gamma must be a number in (0, 1], got {hp['gamma']!r}")
        if not isinstance(hp["ent_coef"], (int, float)):
            raise ValueError(f"ent_coef must be a number, got {hp['ent_coef']!r}")
        if not (isinstance(hp["max_grad_norm"], (int, float)) and hp["max_grad_norm"] > 0):
            raise ValueError(f"max_grad_norm must be a number > 0, got {hp['max_grad_norm']!r}")
        if hp["dr_grpo_max_len"] is not None and (
            not is_int(hp["dr_grpo_max_len"]) or hp["dr_grpo_max_len"] < 1
        ):
            raise ValueError(
                f"dr_grpo_max_len must be None or an integer >= 1, got {hp['dr_grpo_max_len']!r}"
            )
        if not isinstance(hp["dynamic_sampling"], (bool, np.bool_)):
            raise ValueError(f"dynamic_sampling must be True or False, got {hp['dynamic_sampling']!r}")
        cap = hp["dynamic_sampling_max_rounds"]
        if cap is not None and (not is_int(cap) or cap < 1):
            raise ValueError(f"dynamic_sampling_max_rounds must be None or an integer >= 1, got {cap!r}")

    @classmethod
    def _validate_loaded_params(cls, data: dict[str, Any]) -> None:
        """The constructor's checks, applied to a checkpoint's values (see SafeSerializationMixin)."""
        super()._validate_loaded_params(data)
        names = ("group_size", "n_groups", "n_envs", "n_epochs", "batch_size", "clip_range", "clip_range_high",
                 "beta", "loss_type", "advantage", "gamma", "ent_coef", "max_grad_norm", "dr_grpo_max_len",
                 "dynamic_sampling", "dynamic_sampling_max_rounds")  # fmt: skip
        cls._check_hyperparameters(**cls._loaded_settings(data, names))

    @staticmethod
    def _make_vec_env(env: gym.Env | str, n_envs: int, env_kwargs: dict[str, Any] | None = None) -> VecEnv:
        """An id string or a single env -> an SB3 ``VecEnv`` of ``n_envs`` environments.

        An id whose registered ``vector_entry_point`` resets finished slots within the same step
        (``AutoresetMode.SAME_STEP``, SB3's semantics; the batched text environments) is built as
        that one batched env behind :class:`~egsw_gym.common.vec_env.VectorEnvAdapter` and
        ``VecMonitor``: its hot path steps all slots with a few numpy ops instead of ``n_envs``
        Python env objects. Every other id (classic control, MuJoCo, including gymnasium's
        ``NEXT_STEP`` vector envs such as CartPole's) gets a ``DummyVecEnv`` of monitored copies.
        """
        if isinstance(env, str):
            if _has_same_step_vector_entry_point(env):
                from stable_baselines3.common.vec_env import VecMonitor

                from egsw_gym.common.vec_env import VectorEnvAdapter

                venv = gym.make_vec(
                    env, n_envs, vectorization_mode="vector_entry_point", **(env_kwargs or {})
                )
                return VecMonitor(VectorEnvAdapter(venv))
            # Not make_vec_env(env_id): it forces render_mode="rgb_array", which envs without that mode
            # (the text env) reject, and which training never needs.
            return make_vec_env(lambda: gym.make(env, **(env_kwargs or {})), n_envs=n_envs)
        if not isinstance(env, gym.Env):
            raise ValueError(
                f"env must be a gymnasium.Env, an env id string or an SB3 VecEnv, got {type(env).__name__}"
            )
        copies: list[gym.Env] = [env]
        for _ in range(n_envs - 1):
            # A group needs group_size identical envs; rebuild from the spec when there is one.
            copies.append(gym.make(env.spec) if env.spec is not None else copy.deepcopy(env))
        return DummyVecEnv([lambda e=e: e if isinstance(e, Monitor) else Monitor(e) for e in copies])

    @staticmethod
    def _set_reset_seeds(env: VecEnv, seeds: Sequence[int]) -> None:
        """Make the next ``env.reset()`` reset env ``i`` with ``seed=seeds[i]``.

        SB3 VecEnvs pass ``_seeds[i]`` to env ``i``'s ``reset(seed=...)`` on their next ``reset()``
        and then clear the list. ``VecEnv.seed(s)`` can only give ``s, s+1, ...``, but a group needs
        the *same* seed on several envs, so we set the list on the innermost VecEnv (``unwrapped``);
        VecEnvWrappers (VecNormalize, VecMonitor, ...) forward ``reset()`` to it.
        """
        base = env.unwrapped
        if len(seeds) != base.num_envs:
            raise ValueError(f"need one seed per env ({base.num_envs}), got {len(seeds)}")
        base._seeds = [int(s) for s in seeds]

    def _check_env(self, env: VecEnv) -> None:
        """``n_envs`` / ``n_groups`` divisibility, and that ``reset(seed=s)`` fixes the start state."""
        if env.num_envs % self.group_size:
            raise ValueError(
                f"n_envs must be a multiple of group_size={self.group_size} (each group runs in parallel), "
                f"but the env has {env.num_envs} environments"
            )
        groups_per_round = env.num_envs // self.group_size
        if dist_utils.local_n_groups(self.n_groups, self._dist_info.world_size) % groups_per_round:
            raise ValueError(
                f"n_groups must be a multiple of n_envs // group_size = {groups_per_round} (the groups that run "
                f"in one round), got n_groups={self.n_groups}"
            )
        if self.dynamic_sampling:
            if self._dist_info.enabled:
                raise ValueError(
                    "dynamic_sampling is not supported under torch.distributed (single process only)"
                )
            plain_rounds = self.n_groups // groups_per_round
            cap = self.dynamic_sampling_max_rounds
            if cap is not None and cap < plain_rounds:
                raise ValueError(
                    f"dynamic_sampling_max_rounds must be >= n_groups // (n_envs // group_size) = {plain_rounds} "
                    f"(the rounds of a plain update), got {cap}"
                )
        # Probe on the innermost VecEnv so wrappers with running statistics (VecNormalize) are untouched.
        base = env.unwrapped
        probe_seed = 20250328
        self._set_reset_seeds(base, [probe_seed] * base.num_envs)
        first = base.reset()
        self._set_reset_seeds(base, [probe_seed] * base.num_envs)
        second = base.reset()

        def row(obs: Any, i: int) -> Any:
            return {k: v[i] for k, v in obs.items()} if isinstance(obs, dict) else obs[i]

        same_twice = _obs_equal(first, second)
        same_across = all(_obs_equal(row(first, 0), row(first, i)) for i in range(base.num_envs))
        if not (same_twice and same_across):
            raise ValueError(
                "env is not seedable: resetting with the same seed gave different observations "
                f"({'across two resets' if not same_twice else 'across environments'}). GRPO groups need "
                "reset(seed=s) to determine the start state; use a deterministic, seedable env."
            )
        # Force a fresh reset before the next learn() (our probe left the envs mid-nothing).
        self._last_obs = None

    #: Sample each round's actions from a generator seeded by the round's group seeds (see
    #: :func:`~egsw_gym.common.distributed.round_sampling_rng`), so that a round does not depend on
    #: which process plays it. ``None`` (default): on under torch.distributed, off for one process;
    #: set ``True`` on a single-process run to reproduce an N-rank run with the same per-rank n_envs.
    round_seeded_sampling: bool | None = None

    @property
    def _dist_info(self) -> dist_utils.DistInfo:
        """This process's rank and world size (a trivial one before ``_setup_model``)."""
        return getattr(self, "_dist", None) or dist_utils.DistInfo()

    def _setup_model(self) -> None:
        self._restore_egsw()  # after load(): load(..., egsw=EGSW(...)) if given, else the saved config
        # torchrun / accelerate: join the process group (nccl on CUDA, each rank on cuda:LOCAL_RANK).
        self._dist, self.device = dist_utils.init_distributed(self.device)
        self._setup_lr_schedule()
        self.set_random_seed(self.seed)
        if self.env is not None:
            self._check_env(self.env)
        self.policy = self.policy_class(
            self.observation_space, self.action_space, self.lr_schedule, **self.policy_kwargs
        )
        if not isinstance(self.policy, GRPOPolicy):
            raise ValueError(
                f"policy must be a GRPOPolicy subclass (act / evaluate_sequences), got {type(self.policy).__name__}"
            )
        self.policy = self.policy.to(self.device)
        dist_utils.broadcast_module(self.policy, self._dist)  # every rank starts from rank 0's weights
        self.ref_policy = None
        if self.beta > 0:
            # Frozen copy of the initial policy for the KL penalty; it never trains.
            self.ref_policy = copy.deepcopy(self.policy)
            self.ref_policy.optimizer = None
            self.ref_policy.set_training_mode(False)
            self.ref_policy.requires_grad_(False)

    def sync_reference_policy(self) -> None:
        """Make the KL reference (``beta > 0``) a copy of the current policy; no-op when ``beta == 0``.

        The reference is copied from the policy when the model is built. Call this after changing the
        policy outside :meth:`learn` (a supervised warm start, loading other weights), so that the KL
        penalty anchors to the model RL actually starts from, as the reference model of RLHF/RLVR is.
        """
        if self.ref_policy is not None:
            self.ref_policy.load_state_dict(self.policy.state_dict())

    def set_env(self, env: GymEnv, force_reset: bool = True) -> None:
        """SB3's ``set_env`` plus GRPO's checks (group divisibility, seedability)."""
        super().set_env(env, force_reset)
        self._check_env(self.env)

    def _excluded_save_params(self) -> list[str]:
        # The reference policy is saved as a state dict (EGSWConfigMixin excludes the EGSW object).
        return [*super()._excluded_save_params(), "ref_policy", "_dist"]

    def save(self, path: Any, exclude: Any = None, include: Any = None) -> None:
        """SB3's ``save``; under torch.distributed only rank 0 writes (the ranks hold equal weights)."""
        if not self._dist_info.is_main:
            return
        # policy_kwargs as plain data (an LM object or a tokenizer object -> its config / directory).
        original = self.policy_kwargs
        if hasattr(self.policy, "checkpoint_kwargs"):
            self.policy_kwargs = self.policy.checkpoint_kwargs(original)
        try:
            super().save(path, exclude=exclude, include=include)
        finally:
            self.policy_kwargs = original

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        state_dicts = ["policy", "policy.optimizer"]
        if self.ref_policy is not None:
            state_dicts.append("ref_policy")
        return state_dicts, []

    # ------------------------------------------------------------------------------------------
    # Rollout: rounds of groups
    # ------------------------------------------------------------------------------------------

    def _collect_round(
        self, env: VecEnv, callback: BaseCallback, round_index: int, group_seeds: np.ndarray | None = None
    ) -> GroupBatch | None:
        """Run one round: every env plays one episode from its group's seed. ``None`` if a callback stops."""
        n_envs, G = env.num_envs, self.group_size
        groups_per_round = n_envs // G
        if group_seeds is None:
            # Group seeds come from NumPy's global RNG, which `seed` fixes, so runs are reproducible.
            group_seeds = np.random.randint(0, 2**31 - 1, size=groups_per_round)
        self._set_reset_seeds(env, np.repeat(group_seeds, G))
        obs = env.reset()
        check_step_finite("GRPO", None, obs, "at the reset that starts a round (the start observation)")
        first_obs = _clone_obs(obs_as_tensor(obs, self.device))

        state: Any | None = None
        active = np.ones(n_envs, dtype=bool)
        step_obs, actions_l, logp_l, ent_l, rew_l, mask_l = [], [], [], [], [], []
        while active.any():
            obs_t = obs_as_tensor(obs, self.device)
            with torch.no_grad():
                actions, log_probs, entropies, state = self.policy.act(obs_t, state)
            env_actions = actions.cpu().numpy()
            if isinstance(self.action_space, spaces.Box):
                # Gaussian samples are unbounded: the env gets the clipped action, the loss the sampled one.
                env_actions = np.clip(env_actions, self.action_space.low, self.action_space.high)
            new_obs, rewards, dones, infos = env.step(env_actions)
            check_step_finite(
                "GRPO",
                rewards,
                new_obs,
                lambda: f"at step {len(actions_l)} of a round (num_timesteps={self.num_timesteps})",
            )
            self.num_timesteps += n_envs

            if self.policy.uses_step_observations:
                step_obs.append(_clone_obs(obs_t))
            actions_l.append(actions.detach())
            logp_l.append(log_probs.detach().float())
            ent_l.append(entropies.detach().float())
            rew_l.append(torch.as_tensor(rewards, dtype=torch.float32, device=self.device))
            mask_l.append(torch.as_tensor(active.copy(), device=self.device))
            # Only first episodes count (later ones are auto-reset data we throw away).
            self._update_info_buffer(
                [info for info, a in zip(infos, active, strict=True) if a], dones[active]
            )
            self._collect_episode_infos(infos, np.asarray(dones, dtype=bool) & active)
            active &= ~np.asarray(dones, dtype=bool)

            callback.update_locals(locals())
            if not callback.on_step():
                return None
            obs = new_obs

        group_ids = (
            torch.arange(groups_per_round, device=self.device).repeat_interleave(G)
            + round_index * groups_per_round
        )
        return GroupBatch(
            first_obs=first_obs,
            step_obs=_stack_steps(step_obs) if step_obs else None,
            actions=_stack_steps(actions_l),
            old_log_probs=_stack_steps(logp_l),
            entropies=_stack_steps(ent_l),
            rewards=_stack_steps(rew_l),
            mask=_stack_steps(mask_l),
            group_ids=group_ids,
        )

    def collect_groups(self, env: VecEnv, callback: BaseCallback) -> GroupBatch | None:
        """Collect ``n_groups`` groups in ``n_groups / (n_envs / group_size)`` rounds, padded to one batch."""
        self.policy.set_training_mode(False)
        callback.on_rollout_start()
        if self.dynamic_sampling:
            return self._collect_groups_dynamic(env, callback)
        info, groups_per_round = self._dist_info, env.num_envs // self.group_size
        # All of the update's (global) group seeds in one draw (the same stream as one draw per round);
        # this rank plays its contiguous block of rounds. Single process: every round, unchanged.
        round_seeds = dist_utils.shard_group_seeds(
            np.random.randint(0, 2**31 - 1, size=self.n_groups), groups_per_round, info
        )
        seeded = self.round_seeded_sampling if self.round_seeded_sampling is not None else info.enabled
        steps_before, rounds = self.num_timesteps, []
        for r, seeds in enumerate(round_seeds):
            with dist_utils.round_sampling_rng(seeds, self.device, enabled=seeded):
                batch = self._collect_round(env, callback, r, group_seeds=seeds)
            if batch is None:
                break
            rounds.append(batch)
        if info.enabled:
            # Global step count (every rank runs the same number of updates) and a global stop.
            sync = torch.tensor(
                [float(self.num_timesteps - steps_before), float(len(rounds) < len(round_seeds))]
            )
            dist_utils.all_reduce(sync, info)
            self.num_timesteps = steps_before + int(sync[0])
            if sync[1] > 0:
                return None
        elif len(rounds) < len(round_seeds):
            return None
        T = max(b.mask.shape[1] for b in rounds)
        merged = GroupBatch(
            first_obs=torch.cat([b.first_obs for b in rounds])
            if not isinstance(rounds[0].first_obs, dict)
            else {k: torch.cat([b.first_obs[k] for b in rounds]) for k in rounds[0].first_obs},
            step_obs=_pad_cat([b.step_obs for b in rounds], T) if rounds[0].step_obs is not None else None,
            actions=_pad_cat([b.actions for b in rounds], T),
            old_log_probs=_pad_cat([b.old_log_probs for b in rounds], T),
            entropies=_pad_cat([b.entropies for b in rounds], T),
            rewards=_pad_cat([b.rewards for b in rounds], T),
            mask=_pad_cat([b.mask for b in rounds], T),
            group_ids=torch.cat([b.group_ids for b in rounds]),
        )
        self._record_episode_infos()
        callback.update_locals(locals())
        callback.on_rollout_end()
        return merged

    def _collect_groups_dynamic(self, env: VecEnv, callback: BaseCallback) -> GroupBatch | None:
        """Dynamic sampling (``dynamic_sampling=True``): rounds until ``n_groups`` groups have reward spread.

        Zero spread is judged exactly as :func:`~egsw_gym.algorithms.grpo_core.group_advantages` does
        (discounted episode returns, ``group_normalize``'s tolerance), so a kept group never ends up
        with all-zero advantages.
        """
        groups_per_round = env.num_envs // self.group_size
        plain_rounds = self.n_groups // groups_per_round
        cap = self.dynamic_sampling_max_rounds or 4 * plain_rounds
        kept: list[tuple[GroupBatch, torch.Tensor]] = []  # (round, row index of its kept groups)
        spare: list[tuple[GroupBatch, torch.Tensor]] = []  # zero-spread groups, to top up at the cap
        n_kept = n_sampled = n_zero = rounds = 0
        while n_kept < self.n_groups and rounds < cap:
            batch = self._collect_round(env, callback, rounds)
            if batch is None:
                return None
            rounds += 1
            returns = discounted_returns(batch.rewards, batch.mask, self.gamma)
            _, zero_std = group_normalize(returns, batch.group_ids)
            for k in range(groups_per_round):
                rows = torch.arange(k * self.group_size, (k + 1) * self.group_size, device=batch.mask.device)
                n_sampled += 1
                if bool(zero_std[rows[0]]):
                    n_zero += 1
                    spare.append((batch, rows))
                elif n_kept < self.n_groups:
                    kept.append((batch, rows))
                    n_kept += 1
        kept += spare[: self.n_groups - n_kept]
        self.logger.record("rollout/sampling_rounds", rounds)
        self.logger.record("rollout/frac_reward_zero_std", n_zero / max(n_sampled, 1))
        # Kept groups of every round, trimmed to the longest kept episode and padded to one batch.
        T = max(int(b.mask[rows].any(dim=0).nonzero().max()) + 1 for b, rows in kept)

        def take(field: str, trim: bool = True) -> Any:
            parts = [_index_obs(getattr(b, field), rows) for b, rows in kept]
            if parts[0] is None:
                return None
            if not trim:
                return _cat_rows(parts)
            return _pad_cat([_index_obs(p, (slice(None), slice(0, T))) for p in parts], T)

        device = kept[0][0].mask.device
        merged = GroupBatch(
            first_obs=take("first_obs", trim=False),
            step_obs=take("step_obs"),
            actions=take("actions"),
            old_log_probs=take("old_log_probs"),
            entropies=take("entropies"),
            rewards=take("rewards"),
            mask=take("mask"),
            group_ids=torch.arange(len(kept), device=device).repeat_interleave(self.group_size),
        )
        self._record_episode_infos()
        callback.update_locals(locals())
        callback.on_rollout_end()
        return merged

    #: Keys of a finished episode's ``info`` averaged over each update's episodes and logged as
    #: ``rollout/<key>`` (e.g. a verifier's ``correct``: the batch's fraction of right answers on the
    #: text environments; SB3's ``is_success``). Keys an env does not report, and non-numeric values,
    #: are skipped. Set it on a model (``model.info_keywords = ("my_key",)``) to log other keys.
    info_keywords: tuple[str, ...] = ("correct", "format_ok", "is_success")

    def _collect_episode_infos(self, infos: list[dict[str, Any]], finished: np.ndarray) -> None:
        """Keep the :attr:`info_keywords` values of the episodes that end now (first episodes only)."""
        values = self.__dict__.setdefault("_episode_info_values", {})
        for i in np.flatnonzero(finished).tolist():
            for key in self.info_keywords:
                value = infos[i].get(key)
                if isinstance(value, (bool, int, float, np.bool_, np.number)):
                    values.setdefault(key, []).append(float(value))

    def _record_episode_infos(self) -> None:
        """Log the means of what :meth:`_collect_episode_infos` kept for this update, then forget it."""
        values = self.__dict__.pop("_episode_info_values", {})
        for key, vals in values.items():
            self.logger.record(f"rollout/{key}", float(np.mean(vals)))

    # ------------------------------------------------------------------------------------------
    # Update
    # ------------------------------------------------------------------------------------------

    def _egsw_weights(
        self, advantages: torch.Tensor, batch: GroupBatch, plan: dist_utils.GlobalBatch | None = None
    ) -> torch.Tensor:
        """EGSW weights on the padded batch (1 on padding), from the one core implementation.

        Under torch.distributed (``plan``), advantage standardisation and the logged statistics span
        the global batch.
        """
        assert self.egsw is not None
        mask = batch.mask
        B, T = mask.shape
        # Flat per-step ids: trajectory = episode, step = t in the episode, group = start-state group.
        # In "step" mode EGSW's sets are (group, t): exactly the group's members still running at t.
        traj_ids = torch.arange(B, device=mask.device)[:, None].expand(B, T)[mask]
        step_ids = torch.arange(T, device=mask.device)[None, :].expand(B, T)[mask]
        group_ids = batch.group_ids[:, None].expand(B, T)[mask]
        w = self.egsw.sample_weights(
            advantages[mask],
            batch.entropies[mask],
            trajectory_ids=traj_ids,
            step_ids=step_ids,
            group_ids=group_ids,
            all_reduce=plan.egsw_reduce() if plan is not None else None,
        )
        weights = torch.ones_like(advantages)
        weights[mask] = w.to(weights.dtype)
        if plan is not None and plan.info.enabled:
            wd, ent = w.double(), batch.entropies[mask].double()
            sums = plan.reduce_scalars(
                {"n": wd.numel(), "w": wd.sum(), "w2": (wd * wd).sum(), "h": ent.sum()}, op="sum"
            )
            self.logger.record("egsw/weight_max", plan.reduce_scalars({"x": float(w.max())}, op="max")["x"])
            self.logger.record("egsw/weight_min", plan.reduce_scalars({"x": float(w.min())}, op="min")["x"])
            self.logger.record("egsw/weight_ess", sums["w"] ** 2 / max(sums["n"] * sums["w2"], 1e-300))
            self.logger.record("egsw/entropy_mean", sums["h"] / max(sums["n"], 1.0))
            return weights
        for key, value in egsw_statistics(w, batch.entropies[mask]).items():
            self.logger.record(key, value)
        return weights

    def train(self, batch: GroupBatch) -> None:
        """``n_epochs`` of minibatch updates on one batch of groups."""
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)
        mask = batch.mask
        B, T = mask.shape

        adv = group_advantages(
            batch.rewards,
            mask,
            batch.group_ids,
            advantage=self.advantage,
            gamma=self.gamma,
            scale_by_std=self.scale_rewards,
        )
        # The update batch as the union of every rank's sequences (trivial for one process).
        plan = dist_utils.GlobalBatch(mask, self._dist_info, self.loss_type)
        weights = self._egsw_weights(adv.advantages, batch, plan) if self.egsw is not None else None
        ref_log_probs = None
        if self.beta > 0:
            assert self.ref_policy is not None
            # The reference never changes within an update: evaluate it once, not per epoch.
            with torch.no_grad():
                ref_log_probs, _ = self.ref_policy.evaluate_sequences(
                    batch.first_obs, batch.step_obs, batch.actions, mask
                )
        max_len = self.dr_grpo_max_len if self.dr_grpo_max_len is not None else plan.max_len
        batch_size = self.batch_size or plan.n_global
        scales = []

        losses, clip_fracs, kls, ents, approx_kls = [], [], [], [], []
        for _ in range(self.n_epochs):
            # Local rows of each global minibatch; loss_scale turns local loss denominators into global ones.
            for idx, loss_scale in plan.minibatches(batch_size):
                # Rows in batch order (the loss does not depend on it): a group's rows stay adjacent,
                # which lets a language-model policy run each shared prompt once.
                idx = idx.sort().values
                m = mask[idx]
                # Trim trailing all-padding steps: cheaper for sequence models, same loss.
                t_max = int(m.any(dim=0).nonzero().max()) + 1
                m = m[:, :t_max]
                log_probs, entropies = self.policy.evaluate_sequences(
                    _index_obs(batch.first_obs, idx),
                    _index_obs(batch.step_obs, (idx, slice(0, t_max)))
                    if batch.step_obs is not None
                    else None,
                    batch.actions[idx, :t_max],
                    m,
                )
                out = grpo_loss(
                    log_probs,
                    batch.old_log_probs[idx, :t_max],
                    adv.advantages[idx, :t_max],
                    m,
                    clip_range=self.clip_range,
                    clip_range_high=self.clip_range_high,
                    loss_type=self.loss_type,
                    max_len=max_len,
                    weights=None if weights is None else weights[idx, :t_max],
                    ref_log_probs=None if ref_log_probs is None else ref_log_probs[idx, :t_max],
                    beta=self.beta,
                    entropies=entropies,
                    ent_coef=self.ent_coef,
                )
                # A NaN/inf loss or gradient raises before the step: parameters never become NaN.
                loss_value = float(out.loss.detach())
                where = (
                    f"in update {self._n_updates // self.n_epochs + 1} (num_timesteps={self.num_timesteps})"
                )
                check_loss_finite("GRPO", {"loss": loss_value}, where)
                self.policy.optimizer.zero_grad()
                (out.loss * loss_scale).backward()
                plan.sync_gradients(self.policy.parameters())  # sum over ranks (no-op for one process)
                scales.append(loss_scale)
                grad_norm = torch.nn.utils.clip_grad_norm_(self.policy.parameters(), self.max_grad_norm)
                check_loss_finite("GRPO", {"gradient norm": float(grad_norm)}, where)
                self.policy.optimizer.step()
                losses.append(loss_value * loss_scale)
                clip_fracs.append(out.clip_fraction)
                kls.append(out.kl)
                ents.append(out.entropy)
                approx_kls.append(out.approx_kl_old)
        self._n_updates += self.n_epochs

        returns = (batch.rewards * mask).sum(dim=1)
        if plan.info.enabled:
            # Global values: each minibatch statistic weighted by the rank's share of the minibatch.
            g = plan.reduce_scalars(
                {
                    "loss": float(np.mean(losses)),  # already scaled: their sum over ranks is the global loss
                    "clip_fraction": float(np.mean(np.multiply(clip_fracs, scales))),
                    "approx_kl": float(np.mean(np.multiply(approx_kls, scales))),
                    "entropy": float(np.mean(np.multiply(ents, scales))),
                    "kl": float(np.mean(np.multiply(kls, scales))),
                    "zero_std": adv.n_zero_std_groups,
                    "groups": adv.n_groups,
                    "return_sum": float(returns.sum()),
                    "length_sum": float(mask.sum()),
                    "n": B,
                },
                op="sum",
            )
            for key in ("loss", "clip_fraction", "approx_kl", "entropy"):
                self.logger.record(f"train/{key}", g[key])
            if self.beta > 0:
                self.logger.record("train/kl", g["kl"])
            self.logger.record("train/frac_reward_zero_std", g["zero_std"] / max(g["groups"], 1))
            self.logger.record("train/group_return_mean", g["return_sum"] / g["n"])
            self.logger.record("train/episode_len_mean", g["length_sum"] / g["n"])
        else:
            self.logger.record("train/loss", float(np.mean(losses)))
            self.logger.record("train/clip_fraction", float(np.mean(clip_fracs)))
            self.logger.record("train/approx_kl", float(np.mean(approx_kls)))
            self.logger.record("train/entropy", float(np.mean(ents)))
            if self.beta > 0:
                self.logger.record("train/kl", float(np.mean(kls)))
            self.logger.record("train/frac_reward_zero_std", adv.n_zero_std_groups / max(adv.n_groups, 1))
            self.logger.record("train/group_return_mean", float(returns.mean()))
            self.logger.record("train/episode_len_mean", float(mask.sum(dim=1).float().mean()))
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/learning_rate", self.lr_schedule(self._current_progress_remaining))

    # ------------------------------------------------------------------------------------------
    # Main loop
    # ------------------------------------------------------------------------------------------

    def _record_throughput(self, batch: GroupBatch, rollout_s: float, train_s: float) -> None:
        """Log this update's wall times and its episode steps per second (tokens/s on text envs).

        ``time/fps`` counts every vectorised step, including the steps of environments that already
        finished their episode and wait for the round's longest one; ``time/valid_steps_per_s`` counts
        only the steps that belong to an episode (the generated tokens, for a language model), over
        the rollout plus the update, and ``time/rollout_steps_per_s`` over the rollout alone.
        """
        valid = float(batch.mask.sum())
        self.logger.record("time/rollout_s", rollout_s)
        self.logger.record("time/train_s", train_s)
        self.logger.record("time/valid_steps_per_s", valid / max(rollout_s + train_s, 1e-9))
        self.logger.record("time/rollout_steps_per_s", valid / max(rollout_s, 1e-9))

    def dump_logs(self, iteration: int = 0) -> None:
        """Write the SB3 time/rollout entries (fps included) and everything recorded by ``train``."""
        assert self.ep_info_buffer is not None
        time_elapsed = max((time.time_ns() - self.start_time) / 1e9, sys.float_info.epsilon)
        fps = int((self.num_timesteps - self._num_timesteps_at_start) / time_elapsed)
        if iteration > 0:
            self.logger.record("time/iterations", iteration, exclude="tensorboard")
        if self._dist_info.enabled:  # recent episodes of every rank
            ep_stats = dist_utils.episode_stats(self.ep_info_buffer, self._dist_info)
            if ep_stats is not None:
                self.logger.record("rollout/ep_rew_mean", ep_stats[0])
                self.logger.record("rollout/ep_len_mean", ep_stats[1])
        elif len(self.ep_info_buffer) > 0 and len(self.ep_info_buffer[0]) > 0:
            self.logger.record("rollout/ep_rew_mean", safe_mean([ep["r"] for ep in self.ep_info_buffer]))
            self.logger.record("rollout/ep_len_mean", safe_mean([ep["l"] for ep in self.ep_info_buffer]))
        if self.ep_success_buffer:
            self.logger.record("rollout/success_rate", safe_mean(self.ep_success_buffer))
        self.logger.record("time/fps", fps)
        self.logger.record("time/time_elapsed", int(time_elapsed), exclude="tensorboard")
        self.logger.record("time/total_timesteps", self.num_timesteps, exclude="tensorboard")
        self.logger.dump(step=self.num_timesteps)

    def learn(
        self: SelfGRPO,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 1,
        tb_log_name: str = "GRPO",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfGRPO:
        """Train for at least ``total_timesteps`` environment steps (every stepped env counts).

        Parameters
        ----------
        total_timesteps : int
            Environment steps to run; whole updates are completed, so the count may overshoot.
        callback : callable, BaseCallback, list or None
            SB3 callback(s); ``on_step`` after every vectorised step, returning ``False`` stops.
        log_interval : int
            Updates between log dumps.
        tb_log_name : str
            TensorBoard run name.
        reset_num_timesteps : bool
            Restart the step counter (``False`` continues a previous ``learn``).
        progress_bar : bool
            Show a tqdm/rich progress bar.

        Returns
        -------
        GRPO
            ``self``.
        """
        if not self._dist_info.is_main:
            # Only rank 0 writes logs and shows a progress bar (train still joins every reduction).
            from stable_baselines3.common.logger import Logger

            self.set_logger(Logger(folder=None, output_formats=[]))
            progress_bar = False
        total_timesteps, callback = self._setup_learn(
            total_timesteps, callback, reset_num_timesteps, tb_log_name, progress_bar
        )
        callback.on_training_start(locals(), globals())
        assert self.env is not None
        iteration = 0
        while self.num_timesteps < total_timesteps:
            t_start = time.perf_counter()
            batch = self.collect_groups(self.env, callback)
            if batch is None:
                break
            t_collected = time.perf_counter()
            iteration += 1
            self._update_current_progress_remaining(self.num_timesteps, total_timesteps)
            self.train(batch)
            self._record_throughput(batch, t_collected - t_start, time.perf_counter() - t_collected)
            if log_interval is not None and iteration % log_interval == 0:
                self.dump_logs(iteration)
        callback.on_training_end()
        return self
