"""PPO vs PPO+EGSW on CartPole-v1 with the RL Zoo hyperparameters.

python examples/ppo_cartpole.py [--timesteps 100000] [--seed 0]
"""

import argparse

import torch
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy

from egsw_gym import EGSW, PPO

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--timesteps", type=int, default=100_000)
parser.add_argument("--seed", type=int, default=0)
args = parser.parse_args()
torch.set_num_threads(1)  # small networks train fastest on one thread

# Trajectory mode, the default and the CartPole preset's (step mode collapses the policy entropy here).
for name, egsw in [("PPO", None), ("PPO+EGSW", EGSW(alpha=0.1, temperature=1.0, mode="trajectory"))]:
    env = make_vec_env("CartPole-v1", n_envs=8, seed=args.seed)
    model = PPO(
        "MlpPolicy",
        env,
        n_steps=32,
        batch_size=256,
        gae_lambda=0.8,
        gamma=0.98,
        n_epochs=20,
        ent_coef=0.0,
        learning_rate=1e-3,
        clip_range=0.2,
        egsw=egsw,
        seed=args.seed,
        device="cpu",
    )
    model.learn(total_timesteps=args.timesteps)
    mean, std = evaluate_policy(
        model, make_vec_env("CartPole-v1", n_envs=1, seed=args.seed + 100), n_eval_episodes=10
    )
    print(f"{name:9s} eval return {mean:6.1f} +- {std:5.1f} after {model.num_timesteps} steps")
