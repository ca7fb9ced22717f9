"""DummyVecEnv vs SubprocVecEnv: environment steps per second of PPO and GRPO training.

    python benchmarks/subproc_speedup.py                     # HalfCheetah-v5, 4 envs, 8000 steps
    python benchmarks/subproc_speedup.py --env Hopper-v5 --n-envs 8 --steps 16000
    python benchmarks/subproc_speedup.py --env CarRacing-v3 --n-envs 2 --steps 4000  # pip install box2d pygame

CarRacing-v3 renders its 96x96 image observation on every step (milliseconds of CPU per step), the
kind of environment worker processes are for; MuJoCo steps take tens of microseconds.

Each configuration runs ``learn(steps)`` once after a short warm-up, with ``torch.set_num_threads(1)``
so that the learner does not compete with the env workers for cores. Prints steps/s for both
vectorisations side by side and the ratio Subproc / Dummy. SubprocVecEnv pays one inter-process
round trip per vectorised step; it only wins when one env step costs more than that round trip and
there are free cores for the workers (``os.cpu_count()`` is printed; the numbers in
docs/distributed.md come from a 2-core machine shared with other jobs).
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

from egsw_gym import GRPO, PPO


def steps_per_second(algo: str, vec_cls: type, env_id: str, n_envs: int, steps: int) -> float:
    """Train ``algo`` for ``steps`` env steps on ``n_envs`` envs of ``vec_cls``; return steps/s."""
    kwargs = {"start_method": "fork"} if vec_cls is SubprocVecEnv else None
    env = make_vec_env(env_id, n_envs=n_envs, seed=0, vec_env_cls=vec_cls, vec_env_kwargs=kwargs)
    try:
        if algo == "PPO":
            model = PPO(
                "MlpPolicy",
                env,
                n_steps=max(2048 // n_envs, 64),
                batch_size=256,
                n_epochs=2,
                seed=0,
                device="cpu",
            )
        else:
            model = GRPO(
                "MlpPolicy", env, group_size=2, n_groups=n_envs // 2, n_epochs=2, seed=0, device="cpu"
            )
        model.learn(n_envs * 50)  # warm-up: workers started, first update done
        start_steps, t0 = model.num_timesteps, time.perf_counter()
        model.learn(steps, reset_num_timesteps=False)
        return (model.num_timesteps - start_steps) / (time.perf_counter() - t0)
    finally:
        env.close()


def env_steps_per_second(vec_cls: type, env_id: str, n_envs: int, steps: int) -> float:
    """Step ``n_envs`` envs of ``vec_cls`` with random actions (no learner); return env steps/s.

    The upper bound of the training speed-up: the learner's own work (policy forward passes,
    updates) stays serial in the main process, whatever the vectorisation.
    """
    kwargs = {"start_method": "fork"} if vec_cls is SubprocVecEnv else None
    env = make_vec_env(env_id, n_envs=n_envs, seed=0, vec_env_cls=vec_cls, vec_env_kwargs=kwargs)
    try:
        env.action_space.seed(0)
        env.reset()
        actions = [np.stack([env.action_space.sample() for _ in range(n_envs)]) for _ in range(64)]
        for a in actions[:8]:  # warm-up
            env.step(a)
        n = max(1, steps // n_envs)
        t0 = time.perf_counter()
        for i in range(n):
            env.step(actions[i % len(actions)])
        return n * n_envs / (time.perf_counter() - t0)
    finally:
        env.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--env", default="HalfCheetah-v5")
    parser.add_argument("--n-envs", type=int, default=4)
    parser.add_argument("--steps", type=int, default=8000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"{args.env}, n_envs={args.n_envs}, {args.steps} steps per run, os.cpu_count()={os.cpu_count()}")
    print(f"{'algo':<6}{'DummyVecEnv':>14}{'SubprocVecEnv':>16}{'ratio':>8}")
    dummy = env_steps_per_second(DummyVecEnv, args.env, args.n_envs, args.steps)
    sub = env_steps_per_second(SubprocVecEnv, args.env, args.n_envs, args.steps)
    print(f"{'env':<6}{dummy:>12.0f}/s{sub:>14.0f}/s{sub / dummy:>8.2f}   (stepping only, random actions)")
    for algo in ("PPO", "GRPO"):
        dummy = steps_per_second(algo, DummyVecEnv, args.env, args.n_envs, args.steps)
        sub = steps_per_second(algo, SubprocVecEnv, args.env, args.n_envs, args.steps)
        print(f"{algo:<6}{dummy:>12.0f}/s{sub:>14.0f}/s{sub / dummy:>8.2f}")


if __name__ == "__main__":
    main()
