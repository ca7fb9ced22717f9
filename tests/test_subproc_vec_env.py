"""PPO and GRPO on SubprocVecEnv: per-env reset seeds reach the worker processes; same results as DummyVecEnv."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

from egsw_gym import EGSW, GRPO, PPO

torch.set_num_threads(1)


def _subproc(n: int) -> SubprocVecEnv:
    return make_vec_env(
        "CartPole-v1", n_envs=n, vec_env_cls=SubprocVecEnv, vec_env_kwargs={"start_method": "fork"}
    )


def test_grpo_reset_seeds_reach_subprocesses() -> None:
    """GRPO._set_reset_seeds sets ``_seeds`` on the SubprocVecEnv, whose reset() sends one seed per remote."""
    env = _subproc(4)
    try:
        GRPO._set_reset_seeds(env, [7, 7, 9, 9])
        obs = env.reset()
        ref = np.stack([gym.make("CartPole-v1").reset(seed=s)[0] for s in (7, 7, 9, 9)])
        np.testing.assert_array_equal(obs, ref)
        assert env._seeds == [None] * 4  # consumed by that reset, as SB3 does
    finally:
        env.close()


def test_grpo_subproc_matches_dummy() -> None:
    """Same seed, same parameters whether the group's envs run in this process or in 4 workers."""
    params = []
    for vec_cls in (DummyVecEnv, SubprocVecEnv):
        kwargs = {"start_method": "fork"} if vec_cls is SubprocVecEnv else None
        env = make_vec_env("CartPole-v1", n_envs=4, vec_env_cls=vec_cls, vec_env_kwargs=kwargs)
        model = GRPO(
            "MlpPolicy", env, group_size=4, n_groups=2, n_epochs=1, seed=0, device="cpu", egsw=EGSW()
        )
        model.learn(300)
        params.append(torch.nn.utils.parameters_to_vector(model.policy.parameters()).detach())
        env.close()
    torch.testing.assert_close(params[0], params[1], rtol=0, atol=0)


def test_ppo_subproc_matches_dummy() -> None:
    params = []
    for vec_cls in (DummyVecEnv, SubprocVecEnv):
        kwargs = {"start_method": "fork"} if vec_cls is SubprocVecEnv else None
        env = make_vec_env("CartPole-v1", n_envs=2, seed=0, vec_env_cls=vec_cls, vec_env_kwargs=kwargs)
        model = PPO(
            "MlpPolicy", env, n_steps=32, batch_size=32, n_epochs=1, seed=0, device="cpu", egsw=EGSW()
        )
        model.learn(64)
        params.append(torch.nn.utils.parameters_to_vector(model.policy.parameters()).detach())
        env.close()
    torch.testing.assert_close(params[0], params[1], rtol=0, atol=0)
