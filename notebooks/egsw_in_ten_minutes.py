# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # EGSW in ten minutes
#
# **Entropy-guided sequence weighting** (EGSW, Vanlioglu, arXiv 2503.22456) changes one thing in a
# policy-gradient update: how much each sampled trajectory (or step) counts. Plain PPO and GRPO give
# every sample the same weight. EGSW compares the samples of a *set* (a GRPO group, or the episodes
# of one PPO rollout) and gives each one
#
# $$\text{score}_i = \frac{A_i + \alpha H_i}{P}, \qquad
#   w_i = N \cdot \frac{e^{\text{score}_i}}{\sum_{j \in \text{set}} e^{\text{score}_j}}$$
#
# where $A_i$ is the sample's advantage, $H_i$ the policy's entropy there, $\alpha \ge 0$ how much
# uncertainty counts, $P > 0$ a temperature and $N$ the size of the set (so the mean weight is 1).
# The weight multiplies the sample's clipped surrogate loss and nothing else.
#
# This notebook does three things in about ten minutes on one CPU core:
#
# 1. computes the weights of a toy group by hand, to see what $\alpha$ and $P$ do;
# 2. trains PPO and PPO+EGSW on CartPole-v1 with a small budget;
# 3. plots their learning curves.
#
# The budget is set in the next cell. `EGSW_NOTEBOOK_SMOKE=1` shrinks it to a few seconds (the test
# suite runs the notebook that way).

# %%
# ruff: noqa: E402  (each cell imports what it introduces, as notebooks do)
import os

import matplotlib.pyplot as plt
import numpy as np
import torch

SMOKE = os.environ.get("EGSW_NOTEBOOK_SMOKE") == "1"
TIMESTEPS = 2_048 if SMOKE else 40_000  # PPO environment steps per run
SEEDS = [0] if SMOKE else [0, 1, 2]
EVAL_EPISODES = 2 if SMOKE else 10

# A small MLP trains fastest on one thread; torch's default (all cores) can be many times slower.
torch.set_num_threads(1)

# %% [markdown]
# ## 1. The weights of one group
#
# Take a GRPO group of 8 episodes from the same start state: one succeeds (reward 1), seven fail.
# GRPO's advantage is the reward standardised within the group, so the success gets a large positive
# advantage and each failure a small negative one. `egsw_weights` is the formula above, applied
# within each set named by `group_ids`.

# %%
from egsw_gym import egsw_weights

rewards = torch.tensor([1.0, 0, 0, 0, 0, 0, 0, 0])
advantages = (rewards - rewards.mean()) / rewards.std()
entropies = torch.full((8,), 0.6)  # the same uncertainty for every episode
group_ids = torch.zeros(8, dtype=torch.long)  # one set: the whole group

print("advantages:", [round(a, 2) for a in advantages.tolist()])
for temperature in (0.5, 1.0, 2.0, 1e6):
    w = egsw_weights(advantages, entropies, group_ids, alpha=0.1, temperature=temperature)
    print(f"P = {temperature:>9g}: success weight {w[0]:5.2f}, each failure {w[1]:4.2f}, sum {w.sum():.1f}")

# %% [markdown]
# Three things to read off:
#
# - The weights always sum to the group size (8), so the *average* sample keeps weight 1.
# - A small temperature concentrates the weight on the success: at $P = 1$ it counts about 17 times
#   as much as a failure. A huge temperature gives back uniform weights, i.e. the plain algorithm.
# - Because the positive advantages get more weight, the weighted advantages no longer sum to zero:
#   EGSW also takes a *bigger* step. A fair comparison therefore tunes the baseline's learning rate
#   too (the project's study does).
#
# Now the entropy term. Two successes, one sampled where the policy was uncertain:

# %%
advantages2 = torch.tensor([1.5, 1.5, -0.5, -0.5, -0.5, -0.5, -0.5, -0.5])
entropies2 = torch.tensor([0.2, 0.7, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5])
for alpha in (0.0, 0.1, 1.0):
    w = egsw_weights(advantages2, entropies2, group_ids, alpha=alpha, temperature=1.0)
    print(f"alpha = {alpha:3.1f}: confident success {w[0]:4.2f}, uncertain success {w[1]:4.2f}")

# %% [markdown]
# With $\alpha = 0$ the two successes weigh the same; as $\alpha$ grows the uncertain one counts more:
# EGSW pushes exploration towards good outcomes the policy was not yet sure of.
#
# ## 2. PPO vs PPO+EGSW on CartPole
#
# `egsw_gym.PPO` is Stable-Baselines3's PPO with one extra argument, `egsw=EGSW(...)`. Below, both
# use RL Zoo's CartPole hyperparameters. `mode="trajectory"` gives one weight per episode segment of
# a rollout (the recommended mode on control tasks). A callback records the mean training episode
# return after every rollout.

# %%
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy

from egsw_gym import EGSW, PPO

RL_ZOO_CARTPOLE = dict(
    n_steps=32,
    batch_size=256,
    gae_lambda=0.8,
    gamma=0.98,
    n_epochs=20,
    ent_coef=0.0,
    learning_rate=1e-3,
    clip_range=0.2,
)


class Curve(BaseCallback):
    """(timesteps, mean return of the last 20 training episodes) after every rollout."""

    def __init__(self) -> None:
        super().__init__()
        self.points: list[tuple[int, float]] = []

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        episodes = list(self.model.ep_info_buffer)[-20:]
        if episodes:
            self.points.append((self.num_timesteps, float(np.mean([e["r"] for e in episodes]))))


def train(egsw: EGSW | None, seed: int) -> tuple[list[tuple[int, float]], float]:
    env = make_vec_env("CartPole-v1", n_envs=8, seed=seed)
    model = PPO("MlpPolicy", env, egsw=egsw, seed=seed, device="cpu", **RL_ZOO_CARTPOLE)
    curve = Curve()
    model.learn(TIMESTEPS, callback=curve)
    eval_env = make_vec_env("CartPole-v1", n_envs=1, seed=10_000 + seed)
    mean_return, _ = evaluate_policy(model, eval_env, n_eval_episodes=EVAL_EPISODES)
    return curve.points, float(mean_return)


variants = {"PPO": None, "PPO+EGSW": EGSW(alpha=0.1, temperature=1.0, mode="trajectory")}
results = {}
for name, egsw in variants.items():
    for seed in SEEDS:
        points, final = train(egsw, seed)
        results[(name, seed)] = (points, final)
        print(f"{name:9s} seed {seed}: greedy eval return {final:6.1f} after {TIMESTEPS} steps")

# %% [markdown]
# ## 3. Learning curves
#
# Each line is one seed; the y-axis is the mean return of recent *training* episodes (sampled
# actions), the maximum is 500.

# %%
fig, ax = plt.subplots(figsize=(7, 4))
colors = {"PPO": "tab:blue", "PPO+EGSW": "tab:orange"}
for (name, seed), (points, _) in results.items():
    if points:
        steps, returns = zip(*points, strict=True)
        ax.plot(steps, returns, color=colors[name], label=name if seed == SEEDS[0] else None)
ax.set_xlabel("environment steps")
ax.set_ylabel("training episode return")
ax.set_title("CartPole-v1: PPO vs PPO+EGSW")
ax.legend()
plt.show()

for name in variants:
    finals = [results[(name, seed)][1] for seed in SEEDS]
    print(f"final eval return {name}: mean {np.mean(finals):.1f} over seeds {SEEDS}")

# %% [markdown]
# ## What this shows, and what it does not
#
# CartPole is easy: PPO usually reaches the maximum return within this budget, and with EGSW a seed
# may still fall short of it after 40,000 steps. Three seeds cannot tell a small difference from
# noise either way. The project's study (`egsw-gym study`, five seeds per cell, bootstrap confidence
# intervals) found that EGSW did not help PPO on control tasks; where it helped was GRPO on a
# verifiable-reward language task.
#
# Next steps:
#
# - `examples/grpo_minimal.py`: GRPO + EGSW in one file, from rollout to `optimizer.step()`.
# - `notebooks/first_language_model_run.py`: GRPO + EGSW on a tiny language model.
# - Change `temperature`, `alpha` or `mode="step"` above and rerun section 2.
