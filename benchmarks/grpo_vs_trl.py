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

Steady-state seconds per step = mean over the steps after ``--warmup`` (each side's first steps pay
for allocations and caches). A step is rollout + update on our side, and TRL's
``on_step_begin``..``on_step_end`` (generation, reward, reference log-probs, update) on theirs.

python benchmarks/grpo_vs_trl.py [--task arithmetic|countdown|gsm8k] [--steps 40] [--threads 1] [--beta 0.04]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import warnings
from pathlib import Path

for _key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ[_key] = "1"  # nothing may come from the hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402 (after the offline switches above)
import torch  # noqa: E402


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=40, help="GRPO steps per side")
    p.add_argument("--warmup", type=int, default=3, help="first steps left out of the steady-state mean")
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
    args = p.parse_args()
    if args.max_new_tokens is None:
        from egsw_gym.envs.tasks import make_task

        args.max_new_tokens = make_task(args.task).suggested_max_new_tokens
    return args


ENV_IDS = {"arithmetic": "egsw/Arithmetic-v0", "countdown": "egsw/Countdown-v0", "gsm8k": "egsw/GSM8K-v0"}


def make_ours(args: argparse.Namespace, ckpt: str):
    from egsw_gym import GRPO

    return GRPO(
        "LMPolicy",
        ENV_IDS[args.task],
        env_kwargs=dict(tokenizer=ckpt, max_new_tokens=args.max_new_tokens, seed=args.seed),
        policy_kwargs=dict(model=ckpt, optimizer_kwargs=dict(weight_decay=0.0, fused=True)),
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


def prepare_checkpoint(args: argparse.Namespace, directory: Path) -> str:
    """Warm-start the default tiny model once and save it (model + tokenizer) for both sides."""
    from egsw_gym import GRPO
    from egsw_gym.llm import warm_start

    base = GRPO(
        "LMPolicy",
        ENV_IDS[args.task],
        env_kwargs=dict(max_new_tokens=args.max_new_tokens, seed=args.seed),
        n_envs=8,
        group_size=8,
        n_groups=1,
        seed=args.seed,
        device="cpu",
    )
    venv = base.env.unwrapped.venv
    warm_start(base.policy, venv.task, venv.tokenizer, steps=args.warm_start_steps, seed=args.seed, env=venv)
    return base.policy.save_pretrained(directory)


def run_ours(args: argparse.Namespace, ckpt: str) -> tuple[list[float], list[float]]:
    model = make_ours(args, ckpt)
    _, callback = model._setup_learn(10**9, None, True, "bench", False)
    times, rewards = [], []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        batch = model.collect_groups(model.env, callback)  # rollout: groups share prompts
        model.train(batch)  # one GRPO update (what learn() does per iteration)
        times.append(time.perf_counter() - t0)
        rewards.append(float((batch.rewards * batch.mask).sum(1).mean()))
    return times, rewards


def run_trl(args: argparse.Namespace, ckpt: str, out_dir: str) -> tuple[list[float], list[float]]:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from egsw_gym.envs.tasks import make_task

    task = make_task(args.task, seed=args.seed)
    n = min(args.problems, task.num_problems("train"))
    dataset = Dataset.from_list([{"prompt": task.problem(i, "train").prompt, "index": i} for i in range(n)])
    tokenizer = AutoTokenizer.from_pretrained(ckpt, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(ckpt, local_files_only=True)
    eos = tokenizer.eos_token

    def verifier_reward(prompts, completions, index, **kwargs):
        # The same verifier as our environment (it scores the text before EOS).
        return [
            task.score(c.split(eos)[0], task.problem(i, "train")).score
            for c, i in zip(completions, index, strict=True)
        ]

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.times: list[float] = []
            self._t0 = 0.0

        def on_step_begin(self, *a, **k):
            self._t0 = time.perf_counter()

        def on_step_end(self, *a, **k):
            self.times.append(time.perf_counter() - self._t0)

    timer = StepTimer()
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
        callbacks=[timer],
    )
    trainer.train()
    rewards = [h["reward"] for h in trainer.state.log_history if "reward" in h]
    return timer.times, rewards


def main() -> None:
    args = parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    import transformers
    import trl

    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        ckpt = prepare_checkpoint(args, tmp_path / "init")
        ours_t, ours_r = run_ours(args, ckpt)
        trl_t, trl_r = run_trl(args, ckpt, str(tmp_path / "trl_out"))

    w = args.warmup
    ours_s, trl_s = float(np.mean(ours_t[w:])), float(np.mean(trl_t[w:]))
    print(
        f"torch {torch.__version__}, transformers {transformers.__version__}, trl {trl.__version__}; "
        f"task {args.task}; {args.threads} thread(s); tiny GPT-2 warm-started {args.warm_start_steps} steps; "
        f"G={args.group_size}, {args.batch} completions/step, {args.max_new_tokens} new tokens, "
        f"lr={args.lr}, beta={args.beta}, {args.steps} steps"
    )
    print(f"{'':8s} {'s/step (steady)':>16s} {'first step s':>13s}")
    print(f"{'egsw':8s} {ours_s:16.3f} {ours_t[0]:13.3f}")
    print(f"{'TRL':8s} {trl_s:16.3f} {trl_t[0]:13.3f}")
    print(f"ratio ours/TRL = {ours_s / trl_s:.3f}  (target <= 0.5)")
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
                ours_s_per_step=ours_s,
                trl_s_per_step=trl_s,
                ratio=ours_s / trl_s,
                ours_rewards=ours_r,
                trl_rewards=trl_r,
            )
        )
    )


if __name__ == "__main__":
    main()
