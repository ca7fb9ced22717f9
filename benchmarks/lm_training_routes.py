"""The GRPO update by each training-pass route of ``LMPolicy``, paired on the same batches.

Per step: one GRPO rollout, then the update (reference pass, training pass, clip, AdamW) on that
batch by each route from the same weights and optimizer state, in rotating order: the default
``accel`` (the prefix tree) and the plain teacher-forced pass (``accel`` without ``"prefix_tree"``).
Prints the medians and, per route, the median paired difference to the default as a share of the
whole step (rollout + default update). Float32, 1 thread, G = 8, ``beta = 0.04``.

python benchmarks/lm_training_routes.py --task countdown --batch 64 --warm-start-steps 330
python benchmarks/lm_training_routes.py --task gsm8k --batch 16 --size small --warm-start-steps 0
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
from _scaling import model_config

from egsw_gym import GRPO
from egsw_gym.envs.vector import find_text_vector_env
from egsw_gym.llm import warm_start
from egsw_gym.policies.lm.accel import DEFAULT_ACCEL

ENV_IDS = {"arithmetic": "egsw/Arithmetic-v0", "countdown": "egsw/Countdown-v0", "gsm8k": "egsw/GSM8K-v0"}
ROUTES = {"default": DEFAULT_ACCEL, "plain_pass": tuple(a for a in DEFAULT_ACCEL if a != "prefix_tree")}


def build(task: str, batch: int, size: str) -> GRPO:
    """The benchmark's GRPO: the default tiny model, or a random-weight model of ``size`` (_scaling.py)."""
    kwargs = dict(
        n_envs=batch, group_size=8, n_groups=batch // 8, n_epochs=1, learning_rate=2e-4, clip_range=0.2,
        beta=0.04, loss_type="grpo", max_grad_norm=1.0, seed=0, device="cpu",
    )  # fmt: skip
    policy_kwargs = dict(optimizer_kwargs=dict(weight_decay=0.0, fused=True))
    model = GRPO("LMPolicy", ENV_IDS[task], policy_kwargs=policy_kwargs, **kwargs)
    if size == "tiny":
        return model
    policy_kwargs["model_config"] = model_config(size, model.policy.tokenizer, 0, 512)
    return GRPO("LMPolicy", ENV_IDS[task], policy_kwargs=policy_kwargs, **kwargs)


def time_routes(model: GRPO, steps: int) -> dict[str, list[float]]:
    """Seconds per step of the rollout and of each route's update, and the completion lengths."""
    _, callback = model._setup_learn(10**9, None, True, "routes", False)
    rec: dict[str, list[float]] = {k: [] for k in ("rollout", *ROUTES, "mean_len", "max_len")}
    for s in range(steps):
        t = time.perf_counter()
        batch = model.collect_groups(model.env, callback)
        rec["rollout"].append(time.perf_counter() - t)
        lengths = batch.mask.sum(1).float()
        rec["mean_len"].append(float(lengths.mean()))
        rec["max_len"].append(float(lengths.max()))
        snapshot = copy.deepcopy((model.policy.state_dict(), model.policy.optimizer.state_dict()))
        names = list(ROUTES)
        for i, name in enumerate(names[s % len(names) :] + names[: s % len(names)]):
            if i:
                model.policy.load_state_dict(snapshot[0])
                model.policy.optimizer.load_state_dict(snapshot[1])
            for policy in (model.policy, model.ref_policy):  # the reference pass takes the same route
                if policy is not None:
                    policy.accel = ROUTES[name]
            t = time.perf_counter()
            model.train(batch)
            rec[name].append(time.perf_counter() - t)
    return rec


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", choices=sorted(ENV_IDS), default="countdown")
    p.add_argument("--batch", type=int, default=64, help="completions per step (a multiple of 8)")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2, help="first steps left out of the medians")
    p.add_argument(
        "--warm-start-steps", type=int, default=330, help="0: random weights (full-length completions)"
    )
    p.add_argument(
        "--size", default="tiny", help="tiny (the default model) or a _scaling.py size: small, 30m"
    )
    args = p.parse_args()
    torch.set_num_threads(1)
    model = build(args.task, args.batch, args.size)
    if args.warm_start_steps:
        venv = find_text_vector_env(model.env)
        warm_start(model.policy, venv.task, venv.tokenizer, steps=args.warm_start_steps, seed=0, env=venv)
        model.sync_reference_policy()
    rec = time_routes(model, args.steps)
    med = {k: statistics.median(v[args.warmup :]) for k, v in rec.items()}
    step = med["rollout"] + med["default"]
    print(
        f"{args.task}, {args.batch} completions, {args.size}: completion length mean {med['mean_len']:.1f}, "
        f"max {med['max_len']:.0f}; rollout {med['rollout'] * 1e3:.1f} ms; step {step * 1e3:.1f} ms (default)"
    )
    for name in ROUTES:
        pair = statistics.median(
            x - y for x, y in zip(rec[name][args.warmup :], rec["default"][args.warmup :], strict=True)
        )
        print(
            f"  update, {name:12s}: {med[name] * 1e3:7.1f} ms; paired vs default {100 * pair / step:+.1f}% of the step"
        )


if __name__ == "__main__":
    main()
