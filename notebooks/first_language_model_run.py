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
# # Your first language-model RL run
#
# Reinforcement learning with verifiable rewards (RLVR) in miniature, on a CPU: a tiny GPT-2 (built
# from a config, nothing downloaded) learns two-digit addition from a verifier that says only
# "right" or "wrong". The algorithm is GRPO with EGSW, through the same `GRPO` class that trains
# CartPole policies.
#
# The steps:
#
# 1. look at the task: prompts, answers and what the reward means;
# 2. build the model and give it the answer format with a short supervised warm start;
# 3. train with GRPO + EGSW and watch the fraction of correct samples;
# 4. measure held-out accuracy before and after.
#
# The budget is set in the next cell (a couple of minutes on one CPU core).
# `EGSW_NOTEBOOK_SMOKE=1` shrinks it to a few seconds (the test suite runs the notebook that way);
# numbers from a smoke run mean nothing.

# %%
# ruff: noqa: E402  (each cell imports what it introduces, as notebooks do)
import os
import warnings

import gymnasium as gym
import torch

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm's notice, not needed here

SMOKE = os.environ.get("EGSW_NOTEBOOK_SMOKE") == "1"
TOKENS = 512 if SMOKE else 100_000  # generated tokens of GRPO (its timesteps)
WARM_START_STEPS = 3 if SMOKE else 500  # at most: the warm start stops at 12% sampled accuracy
EVAL_PROBLEMS = 16 if SMOKE else 200  # held-out test problems
PASS_K = 2 if SMOKE else 4

torch.set_num_threads(1)  # small models run fastest on one thread; many threads can be far slower

# %% [markdown]
# ## 1. The task and its reward
#
# `egsw/Arithmetic-v0` is a Gymnasium environment. An episode is one completion: the observation
# holds the prompt's token ids, each action is one token, and when the model emits end-of-sequence
# (or reaches `max_new_tokens`) a verifier scores the text. Reward 1 for the right number, 0
# otherwise. Here we play the policy ourselves and type three answers:

# %%
import egsw_gym  # noqa: F401  (registers the egsw/* environments)

ENV_ID = "egsw/Arithmetic-v0"
env = gym.make(ENV_ID)
tokenizer = env.unwrapped.tokenizer

for answer in ["129", "128", "12x"]:
    obs, info = env.reset(seed=0)
    reward = 0.0
    for token in tokenizer.encode(answer, add_special_tokens=False) + [tokenizer.eos_token_id]:
        obs, reward, terminated, truncated, step_info = env.step(token)
        if terminated or truncated:
            break
    print(
        f"prompt {info['prompt']!r}  answer {answer!r}: reward {reward}, "
        f"correct {step_info['correct']}, format_ok {step_info['format_ok']}"
    )

# %% [markdown]
# `correct` is what the reward counts; `format_ok` says whether the completion was a bare number.
# Problems come from a train split during RL and from a separate, held-out test split for
# evaluation, so the accuracy below measures generalisation, not memory.
#
# ## 2. The model and its warm start
#
# `GRPO("LMPolicy", ...)` wraps a causal language model as a policy. The groups are the heart of
# GRPO: `group_size=8` completions of the *same* prompt are compared with each other, so an answer's
# advantage is its reward minus the group's mean, over the group's spread. `n_groups * group_size`
# completions make one update. EGSW in `mode="step"` compares the tokens of a group at each position.
#
# A freshly initialised model writes gibberish and is never right, so every group would have reward
# 0 everywhere and no spread: nothing to learn from. RLVR starts from a model that already answers
# in the right format sometimes. `warm_start` is that stage: a short supervised fine-tune that stops
# once 12% of the sampled answers on training problems are right.

# %%
from egsw_gym import EGSW, GRPO
from egsw_gym.llm import evaluate_accuracy, warm_start

model = GRPO(
    "LMPolicy",
    ENV_ID,
    n_envs=64,
    group_size=8,
    n_groups=8,
    learning_rate=2e-4,
    n_epochs=1,
    egsw=EGSW(alpha=0.1, temperature=1.0, mode="step"),
    seed=0,
    device="cpu",
)
stats = warm_start(
    model.policy,
    env.unwrapped.task,
    steps=WARM_START_STEPS,
    lr=1.5e-3,
    batch_size=64,
    target_accuracy=None if SMOKE else 0.12,
    eval_every=25,
    env=env,
)
print(f"warm start: {stats['steps']} supervised steps, loss {stats['first_loss']:.2f} -> {stats['loss']:.2f}")


def held_out(label: str) -> dict[str, float]:
    result = evaluate_accuracy(model.policy, ENV_ID, n=EVAL_PROBLEMS, k=PASS_K)
    print(
        f"{label}: greedy accuracy {result['accuracy']:.1%}, pass@{PASS_K} {result[f'pass@{PASS_K}']:.1%} "
        f"on {int(result['n'])} held-out problems"
    )
    return result


before = held_out("after the warm start")

# %% [markdown]
# Two accuracies: **greedy** (the most likely token at every step: what the model "believes") and
# **pass@k** (at least one of k sampled completions is right: what exploration can find). RL
# samples, so pass@k above greedy accuracy is the room GRPO has to turn lucky samples into habits.
#
# ## 3. GRPO + EGSW
#
# `learn(TOKENS)` counts *generated tokens* as timesteps. The callback prints, averaged over
# every 40 updates, the fraction of sampled completions that were correct: the training reward.
# A group whose eight completions are all right, or all wrong, has no spread and teaches nothing;
# that is why the warm start aims for some, not many, right answers.

# %%
from stable_baselines3.common.callbacks import BaseCallback


class Progress(BaseCallback):
    """Print the fraction of correct sampled completions, averaged over the last ``every`` updates."""

    def __init__(self, every: int = 40) -> None:
        super().__init__()
        self.every, self.correct = every, []

    def _on_step(self) -> bool:
        return True

    def _on_training_end(self) -> None:
        self._print()

    def _on_rollout_end(self) -> None:
        # GRPO logs the mean of the episodes' info["correct"] of an update as rollout/correct.
        self.correct.append(self.model.logger.name_to_value.get("rollout/correct", float("nan")))
        if len(self.correct) == self.every:
            self._print()

    def _print(self) -> None:
        if self.correct:
            mean = sum(self.correct) / len(self.correct)
            print(f"{self.num_timesteps:7d} tokens: {mean:.1%} of sampled completions correct")
            self.correct = []


model.learn(TOKENS, callback=Progress())
after = held_out(f"after GRPO+EGSW ({model.num_timesteps} tokens)")

# %% [markdown]
# ## 4. What the numbers mean

# %%
gain = after["accuracy"] - before["accuracy"]
print(f"greedy accuracy {before['accuracy']:.1%} -> {after['accuracy']:.1%} ({100 * gain:+.1f} points)")

# %% [markdown]
# The reward is a verifier's 0/1, so the training curve above is simply "how often a *sampled*
# answer is right", while the held-out accuracy is measured on problems the model never trained on.
# A hundred thousand tokens are about 25,000 completions; in our run of this notebook greedy accuracy
# rose by more than ten points (other CPUs and seeds give somewhat different numbers), and the
# project's preset trains for a million tokens. With 200 problems one percentage point is two
# problems, and the standard error of an accuracy near 30% is about 3 points: compare runs over
# several seeds before believing a small difference.
#
# Next steps:
#
# - `python examples/grpo_arithmetic.py`: the preset's full run (warm start, 1M tokens).
# - `egsw-gym compare --envs egsw/Arithmetic-v0 --algos grpo,grpo-egsw --seeds 3`: with and without
#   EGSW, over seeds.
# - `examples/custom_task.py`: bring your own task and verifier.
