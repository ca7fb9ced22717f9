"""GRPO's DAPO-style dynamic sampling (``dynamic_sampling=True``): keep only groups with reward spread."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.logger import Logger

from egsw_gym import GRPO

torch.set_num_threads(1)

EPISODE_LEN = 3


class SometimesSparseEnv(gym.Env):
    """A start state (from the reset seed) is either "dead" (reward 0 whatever the actions) or "live"
    (reward = action each step), so dead groups always have zero reward spread and live ones rarely do.
    ``always_dead=True`` makes every start state dead."""

    def __init__(self, always_dead: bool = False) -> None:
        self.observation_space = spaces.Box(0.0, 1.0, (1,), np.float32)
        self.action_space = spaces.Discrete(2)
        self.always_dead = always_dead
        self.live = False
        self.t = 0

    def reset(self, *, seed: int | None = None, options: Any = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.live = not self.always_dead and bool(self.np_random.integers(2))
        self.t = 0
        return np.array([float(self.live)], np.float32), {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        self.t += 1
        reward = float(action) if self.live else 0.0
        return np.array([float(self.live)], np.float32), reward, self.t >= EPISODE_LEN, False, {}


class Capture(BaseCallback):
    def __init__(self) -> None:
        super().__init__()
        self.batches: list[Any] = []
        self.logged: list[dict[str, float]] = []

    def _on_rollout_end(self) -> None:
        self.batches.append(self.locals["merged"])
        self.logged.append(dict(self.model.logger.name_to_value))

    def _on_step(self) -> bool:
        return True


def silent_logger() -> Logger:
    return Logger(folder=None, output_formats=[])


def params(model: GRPO) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.policy.parameters()])


def one_update(model: GRPO, callback: BaseCallback) -> None:
    """Collect and train one whole update (``learn`` would cut it at a tiny budget's first round)."""
    _, callback = model._setup_learn(1, callback)
    batch = model.collect_groups(model.env, callback)  # no max_timesteps: all n_groups groups
    model.train(batch)


def make(always_dead: bool = False, **kwargs: Any) -> GRPO:
    env = make_vec_env(SometimesSparseEnv, n_envs=8, env_kwargs=dict(always_dead=always_dead))
    model = GRPO("MlpPolicy", env, group_size=4, n_groups=4, batch_size=8, seed=0, **kwargs)
    model.set_logger(silent_logger())
    return model


def test_kept_groups_all_have_reward_spread_and_every_step_counts():
    model = make(dynamic_sampling=True, dynamic_sampling_max_rounds=50)
    cb = Capture()
    one_update(model, cb)
    (batch,), (logged,) = cb.batches, cb.logged
    returns = (batch.rewards * batch.mask).sum(dim=1).reshape(4, 4)  # n_groups x group_size
    assert batch.mask.shape == (16, EPISODE_LEN)
    assert (returns.max(dim=1).values > returns.min(dim=1).values).all()
    assert torch.equal(batch.group_ids, torch.arange(4).repeat_interleave(4))
    rounds = logged["rollout/sampling_rounds"]
    assert rounds > 2  # about half of the start states are dead: more than the plain 2 rounds
    assert 0 < logged["rollout/frac_reward_zero_std"] < 1
    assert model.num_timesteps == rounds * 8 * EPISODE_LEN  # discarded rounds counted too
    assert model.logger.name_to_value["train/frac_reward_zero_std"] == 0.0


def test_cap_tops_the_batch_up_with_zero_spread_groups():
    model = make(always_dead=True, dynamic_sampling=True, dynamic_sampling_max_rounds=3)
    cb = Capture()
    one_update(model, cb)
    (batch,), (logged,) = cb.batches, cb.logged
    assert logged["rollout/sampling_rounds"] == 3
    assert logged["rollout/frac_reward_zero_std"] == 1.0
    assert batch.mask.shape[0] == 16  # still n_groups * group_size sequences
    assert model.num_timesteps == 3 * 8 * EPISODE_LEN
    assert model.logger.name_to_value["train/frac_reward_zero_std"] == 1.0


def test_default_cap_is_four_plain_updates():
    model = make(always_dead=True, dynamic_sampling=True)
    cb = Capture()
    one_update(model, cb)
    assert cb.logged[0]["rollout/sampling_rounds"] == 4 * 2


def test_off_by_default_and_identical_when_every_group_has_spread():
    """CartPole's random-policy groups all have length spread: dynamic sampling then collects the plain
    rounds with the same seeds, and training gives the same parameters bit for bit."""
    kwargs = dict(group_size=8, n_groups=2, n_envs=8, batch_size=8, seed=3)
    assert GRPO("MlpPolicy", "CartPole-v1", **kwargs).dynamic_sampling is False
    plain = GRPO("MlpPolicy", "CartPole-v1", **kwargs)
    plain.set_logger(silent_logger())
    plain.learn(3_000)
    dynamic = GRPO("MlpPolicy", "CartPole-v1", dynamic_sampling=True, **kwargs)
    dynamic.set_logger(silent_logger())
    cb = Capture()
    dynamic.learn(3_000, callback=cb)
    # Two rounds per update; the last update stops at the round that reaches the budget.
    assert all(log["rollout/sampling_rounds"] == 2 for log in cb.logged[:-1])
    assert cb.logged[-1]["rollout/sampling_rounds"] in (1, 2)
    assert dynamic.num_timesteps == plain.num_timesteps
    assert torch.equal(params(plain), params(dynamic))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(dynamic_sampling="yes"), "dynamic_sampling must be True or False"),
        (dict(dynamic_sampling=True, dynamic_sampling_max_rounds=0), "dynamic_sampling_max_rounds"),
        (dict(dynamic_sampling=True, dynamic_sampling_max_rounds=1.5), "dynamic_sampling_max_rounds"),
        (
            dict(dynamic_sampling=True, dynamic_sampling_max_rounds=1),
            "dynamic_sampling_max_rounds must be >= ",
        ),
    ],
)
def test_invalid_dynamic_sampling_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GRPO("MlpPolicy", "CartPole-v1", group_size=4, n_groups=4, n_envs=8, **kwargs)
