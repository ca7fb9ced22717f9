"""Issue 6: non-finite values, invalid settings, determinism of GRPO with a language model."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import DummyVecEnv

import egsw_gym.algorithms.grpo.grpo as grpo_module
from egsw_gym import EGSW, GRPO, PPO
from egsw_gym.common.finite import NonFiniteError

torch.set_num_threads(1)


class FaultyEnv(gym.Env):
    """Seedable 2-d env that emits a NaN/inf reward or observation at a chosen step of an episode."""

    observation_space = spaces.Box(-10.0, 10.0, (2,), np.float32)
    action_space = spaces.Discrete(2)

    def __init__(self, fault: str = "none", at_step: int = 3, value: float = np.nan, reward: float = 1.0):
        self.fault, self.at_step, self.value, self.reward = fault, at_step, value, reward
        self.t = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self.np_random.uniform(-1, 1, 2).astype(np.float32), {}

    def step(self, action):
        self.t += 1
        obs = np.full(2, 0.1 * self.t, np.float32)
        reward = self.reward
        if self.t == self.at_step and self.fault == "reward":
            reward = self.value
        if self.t == self.at_step and self.fault == "obs":
            obs[1] = self.value
        return obs, reward, self.t >= 6, False, {}


def params_finite(model) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.policy.parameters())


def faulty_vec(n_envs: int, faulty_index: int, **fault) -> DummyVecEnv:
    """``n_envs`` FaultyEnvs of which only ``faulty_index`` misbehaves."""
    return DummyVecEnv([lambda i=i: FaultyEnv(**(fault if i == faulty_index else {})) for i in range(n_envs)])


@pytest.mark.parametrize(
    ("fault", "value", "match"),
    [
        ("reward", np.nan, r"GRPO: reward from env 3 at step 2 of a round .* is nan"),
        ("reward", np.inf, r"GRPO: reward from env 3 .* is inf"),
        ("obs", np.nan, r"GRPO: observation from env 3 at step 2 .* contains nan"),
    ],
)
def test_grpo_non_finite_env_values_raise_and_name_the_source(fault, value, match):
    model = GRPO("MlpPolicy", faulty_vec(4, 3, fault=fault, value=value), group_size=2, n_groups=2, seed=0)
    before = [p.detach().clone() for p in model.policy.parameters()]
    with pytest.raises(NonFiniteError, match=match):
        model.learn(200)
    assert params_finite(model)
    assert all(torch.equal(a, b) for a, b in zip(before, model.policy.parameters(), strict=True))


@pytest.mark.parametrize(
    ("fault", "value", "match"),
    [
        ("reward", np.nan, r"PPO: reward from env 1 at rollout step 2 .* is nan"),
        ("obs", -np.inf, r"PPO: observation from env 1 at rollout step 2 .* contains -inf"),
    ],
)
def test_ppo_non_finite_env_values_raise_and_name_the_source(fault, value, match):
    model = PPO("MlpPolicy", faulty_vec(2, 1, fault=fault, value=value), n_steps=8, batch_size=16, seed=0)
    with pytest.raises(NonFiniteError, match=match):
        model.learn(64)
    assert params_finite(model)


def test_ppo_overflowing_value_loss_raises_before_the_step():
    # Finite but huge rewards: the value loss overflows float32 to inf. The update must not be applied.
    env = make_vec_env(lambda: FaultyEnv(reward=3e38), n_envs=2, seed=0)
    model = PPO("MlpPolicy", env, n_steps=8, batch_size=16, n_epochs=1, normalize_advantage=True, seed=0)
    with pytest.raises(
        NonFiniteError, match=r"PPO: non-finite gradient of .*value_net.* in the update at num_timesteps=16"
    ):
        model.learn(16)
    assert params_finite(model)


def test_grpo_non_finite_loss_raises_before_the_step(monkeypatch):
    real = grpo_module.grpo_loss

    def nan_loss(*args, **kwargs):
        out = real(*args, **kwargs)  # a NamedTuple
        return out._replace(loss=out.loss * float("nan"))

    monkeypatch.setattr(grpo_module, "grpo_loss", nan_loss)
    model = GRPO("MlpPolicy", "CartPole-v1", group_size=2, n_groups=1, seed=0)
    before = [p.detach().clone() for p in model.policy.parameters()]
    with pytest.raises(NonFiniteError, match=r"GRPO: non-finite loss in update 1"):
        model.learn(100)
    assert all(torch.equal(a, b) for a, b in zip(before, model.policy.parameters(), strict=True))


# ------------------------------------------------------------------------------------ settings


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(n_epochs=0), r"n_epochs must be an integer in \[1, 1e\+06\]"),
        (dict(batch_size=1), "batch_size must be an integer >= 2"),
        (dict(n_steps=0), "n_steps must be an integer >= 1"),
        (dict(gamma=1.5), r"gamma must be a finite number in \[0, 1\], got 1.5"),
        (dict(gae_lambda=-0.1), r"gae_lambda must be a finite number in \[0, 1\]"),
        (dict(clip_range=-0.1), "clip_range must be a finite number > 0, got -0.1; pass a schedule"),
        (dict(clip_range_vf=0.0), "clip_range_vf must be None"),
        (dict(ent_coef="x"), "ent_coef must be a finite number"),
        (dict(vf_coef=-1.0), r"vf_coef must be a finite number in \[0, 1e\+06\]"),
        (dict(max_grad_norm=0), "max_grad_norm must be a finite number > 0"),
        (dict(gamma=True), "gamma must be a finite number in"),
        (dict(ent_coef=float("nan")), r"ent_coef must be a finite number in \[-1e\+06, 1e\+06\], got nan"),
        (dict(normalize_advantage=1), "normalize_advantage must be True or False"),
        (dict(learning_rate=float("inf")), r"learning_rate must be a finite number in \(0, 1000\], got inf"),
        (dict(learning_rate=0.0), r"learning_rate must be a finite number in \(0, 1000\], got 0.0"),
        (dict(learning_rate=2e3), r"learning_rate must be a finite number in \(0, 1000\], got 2000.0"),
        (
            dict(learning_rate=lambda p: 3e-4 * p - 1e-4),
            r"learning_rate\(0\) must be a finite number in \[0, 1000\], got -0.0001",
        ),
        (dict(clip_range=lambda p: float("nan")), r"clip_range\(1\) must be a finite number > 0, got nan"),
        (dict(target_kl=-1.0), "target_kl must be None"),
    ],
)
def test_ppo_invalid_settings_raise_value_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PPO("MlpPolicy", make_vec_env("CartPole-v1", n_envs=2), **kwargs)


def test_ppo_schedule_checked_where_it_is_evaluated():
    """A schedule valid at both ends but NaN in between stops at that update, parameters untouched."""
    lr = lambda p: float("nan") if 0.2 < p < 0.6 else 3e-4  # noqa: E731
    model = PPO(
        "MlpPolicy", make_vec_env("CartPole-v1", n_envs=2), learning_rate=lr, n_steps=8, batch_size=16, seed=0
    )
    with pytest.raises(
        ValueError,
        match=r"learning_rate\(0.5\) must be a finite number >= 0, got nan.*progress_remaining=0.5",
    ):
        model.learn(64)
    assert params_finite(model) and model.num_timesteps == 32


@pytest.mark.parametrize("total", [-100, float("nan"), float("inf"), True])
def test_ppo_learn_rejects_bad_total_timesteps(total):
    model = PPO("MlpPolicy", make_vec_env("CartPole-v1", n_envs=2), n_steps=8, batch_size=16)
    with pytest.raises(ValueError, match=f"total_timesteps must be a finite number >= 0, got {total!r}"):
        model.learn(total)


def test_ppo_learn_zero_and_float_totals_work_as_in_sb3():
    model = PPO("MlpPolicy", make_vec_env("CartPole-v1", n_envs=2), n_steps=8, batch_size=16)
    model.learn(0)
    assert model.num_timesteps == 0
    model.learn(3.2e1)
    assert model.num_timesteps == 32


def test_optimizer_guard_refuses_nan_gradient_steps():
    """Whatever produced it, a NaN gradient never reaches the parameters (the guard is on the optimizer)."""
    model = PPO("MlpPolicy", make_vec_env("CartPole-v1", n_envs=2), n_steps=8, batch_size=16, seed=0)
    before = [p.detach().clone() for p in model.policy.parameters()]
    model.policy.action_net.weight.grad = torch.full_like(model.policy.action_net.weight, float("nan"))
    with pytest.raises(NonFiniteError, match=r"PPO: non-finite gradient of action_net.weight in the update"):
        model.policy.optimizer.step()
    assert all(torch.equal(a, b) for a, b in zip(before, model.policy.parameters(), strict=True))


def test_optimizer_guard_accepts_huge_finite_gradients():
    """The guard's fast path (a sum of norms) overflows for entries ~1e30; the exact check must let them pass."""
    model = PPO("MlpPolicy", make_vec_env("CartPole-v1", n_envs=2), n_steps=8, batch_size=16, seed=0)
    for p in model.policy.parameters():
        p.grad = torch.full_like(p, 1e30)
    model.policy.optimizer.step()  # Adam normalises the step: finite parameters
    assert params_finite(model)


def test_a_finite_clip_norm_spares_the_guard_its_pass_and_a_non_finite_one_does_not(monkeypatch):
    import egsw_gym.common.finite as finite_module

    passes = []
    real = finite_module._all_finite
    monkeypatch.setattr(finite_module, "_all_finite", lambda grads: passes.append(1) or real(grads))
    model = PPO(
        "MlpPolicy", make_vec_env("CartPole-v1", n_envs=2), n_steps=8, batch_size=16, n_epochs=2, seed=0
    )
    model.learn(16)  # one update of 2 minibatch steps, each after a finite clip norm
    assert passes == [] and model._n_updates == 2
    # A non-finite norm leaves the step to the full check, which refuses it and names the parameter.
    model.policy.action_net.weight.grad = torch.full_like(model.policy.action_net.weight, float("nan"))
    model._optimizer_guard.norm_checked(torch.tensor(float("nan")))
    with pytest.raises(NonFiniteError, match=r"non-finite gradient of action_net.weight"):
        model.policy.optimizer.step()
    assert passes == [1]
    # The spared pass covers one step only: the next unannounced step is checked again.
    for p in model.policy.parameters():
        p.grad = torch.zeros_like(p)
    model._optimizer_guard.norm_checked(1.0)
    model.policy.optimizer.step()
    model.policy.optimizer.step()
    assert passes == [1, 1]


def test_ppo_batch_size_one_is_fine_without_advantage_normalisation():
    PPO("MlpPolicy", make_vec_env("CartPole-v1", n_envs=2), batch_size=1, normalize_advantage=False)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(learning_rate=-1.0), r"learning_rate must be a finite number in \(0, 1000\], got -1.0"),
        (dict(scale_rewards="yes"), "scale_rewards must be True"),
        (dict(stats_window_size=0), "stats_window_size must be an integer >= 1"),
        (dict(env_kwargs=[1]), "env_kwargs must be a dict or None"),
        (dict(clip_range_high=-1), "clip_range_high"),
        (dict(max_grad_norm=0), "max_grad_norm"),
        (dict(dr_grpo_max_len=0), "dr_grpo_max_len"),
    ],
)
def test_grpo_invalid_settings_not_covered_before(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GRPO("MlpPolicy", "CartPole-v1", **kwargs)


def test_incompatible_spaces_explain_what_is_expected():
    with pytest.raises(
        ValueError, match=r"LMPolicy needs a text-generation environment .* got observation space Box"
    ):
        GRPO("LMPolicy", "CartPole-v1", group_size=2, n_groups=1)
    with pytest.raises(ValueError, match="MlpPolicy' needs a Box.*use 'LMPolicy'"):
        GRPO("MlpPolicy", "egsw/Arithmetic-v0", group_size=2, n_groups=1, env_kwargs=dict(max_new_tokens=4))
    with pytest.raises(ValueError, match="EGSW.mode must be one of 'trajectory', 'step', got 'episode'"):
        EGSW(mode="episode")


# ------------------------------------------------------------------------------------ determinism


def test_grpo_lm_same_seed_same_parameters(tiny_lm_grpo, flat_params):
    # PPO: tests/test_ppo.py::test_egsw_none_is_bit_identical_to_sb3 and test_reliability's resume tests;
    # GRPO control: tests/test_grpo.py::test_same_seed_same_parameters_and_different_seed_differs.
    def run(seed: int) -> torch.Tensor:
        return flat_params(tiny_lm_grpo(seed=seed).learn(16))

    a, b, c = run(1), run(1), run(2)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_ppo_same_seed_same_parameters_with_egsw():
    def run() -> torch.Tensor:
        env = make_vec_env("CartPole-v1", n_envs=2, seed=4)
        model = PPO("MlpPolicy", env, n_steps=16, batch_size=16, n_epochs=2, egsw=EGSW(), seed=4).learn(64)
        return torch.cat([p.detach().flatten() for p in model.policy.parameters()])

    assert torch.equal(run(), run())
