"""Wall-time overhead of EGSW-PPO over Stable-Baselines3's PPO, side by side in one process.

Same seeds, same hyperparameters (RL Zoo's settings on
CartPole-v1, SB3 defaults on HalfCheetah-v5). For each seed the two models train in lockstep: they
take turns to ``learn`` one chunk of ``--chunk`` steps (a few PPO iterations; which one goes first
alternates), so that load from other processes on a shared machine hits both alike. Only time
inside ``learn`` is counted. Prints each run's wall and CPU time, the ratio of the totals, the
median of the per-chunk ratios (robust to load spikes) and the ratio of the sides' median chunk
times with its 95% paired-bootstrap interval over chunks (``_env_report.ratio_interval``). Target:
EGSW / SB3 wall-time ratio <= 1.05.

Usage::

    python benchmarks/ppo_overhead.py                       # both tasks, seeds 0 and 1
    python benchmarks/ppo_overhead.py --tasks cartpole --seeds 0 1 --cartpole-steps 20000
    python benchmarks/ppo_overhead.py --quick                # a few minutes
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch


def make_cartpole(cls: type, seed: int, **extra: Any) -> Any:
    """CartPole-v1 with the RL Zoo PPO settings (8 envs)."""
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import DummyVecEnv

    env = make_vec_env("CartPole-v1", n_envs=8, seed=seed, vec_env_cls=DummyVecEnv)
    return cls(
        "MlpPolicy", env, n_steps=32, batch_size=256, gae_lambda=0.8, gamma=0.98, n_epochs=20, ent_coef=0.0,
        learning_rate=1e-3, clip_range=0.2, device="cpu", seed=seed, verbose=0, **extra,
    )  # fmt: skip


def make_halfcheetah(cls: type, seed: int, **extra: Any) -> Any:
    """HalfCheetah-v5 with SB3's default PPO settings (1 env)."""
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import DummyVecEnv

    env = make_vec_env("HalfCheetah-v5", n_envs=1, seed=seed, vec_env_cls=DummyVecEnv)
    return cls("MlpPolicy", env, device="cpu", seed=seed, verbose=0, **extra)


TASKS: dict[str, tuple[Callable[..., Any], int]] = {
    "cartpole": (make_cartpole, 8),
    "halfcheetah": (make_halfcheetah, 1),
}


def timed_learn(model: Any, steps: int) -> tuple[float, float]:
    """Wall and process CPU seconds of ``model.learn(steps)``, continuing the model's run."""
    t0, c0 = time.perf_counter(), time.process_time()
    model.learn(total_timesteps=steps, reset_num_timesteps=model.num_timesteps == 0)
    return time.perf_counter() - t0, time.process_time() - c0


def main() -> None:
    """Run the lockstep comparison and print one line per run plus a summary per task."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", nargs="+", choices=sorted(TASKS), default=["cartpole", "halfcheetah"])
    p.add_argument(
        "--seeds",
        nargs="+",
        type=int,
        default=[0, 1],
        help="one SB3 and one EGSW-PPO model per seed, trained in lockstep",
    )
    p.add_argument("--cartpole-steps", type=int, default=100_000)
    p.add_argument("--halfcheetah-steps", type=int, default=50_000)
    p.add_argument(
        "--chunk",
        type=int,
        default=None,
        help="steps per turn (default: 10 PPO iterations on CartPole = 2560, 1 on HalfCheetah = 2048)",
    )
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--alpha", type=float, default=0.1)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument(
        "--mode",
        choices=["auto", "step", "trajectory"],
        default="auto",
        help="EGSW mode; auto: step with several envs, trajectory with one (step mode needs n_envs >= 2)",
    )
    p.add_argument(
        "--quick", action="store_true", help="a few-minute run: CartPole 20k, HalfCheetah 10k, seed 0"
    )
    a = p.parse_args()
    if a.quick:
        a.cartpole_steps, a.halfcheetah_steps = 20_000, 10_000
        a.seeds = [0]
    torch.set_num_threads(a.threads)

    import stable_baselines3 as sb3
    from _env_report import print_env_report, ratio_interval

    print_env_report({"SB3 PPO": "float32", "EGSW-PPO": "float32"})

    import egsw_gym

    summary = {}
    for task in a.tasks:
        make, n_envs = TASKS[task]
        steps = a.cartpole_steps if task == "cartpole" else a.halfcheetah_steps
        mode = a.mode if a.mode != "auto" else ("step" if n_envs > 1 else "trajectory")
        egsw = egsw_gym.EGSW(alpha=a.alpha, temperature=a.temperature, mode=mode)
        chunk = a.chunk or (2560 if task == "cartpole" else 2048)
        runs: dict[str, list[tuple[float, float]]] = {"sb3": [], "egsw": []}
        chunk_walls: dict[str, list[float]] = {"sb3": [], "egsw": []}  # every chunk's wall time, in order
        for seed in a.seeds:
            models = {"sb3": make(sb3.PPO, seed), "egsw": make(egsw_gym.PPO, seed, egsw=egsw)}
            totals = {name: [0.0, 0.0] for name in models}
            for k in range(max(1, -(-steps // chunk))):
                # Lockstep: each model learns one chunk in turn, who goes first alternates.
                order = ["sb3", "egsw"] if k % 2 == 0 else ["egsw", "sb3"]
                for name in order:
                    wall, cpu = timed_learn(models[name], min(chunk, steps - k * chunk))
                    chunk_walls[name].append(wall)
                    totals[name][0] += wall
                    totals[name][1] += cpu
            for name, (wall, cpu) in totals.items():
                runs[name].append((wall, cpu))
                print(
                    f"{task:12s} seed={seed} {name:5s} steps={models[name].num_timesteps} "
                    f"wall={wall:7.2f}s cpu={cpu:7.2f}s",
                    flush=True,
                )
        chunk_ratio = statistics.median(
            e / s for e, s in zip(chunk_walls["egsw"], chunk_walls["sb3"], strict=True)
        )
        low, high = ratio_interval(chunk_walls["egsw"], chunk_walls["sb3"])
        sb3_wall = sum(w for w, _ in runs["sb3"])
        egsw_wall = sum(w for w, _ in runs["egsw"])
        sb3_cpu = sum(c for _, c in runs["sb3"])
        egsw_cpu = sum(c for _, c in runs["egsw"])
        summary[task] = dict(
            steps=steps, chunk=chunk, egsw_mode=mode, seeds=a.seeds, sb3_wall_s=round(sb3_wall, 2), egsw_wall_s=round(egsw_wall, 2),
            wall_ratio=round(egsw_wall / sb3_wall, 4), median_chunk_wall_ratio=round(chunk_ratio, 4),
            chunk_median_ratio_95ci=[round(low, 4), round(high, 4)],
            cpu_ratio=round(egsw_cpu / sb3_cpu, 4),
        )  # fmt: skip
        print(
            f"{task:12s} SB3 {sb3_wall:.2f}s  EGSW-PPO {egsw_wall:.2f}s  wall ratio {egsw_wall / sb3_wall:.3f} "
            f"(median per chunk {chunk_ratio:.3f}; ratio of median chunk times, 95% CI "
            f"{low:.3f}-{high:.3f}; cpu ratio {egsw_cpu / sb3_cpu:.3f}; target <= 1.05)",
            flush=True,
        )
    print("RESULT " + json.dumps(summary))


if __name__ == "__main__":
    main()
