"""One GRPO step, ours vs TRL's ``GRPOTrainer``, side by side in one run, with both learning curves.

Same everything that defines a step:

- model: the tiny default GPT-2 of ``LMPolicy`` (same config), warm-started once on the task's
  format and saved to a local directory that BOTH load (same initial weights; TRL also reloads its
  KL reference from it, as it does for ``beta > 0``);
- tokenizer: the built-in character tokenizer saved with it;
- task and prompts (``--task``): the task's train split, scored by the same verifier
  (``task.score``); we sample it through ``egsw/<Task>-v0``, TRL reads a dataset of its first
  ``--problems`` problems (same distribution, same task seed). ``arithmetic`` has ~6-token prompts
  and 5-token answers; ``countdown`` ~60-token prompts and up to 17-token answers, the shape of
  real RLVR prompts, where sharing each group's prompt pass matters more;
- group size, batch (completions per step), completion length (``max_new_tokens`` =
  ``max_completion_length``), temperature 1, one optimisation pass per batch, clip 0.2, the
  per-sequence-mean ``"grpo"`` loss, group-std reward scaling, ``beta``, AdamW with the same
  learning rate, no weight decay, a constant schedule, the same gradient-norm clip.

- precision: both sides float32 (asserted). ``GRPOConfig`` defaults to ``bf16=True`` even on CPU,
  where a CPU without native bf16 emulates it ~10x slower than fp32; the benchmark sets
  ``bf16=False, fp16=False`` and checks that TRL's accelerator runs no mixed precision. TRL's
  default ``gradient_checkpointing=True`` is also turned off (we do not checkpoint activations;
  ``--trl-gradient-checkpointing`` turns it back on).

Timing is interleaved in one process: TRL's trainer drives, and each TRL step's ``on_step_end``
callback runs one of our steps (rollout + update), so the sides alternate A, B, A, B and load on a
shared machine hits both alike. Seconds per step = median over the steps after ``--warmup``; the
ratio's 95% interval is a paired bootstrap over those steps (:func:`_env_report.ratio_interval`: the
step-to-step noise of this run, not the host's drift between runs, which moved arithmetic's ratio by
~2% between runs). Each side draws from random streams of its own (:class:`_side_by_side.RandomStreams`), so
neither side's samples, and so its completion lengths, depend on the other side's code.
``--turn-steps K`` alternates turns of K steps instead (A x K, B x K, ...): each side then starts
only one step in K with the caches the other side left behind. Strict alternation (K = 1, the
default) starts every step cold, which costs the smaller step relatively more (measured on
arithmetic: our step ~2.5 ms slower interleaved than alone, TRL's unchanged).
A step is rollout + update on our side (from the env reset that samples the step's problems), and
on TRL's from the trainer's fetch of the step's prompts (``get_batch_samples``, which runs before
``on_step_begin``: ~1 ms on arithmetic) to ``on_step_end`` (generation, reward, reference
log-probs, update). TRL's per-step logging after ``on_step_end`` (~0.4 ms) is outside its window,
our ``_log_update`` (~0.3 ms) inside ours.

Memory: peak RSS cannot be split between two sides of one process (``ru_maxrss`` is a
process-wide high-water mark, and ``tracemalloc`` does not see torch's C++ allocations), so each
side also runs ``--memory-steps`` steps alone in a fresh subprocess that imports the same
libraries (torch, transformers, trl, datasets) and loads the same checkpoint; it reports its RSS
before the first step, its peak RSS over the steps after a warm-up step (Linux ``VmHWM``, reset after the first step, whose
one-off allocations and compilation are left out on both sides) and the difference (the memory a
steady-state GRPO step adds).

Model-size sweep (``--sizes tiny,small,30m``): the same comparison, one size after the other, each
on a model with random weights built from a config (:mod:`_scaling`: the default tiny GPT-2, a ~3M
and a ~30M Qwen2-shaped model; no warm start, so rewards stay near zero and completions near full
length, which is what a step's cost depends on). Per size it reports the step ratio with its
interval, each side's peak RSS from its own subprocess, and each side's update pass (from its first
gradient-enabled forward to its optimizer step: loss forward, backward, clip, step) in achieved
FLOP/s, counted with :func:`_scaling.update_flops` (``6 N T + 12 L d_attn T^2`` per sequence of ``T``
tokens) and set against this machine's float32 ``torch.mm`` peak at the same threads, measured
before and after each size's run (:func:`_scaling.matmul_peak`).

python benchmarks/grpo_vs_trl.py [--task arithmetic|countdown|gsm8k] [--steps 40] [--threads 1] [--beta 0.04] [--quick]
    [--sizes tiny,small,30m]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

for _key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ[_key] = "1"  # nothing may come from the hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402 (after the offline switches above)
import torch  # noqa: E402


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=40, help="GRPO steps per side")
    p.add_argument("--warmup", type=int, default=3, help="first steps left out of the steady-state mean")
    p.add_argument("--turn-steps", type=int, default=1, help="steps per side per turn (1: A, B, A, B)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (both sides)")
    p.add_argument("--task", default="arithmetic", choices=("arithmetic", "countdown", "gsm8k"))
    p.add_argument("--group-size", type=int, default=8)
    p.add_argument("--batch", type=int, default=64, help="completions per step (prompts x group size)")
    p.add_argument(
        "--max-new-tokens",
        type=int,
        default=None,
        help="completion length (default: the task's suggestion; arithmetic 5 = 3 digits + EOS + 1)",
    )
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--beta", type=float, default=0.04)
    p.add_argument("--warm-start-steps", type=int, default=330)
    p.add_argument("--problems", type=int, default=4096, help="train problems in TRL's dataset")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--memory-steps", type=int, default=5, help="steps of each side's memory subprocess (0: skip)"
    )
    p.add_argument("--trl-gradient-checkpointing", action="store_true", help="TRL's default; off for parity")
    p.add_argument(
        "--compile-decode",
        choices=("true", "false"),
        default="false",
        help="true: add 'compile' to our LMPolicy's accel (compiled decode steps; its compile time is in our first step)",
    )
    p.add_argument("--quick", action="store_true", help="a few-minute run: 12 steps, 150 warm-start steps")
    p.add_argument(
        "--sizes",
        help="comma-separated model sizes to sweep with random weights (tiny, small, 30m; see _scaling.py); "
        "default: the warm-started tiny model alone",
    )
    p.add_argument("--memory-side", choices=("ours", "trl"), help=argparse.SUPPRESS)
    p.add_argument("--checkpoint", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.turn_steps < 1:
        p.error(f"--turn-steps must be >= 1, got {args.turn_steps}")
    if args.quick:
        args.steps, args.warmup, args.warm_start_steps, args.memory_steps = 12, 2, 150, 4
    if args.memory_steps == 1:
        p.error("--memory-steps must be 0 (skip) or >= 2 (one warm-up step, then the measured ones)")
    if args.steps < args.warmup + 2:
        p.error(f"--steps must be at least --warmup + 2 = {args.warmup + 2}, got {args.steps}")
    if args.sizes is not None:
        from _scaling import SIZES

        args.sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
        unknown = [s for s in args.sizes if s not in SIZES]
        if unknown or not args.sizes:
            p.error(
                f"--sizes must be a comma-separated list of {', '.join(SIZES)}, got {unknown or args.sizes}"
            )
    if args.max_new_tokens is None:
        from egsw_gym.envs.tasks import make_task

        args.max_new_tokens = make_task(args.task).suggested_max_new_tokens
    return args


ENV_IDS = {"arithmetic": "egsw/Arithmetic-v0", "countdown": "egsw/Countdown-v0", "gsm8k": "egsw/GSM8K-v0"}


def make_ours(args: argparse.Namespace, ckpt: str):
    from egsw_gym import GRPO
    from egsw_gym.policies.lm.accel import DEFAULT_ACCEL

    return GRPO(
        "LMPolicy",
        ENV_IDS[args.task],
        env_kwargs=dict(tokenizer=ckpt, max_new_tokens=args.max_new_tokens, seed=args.seed),
        policy_kwargs=dict(
            model=ckpt,
            optimizer_kwargs=dict(weight_decay=0.0, fused=True),
            accel=DEFAULT_ACCEL + (("compile",) if args.compile_decode == "true" else ()),
        ),
        n_envs=args.batch,
        group_size=args.group_size,
        n_groups=args.batch // args.group_size,
        n_epochs=1,
        learning_rate=args.lr,
        clip_range=0.2,
        beta=args.beta,
        loss_type="grpo",
        max_grad_norm=1.0,
        seed=args.seed,
        device="cpu",
    )


def prepare_checkpoint(args: argparse.Namespace, directory: Path, size: str | None = None) -> str:
    """The model both sides load, saved with its tokenizer to ``directory``.

    ``size`` None: the default tiny model, warm-started once on the task's format. Else that
    :data:`_scaling.SIZES` model with random weights (built from its config, seeded by ``--seed``).
    """
    from egsw_gym import GRPO
    from egsw_gym.envs.vector import find_text_vector_env
    from egsw_gym.llm import warm_start

    def build(policy_kwargs: dict[str, Any]) -> Any:
        return GRPO(
            "LMPolicy",
            ENV_IDS[args.task],
            env_kwargs=dict(max_new_tokens=args.max_new_tokens, seed=args.seed),
            policy_kwargs=policy_kwargs,
            n_envs=8,
            group_size=8,
            n_groups=1,
            seed=args.seed,
            device="cpu",
        )

    base = build({})
    if size is None:
        venv = find_text_vector_env(base.env)
        warm_start(
            base.policy, venv.task, venv.tokenizer, steps=args.warm_start_steps, seed=args.seed, env=venv
        )
    else:
        from _scaling import model_config

        positions = max(512, base.policy.obs_len + args.max_new_tokens)
        base = build(dict(model_config=model_config(size, base.policy.tokenizer, args.seed, positions)))
    return base.policy.save_pretrained(directory)


def make_trl(args: argparse.Namespace, ckpt: str, out_dir: str, callbacks: list) -> Any:
    """TRL's ``GRPOTrainer`` on the same checkpoint, task, verifier and hyperparameters, in float32."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    from egsw_gym.envs.tasks import make_task

    task = make_task(args.task, seed=args.seed)
    n = min(args.problems, task.num_problems("train"))
    dataset = Dataset.from_list([{"prompt": task.problem(i, "train").prompt, "index": i} for i in range(n)])
    tokenizer = AutoTokenizer.from_pretrained(ckpt, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(ckpt, local_files_only=True, dtype=torch.float32)
    eos = tokenizer.eos_token

    def verifier_reward(prompts, completions, index, **kwargs):
        # The same verifier as our environment (it scores the text before EOS).
        return [
            task.score(c.split(eos)[0], task.problem(i, "train")).score
            for c, i in zip(completions, index, strict=True)
        ]

    config = GRPOConfig(
        output_dir=out_dir,
        max_steps=args.steps,
        per_device_train_batch_size=args.batch,
        num_generations=args.group_size,
        max_completion_length=args.max_new_tokens,
        temperature=1.0,
        learning_rate=args.lr,
        lr_scheduler_type="constant",
        warmup_steps=0,
        weight_decay=0.0,
        optim="adamw_torch_fused",  # the AdamW implementation LMPolicy uses
        max_grad_norm=1.0,
        beta=args.beta,
        epsilon=0.2,
        loss_type="grpo",
        num_iterations=1,
        use_cpu=True,
        # GRPOConfig defaults to bf16=True even on CPU (emulated, ~10x slower than fp32 without
        # native bf16): pin float32 like our side.
        bf16=False,
        fp16=False,
        gradient_checkpointing=args.trl_gradient_checkpointing,
        report_to="none",
        logging_steps=1,
        save_strategy="no",
        seed=args.seed,
        dataloader_num_workers=0,
    )
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=verifier_reward,
        args=config,
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=callbacks,
    )
    assert trainer.accelerator.mixed_precision == "no", trainer.accelerator.mixed_precision
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters()), "TRL's model is not fp32"
    return trainer


def assert_ours_fp32(model: Any) -> None:
    """Our side computes in float32: fp32 parameters and no autocast on this device."""
    import contextlib

    policy = model.policy
    assert all(p.dtype == torch.float32 for p in policy.parameters()), "our model is not fp32"
    assert isinstance(policy._autocast(), contextlib.nullcontext), "our policy autocasts"


def our_step(model: Any, callback: Any, flops: Any = None) -> tuple[float, float]:
    """One of our GRPO steps (rollout + update, what ``learn`` does per iteration): seconds, mean reward.

    ``flops``: a :class:`_scaling.FlopCounter` whose ``start`` hook is on the policy's model; the
    update pass ends with ``train``.
    """
    t0 = time.perf_counter()
    batch = model.collect_groups(model.env, callback)  # rollout: groups share prompts
    model.train(batch)
    if flops is not None:
        flops.stop(batch.first_obs["attention_mask"], batch.mask, batch.group_ids)
    return time.perf_counter() - t0, float((batch.rewards * batch.mask).sum(1).mean())


def describe_precision(ours: Any, trainer: Any) -> None:
    """Print what each side computes in (checked by :func:`assert_ours_fp32` and :func:`make_trl`)."""
    ours_dtypes = sorted({str(p.dtype) for p in ours.policy.parameters()})
    trl_dtypes = sorted({str(p.dtype) for p in trainer.model.parameters()})
    print(
        f"precision as run: egsw parameters {ours_dtypes}, autocast off; TRL parameters {trl_dtypes}, "
        f"bf16={trainer.args.bf16}, fp16={trainer.args.fp16}, "
        f"accelerator mixed precision '{trainer.accelerator.mixed_precision}'",
        flush=True,
    )


def run_interleaved(args: argparse.Namespace, ckpt: str, out_dir: str) -> dict[str, list[float]]:
    """TRL drives; after each TRL step its callback runs one of ours (A, B, A, B in one process)."""
    from _scaling import FlopCounter, start_on_grad_forward
    from _side_by_side import RandomStreams
    from transformers import TrainerCallback

    ours = make_ours(args, ckpt)
    assert_ours_fp32(ours)
    _, our_callback = ours._setup_learn(10**9, None, True, "bench", False)
    our_random = RandomStreams()  # ours as seeded; TRL's trainer seeds the global ones again
    result: dict[str, Any] = {"ours_t": [], "ours_r": [], "trl_t": []}
    ours_flops = FlopCounter(ours.policy.base_model)
    start_on_grad_forward(ours.policy.base_model, ours_flops)

    class Interleave(TrainerCallback):
        fetched_at: float | None = None  # when TRL's trainer began fetching this step's prompts

        flops: FlopCounter | None = None  # TRL's update passes
        masks: tuple = ()  # prompt and completion masks of TRL's current update pass

        def on_optimizer_step(self, *a, **k):
            self.flops.stop(*self.masks)

        def on_step_begin(self, *a, **k):
            self._t0 = self.fetched_at if self.fetched_at is not None else time.perf_counter()
            self.fetched_at = None

        def on_step_end(self, *a, **k):
            result["trl_t"].append(time.perf_counter() - self._t0)
            if len(result["trl_t"]) % args.turn_steps and len(result["trl_t"]) < args.steps:
                return  # TRL's turn goes on
            while len(result["ours_t"]) < len(result["trl_t"]):  # our turn: as many steps as TRL's
                with our_random:
                    seconds, reward = our_step(ours, our_callback, ours_flops)
                result["ours_t"].append(seconds)
                result["ours_r"].append(reward)

    interleave = Interleave()
    trainer = make_trl(args, ckpt, out_dir, [interleave])
    fetch = trainer.get_batch_samples

    def timed_fetch(*a: Any, **k: Any) -> Any:
        # A TRL step starts when its trainer fetches the step's prompts from the dataset (before
        # on_step_begin), as ours starts with the env reset that samples its problems.
        interleave.fetched_at = time.perf_counter()
        return fetch(*a, **k)

    trainer.get_batch_samples = timed_fetch
    interleave.flops = FlopCounter(trainer.model)
    start_on_grad_forward(trainer.model, interleave.flops)
    compute_loss = trainer.compute_loss

    def noting_compute_loss(model: Any, inputs: dict, *a: Any, **k: Any) -> Any:
        interleave.masks = (inputs["prompt_mask"], inputs["completion_mask"])
        return compute_loss(model, inputs, *a, **k)

    trainer.compute_loss = noting_compute_loss
    describe_precision(ours, trainer)
    trainer.train()
    result["trl_r"] = [h["reward"] for h in trainer.state.log_history if "reward" in h]
    result["flops"] = {"ours": ours_flops, "trl": interleave.flops}
    result["params"] = sum(p.numel() for p in ours.policy.parameters())
    return result


def measure_memory(args: argparse.Namespace) -> None:
    """``--memory-side``: run one side alone for ``--memory-steps`` steps; print its RSS as ``MEMORY {json}``."""
    import datasets  # noqa: F401  (both sides import the same libraries, so baselines match)
    import transformers  # noqa: F401
    import trl  # noqa: F401
    from _env_report import peak_rss_mib, reset_peak_rss
    from _side_by_side import rss_mib
    from transformers import TrainerCallback

    args.steps = args.memory_steps
    ckpt = args.checkpoint
    with tempfile.TemporaryDirectory() as tmp:
        if args.memory_side == "ours":
            ours = make_ours(args, ckpt)
            assert_ours_fp32(ours)
            _, callback = ours._setup_learn(10**9, None, True, "bench", False)
            our_step(ours, callback)  # warm-up step (first allocations, compilation)
            before = rss_mib()
            reset_peak_rss()
            for _ in range(args.steps - 1):
                our_step(ours, callback)
        else:
            marks: dict[str, float] = {}

            class Mark(TrainerCallback):
                def on_step_begin(self, args_, state, control, **k):
                    if state.global_step == 1:  # after the warm-up step, as on our side
                        marks["before"] = rss_mib()
                        reset_peak_rss()

            trainer = make_trl(args, ckpt, tmp, [Mark()])
            trainer.train()
            before = marks["before"]
    peak = peak_rss_mib()
    print(
        "MEMORY "
        + json.dumps(
            {
                "side": args.memory_side,
                "rss_before_mib": before,
                "peak_rss_mib": peak,
                "step_peak_mib": peak - before,
            }
        ),
        flush=True,
    )


def memory_in_subprocesses(args: argparse.Namespace, ckpt: str) -> dict[str, dict[str, float]]:
    """Each side's :func:`measure_memory` in a fresh interpreter (see the module docstring)."""
    import subprocess
    import sys

    out = {}
    for side in ("ours", "trl"):
        command = [
            sys.executable,
            __file__,
            "--task",
            args.task,
            "--memory-side",
            side,
            "--checkpoint",
            ckpt,
            "--memory-steps",
            str(args.memory_steps),
            "--threads",
            str(args.threads),
            "--group-size",
            str(args.group_size),
            "--batch",
            str(args.batch),
            "--max-new-tokens",
            str(args.max_new_tokens),
            "--beta",
            str(args.beta),
            "--seed",
            str(args.seed),
            "--problems",
            str(args.problems),
            "--compile-decode",
            args.compile_decode,
        ]
        if args.trl_gradient_checkpointing:
            command.append("--trl-gradient-checkpointing")
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        line = next(x for x in done.stdout.splitlines() if x.startswith("MEMORY "))
        out[side] = json.loads(line[len("MEMORY ") :])
    return out


def run_sweep(args: argparse.Namespace) -> None:
    """``--sizes``: the interleaved comparison and both memory subprocesses, one size at a time."""
    from _env_report import median, ratio_interval
    from _scaling import matmul_peak, print_sweep_table, print_update_summary, update_summary

    rows, w = [], args.warmup
    for size in args.sizes:
        with tempfile.TemporaryDirectory() as tmp:
            ckpt = prepare_checkpoint(args, Path(tmp) / "init", size)
            peaks = [matmul_peak(args.threads)]
            res = run_interleaved(args, ckpt, str(Path(tmp) / "trl_out"))
            peaks.append(matmul_peak(args.threads))
            memory = memory_in_subprocesses(args, ckpt) if args.memory_steps > 0 else {}
        peak = {k: max(p[k] for p in peaks) for k in ("best", "best_cpu")}
        ours_s, trl_s = median(res["ours_t"][w:]), median(res["trl_t"][w:])
        row = dict(
            size=size,
            task=args.task,
            params=res["params"],
            ours_s_per_step=ours_s,
            trl_s_per_step=trl_s,
            ratio=ours_s / trl_s,
            ratio_95ci=list(ratio_interval(res["ours_t"][w:], res["trl_t"][w:])),
            peak_rss_mib={side: m["peak_rss_mib"] for side, m in memory.items()},
            memory=memory,
            update=update_summary(res, w, peak),
            matmul_peak_gflops={k: [p[k] / 1e9 for p in peaks] for k in ("best", "median", "best_cpu")},
            mean_reward={"ours": float(np.mean(res["ours_r"])), "trl": float(np.mean(res["trl_r"]))},
        )
        print(f"size {size} ({row['params'] / 1e6:.2f}M parameters), task {args.task}:")
        print_update_summary(row["update"])
        print("RESULT " + json.dumps(row), flush=True)
        rows.append(row)
    print(
        f"sweep: task {args.task}, G={args.group_size}, {args.batch} completions/step, {args.max_new_tokens} "
        f"new tokens, {args.steps} steps per side ({w} left out), {args.threads} thread(s), random weights"
    )
    print_sweep_table(rows)


def main() -> None:
    args = parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    import transformers

    transformers.logging.set_verbosity_error()
    if args.memory_side:
        measure_memory(args)
        return
    from _env_report import median, print_env_report, ratio_interval

    print_env_report({"egsw": "float32", "TRL": "float32 (bf16=False, fp16=False, asserted)"})
    if args.sizes:
        run_sweep(args)
        return
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        ckpt = prepare_checkpoint(args, tmp_path / "init")
        res = run_interleaved(args, ckpt, str(tmp_path / "trl_out"))
        memory = memory_in_subprocesses(args, ckpt) if args.memory_steps > 0 else {}

    w = args.warmup
    ours_t, trl_t, ours_r, trl_r = res["ours_t"], res["trl_t"], res["ours_r"], res["trl_r"]
    ours_s, trl_s = median(ours_t[w:]), median(trl_t[w:])
    print(
        f"task {args.task}; tiny GPT-2 warm-started {args.warm_start_steps} steps; "
        f"G={args.group_size}, {args.batch} completions/step, {args.max_new_tokens} new tokens, "
        f"lr={args.lr}, beta={args.beta}, {args.steps} steps per side, interleaved in turns of "
        f"{args.turn_steps}; "
        f"TRL gradient checkpointing {'on' if args.trl_gradient_checkpointing else 'off'}; "
        f"our compile_decode={args.compile_decode}"
    )
    print(
        f"{'':8s} {'s/step (median)':>16s} {'first step s':>13s} {'step peak RSS MiB':>18s} {'peak RSS MiB':>13s}"
    )
    for name, key, times in (("egsw", "ours", ours_t), ("TRL", "trl", trl_t)):
        mem = memory.get(key, {})
        print(
            f"{name:8s} {median(times[w:]):16.3f} {times[0]:13.3f} "
            f"{mem.get('step_peak_mib', float('nan')):18.1f} {mem.get('peak_rss_mib', float('nan')):13.1f}"
        )
    low, high = ratio_interval(ours_t[w:], trl_t[w:])
    print(f"ratio ours/TRL = {ours_s / trl_s:.3f}, 95% CI over steps {low:.3f}-{high:.3f}  (target <= 0.5)")
    from _scaling import print_update_summary, update_summary

    print_update_summary(update_summary(res, w))
    print("learning curves, mean reward per step (fraction correct):")
    print("  step  " + " ".join(f"{i:5d}" for i in range(1, args.steps + 1)))
    print("  egsw  " + " ".join(f"{r:5.2f}" for r in ours_r))
    print("  TRL   " + " ".join(f"{r:5.2f}" for r in trl_r))
    k = max(1, args.steps // 4)
    print(
        f"mean reward, first/last {k} steps: egsw {np.mean(ours_r[:k]):.3f} -> {np.mean(ours_r[-k:]):.3f}; "
        f"TRL {np.mean(trl_r[:k]):.3f} -> {np.mean(trl_r[-k:]):.3f}"
    )
    print(
        "RESULT "
        + json.dumps(
            dict(
                task=args.task,
                turn_steps=args.turn_steps,
                ours_s_per_step=ours_s,
                trl_s_per_step=trl_s,
                ratio=ours_s / trl_s,
                ratio_95ci=[low, high],
                memory=memory,
                ours_rewards=ours_r,
                trl_rewards=trl_r,
            )
        )
    )


if __name__ == "__main__":
    main()
