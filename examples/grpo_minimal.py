"""GRPO + EGSW on CartPole-v1 in one file, from the rollout to ``optimizer.step()`` (CleanRL style).

GRPO has no critic. It plays *groups* of episodes that share a start state (the same reset seed),
and an episode's advantage is its return standardised within its group. EGSW (entropy-guided
sequence weighting, arXiv 2503.22456) then weights every episode's clipped surrogate loss with a
softmax over its group, scored by advantage plus an entropy bonus. Lines marked ``# EGSW`` are
everything EGSW adds to plain GRPO; ``--no-egsw`` turns them off.

Budget: 200,000 environment steps (the steps the episodes take; the last update may pass it by
part of one update). With these defaults, GRPO+EGSW and plain GRPO ended at a greedy evaluation
return of 500 (20 episodes) on each of seeds 0-4; ``tests/test_coursework.py`` checks >= 475.
The file needs only torch, gymnasium and numpy:

    python examples/grpo_minimal.py                 # GRPO + EGSW, seed 0
    python examples/grpo_minimal.py --no-egsw --seed 1
    python examples/grpo_minimal.py --check-library # also compare the weights with egsw_gym's
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import time
from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np
import torch
from torch import nn
from torch.distributions import Categorical


@dataclass
class Args:
    env_id: str = field(default="CartPole-v1", metadata={"help": "Gymnasium id (discrete actions)"})
    total_timesteps: int = field(default=200_000, metadata={"help": "environment steps to train for"})
    seed: int = field(default=0, metadata={"help": "seed of torch, numpy and the group start states"})
    group_size: int = field(default=8, metadata={"help": "episodes per group (same start state)"})
    n_groups: int = field(default=2, metadata={"help": "groups per update"})
    learning_rate: float = field(default=1e-3, metadata={"help": "Adam step size, decayed linearly to 0"})
    n_epochs: int = field(default=4, metadata={"help": "passes over each update's episodes"})
    batch_size: int = field(default=8, metadata={"help": "episodes per minibatch"})
    clip_range: float = field(default=0.2, metadata={"help": "PPO clip epsilon of the probability ratio"})
    max_grad_norm: float = field(default=0.5, metadata={"help": "gradient-norm clip"})
    egsw: bool = field(default=True, metadata={"help": "weight the surrogate with EGSW (--no-egsw: GRPO)"})
    alpha: float = field(default=0.1, metadata={"help": "EGSW: weight of the entropy in the score"})
    temperature: float = field(default=2.0, metadata={"help": "EGSW: softmax temperature P"})
    eval_every: int = field(default=20_000, metadata={"help": "environment steps between evaluations"})
    eval_episodes: int = field(default=20, metadata={"help": "greedy episodes per evaluation"})
    threads: int = field(default=1, metadata={"help": "torch threads (1 is fastest for a small MLP)"})
    check_library: bool = field(default=False, metadata={"help": "assert weights == egsw_gym's EGSW"})


def parse_args(argv: list[str] | None = None) -> Args:
    """Command-line flags from the fields of :class:`Args` (``--total-timesteps 1000``, ``--no-egsw``)."""
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    for f in dataclasses.fields(Args):
        flag, kwargs = "--" + f.name.replace("_", "-"), dict(default=f.default, help=f.metadata["help"])
        if f.type == "bool":
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, **kwargs)
        else:
            parser.add_argument(flag, type={"int": int, "float": float, "str": str}[f.type], **kwargs)
    args = Args(**vars(parser.parse_args(argv)))
    for name, ok, rule in [
        ("group_size", args.group_size >= 2, ">= 2 (a group compares its episodes)"),
        ("n_groups", args.n_groups >= 1, ">= 1"),
        ("batch_size", args.batch_size >= 1, ">= 1"),
        ("temperature", args.temperature > 0, "> 0"),
        ("alpha", args.alpha >= 0, ">= 0"),
    ]:
        if not ok:
            parser.error(f"--{name.replace('_', '-')} must be {rule}, got {getattr(args, name)}")
    return args


def layer_init(layer: nn.Linear, std: float = np.sqrt(2)) -> nn.Linear:
    """Orthogonal weights, zero bias (as CleanRL's and SB3's PPO)."""
    nn.init.orthogonal_(layer.weight, std)
    nn.init.constant_(layer.bias, 0.0)
    return layer


class Actor(nn.Module):
    """A critic-free policy: observation -> logits of a categorical distribution."""

    def __init__(self, obs_dim: int, n_actions: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            layer_init(nn.Linear(obs_dim, 64)), nn.Tanh(),
            layer_init(nn.Linear(64, 64)), nn.Tanh(),
            layer_init(nn.Linear(64, n_actions), std=0.01),  # starts near the uniform policy
        )  # fmt: skip

    def dist(self, obs: torch.Tensor) -> Categorical:
        return Categorical(logits=self.net(obs))


def egsw_weights(
    advantages: torch.Tensor, entropies: torch.Tensor, alpha: float, temperature: float
) -> torch.Tensor:
    """EGSW weights of ``(n_groups, group_size)`` samples: each row (a group) is one comparison set.

    score_i = (A_i + alpha * H_i) / P ;  w_i = N * exp(score_i) / sum_{j in group} exp(score_j).
    """
    score = (advantages.double() + alpha * entropies.double()) / temperature  # EGSW: score per episode
    n = advantages.shape[1]  # EGSW: N, the group size, so the mean weight is 1
    return (n * torch.softmax(score, dim=1)).to(advantages.dtype)  # EGSW: softmax subtracts the row max


@torch.no_grad()
def rollout(envs: list[gym.Env], actor: Actor, group_seeds: np.ndarray, group_size: int) -> dict:
    """Play one episode in every env; env ``g * group_size + j`` starts from group ``g``'s seed.

    Returns ``(B, T)`` tensors padded to the longest episode (``mask`` is True on real steps).
    """
    seeds = np.repeat(group_seeds, group_size)
    obs = np.stack([env.reset(seed=int(s))[0] for env, s in zip(envs, seeds, strict=True)])
    active = np.ones(len(envs), dtype=bool)
    keys = ("obs", "actions", "log_probs", "entropies", "rewards", "mask")
    steps: dict[str, list] = {key: [] for key in keys}
    while active.any():
        obs_t = torch.as_tensor(obs, dtype=torch.float32)
        dist = actor.dist(obs_t)
        actions = dist.sample()
        rewards, done = np.zeros(len(envs), dtype=np.float32), np.zeros(len(envs), dtype=bool)
        next_obs = obs.copy()
        for i in np.flatnonzero(active):  # finished episodes stay finished: one episode per env
            next_obs[i], rewards[i], terminated, truncated, _ = envs[i].step(int(actions[i]))
            done[i] = terminated or truncated
        for key, value in (("obs", obs_t), ("actions", actions), ("log_probs", dist.log_prob(actions)),
                           ("entropies", dist.entropy()), ("rewards", torch.as_tensor(rewards)),
                           ("mask", torch.as_tensor(active.copy()))):  # fmt: skip
            steps[key].append(value)
        active &= ~done
        obs = next_obs
    return {key: torch.stack(values, dim=1) for key, values in steps.items()}


@torch.no_grad()
def evaluate(actor: Actor, env_id: str, episodes: int, seed: int = 10_000) -> float:
    """Mean return of the greedy policy (argmax action) over ``episodes`` fresh start states."""
    env, returns = gym.make(env_id), []
    for i in range(episodes):
        obs, _ = env.reset(seed=seed + i)
        done, total = False, 0.0
        while not done:
            action = int(actor.net(torch.as_tensor(obs, dtype=torch.float32)).argmax())
            obs, reward, terminated, truncated, _ = env.step(action)
            total, done = total + float(reward), terminated or truncated
        returns.append(total)
    env.close()
    return float(np.mean(returns))


def main(args: Args) -> dict:
    """Train, evaluate every ``eval_every`` steps and at the end; returns the numbers it printed."""
    torch.set_num_threads(args.threads)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)

    # ---- environments: one per episode of an update, all groups played at once -------------------
    n_episodes = args.group_size * args.n_groups
    envs = [gym.make(args.env_id) for _ in range(n_episodes)]
    assert isinstance(envs[0].action_space, gym.spaces.Discrete), "this file handles discrete actions"
    actor = Actor(int(np.prod(envs[0].observation_space.shape)), int(envs[0].action_space.n))
    optimizer = torch.optim.Adam(actor.parameters(), lr=args.learning_rate, eps=1e-5)

    global_step, next_eval, curve, start = 0, args.eval_every, [], time.perf_counter()
    while global_step < args.total_timesteps:
        # ---- learning rate: linear decay from learning_rate to 0 over the budget -----------------
        optimizer.param_groups[0]["lr"] = args.learning_rate * (1.0 - global_step / args.total_timesteps)

        # ---- rollout: n_groups groups of group_size episodes, each group from one start state ----
        group_seeds = rng.integers(0, 2**31 - 1, size=args.n_groups)
        batch = rollout(envs, actor, group_seeds, args.group_size)
        mask = batch["mask"]
        global_step += int(mask.sum())

        # ---- group-normalised advantages: A_i = (R_i - mean_g R) / (std_g R + eps) ---------------
        returns = (batch["rewards"] * mask).sum(dim=1).view(args.n_groups, args.group_size)  # R_i
        group_adv = (returns - returns.mean(dim=1, keepdim=True)) / (returns.std(dim=1, keepdim=True) + 1e-8)
        # (a group whose episodes all return the same gets A = 0: it carries no learning signal)
        advantages = group_adv.reshape(-1, 1).expand_as(mask)  # every step of episode i gets A_i

        # ---- EGSW weights, one per episode, within its group (trajectory-wise EGSW) ---------------
        # EGSW: score_i = (A_i + alpha * H_i) / P   and, within each group g of N = group_size episodes,
        # EGSW:     w_i = N * exp(score_i) / sum_{j in g} exp(score_j)   (mean 1; all w = 1 is plain GRPO)
        weights = torch.ones(n_episodes)
        if args.egsw:
            # EGSW: H_i = mean policy entropy over episode i's steps, recorded at rollout time
            ent = (batch["entropies"] * mask).sum(dim=1) / mask.sum(dim=1)
            ent = ent.view(args.n_groups, args.group_size)
            # EGSW: standardise A over the update's episodes so that P means the same on any env
            a = (group_adv - group_adv.mean()) / (group_adv.std() + 1e-8)
            weights = egsw_weights(a, ent, args.alpha, args.temperature)  # EGSW: sums to N per group
            weights = weights.reshape(-1)
            if args.check_library:  # EGSW: the library's implementation, on the same per-step data
                from egsw_gym import EGSW

                T = mask.shape[1]
                lib = EGSW(alpha=args.alpha, temperature=args.temperature, mode="trajectory").sample_weights(
                    advantages[mask], batch["entropies"][mask],
                    trajectory_ids=torch.arange(n_episodes)[:, None].expand(-1, T)[mask],
                    step_ids=torch.arange(T)[None, :].expand(n_episodes, -1)[mask],
                    group_ids=torch.arange(n_episodes)[:, None].expand(-1, T)[mask] // args.group_size,
                )  # fmt: skip
                mine = weights[:, None].expand(-1, T)[mask]
                assert torch.allclose(mine, lib, rtol=1e-4, atol=1e-5), "EGSW weights differ from egsw_gym's"

        # ---- clipped surrogate, weighted per episode, averaged over valid steps; optimizer.step() -
        for _ in range(args.n_epochs):
            for idx in torch.randperm(n_episodes).split(args.batch_size):
                m = mask[idx]
                log_probs = actor.dist(batch["obs"][idx]).log_prob(batch["actions"][idx])  # (b, T)
                ratio = torch.exp(log_probs - batch["log_probs"][idx])  # pi / pi_old per step
                adv = advantages[idx]
                clipped = ratio.clamp(1 - args.clip_range, 1 + args.clip_range)
                surrogate = -torch.min(ratio * adv, clipped * adv)  # l_it, PPO's clipped surrogate
                weighted = weights[idx, None] * surrogate  # EGSW: w_i multiplies the surrogate only
                loss = torch.where(m, weighted, 0.0).sum() / m.sum()  # mean over the minibatch's steps
                optimizer.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(actor.parameters(), args.max_grad_norm)
                optimizer.step()

        # ---- evaluation ---------------------------------------------------------------------------
        if global_step >= next_eval or global_step >= args.total_timesteps:
            score = evaluate(actor, args.env_id, args.eval_episodes)
            curve.append((global_step, score))
            while next_eval <= global_step:
                next_eval += args.eval_every
            print(
                f"step {global_step:7d}  eval return {score:6.1f}  group return {returns.mean():6.1f}  "
                f"EGSW weight max {weights.max():.2f}  {time.perf_counter() - start:5.1f} s",
                flush=True,
            )
    for env in envs:
        env.close()
    final = curve[-1][1] if curve else float("nan")
    print(f"final eval return {final:.1f} after {global_step} steps ({'GRPO+EGSW' if args.egsw else 'GRPO'})")
    return {"final_eval": final, "steps": global_step, "curve": curve, "seconds": time.perf_counter() - start}


if __name__ == "__main__":
    main(parse_args())
