"""LMPolicy's ``autocast`` option: off by default on CPU (bit-identical), bf16 on request, kept by save/load."""

from __future__ import annotations

import pytest
import torch
from gymnasium import spaces

pytest.importorskip("transformers")

from egsw_gym.policies.lm import LMPolicy  # noqa: E402

torch.set_num_threads(1)
P, N, VOCAB = 6, 5, 100
CONFIG = {"n_layer": 1, "n_embd": 32, "n_head": 2, "n_positions": 64}


def make_policy(**kwargs) -> LMPolicy:
    obs = spaces.Dict(
        {
            "input_ids": spaces.Box(0, VOCAB - 1, (P + N,), dtype="int64"),
            "attention_mask": spaces.Box(0, 1, (P + N,), dtype="int64"),
        }
    )
    return LMPolicy(obs, spaces.Discrete(VOCAB), lambda _: 1e-3, model_config=dict(CONFIG), **kwargs)


def act_then_evaluate(policy: LMPolicy, runs: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample ``N`` tokens for 4 prompts (``runs``: 2 prompts twice each, GRPO-style, so the run decode
    and the prefix tree serve them) and recompute their log-probs with ``evaluate_sequences``."""
    torch.manual_seed(0)
    ids = (
        torch.randint(3, VOCAB, (2, P + N)).repeat_interleave(2, 0)
        if runs
        else torch.randint(3, VOCAB, (4, P + N))
    )
    mask = torch.zeros_like(ids)
    mask[:, :P] = 1
    obs, state, actions, logps = {"input_ids": ids, "attention_mask": mask}, None, [], []
    for _ in range(N):
        a, lp, _, state = policy.act(obs, state)
        actions.append(a)
        logps.append(lp)
    assert (state.accel is not None) == runs  # the run decode serves the GRPO-style rounds
    actions, act_lp = torch.stack(actions, 1), torch.stack(logps, 1)
    eval_lp, _ = policy.evaluate_sequences(obs, None, actions, torch.ones_like(actions, dtype=torch.bool))
    return act_lp, eval_lp


def test_default_is_off_on_cpu() -> None:
    policy = make_policy()
    assert not isinstance(policy._autocast(), torch.autocast)
    act_lp, eval_lp = act_then_evaluate(policy)
    torch.testing.assert_close(act_lp, eval_lp, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("runs", [False, True])
def test_bf16_autocast_runs_and_agrees_to_bf16_precision(runs: bool, monkeypatch) -> None:
    import egsw_gym.policies.lm.accel.prefix_tree as tree_module

    trees = []
    real = tree_module.prefix_tree_outputs
    monkeypatch.setattr(tree_module, "prefix_tree_outputs", lambda *a: trees.append(1) or real(*a))
    policy = make_policy(autocast="bfloat16")
    act_lp, eval_lp = act_then_evaluate(policy, runs)
    assert bool(trees) == runs  # the prefix tree's grouped attention under bf16 autocast
    assert act_lp.dtype == eval_lp.dtype == torch.float32
    assert torch.isfinite(act_lp).all() and torch.isfinite(eval_lp).all()
    assert (act_lp - eval_lp).abs().max() < 0.1
    assert next(policy.model.parameters()).dtype == torch.float32  # weights stay float32
    eval_lp.sum().backward()  # gradients flow through the autocast pass
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in policy.parameters())


def test_option_is_saved_and_validated() -> None:
    policy = make_policy(autocast=False)
    assert policy._get_constructor_parameters()["autocast"] is False
    with pytest.raises(ValueError, match="autocast"):
        make_policy(autocast="int8")
