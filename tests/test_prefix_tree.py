"""The ``"prefix_tree"`` acceleration (``policies/lm/accel/prefix_tree.py``): one pass per run of
repeated prompts, against the plain pass (one row each) and a loop reference of the layout."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gymnasium import spaces

pytest.importorskip("transformers")

from transformers import AutoConfig, AutoModelForCausalLM  # noqa: E402

import egsw_gym.policies.lm.accel.prefix_tree as tree_module  # noqa: E402
from egsw_gym.policies.lm import LMPolicy, prepare_prompt, sequence_log_probs  # noqa: E402
from egsw_gym.policies.lm.accel.prefix_tree import (  # noqa: E402
    PREFIX_TREE_MODEL_TYPES,
    pack_runs,
    prefix_tree,
    prefix_tree_log_probs,
    prefix_tree_logits,
    prefix_tree_rows,
)
from egsw_gym.policies.lm.accel.runs import CUSTOM_MASK_MODEL_TYPES, distinct_prompts  # noqa: E402
from egsw_gym.policies.lm.inputs import last_position  # noqa: E402

torch.set_num_threads(1)

VOCAB = 40
DECODER = {  # a Llama-style decoder config, shared by the architectures that take these fields
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 64,
}
CONFIGS = {
    "gpt2": {
        "n_embd": 32,
        "n_layer": 2,
        "n_head": 4,
        "n_positions": 64,
        **dict.fromkeys(("resid_pdrop", "embd_pdrop", "attn_pdrop"), 0.0),  # as LMPolicy builds it
    },
    "llama": DECODER,
}


def make_model(model_type: str = "gpt2", attn: str = "sdpa", **overrides) -> torch.nn.Module:
    torch.manual_seed(0)
    fields = {**CONFIGS[model_type], **overrides}
    config = AutoConfig.for_model(model_type, vocab_size=VOCAB, bos_token_id=1, eos_token_id=2, **fields)
    return AutoModelForCausalLM.from_config(config, attn_implementation=attn)


def tree_logits(model, ids, mask, actions, n_rows=None):
    """prefix_tree_logits of packed prompts and whole rows, as sequence_log_probs lays them out."""
    first_rows, inverse = distinct_prompts(ids, mask)
    tree = prefix_tree(
        ids, mask, actions[:, :-1], first_rows, inverse, None, last_position(model.config), n_rows
    )
    return prefix_tree_logits(model, tree)


def dense_allowed(tree) -> torch.Tensor:
    """``(K, S, S)``: the query-key pairs the tree's attention groups compute for their real queries."""
    n_rows, size = tree.input_ids.shape
    allowed = torch.zeros(n_rows, size, size, dtype=torch.bool)
    for g in tree.groups:
        for n, q, k in (g.allowed & g.real[:, :, None]).nonzero().tolist():
            allowed[g.rows[n], g.queries[n, q], g.keys[n, k]] = True
    return allowed


def uneven_batch(steps: int = 4, seed: int = 0):
    """Runs of 3, 1, 2 and 4 repeated prompts of different lengths (left-padded), random actions."""
    gen = torch.Generator().manual_seed(seed)
    lengths, repeats = [4, 7, 2, 5], torch.tensor([3, 1, 2, 4])
    ids = torch.zeros(len(lengths), 7, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, n in enumerate(lengths):
        ids[i, 7 - n :] = torch.randint(3, VOCAB, (n,), generator=gen)
        mask[i, 7 - n :] = 1
    ids, mask = ids.repeat_interleave(repeats, 0), mask.repeat_interleave(repeats, 0)
    actions = torch.randint(0, VOCAB, (len(ids), steps), generator=gen)
    return ids, mask, actions


def grpo_style_policy_batch(new: int = 4):
    """``uneven_batch`` as ``LMPolicy`` observations (8-token prompt window, ``new`` action slots):
    the observation space, observations, actions, the valid-step mask (rows end after 1-4 actions)
    and a plain-path (``accel=()``) GPT-2 policy."""
    prompt = 8
    space = spaces.Dict(
        {k: spaces.Box(0, VOCAB - 1, (prompt + new,), np.int64) for k in ("input_ids", "attention_mask")}
    )
    ids, mask, actions = uneven_batch(steps=new)
    obs = {
        "input_ids": torch.nn.functional.pad(ids, (1, new)),
        "attention_mask": torch.nn.functional.pad(mask, (1, new)),
    }
    valid = torch.arange(new) < torch.tensor([4, 1, 3, 2, 4, 4, 3, 1, 2, 4])[:, None]
    plain = LMPolicy(space, spaces.Discrete(VOCAB), lambda _: 1e-3, model_config=CONFIGS["gpt2"], accel=())
    return space, obs, actions, valid, plain


def test_pack_runs_fills_rows_evenly_without_overlap():
    prompts, tokens = [4, 7, 2, 5, 3], [9, 3, 12, 6, 1]  # runs of 13, 10, 14, 11 and 4 tokens
    assert pack_runs(prompts, tokens, 5) == ([0, 1, 2, 3, 4], [3, 0, 5, 2, 4], 19, 6)  # one run a row
    assert pack_runs(prompts, tokens, 9).row == [0, 1, 2, 3, 4]
    packing = pack_runs(prompts, tokens, 2)
    # longest first into the emptiest row: 14 -> row 0, 13 -> 1, 11 -> 1, 10 -> 0, 4 -> 0
    assert packing.row == [1, 0, 0, 1, 0]
    first = {
        r: min((u for u in range(5) if packing.row[u] == r), key=packing.base.__getitem__) for r in (0, 1)
    }
    align = max(prompts[u] for u in first.values())
    assert packing.first_column == align - 1
    for r in (0, 1):
        spans = sorted(
            (packing.base[u], packing.base[u] + prompts[u] + tokens[u])
            for u in range(5)
            if packing.row[u] == r
        )
        assert spans[0][0] == align - prompts[first[r]]  # the first prompt ends in first_column
        assert all(a[1] == b[0] for a, b in zip(spans, spans[1:], strict=False))  # back to back
    ends = [packing.base[u] + prompts[u] + tokens[u] for u in range(5)]
    assert packing.size == max(ends) == 30  # rows of 28 and 24 tokens
    assert pack_runs(prompts, tokens, 1).size == sum(prompts) + sum(tokens)


@pytest.mark.parametrize("n_rows", [None, 3, 2, 1])
@pytest.mark.parametrize("ragged", [False, True])
def test_prefix_tree_layout_matches_a_loop_reference(ragged, n_rows):
    """Every laid-out completion token sits after its run's prompt, at its own position, seeing only
    the prompt's real tokens and its own earlier tokens; prompt tokens see the earlier real prompt;
    runs packed into one row never see each other."""
    ids, mask, actions = uneven_batch(steps=4)
    ids, mask = prepare_prompt(ids, mask)
    first_rows, inverse = distinct_prompts(ids, mask)
    completions = actions[:, :-1]
    widths = torch.tensor([3, 0, 2, 1, 3, 3, 2, 0, 1, 3]) if ragged else None
    tree = prefix_tree(ids, mask, completions, first_rows, inverse, widths, None, n_rows)
    width = torch.full((len(ids),), 3) if widths is None else widths
    n_tree_rows, size = tree.input_ids.shape
    prompt_len = ids.shape[1]
    run_tokens = [int(width[inverse == u].sum()) for u in range(4)]
    assert n_tree_rows == (n_rows or 4)
    allowed = dense_allowed(tree)
    if n_rows is None:  # one run a row, prompts left-padded: the unpacked layout
        assert torch.equal(tree.rows, inverse) and size == prompt_len + max(run_tokens)
        assert (tree.columns[:, 0] == prompt_len - 1).all()
    assert tree.first_column == int(tree.columns.min())
    used = {r: set() for r in range(n_tree_rows)}
    for u in range(4):
        b0 = int(first_rows[u])
        row, end = int(tree.rows[b0]), int(tree.columns[b0, 0])
        real = [k for k in range(prompt_len) if mask[b0, k]]
        prompt_cols = list(range(end - len(real) + 1, end + 1))
        for i, (k, q) in enumerate(zip(real, prompt_cols, strict=True)):
            assert tree.input_ids[row, q] == ids[b0, k] and tree.position_ids[row, q] == i
            assert allowed[row, q].nonzero().flatten().tolist() == prompt_cols[: i + 1]
            assert q not in used[row]
            used[row].add(q)
        for b in (inverse == u).nonzero().flatten().tolist():
            w = int(width[b])
            assert int(tree.rows[b]) == row and int(tree.columns[b, 0]) == end
            for j in range(w):
                c = int(tree.columns[b, 1 + j])
                assert c > end and c not in used[row]  # its own column, after its prompt
                used[row].add(c)
                assert tree.input_ids[row, c] == completions[b, j]
                assert tree.position_ids[row, c] == len(real) + j
                visible = prompt_cols + [int(x) for x in tree.columns[b, 1 : j + 2]]
                assert allowed[row, c].nonzero().flatten().tolist() == sorted(visible)
            # steps past the laid-out tokens repeat the row's last column (or the prompt's last)
            assert (tree.columns[b, 1 + w :] == tree.columns[b, w]).all()
    assert max(max(cols) for cols in used.values()) == size - 1  # no column is wasted at the end
    # the groups write exactly the used columns, each once; every query slot attends to something
    written = [(int(g.rows[n]), int(g.queries[n, q])) for g in tree.groups for n, q in g.real.nonzero()]
    assert sorted(written) == sorted((r, c) for r, cols in used.items() for c in cols)
    assert all(g.allowed.any(-1).all() for g in tree.groups)


@pytest.mark.parametrize(("model_type", "attn"), [("gpt2", "sdpa"), ("gpt2", "eager"), ("llama", "sdpa")])
@pytest.mark.parametrize("steps", [1, 4])
@pytest.mark.parametrize("n_rows", [None, 2])
def test_prefix_tree_pass_matches_one_pass_per_row_in_values_and_gradients(model_type, attn, steps, n_rows):
    model = make_model(model_type, attn)
    ids, mask, actions = uneven_batch(steps)
    ids, mask = prepare_prompt(ids, mask)
    results = []
    for tree in (True, False):
        model.zero_grad()
        if tree:
            log_p = torch.log_softmax(tree_logits(model, ids, mask, actions, n_rows).float(), -1)
            lp = log_p.gather(-1, actions.unsqueeze(-1)).squeeze(-1)
            ent = -(log_p.exp() * log_p).sum(-1)
        else:
            lp, ent = sequence_log_probs(model, ids, mask, actions)
        (lp.sum() + 0.5 * ent.sum()).backward()
        grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
        results.append((lp.detach(), ent.detach(), grads))
    (lp_t, ent_t, g_t), (lp_f, ent_f, g_f) = results
    assert torch.allclose(lp_t, lp_f, atol=1e-5) and torch.allclose(ent_t, ent_f, atol=1e-5)
    assert torch.allclose(g_t, g_f, rtol=1e-4, atol=1e-5)
    assert g_f.abs().max() > 1e-2  # the comparison is not between zero gradients


def forced_tree(monkeypatch, rows):
    """prefix_tree_log_probs packing the runs into ``rows`` rows, whatever the cost model says."""
    monkeypatch.setattr(tree_module, "prefix_tree_rows", lambda *a: rows)

    def run(model, ids, mask, actions, lengths=None):
        ids, mask = prepare_prompt(ids, mask)
        lengths = torch.full((len(ids),), actions.shape[1]) if lengths is None else lengths
        return prefix_tree_log_probs(model, ids, mask, actions, lengths, None, 1.0)

    return run


@pytest.mark.parametrize("rows", [4, 2])
def test_lengths_lay_out_only_real_actions(monkeypatch, rows):
    """With each row's length, the tree lays out only its real actions: the real steps match the
    plain pass, with gradients."""
    ids, mask, actions = uneven_batch(steps=4)
    lengths = torch.tensor([4, 1, 3, 2, 4, 4, 3, 1, 0, 4])
    valid = torch.arange(4) < lengths[:, None]
    tree_pass = forced_tree(monkeypatch, rows)
    results = []
    for tree in (True, False):
        model = make_model()
        lp, ent = (
            tree_pass(model, ids, mask, actions, lengths)
            if tree
            else sequence_log_probs(model, ids, mask, actions)
        )
        ((lp * valid).sum() + 0.5 * (ent * valid).sum()).backward()
        grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
        results.append((lp[valid].detach(), ent[valid].detach(), grads))
    (lp_t, ent_t, g_t), (lp_f, ent_f, g_f) = results
    assert torch.allclose(lp_t, lp_f, atol=1e-5) and torch.allclose(ent_t, ent_f, atol=1e-5)
    assert torch.allclose(g_t, g_f, rtol=1e-4, atol=1e-5) and g_f.abs().max() > 1e-2


@pytest.mark.parametrize("rows", [4, 2, None])
def test_prefix_tree_log_probs_packs_the_rows_prefix_tree_rows_chooses(monkeypatch, rows):
    """The tree packs the runs into the rows the cost model chooses; ``None`` leaves the batch to the
    plain pass."""
    model = make_model()
    ids, mask, actions = uneven_batch()
    packed = []
    monkeypatch.setattr(tree_module, "pack_runs", lambda *a: packed.append(a[2]) or pack_runs(*a))
    with torch.no_grad():
        out = forced_tree(monkeypatch, rows)(model, ids, mask, actions)
        full_lp, full_ent = sequence_log_probs(model, ids, mask, actions)
    if rows is None:
        assert out is None and not packed
        return
    assert packed == [rows]
    assert torch.allclose(out[0], full_lp, atol=1e-5) and torch.allclose(out[1], full_ent, atol=1e-5)


def test_prefix_tree_needs_repeated_prompts():
    model = make_model()
    ids, mask, actions = uneven_batch()
    distinct = torch.tensor([0, 3, 4, 6])  # one row of each run
    ids, mask = prepare_prompt(ids[distinct], mask[distinct])
    assert prefix_tree_log_probs(model, ids, mask, actions[distinct], torch.full((4,), 4), None, 1.0) is None


def test_policy_evaluate_sequences_with_and_without_the_tree(monkeypatch):
    """LMPolicy's training pass with ``accel=("prefix_tree",)`` equals the plain path's (``accel=()``)
    on GRPO-style groups, padding after each row's end zeroed on both."""
    space, obs, actions, valid, plain = grpo_style_policy_batch()
    tree = LMPolicy(space, spaces.Discrete(VOCAB), lambda _: 1e-3, model=plain.model, accel=("prefix_tree",))
    ran = []
    monkeypatch.setattr(
        tree_module,
        "prefix_tree_outputs",
        lambda *a, _f=tree_module.prefix_tree_outputs: ran.append(1) or _f(*a),
    )
    lp_t, ent_t = tree.evaluate_sequences(obs, None, actions, valid)
    lp_p, ent_p = plain.evaluate_sequences(obs, None, actions, valid)
    assert ran == [1], "the tree ran"
    torch.testing.assert_close(lp_t, lp_p, rtol=0, atol=1e-5)
    torch.testing.assert_close(ent_t, ent_p, rtol=0, atol=1e-5)
    assert (lp_t[~valid] == 0).all() and (ent_t[~valid] == 0).all()


def test_a_lora_policy_takes_the_tree_with_the_plain_paths_values_and_gradients(monkeypatch):
    """peft's wrapper passes the tree's attention groups on to the base model's attention."""
    pytest.importorskip("peft")
    space, obs, actions, valid, _ = grpo_style_policy_batch()
    lora = {"r": 4, "lora_alpha": 8, "lora_dropout": 0.0, "target_modules": ["c_attn"]}
    policy = LMPolicy(
        space, spaces.Discrete(VOCAB), lambda _: 1e-3, model_config=CONFIGS["gpt2"], lora_config=lora,
        accel=("prefix_tree",),
    )  # fmt: skip
    ran = []
    monkeypatch.setattr(
        tree_module,
        "prefix_tree_outputs",
        lambda *a, _f=tree_module.prefix_tree_outputs: ran.append(1) or _f(*a),
    )
    trainable = [p for p in policy.parameters() if p.requires_grad]
    results = []
    for accel in (("prefix_tree",), ()):
        policy.accel = accel
        log_probs, _ = policy.evaluate_sequences(obs, None, actions, valid)
        results.append((log_probs, torch.autograd.grad(log_probs.sum(), trainable)))
    assert ran == [1], "the tree ran"
    torch.testing.assert_close(results[0][0], results[1][0], rtol=0, atol=1e-5)
    for tree_grad, plain_grad in zip(results[0][1], results[1][1], strict=True):
        torch.testing.assert_close(tree_grad, plain_grad, rtol=1e-4, atol=1e-5)


def runs(n_runs: int, run_len: int, width: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(widths, first_rows, inverse)`` of ``n_runs`` runs of ``run_len`` rows with ``width`` tokens."""
    n = n_runs * run_len
    return (
        torch.full((n,), width),
        torch.arange(n_runs) * run_len,
        torch.arange(n_runs).repeat_interleave(run_len),
    )


def tree_rows(model, prompt_len, widths, first_rows, inverse):
    """prefix_tree_rows for runs whose prompts all have ``prompt_len`` real tokens."""
    return prefix_tree_rows(model, torch.full((len(first_rows),), prompt_len), widths, first_rows, inverse)


def prefix_tree_pays(*args) -> bool:
    return tree_rows(*args) is not None


def test_runs_of_unequal_length_are_packed_and_equal_ones_are_not():
    """Packing only removes padding: runs of one length keep a row each (two a row would save
    nothing); an arithmetic-like round of ragged runs goes in fewer rows."""
    model = make_model(n_embd=128)
    assert tree_rows(model, 6, *runs(8, 8, 3)) == 8
    _, first_rows, inverse = runs(8, 8, 3)
    ragged = torch.tensor([1, 3, 2, 3, 0, 2, 1, 3]).repeat(8)[
        torch.randperm(64, generator=torch.Generator().manual_seed(0))
    ]
    ragged[inverse == 3] = 3  # one run much longer than the others: every other row pads to it
    ragged[inverse == 5] = 0
    rows = tree_rows(model, 6, ragged, first_rows, inverse)
    assert rows is not None and rows < 8
    # the chosen packing is the cheapest the cost model sees (fewer tokens, similar attention)
    lengths, tokens = [6] * 8, torch.zeros(8, dtype=torch.long).index_add_(0, inverse, ragged).tolist()
    packed, alone = pack_runs(lengths, tokens, rows), pack_runs(lengths, tokens, 8)
    assert rows * packed.size < 8 * alone.size


def test_prefix_tree_is_refused_where_it_would_be_wrong_or_too_big():
    assert prefix_tree_pays(make_model(), 6, *runs(8, 8, 3))
    # flash-attention style kernels take no arbitrary mask
    flash = make_model()
    flash.config._attn_implementation = "flash_attention_2"
    assert not prefix_tree_pays(flash, 6, *runs(8, 8, 3))
    # a sliding window shorter than a sequence would be bypassed by the custom mask
    assert not prefix_tree_pays(make_model("llama", sliding_window=8), 6, *runs(8, 8, 3))
    assert prefix_tree_pays(make_model("llama", sliding_window=64), 6, *runs(8, 8, 3))
    # an architecture not checked against the per-row pass (BLOOM's ALiBi reads the 2D mask)
    bloom = make_model()
    bloom.config.model_type = "bloom"
    assert not prefix_tree_pays(bloom, 6, *runs(8, 8, 3))
    # StableLM's layers do not pass the forward's keyword arguments (the groups) on to attention
    stablelm = make_model()
    stablelm.config.model_type = "stablelm"
    assert not prefix_tree_pays(stablelm, 6, *runs(8, 8, 3))
    # activation checkpointing recomputes the layers in the backward pass, outside the tree's attention
    checkpointed = make_model()
    getattr(checkpointed, "activation_checkpointing_enable", checkpointed.gradient_checkpointing_enable)()
    assert not prefix_tree_pays(checkpointed, 6, *runs(8, 8, 3))


def test_prefix_tree_pays_for_long_completions_too():
    """The tree computes no pair or token the plain pass skips: it serves GSM8K-like rounds of
    completions at their length limit too, whatever the prompt."""
    model = make_model(n_embd=128)
    for prompt_len, width in [(6, 3), (60, 16), (120, 63), (6, 63)]:
        assert tree_rows(model, prompt_len, *runs(8, 8, width)) == 8


EVERY_LISTED = {
    "gpt2": CONFIGS["gpt2"],
    "gpt_neox": {k: v for k, v in DECODER.items() if k != "num_key_value_heads"},
    "gemma": {**DECODER, "head_dim": 8},
    "qwen3": {**DECODER, "head_dim": 8},
    "mistral": {**DECODER, "sliding_window": None},
    **{name: DECODER for name in ("granite", "llama", "olmo2", "phi", "phi3", "qwen2", "stablelm")},
}


def test_every_listed_architecture_is_checked():
    assert set(EVERY_LISTED) == CUSTOM_MASK_MODEL_TYPES >= PREFIX_TREE_MODEL_TYPES


def listed_model(model_type: str, attn: str) -> torch.nn.Module:
    torch.manual_seed(0)
    config = AutoConfig.for_model(
        model_type,
        vocab_size=VOCAB,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
        **EVERY_LISTED[model_type],
    )
    return AutoModelForCausalLM.from_config(config, attn_implementation=attn).eval()


@pytest.mark.parametrize("model_type", sorted(EVERY_LISTED))
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_listed_architectures_honour_a_custom_4d_mask(model_type, attn):
    """What puts a model type in CUSTOM_MASK_MODEL_TYPES (the run decode's mask): two sequences in
    one row, each seeing only itself at its own positions, give each one's logits alone."""
    model = listed_model(model_type, attn)
    a, b = torch.randint(3, VOCAB, (1, 5)), torch.randint(3, VOCAB, (1, 3))
    causal = torch.ones(8, 8, dtype=torch.bool).tril()
    allowed = causal & torch.block_diag(torch.ones(5, 5), torch.ones(3, 3)).bool()
    positions = torch.tensor([[0, 1, 2, 3, 4, 0, 1, 2]])
    additive = torch.zeros(allowed.shape).masked_fill(~allowed, torch.finfo(torch.float32).min)
    mask = (allowed if attn == "sdpa" else additive)[None, None]  # eager attention adds its mask
    with torch.no_grad():
        packed = model(torch.cat([a, b], 1), attention_mask=mask, position_ids=positions).logits
        alone = torch.cat([model(a).logits, model(b).logits], dim=1)
    assert torch.allclose(packed, alone, atol=1e-5)


@pytest.mark.parametrize("model_type", sorted(PREFIX_TREE_MODEL_TYPES))
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_tree_architectures_match_one_pass_per_row(model_type, attn):
    """What puts a model type in PREFIX_TREE_MODEL_TYPES: its tree pass equals one pass per row."""
    model = listed_model(model_type, attn)
    ids, mask, actions = uneven_batch()
    ids, mask = prepare_prompt(ids, mask)
    with torch.no_grad():
        logits = tree_logits(model, ids, mask, actions).float()
        tree = torch.log_softmax(logits, -1).gather(-1, actions.unsqueeze(-1)).squeeze(-1)
        full, _ = sequence_log_probs(model, ids, mask, actions)
    assert torch.allclose(tree, full, atol=1e-5)


def test_a_model_that_drops_the_groups_fails_loudly_and_keeps_its_attention():
    """StableLM's layers do not hand the groups on: forced through the tree, its attention meets the
    tree's empty mask and raises (never a wrong number), and the model's attention is restored."""
    model = listed_model("stablelm", "sdpa")
    ids, mask, actions = uneven_batch()
    ids, mask = prepare_prompt(ids, mask)
    with pytest.raises(RuntimeError), torch.no_grad():
        tree_logits(model, ids, mask, actions)
    assert model.config._attn_implementation == "sdpa"
