"""The prefix-tree pass: one pass per run of repeated prompts, against one pass per row and a loop layout."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gymnasium import spaces

pytest.importorskip("transformers")

from transformers import AutoConfig, AutoModelForCausalLM  # noqa: E402

import egsw_gym.policies.lm.forward as forward  # noqa: E402
from egsw_gym.policies.lm import distinct_prompts, prepare_prompt, sequence_log_probs  # noqa: E402
from egsw_gym.policies.lm.forward import prefix_tree_logits, prefix_tree_rows, shared_prompt_logits  # noqa: E402
from egsw_gym.policies.lm.inputs import last_position  # noqa: E402
from egsw_gym.policies.lm.tree import pack_runs, prefix_tree  # noqa: E402

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
    assert n_tree_rows == (n_rows or 4) and tree.allowed.shape == (n_tree_rows, size, size)
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
            assert tree.allowed[row, q].nonzero().flatten().tolist() == prompt_cols[: i + 1]
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
                assert tree.allowed[row, c].nonzero().flatten().tolist() == sorted(visible)
            # steps past the laid-out tokens repeat the row's last column (or the prompt's last)
            assert (tree.columns[b, 1 + w :] == tree.columns[b, w]).all()
    assert max(max(cols) for cols in used.values()) == size - 1  # no column is wasted at the end
    # every query may attend to something (padding and unused columns: to themselves)
    assert tree.allowed.any(-1).all()


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
            lp, ent = sequence_log_probs(model, ids, mask, actions, share_prompts=False)
        (lp.sum() + 0.5 * ent.sum()).backward()
        grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
        results.append((lp.detach(), ent.detach(), grads))
    (lp_t, ent_t, g_t), (lp_f, ent_f, g_f) = results
    assert torch.allclose(lp_t, lp_f, atol=1e-5) and torch.allclose(ent_t, ent_f, atol=1e-5)
    assert torch.allclose(g_t, g_f, rtol=1e-4, atol=1e-5)
    assert g_f.abs().max() > 1e-2  # the comparison is not between zero gradients


@pytest.mark.parametrize("share", [True, False])
def test_lengths_skip_nothing_real_and_zero_the_rest(share):
    """With each row's length, the prefix-tree pass lays out only its real actions: the real steps
    match one full pass per row, and every route gives 0 after a row's end."""
    model = make_model()
    ids, mask, actions = uneven_batch(steps=4)
    lengths = torch.tensor([4, 1, 2, 3, 4, 4, 2, 0, 1, 3])
    valid = torch.arange(4) < lengths[:, None]
    lp, ent = sequence_log_probs(model, ids, mask, actions, share_prompts=share, lengths=lengths)
    full_lp, full_ent = sequence_log_probs(model, ids, mask, actions, share_prompts=False)
    assert torch.allclose(lp[valid], full_lp[valid], atol=1e-5)
    assert torch.allclose(ent[valid], full_ent[valid], atol=1e-5)
    assert (lp[~valid] == 0).all() and (ent[~valid] == 0).all()
    lp.sum().backward()  # gradients flow through the ragged pass
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("route", ["tree", "packed tree", "cache"])
def test_sequence_log_probs_takes_the_route_prefix_tree_rows_chooses(monkeypatch, route):
    """Every shared route gives the single pass's log-probs; which one runs follows prefix_tree_rows."""
    model = make_model()
    ids, mask, actions = uneven_batch()
    ran = []
    rows = {"tree": 4, "packed tree": 2, "cache": None}[route]
    monkeypatch.setattr(forward, "prefix_tree_rows", lambda *a: rows)
    for name, fn in (("tree", forward.prefix_tree_outputs), ("cache", shared_prompt_logits)):
        monkeypatch.setattr(forward, fn.__name__, lambda *a, _fn=fn, _name=name: ran.append(_name) or _fn(*a))
    with torch.no_grad():
        shared_lp, shared_ent = sequence_log_probs(model, ids, mask, actions)
        full_lp, full_ent = sequence_log_probs(model, ids, mask, actions, share_prompts=False)
    assert ran == [route.split()[-1]]
    assert torch.allclose(shared_lp, full_lp, atol=1e-5) and torch.allclose(shared_ent, full_ent, atol=1e-5)


@pytest.mark.parametrize("rows", [4, 2])
def test_sequence_log_probs_through_the_tree_matches_the_single_pass_with_gradients(monkeypatch, rows):
    """sequence_log_probs reads the tree's outputs at each row's columns (no (B, T, V) gather): its
    log-probs, entropies and their gradients equal the single pass's, ragged lengths included."""
    ids, mask, actions = uneven_batch(steps=4)
    lengths = torch.tensor([4, 1, 3, 2, 4, 4, 3, 1, 2, 4])
    monkeypatch.setattr(forward, "prefix_tree_rows", lambda *a: rows)
    results = []
    for share in (True, False):
        model = make_model()
        lp, ent = sequence_log_probs(model, ids, mask, actions, share_prompts=share, lengths=lengths)
        (lp.sum() + 0.5 * ent.sum()).backward()
        grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
        results.append((lp.detach(), ent.detach(), grads))
    (lp_t, ent_t, g_t), (lp_f, ent_f, g_f) = results
    assert torch.allclose(lp_t, lp_f, atol=1e-5) and torch.allclose(ent_t, ent_f, atol=1e-5)
    assert torch.allclose(g_t, g_f, rtol=1e-4, atol=1e-5) and g_f.abs().max() > 1e-2


def test_gradient_checkpointing_models_share_prompts_through_the_tree():
    """Checkpointing refuses a KV cache, but the tree pass needs none: same values as one pass per row."""
    model = make_model()
    getattr(model, "activation_checkpointing_enable", model.gradient_checkpointing_enable)()
    model.train()
    ids, mask, actions = uneven_batch()
    lp, _ = sequence_log_probs(model, ids, mask, actions)
    lp.sum().backward()
    full, _ = sequence_log_probs(model, ids, mask, actions, share_prompts=False)
    assert torch.allclose(lp, full, atol=1e-5)
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_a_reference_pass_then_a_training_pass_on_equal_inputs_lay_them_out_once(monkeypatch):
    """GRPO evaluates one batch twice: the reference (inference mode), then the policy (with grad).
    The second call reuses the first's layout (equal arguments, other tensors), its values are
    those of a fresh layout, and its backward runs (the layout is not made of inference tensors)."""
    ids, mask, actions = uneven_batch(steps=4)
    lengths = torch.tensor([4, 1, 3, 2, 4, 4, 3, 1, 2, 4])
    reference, policy = make_model(), make_model()
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.01 * torch.randn_like(p))
    calls = []
    monkeypatch.setattr(forward, "prefix_tree", lambda *a: calls.append(1) or prefix_tree(*a))
    monkeypatch.setattr(forward, "_LAST_INPUTS", forward._LastInputs())
    with torch.inference_mode():
        ref_lp, _ = sequence_log_probs(reference, ids, mask, actions, lengths=lengths)
    lp, ent = sequence_log_probs(policy, ids.clone(), mask.clone(), actions.clone(), lengths=lengths.clone())
    (lp.sum() + ent.sum()).backward()
    assert len(calls) == 1
    monkeypatch.setattr(forward, "_LAST_INPUTS", forward._LastInputs())
    fresh_lp, fresh_ent = sequence_log_probs(policy, ids, mask, actions, lengths=lengths)
    fresh_ref, _ = sequence_log_probs(reference, ids, mask, actions, lengths=lengths)  # reuses that one
    assert len(calls) == 2
    assert torch.equal(lp, fresh_lp) and torch.equal(ent, fresh_ent) and torch.equal(ref_lp, fresh_ref)


def test_arguments_changed_in_place_are_laid_out_again(monkeypatch):
    """The reuse compares values against copies: a caller that rewrites its tensors in place between
    two calls gets the layout of the new values."""
    ids, mask, actions = uneven_batch(steps=4)
    lengths = torch.tensor([4, 1, 3, 2, 4, 4, 3, 1, 2, 4])
    model = make_model()
    calls = []
    monkeypatch.setattr(forward, "prefix_tree", lambda *a: calls.append(1) or prefix_tree(*a))
    monkeypatch.setattr(forward, "_LAST_INPUTS", forward._LastInputs())
    with torch.no_grad():
        sequence_log_probs(model, ids, mask, actions, lengths=lengths)
        actions[:, :2] = (actions[:, :2] + 1) % VOCAB
        again, _ = sequence_log_probs(model, ids, mask, actions, lengths=lengths)
        monkeypatch.setattr(forward, "_LAST_INPUTS", forward._LastInputs())
        fresh, _ = sequence_log_probs(model, ids, mask, actions.clone(), lengths=lengths)
    assert len(calls) == 3 and torch.equal(again, fresh)


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


@pytest.mark.parametrize(
    ("prompt_len", "width", "expected"),
    [(6, 3, True), (60, 16, True), (120, 63, False)],  # arithmetic-, countdown- and GSM8K-like rounds
)
def test_prefix_tree_pays_for_short_completions_only(prompt_len, width, expected):
    model = make_model(n_embd=128)  # the tiny default model's width, where the rule was measured
    assert prefix_tree_pays(model, prompt_len, *runs(8, 8, width)) is expected


def test_runs_of_unequal_length_are_packed_and_equal_ones_are_not():
    """Packing only removes padding: runs of one length keep a row each (two a row would only
    lengthen the attention); an arithmetic-like round of ragged runs goes in fewer rows."""
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


def test_ragged_rounds_take_the_tree_where_padded_ones_do_not():
    """GSM8K-like rounds (120-token prompts, up to 63 fed tokens): every row at 63 tokens makes the
    tree's attention too costly; rows of mixed lengths (the usual round) make it the cheaper pass."""
    model = make_model(n_embd=128)
    _, first_rows, inverse = runs(8, 8, 63)
    assert not prefix_tree_pays(model, 120, torch.full((64,), 63), first_rows, inverse)
    ragged = torch.arange(64) * 7 % 59 + 5  # 5 .. 63 tokens, ~34 on average
    assert int(ragged.max()) == 63
    assert prefix_tree_pays(model, 120, ragged, first_rows, inverse)


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
    # the (runs, S, S) mask is built in memory: never above PREFIX_TREE_MAX_MASK_ELEMENTS
    assert not prefix_tree_pays(make_model(n_embd=4096, n_head=32), 6, *runs(8, 8, 1024))


def test_prefill_and_decode_steps_pass_their_mask_as_4d_and_sample_the_same(monkeypatch):
    """The prefill hands sdpa its (B, 1, L, L) mask and an eager decode step its (B, 1, 1, K) mask as
    they are; the tokens and log-probs of a round (left-padded prompts) are exactly those of the
    2D-mask route (transformers building the masks)."""
    import egsw_gym.policies.lm.policy as policy_module
    from egsw_gym.policies.lm import LMPolicy

    prompt, new = 8, 5
    space = spaces.Dict(
        {k: spaces.Box(0, VOCAB - 1, (prompt + new,), np.int64) for k in ("input_ids", "attention_mask")}
    )
    ids, mask, _ = uneven_batch()
    obs = {
        "input_ids": torch.nn.functional.pad(ids, (1, new)),
        "attention_mask": torch.nn.functional.pad(mask, (1, new)),
    }
    rounds, dims = [], {True: set(), False: set()}
    for four_d in (True, False):
        torch.manual_seed(0)
        policy = LMPolicy(space, spaces.Discrete(VOCAB), lambda _: 1e-3, model_config=CONFIGS["gpt2"])
        if not four_d:
            monkeypatch.setattr(policy_module, "custom_mask_attention", lambda *a: None)
        forward_fn = policy.model.forward
        policy.model.forward = lambda *a, _f=forward_fn, _k=four_d, **kw: (
            dims[_k].add(kw["attention_mask"].dim()) or _f(*a, **kw)
        )
        torch.manual_seed(1)
        state, out = None, []
        for _ in range(new):
            actions, log_probs, entropies, state = policy.act(obs, state)
            out.append(torch.stack([actions.float(), log_probs, entropies]))
        rounds.append(torch.stack(out))
    assert torch.equal(rounds[0], rounds[1])
    assert dims == {True: {4}, False: {2}}


EVERY_LISTED = {
    "gpt2": CONFIGS["gpt2"],
    "gpt_neox": {k: v for k, v in DECODER.items() if k != "num_key_value_heads"},
    "gemma": {**DECODER, "head_dim": 8},
    "qwen3": {**DECODER, "head_dim": 8},
    "mistral": {**DECODER, "sliding_window": None},
    **{name: DECODER for name in ("granite", "llama", "olmo2", "phi", "phi3", "qwen2", "stablelm")},
}


def test_every_listed_architecture_is_checked():
    from egsw_gym.policies.lm.compat import CUSTOM_MASK_MODEL_TYPES

    assert set(EVERY_LISTED) == CUSTOM_MASK_MODEL_TYPES


@pytest.mark.parametrize("model_type", sorted(EVERY_LISTED))
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_listed_architectures_honour_the_prefix_tree_mask(model_type, attn):
    """What puts a model type in CUSTOM_MASK_MODEL_TYPES: its tree pass equals one pass per row."""
    torch.manual_seed(0)
    config = AutoConfig.for_model(
        model_type,
        vocab_size=VOCAB,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
        **EVERY_LISTED[model_type],
    )
    model = AutoModelForCausalLM.from_config(config, attn_implementation=attn).eval()
    ids, mask, actions = uneven_batch()
    ids, mask = prepare_prompt(ids, mask)
    with torch.no_grad():
        logits = tree_logits(model, ids, mask, actions).float()
        tree = torch.log_softmax(logits, -1).gather(-1, actions.unsqueeze(-1)).squeeze(-1)
        full, _ = sequence_log_probs(model, ids, mask, actions, share_prompts=False)
    assert torch.allclose(tree, full, atol=1e-5)
