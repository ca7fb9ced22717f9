"""GRPO+EGSW on a language model: the tiny built-in GPT-2 learns two-digit addition from a verifier.

RLVR in miniature: a short supervised warm start gives the model the answer format (the "base
model"), then GRPO with EGSW trains it from the verifier's 0/1 reward alone, through
``model.learn()`` on the batched text environment. Held-out accuracy (greedy and pass@k, on the
test split that training never sees) is printed before and after. The hyperparameters are the
``egsw/Arithmetic-v0`` preset (``egsw_gym/experiments/presets/llm.yaml``), which the demo uses too.

python examples/grpo_arithmetic.py [--timesteps 300000] [--warm-start-steps N] [--eval-problems 200] [--seed 0]
"""

from __future__ import annotations

import argparse
import time

import torch

from egsw_gym import GRPO
from egsw_gym.envs.vector import find_text_vector_env
from egsw_gym.experiments.presets import make_run_spec
from egsw_gym.llm import evaluate_accuracy, warm_start

ENV_ID = "egsw/Arithmetic-v0"


def main() -> None:
    spec = make_run_spec("grpo-egsw", ENV_ID, seed=0)
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--timesteps", type=int, default=spec.n_timesteps, help="generated tokens of GRPO")
    parser.add_argument(
        "--warm-start-steps",
        type=int,
        default=spec.warm_start_steps,
        help="at most (it stops at the preset's target)",
    )
    parser.add_argument("--eval-problems", type=int, default=200, help="held-out test problems")
    parser.add_argument("--pass-k", type=int, default=8, help="k of pass@k (sampled completions per problem)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model = GRPO(
        spec.policy,
        ENV_ID,
        n_envs=spec.n_envs,
        env_kwargs=spec.env_kwargs,
        egsw=spec.egsw,
        seed=args.seed,
        device="cpu",
        **spec.algorithm_kwargs(),  # the preset's values, schedules such as lin_2e-4 resolved
    )
    venv = find_text_vector_env(model.env)  # the batched text env: task, tokenizer and prompt encoding
    t0 = time.perf_counter()
    stats = warm_start(
        model.policy,
        venv.task,
        venv.tokenizer,
        steps=args.warm_start_steps,
        seed=args.seed,
        env=venv,
        **spec.warm_start_kwargs,
    )
    model.sync_reference_policy()  # the KL reference (beta > 0) is the warm-started model

    def evaluate(label: str) -> dict[str, float]:
        result = evaluate_accuracy(
            model.policy,
            ENV_ID,
            n=args.eval_problems,
            k=args.pass_k,
            env_kwargs=spec.env_kwargs,
            seed=args.seed,
        )
        print(
            f"{label:28s} greedy accuracy {result['accuracy']:6.1%}   pass@{args.pass_k} "
            f"{result[f'pass@{args.pass_k}']:6.1%}   mean length {result['mean_length']:.2f} tokens "
            f"({int(result['n'])} held-out problems)",
            flush=True,
        )
        return result

    reached = f", sampled train accuracy {stats['accuracy']:.1%}" if stats.get("accuracy") is not None else ""
    print(f"warm start: {stats['steps']} supervised steps in {stats['seconds']:.1f} s{reached}")
    before = evaluate("after warm start")
    t1 = time.perf_counter()
    model.learn(args.timesteps)
    train_s = time.perf_counter() - t1
    after = evaluate(f"after GRPO+EGSW ({model.num_timesteps} tok)")
    print(
        f"greedy accuracy {before['accuracy']:.1%} -> {after['accuracy']:.1%} "
        f"({100 * (after['accuracy'] - before['accuracy']):+.1f} points) in {train_s:.0f} s of GRPO; "
        f"total {time.perf_counter() - t0:.0f} s"
    )


if __name__ == "__main__":
    main()
