"""Worker of ``tests/test_distributed.py``: short GRPO runs, under ``torchrun`` or in one process.

``python -m torch.distributed.run --standalone --nproc_per_node 2 tests/distributed_worker.py OUT``
writes ``OUT/rank{r}.pt`` per rank; :func:`run_cases` called in a plain process (no ``WORLD_SIZE``)
gives the single-process reference. Every case uses the same global batch (``n_groups``) and seed.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import torch

from egsw_gym import EGSW, GRPO

CASES: dict[str, dict[str, Any]] = {
    # Control: token-mean loss, EGSW step mode (global advantage standardisation), minibatches that
    # split unevenly across ranks, entropy bonus.
    "control_token": dict(
        policy="MlpPolicy",
        env="CartPole-v1",
        group_size=4,
        n_groups=4,
        n_envs=4,
        n_epochs=2,
        batch_size=6,
        loss_type="token",
        ent_coef=0.01,
        egsw=EGSW(mode="step"),
        policy_kwargs=dict(net_arch=[16]),
        total_timesteps=600,
    ),
    # Control: Dr. GRPO (global padded length), process advantages, whole-batch minibatch.
    "control_dr_grpo": dict(
        policy="MlpPolicy",
        env="CartPole-v1",
        group_size=4,
        n_groups=4,
        n_envs=8,
        n_epochs=2,
        loss_type="dr_grpo",
        advantage="process",
        gamma=0.99,
        policy_kwargs=dict(net_arch=[16]),
        total_timesteps=600,
    ),
    # Language model: tiny GPT-2 on the batched arithmetic env, per-sequence loss, EGSW trajectory
    # mode, KL to a reference copy.
    "lm_grpo": dict(
        policy="LMPolicy",
        env="egsw/Arithmetic-v0",
        env_kwargs=dict(max_new_tokens=4),
        group_size=2,
        n_groups=4,
        n_envs=2,
        n_epochs=2,
        batch_size=3,
        loss_type="grpo",
        beta=0.05,
        learning_rate=1e-3,
        egsw=EGSW(mode="trajectory"),
        policy_kwargs=dict(model_config=dict(n_layer=1, n_embd=16, n_head=2, n_positions=64)),
        total_timesteps=32,
    ),
}


def run_case(name: str, seed: int = 3) -> dict[str, Any]:
    """Train one case; return its parameters, the group seeds this process played and the step count."""
    cfg = dict(CASES[name])
    total = cfg.pop("total_timesteps")
    played: list[int] = []
    original = GRPO._set_reset_seeds

    def recording(env: Any, seeds: Any) -> None:
        played.extend(int(s) for s in seeds)
        original(env, seeds)

    GRPO._set_reset_seeds = staticmethod(recording)
    try:
        model = GRPO(seed=seed, device="cpu", **cfg)
        model.round_seeded_sampling = True  # already the default under torchrun; needed for 1 process
        model.whole_updates = True  # the same: one process must not stop mid-update at the budget
        played.clear()  # drop the seedability probe of the constructor
        model.learn(total)
    finally:
        GRPO._set_reset_seeds = staticmethod(original)
    params = {k: v.detach().clone() for k, v in model.policy.state_dict().items()}
    return {"params": params, "seeds": sorted(set(played)), "num_timesteps": model.num_timesteps}


def run_cases(names: list[str]) -> dict[str, dict[str, Any]]:
    """:func:`run_case` for every name, in order."""
    return {name: run_case(name) for name in names}


if __name__ == "__main__":
    torch.set_num_threads(1)
    out_dir, names = sys.argv[1], sys.argv[2:] or list(CASES)
    results = run_cases(names)
    torch.save(results, os.path.join(out_dir, f"rank{os.environ.get('RANK', '0')}.pt"))
