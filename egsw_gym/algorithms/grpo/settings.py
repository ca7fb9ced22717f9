"""GRPO's settings: one validation rule per constructor argument, and the policy aliases.

The rules use the validators shared by PPO, GRPO and EGSW (:mod:`egsw_gym.common.checks`), so a
value is judged the same way everywhere (booleans are never numbers, NaN and inf are refused...).
:meth:`GRPO._check_hyperparameters <egsw_gym.algorithms.grpo.GRPO._check_hyperparameters>` applies
them at construction, and to the values a checkpoint brings back.
"""

from __future__ import annotations

import importlib
from typing import Any

from gymnasium import spaces
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.vec_env import VecEnv

from egsw_gym.algorithms.grpo.core import ADVANTAGE_TYPES, LOSS_TYPES
from egsw_gym.algorithms.grpo.sr_grpo import check_sr_temperature
from egsw_gym.common.checks import (
    MAX_COEF,
    MAX_EPOCHS,
    check_bool,
    check_choice,
    check_int,
    check_learning_rate,
    check_number,
)
from egsw_gym.policies.mlp import CnnPolicy, MlpPolicy, MultiInputPolicy

__all__ = [
    "CHECKPOINT_HYPERPARAMETERS",
    "HYPERPARAMETER_CHECKS",
    "POLICY_ALIASES",
    "LazyPolicyAliases",
    "check_policy_fits_env",
]


class LazyPolicyAliases(dict):
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


def check_env_kwargs(name: str, value: Any) -> Any:
    if value is not None and not isinstance(value, dict):
        raise ValueError(f"{name} must be a dict or None, got {type(value).__name__}")
    return value


#: One rule per hyperparameter (the shared validators of :mod:`egsw_gym.common.checks`).
HYPERPARAMETER_CHECKS: dict[str, Any] = {
    "group_size": lambda n, v: check_int(n, v, low=2, hint="a group compares episodes"),
    "n_groups": lambda n, v: check_int(n, v, low=1),
    "n_envs": lambda n, v: check_int(n, v, low=1, allow_none=True),
    "n_epochs": lambda n, v: check_int(n, v, low=1, high=MAX_EPOCHS),
    "batch_size": lambda n, v: check_int(n, v, low=1, allow_none=True, hint="None means the whole batch"),
    "learning_rate": lambda n, v: check_learning_rate(v, n),
    "clip_range": lambda n, v: check_number(n, v, low=0, high=1, low_open=True, high_open=True),
    "clip_range_high": lambda n, v: check_number(n, v, low=0, low_open=True, allow_none=True),
    "beta": lambda n, v: check_number(n, v, low=0, high=MAX_COEF),
    "loss_type": lambda n, v: check_choice(n, v, LOSS_TYPES),
    "advantage": lambda n, v: check_choice(n, v, ADVANTAGE_TYPES),
    "sr_temperature": check_sr_temperature,
    "gamma": lambda n, v: check_number(n, v, low=0, high=1, low_open=True),
    "scale_rewards": lambda n, v: check_bool(n, v, hint="True is GRPO, False is Dr. GRPO"),
    "ent_coef": lambda n, v: check_number(n, v, low=-MAX_COEF, high=MAX_COEF),
    "positive_weight": lambda n, v: check_number(n, v, low=0, high=MAX_COEF, low_open=True),
    "top_entropy_quantile": lambda n, v: check_number(n, v, low=0, high=1, low_open=True),
    "max_grad_norm": lambda n, v: check_number(n, v, low=0, low_open=True),
    "dr_grpo_max_len": lambda n, v: check_int(n, v, low=1, allow_none=True),
    "dynamic_sampling": lambda n, v: check_bool(n, v),
    "dynamic_sampling_max_rounds": lambda n, v: check_int(n, v, low=1, allow_none=True),
    "stats_window_size": lambda n, v: check_int(n, v, low=1),
    "env_kwargs": check_env_kwargs,
}


#: Hyperparameters every GRPO checkpoint holds, checked on load by the rules above. Not listed:
#: ``learning_rate`` (a schedule may be a callable the file cannot carry) and later additions.
CHECKPOINT_HYPERPARAMETERS = ("group_size", "n_groups", "n_envs", "n_epochs", "batch_size", "clip_range",
                              "clip_range_high", "beta", "loss_type", "advantage", "gamma", "ent_coef",
                              "max_grad_norm", "dr_grpo_max_len", "dynamic_sampling",
                              "dynamic_sampling_max_rounds")  # fmt: skip


def check_policy_fits_env(policy: Any, env: VecEnv | None) -> None:
    """A clearer message than SB3's when ``"MlpPolicy"`` meets a ``Dict`` observation space."""
    obs_space = getattr(env, "observation_space", None)
    if policy == "MlpPolicy" and isinstance(obs_space, spaces.Dict):
        raise ValueError(
            f"policy='MlpPolicy' needs a Box, Discrete, MultiDiscrete or MultiBinary observation space, got "
            f"{obs_space}. For the text-generation environments (Dict of input_ids and attention_mask) use "
            "'LMPolicy'; for other Dict observations use 'MultiInputPolicy'"
        )


#: ``GRPO.policy_aliases``: the MLP actors directly, ``"LMPolicy"`` on first use.
POLICY_ALIASES = LazyPolicyAliases(
    MlpPolicy=MlpPolicy,
    CnnPolicy=CnnPolicy,
    MultiInputPolicy=MultiInputPolicy,
    LMPolicy="egsw_gym.policies.lm:LMPolicy",
)
