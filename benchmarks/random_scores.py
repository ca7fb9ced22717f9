"""Mean episode return of the uniform random policy, the lower anchor of the study's normalised scores.

Every environment of the default study suite: ``n`` episodes with actions sampled uniformly from the
action space, episode ``i`` reset with seed ``i``, the action space seeded with 0. The numbers are
copied into ``RANDOM_SCORES`` in ``egsw_gym/experiments/aggregate.py``.

python benchmarks/random_scores.py [--episodes 100] [--envs CartPole-v1,Hopper-v5]
"""

from __future__ import annotations

import argparse

import gymnasium as gym
import numpy as np

DEFAULT_ENVS = "CartPole-v1,Acrobot-v1,Pendulum-v1,HalfCheetah-v5,Hopper-v5,Walker2d-v5"


def random_score(env_id: str, episodes: int) -> tuple[float, float]:
    """Mean and standard error of the random policy's episode return on ``env_id``."""
    env = gym.make(env_id)
    env.action_space.seed(0)
    returns = []
    for i in range(episodes):
        env.reset(seed=i)
        total, done = 0.0, False
        while not done:
            _, r, terminated, truncated, _ = env.step(env.action_space.sample())
            total += float(r)
            done = terminated or truncated
        returns.append(total)
    env.close()
    return float(np.mean(returns)), float(np.std(returns) / np.sqrt(episodes))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--episodes", type=int, default=100)
    p.add_argument("--envs", default=DEFAULT_ENVS)
    args = p.parse_args()
    for env_id in args.envs.split(","):
        mean, se = random_score(env_id, args.episodes)
        print(f"{env_id:16s} {mean:10.2f} +- {se:.2f} (standard error, {args.episodes} episodes)")


if __name__ == "__main__":
    main()
