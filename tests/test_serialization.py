"""Pickle-free save/load (issue 6): round trips for PPO, GRPO control and GRPO LM; crafted checkpoints.

Every load here runs with ``cloudpickle.loads`` / ``pickle.loads`` replaced by a function that fails
the test, except the positive control that shows the crafted payload is live under ``allow_pickle``.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import math
import os
import pickle
import zipfile
from pathlib import Path

import cloudpickle
import gymnasium as gym
import numpy as np
import pytest
import stable_baselines3 as sb3
import torch
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.env_util import make_vec_env

from egsw_gym import EGSW, GRPO, PPO
from egsw_gym.common.serialization import RNG_STATE_MEMBER, SAFE_DATA_MEMBER, UnsafeCheckpointError

torch.set_num_threads(1)

LM_ENV = "egsw/Arithmetic-v0"
LM_ENV_KWARGS = dict(max_new_tokens=4)


@pytest.fixture
def no_unpickling(monkeypatch):
    """Fail the test if anything calls cloudpickle.loads or pickle.loads (SB3's data path uses these)."""

    def refuse(*_args, **_kwargs):
        raise AssertionError("load unpickled an entry")

    monkeypatch.setattr(cloudpickle, "loads", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)


def flat_params(model) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.policy.parameters()])


# ------------------------------------------------------------------------------------ round trips


def test_ppo_round_trip_without_unpickling(tmp_path, no_unpickling):
    egsw = EGSW(alpha=0.2, temperature=3.0, mode="trajectory")
    env = make_vec_env("CartPole-v1", n_envs=2, seed=0)
    model = PPO("MlpPolicy", env, n_steps=16, batch_size=16, n_epochs=1, egsw=egsw, seed=0).learn(32)
    model.save(tmp_path / "ppo")
    with zipfile.ZipFile(tmp_path / "ppo.zip") as zf:
        assert {SAFE_DATA_MEMBER, RNG_STATE_MEMBER} <= set(zf.namelist())
    loaded = PPO.load(tmp_path / "ppo", env=make_vec_env("CartPole-v1", n_envs=2, seed=1))
    assert loaded.egsw == egsw and loaded.clip_range(1.0) == 0.2 and loaded.n_steps == 16
    obs = np.random.default_rng(0).normal(size=(16, 4)).astype(np.float32)
    assert np.array_equal(
        model.predict(obs, deterministic=True)[0], loaded.predict(obs, deterministic=True)[0]
    )
    assert torch.equal(flat_params(model), flat_params(loaded))
    loaded.learn(32, reset_num_timesteps=False)  # trains on after a load
    assert loaded.num_timesteps == 64


def test_grpo_control_round_trip_without_unpickling(tmp_path, no_unpickling):
    egsw = EGSW(alpha=0.3, mode="trajectory")
    model = GRPO("MlpPolicy", "CartPole-v1", group_size=2, n_groups=2, egsw=egsw, beta=0.05, seed=0)
    model.learn(100)
    model.save(tmp_path / "grpo.zip")
    loaded = GRPO.load(tmp_path / "grpo.zip")
    assert loaded.egsw == egsw and loaded.beta == 0.05 and loaded.group_size == 2
    obs = np.random.default_rng(0).normal(size=(16, 4)).astype(np.float32)
    assert np.array_equal(
        model.predict(obs, deterministic=True)[0], loaded.predict(obs, deterministic=True)[0]
    )


def test_grpo_lm_round_trip_without_unpickling(tmp_path, no_unpickling, tiny_lm_grpo, tiny_lm_env):
    egsw = EGSW(alpha=0.05, mode="step")
    model = tiny_lm_grpo(learning_rate=1e-3, ent_coef=0.0, egsw=egsw, seed=0).learn(8)
    model.save(tmp_path / "lm.zip")
    loaded = GRPO.load(tmp_path / "lm.zip", env=tiny_lm_env())
    assert loaded.egsw == egsw
    assert torch.equal(flat_params(model), flat_params(loaded))
    obs = tiny_lm_env().reset()
    assert np.array_equal(
        model.predict(obs, deterministic=True)[0], loaded.predict(obs, deterministic=True)[0]
    )
    loaded.learn(8, reset_num_timesteps=False)


def test_grpo_lm_with_a_model_object_saves_its_config_as_plain_data(tmp_path, no_unpickling, tiny_lm_env):
    from egsw_gym.policies.lm import build_tiny_lm

    model_obj = build_tiny_lm(100, n_layer=1, n_embd=32, n_head=2, seed=3)
    model = GRPO(
        "LMPolicy",
        LM_ENV,
        group_size=2,
        n_groups=2,
        env_kwargs=LM_ENV_KWARGS,
        policy_kwargs=dict(model=model_obj, torch_dtype=torch.float32),
        seed=0,
    )
    assert model.policy_kwargs["model"] is model_obj  # the live kwargs are untouched by save
    model.save(tmp_path / "lm_obj.zip")
    with zipfile.ZipFile(tmp_path / "lm_obj.zip") as zf:
        data = json.loads(zf.read("data"))
    assert data["policy_kwargs"]["model"] is None and data["policy_kwargs"]["torch_dtype"] == "float32"
    assert data["policy_kwargs"]["model_config"]["model_type"] == "gpt2"  # plain JSON, not a pickle
    loaded = GRPO.load(tmp_path / "lm_obj.zip", env=tiny_lm_env())
    assert torch.equal(flat_params(model), flat_params(loaded))


# ------------------------------------------------------------------------------------ older zips


def test_plain_sb3_zip_and_pre_mixin_grpo_zip_load_without_unpickling(tmp_path, no_unpickling):
    ref = sb3.PPO(
        "MlpPolicy", make_vec_env("Pendulum-v1", n_envs=2, seed=0), n_steps=16, batch_size=16, seed=0
    )
    ref.learn(32).save(tmp_path / "sb3.zip")
    with pytest.warns(UserWarning, match="rebuilds"):
        model = PPO.load(tmp_path / "sb3.zip")  # spaces rebuilt from SB3's printed attributes, no env needed
    obs = np.zeros((3, 3), np.float32)
    assert np.array_equal(model.predict(obs, deterministic=True)[0], ref.predict(obs, deterministic=True)[0])
    assert model.observation_space == ref.observation_space and model.action_space == ref.action_space

    grpo = GRPO("MlpPolicy", "CartPole-v1", group_size=2, n_groups=1, seed=0)
    BaseAlgorithm.save(grpo, tmp_path / "old_grpo.zip")  # what save wrote before the mixin existed
    with zipfile.ZipFile(tmp_path / "old_grpo.zip") as zf:
        assert SAFE_DATA_MEMBER not in zf.namelist()
    loaded = GRPO.load(tmp_path / "old_grpo.zip", env=make_vec_env("CartPole-v1", n_envs=2))
    assert torch.equal(flat_params(grpo), flat_params(loaded))
    loaded.learn(20)


def test_summarised_space_without_env_gives_a_clear_error(tmp_path):
    ref = sb3.PPO("MlpPolicy", make_vec_env(lambda: WideObsEnv(), n_envs=2), n_steps=8, batch_size=16)
    ref.save(tmp_path / "wide.zip")  # numpy prints a 2000-entry Box with '...': no plain reading
    with pytest.raises(UnsafeCheckpointError, match="observation_space.*allow_pickle"):
        PPO.load(tmp_path / "wide.zip")
    model = PPO.load(tmp_path / "wide.zip", env=make_vec_env(lambda: WideObsEnv(), n_envs=2))
    assert model.observation_space.shape == (2000,)


class WideObsEnv(gym.Env):
    observation_space = gym.spaces.Box(-1.0, 1.0, (2000,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(2000, np.float32), {}

    def step(self, action):
        return np.zeros(2000, np.float32), 0.0, True, False, {}


# ------------------------------------------------------------------------------------ crafted files


class Payload:
    """Unpickling this creates the sentinel file (open(path, 'w') as the reduce callable)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def _rewrite_zip(src: Path, dst: Path, replace: dict[str, bytes | None]) -> None:
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for name in zin.namelist():
            if name in replace:
                if replace[name] is not None:
                    zout.writestr(name, replace[name])
            else:
                zout.writestr(name, zin.read(name))


def _poisoned_data(src: Path, sentinel: Path, keys: list[str]) -> bytes:
    with zipfile.ZipFile(src) as zf:
        data = json.loads(zf.read("data"))
    payload = base64.b64encode(cloudpickle.dumps(Payload(str(sentinel)))).decode()
    for key in keys:
        data[key] = {":type:": "<class 'abc.ABCMeta'>", ":serialized:": payload}
    return json.dumps(data).encode()


@pytest.fixture
def saved_grpo(tmp_path) -> Path:
    model = GRPO("MlpPolicy", "CartPole-v1", group_size=2, n_groups=1, seed=0)
    model.save(tmp_path / "good.zip")
    return tmp_path / "good.zip"


def test_payload_is_live_under_allow_pickle(saved_grpo, tmp_path):
    """Positive control: the crafted file really runs code when unpickled (so the refusals below mean something)."""
    sentinel = tmp_path / "control_sentinel"
    bad = tmp_path / "control.zip"
    _rewrite_zip(saved_grpo, bad, {"data": _poisoned_data(saved_grpo, sentinel, ["lr_schedule"])})
    try:
        GRPO.load(bad, allow_pickle=True)
    except Exception:  # noqa: BLE001 - the entry is garbage once unpickled; only the side effect matters
        pass
    assert sentinel.exists()


@pytest.mark.parametrize(
    ("keys", "drop_safe_member", "outcome"),
    [
        (["lr_schedule", "observation_space"], False, "ignored"),  # our member wins; payload never read
        (["egsw_injected_entry"], False, "ignored"),  # an extra pickled entry is set to None, not unpickled
        (["policy_class"], True, "refused"),  # no plain form for a required entry
        (["lr_schedule"], True, "rebuilt"),  # a schedule: SB3 rebuilds lr_schedule from learning_rate
    ],
)
def test_crafted_data_entries_never_run(saved_grpo, tmp_path, no_unpickling, keys, drop_safe_member, outcome):
    sentinel = tmp_path / "sentinel"
    bad = tmp_path / "bad.zip"
    replace = {"data": _poisoned_data(saved_grpo, sentinel, keys)}
    if drop_safe_member:
        replace[SAFE_DATA_MEMBER] = None
    _rewrite_zip(saved_grpo, bad, replace)
    if outcome == "refused":
        with pytest.raises(UnsafeCheckpointError, match="allow_pickle=True"):
            GRPO.load(bad)
    else:
        expect_warning = keys == ["egsw_injected_entry"]
        with pytest.warns(UserWarning, match="not unpickled") if expect_warning else contextlib.nullcontext():
            model = GRPO.load(bad)
        if outcome == "rebuilt":
            model.set_env(make_vec_env("CartPole-v1", n_envs=2))
            model.learn(8)
    assert not sentinel.exists()


@pytest.mark.parametrize(
    "safe_entry",
    [
        {"__kind__": "class", "path": "os.system"},  # outside the allow-list
        {
            "__kind__": "class",
            "path": "stable_baselines3.common.logger.HumanOutputFormat",
        },  # allowed package, not a policy
        {
            "__kind__": "hf_config",
            "class": "egsw_gym.algorithms.grpo.GRPO",
            "config": {},
        },  # not a config class
        {"__kind__": "mystery"},
    ],
)
def test_crafted_plain_data_member_is_refused(saved_grpo, tmp_path, no_unpickling, safe_entry):
    with zipfile.ZipFile(saved_grpo) as zf:
        safe = json.loads(zf.read(SAFE_DATA_MEMBER))
    safe["policy_class"] = safe_entry
    bad = tmp_path / "bad.zip"
    _rewrite_zip(saved_grpo, bad, {SAFE_DATA_MEMBER: json.dumps(safe).encode()})
    with pytest.raises(UnsafeCheckpointError):
        GRPO.load(bad)


def test_global_reference_to_a_dangerous_callable_is_refused(saved_grpo, tmp_path, no_unpickling):
    # A pickle that is only a global reference (no call) is read from its opcodes; os.system is not allowed.
    with zipfile.ZipFile(saved_grpo) as zf:
        data = json.loads(zf.read("data"))
    data["policy_class"] = {
        ":type:": "<class 'type'>",
        ":serialized:": base64.b64encode(pickle.dumps(os.system)).decode(),
    }
    bad = tmp_path / "bad.zip"
    _rewrite_zip(saved_grpo, bad, {"data": json.dumps(data).encode(), SAFE_DATA_MEMBER: None})
    with pytest.raises(UnsafeCheckpointError, match="allow_pickle"):
        GRPO.load(bad)


def test_crafted_policy_pth_is_refused(saved_grpo, tmp_path):
    sentinel = tmp_path / "sentinel"
    buffer = io.BytesIO()
    torch.save({"mlp.0.weight": Payload(str(sentinel))}, buffer)
    bad = tmp_path / "bad.zip"
    _rewrite_zip(saved_grpo, bad, {"policy.pth": buffer.getvalue()})
    with pytest.raises(UnsafeCheckpointError, match="weights_only"):
        GRPO.load(bad)
    with pytest.raises(UnsafeCheckpointError, match="weights_only"):
        GRPO.load(bad, allow_pickle=True)  # allow_pickle never extends to tensor files
    assert not sentinel.exists()


def test_crafted_rng_state_is_refused(saved_grpo, tmp_path):
    with zipfile.ZipFile(saved_grpo) as zf:
        state = json.loads(zf.read(RNG_STATE_MEMBER))
    state["torch"] = [{"__reduce__": "os.system"}]
    bad = tmp_path / "bad.zip"
    _rewrite_zip(saved_grpo, bad, {RNG_STATE_MEMBER: json.dumps(state).encode()})
    with pytest.raises(UnsafeCheckpointError, match="rng_state.json.*torch"):
        GRPO.load(bad, restore_rng=True)
    GRPO.load(bad)  # the model itself is fine (the RNG state is only read on request)


# --------------------------------------------------------------------------- callable schedules as tables


def test_tabulated_schedule_is_exact_at_the_points_linear_between_and_clamped():
    from egsw_gym.common.schedules import TABLE_POINTS, TabulatedSchedule

    fn = lambda p: math.exp(-3 * p)  # noqa: E731 (f'' <= 9: interpolation error <= 9 * 1e-6 / 8)
    table = TabulatedSchedule.from_callable(fn)
    grid = [i / (TABLE_POINTS - 1) for i in range(TABLE_POINTS)]
    assert [table(p) for p in grid] == [fn(p) for p in grid]
    between = np.random.default_rng(1).uniform(0, 1, 1000)
    errors = np.array([table(p) - fn(p) for p in between])
    assert np.all(errors >= 0) and 0 < errors.max() <= 9 * 1e-6 / 8  # a convex function: chords lie above
    assert table(-0.5) == fn(0.0) and table(3.0) == fn(1.0)
    assert all(type(table(p)) is float for p in (np.float64(0.123), np.float32(0.5), 1, 0, -2, 0.0005))
    assert table.__name__ == "<lambda>" and "TabulatedSchedule(name='<lambda>', 1001 points" in repr(table)
    with pytest.raises(ValueError, match="progress_remaining"):
        table(float("nan"))


@pytest.mark.parametrize(
    ("fn", "match"),
    [
        (lambda p: float("nan") if p == 0.5 else 1.0, r"nan at progress_remaining=0.5"),
        (lambda p: 1 / p, "ZeroDivisionError"),
        (lambda p: "1e-3", "not a finite number"),
        (lambda p: p > 0.5, "not a finite number"),  # a bool is not a number
    ],
)
def test_a_callable_without_a_finite_table_has_no_plain_form(fn, match):
    from egsw_gym.common.plain_data import encode_plain

    with pytest.raises(TypeError, match=f"learning_rate: .*{match}"):
        encode_plain(fn, "learning_rate")
    with pytest.raises(TypeError, match="no plain-data encoding"):
        encode_plain(lambda p: 1.0, "gamma")  # only schedule entries are tabulated


def test_tabulated_schedules_round_trip_through_plain_data():
    from stable_baselines3.common.utils import FloatSchedule

    from egsw_gym.common.plain_data import DecodeContext, decode_plain, encode_plain
    from egsw_gym.common.schedules import TabulatedSchedule

    def warmup(progress_remaining: float) -> float:
        return 3e-4 * min(1.0, 4 * (1 - progress_remaining)) + 1e-6

    ctx = DecodeContext("test")
    encoded = encode_plain(FloatSchedule(warmup), "lr_schedule")
    assert encoded["inner"]["name"] == "warmup" and all(type(v) is float for v in encoded["inner"]["values"])
    decoded = decode_plain(json.loads(json.dumps(encoded)), ctx, "lr_schedule")
    assert isinstance(decoded, FloatSchedule) and isinstance(decoded.value_schedule, TabulatedSchedule)
    assert encode_plain(decoded, "lr_schedule") == encoded  # the table re-encodes to itself
    assert decoded(0.875) == warmup(0.875) and decoded(1.0) == warmup(1.0)


def test_grpo_lambda_learning_rate_round_trips_as_a_table(tmp_path, no_unpickling):
    lr = lambda p: 1e-3 * p + 1e-5  # noqa: E731
    env = make_vec_env("CartPole-v1", n_envs=2, seed=0)
    model = GRPO("MlpPolicy", env, group_size=2, n_groups=1, learning_rate=lr, seed=0).learn(16)
    model.save(tmp_path / "grpo.zip")
    with pytest.warns(UserWarning, match=r"\['learning_rate', 'lr_schedule'\] were Python callables"):
        loaded = GRPO.load(tmp_path / "grpo.zip", env=env)
    assert (
        loaded.lr_schedule(0.25) == pytest.approx(lr(0.25), rel=1e-12)
        and type(loaded.lr_schedule(0.25)) is float
    )
    loaded.learn(16, reset_num_timesteps=False)
    assert loaded.num_timesteps > model.num_timesteps  # whole groups: at least 16 more steps
