"""The ``"prompt_cache"`` acceleration (``policies/lm/accel/prompt_cache.py``): each run's prompt
computed once and its KV cache read by every row, against the plain teacher-forced pass."""

from __future__ import annotations

import pytest
import torch
from gymnasium import spaces

pytest.importorskip("transformers")

from test_prefix_tree import VOCAB, grpo_style_policy_batch, make_model, runs, uneven_batch  # noqa: E402

import egsw_gym.policies.lm.accel.prefix_tree as tree_module  # noqa: E402
import egsw_gym.policies.lm.accel.prompt_cache as cache_module  # noqa: E402
from egsw_gym.policies.lm import LMPolicy, prepare_prompt, sequence_log_probs  # noqa: E402
from egsw_gym.policies.lm.accel.prefix_tree import prefix_tree_rows  # noqa: E402
from egsw_gym.policies.lm.accel.prompt_cache import prompt_cache_log_probs  # noqa: E402

torch.set_num_threads(1)


def passes(model, ids, mask, actions, cached: bool):
    """(log-probs, entropies, flat gradients) of ``lp.sum() + 0.5 * ent.sum()`` by one route."""
    model.zero_grad()
    if cached:
        lp, ent = prompt_cache_log_probs(model, ids, mask, actions, None, 1.0)
    else:
        lp, ent = sequence_log_probs(model, ids, mask, actions)
    (lp.sum() + 0.5 * ent.sum()).backward()
    grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    return lp.detach(), ent.detach(), grads


@pytest.mark.parametrize(("model_type", "attn"), [("gpt2", "sdpa"), ("gpt2", "eager"), ("llama", "sdpa")])
@pytest.mark.parametrize("steps", [1, 4])
def test_prompt_cache_pass_matches_the_plain_pass_in_values_and_gradients(model_type, attn, steps):
    model = make_model(model_type, attn)
    ids, mask, actions = uneven_batch(steps)
    ids, mask = prepare_prompt(ids, mask)
    lp_c, ent_c, g_c = passes(model, ids, mask, actions, cached=True)
    lp_p, ent_p, g_p = passes(model, ids, mask, actions, cached=False)
    torch.testing.assert_close(lp_c, lp_p, rtol=0, atol=1e-5)
    torch.testing.assert_close(ent_c, ent_p, rtol=0, atol=1e-5)
    torch.testing.assert_close(g_c, g_p, rtol=1e-4, atol=1e-5)
    assert g_p.abs().max() > 1e-2  # the comparison is not between zero gradients


def test_prompt_pass_runs_once_per_run(monkeypatch):
    """The prompt pass sees one row per run of repeated prompts (4 runs of 10 rows)."""
    model = make_model()
    ids, mask, actions = uneven_batch()
    ids, mask = prepare_prompt(ids, mask)
    rows = []
    monkeypatch.setattr(
        cache_module,
        "_prompt_pass",
        lambda m, i, *a, _f=cache_module._prompt_pass: rows.append(len(i)) or _f(m, i, *a),
    )
    with torch.no_grad():
        assert prompt_cache_log_probs(model, ids, mask, actions, None, 1.0) is not None
    assert rows == [4]


def test_prompt_cache_is_refused_where_it_cannot_serve():
    model = make_model()
    ids, mask, actions = uneven_batch()
    ids, mask = prepare_prompt(ids, mask)
    distinct = torch.tensor([0, 3, 4, 6])  # one row of each run: nothing to share
    assert prompt_cache_log_probs(model, ids[distinct], mask[distinct], actions[distinct], None, 1.0) is None
    # activation checkpointing keeps no KV cache while training
    getattr(model, "activation_checkpointing_enable", model.gradient_checkpointing_enable)()
    model.train()
    assert prompt_cache_log_probs(model, ids, mask, actions, None, 1.0) is None
    model.eval()
    assert prompt_cache_log_probs(model, ids, mask, actions, None, 1.0) is not None


@pytest.mark.parametrize(
    ("prompt_len", "width", "tree"),
    # arithmetic- and countdown-like rounds take the tree; GSM8K-like rounds padded to 63 tokens the cache
    [(6, 3, True), (60, 16, True), (120, 63, False)],
)
def test_the_tree_is_compared_with_the_prompt_cache(prompt_len, width, tree):
    model = make_model(n_embd=128)  # the tiny default model's width, where the rule was measured
    widths, first_rows, inverse = runs(8, 8, width)
    rows = prefix_tree_rows(model, torch.full((8,), prompt_len), widths, first_rows, inverse, True)
    assert (rows is not None) is tree
    # against the plain pass alone, the tree pays in all three
    assert prefix_tree_rows(model, torch.full((8,), prompt_len), widths, first_rows, inverse) is not None


def test_policy_evaluate_sequences_with_and_without_the_prompt_cache(monkeypatch):
    """LMPolicy's training pass with ``accel=("prompt_cache",)`` (and with both shared-prompt passes,
    the tree refused) equals the plain path's on GRPO-style groups, padding zeroed on both."""
    space, obs, actions, valid, plain = grpo_style_policy_batch()
    lp_p, ent_p = plain.evaluate_sequences(obs, None, actions, valid)
    ran = []
    monkeypatch.setattr(
        cache_module, "_prompt_pass", lambda *a, _f=cache_module._prompt_pass: ran.append(1) or _f(*a)
    )
    monkeypatch.setattr(tree_module, "prefix_tree_rows", lambda *a: None)
    for accel in (("prompt_cache",), ("prefix_tree", "prompt_cache")):
        cached = LMPolicy(space, spaces.Discrete(VOCAB), lambda _: 1e-3, model=plain.model, accel=accel)
        lp_c, ent_c = cached.evaluate_sequences(obs, None, actions, valid)
        torch.testing.assert_close(lp_c, lp_p, rtol=0, atol=1e-5)
        torch.testing.assert_close(ent_c, ent_p, rtol=0, atol=1e-5)
        assert (lp_c[~valid] == 0).all() and (ent_c[~valid] == 0).all()
    assert ran == [1, 1], "the prompt-cache pass ran for both"
