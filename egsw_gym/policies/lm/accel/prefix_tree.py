"""Accelerated training pass ``"prefix_tree"``: each run of a repeated prompt as one prefix tree.

GRPO's batch holds every prompt ``group_size`` times in a row. Laid out as ``prompt, c_1, ..., c_R``
with attention that lets each completion ``c_k`` see only the prompt and its own earlier tokens (and
positions that continue each completion from the end of the prompt), one pass computes for every
completion token exactly what a pass over ``prompt + c_k`` alone computes, while the prompt is
computed once per run instead of once per row (:func:`prefix_tree_log_probs`). The attention
computes only those pairs (:mod:`~egsw_gym.policies.lm.accel.run_attention`).

Runs differ in length (completions end at different steps, prompts differ), so one run per row
pads every row to the longest run. :func:`pack_runs` places runs side by side in fewer rows,
longest first into the emptiest row, so that rows come out about equally long; the attention keeps
runs that share a row apart. A cost model (:func:`prefix_tree_rows`) picks the row count.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch

from egsw_gym.policies.lm.accel.run_attention import AttentionGroup, attending_by_runs
from egsw_gym.policies.lm.accel.runs import (
    CUSTOM_MASK_MODEL_TYPES,
    custom_mask_attention,
    distinct_prompts,
)
from egsw_gym.policies.lm.compat import forward_kwargs, unwrap_peft
from egsw_gym.policies.lm.forward import token_log_softmax
from egsw_gym.policies.lm.inputs import last_position

__all__ = [
    "PREFIX_TREE_MODEL_TYPES",
    "Packing",
    "PrefixTree",
    "pack_runs",
    "prefix_tree",
    "prefix_tree_log_probs",
    "prefix_tree_logits",
    "prefix_tree_outputs",
    "prefix_tree_rows",
]

# Row counts tried for the tree: one or two runs a row (the cheaper is used).
PREFIX_TREE_MAX_RUNS_PER_ROW = 2
# The architectures the tree serves: those whose decoder layers pass the forward's keyword arguments
# on to attention (run_attention reads its groups from them; StableLM's layers drop them).
PREFIX_TREE_MODEL_TYPES = CUSTOM_MASK_MODEL_TYPES - {"stablelm"}


class Packing(NamedTuple):
    """Where :func:`pack_runs` puts each run: its ``row``, the ``base`` column it starts at, the
    rows' common length ``size``, and ``first_column``, the column of the earliest prediction (the
    last prompt token of every row's first run)."""

    row: list[int]
    base: list[int]
    size: int
    first_column: int


def pack_runs(prompt_lengths: list[int], run_tokens: list[int], n_rows: int) -> Packing:
    """Place runs of ``prompt_lengths[u] + run_tokens[u]`` tokens in ``n_rows`` rows.

    With ``n_rows >= len(runs)`` run ``u`` gets row ``u`` (one run per row). With fewer rows the
    longest run goes first, each into the row filled least so far (ties: the lower row), and runs
    that share a row follow each other. The prompt of each row's first run is right-aligned to the
    longest such prompt, so every row's first prediction is in the same column (with one run per
    row: the left-padded layout, each prompt ending in column ``max(prompt_lengths) - 1``).

    Parameters
    ----------
    prompt_lengths : list of int
        Real prompt tokens of each run (at least 1).
    run_tokens : list of int
        Completion tokens laid out for each run (its rows' together).
    n_rows : int
        Rows to use, >= 1.

    Returns
    -------
    Packing
    """
    n = len(run_tokens)
    n_rows = max(1, min(n_rows, n))
    members: list[list[int]] = [[] for _ in range(n_rows)]
    if n_rows == n:
        for u in range(n):
            members[u].append(u)
    else:
        fill = [0] * n_rows
        for u in sorted(range(n), key=lambda u: (-(prompt_lengths[u] + run_tokens[u]), u)):
            r = min(range(n_rows), key=fill.__getitem__)
            members[r].append(u)
            fill[r] += prompt_lengths[u] + run_tokens[u]
    align = max(prompt_lengths[m[0]] for m in members)
    row, base, size = [0] * n, [0] * n, 0
    for r, runs in enumerate(members):
        column = align - prompt_lengths[runs[0]]
        for u in runs:
            row[u], base[u] = r, column
            column += prompt_lengths[u] + run_tokens[u]
        size = max(size, column)
    return Packing(row, base, size, align - 1)


class PrefixTree(NamedTuple):
    """Runs of repeated prompts laid out in ``K`` rows of ``S`` columns (see :func:`prefix_tree`).

    ``input_ids``/``position_ids`` are ``(K, S)``; ``groups`` are the query-key pairs that attend
    (:class:`~egsw_gym.policies.lm.accel.run_attention.AttentionGroup`). ``rows`` ``(B,)`` is the row
    holding each batch row's run, and ``columns`` ``(B, 1 + C)`` the columns whose outputs predict its
    actions: its prompt's last token, then its own laid-out tokens. ``first_column`` is the smallest
    entry of ``columns``: outputs left of it are never read.
    """

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    groups: tuple[AttentionGroup, ...]
    rows: torch.Tensor
    columns: torch.Tensor
    first_column: int


def prefix_tree(
    ids: torch.Tensor,
    mask: torch.Tensor,
    completions: torch.Tensor,
    first_rows: torch.Tensor,
    inverse: torch.Tensor,
    widths: torch.Tensor | None = None,
    max_position: int | None = None,
    n_rows: int | None = None,
) -> PrefixTree:
    """Lay out each run of a repeated prompt as ``prompt, c_1, c_2, ..., c_R``, runs packed in rows.

    Each completion token attends only to its run's real prompt tokens and its own completion's
    earlier tokens, at positions continuing from the end of its prompt (see the module docstring).

    Parameters
    ----------
    ids, mask : torch.Tensor
        ``(B, L)`` packed, left-padded prompts (:func:`~egsw_gym.policies.lm.inputs.prepare_prompt`).
    completions : torch.Tensor
        ``(B, C)`` completion tokens to lay out (for teacher forcing, every action but the last).
    first_rows, inverse : torch.Tensor
        The runs of :func:`~egsw_gym.policies.lm.accel.runs.distinct_prompts`.
    widths : torch.Tensor or None
        ``(B,)`` how many of each row's completion tokens to lay out (the rest are never read: a
        finished episode's padding); ``None`` lays out all ``C``.
    max_position : int or None
        See :func:`~egsw_gym.policies.lm.inputs.position_ids_from_mask`.
    n_rows : int or None
        Rows to pack the runs into (:func:`pack_runs`); ``None``: one run per row.

    Returns
    -------
    PrefixTree
        ``columns[b, 1 + j]`` for ``j >= widths[b]`` repeats the row's last laid-out column;
        unused columns attend only to themselves.
    """
    batch, width = completions.shape
    n_runs, prompt_len = len(first_rows), ids.shape[1]
    device = ids.device
    if widths is None:
        widths = torch.full((batch,), width, device=device)
    widths = widths.clamp(0, width)
    prompt_mask = mask[first_rows].bool()  # (U, L), left-padded
    prompt_lengths = prompt_mask.sum(1)
    run_tokens = torch.zeros(n_runs, dtype=widths.dtype, device=device).index_add_(0, inverse, widths)
    packing = pack_runs(prompt_lengths.tolist(), run_tokens.tolist(), n_rows or n_runs)
    run_row = torch.tensor(packing.row, device=device)
    prompt_end = torch.tensor(packing.base, device=device) + prompt_lengths  # one past each prompt
    size = packing.size

    laid, completion_columns = _completion_columns(prompt_end, first_rows, inverse, widths, width)
    rows = run_row[inverse]
    columns = torch.cat([(prompt_end[inverse] - 1)[:, None], completion_columns], dim=1)

    n_tree_rows = max(packing.row) + 1
    input_ids = torch.zeros(n_tree_rows, size, dtype=torch.long, device=device)
    position_ids = torch.zeros_like(input_ids)
    # Prompt tokens: left-padded column k of run u goes to column prompt_end[u] - L + k, at position
    # (its index among the run's real tokens) k - (L - prompt_lengths[u]).
    run, k = prompt_mask.nonzero(as_tuple=True)
    offset = k - prompt_len
    at = (run_row[run], prompt_end[run] + offset)
    input_ids[at] = ids[first_rows[run], k]
    position_ids[at] = prompt_lengths[run] + offset
    # Completion token j of batch row b: its row's first column plus j, at position prompt + j.
    b, j = laid.nonzero(as_tuple=True)
    at = (rows[b], completion_columns[b, j])
    input_ids[at] = completions[b, j].long()
    position_ids[at] = prompt_lengths[inverse[b]] + j
    if max_position is not None:
        position_ids.clamp_(max=max_position)

    groups = _attention_groups(prompt_mask, prompt_end, run_row, rows, inverse, laid, completion_columns)
    return PrefixTree(input_ids, position_ids, groups, rows, columns, packing.first_column)


def _completion_columns(
    prompt_end: torch.Tensor,
    first_rows: torch.Tensor,
    inverse: torch.Tensor,
    widths: torch.Tensor,
    width: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``laid`` ``(B, C)``: the completion tokens placed in the tree; and each token's column ``(B, C)``.

    A row's tokens follow its run's prompt (which ends before column ``prompt_end``) and the earlier
    rows of its run; a step not laid out repeats the row's last column (its prompt's last if none).
    """
    ends = widths.cumsum(0)
    starts = ends - widths
    offsets = prompt_end[inverse] + starts - starts[first_rows][inverse]  # each row's first column
    steps = torch.arange(width, device=widths.device)
    laid = steps[None, :] < widths[:, None]
    last = torch.where(widths > 0, offsets + widths - 1, prompt_end[inverse] - 1)
    return laid, torch.where(laid, offsets[:, None] + steps, last[:, None])


def _attention_groups(
    prompt_mask: torch.Tensor,
    prompt_end: torch.Tensor,
    run_row: torch.Tensor,
    rows: torch.Tensor,
    inverse: torch.Tensor,
    laid: torch.Tensor,
    completion_columns: torch.Tensor,
) -> tuple[AttentionGroup, ...]:
    """The tree's attention as :class:`~egsw_gym.policies.lm.accel.run_attention.AttentionGroup` s:
    each run's real prompt tokens see the earlier ones; each row's laid-out completion tokens see
    their run's real prompt tokens and their own earlier tokens."""
    prompt_len = prompt_mask.shape[1]
    steps = torch.arange(prompt_len, device=prompt_mask.device)
    prompt_columns = (prompt_end[:, None] - prompt_len + steps).clamp(min=0)  # (U, L), left-padded
    causal = steps[None, :] <= steps[:, None]
    eye = torch.eye(prompt_len, dtype=torch.bool, device=steps.device)  # padding sees itself
    prompt_group = AttentionGroup(
        run_row, prompt_columns, prompt_columns, (causal & prompt_mask[:, None]) | eye, prompt_mask
    )
    width = int(laid.sum(1).max()) if laid.numel() else 0
    if width == 0:
        return (prompt_group,)
    laid, queries = laid[:, :width], completion_columns[:, :width]
    steps = torch.arange(width, device=laid.device)
    own = (steps[None, :] <= steps[:, None]) & laid[:, None, :]  # (B, C, C)
    sees_prompt = prompt_mask[inverse][:, None, :].expand(-1, width, -1)  # (B, C, L)
    keys = torch.cat([prompt_columns[inverse], queries], dim=1)
    return prompt_group, AttentionGroup(rows, queries, keys, torch.cat([sees_prompt, own], dim=2), laid)


def prefix_tree_rows(
    model: torch.nn.Module,
    prompt_lengths: torch.Tensor,
    widths: torch.Tensor,
    first_rows: torch.Tensor,
    inverse: torch.Tensor,
) -> int | None:
    """How many rows :func:`prefix_tree_outputs` should pack the runs into; ``None`` where it cannot
    serve ``model``: an architecture outside :data:`PREFIX_TREE_MODEL_TYPES`, a sliding window, or
    activation checkpointing (whose recomputation would not attend through the tree).

    ``prompt_lengths`` ``(U,)`` are the runs' real prompt tokens, ``widths`` ``(B,)`` the completion
    tokens of each row fed to the model (``length - 1`` for teacher forcing). Packings of 1 to
    :data:`PREFIX_TREE_MAX_RUNS_PER_ROW` runs a row (:func:`pack_runs`) are costed by their dense
    tokens and output columns (:func:`_cost_units`; fewer rows pad less), and the cheapest is used. The tree never computes a token or an attention pair that the plain pass skips.
    """
    lengths = prompt_lengths.tolist()
    width = int(widths.max()) if len(widths) else 0
    base = unwrap_peft(model)
    checkpointing = "is_activation_checkpointing" if hasattr(base, "is_activation_checkpointing") else ""
    if (
        getattr(base.config, "model_type", None) not in PREFIX_TREE_MODEL_TYPES
        or custom_mask_attention(model, max(lengths) + width + 1) is None
        or getattr(base, checkpointing or "is_gradient_checkpointing", False)  # newer name first
    ):
        return None
    dense, logit = _cost_units(model)  # a token's dense layers, an output column's logits
    n_runs = len(first_rows)
    tokens = torch.zeros(n_runs, dtype=widths.dtype).index_add_(0, inverse.cpu(), widths.cpu()).tolist()
    costs = {}
    for runs_per_row in range(1, PREFIX_TREE_MAX_RUNS_PER_ROW + 1):
        n_rows = -(-n_runs // runs_per_row)
        packing = pack_runs(lengths, tokens, n_rows)
        costs.setdefault(
            n_rows, n_rows * (packing.size * dense + (packing.size - packing.first_column) * logit)
        )
    return min(costs, key=costs.__getitem__)


def _cost_units(model: torch.nn.Module) -> tuple[float, float]:
    """A token's dense layers and an output column's logits, in one scale (a query-key pair's
    ~4d FLOPs a layer): ~24d^2 FLOPs are ~6d, and 2dV FLOPs once are V / (2 * layers)."""
    config = getattr(unwrap_peft(model), "config", None)
    hidden = getattr(config, "hidden_size", None) or getattr(config, "n_embd", 1)
    layers = getattr(config, "num_hidden_layers", None) or getattr(config, "n_layer", 1)
    return 6 * hidden, (getattr(config, "vocab_size", None) or 0) / (2 * layers)


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
    size = tree.input_ids.shape[1]
    kwargs: dict[str, Any] = {}
    if has_keep:  # no row reads the outputs left of first_column
        kwargs["logits_to_keep"] = size - tree.first_column
    # A 4D mask passes through transformers untouched; run_attention reads the groups instead, and
    # attention without them (a model that drops the keyword) fails on this empty mask.
    unused_mask = tree.input_ids.new_ones((tree.input_ids.shape[0], 1, 1, 0), dtype=torch.bool)
    with attending_by_runs(model):
        logits = model(
            input_ids=tree.input_ids,
            attention_mask=unused_mask,
            position_ids=tree.position_ids,
            use_cache=False,
            attention_groups=tree.groups,
            **kwargs,
        ).logits
    return logits, (tree.rows[:, None], tree.columns - (size - logits.shape[1]))


def prefix_tree_logits(model: torch.nn.Module, tree: PrefixTree) -> torch.Tensor:
    """``(B, T, V)`` next-token logits before each action, in one pass over the packed runs.

    ``tree`` is the layout of :func:`prefix_tree` (each run's prompt,
    then all its rows' actions but the last, each row's tokens seeing only the prompt and
    themselves). Same values (and gradients) as one teacher-forced pass over every row, up to float
    rounding; a row laid out with ``widths[b]`` actions gets the logits of its first
    ``widths[b] + 1`` steps, and the later steps repeat its last ones (meant to be masked).
    """
    logits, at = prefix_tree_outputs(model, tree)
    return logits[at]


def prefix_tree_log_probs(
    model: torch.nn.Module,
    ids: torch.Tensor,
    mask: torch.Tensor,
    actions: torch.Tensor,
    lengths: torch.Tensor,
    n_actions: int | None,
    temperature: float,
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """:func:`~egsw_gym.policies.lm.forward.sequence_log_probs` through the prefix tree, where it pays.

    Parameters
    ----------
    model : torch.nn.Module
        The causal LM.
    ids, mask : torch.Tensor
        ``(B, L)`` packed prompts (:func:`~egsw_gym.policies.lm.inputs.prepare_prompt`).
    actions : torch.Tensor
        ``(B, T)`` completion tokens.
    lengths : torch.Tensor
        ``(B,)`` real actions of each row; the outputs after them are not computed (they repeat the
        row's last values, for the caller to mask).
    n_actions, temperature
        As in :func:`~egsw_gym.policies.lm.forward.sequence_log_probs`.

    Returns
    -------
    tuple of torch.Tensor or None
        ``(B, T)`` log-probs and entropies; ``None`` where no prompt repeats, the tree cannot serve the
        model, or the plain pass is cheaper (:func:`prefix_tree_rows`).
    """
    batch, steps = actions.shape
    shared = distinct_prompts(ids, mask) if steps else None
    if shared is None:
        return None
    widths = (lengths.to(ids.device) - 1).clamp(0, steps - 1)  # actions fed back: all but the last
    n_rows = prefix_tree_rows(model, mask[shared[0]].sum(1), widths, *shared)
    if n_rows is None:
        return None
    config = getattr(unwrap_peft(model), "config", None)
    tree = prefix_tree(ids, mask, actions[:, :-1], *shared, widths, last_position(config), n_rows)
    logits, at = prefix_tree_outputs(model, tree)
    log_p = token_log_softmax(logits, n_actions, temperature)  # (K, S', V)
    entropies = -(log_p.exp() * log_p).sum(-1)  # (K, S')
    # Read each row's steps at its columns (no (B, T, V) gather of the logits).
    return log_p[(*at, actions)], entropies[at]
