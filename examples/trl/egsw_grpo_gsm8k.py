"""GRPO + EGSW on a GSM8K-style task with TRL: Qwen2.5-0.5B-Instruct (or any causal LM), vLLM generation.

The weighting is :mod:`egsw_gym.integrations.trl`'s ``EGSWGRPOTrainer`` (TRL's ``GRPOTrainer`` with
EGSW weights on the clipped surrogate); prompts and rewards come from this project's task (its
bounded verifier scores every completion). Held-out greedy accuracy is measured before and after.

One GPU, vLLM in the training process (colocate mode)::

    python examples/trl/egsw_grpo_gsm8k.py --model Qwen/Qwen2.5-0.5B-Instruct

Several GPUs, DeepSpeed ZeRO-2 (edit ``num_processes`` in the config, or pass ``--num_processes``)::

    accelerate launch --config_file examples/trl/zero2.yaml examples/trl/egsw_grpo_gsm8k.py \\
        --model Qwen/Qwen2.5-0.5B-Instruct

vLLM on its own GPU (server mode), training on the others::

    CUDA_VISIBLE_DEVICES=0 trl vllm-serve --model Qwen/Qwen2.5-0.5B-Instruct
    CUDA_VISIBLE_DEVICES=1,2,3,4 accelerate launch --config_file examples/trl/zero2.yaml \\
        --num_processes 4 examples/trl/egsw_grpo_gsm8k.py --vllm-mode server

CPU smoke run (no vLLM; ``--model tiny`` builds a tiny GPT-2 and the character tokenizer locally)::

    python examples/trl/egsw_grpo_gsm8k.py --model tiny --task arithmetic --no-vllm --cpu \\
        --max-steps 2 --per-device-batch 8 --num-generations 4 --max-completion-length 8

``--model`` takes a Hugging Face id (downloaded by transformers as usual) or a local directory.
Needs ``pip install "egsw-gym[trl]"``, plus ``vllm`` for vLLM generation and ``deepspeed`` for ZeRO.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

TASKS = ("gsm8k", "arithmetic", "countdown", "jsonl")
#: The answer-format instruction an instruct model needs for the GSM8K-style verifier ("#### <answer>").
GSM8K_INSTRUCTION = (
    "Solve the problem step by step. End with the final answer alone on the last line, as '#### <number>'."
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="Qwen/Qwen2.5-0.5B-Instruct", help="HF id, local directory, or 'tiny'")
    p.add_argument("--task", default="gsm8k", choices=TASKS)
    p.add_argument("--data-path", help="the JSONL file, for --task jsonl")
    p.add_argument("--train-problems", type=int, default=8192, help="prompts in the training dataset")
    p.add_argument("--eval-problems", type=int, default=200, help="held-out problems, greedy (0: skip)")
    p.add_argument(
        "--format-weight", type=float, default=0.1, help="share of the reward for a well-formed answer"
    )
    p.add_argument(
        "--system-prompt",
        help="system message (default: the '#### <answer>' instruction for gsm8k, none otherwise)",
    )
    p.add_argument("--output-dir", default="runs/trl_egsw_grpo")
    p.add_argument("--max-steps", type=int, default=500)
    p.add_argument("--per-device-batch", type=int, default=16, help="completions per device per step")
    p.add_argument("--num-generations", type=int, default=8, help="completions per prompt (group size)")
    p.add_argument("--max-completion-length", type=int, default=256)
    p.add_argument("--lr", type=float, default=1e-6)
    p.add_argument("--beta", type=float, default=0.0, help="KL coefficient (0: no reference model)")
    p.add_argument("--loss-type", default="dapo", help="a TRL loss_type EGSW supports (EGSW_LOSS_TYPES)")
    p.add_argument("--egsw-alpha", type=float, default=0.1)
    p.add_argument("--egsw-temperature", type=float, default=1.0)
    p.add_argument("--egsw-mode", default="trajectory", choices=("trajectory", "step"))
    p.add_argument("--no-egsw", action="store_true", help="plain GRPO (the same trainer, egsw_alpha=None)")
    p.add_argument("--no-vllm", action="store_true", help="generate with transformers instead of vLLM")
    p.add_argument("--vllm-mode", default="colocate", choices=("colocate", "server"))
    p.add_argument("--vllm-gpu-memory-utilization", type=float, default=0.3, help="colocate mode only")
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--cpu", action="store_true", help="train on CPU in float32")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--report-to", default="none", help="TRL/transformers loggers (tensorboard, wandb, none)")
    args = p.parse_args(argv)
    if args.cpu and not args.no_vllm:
        p.error("--cpu needs --no-vllm: vLLM generation runs on a GPU")
    return args


def tiny_model(directory: Path) -> str:
    """A one-layer GPT-2 with the built-in character tokenizer, saved to ``directory`` (no download)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from egsw_gym.common.tokenizer import build_char_tokenizer

    tokenizer = build_char_tokenizer()
    tokenizer.save_pretrained(directory)
    ids = dict(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    config = GPT2Config(vocab_size=len(tokenizer), n_layer=1, n_embd=64, n_head=2, n_positions=1024, **ids)
    GPT2LMHeadModel(config).save_pretrained(directory)
    return str(directory)


def config_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The ``EGSWGRPOConfig`` arguments of the command line."""
    return dict(
        output_dir=args.output_dir,
        max_steps=args.max_steps,
        per_device_train_batch_size=args.per_device_batch,
        num_generations=args.num_generations,
        max_completion_length=args.max_completion_length,
        learning_rate=args.lr,
        beta=args.beta,
        loss_type=args.loss_type,
        egsw_alpha=None if args.no_egsw else args.egsw_alpha,
        egsw_temperature=args.egsw_temperature,
        egsw_mode=args.egsw_mode,
        use_vllm=not args.no_vllm,
        vllm_mode=args.vllm_mode,
        vllm_gpu_memory_utilization=args.vllm_gpu_memory_utilization,
        gradient_checkpointing=args.gradient_checkpointing,
        use_cpu=args.cpu,
        bf16=not args.cpu,  # GRPOConfig's default; float32 on CPU
        logging_steps=1,
        save_strategy="no",
        report_to=args.report_to,
        seed=args.seed,
    )


def make_config(args: argparse.Namespace) -> Any:
    from egsw_gym.integrations.trl import EGSWGRPOConfig

    return EGSWGRPOConfig(**config_kwargs(args))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from egsw_gym.integrations.trl import EGSWGRPOTrainer, greedy_accuracy, task_dataset, task_reward_func

    model_path = tiny_model(Path(args.output_dir) / "tiny-model") if args.model == "tiny" else args.model
    task_kwargs: dict[str, Any] = {"format_weight": args.format_weight}
    if args.task == "jsonl":
        task_kwargs["data_path"] = args.data_path
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    chat = tokenizer.chat_template is not None  # instruct models get chat messages
    system_prompt = args.system_prompt
    if system_prompt is None and args.task == "gsm8k":
        system_prompt = GSM8K_INSTRUCTION
    dtype = torch.float32 if args.cpu else torch.bfloat16
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype)
    trainer = EGSWGRPOTrainer(
        model=model,
        reward_funcs=task_reward_func(args.task, **task_kwargs),
        args=make_config(args),
        train_dataset=task_dataset(
            args.task, "train", args.train_problems, chat=chat, system_prompt=system_prompt, **task_kwargs
        ),
        processing_class=tokenizer,
    )
    evaluate = args.eval_problems > 0 and trainer.accelerator.is_main_process

    def accuracy() -> float:
        return greedy_accuracy(
            trainer.model, tokenizer, args.task, "test", args.eval_problems, chat=chat,
            system_prompt=system_prompt, max_new_tokens=args.max_completion_length, **task_kwargs,
        )  # fmt: skip

    result: dict[str, Any] = {"model": args.model, "task": args.task, "egsw": not args.no_egsw}
    if evaluate:
        result["accuracy_before"] = accuracy()
    trainer.train()
    if evaluate:
        result["accuracy_after"] = accuracy()
    if trainer.accelerator.is_main_process:
        print("RESULT " + json.dumps(result))
    return result


if __name__ == "__main__":
    main()
