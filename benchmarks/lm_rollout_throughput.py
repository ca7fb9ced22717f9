"""Rollout throughput: LMPolicy stepping the batched text env vs ``model.generate``, side by side.

Same model, batch, prompts (the env's own left-padded prompts), prompt length and number of new
tokens, all float32 on the CPU threads given. Rows per batch size:

- ``generate``: ``model.generate`` (sampling, KV cache, no early stop), the reference;
- ``act``: the policy's KV-cached :meth:`LMPolicy.act` loop alone (no environment), eager;
- ``env+act``: what GRPO's rollout does: ``gym.make_vec("egsw/Arithmetic-v0", n,
  vectorization_mode="vector_entry_point")`` reset with autoreset off (as in a GRPO round), then per
  step ``act`` on the observation and ``env.step``, for ``new_tokens`` steps; eager;
- ``act[compiled]`` / ``env+act[compiled]``: the same with ``accel=("compile",)`` (static KV
  cache, compiled single-token step); the compilation (first call) is timed separately and printed.

``--group-size G`` resets the environment with each seed on ``G`` adjacent slots, so the batch holds
``batch / G`` prompts ``G`` times each, as a GRPO round does (and as TRL hands ``generate`` its
repeated prompts); ``generate`` then gets that batch as it is, and the eager ``act`` rows decode each
run of ``G`` rows as one KV-cache sequence (:mod:`egsw_gym.policies.lm.accel.shared_decode`).

Every row generates ``batch * new_tokens`` tokens; the ratio is tokens/s over ``generate``'s
(targets: env+act[compiled] >= 1.5x at batch 8 and 64, >= 1x at 256). All rows are timed in turn
within each of ``--reps`` rounds (A, B, C, A, B, C, ...) after a warm-up, and the medians are
reported, so load on a shared machine hits all alike; each ratio comes with a 95% bootstrap interval
over the rounds (:func:`_env_report.ratio_interval`: step-to-step noise within the run).

Usage: ``python benchmarks/lm_rollout_throughput.py [--threads 1] [--batch 8 64 256] [--new-tokens 32]
[--prompt-tokens 8] [--group-size 1] [--size default|tiny4] [--quick]``
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _env_report import interleaved_medians, median, print_env_report, ratio_interval  # noqa: E402


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch", type=int, nargs="+", default=[8, 64, 256])
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--prompt-tokens", type=int, default=8, help="max_prompt_tokens of the env (P)")
    p.add_argument(
        "--group-size", type=int, default=1, help="slots per prompt (GRPO's group size); divides every batch"
    )
    p.add_argument("--reps", type=int, default=7)
    p.add_argument(
        "--size",
        choices=["default", "tiny4"],
        default="default",
        help="default: LMPolicy's tiny GPT-2 (2x128); tiny4: 4 layers x 256 as in lm_gen_bench.py",
    )
    p.add_argument("--quick", action="store_true", help="a few-minute run: 3 reps, 32 new tokens")
    p.add_argument("--no-compile", action="store_true", help="leave out the compiled rows")
    args = p.parse_args()
    if args.quick:
        args.reps = 3
    bad = [b for b in args.batch if args.group_size < 1 or b % args.group_size]
    if bad:
        p.error(f"--group-size {args.group_size} must be >= 1 and divide every --batch (not {bad})")
    return args


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
    compiled = None
    if not args.no_compile:
        compiled = LMPolicy(
            venv.single_observation_space,
            venv.single_action_space,
            lambda _: 1e-3,
            model=model,
            accel=("compile",),
        )
        compiled.set_training_mode(False)
    venv.unwrapped.autoreset = False  # a GRPO round's mode (finished slots wait for the reset)
    # One seed per slot, or per run of group_size slots (a GRPO round's repeated prompts).
    seeds = [slot // args.group_size for slot in range(batch)]
    obs0, _ = venv.reset(seed=seeds)
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

    def run_act(pol: LMPolicy) -> None:
        obs = {k: torch.as_tensor(v) for k, v in obs0.items()}
        state = None
        for _ in range(N):
            _, _, _, state = pol.act(obs, state)

    def run_env_act(pol: LMPolicy) -> None:
        # GRPO's round: reset, then act/step; finished slots wait (autoreset off) while the model
        # still steps every row (masked in GRPO), so it does batch * N token steps, like generate.
        obs, _ = venv.reset(seed=seeds)
        state = None
        for _ in range(N):
            actions, _, _, state = pol.act({k: torch.as_tensor(v) for k, v in obs.items()}, state)
            obs, *_ = venv.step(actions.numpy())

    fns = {
        "generate": run_generate,
        "act": lambda: run_act(policy),
        "env+act": lambda: run_env_act(policy),
    }
    if compiled is not None:
        t0 = time.perf_counter()
        run_env_act(compiled)  # compiles this shape bucket
        compile_s = time.perf_counter() - t0
        print(
            f"batch {batch}: compiled decode: first round {compile_s:.1f} s, of which compilation "
            f"{compiled._decoder.compile_seconds:.1f} s ({compiled._decoder.compiled_buckets} bucket(s)); "
            f"failure: {compiled._decoder.failure}",
            flush=True,
        )
        fns["act[compiled]"] = lambda: run_act(compiled)
        fns["env+act[compiled]"] = lambda: run_env_act(compiled)
    runs = interleaved_medians(fns, args.reps)
    times = {name: median(ts) for name, ts in runs.items()}
    results = {
        name: {"seconds": t, "tokens_per_s": batch * N / t, "ms_per_step": 1000 * t / N}
        for name, t in times.items()
    }
    # tokens/s ratio = generate's time / the row's time, over the same rounds
    intervals = {name: ratio_interval(runs["generate"], ts) for name, ts in runs.items()}
    ref = results["generate"]["tokens_per_s"]
    for name, r in results.items():
        row = {
            "mode": name,
            "batch": batch,
            "prompt_tokens": P,
            "new_tokens": N,
            "group_size": args.group_size,
            "size": args.size,
            "threads": torch.get_num_threads(),
            "tokens_per_s": round(r["tokens_per_s"]),
            "ms_per_step": round(r["ms_per_step"], 3),
            "ratio_vs_generate": round(r["tokens_per_s"] / ref, 3),
            "ratio_95ci": [round(x, 3) for x in intervals[name]],
            "reps": args.reps,
        }
        print("RESULT " + json.dumps(row), flush=True)
    print(
        f"batch {batch:4d}: generate {ref:9.0f} tok/s | "
        + " | ".join(
            f"{name} {r['tokens_per_s']:9.0f} tok/s ({r['tokens_per_s'] / ref:.2f}x, "
            f"95% CI {intervals[name][0]:.2f}-{intervals[name][1]:.2f})"
            for name, r in results.items()
            if name != "generate"
        ),
        flush=True,
    )


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    import transformers

    transformers.logging.set_verbosity_error()
    print_env_report({"generate": "float32", "LMPolicy": "float32"})
    for batch in args.batch:
        bench_batch(args, batch)


if __name__ == "__main__":
    main()
