"""EGSW-PPO (egsw_gym.PPO): equivalence with SB3's PPO, the weighting, and the SB3 user surface."""

from __future__ import annotations

import copy
import json
import warnings
import zipfile

import gymnasium as gym
import numpy as np
import pytest
import stable_baselines3 as sb3
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.callbacks import BaseCallback, CheckpointCallback, EvalCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.envs import SimpleMultiObsEnv
from stable_baselines3.common.logger import configure
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize
from torch.nn import functional as F

import egsw_gym
from egsw_gym import EGSW, PPO
from egsw_gym.algorithms.ppo import EGSWRolloutBuffer

th.set_num_threads(1)

TINY = dict(n_steps=16, batch_size=32, n_epochs=2, device="cpu", policy_kwargs=dict(net_arch=[16]))


def make_model(cls, env_id="CartPole-v1", n_envs=2, seed=0, **kwargs):
    env = make_vec_env(env_id, n_envs=n_envs, seed=seed)
    return cls("MlpPolicy", env, seed=seed, **{**TINY, **kwargs})


def fresh_policy(model, state_dict):
    policy = type(model.policy)(**model.policy._get_constructor_parameters())
    policy.load_state_dict(state_dict)
    return policy


def params(model) -> dict[str, th.Tensor]:
    return {k: v.clone() for k, v in model.policy.state_dict().items()}


# ---------------------------------------------------------------------------------------- equivalence


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_egsw_none_is_bit_identical_to_sb3(env_id):
    ref = make_model(sb3.PPO, env_id).learn(16 * 2 * 4)
    ours = make_model(PPO, env_id).learn(16 * 2 * 4)
    assert ours.egsw is None and ours._n_updates == ref._n_updates == 8
    for (k, a), b in zip(params(ref).items(), params(ours).values(), strict=True):
        assert th.equal(a, b), k


@pytest.mark.parametrize("mode", ["step", "trajectory"])
@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_uniform_weights_match_sb3(env_id, mode):
    ref = make_model(sb3.PPO, env_id).learn(16 * 2 * 4)
    ours = make_model(PPO, env_id, egsw=EGSW(alpha=0.0, temperature=1e9, mode=mode)).learn(16 * 2 * 4)
    for (k, a), b in zip(params(ref).items(), params(ours).values(), strict=True):
        assert th.allclose(a, b, atol=1e-6, rtol=0), k


def test_no_extra_rng_consumed():
    """After learning, the global numpy and torch generators are where SB3 leaves them."""
    make_model(sb3.PPO).learn(64)
    ref_np, ref_th = np.random.rand(), th.rand(1)
    make_model(PPO, egsw=EGSW()).learn(64)
    assert np.random.rand() == ref_np and th.equal(th.rand(1), ref_th)


def test_egsw_changes_the_update():
    ref = make_model(sb3.PPO).learn(64)
    ours = make_model(PPO, egsw=EGSW(alpha=0.5, temperature=0.5)).learn(64)
    diff = max(
        (a - b).abs().max().item() for a, b in zip(params(ref).values(), params(ours).values(), strict=True)
    )
    assert diff > 1e-5


# ---------------------------------------------------------------------------------------- the weighting


class Snapshot(BaseCallback):
    """Keeps the policy and the filled rollout (weights included) as they are right before train()."""

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        self.policy_state = copy.deepcopy(self.model.policy.state_dict())
        buf = self.model.rollout_buffer
        self.entropies = buf.entropies.copy()
        self.data = {
            k: getattr(buf, k).copy()
            for k in ("observations", "actions", "advantages", "returns", "log_probs", "weights")
        }


def test_weight_multiplies_only_the_clipped_surrogate():
    """One full-batch SGD step, compared with the EGSW-PPO loss written out by hand."""
    kwargs = dict(
        n_steps=16,
        batch_size=64,
        n_epochs=1,
        ent_coef=0.01,
        vf_coef=0.5,
        learning_rate=0.1,
        max_grad_norm=1e9,
        policy_kwargs=dict(net_arch=[16], optimizer_class=th.optim.SGD),
    )
    model = make_model(PPO, n_envs=4, egsw=EGSW(alpha=1.0, temperature=0.3), **kwargs)
    snap = Snapshot()
    model.learn(64, callback=snap)
    d = {k: th.as_tensor(v).reshape(64, *v.shape[2:]) for k, v in snap.data.items()}
    assert not th.allclose(d["weights"], th.ones(64))  # the test means something

    policy = fresh_policy(model, snap.policy_state)
    policy.set_training_mode(True)
    values, log_prob, entropy = policy.evaluate_actions(d["observations"], d["actions"].long().flatten())
    adv = d["advantages"]
    adv = (adv - adv.mean()) / (adv.std() + 1e-8)
    ratio = th.exp(log_prob - d["log_probs"])
    surrogate = th.min(adv * ratio, adv * th.clamp(ratio, 0.8, 1.2))
    loss = (
        -(d["weights"] * surrogate).mean()
        - 0.01 * entropy.mean()
        + 0.5 * F.mse_loss(d["returns"], values.flatten())
    )
    policy.zero_grad()
    loss.backward()
    with th.no_grad():
        for p in policy.parameters():
            p -= 0.1 * p.grad
    for (k, a), b in zip(policy.state_dict().items(), model.policy.state_dict().values(), strict=True):
        assert th.allclose(a, b, atol=1e-5), k


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_entropy_is_the_sampling_distributions(env_id):
    snap = Snapshot()
    model = make_model(PPO, env_id, egsw=EGSW())
    model.learn(32, callback=snap)
    buf_entropy = model.rollout_buffer.entropies.reshape(-1)  # flattened by get() in env-major order
    policy = fresh_policy(model, snap.policy_state)
    obs = th.as_tensor(snap.data["observations"]).swapaxes(0, 1).reshape(32, -1)
    with th.no_grad():
        expected = policy.get_distribution(obs).entropy().numpy()
    np.testing.assert_allclose(buf_entropy, expected, rtol=1e-5, atol=1e-6)


def test_step_mode_sets_are_the_envs_at_each_step():
    snap = Snapshot()
    make_model(PPO, n_envs=4, egsw=EGSW(alpha=0.3, mode="step")).learn(64, callback=snap)
    w = snap.data["weights"]  # (n_steps, n_envs)
    np.testing.assert_allclose(w.sum(axis=1), 4.0, rtol=1e-5)
    assert np.all(w >= 0) and np.isfinite(w).all()
    # Each weight belongs to its own sample: recompute from the stored advantages and entropies.
    adv, ent = snap.data["advantages"], snap.entropies
    adv_std = (adv - adv.mean()) / (adv.std(ddof=1) + 1e-8)
    scores = (adv_std + 0.3 * ent) / 1.0
    expected = 4 * np.exp(scores) / np.exp(scores).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(w, expected, rtol=1e-4)


def test_trajectory_segments_split_at_episode_starts_and_rollout_bounds():
    space = spaces.Box(-1, 1, (1,))
    buf = EGSWRolloutBuffer(5, space, spaces.Discrete(2), device="cpu", n_envs=2)
    rng = np.random.default_rng(0)
    buf.advantages = rng.normal(size=(5, 2)).astype(np.float32)
    buf.entropies = rng.uniform(size=(5, 2)).astype(np.float32)
    buf.episode_starts = np.array([[0, 1], [0, 0], [1, 0], [0, 1], [0, 0]], dtype=np.float32)
    egsw = EGSW(alpha=0.5, mode="trajectory")
    w = buf.compute_egsw_weights(egsw).numpy().reshape(5, 2)
    # Segments: env0 -> steps 0-1, 2-4; env1 -> steps 0-2, 3-4. Independent construction of the ids:
    seg = np.array([[0, 10], [0, 10], [1, 10], [1, 11], [1, 11]])
    expected = egsw.sample_weights(
        th.as_tensor(buf.advantages.reshape(-1)),
        th.as_tensor(buf.entropies.reshape(-1)),
        trajectory_ids=th.as_tensor(seg.reshape(-1)),
        step_ids=th.arange(5).repeat_interleave(2),
        group_ids=th.zeros(10, dtype=th.long),
    ).numpy()
    np.testing.assert_allclose(w.reshape(-1), expected, rtol=1e-6)
    assert w[0, 0] == w[1, 0] and w[2, 0] == w[4, 0] and w[0, 1] == w[2, 1] and w[3, 1] == w[4, 1]
    per_segment = [w[0, 0], w[2, 0], w[0, 1], w[3, 1]]
    assert np.isclose(sum(per_segment), 4.0, rtol=1e-5)
    assert np.array_equal(buf.weights, w)


def test_egsw_metrics_logged(tmp_path):
    model = make_model(PPO, egsw=EGSW(mode="trajectory"))
    model.set_logger(configure(str(tmp_path), ["csv", "json"]))
    model.learn(64)
    rows = [json.loads(line) for line in (tmp_path / "progress.json").read_text().splitlines()]
    last = rows[-1]
    assert 1.0 <= last["egsw/weight_max"] and 0 < last["egsw/weight_ess"] <= 1.0 + 1e-9
    assert 0 < last["egsw/entropy_mean"] <= np.log(2) + 1e-6
    assert "egsw/weight_ess" in (tmp_path / "progress.csv").read_text().splitlines()[0]


# ---------------------------------------------------------------------------------------- bad input


def test_bad_inputs_raise_clear_errors():
    env = make_vec_env("CartPole-v1", n_envs=2, seed=0)
    # A dict (EGSW.to_dict(), a YAML block) is validated into an EGSW, as GRPO does.
    assert PPO("MlpPolicy", env, egsw={"alpha": 0.1}, n_steps=8, batch_size=8).egsw == EGSW(alpha=0.1)
    with pytest.raises(ValueError, match="unknown EGSW field.*'alpah'"):
        PPO("MlpPolicy", env, egsw={"alpah": 0.1})
    with pytest.raises(ValueError, match="egsw must be an egsw_gym.EGSW"):
        PPO("MlpPolicy", env, egsw="step")
    with pytest.raises(ValueError, match="temperature"):
        PPO("MlpPolicy", env, egsw=EGSW(temperature=0.0))
    with pytest.raises(ValueError, match="rollout_buffer_class"):
        PPO("MlpPolicy", env, egsw=EGSW(), rollout_buffer_class=RolloutBuffer)
    # Trajectory mode is fine with one env, and plain PPO accepts SB3's own buffer.
    PPO(
        "MlpPolicy",
        make_vec_env("CartPole-v1", n_envs=1),
        egsw=EGSW(mode="trajectory"),
        n_steps=8,
        batch_size=8,
    )
    PPO("MlpPolicy", env, rollout_buffer_class=RolloutBuffer, n_steps=8, batch_size=8).learn(16)


# ---------------------------------------------------------------------------------------- save / load


def test_save_load_round_trip_keeps_egsw_as_plain_data(tmp_path):
    egsw = EGSW(alpha=0.25, temperature=2.0, mode="trajectory", max_weight=3.0)
    model = make_model(PPO, egsw=egsw).learn(64)
    path = tmp_path / "model.zip"
    model.save(path)
    with zipfile.ZipFile(path) as zf:
        data = json.loads(zf.read("data"))
    assert "egsw" not in data
    assert data["egsw_config"] == egsw.to_dict()  # JSON, not a pickled object

    loaded = PPO.load(path, env=make_vec_env("CartPole-v1", n_envs=2, seed=1), device="cpu")
    assert loaded.egsw == egsw and isinstance(loaded.egsw, EGSW)
    obs = loaded.env.reset()
    np.testing.assert_array_equal(
        loaded.predict(obs, deterministic=True)[0], model.predict(obs, deterministic=True)[0]
    )
    loaded.learn(64, reset_num_timesteps=False)
    assert loaded.num_timesteps == 128

    # Without an env, and with an explicit override of the stored config.
    assert PPO.load(path).egsw == egsw
    override = EGSW(alpha=0.0)
    assert PPO.load(path, egsw=override).egsw == override
    plain = make_model(PPO)
    plain.save(tmp_path / "plain.zip")
    assert PPO.load(tmp_path / "plain.zip").egsw is None


def test_step_mode_with_one_env_is_plain_ppo_with_a_warning(tmp_path):
    """Step mode's sets are the envs at a step: with one env each has one sample, of weight 1."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # building (and saving, loading) such a model is silent
        model = make_model(PPO, n_envs=1, egsw=EGSW(mode="step", alpha=0.5, temperature=0.3), batch_size=16)
    snap = Snapshot()
    with pytest.warns(UserWarning, match="n_envs=1: every set holds one sample.*plain PPO.*trajectory"):
        model.learn(16, callback=snap)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per model
        model.learn(16, callback=snap, reset_num_timesteps=False)
    assert np.array_equal(snap.data["weights"], np.ones((16, 1), np.float32))
    ref = make_model(sb3.PPO, n_envs=1, batch_size=16).learn(32)
    for (k, a), b in zip(params(ref).items(), params(model).values(), strict=True):
        assert th.allclose(a, b, atol=1e-6, rtol=0), k
    # The same on load onto one env (the saved model had two).
    make_model(PPO, egsw=EGSW(mode="step")).save(tmp_path / "m.zip")
    loaded = PPO.load(tmp_path / "m.zip", env=make_vec_env("CartPole-v1", n_envs=1))
    with pytest.warns(UserWarning, match="n_envs=1"):
        loaded.learn(16)


@pytest.mark.parametrize("mode", ["trajectory", "step"])
def test_every_mode_constructs_and_learns_on_one_env(mode):
    make_model(PPO, n_envs=1, egsw=EGSW(mode=mode)).learn(32)
    assert EGSW().mode == "trajectory"
    make_model(PPO, n_envs=1, egsw=EGSW()).learn(32)


def test_loads_a_plain_sb3_zip(tmp_path):
    ref = make_model(sb3.PPO).learn(32)
    ref.save(tmp_path / "sb3.zip")
    model = PPO.load(tmp_path / "sb3.zip", env=make_vec_env("CartPole-v1", n_envs=2, seed=0))
    assert model.egsw is None
    obs = model.env.reset()
    np.testing.assert_array_equal(
        model.predict(obs, deterministic=True)[0], ref.predict(obs, deterministic=True)[0]
    )
    model.learn(32)
    model.egsw = EGSW()  # SB3's zip names SB3's RolloutBuffer, which cannot hold weights
    with pytest.raises(ValueError, match="rollout_buffer_class=None"):
        model.learn(32)


# ---------------------------------------------------------------------------------------- SB3 surface


def test_callbacks_progress_bar_tb_log_name_and_logger_formats(tmp_path):
    model = make_model(PPO, egsw=EGSW(), tensorboard_log=str(tmp_path / "tb"), verbose=1)
    eval_env = make_vec_env("CartPole-v1", n_envs=1, seed=5)
    eval_cb = EvalCallback(
        eval_env, eval_freq=16, n_eval_episodes=2, log_path=str(tmp_path / "eval"), verbose=0
    )
    ckpt_cb = CheckpointCallback(save_freq=16, save_path=str(tmp_path / "ckpt"), name_prefix="egsw")
    model.learn(96, callback=[eval_cb, ckpt_cb], progress_bar=True, tb_log_name="egsw_run")
    assert (tmp_path / "tb" / "egsw_run_1").is_dir()
    assert list((tmp_path / "tb" / "egsw_run_1").glob("events.out.tfevents.*"))
    assert (tmp_path / "eval" / "evaluations.npz").exists() and eval_cb.last_mean_reward > 0
    ckpts = sorted((tmp_path / "ckpt").glob("egsw_*_steps.zip"))
    assert ckpts and PPO.load(ckpts[-1]).egsw == model.egsw

    model.set_logger(configure(str(tmp_path / "all"), ["stdout", "csv", "tensorboard", "json", "log"]))
    model.learn(32)
    assert (tmp_path / "all" / "progress.csv").exists() and (tmp_path / "all" / "progress.json").exists()
    assert list((tmp_path / "all").glob("events.out.tfevents.*"))


def test_predict_and_set_env():
    model = make_model(PPO, egsw=EGSW()).learn(32)
    single = gym.make("CartPole-v1")
    obs, _ = single.reset(seed=0)
    action, state = model.predict(obs, deterministic=True)
    assert single.action_space.contains(int(action)) and state is None
    model.set_env(make_vec_env("CartPole-v1", n_envs=2, seed=3))
    model.learn(32, reset_num_timesteps=False)
    assert model.num_timesteps == 64
    with pytest.raises(AssertionError):  # SB3's own check: set_env needs the same number of envs
        model.set_env(make_vec_env("CartPole-v1", n_envs=3))


def test_vec_normalize():
    env = VecNormalize(make_vec_env("Pendulum-v1", n_envs=2, seed=0), norm_obs=True, norm_reward=True)
    model = PPO("MlpPolicy", env, egsw=EGSW(), seed=0, **TINY).learn(64)
    assert model.get_vec_normalize_env() is env and env.obs_rms.count > 1
    assert np.isfinite(model.rollout_buffer.weights).all()


def test_dict_observations_use_the_dict_buffer():
    env = DummyVecEnv([lambda: SimpleMultiObsEnv(random_start=True)] * 2)
    model = PPO("MultiInputPolicy", env, egsw=EGSW(), seed=0, **TINY).learn(32)
    assert type(model.rollout_buffer).__name__ == "EGSWDictRolloutBuffer"
    assert np.isfinite(model.rollout_buffer.weights).all() and (model.rollout_buffer.entropies > 0).all()


@pytest.mark.parametrize("squash", [False, True])
def test_gsde(squash):
    kw = {**TINY, "policy_kwargs": dict(net_arch=[16], squash_output=squash)}
    env = make_vec_env("Pendulum-v1", n_envs=2, seed=0)
    model = PPO("MlpPolicy", env, egsw=EGSW(), use_sde=True, sde_sample_freq=4, seed=0, **kw).learn(32)
    assert np.isfinite(model.rollout_buffer.entropies).all()


class CustomForwardPolicy(ActorCriticPolicy):
    def forward(self, obs, deterministic=False):
        return super().forward(obs, deterministic)


def test_policy_with_its_own_forward():
    env = make_vec_env("CartPole-v1", n_envs=2, seed=0)
    model = PPO(CustomForwardPolicy, env, egsw=EGSW(), seed=0, **TINY).learn(32)
    assert (model.rollout_buffer.entropies > 0).all()


@pytest.mark.parametrize(
    "env_id,n_envs,mode",
    [
        ("HalfCheetah-v5", 2, "step"),
        ("Hopper-v5", 1, "trajectory"),
        ("Walker2d-v5", 2, "trajectory"),
        ("Ant-v5", 2, "step"),
    ],
)
def test_mujoco_smoke(env_id, n_envs, mode):
    pytest.importorskip("mujoco")
    env = make_vec_env(env_id, n_envs=n_envs, seed=0)
    model = PPO(
        "MlpPolicy", env, egsw=EGSW(mode=mode), seed=0, n_steps=100, batch_size=50, n_epochs=1, device="cpu"
    )
    model.learn(200)
    assert model.num_timesteps >= 200 and np.isfinite(model.rollout_buffer.weights).all()


def test_exported_at_top_level():
    assert egsw_gym.PPO is PPO and issubclass(PPO, sb3.PPO)
