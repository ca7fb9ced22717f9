"""A few EGSW steps of TRL's GRPOTrainer on the GPU that is present: checks, throughput, memory.

    python benchmarks/gpu_trl_check.py                       # a small GPT-2 built from a config
    python benchmarks/gpu_trl_check.py --model Qwen/Qwen2.5-0.5B-Instruct --steps 5 --use-vllm

Without CUDA it prints that it skipped and exits 0. On CUDA it runs ``--steps`` steps of
:class:`~egsw_gym.integrations.trl.EGSWGRPOTrainer` on the arithmetic task (bf16, transformers
generation unless ``--use-vllm``; the task's verifier plus a small digit-share reward, so that even
a freshly initialised model has groups with a reward spread), then the same steps with EGSW off (same trainer, ``egsw_alpha=None``),
and prints per side: seconds per step (median after the first), generated tokens per second, peak
GPU memory, and the EGSW statistics of the last step. It checks that every loss is finite, that the
parameters moved, and that the EGSW weights are finite, non-negative and average 1 within each group
(exit status 1 if not). The second side shows what the extra entropy pass of EGSW costs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="HF id or local directory (default: a GPT-2 built here)")
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--batch", type=int, default=64, help="completions per step")
    p.add_argument("--num-generations", type=int, default=8)
    p.add_argument("--max-completion-length", type=int, default=64)
    p.add_argument("--use-vllm", action="store_true", help="vLLM colocate generation (needs vllm)")
    return p.parse_args(argv)


def build_model(directory: Path) -> str:
    """A 4-layer, 256-wide GPT-2 with the character tokenizer, saved to ``directory`` (no download)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from egsw_gym.common.tokenizer import build_char_tokenizer

    tokenizer = build_char_tokenizer()
    tokenizer.save_pretrained(directory)
    config = GPT2Config(
        vocab_size=len(tokenizer), n_layer=4, n_embd=256, n_head=4, n_positions=512,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )  # fmt: skip
    GPT2LMHeadModel(config).save_pretrained(directory)
    return str(directory)


def digit_reward(completions: list[Any], **kwargs: Any) -> list[float]:
    """A small shaping reward, 0.1 x the share of digits in the completion: it gives the groups of a
    freshly initialised model (which never answers right) a reward spread, so the steps have a gradient."""
    texts = [c if isinstance(c, str) else c[-1]["content"] for c in completions]
    return [0.1 * sum(ch.isdigit() for ch in t) / max(1, len(t)) for t in texts]


def run_side(
    args: argparse.Namespace, model_path: str, out: str, egsw: bool, **overrides: Any
) -> dict[str, Any]:
    """``--steps`` steps of the trainer; timings, memory, losses and the last EGSW weights.

    ``overrides`` replace ``EGSWGRPOConfig`` arguments (the test suite runs this on a CPU with
    ``use_cpu=True, bf16=False`` and the CUDA calls stubbed).
    """
    from transformers import AutoTokenizer, TrainerCallback

    from egsw_gym.integrations.trl import EGSWGRPOConfig, EGSWGRPOTrainer, task_dataset, task_reward_func

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    times: list[float] = []

    class Clock(TrainerCallback):
        def on_step_begin(self, *a: Any, **k: Any) -> None:
            torch.cuda.synchronize()
            self.t0 = time.perf_counter()

        def on_step_end(self, *a: Any, **k: Any) -> None:
            torch.cuda.synchronize()
            times.append(time.perf_counter() - self.t0)

    kwargs = dict(
        output_dir=out, max_steps=args.steps, per_device_train_batch_size=args.batch,
        num_generations=args.num_generations, max_completion_length=args.max_completion_length,
        learning_rate=1e-5, bf16=True, use_vllm=args.use_vllm, vllm_mode="colocate", loss_type="dapo",
        logging_steps=1, save_strategy="no", report_to="none", seed=0,
        egsw_alpha=0.1 if egsw else None,
    )  # fmt: skip
    config = EGSWGRPOConfig(**{**kwargs, **overrides})
    trainer = EGSWGRPOTrainer(
        model=model_path,
        reward_funcs=[task_reward_func("arithmetic"), digit_reward],
        args=config,
        train_dataset=task_dataset("arithmetic", "train", args.batch * args.steps),
        processing_class=tokenizer,
        callbacks=[Clock()],
    )
    before = [p.detach().float().clone() for p in trainer.model.parameters()]
    torch.cuda.reset_peak_memory_stats()
    trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    tokens = [h["completions/mean_length"] * args.batch for h in logs]
    steady = times[1:] or times
    after = [p.detach().float() for p in trainer.model.parameters()]
    moved = any(not torch.equal(b, a) for b, a in zip(before, after, strict=True))
    return {
        "egsw": egsw,
        "s_per_step": statistics.median(steady),
        "tokens_per_s": sum(tokens[1:] or tokens) / sum(steady),
        "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30,
        "losses": [h["loss"] for h in logs],
        "params_moved": moved,
        "egsw_stats": {k: v for k, v in logs[-1].items() if k.startswith("egsw/")},
        "last": trainer.egsw_last,
    }


def check(result: dict[str, Any], group_size: int) -> list[str]:
    """The failed checks of one side (empty when all pass)."""
    failures = []
    if not all(torch.isfinite(torch.tensor(result["losses"]))):
        failures.append(f"non-finite loss: {result['losses']}")
    if not result["params_moved"]:
        failures.append("the parameters did not move")
    last = result["last"]
    if result["egsw"] and last is not None:
        w = last["weights"].float()
        if not (torch.isfinite(w).all() and (w >= 0).all()):
            failures.append("EGSW weights not finite and non-negative")
        # Each full local group (one process here) averages weight 1 over its completions.
        if w.dim() == 1 and w.numel() % group_size == 0:
            means = w.view(-1, group_size).mean(1)
            if not torch.allclose(means, torch.ones_like(means), atol=1e-3):
                failures.append(f"EGSW group means {means.tolist()} != 1")
    return failures


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not torch.cuda.is_available():
        print("gpu_trl_check: skipped, no CUDA GPU on this machine (nothing to check)")
        return 0
    print(f"GPU: {torch.cuda.get_device_name(0)}, torch {torch.__version__}")
    failures: list[str] = []
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        model_path = args.model or build_model(Path(tmp) / "model")
        for egsw in (True, False):
            result = run_side(args, model_path, str(Path(tmp) / f"out_{egsw}"), egsw)
            failures += [f"egsw={egsw}: {f}" for f in check(result, args.num_generations)]
            results.append(result)
    print(f"{'side':10s} {'s/step':>8s} {'tokens/s':>10s} {'peak GiB':>9s}  EGSW statistics (last step)")
    for r in results:
        name = "EGSW" if r["egsw"] else "plain"
        stats = " ".join(f"{k[5:]}={v:.3g}" for k, v in r["egsw_stats"].items())
        print(
            f"{name:10s} {r['s_per_step']:8.3f} {r['tokens_per_s']:10.0f} {r['peak_mem_gib']:9.2f}  {stats}"
        )
    summary = [{k: v for k, v in r.items() if k != "last"} for r in results]
    print("RESULT " + json.dumps({"failures": failures, "sides": summary}))
    for failure in failures:
        print(f"FAILED: {failure}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
