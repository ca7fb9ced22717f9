"""Pure forward passes of a causal LM over prompts and completions (no policy state).

- :func:`shared_prefill`: one pass per run of repeated prompts, its KV cache gathered back to
  every row or kept with one row per run (GRPO's groups repeat each prompt ``group_size`` times in
  a row; :mod:`~egsw_gym.policies.lm.shared_decode` decodes the runs);
- :func:`prefix_tree_logits`: teacher-forced logits of every run of repeated prompts in one pass,
  each run's completions side by side behind one copy of its prompt (a prefix-tree attention mask),
  runs packed into rows (:mod:`~egsw_gym.policies.lm.tree`);
- :func:`sequence_log_probs`: teacher-forced log-probs and entropies of whole completions, with
  gradients (the training pass of :meth:`~egsw_gym.policies.lm.LMPolicy.evaluate_sequences` and of
  :func:`~egsw_gym.llm.warm_start.warm_start`).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch

from egsw_gym.policies.lm.compat import (
    checkpoints_activations,
    custom_mask_attention,
    forward_kwargs,
    gather_cache,
    output_cache,
    unwrap_peft,
)
from egsw_gym.policies.lm.inputs import (
    distinct_prompts,
    last_position,
    position_ids_from_mask,
    prepare_prompt,
)
from egsw_gym.policies.lm.accel.shared_decode import additive_mask
from egsw_gym.policies.lm.accel.prefix_tree import PrefixTree, pack_runs, prefix_tree

__all__ = [
    "prefix_tree_logits",
    "prefix_tree_outputs",
    "prefix_tree_rows",
    "sequence_log_probs",
    "shared_prefill",
    "shared_prompt_logits",
]

# The prefix-tree pass computes ``K * S`` tokens (``K`` rows of ``S`` columns, the packed runs)
# attending to ``S`` keys each, where the KV-cache route computes ``U * L + B * C`` tokens attending
# to ``L`` or ``L + C`` keys, but saves a model call and a cache gather and skips finished rows'
# padding. In units of one attention pair (~4d FLOPs a layer; a token's dense layers ~24d^2, i.e.
# ~6d pairs; an output column's logits 2dV FLOPs once, i.e. V / (2 * layers) pairs a layer) the
# tree is used while its cost is at most this multiple of the cache route's. Measured with the tiny
# GPT-2 (d = 128; CPU, 1 thread; 8 runs of 8, one run per row), forward + backward, tree / cache
# time at cost ratio: 6-token prompts, 4-token answers 0.70 at 1.03; GSM8K-style rounds 0.73 at
# 0.84, 0.92 at 1.05, 1.01 at 1.21, and 1.28 at 1.48 (every row padded to 63 tokens).
PREFIX_TREE_MAX_COST_RATIO = 1.2
# ...and while its (K, S, S) mask stays small (the mask is built in memory).
PREFIX_TREE_MAX_MASK_ELEMENTS = 1 << 22
# Row counts tried for the tree: one or two runs a row (the cheaper is used).
PREFIX_TREE_MAX_RUNS_PER_ROW = 2


def shared_prefill(
    model: torch.nn.Module,
    inputs: dict[str, Any],
    first_rows: torch.Tensor,
    inverse: torch.Tensor,
    gather: bool = True,
) -> tuple[Any, torch.Tensor] | None:
    """Run a batch of prompts for the rows ``first_rows`` only, then give every row its prompt's state.

    ``inputs`` are the model's keyword arguments for the whole batch (tensors with the batch first;
    other values are passed as they are). Returns the KV cache gathered back to every row
    (``inverse``, see :func:`distinct_prompts`) and the ``(B, V)`` logits at the last prompt
    position; ``None`` when the model's cache cannot be gathered by rows (the caller then runs the
    whole batch). ``gather=False`` leaves the cache with one row per run (a decode laid out as runs,
    :mod:`~egsw_gym.policies.lm.shared_decode`); ``None`` then only when the model returns none.
    """
    distinct = {k: v[first_rows] if torch.is_tensor(v) else v for k, v in inputs.items()}
    output = model(**distinct, use_cache=True)
    cache = output_cache(output)
    if cache is None or (gather and not gather_cache(cache, inverse)):
        return None
    return cache, output.logits[:, -1][inverse]


def shared_prompt_logits(
    model: torch.nn.Module,
    ids: torch.Tensor,
    mask: torch.Tensor,
    actions: torch.Tensor,
    full_mask: torch.Tensor,
    positions: torch.Tensor,
    first_rows: torch.Tensor,
    inverse: torch.Tensor,
) -> torch.Tensor | None:
    """``(B, T, V)`` next-token logits before each action, with one pass per run of repeated prompts.

    Two passes: the prompts (:func:`shared_prefill`: their KV cache, and the logits at their last
    token, which predict the first action), then every row's actions but the last, attending to its
    prompt's cache. ``None`` when the model's cache cannot be gathered (the caller then runs the
    single teacher-forced pass).
    """
    cache_kw, has_keep = forward_kwargs(model)
    prompt_len = ids.shape[1]
    inputs: dict[str, Any] = {
        "input_ids": ids,
        "attention_mask": mask,
        "position_ids": positions[:, :prompt_len],
    }
    if has_keep:
        inputs["logits_to_keep"] = 1
    prefilled = shared_prefill(model, inputs, first_rows, inverse)
    if prefilled is None:
        return None
    cache, first_logits = prefilled
    first_logits = first_logits.unsqueeze(1)  # (B, 1, V): the distribution of the first action
    if actions.shape[1] == 1:
        return first_logits
    rest = model(
        input_ids=actions[:, :-1],
        attention_mask=full_mask[:, :-1],
        position_ids=positions[:, prompt_len:-1],
        use_cache=True,
        **{cache_kw: cache},
    ).logits
    return torch.cat([first_logits, rest], dim=1)


def prefix_tree_rows(
    model: torch.nn.Module,
    prompt_lengths: torch.Tensor,
    widths: torch.Tensor,
    first_rows: torch.Tensor,
    inverse: torch.Tensor,
) -> int | None:
    """How many rows :func:`prefix_tree_logits` should pack the runs into; ``None`` where it cannot
    serve ``model`` or the KV-cache route is cheaper.

    ``prompt_lengths`` ``(U,)`` are the runs' real prompt tokens, ``widths`` ``(B,)`` the completion
    tokens of each row fed to the model (``length - 1`` for teacher forcing). Packings of 1 to
    :data:`PREFIX_TREE_MAX_RUNS_PER_ROW` runs a row (:func:`~egsw_gym.policies.lm.tree.pack_runs`)
    are costed as in :data:`PREFIX_TREE_MAX_COST_RATIO`: fewer rows pad less but attend over
    longer ones. The cheapest is compared with the cache route.
    """
    lengths = prompt_lengths.tolist()
    prompt_len, width = max(lengths), int(widths.max()) if len(widths) else 0
    if custom_mask_attention(model, prompt_len + width + 1) is None:
        return None
    config = getattr(unwrap_peft(model), "config", None)
    hidden = getattr(config, "hidden_size", None) or getattr(config, "n_embd", 1)
    layers = getattr(config, "num_hidden_layers", None) or getattr(config, "n_layer", 1)
    dense = 6 * hidden  # a token's dense layers, in attention pairs
    logit = (getattr(config, "vocab_size", None) or 0) / (2 * layers)  # an output column's logits
    n_runs, batch = len(first_rows), len(inverse)
    run_tokens = torch.zeros(n_runs, dtype=widths.dtype, device=widths.device).index_add_(0, inverse, widths)
    tokens = run_tokens.tolist()
    best: tuple[float, int] | None = None
    for runs_per_row in range(1, PREFIX_TREE_MAX_RUNS_PER_ROW + 1):
        n_rows = -(-n_runs // runs_per_row)
        packing = pack_runs(lengths, tokens, n_rows)
        size = packing.size
        if n_rows * size * size > PREFIX_TREE_MAX_MASK_ELEMENTS:
            continue
        cost = n_rows * (size * (dense + size) + (size - packing.first_column) * logit)
        if best is None or cost < best[0]:
            best = (cost, n_rows)
    cache = (
        n_runs * prompt_len * (dense + prompt_len)
        + batch * width * (dense + prompt_len + width)
        + (n_runs + batch * width) * logit
    )
    return best[1] if best is not None and best[0] <= PREFIX_TREE_MAX_COST_RATIO * cache else None


def prefix_tree_outputs(
    model: torch.nn.Module, tree: PrefixTree
) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """The packed runs' next-token logits, and where each row's steps read them.

    Returns ``logits`` ``(K, S', V)`` (the tree's columns from ``tree.first_column`` on, or all of
    them for a model without ``logits_to_keep``) and ``(rows, columns)``, ``(B, 1)`` and ``(B, T)``
    indices into its first two dimensions: ``logits[rows, columns]`` are the ``(B, T, V)`` logits
    of :func:`prefix_tree_logits`. Reading per-step values (log-probs, entropies) through the
    indices instead of gathering the logits first skips a ``(B, T, V)`` copy and its backward.
    """
    _, has_keep = forward_kwargs(model)
    config = getattr(unwrap_peft(model), "config", None)
    allowed = tree.allowed[:, None]  # (K, 1, S, S): one mask for every head
    if getattr(config, "_attn_implementation", None) != "sdpa":  # eager attention adds the mask
        allowed = additive_mask(allowed, next(model.parameters()).dtype)
    size = tree.input_ids.shape[1]
    kwargs: dict[str, Any] = {}
    if has_keep:  # no row reads the outputs left of first_column
        kwargs["logits_to_keep"] = size - tree.first_column
    logits = model(
        input_ids=tree.input_ids,
        attention_mask=allowed,
        position_ids=tree.position_ids,
        use_cache=False,
        **kwargs,
    ).logits
    return logits, (tree.rows[:, None], tree.columns - (size - logits.shape[1]))


def prefix_tree_logits(model: torch.nn.Module, tree: PrefixTree) -> torch.Tensor:
    """``(B, T, V)`` next-token logits before each action, in one pass over the packed runs.

    ``tree`` is the layout of :func:`~egsw_gym.policies.lm.tree.prefix_tree` (each run's prompt,
    then all its rows' actions but the last, each row's tokens seeing only the prompt and
    themselves). Same values (and gradients) as one teacher-forced pass over every row, up to float
    rounding; a row laid out with ``widths[b]`` actions gets the logits of its first
    ``widths[b] + 1`` steps, and the later steps repeat its last ones (meant to be masked).
    """
    logits, at = prefix_tree_outputs(model, tree)
    return logits[at]


class _Inputs(NamedTuple):
    """What :func:`sequence_log_probs` derives from its arguments before any model runs."""

    ids: torch.Tensor
    mask: torch.Tensor
    actions: torch.Tensor
    lengths: torch.Tensor | None
    widths: torch.Tensor
    shared: tuple[torch.Tensor, torch.Tensor] | None
    # Layouts by (the model's last position, rows), each built when first used.
    trees: dict[tuple[int | None, int], PrefixTree]


class _LastInputs:
    """The inputs of the last :func:`sequence_log_probs` call, reused when the next call's arguments
    are equal (GRPO's reference pass and training pass evaluate the same batch). Keys and entries
    are copies, built outside inference mode: a caller that later changes its tensors in place
    cannot make a stale entry match or change one, and a training pass may save them for backward
    even when a reference pass in inference mode built them."""

    def __init__(self) -> None:
        self.entry: tuple[tuple, _Inputs] | None = None  # one attribute: replaced atomically

    @staticmethod
    def _same(a: tuple, b: tuple) -> bool:
        for x, y in zip(a, b, strict=True):
            if torch.is_tensor(x) != torch.is_tensor(y):
                return False
            if torch.is_tensor(x):
                if x.shape != y.shape or x.dtype != y.dtype or x.device != y.device or not torch.equal(x, y):
                    return False
            elif x != y:
                return False
        return True

    def get(self, key: tuple) -> _Inputs | None:
        entry = self.entry
        return entry[1] if entry is not None and self._same(entry[0], key) else None

    def put(self, key: tuple, inputs: _Inputs) -> None:
        with torch.inference_mode(False):
            self.entry = (tuple(k.clone() if torch.is_tensor(k) else k for k in key), inputs)


_LAST_INPUTS = _LastInputs()


def _prepare_inputs(
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    actions: torch.Tensor,
    fill_token_id: int,
    share_prompts: bool,
    lengths: torch.Tensor | None,
) -> _Inputs:
    """Packed prompts, actions, fed widths and runs of repeated prompts (see :class:`_LastInputs`)."""
    key = (prompt_ids, prompt_mask, actions, lengths, fill_token_id, share_prompts)
    cached = _LAST_INPUTS.get(key)
    if cached is not None:
        return cached
    with torch.inference_mode(False):
        ids, mask = (t.clone() for t in prepare_prompt(prompt_ids, prompt_mask, fill_token_id))
        actions = actions.to(ids.device, torch.long, copy=True)
        batch, steps = actions.shape
        if lengths is not None:
            lengths = lengths.to(ids.device, copy=True)
        widths = torch.full((batch,), steps, device=ids.device) if lengths is None else lengths
        # Actions fed back as inputs: all but each row's last.
        widths = (widths - 1).clamp(0, max(steps - 1, 0))
        shared = distinct_prompts(ids, mask) if share_prompts and steps else None
        inputs = _Inputs(ids, mask, actions, lengths, widths, shared, {})
    _LAST_INPUTS.put(key, inputs)
    return inputs


def _tree(inputs: _Inputs, max_position: int | None, n_rows: int) -> PrefixTree:
    """The prefix-tree layout of ``inputs`` in ``n_rows`` rows, for a model whose last position is ``max_position``."""
    tree = inputs.trees.get((max_position, n_rows))
    if tree is None:
        assert inputs.shared is not None
        with torch.inference_mode(False):
            tree = prefix_tree(
                inputs.ids,
                inputs.mask,
                inputs.actions[:, :-1],
                *inputs.shared,
                inputs.widths,
                max_position,
                n_rows,
            )
        inputs.trees[(max_position, n_rows)] = tree
    return tree


def sequence_log_probs(
    model: torch.nn.Module,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    actions: torch.Tensor,
    n_actions: int | None = None,
    temperature: float = 1.0,
    fill_token_id: int = 0,
    share_prompts: bool = True,
    lengths: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher-forced log-probs and entropies of ``actions`` after each prompt, with gradients.

    Parameters
    ----------
    model : torch.nn.Module
        A ``transformers`` causal LM (possibly wrapped by peft).
    prompt_ids : torch.Tensor
        ``(B, L)`` prompt token ids, any padding (packed with :func:`prepare_prompt`).
    prompt_mask : torch.Tensor
        ``(B, L)`` 1 for real prompt tokens.
    actions : torch.Tensor
        ``(B, T)`` completion token ids; entries after a sequence's end may be anything in
        ``[0, n_actions)`` (causality keeps them out of the earlier positions).
    n_actions : int or None
        Restrict the distribution to the first ``n_actions`` tokens (the environment's action
        space, when the model's vocabulary is padded larger); ``None`` keeps the whole vocabulary.
    temperature : float
        Sampling temperature; log-probs and entropies are those of ``softmax(logits / temperature)``.
    fill_token_id : int
        See :func:`prepare_prompt`.
    share_prompts : bool
        Run each run of adjacent repeated prompts (:func:`distinct_prompts`) through the model
        once, instead of one teacher-forced pass over every row's prompt plus completion. Same
        log-probs and gradients up to float rounding; GRPO's groups repeat every prompt
        ``group_size`` times in a row, so this saves most of the prompt compute. Short runs take one
        prefix-tree pass (:func:`prefix_tree_outputs`, where :func:`prefix_tree_rows` finds it
        cheaper), longer ones a prompt pass whose KV cache every row's pass reuses
        (:func:`shared_prompt_logits`); models whose cache cannot be gathered by rows fall back to
        the single pass.
    lengths : torch.Tensor or None
        ``(B,)`` the number of real actions of each row (its episode's length). The log-probs and
        entropies after it are 0, and the prefix-tree pass does not compute them. ``None``: every
        action is real.

    Returns
    -------
    log_probs : torch.Tensor
        ``(B, T)`` float32 log-probability of each action.
    entropies : torch.Tensor
        ``(B, T)`` float32 Shannon entropy (nats) of each step's next-token distribution.
    """
    prepared = _prepare_inputs(prompt_ids, prompt_mask, actions, fill_token_id, share_prompts, lengths)
    ids, mask, actions, lengths, widths, shared = prepared[:6]
    batch, steps = actions.shape
    if steps == 0:
        empty = torch.zeros(batch, 0, device=ids.device)
        return empty, empty.clone()
    logits = None
    at = None  # where each (row, step) reads the logits; None: they are (B, T, V) already
    n_rows = None if shared is None else prefix_tree_rows(model, mask[shared[0]].sum(1), widths, *shared)
    if n_rows is not None:
        tree = _tree(prepared, last_position(getattr(unwrap_peft(model), "config", None)), n_rows)
        logits, at = prefix_tree_outputs(model, tree)
    else:  # the two routes that feed whole rows: their mask and positions
        full_mask = torch.cat([mask, torch.ones_like(actions)], dim=1)
        positions = position_ids_from_mask(full_mask, last_position(getattr(model, "config", None)))
        if shared is not None and not checkpoints_activations(model):
            logits = shared_prompt_logits(model, ids, mask, actions, full_mask, positions, *shared)
    if logits is None:
        cache_kw, has_keep = forward_kwargs(model)
        kwargs: dict[str, Any] = {
            "input_ids": torch.cat([ids, actions], dim=1),
            "attention_mask": full_mask,
            "position_ids": positions,
            "use_cache": False,
        }
        # Logits at the last prompt token and at every action but the last: steps + 1 columns from
        # the end, minus the final one. Skipping the prompt columns saves the output projection.
        if has_keep:
            kwargs["logits_to_keep"] = steps + 1
        logits = model(**kwargs).logits[:, -(steps + 1) : -1]
    if n_actions is not None:
        logits = logits[..., :n_actions]
    logits = logits.float()
    if temperature != 1.0:
        logits = logits / temperature
    log_p = torch.log_softmax(logits, dim=-1)
    entropies = -(log_p.exp() * log_p).sum(-1)
    if at is None:
        log_probs = log_p.gather(-1, actions.unsqueeze(-1)).squeeze(-1)
    else:  # the tree's outputs, read at each row's columns
        log_probs, entropies = log_p[(*at, actions)], entropies[at]
    if lengths is not None:  # 0 after each row's end, whichever route computed it
        valid = torch.arange(steps, device=ids.device) < lengths[:, None]
        zero = torch.zeros((), device=log_probs.device)
        log_probs, entropies = torch.where(valid, log_probs, zero), torch.where(valid, entropies, zero)
    return log_probs, entropies
