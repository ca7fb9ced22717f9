"""Issue 6: atomic checkpoints survive SIGKILL at random moments, and resuming equals the uninterrupted run.

``pytest -s tests/test_resume.py`` prints the kill times and what was found on disk (tests/README.md).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.env_util import make_vec_env

from egsw_gym import EGSW, GRPO, PPO
from egsw_gym.common.checkpoints import AtomicCheckpointCallback, latest_checkpoint

torch.set_num_threads(1)

GRPO_KW = dict(group_size=2, n_groups=2, n_epochs=2, egsw=EGSW(), beta=0.01, seed=3)
TOTAL = 6_000  # environment steps of the killed runs (a few seconds when not killed)

TRAIN_SCRIPT = textwrap.dedent(
    """
    import sys, torch
    torch.set_num_threads(1)
    from egsw_gym import EGSW, GRPO
    from egsw_gym.common.checkpoints import AtomicCheckpointCallback
    model = GRPO("MlpPolicy", "CartPole-v1", **{kw})
    callback = AtomicCheckpointCallback(1, sys.argv[1], name_prefix="grpo", at_update_boundary=True)
    print("training", flush=True)
    model.learn({total}, callback=callback)
    print("finished", flush=True)
    """
)


def flat(model) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.policy.parameters()])


def test_sigkill_at_random_moments_leaves_loadable_checkpoints_and_resume_is_exact(tmp_path):
    reference = GRPO("MlpPolicy", "CartPole-v1", **GRPO_KW).learn(TOTAL)
    kw = "dict(group_size=2, n_groups=2, n_epochs=2, egsw=EGSW(), beta=0.01, seed=3)"
    script = TRAIN_SCRIPT.format(kw=kw, total=TOTAL)
    rng = random.Random(20260328)
    report = []
    for run in range(3):
        folder = tmp_path / f"run{run}"
        proc = subprocess.Popen(
            [sys.executable, "-c", script, str(folder)],
            stdout=subprocess.PIPE,
            text=True,
            env=dict(os.environ),
        )
        assert proc.stdout is not None and proc.stdout.readline().strip() == "training"
        delay = rng.uniform(0.2, 1.5)
        # The random moment is counted from the first checkpoint, so that a machine slowed down
        # by other jobs cannot turn the kill into one before anything was written.
        deadline = time.monotonic() + 60
        while not any(folder.glob("grpo_*_steps.zip")) and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        checkpoints = sorted(folder.glob("grpo_*_steps.zip"))
        leftovers = [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]
        assert checkpoints, f"no checkpoint written (killed {delay:.2f} s after the first one)"
        for path in checkpoints:  # every checkpoint on disk is complete and loads
            GRPO.load(path)
        latest = latest_checkpoint(folder, "grpo")
        resumed = GRPO.load(latest, env=make_vec_env("CartPole-v1", n_envs=4), restore_rng=True)
        resumed.learn(TOTAL - resumed.num_timesteps, reset_num_timesteps=False)
        assert torch.equal(flat(resumed), flat(reference)), f"resume from {latest.name} differs"
        report.append((run, round(delay, 2), proc.returncode, len(checkpoints), latest.name, leftovers))
    print(
        "\nkills (run, delay s, return code, checkpoints, latest, leftover tmp files):", *report, sep="\n  "
    )


def test_grpo_lm_resume_from_a_checkpoint_equals_the_uninterrupted_run(tmp_path, tiny_lm_grpo, tiny_lm_env):
    total = 48  # 3 updates of 4 episodes x 4 tokens
    callback = AtomicCheckpointCallback(1, str(tmp_path), name_prefix="lm", at_update_boundary=True)
    uninterrupted = tiny_lm_grpo(seed=5).learn(total, callback=callback)
    first = min(tmp_path.glob("lm_*_steps.zip"), key=lambda p: int(p.name.split("_")[1]))
    resumed = GRPO.load(first, env=tiny_lm_env(4), restore_rng=True)
    assert 0 < resumed.num_timesteps < uninterrupted.num_timesteps
    resumed.learn(total - resumed.num_timesteps, reset_num_timesteps=False)
    assert resumed.num_timesteps == uninterrupted.num_timesteps
    assert torch.equal(flat(resumed), flat(uninterrupted))


class StateIsObsEnv(gym.Env):
    """Deterministic walk whose whole state is its observation, with ``set_state`` to restore it."""

    observation_space = spaces.Box(-30.0, 30.0, (2,), np.float32)
    action_space = spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.x, self.t = np.float32(0.0), 0  # float32 state: the observation holds it exactly
        return self._obs(), {}

    def _obs(self) -> np.ndarray:
        return np.array([self.x, self.t / 10], np.float32)

    def set_state(self, obs: np.ndarray) -> None:
        self.x, self.t = np.float32(obs[0]), round(float(obs[1]) * 10)

    def step(self, action):
        self.x = np.float32(self.x + np.float32(0.5 if action else -0.3))
        self.t += 1
        return self._obs(), -abs(float(self.x) - 2.0), self.t >= 10, False, {}


def test_ppo_resume_is_exact_when_the_env_state_is_restored(tmp_path):
    def make_env():
        return make_vec_env(StateIsObsEnv, n_envs=2, seed=0)

    kwargs = dict(n_steps=8, batch_size=8, n_epochs=2, egsw=EGSW(mode="trajectory"), seed=0)
    callback = AtomicCheckpointCallback(1, str(tmp_path), name_prefix="ppo", at_update_boundary=True)
    uninterrupted = PPO("MlpPolicy", make_env(), **kwargs).learn(64, callback=callback)
    ckpt = tmp_path / "ppo_32_steps.zip"
    env = make_env()
    resumed = PPO.load(ckpt, env=env, force_reset=False, restore_rng=True)  # keep the saved last observation
    env.reset()  # Monitor refuses to step an env that was never reset
    for i, obs in enumerate(resumed._last_obs):  # the env's own state: restored where it exposes it
        env.env_method("set_state", obs, indices=i)
    resumed.learn(64 - resumed.num_timesteps, reset_num_timesteps=False)
    assert torch.equal(flat(resumed), flat(uninterrupted))

    # Without the env state (a fresh reset) the resume is statistically equivalent, not bitwise.
    approx = PPO.load(ckpt, env=make_env(), restore_rng=True)
    approx.learn(64 - approx.num_timesteps, reset_num_timesteps=False)
    assert approx.num_timesteps == 64 and not torch.equal(flat(approx), flat(uninterrupted))


def test_step_checkpoints_still_work_and_latest_ignores_temporary_files(tmp_path):
    model = GRPO("MlpPolicy", "CartPole-v1", group_size=2, n_groups=1, seed=0)
    model.learn(40, callback=AtomicCheckpointCallback(5, str(tmp_path), name_prefix="m"))
    saved = sorted(tmp_path.glob("m_*_steps.zip"))
    assert saved and all(int(p.name.split("_")[1]) % 10 == 0 for p in saved)
    (tmp_path / ".m_999999_steps.abc.zip.tmp").write_bytes(b"partial")
    assert latest_checkpoint(tmp_path, "m") == max(saved, key=lambda p: int(p.name.split("_")[1]))
    assert isinstance(Path(latest_checkpoint(tmp_path, "m")), Path)
