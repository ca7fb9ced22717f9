"""Rollout throughput: LMPolicy stepping the batched text env vs ``model.generate``, side by side.

Same model, batch, prompts (the env's own left-padded prompts), prompt length and number of new
tokens. Three rows per batch size:

- ``generate``: ``model.generate`` (sampling, KV cache, no early stop), the reference;
- ``act``: the policy's KV-cached :meth:`LMPolicy.act` loop alone (no environment);
- ``env+act``: what GRPO's rollout does: ``gym.make_vec("egsw/Arithmetic-v0", n,
  vectorization_mode="vector_entry_point")`` reset, then per step ``act`` on the observation and
  ``env.step`` (with its SAME_STEP autoreset), for ``new_tokens`` steps.

Every row generates ``batch * new_tokens`` tokens; the ratio is tokens/s over ``generate``'s
(target >= 0.9x). Timings are the best of ``--reps`` interleaved runs after a warm-up.

Usage: ``python benchmarks/lm_rollout_throughput.py [--threads 2] [--batch 8 64 256] [--new-tokens 32]
[--size default|tiny4]``
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, nargs="+", default=[8, 64, 256])
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--prompt-tokens", type=int, default=8, help="max_prompt_tokens of the env (P)")
    p.add_argument("--reps", type=int, default=7)
    p.add_argument(
        "--size",
        choices=["default", "tiny4"],
        default="default",
        help="default: LMPolicy's tiny GPT-2 (2x128); tiny4: 4 layers x 256 as in lm_gen_bench.py",
    )
    return p.parse_args()


def best_times(fns: dict, reps: int) -> dict[str, float]:
    """Best wall time of each function over ``reps`` rounds, after one warm-up call each.

    The functions are timed in turn within every round (not one after the other), so a burst of load
    on a shared machine hits all of them alike instead of skewing one.

    Parameters
    ----------
    fns : dict of str to callable
        The functions to time, by name.
    reps : int
        Rounds.

    Returns
    -------
    dict of str to float
        Best seconds per name.
    """
    for fn in fns.values():
        fn()
    best = {name: float("inf") for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t0)
    return best


def bench_batch(args: argparse.Namespace, batch: int) -> None:
    """Time the three modes at one batch size and print their RESULT rows and ratio line.

    Parameters
    ----------
    args : argparse.Namespace
        The command line.
    batch : int
        Number of sequences generated together.
    """
    import gymnasium as gym
    from transformers import GenerationConfig

    import egsw_gym  # noqa: F401  (registers egsw/* ids)
    from egsw_gym.policies.lm import LMPolicy

    P, N = args.prompt_tokens, args.new_tokens
    model_config = {"n_layer": 4, "n_embd": 256, "n_head": 4} if args.size == "tiny4" else None
    venv = gym.make_vec(
        "egsw/Arithmetic-v0",
        batch,
        vectorization_mode="vector_entry_point",
        max_prompt_tokens=P,
        max_new_tokens=N,
    )
    policy = LMPolicy(
        venv.single_observation_space, venv.single_action_space, lambda _: 1e-3, model_config=model_config
    )
    policy.set_training_mode(False)
    model = policy.model
    obs0, _ = venv.reset(seed=0)
    prompt_ids = torch.as_tensor(obs0["input_ids"][:, :P])
    prompt_mask = torch.as_tensor(obs0["attention_mask"][:, :P])

    gen_config = GenerationConfig(
        max_new_tokens=N,
        min_new_tokens=N,
        do_sample=True,
        top_k=0,
        top_p=1.0,
        temperature=1.0,
        use_cache=True,
        pad_token_id=int(venv.unwrapped.pad_token_id),
        eos_token_id=None,  # never stop early: every row generates N tokens, as in the env loop
    )

    def run_generate() -> None:
        with torch.inference_mode():
            out = model.generate(prompt_ids, attention_mask=prompt_mask, generation_config=gen_config)
        assert out.shape == (batch, P + N)

    def run_act() -> None:
        obs = {k: torch.as_tensor(v) for k, v in obs0.items()}
        state = None
        for _ in range(N):
            _, _, _, state = policy.act(obs, state)

    def run_env_act() -> None:
        # GRPO's round: reset, then act/step; finished slots auto-reset and keep going (masked
        # in GRPO), so the model does batch * N token steps, like generate.
        obs, _ = venv.reset(seed=0)
        state = None
        for _ in range(N):
            actions, _, _, state = policy.act({k: torch.as_tensor(v) for k, v in obs.items()}, state)
            obs, *_ = venv.step(actions.numpy())

    times = best_times({"generate": run_generate, "act": run_act, "env+act": run_env_act}, args.reps)
    results = {
        name: {"seconds": t, "tokens_per_s": batch * N / t, "ms_per_step": 1000 * t / N}
        for name, t in times.items()
    }
    ref = results["generate"]["tokens_per_s"]
    for name, r in results.items():
        row = {
            "mode": name,
            "batch": batch,
            "prompt_tokens": P,
            "new_tokens": N,
            "size": args.size,
            "threads": torch.get_num_threads(),
            "tokens_per_s": round(r["tokens_per_s"]),
            "ms_per_step": round(r["ms_per_step"], 3),
            "ratio_vs_generate": round(r["tokens_per_s"] / ref, 3),
        }
        print("RESULT " + json.dumps(row), flush=True)
    print(
        f"batch {batch:4d}: generate {ref:9.0f} tok/s | act {results['act']['tokens_per_s']:9.0f} tok/s "
        f"({results['act']['tokens_per_s'] / ref:.2f}x) | env+act {results['env+act']['tokens_per_s']:9.0f} "
        f"tok/s ({results['env+act']['tokens_per_s'] / ref:.2f}x)",
        flush=True,
    )


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    import transformers

    transformers.logging.set_verbosity_error()
    for batch in args.batch:
        bench_batch(args, batch)
    print("torch", torch.__version__, "transformers", transformers.__version__, "numpy", np.__version__)


if __name__ == "__main__":
    main()
