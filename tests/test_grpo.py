"""GRPO end to end on tiny budgets: learning smoke tests, groups, masking, determinism, save/load, errors."""

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

from egsw_gym import EGSW, GRPO
from egsw_gym.policies import GRPOPolicy, MlpPolicy

torch.set_num_threads(1)


class CaptureBatches(BaseCallback):
    """Keeps every collected batch and counts on_step calls."""

    def __init__(self, stop_after_steps: int | None = None) -> None:
        super().__init__()
        self.batches: list[Any] = []
        self.n_steps = 0
        self.stop_after_steps = stop_after_steps
        self.started = self.ended = False

    def _on_training_start(self) -> None:
        self.started = True

    def _on_training_end(self) -> None:
        self.ended = True

    def _on_rollout_end(self) -> None:
        self.batches.append(self.locals["merged"])

    def _on_step(self) -> bool:
        self.n_steps += 1
        return self.stop_after_steps is None or self.n_steps < self.stop_after_steps


def silent_logger() -> Logger:
    return Logger(folder=None, output_formats=[])


def params(model: GRPO) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.policy.parameters()])


# ---------------------------------------------------------------- learning smoke tests


def test_cartpole_learns_a_little_and_logs_everything():
    model = GRPO(
        "MlpPolicy",
        "CartPole-v1",
        group_size=8,
        n_groups=2,
        learning_rate=3e-3,
        batch_size=8,
        seed=0,
        egsw=EGSW(),
    )
    model.set_logger(silent_logger())
    # log_interval larger than the number of updates: nothing is dumped, so the records stay readable.
    model.learn(6_000, log_interval=10_000)
    logged = model.logger.name_to_value
    for key in (
        "train/loss",
        "train/clip_fraction",
        "train/entropy",
        "train/frac_reward_zero_std",
        "egsw/weight_max",
        "egsw/weight_ess",
        "egsw/entropy_mean",
    ):
        assert key in logged and np.isfinite(logged[key]), key
    # Every value is a Python number: a tensor would be written to progress.csv as
    # "tensor(0.89, dtype=torch.float64)", whose comma shifts every later column.
    bad = {k: type(v).__name__ for k, v in logged.items() if not isinstance(v, (int, float, str))}
    assert not bad, bad
    assert "train/kl" not in logged  # beta = 0: no reference policy, no KL
    assert model.ref_policy is None
    assert model.num_timesteps >= 6_000


def test_pendulum_box_actions_with_kl_process_advantage_and_options():
    model = GRPO(
        "MlpPolicy",
        "Pendulum-v1",
        group_size=4,
        n_groups=2,
        n_envs=4,
        beta=0.05,
        advantage="process",
        gamma=0.99,
        clip_range_high=0.28,
        loss_type="dr_grpo",
        ent_coef=0.01,
        egsw=EGSW(mode="step", max_weight=3.0),
        seed=1,
    )
    model.set_logger(silent_logger())
    model.learn(1_600, log_interval=10_000)
    logged = model.logger.name_to_value
    assert np.isfinite(logged["train/kl"]) and logged["train/kl"] >= 0
    assert logged["egsw/weight_max"] <= 3.0 + 1e-6
    assert isinstance(model.ref_policy, MlpPolicy)
    assert not any(p.requires_grad for p in model.ref_policy.parameters())
    action, _ = model.predict(np.zeros(3, dtype=np.float32))
    assert action.shape == (1,) and -2 <= action[0] <= 2


@pytest.mark.parametrize("loss_type", ["grpo", "token"])
def test_cartpole_return_improves_over_short_training(loss_type):
    model = GRPO(
        "MlpPolicy",
        "CartPole-v1",
        group_size=8,
        n_groups=4,
        learning_rate=3e-3,
        batch_size=8,
        loss_type=loss_type,
        seed=0,
    )
    cb = CaptureBatches()
    model.learn(25_000, callback=cb)
    lengths = [float(b.mask.sum(dim=1).float().mean()) for b in cb.batches]
    assert np.mean(lengths[-2:]) > 2 * lengths[0], lengths


# ---------------------------------------------------------------- groups and masking


def test_group_members_share_their_start_state_and_groups_differ():
    model = GRPO("MlpPolicy", "CartPole-v1", group_size=4, n_groups=4, n_envs=8, seed=3)
    cb = CaptureBatches()
    model.learn(500, callback=cb)
    batch = cb.batches[0]
    assert batch.first_obs.shape == (16, 4)  # two rounds of two groups
    assert batch.group_ids.tolist() == [0] * 4 + [1] * 4 + [2] * 4 + [3] * 4
    for k in range(4):
        members = batch.first_obs[batch.group_ids == k]
        assert torch.equal(members, members[:1].expand_as(members))
    firsts = [batch.first_obs[4 * k] for k in range(4)]
    assert all(not torch.equal(firsts[i], firsts[j]) for i in range(4) for j in range(i + 1, 4))
    # The first stored step observation is the reset observation.
    assert torch.equal(batch.step_obs[:, 0], batch.first_obs)


def test_masks_cover_exactly_each_first_episode():
    model = GRPO("MlpPolicy", "CartPole-v1", group_size=4, n_groups=2, seed=4)
    cb = CaptureBatches()
    model.learn(300, callback=cb)
    batch = cb.batches[0]
    lengths = batch.mask.sum(dim=1)
    # A prefix mask: valid steps first, then padding / post-episode steps only.
    T = batch.mask.shape[1]
    assert torch.equal(batch.mask, torch.arange(T)[None, :] < lengths[:, None])
    assert lengths.min() < lengths.max()  # a random policy gives unequal lengths: the case to mask
    assert int(lengths.max()) == T
    # Monitor's records of the first episodes match the masked sums (CartPole: reward 1 per step).
    episodes = sorted(int(ep["l"]) for ep in list(model.ep_info_buffer)[: len(lengths)])
    assert episodes == sorted(lengths.tolist())
    assert torch.equal((batch.rewards * batch.mask).sum(dim=1), lengths.float())


# ---------------------------------------------------------------- determinism, save/load, callbacks


def test_same_seed_same_parameters_and_different_seed_differs():
    def run(seed: int) -> torch.Tensor:
        model = GRPO(
            "MlpPolicy", "CartPole-v1", group_size=4, n_groups=2, batch_size=4, seed=seed, egsw=EGSW()
        )
        model.learn(1_500)
        return params(model)

    a, b, c = run(7), run(7), run(8)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_uniform_egsw_weights_reproduce_plain_grpo_exactly():
    # alpha = 0 and a huge temperature make every score equal in float: all weights are exactly 1.
    def run(egsw: EGSW | None) -> torch.Tensor:
        model = GRPO("MlpPolicy", "CartPole-v1", group_size=4, n_groups=2, batch_size=4, seed=5, egsw=egsw)
        model.learn(1_000)
        return params(model)

    assert torch.equal(run(None), run(EGSW(alpha=0.0, temperature=1e30, mode="step")))


def test_save_load_round_trip(tmp_path):
    egsw = EGSW(alpha=0.3, temperature=2.0, mode="trajectory")
    model = GRPO("MlpPolicy", "Pendulum-v1", group_size=2, n_groups=2, n_envs=4, beta=0.1, egsw=egsw, seed=0)
    model.learn(800)
    model.save(tmp_path / "grpo")
    loaded = GRPO.load(tmp_path / "grpo", env=make_vec_env("Pendulum-v1", n_envs=4))
    assert loaded.egsw == egsw and loaded.egsw_config == egsw.to_dict()
    assert loaded.group_size == 2 and loaded.beta == 0.1
    # An explicit load(..., egsw=...) replaces the stored config (as for PPO).
    override = EGSW(alpha=0.0, mode="step")
    assert GRPO.load(tmp_path / "grpo", egsw=override).egsw == override
    assert GRPO.load(tmp_path / "grpo", egsw=override).egsw_config == override.to_dict()
    assert torch.equal(params(loaded), params(model))
    assert torch.equal(
        torch.cat([p.flatten() for p in loaded.ref_policy.parameters()]),
        torch.cat([p.flatten() for p in model.ref_policy.parameters()]),
    )
    obs = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    assert np.array_equal(
        model.predict(obs, deterministic=True)[0], loaded.predict(obs, deterministic=True)[0]
    )
    loaded.learn(400)  # training continues after a load
    # Without an env a loaded model can still predict.
    bare = GRPO.load(tmp_path / "grpo")
    assert np.array_equal(bare.predict(obs, deterministic=True)[0], model.predict(obs, deterministic=True)[0])


def test_callbacks_progress_bar_and_early_stop():
    model = GRPO("MlpPolicy", "CartPole-v1", group_size=2, n_groups=1, seed=0)
    cb = CaptureBatches(stop_after_steps=5)
    model.learn(10_000, callback=cb)
    assert cb.started and cb.ended and cb.n_steps == 5 and model.num_timesteps == 10
    calls = []
    model.learn(200, callback=lambda _locals, _globals: calls.append(1) or True, progress_bar=True)
    assert len(calls) == model.num_timesteps // 2


def test_set_env_and_gym_env_instance():
    model = GRPO("MlpPolicy", gym.make("CartPole-v1"), group_size=2, n_groups=1, seed=0)
    assert model.n_envs == 2
    model.set_env(make_vec_env("CartPole-v1", n_envs=2))
    model.learn(100)
    with pytest.raises(ValueError, match="seedable"):
        model.set_env(make_vec_env(lambda: IgnoreSeed(gym.make("CartPole-v1")), n_envs=2))


# ---------------------------------------------------------------- errors


class NonSeedableEnv(gym.Env):
    """Ignores the reset seed: a group could not share its start state."""

    observation_space = spaces.Box(-1, 1, (4,), np.float32)
    action_space = spaces.Discrete(2)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        return np.random.uniform(-1, 1, 4).astype(np.float32), {}

    def step(self, action):
        return np.zeros(4, np.float32), 1.0, True, False, {}


class IgnoreSeed(gym.Wrapper):
    """CartPole that drops the reset seed."""

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        return self.env.reset(seed=None, options=options)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(group_size=1), "group_size"),
        (dict(group_size=4, n_envs=6), "n_envs"),
        (dict(loss_type="ppo"), "loss_type.*grpo.*dr_grpo.*token"),
        (dict(advantage="gae"), "advantage.*outcome.*process"),
        (dict(clip_range=0.0), "clip_range"),
        (dict(gamma=1.5), "gamma"),
        (dict(beta=-1.0), "beta"),
        (dict(n_epochs=0), "n_epochs"),
        (dict(batch_size=0), "batch_size"),
        (dict(egsw="yes"), "egsw"),
    ],
)
def test_invalid_settings_raise_value_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GRPO("MlpPolicy", "CartPole-v1", **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(ent_coef=float("nan")), "ent_coef must be a finite number"),
        (dict(ent_coef=float("inf")), "ent_coef must be a finite number"),
        (dict(beta=float("inf")), r"beta must be a finite number in \[0, 1e\+06\]"),
        (dict(beta=True), r"beta must be a finite number in \[0, 1e\+06\], got True"),
        (dict(gamma=True), "gamma must be a finite number in \\(0, 1\\], got True"),
        (dict(learning_rate=float("inf")), r"learning_rate must be a finite number in \(0, 1000\]"),
        (dict(learning_rate=float("nan")), r"learning_rate must be a finite number in \(0, 1000\]"),
        (dict(learning_rate=0.0), r"learning_rate must be a finite number in \(0, 1000\]"),
        (dict(learning_rate=lambda p: float("inf")), "learning_rate.* returned it at progress_remaining=1"),
        (dict(learning_rate=lambda p: p - 0.5), "learning_rate.* returned it at progress_remaining=0"),
        (dict(learning_rate=lambda p: 1 - p), "learning_rate.* returned it at progress_remaining=1"),
        (dict(group_size=True), "group_size must be an integer >= 2, got True"),
        (dict(scale_rewards=1), "scale_rewards must be True or False"),
    ],
)
def test_bad_numbers_are_refused_with_the_shared_checks(kwargs, match):
    # Issue 11: the same rules as PPO and EGSW (egsw_gym.common.checks); bools are never numbers.
    with pytest.raises(ValueError, match=match):
        GRPO("MlpPolicy", "CartPole-v1", **{"group_size": 2, "n_groups": 1, **kwargs})


def test_a_schedule_that_turns_bad_midway_stops_training_before_the_step():
    def schedule(progress_remaining: float) -> float:
        return float("inf") if 0.2 < progress_remaining < 0.8 else 1e-3  # fine at 1 and 0

    model = GRPO("MlpPolicy", "CartPole-v1", group_size=2, n_groups=1, learning_rate=schedule, seed=0)
    with pytest.raises(ValueError, match=r"learning_rate\(0\.\d+\).* returned it at progress_remaining=0\."):
        model.learn(2_000)
    assert torch.isfinite(params(model)).all()  # the bad value never reached the optimizer


def test_learn_rejects_negative_and_nan_totals_and_accepts_floats():
    model = GRPO("MlpPolicy", "CartPole-v1", group_size=2, n_groups=1, seed=0)
    before = params(model)
    for bad in (-100, float("nan"), float("inf"), True, "100"):
        with pytest.raises(ValueError, match="total_timesteps"):
            model.learn(bad)
    model.learn(0)  # a no-op, as in SB3
    assert model.num_timesteps == 0 and torch.equal(params(model), before)
    model.learn(40.0)  # a float total works, as SB3's learn(1e5) does
    assert model.num_timesteps >= 40


def test_sb3_linear_schedule_ending_at_zero_trains_to_the_end():
    # SB3's documented linear_schedule: p * lr, exactly 0 at the end; the last update may overshoot
    # total_timesteps, and the floored progress keeps its learning rate at 0, never negative.
    model = GRPO(
        "MlpPolicy", "CartPole-v1", group_size=2, n_groups=1, learning_rate=lambda p: p * 1e-3, seed=0
    )
    model.learn(50)
    assert model.num_timesteps > 50 and model._current_progress_remaining == 0.0
    assert model.policy.optimizer.param_groups[0]["lr"] == 0.0


def test_check_hyperparameters_validates_what_it_is_given():
    # The classmethod the serialization hook calls with the values a checkpoint brings back.
    GRPO._check_hyperparameters(group_size=4, gamma=0.9, num_timesteps=10)  # unknown keys are ignored
    with pytest.raises(ValueError, match=r"n_epochs must be an integer in \[1, 1e\+06\]"):
        GRPO._check_hyperparameters(n_epochs=0)


def test_env_dependent_errors():
    with pytest.raises(ValueError, match=r"n_groups \* group_size = 16 .* multiple of the env's n_envs = 6"):
        GRPO("MlpPolicy", make_vec_env("CartPole-v1", n_envs=6), group_size=4)
    with pytest.raises(ValueError, match="n_groups"):
        GRPO("MlpPolicy", make_vec_env("CartPole-v1", n_envs=8), group_size=4, n_groups=3)
    with pytest.raises(ValueError, match="not seedable"):
        GRPO("MlpPolicy", make_vec_env(NonSeedableEnv, n_envs=2), group_size=2, n_groups=1)
    with pytest.raises(ValueError, match="unknown"):
        GRPO("NoSuchPolicy", "CartPole-v1")


def test_lm_policy_alias_is_lazy():
    assert dict.__getitem__(GRPO.policy_aliases, "LMPolicy") == "egsw_gym.policies.lm:LMPolicy"
    assert GRPO.policy_aliases["MlpPolicy"] is MlpPolicy


# ---------------------------------------------------------------- the LM-shaped path: dict obs, state, no step obs


class ToyPromptEnv(gym.Env):
    """A text-env look-alike: Dict obs of int64 ``input_ids``/``attention_mask``, token actions.

    The prompt is one random token drawn from the reset seed; the episode ends on token 0 (EOS) or
    after 4 tokens; reward 1 at the end if the first generated token equals the prompt token.
    """

    observation_space = spaces.Dict(
        {"input_ids": spaces.Box(0, 4, (5,), np.int64), "attention_mask": spaces.Box(0, 1, (5,), np.int64)}
    )
    action_space = spaces.Discrete(5)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.ids = [int(self.np_random.integers(1, 5))]
        self.first = None
        return self._obs(), {}

    def _obs(self):
        ids = np.zeros(5, np.int64)
        ids[: len(self.ids)] = self.ids
        return {"input_ids": ids, "attention_mask": (np.arange(5) < len(self.ids)).astype(np.int64)}

    def step(self, action):
        action = int(action)
        self.first = action if self.first is None else self.first
        self.ids.append(action)
        done = action == 0 or len(self.ids) == 5
        return self._obs(), float(done and self.first == self.ids[0]), done, False, {}


class ToySequencePolicy(GRPOPolicy):
    """Reads the prompt once (state holds it and the position), like an LM with a KV cache."""

    uses_step_observations = False

    def __init__(self, observation_space, action_space, lr_schedule, **kwargs) -> None:
        super().__init__(observation_space, action_space)
        self.logits = torch.nn.Parameter(torch.zeros(5, 5, 5))  # (prompt token, position, action)
        self.optimizer = torch.optim.Adam(self.parameters(), lr=lr_schedule(1))
        self.reads = 0

    def act(self, obs, state, deterministic=False):
        if state is None:  # first step of a round: read the prompt from the observation
            self.reads += 1
            state = (obs["input_ids"][:, 0].long(), 0)
        prompt, t = state
        dist = torch.distributions.Categorical(logits=self.logits[prompt, min(t, 4)])
        actions = dist.probs.argmax(-1) if deterministic else dist.sample()
        return actions, dist.log_prob(actions), dist.entropy(), (prompt, t + 1)

    def evaluate_sequences(self, first_obs, step_obs, actions, mask):
        assert step_obs is None and isinstance(first_obs, dict)
        T = actions.shape[1]
        logits = self.logits[first_obs["input_ids"][:, 0].long()][:, :T]  # (B, T, 5), T <= 4 here
        dist = torch.distributions.Categorical(logits=logits)
        return dist.log_prob(actions.long()), dist.entropy()


def test_dict_observations_and_stateful_policy_without_step_observations():
    model = GRPO(
        ToySequencePolicy,
        make_vec_env(ToyPromptEnv, n_envs=8),
        group_size=4,
        n_groups=4,
        learning_rate=0.1,
        seed=0,
    )
    cb = CaptureBatches()
    model.learn(2_000, callback=cb)
    batch = cb.batches[0]
    assert batch.step_obs is None and set(batch.first_obs) == {"input_ids", "attention_mask"}
    assert batch.first_obs["input_ids"].dtype == torch.int64
    assert model.policy.reads == 2 * len(cb.batches)  # once per round, never again within it
    for k in batch.group_ids.unique():
        ids = batch.first_obs["input_ids"][batch.group_ids == k]
        assert torch.equal(ids, ids[:1].expand_as(ids))
    success = [float((b.rewards * b.mask).sum(dim=1).mean()) for b in cb.batches]
    assert np.mean(success[-3:]) > np.mean(success[:3])
