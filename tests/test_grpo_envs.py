"""GRPO with SB3-style environments and policies: small vec envs (a group spans rounds), a single env in
``set_env``/``load``, ``CnnPolicy`` and ``MultiInputPolicy``, and the public env factory."""

from __future__ import annotations

import copy
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.envs import FakeImageEnv, SimpleMultiObsEnv
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.vec_env import DummyVecEnv, VecMonitor

from egsw_gym import GRPO
from egsw_gym.algorithms.grpo.rollout import RoundPlan
from egsw_gym.common.env_util import build_vec_env, is_text_env
from egsw_gym.policies import CnnPolicy, MlpPolicy, MultiInputPolicy

torch.set_num_threads(1)


class Batches(BaseCallback):
    """Keeps every update's batch (``locals["merged"]`` at the end of a rollout)."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[Any] = []

    def _on_rollout_end(self) -> None:
        self.batches.append(self.locals["merged"])

    def _on_step(self) -> bool:
        return True


class GreedyMlpPolicy(MlpPolicy):
    """Always the mode: with a deterministic env, a group's episodes depend only on its reset seed."""

    def act(self, obs: Any, state: Any, deterministic: bool = False) -> Any:
        return super().act(obs, state, deterministic=True)


def params(model: GRPO) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.policy.parameters()])


def one_update(model: GRPO, callback: BaseCallback) -> None:
    """Collect and train one whole update (``learn`` would cut it at a tiny budget's first round)."""
    _, callback = model._setup_learn(1, callback)
    batch = model.collect_groups(model.env, callback)  # no max_timesteps: all n_groups groups
    model.train(batch)


# ---------------------------------------------------------------- a group spans several rounds


def test_round_plan_lays_out_groups_in_rounds():
    plan = RoundPlan(n_envs=3, group_size=2)
    assert (plan.groups_per_block, plan.rounds_per_block, plan.aligned) == (3, 2, False)
    rounds = plan.rounds(np.array([10, 20, 30]))
    assert [r[0].tolist() for r in rounds] == [[10, 10, 20], [20, 30, 30]]
    assert [r[1].tolist() for r in rounds] == [[0, 0, 1], [1, 2, 2]]
    # Two rounds that hold members of one group get different sampling keys.
    assert not np.array_equal(plan.sampling_key(rounds[0][0], 0), plan.sampling_key(rounds[1][0], 3))
    aligned = RoundPlan(n_envs=4, group_size=2)
    assert aligned.aligned and aligned.sampling_key(np.array([5, 5, 6, 6]), 0).tolist() == [5, 6]


def test_sb3_default_vec_env_smaller_than_a_group():
    # Issue 11: SB3's usual setup, 4 envs, with GRPO's default group_size=8.
    model = GRPO("MlpPolicy", make_vec_env("CartPole-v1", n_envs=4), group_size=8, seed=0)
    cb = Batches()
    one_update(model, cb)
    batch = cb.batches[0]
    assert batch.mask.shape[0] == 32 and batch.group_ids.tolist() == sum([[k] * 8 for k in range(4)], [])
    for k in range(4):
        members = batch.first_obs[batch.group_ids == k]
        assert torch.equal(members, members[:1].expand_as(members))  # both rounds of a group: one seed
    assert not torch.equal(batch.first_obs[0], batch.first_obs[8])
    assert torch.isfinite(params(model)).all()


@pytest.mark.parametrize("n_envs", [4, 6])
def test_small_vec_env_collects_the_groups_a_big_one_does(n_envs):
    """Deterministic env and policy: the batch and the trained weights do not depend on n_envs."""

    def run(env: Any) -> tuple[Any, torch.Tensor]:
        model = GRPO(
            GreedyMlpPolicy, env, group_size=4, n_groups=3, batch_size=5, ent_coef=0.05, seed=11, device="cpu"
        )
        cb = Batches()
        one_update(model, cb)
        return cb.batches[0], params(model)

    small, small_params = run(make_vec_env("CartPole-v1", n_envs=n_envs))
    big, big_params = run(make_vec_env("CartPole-v1", n_envs=12))  # all 3 groups in one round
    assert torch.equal(small.mask, big.mask) and torch.equal(small.group_ids, big.group_ids)
    assert torch.equal(small.first_obs, big.first_obs)
    m = big.mask
    for field in ("actions", "rewards"):
        assert torch.equal(getattr(small, field)[m], getattr(big, field)[m]), field
    assert torch.equal(small.step_obs[m], big.step_obs[m])
    # Log-probs come from forward passes over 4 or 12 rows: equal up to float rounding.
    torch.testing.assert_close(small.old_log_probs[m], big.old_log_probs[m], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(small_params, big_params, rtol=1e-5, atol=1e-6)
    assert not torch.equal(small_params, params(GRPO(GreedyMlpPolicy, "CartPole-v1", seed=11)))


def test_round_seeded_sampling_differs_between_the_rounds_of_one_group():
    model = GRPO("MlpPolicy", make_vec_env("CartPole-v1", n_envs=2), group_size=4, n_groups=1, seed=2)
    model.round_seeded_sampling = True
    cb = Batches()
    model.learn(1, callback=cb)
    batch = cb.batches[0]
    # Rounds 0 and 1 play members (0, 1) and (2, 3) of one group from one seed; their samples differ.
    assert torch.equal(batch.first_obs[0], batch.first_obs[2])
    t = int(min(batch.mask[0].sum(), batch.mask[2].sum()))
    assert not torch.equal(batch.actions[:2, :t], batch.actions[2:, :t])


def test_rounds_that_do_not_fill_the_update_are_refused():
    with pytest.raises(ValueError, match=r"n_groups \* group_size = 12 .* n_envs = 5"):
        GRPO("MlpPolicy", make_vec_env("CartPole-v1", n_envs=5), group_size=4, n_groups=3)


def test_dynamic_sampling_with_groups_spanning_rounds():
    model = GRPO(
        "MlpPolicy",
        make_vec_env("CartPole-v1", n_envs=3),
        group_size=2,
        n_groups=3,
        dynamic_sampling=True,
        seed=1,
    )
    model.set_logger(Logger(folder=None, output_formats=[]))
    cb = Batches()
    model.learn(1, callback=cb, log_interval=1_000)  # nothing dumped: the records stay readable
    batch = cb.batches[0]
    assert batch.group_ids.tolist() == [0, 0, 1, 1, 2, 2]
    for k in range(3):
        assert torch.equal(batch.first_obs[2 * k], batch.first_obs[2 * k + 1])
    assert model.logger.name_to_value["rollout/sampling_rounds"] >= 2  # whole blocks of 2 rounds


# ---------------------------------------------------------------- set_env / load with one gym.Env


def test_set_env_and_load_accept_a_single_env(tmp_path):
    model = GRPO("MlpPolicy", make_vec_env("CartPole-v1", n_envs=4), group_size=4, n_groups=2, seed=0)
    model.set_env(gym.make("CartPole-v1"))
    assert isinstance(model.env, DummyVecEnv) and model.env.num_envs == 4
    model.learn(100)
    model.save(tmp_path / "m")
    loaded = GRPO.load(tmp_path / "m", env=gym.make("CartPole-v1"))
    assert loaded.env.num_envs == 4 and torch.equal(params(loaded), params(model))
    loaded.learn(100)


# ---------------------------------------------------------------- CnnPolicy and MultiInputPolicy


class SeededFakeImageEnv(FakeImageEnv):
    """SB3's fake image env, its observations drawn from a generator seeded by ``reset(seed=...)``."""

    def __init__(self) -> None:
        super().__init__(action_dim=3, screen_height=36, screen_width=36, n_channels=1)
        self.ep_length = 4

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        if seed is not None:
            self.observation_space.seed(seed)
        return super().reset(seed=seed, options=options)

    def step(self, action: Any) -> Any:
        obs, _, terminated, truncated, info = super().step(action)
        return obs, float(action == 1), terminated, truncated, info  # a reward that depends on the action


#: SB3's grid world with a Dict observation (vector + image); copies share its random state tables.
MULTI_OBS_ENV = SimpleMultiObsEnv(random_start=False)


@pytest.mark.parametrize(
    ("policy", "policy_class", "make_env"),
    [
        ("CnnPolicy", CnnPolicy, SeededFakeImageEnv),
        ("MultiInputPolicy", MultiInputPolicy, lambda: copy.deepcopy(MULTI_OBS_ENV)),
    ],
)
def test_image_and_dict_policies_learn_and_round_trip(tmp_path, policy, policy_class, make_env):
    env = DummyVecEnv([make_env] * 4)
    model = GRPO(policy, env, group_size=2, n_groups=2, n_epochs=1, learning_rate=1e-3, seed=0)
    assert type(model.policy) is policy_class
    extractor = {"CnnPolicy": "NatureCNN", "MultiInputPolicy": "CombinedExtractor"}[policy]
    assert type(model.policy.features_extractor).__name__ == extractor
    before = params(model)
    model.learn(64)
    after = params(model)
    assert torch.isfinite(after).all() and not torch.equal(before, after)
    model.save(tmp_path / "model")
    loaded = GRPO.load(tmp_path / "model", env=DummyVecEnv([make_env] * 4))
    assert type(loaded.policy) is policy_class and torch.equal(params(loaded), after)
    obs = env.reset()
    assert np.array_equal(
        model.predict(obs, deterministic=True)[0], loaded.predict(obs, deterministic=True)[0]
    )


def test_mlp_policy_on_dict_observations_points_to_multi_input_policy():
    with pytest.raises(ValueError, match="use 'MultiInputPolicy'"):
        GRPO("MlpPolicy", DummyVecEnv([lambda: copy.deepcopy(MULTI_OBS_ENV)] * 2), group_size=2)


# ---------------------------------------------------------------- the env factory and the deprecated alias


def test_build_vec_env_and_is_text_env():
    assert is_text_env("egsw/Arithmetic-v0") and not is_text_env("CartPole-v1")
    assert not is_text_env("NoSuchEnv-v0")
    text = build_vec_env("egsw/Arithmetic-v0", 3, env_kwargs=dict(max_new_tokens=4), seed=5)
    assert isinstance(text, VecMonitor) and text.num_envs == 3
    control = build_vec_env("CartPole-v1", 2, seed=7)
    assert isinstance(control, DummyVecEnv) and control.num_envs == 2
    single = gym.make("CartPole-v1")
    copies = build_vec_env(single, 3)
    assert copies.num_envs == 3 and copies.envs[0].env is single  # the given env is the first copy
    with pytest.raises(ValueError, match="env must be a gymnasium.Env"):
        build_vec_env(42, 2)
    with pytest.raises(ValueError, match="n_envs must be an integer >= 1"):
        build_vec_env("CartPole-v1", 0)
