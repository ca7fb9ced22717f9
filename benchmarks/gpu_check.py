"""One short GPU check of the LM path: correctness first, then throughput. Exits 0 without a GPU.

    python benchmarks/gpu_check.py            # about a minute on one GPU; prints what it checked

On a machine without CUDA it prints a message and exits 0 (nothing to check). On CUDA it checks, with
the tiny built-in GPT-2 unless ``--model PATH`` names a local checkpoint:

1. the policy lives on the GPU and its forward passes run under bf16 autocast (the default there);
2. act (KV-cached sampling) vs evaluate_sequences (teacher-forced training pass) log-probs agree:
   to 1e-4 without autocast (float32), and within bf16 precision with it (the gap is printed);
3. a few GRPO updates on the batched arithmetic env: finite loss, parameters change, no NaN;
4. throughput: generated tokens/s of the rollout and of the whole GRPO loop, with and without autocast.

Exit status 1 when a correctness check fails.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch


def _policy_lp_gap(
    model_kwargs: dict, autocast: bool | None, device: str, n: int = 32, steps: int = 16
) -> float:
    """Max |act log-prob - evaluate log-prob| over n sampled completions of the arithmetic env."""
    import gymnasium as gym

    from egsw_gym import GRPO

    model = GRPO(
        "LMPolicy",
        "egsw/Arithmetic-v0",
        n_envs=n,
        group_size=8,
        n_groups=n // 8,
        env_kwargs=dict(max_new_tokens=steps),
        policy_kwargs=dict(autocast=autocast, **model_kwargs),
        seed=0,
        device=device,
    )
    policy, env = model.policy, model.env
    assert isinstance(env.observation_space, gym.spaces.Dict)
    obs = env.reset()
    first = {k: torch.as_tensor(v, device=policy.device) for k, v in obs.items()}
    state, actions, lps = None, [], []
    for _ in range(steps):
        a, lp, _, state = policy.act(first, state)
        actions.append(a)
        lps.append(lp)
    actions, act_lp = torch.stack(actions, 1), torch.stack(lps, 1)
    with torch.no_grad():
        eval_lp, _ = policy.evaluate_sequences(
            first, None, actions, torch.ones_like(actions, dtype=torch.bool)
        )
    return float((act_lp - eval_lp).abs().max())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None, help="local HF checkpoint directory (default: tiny GPT-2)")
    parser.add_argument("--n-envs", type=int, default=128)
    parser.add_argument("--updates", type=int, default=3)
    parser.add_argument(
        "--device", default="cuda", help="'cpu' runs the same checks on the CPU (a smoke test of this script)"
    )
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_check: no CUDA device available; nothing to check (exit 0).")
        return 0

    from egsw_gym import EGSW, GRPO

    cuda = args.device == "cuda"
    name = torch.cuda.get_device_name(0) if cuda else "cpu"
    print(
        f"gpu_check on {name}, torch {torch.__version__}, bf16 supported: {cuda and torch.cuda.is_bf16_supported()}"
    )

    def sync() -> None:
        if cuda:
            sync()

    model_kwargs: dict = (
        {"model": args.model} if args.model else {"model_config": dict(n_layer=4, n_embd=256, n_head=4)}
    )
    env_kwargs = {"tokenizer": args.model} if args.model else {}
    failures = []

    # 2. act vs evaluate agreement
    gap32 = _policy_lp_gap(model_kwargs, autocast=False, device=args.device)
    gap16 = _policy_lp_gap(model_kwargs, autocast=None, device=args.device)
    print(
        f"act vs evaluate max |dlogp|: float32 {gap32:.2e} (want < 1e-4), bf16 autocast {gap16:.2e} (want < 0.1)"
    )
    if not gap32 < 1e-4:
        failures.append(f"float32 act/evaluate gap {gap32}")
    if not gap16 < 0.1:
        failures.append(f"bf16 act/evaluate gap {gap16}")

    # 3 + 4. a few GRPO updates, and throughput with / without autocast
    for autocast in (None, False):
        model = GRPO(
            "LMPolicy",
            "egsw/Arithmetic-v0",
            n_envs=args.n_envs,
            group_size=8,
            n_groups=args.n_envs // 8,
            env_kwargs=env_kwargs,
            policy_kwargs=dict(autocast=autocast, **model_kwargs),
            egsw=EGSW(),
            learning_rate=1e-4,
            seed=0,
            device=args.device,
        )
        policy = model.policy
        label = "bf16 autocast" if autocast is None else "float32"
        # 1. placement and autocast
        assert next(policy.parameters()).is_cuda == cuda, "policy is not on the GPU"
        if cuda and autocast is None and torch.cuda.is_bf16_supported():
            assert isinstance(policy._autocast(), torch.autocast), (
                "bf16 autocast is not on by default on CUDA"
            )
        before = torch.nn.utils.parameters_to_vector(policy.parameters()).detach().clone()
        model.learn(1)  # warm-up update (CUDA kernels, allocator)
        sync()
        t0, steps0 = time.perf_counter(), model.num_timesteps
        roll_time = 0.0
        for _ in range(args.updates):
            r0 = time.perf_counter()
            batch = model.collect_groups(model.env, _NullCallback(model))
            sync()
            roll_time += time.perf_counter() - r0
            model.train(batch)
        sync()
        elapsed = time.perf_counter() - t0
        tokens = model.num_timesteps - steps0
        after = torch.nn.utils.parameters_to_vector(policy.parameters()).detach()
        loss = model.logger.name_to_value.get("train/loss", float("nan"))
        finite = bool(torch.isfinite(after).all()) and loss == loss and abs(loss) != float("inf")
        moved = not torch.equal(before, after)
        print(
            f"{label:>13}: {args.updates} updates of {args.n_envs} completions, loss {loss:.4f}, "
            f"finite={finite}, params moved={moved}; rollout {tokens / roll_time:,.0f} tokens/s, "
            f"GRPO loop {tokens / elapsed:,.0f} tokens/s, peak mem {torch.cuda.max_memory_allocated() / 2**30 if cuda else 0:.2f} GiB"
        )
        if not (finite and moved):
            failures.append(f"{label}: finite={finite} moved={moved}")
        if cuda:
            torch.cuda.reset_peak_memory_stats()

    if failures:
        print("gpu_check FAILED:", "; ".join(failures))
        return 1
    print("gpu_check passed")
    return 0


class _NullCallback:
    """The minimal callback surface collect_groups uses."""

    def __init__(self, model: object) -> None:
        self.model = model

    def on_rollout_start(self) -> None: ...

    def on_rollout_end(self) -> None: ...

    def update_locals(self, _locals: dict) -> None: ...

    def on_step(self) -> bool:
        return True


if __name__ == "__main__":
    sys.exit(main())
