"""GRPO vs GRPO+EGSW on CartPole-v1: groups of 8 episodes from the same start state.

python examples/grpo_cartpole.py [--timesteps 200000] [--seed 0]
"""

import argparse

import torch
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy

from egsw_gym import EGSW, GRPO

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--timesteps", type=int, default=200_000)
parser.add_argument("--seed", type=int, default=0)
args = parser.parse_args()
torch.set_num_threads(1)

# The CartPole preset's EGSW for GRPO (trajectory mode; egsw_gym/experiments/presets/classic.yaml).
for name, egsw in [("GRPO", None), ("GRPO+EGSW", EGSW(alpha=0.1, temperature=2.0, mode="trajectory"))]:
    model = GRPO(
        "MlpPolicy",
        "CartPole-v1",
        n_envs=16,
        group_size=8,
        n_groups=8,
        n_epochs=10,
        learning_rate=3e-3,
        egsw=egsw,
        seed=args.seed,
        device="cpu",
    )
    model.learn(total_timesteps=args.timesteps)
    mean, std = evaluate_policy(
        model, make_vec_env("CartPole-v1", n_envs=1, seed=args.seed + 100), n_eval_episodes=10
    )
    print(f"{name:10s} eval return {mean:6.1f} +- {std:5.1f} after {model.num_timesteps} steps")
