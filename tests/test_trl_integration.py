"""EGSW on TRL's GRPOTrainer (egsw_gym.integrations.trl), on CPU with a tiny GPT-2 built from a config.

What is checked against what:

- EGSW off: batch, loss and gradients equal plain ``GRPOTrainer``'s (same seed, same model);
- EGSW on: the weights equal :func:`egsw_gym.egsw_weights` / :meth:`EGSW.sample_weights` on the same
  advantages and rollout entropies (the entropies themselves checked against the model's logits);
  the loss and its gradients equal our GRPO core's :func:`grpo_loss` with those weights (1e-6; TRL's
  fused LM head returns float32 log-probs, so float32 precision);
- every TRL ``loss_type``: the EGSW loss is ``sum_i w_i * (loss of sequence i alone)`` (the weight
  multiplies the policy term of each sequence and nothing else), and the KL term is untouched;
- two processes (torchrun, gloo, accelerate) give the weights one process gives;
- ``trainer.train()`` runs 2 steps and logs the EGSW statistics.
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)  # tiny tensors: more threads only contend for the shared cores
pytest.importorskip("trl")
pytest.importorskip("datasets")

from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel  # noqa: E402
from trl import GRPOConfig, GRPOTrainer  # noqa: E402

from egsw_gym import EGSW, egsw_weights  # noqa: E402
from egsw_gym.algorithms.grpo.core import grpo_loss  # noqa: E402
from egsw_gym.common.tokenizer import build_char_tokenizer  # noqa: E402
from egsw_gym.integrations.trl import (  # noqa: E402
    EGSW_LOSS_TYPES,
    EGSWGRPOConfig,
    EGSWGRPOTrainer,
    task_dataset,
    task_reward_func,
)

ROOT = Path(__file__).resolve().parents[1]
G = 4  # completions per prompt
B = 8  # completions per batch (2 groups)

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning")


def toy_reward(completions, **kwargs):
    """A deterministic, varied reward of the text (the untrained model never answers right)."""
    return [(sum(map(ord, c)) % 7) / 7.0 for c in completions]


def save_tiny_model(directory: Path, seed: int = 0) -> Path:
    """A one-layer GPT-2 and the character tokenizer saved to ``directory`` (TRL reloads the
    reference model from ``config._name_or_path`` when ``beta > 0``). No dropout, so a training-mode
    forward is deterministic."""
    tokenizer = build_char_tokenizer()
    tokenizer.save_pretrained(directory)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_layer=1,
        n_embd=32,
        n_head=2,
        n_positions=64,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    GPT2LMHeadModel(config).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("tiny_gpt2"))


def config_kwargs(out: Path, **overrides) -> dict:
    kwargs = dict(
        output_dir=str(out),
        use_cpu=True,
        bf16=False,  # GRPOConfig turns bf16 on by default
        fp16=False,
        report_to="none",
        save_strategy="no",
        gradient_checkpointing=False,
        per_device_train_batch_size=B,
        num_generations=G,
        max_completion_length=4,
        beta=0.0,
        loss_type="grpo",
        logging_steps=1,
        seed=0,
        dataloader_num_workers=0,
    )
    kwargs.update(overrides)
    return kwargs


def make_trainer(tiny_dir: Path, out: Path, cls=EGSWGRPOTrainer, dtype=torch.float32, **overrides):
    config_cls = EGSWGRPOConfig if cls is EGSWGRPOTrainer else GRPOConfig
    model = GPT2LMHeadModel.from_pretrained(tiny_dir).to(dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = cls(
            model=model,
            reward_funcs=overrides.pop("reward_funcs", toy_reward),
            args=config_cls(**config_kwargs(out, **overrides)),
            train_dataset=task_dataset("arithmetic", "train", 32),
            processing_class=AutoTokenizer.from_pretrained(tiny_dir),
        )
    trainer.current_gradient_accumulation_steps = 1  # set by train(); the tests call the loss directly
    return trainer


def rows(n_prompts: int = B // G, start: int = 0) -> list[dict]:
    """One generation batch as TRL's sampler yields it: each prompt repeated G times, groups contiguous."""
    data = task_dataset("arithmetic", "train", start + n_prompts)
    return [data[i] for i in range(start, start + n_prompts) for _ in range(G)]


def generate(trainer, seed: int = 0) -> dict:
    torch.manual_seed(seed)
    trainer.model.train()
    return trainer._generate_and_score_completions(rows())


def loss_and_grads(trainer, batch: dict) -> tuple[torch.Tensor, list[torch.Tensor]]:
    trainer.model.zero_grad()
    loss = trainer.compute_loss(trainer.model, batch)
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in trainer.model.parameters() if p.grad is not None]


def pad_to(x: torch.Tensor, width: int) -> torch.Tensor:
    """Right-pad the last dimension of ``x`` with zeros to ``width``."""
    return torch.nn.functional.pad(x, (0, width - x.shape[1]))


def trajectory_entropy(entropies: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.to(entropies.dtype)
    return (entropies * m).sum(1) / m.sum(1)


# ------------------------------------------------------------------------------------ configuration


def test_config_validates_like_egsw_and_names_the_field(tmp_path):
    with pytest.raises(ValueError, match="egsw_alpha"):
        EGSWGRPOConfig(**config_kwargs(tmp_path, egsw_alpha=-1.0))
    with pytest.raises(ValueError, match="egsw_temperature"):
        EGSWGRPOConfig(**config_kwargs(tmp_path, egsw_temperature=0.0))
    with pytest.raises(ValueError, match="egsw_mode"):
        EGSWGRPOConfig(**config_kwargs(tmp_path, egsw_mode="token"))
    with pytest.raises(ValueError, match="egsw_weight_sum"):
        EGSWGRPOConfig(**config_kwargs(tmp_path, egsw_weight_sum="two"))
    config = EGSWGRPOConfig(**config_kwargs(tmp_path, egsw_alpha=0.3, egsw_mode="step"))
    assert config.egsw == EGSW(alpha=0.3, mode="step")
    # Every EGSW field has its egsw_* field, with EGSW's default.
    for name, spec in EGSW.__dataclass_fields__.items():
        assert getattr(config, f"egsw_{name}") == (
            0.3 if name == "alpha" else "step" if name == "mode" else spec.default
        )
    off = EGSWGRPOConfig(**config_kwargs(tmp_path, egsw_alpha=None, loss_type="anything"))
    assert off.egsw is None  # EGSW off: no EGSW checks, TRL's own rules apply


def test_every_trl_loss_type_works_or_is_refused_by_name(tmp_path):
    """The supported set is exactly TRL's documented loss types; any other is refused by name."""
    import re

    help_text = GRPOConfig.__dataclass_fields__["loss_type"].metadata["help"]
    documented = set(re.findall(r"'(\w+)'", help_text.split("Supported values are")[1].split(".")[0]))
    assert documented == set(EGSW_LOSS_TYPES), "TRL's loss types changed: review EGSW_LOSS_TYPES"
    for loss_type in EGSW_LOSS_TYPES:
        extra = {"importance_sampling_level": "sequence"} if loss_type == "luspo" else {}
        assert EGSWGRPOConfig(**config_kwargs(tmp_path, loss_type=loss_type, **extra)).egsw is not None
    with pytest.raises(ValueError, match="loss_type='new_loss'"):
        EGSWGRPOConfig(**config_kwargs(tmp_path, loss_type="new_loss"))


def test_trainer_refuses_a_plain_grpo_config(tiny_dir, tmp_path):
    with pytest.raises(TypeError, match="EGSWGRPOConfig"):
        EGSWGRPOTrainer(
            model=str(tiny_dir),
            reward_funcs=toy_reward,
            args=GRPOConfig(**config_kwargs(tmp_path)),
            train_dataset=task_dataset("arithmetic", "train", 8),
        )


# ------------------------------------------------------------------------------ equality with TRL


def test_egsw_off_equals_plain_grpo_trainer(tiny_dir, tmp_path):
    ours = make_trainer(tiny_dir, tmp_path / "a", egsw_alpha=None, beta=0.04)
    plain = make_trainer(tiny_dir, tmp_path / "b", cls=GRPOTrainer, beta=0.04)
    batch_ours, batch_plain = generate(ours), generate(plain)
    assert batch_ours.keys() == batch_plain.keys()
    for key, value in batch_plain.items():
        if isinstance(value, torch.Tensor):
            torch.testing.assert_close(batch_ours[key], value, rtol=0, atol=0, msg=key)
    assert bool(batch_plain["advantages"].abs().sum() > 0), "vacuous: all advantages are zero"
    loss_ours, grads_ours = loss_and_grads(ours, batch_ours)
    loss_plain, grads_plain = loss_and_grads(plain, batch_plain)
    torch.testing.assert_close(loss_ours, loss_plain, rtol=0, atol=0)
    for g_ours, g_plain in zip(grads_ours, grads_plain, strict=True):
        torch.testing.assert_close(g_ours, g_plain, rtol=0, atol=0)


@pytest.fixture(scope="module")
def shared(tiny_dir, tmp_path_factory):
    """One EGSW trainer (float64 model, reference model loaded) that the tests below reconfigure."""
    return make_trainer(tiny_dir, tmp_path_factory.mktemp("shared"), dtype=torch.float64, beta=0.04)


def configure(trainer, egsw: EGSW, loss_type: str = "grpo", beta: float = 0.04):
    """Set what ``_generate_and_score_completions`` / ``_compute_loss`` read (the config is not reread)."""
    trainer.egsw, trainer.loss_type, trainer.beta = egsw, loss_type, beta
    # luspo needs sequence-level importance sampling (TRL refuses it otherwise).
    trainer.importance_sampling_level = "sequence" if loss_type == "luspo" else "token"
    return trainer


@pytest.mark.parametrize("standardize", [False, True])
def test_trajectory_weights_equal_egsw_weights(shared, standardize):
    trainer = configure(shared, EGSW(alpha=0.5, temperature=0.7, standardize_advantages=standardize))
    batch = generate(trainer)
    last = trainer.egsw_last
    adv, ent, mask = last["advantages"], last["entropies"], last["mask"].bool()
    # The rollout entropies are the sampling policy's: entropy of softmax(logits / temperature).
    ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], 1)
    attn = torch.cat([batch["prompt_mask"], batch["completion_mask"]], 1)
    with torch.no_grad():
        logits = trainer.model(input_ids=ids, attention_mask=attn).logits[:, -ent.shape[1] - 1 : -1]
    logp = torch.log_softmax(logits / trainer.temperature, -1)
    expected_ent = -(logp.exp() * logp).sum(-1)
    torch.testing.assert_close(ent[mask].double(), expected_ent[mask].double(), rtol=1e-5, atol=1e-5)
    # The weights are egsw_weights on (standardised) advantages and mean entropies, per group of G.
    h = trajectory_entropy(ent, mask)
    a = (adv - adv.mean()) / (adv.std() + 1e-8) if standardize else adv
    groups = torch.arange(B) // G
    expected = egsw_weights(a, h, groups, alpha=0.5, temperature=0.7)
    torch.testing.assert_close(last["weights"], expected, rtol=1e-6, atol=1e-6)
    assert not torch.allclose(expected, torch.ones(B)), "vacuous: uniform weights"
    # TRL's loss sees the weighted advantages.
    torch.testing.assert_close(batch["advantages"], adv * expected, rtol=1e-6, atol=1e-6)


def test_step_weights_are_per_group_and_position(shared):
    trainer = configure(shared, EGSW(alpha=0.5, mode="step"))
    batch = generate(trainer)
    last = trainer.egsw_last
    adv, ent, mask, w = last["advantages"], last["entropies"], last["mask"].bool(), last["weights"]
    assert w.shape == ent.shape and batch["advantages"].shape == ent.shape
    a = (adv - adv[:, None].expand_as(ent)[mask].mean()) / (adv[:, None].expand_as(ent)[mask].std() + 1e-8)
    for g in range(B // G):
        for t in range(ent.shape[1]):
            members = [i for i in range(g * G, (g + 1) * G) if mask[i, t]]
            if not members:
                continue
            idx = torch.tensor(members)
            expected = egsw_weights(
                a[idx], ent[idx, t], torch.zeros(len(members), dtype=torch.long), alpha=0.5, temperature=1.0
            )
            torch.testing.assert_close(w[idx, t], expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(batch["advantages"][mask], (adv[:, None] * w)[mask])


def test_entropies_come_from_trls_old_logprob_pass_when_it_runs_one(tiny_dir, tmp_path, monkeypatch):
    """steps_per_generation=2 makes TRL compute old log-probs at generation: EGSW takes the
    entropies from that pass (no pass of its own), and they and the log-probs are unchanged."""
    trainer = make_trainer(tiny_dir, tmp_path, steps_per_generation=2, egsw_alpha=0.5)
    assert trainer._computes_old_logps()
    monkeypatch.setattr(trainer, "_rollout_entropies", lambda *a, **k: pytest.fail("extra entropy pass"))
    batch = generate(trainer)
    monkeypatch.undo()
    mask = trainer.egsw_last["mask"].bool()
    ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], 1)
    attn = torch.cat([batch["prompt_mask"], batch["completion_mask"]], 1)
    with torch.no_grad():
        logps, _, _ = trainer._get_per_token_logps_and_entropies(trainer.model, ids, attn, mask.shape[1])
    torch.testing.assert_close(batch["old_per_token_logps"][mask], logps[mask], rtol=0, atol=0)
    separate = trainer._rollout_entropies(batch, B)
    torch.testing.assert_close(trainer.egsw_last["entropies"][mask], separate[mask], rtol=0, atol=0)


def test_completions_without_loss_tokens_take_no_part(tiny_dir, tmp_path):
    """mask_truncated_completions drops truncated completions from the loss: they get weight 1 and
    stay out of their group's softmax, whose weights then sum to the number of the others."""
    trainer = make_trainer(
        tiny_dir, tmp_path, mask_truncated_completions=True, max_completion_length=2, egsw_alpha=0.5,
        egsw_standardize_advantages=False,
    )  # fmt: skip
    generate(trainer)
    w, mask = trainer.egsw_last["weights"], trainer.egsw_last["mask"].bool()
    empty = ~mask.any(1)
    assert bool(empty.any()), "vacuous: no truncated completion"
    assert torch.equal(w[empty], torch.ones_like(w[empty]))
    for g in range(B // G):
        members = ~empty[g * G : (g + 1) * G]
        torch.testing.assert_close(w[g * G : (g + 1) * G][members].sum(), members.sum().to(w.dtype))


# core loss type <-> TRL loss type (ours "token" is TRL's "dapo" on one process, one accumulation step)
CORE_LOSS = {"grpo": "grpo", "dapo": "token", "dr_grpo": "dr_grpo"}


@pytest.mark.parametrize(
    "loss_type, mode",
    [("grpo", "trajectory"), ("dapo", "trajectory"), ("dr_grpo", "trajectory"), ("grpo", "step")],
)
def test_loss_equals_our_grpo_core(shared, loss_type, mode):
    """TRL's EGSW loss and gradients equal grpo_loss(weights=w) on the same batch (1e-6)."""
    trainer = configure(shared, EGSW(alpha=0.5, mode=mode), loss_type=loss_type)
    batch = generate(trainer)
    last = trainer.egsw_last
    mask = last["mask"].bool()
    loss_trl, grads_trl = loss_and_grads(trainer, batch)

    trainer.model.zero_grad()
    ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], 1)
    attn = torch.cat([batch["prompt_mask"], batch["completion_mask"]], 1)
    logp, _, _ = trainer._get_per_token_logps_and_entropies(trainer.model, ids, attn, mask.shape[1])
    weights = last["weights"] if mode == "step" else last["weights"][:, None].expand_as(logp)
    out = grpo_loss(
        logp,
        logp.detach(),  # one optimisation pass per batch: the rollout log-probs are the current ones
        last["advantages"][:, None].expand_as(logp).to(logp.dtype),
        mask,
        clip_range=trainer.epsilon_low,
        clip_range_high=trainer.epsilon_high,
        loss_type=CORE_LOSS[loss_type],
        max_len=trainer.max_completion_length,
        weights=weights.to(logp.dtype),
        ref_log_probs=batch["ref_per_token_logps"].to(logp.dtype),
        beta=0.04,
    )
    out.loss.backward()
    grads_core = [p.grad for p in trainer.model.parameters() if p.grad is not None]
    assert abs(float(loss_trl)) > 1e-4, "vacuous: zero loss"
    torch.testing.assert_close(loss_trl, out.loss.detach(), rtol=1e-6, atol=1e-6)
    for g_trl, g_core in zip(grads_trl, grads_core, strict=True):
        torch.testing.assert_close(g_trl, g_core, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("loss_type", sorted(EGSW_LOSS_TYPES))
def test_weight_multiplies_each_sequences_policy_term(shared, loss_type):
    """For every loss type: L_egsw = sum_i w_i * L(advantages of sequence i only) (beta = 0)."""
    trainer = configure(shared, EGSW(alpha=0.5), loss_type=loss_type, beta=0.0)
    batch = generate(trainer)
    adv, w = trainer.egsw_last["advantages"], trainer.egsw_last["weights"]
    with torch.no_grad():
        loss = trainer.compute_loss(trainer.model, batch)
        parts = []
        for i in range(B):
            alone = dict(batch, advantages=torch.where(torch.arange(B) == i, adv, torch.zeros_like(adv)))
            parts.append(trainer.compute_loss(trainer.model, alone))
    # TRL's fused head returns float32 log-probs, so the loss is float32 (summation order differs).
    expected = (w.double() * torch.stack(parts).double()).sum()
    assert abs(float(loss)) > 1e-6 and not torch.allclose(w, torch.ones(B)), "vacuous"
    torch.testing.assert_close(loss.double(), expected, rtol=1e-5, atol=1e-7)


def test_kl_term_is_untouched(tiny_dir, tmp_path):
    """beta * KL adds the same to the loss with and without EGSW."""
    trainer = make_trainer(tiny_dir, tmp_path, beta=0.5, egsw_alpha=0.5)
    batch = generate(trainer)
    with torch.no_grad():
        for p in trainer.model.parameters():  # move away from the reference: KL > 0
            p.add_(0.1 * torch.randn(p.shape, generator=torch.Generator().manual_seed(1), dtype=p.dtype))
        unweighted = dict(batch, advantages=trainer.egsw_last["advantages"])
        losses = {}
        for beta in (0.5, 0.0):
            trainer.beta = beta
            losses[beta] = (
                trainer.compute_loss(trainer.model, batch),
                trainer.compute_loss(trainer.model, unweighted),
            )
    kl_weighted = losses[0.5][0] - losses[0.0][0]
    kl_plain = losses[0.5][1] - losses[0.0][1]
    assert float(kl_plain) > 1e-6
    torch.testing.assert_close(kl_weighted, kl_plain, rtol=1e-5, atol=1e-7)


# --------------------------------------------------------------------------------- training, data


def test_two_steps_of_train_log_egsw_statistics(tiny_dir, tmp_path):
    trainer = make_trainer(
        tiny_dir, tmp_path, max_steps=2, egsw_alpha=0.5, egsw_mode="step", steps_per_generation=2, beta=0.04
    )
    before = [p.detach().clone() for p in trainer.model.parameters()]
    trainer.train()
    assert sum("loss" in h for h in trainer.state.log_history) == 2
    # One generation round for the two steps (steps_per_generation=2): its statistics are logged once.
    logs = [h for h in trainer.state.log_history if "reward" in h]
    assert len(logs) == 1
    for h in logs:
        for key in ("egsw/weight_max", "egsw/weight_min", "egsw/weight_ess", "egsw/entropy_mean"):
            assert key in h
        assert h["egsw/weight_min"] <= 1.0 + 1e-6 <= h["egsw/weight_max"] + 2e-6
        assert 0.0 < h["egsw/weight_ess"] <= 1.0 + 1e-9
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.model.parameters(), strict=True))


def test_task_dataset_and_reward_use_the_tasks_verifier(tmp_path):
    from egsw_gym.envs.tasks import make_task

    for name in ("arithmetic", "countdown", "gsm8k"):
        task = make_task(name, seed=3)
        data = task_dataset(name, "test", 4, seed=3)
        reward = task_reward_func(name, seed=3)
        assert reward.__name__ == f"{name}_reward"
        problems = [task.problem(i, "test") for i in range(4)]
        assert data["prompt"] == [task.raw_prompt(p) for p in problems]
        right = [task.reference_completion(p) for p in problems]
        assert reward(right, index=data["index"], split=data["split"]) == [1.0] * 4
        assert reward(["", "x" * 10**6, "7", "?"], index=data["index"], split=data["split"]) == [0.0] * 4
        chat = [[{"role": "assistant", "content": c}] for c in right]
        assert reward(chat, index=data["index"], split=data["split"]) == [1.0] * 4
    messages = task_dataset("gsm8k", "train", 2, chat=True)["prompt"][0]
    assert messages[-1]["role"] == "user" and messages[0]["role"] in ("system", "user")
    # A user's JSONL file (a finite split: n=None takes all of it).
    path = tmp_path / "problems.jsonl"
    path.write_text("".join(f'{{"prompt": "What is {a}+{a}?", "answer": "{2 * a}"}}\n' for a in range(3)))
    data = task_dataset("jsonl", "train", None, data_path=str(path))
    reward = task_reward_func("jsonl", data_path=str(path))
    assert data["answer"] == ["0", "2", "4"]
    assert reward(["0", "3", "4"], index=data["index"], split=data["split"]) == [1.0, 0.0, 1.0]
    with pytest.raises(ValueError, match="n="):
        task_dataset("arithmetic", "train", None)
    with pytest.raises(ValueError, match="n must be"):
        task_dataset("arithmetic", "test", 10**9)


def load_script(path: Path):
    """Import a script (example or benchmark) as a module, to call its ``main`` in this process."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_example_cpu_smoke_path(tmp_path):
    """examples/trl's script with a tiny local model, transformers generation, 2 CPU steps."""
    script = load_script(ROOT / "examples" / "trl" / "egsw_grpo_gsm8k.py")
    argv = ["--model", "tiny", "--task", "gsm8k", "--no-vllm", "--cpu", "--max-steps", "2"]
    argv += ["--per-device-batch", "4", "--num-generations", "2", "--max-completion-length", "4"]
    argv += ["--train-problems", "16", "--eval-problems", "4", "--output-dir", str(tmp_path)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = script.main(argv)
    assert result["egsw"] and 0.0 <= result["accuracy_after"] <= 1.0
    gpu = script.config_kwargs(script.parse_args(["--output-dir", str(tmp_path)]))  # the GPU defaults
    assert gpu["use_vllm"] and gpu["vllm_mode"] == "colocate" and gpu["bf16"] and not gpu["use_cpu"]
    assert gpu["egsw_alpha"] == 0.1 and gpu["loss_type"] in EGSW_LOSS_TYPES
    with pytest.raises(SystemExit):
        script.parse_args(["--cpu"])  # vLLM needs a GPU: --cpu requires --no-vllm


def test_gpu_check_skips_without_a_gpu(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert load_script(ROOT / "benchmarks" / "gpu_trl_check.py").main([]) == 0
    assert "skipped" in capsys.readouterr().out


def test_gpu_check_steps_and_checks_run_on_cpu(tiny_dir, tmp_path, monkeypatch):
    """The GPU script's steps and checks, on a CPU in float32 with its CUDA calls stubbed."""
    for name in ("synchronize", "reset_peak_memory_stats"):
        monkeypatch.setattr(torch.cuda, name, lambda *a, **k: None)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda *a, **k: 0)
    script = load_script(ROOT / "benchmarks" / "gpu_trl_check.py")
    args = script.parse_args(["--steps", "2", "--batch", "8", "--num-generations", "4"])
    args.max_completion_length = 4
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = script.run_side(args, str(tiny_dir), str(tmp_path), True, use_cpu=True, bf16=False)
    assert script.check(result, 4) == []
    assert result["egsw_stats"]["egsw/weight_max"] >= 1.0 and result["tokens_per_s"] > 0
    result["losses"] = [float("nan")]
    assert any("non-finite" in f for f in script.check(result, 4))


# ------------------------------------------------------------------------------------ two processes


def test_two_processes_give_the_weights_of_one(tmp_path, tiny_dir):
    """torchrun, 2 CPU ranks, gloo through accelerate: each rank's weights are its slice of the
    weights one process computes on the concatenated batch, with a group split across the ranks."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="", PYTHONPATH=str(ROOT), PYTHONWARNINGS="ignore")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    cmd += [str(ROOT / "tests" / "trl_distributed_worker.py"), str(tiny_dir), str(tmp_path)]
    proc = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]
    reference = make_trainer(tiny_dir, tmp_path / "ref", per_device_train_batch_size=6, num_generations=2)
    for case in ranks[0]:
        adv = torch.cat([r[case]["advantages"] for r in ranks])
        width = max(r[case]["entropies"].shape[1] for r in ranks)
        ent = torch.cat([pad_to(r[case]["entropies"], width) for r in ranks])
        mask = torch.cat([pad_to(r[case]["mask"].long(), width) for r in ranks]).bool()
        reference.egsw = ranks[0][case]["egsw"]
        expected, _ = reference.compute_egsw_weights(adv, ent, mask, group_size=2)
        got = [r[case]["weights"] for r in ranks]
        if expected.dim() == 2:  # step mode: compare on the loss tokens (each rank keeps its own width)
            got, expected = torch.cat([pad_to(x, width) for x in got])[mask], expected[mask]
        else:
            got = torch.cat(got)
        torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6, msg=case)
        assert not torch.allclose(expected, torch.ones_like(expected)), f"{case}: uniform weights"


# ------------------------------------------------------------------------------------------ learning


def learn_arithmetic(
    out: Path, steps: int, seed: int = 0, eval_every: int = 0, egsw_alpha: float | None = 0.1
) -> dict:
    """Warm-start the default tiny model (as the llm preset does), then train it with EGSWGRPOTrainer
    on Arithmetic; held-out greedy accuracy (200 test problems) before, during and after."""
    from transformers import TrainerCallback

    from egsw_gym import GRPO
    from egsw_gym.envs.vector import find_text_vector_env
    from egsw_gym.integrations.trl import greedy_accuracy
    from egsw_gym.llm import warm_start

    base = GRPO("LMPolicy", "egsw/Arithmetic-v0", n_envs=8, group_size=8, n_groups=1, seed=seed, device="cpu")
    venv = find_text_vector_env(base.env)
    warm_start(
        base.policy, venv.task, venv.tokenizer, steps=500, lr=1.5e-3, batch_size=64, seed=seed, env=venv,
        target_accuracy=0.12, eval_every=25,
    )  # fmt: skip
    ckpt = base.policy.save_pretrained(out / "init")
    tokenizer = AutoTokenizer.from_pretrained(ckpt)
    curve: list[tuple[int, float]] = []

    class Evaluate(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kwargs):
            if eval_every and state.global_step % eval_every == 0:
                curve.append((state.global_step, greedy_accuracy(model, tokenizer, "arithmetic")))

    config = EGSWGRPOConfig(
        **config_kwargs(
            out / "trl",
            max_steps=steps,
            per_device_train_batch_size=128,
            num_generations=8,
            max_completion_length=venv.task.suggested_max_new_tokens,
            learning_rate=2e-4,
            lr_scheduler_type="linear",
            warmup_steps=0,
            weight_decay=0.0,
            max_grad_norm=0.5,
            logging_steps=10,
            seed=seed,
            egsw_alpha=egsw_alpha,
            egsw_mode="step",
        )
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = GPT2LMHeadModel.from_pretrained(ckpt)
        before = greedy_accuracy(model, tokenizer, "arithmetic")
        trainer = EGSWGRPOTrainer(
            model=model,
            reward_funcs=task_reward_func("arithmetic"),
            args=config,
            train_dataset=task_dataset("arithmetic", "train", 128 // 8 * steps),
            processing_class=tokenizer,
            callbacks=[Evaluate()],
        )
        trainer.train()
    after = greedy_accuracy(trainer.model, tokenizer, "arithmetic")
    rewards = [h["reward"] for h in trainer.state.log_history if "reward" in h]
    return dict(before=before, after=after, curve=curve, rewards=rewards, log=trainer.state.log_history)


@pytest.mark.slow
def test_tiny_model_learns_arithmetic_through_egsw_grpo_trainer(tmp_path):
    torch.set_num_threads(1)
    result = learn_arithmetic(tmp_path, steps=600, eval_every=100)
    print(
        f"held-out greedy accuracy {result['before']:.3f} -> {result['after']:.3f}; curve {result['curve']}"
    )
    assert result["after"] - result["before"] >= 0.20, result
