"""The prefix-tree layout of a batch of repeated prompts: each run of a prompt as one sequence,
runs packed into rows.

GRPO's batch holds every prompt ``group_size`` times in a row. Laid out as ``prompt, c_1, ..., c_R``
with a mask that lets each completion ``c_k`` see only the prompt and its own earlier tokens (and
positions that continue each completion from the end of the prompt), one pass computes for every
completion token exactly what a pass over ``prompt + c_k`` alone computes
(:func:`~egsw_gym.policies.lm.forward.prefix_tree_logits`).

Runs differ in length (completions end at different steps, prompts differ), so one run per row
pads every row to the longest run: ~14% of an arithmetic round's columns. :func:`pack_runs` places
runs side by side in fewer rows, longest first into the emptiest row, so that rows come out about
equally long; the mask keeps runs that share a row apart. Which row count is cheapest (fewer,
longer rows trade padding for attention) is decided by
:func:`~egsw_gym.policies.lm.forward.prefix_tree_rows`. Nothing here calls a model.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

__all__ = ["Packing", "PrefixTree", "pack_runs", "prefix_tree"]


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

    ``input_ids``/``position_ids`` are ``(K, S)``; ``allowed`` is ``(K, S, S)``, True where a query
    column may attend to a key column. ``rows`` ``(B,)`` is the row holding each batch row's run, and
    ``columns`` ``(B, 1 + C)`` the columns whose outputs predict its actions: its prompt's last token,
    then its own laid-out tokens. ``first_column`` is the smallest entry of ``columns``: outputs left
    of it are never read.
    """

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    allowed: torch.Tensor
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

    A causal LM run over the layout, with each completion token allowed to attend only to its run's
    real prompt tokens and to its own completion's earlier tokens (runs sharing a row never see each
    other), and positions that continue each completion from the end of its prompt, computes for
    every completion token exactly what a pass over ``prompt + c_k`` alone computes.

    Parameters
    ----------
    ids, mask : torch.Tensor
        ``(B, L)`` packed, left-padded prompts (:func:`~egsw_gym.policies.lm.inputs.prepare_prompt`).
    completions : torch.Tensor
        ``(B, C)`` completion tokens to lay out (for teacher forcing, every action but the last).
    first_rows, inverse : torch.Tensor
        The runs of :func:`~egsw_gym.policies.lm.inputs.distinct_prompts`.
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
        ``columns[b, 1 + j]`` for ``j >= widths[b]`` repeats the row's last laid-out column (its
        prompt's last if it has none); columns no run uses hold fill tokens that attend only to
        themselves.
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

    # Each row's first laid-out column: after its prompt and the earlier rows of its run.
    ends = widths.cumsum(0)
    starts = ends - widths
    offsets = prompt_end[inverse] + starts - starts[first_rows][inverse]
    steps = torch.arange(width, device=device)
    laid = steps[None, :] < widths[:, None]  # (B, C): tokens placed in the tree
    last = torch.where(widths > 0, offsets + widths - 1, prompt_end[inverse] - 1)
    completion_columns = torch.where(laid, offsets[:, None] + steps, last[:, None])
    rows = run_row[inverse]
    columns = torch.cat([(prompt_end[inverse] - 1)[:, None], completion_columns], dim=1)

    n_tree_rows = max(packing.row) + 1
    input_ids = torch.zeros(n_tree_rows, size, dtype=torch.long, device=device)
    position_ids = torch.zeros_like(input_ids)
    run_of = torch.full_like(input_ids, -1)  # -1: unused column
    owner = torch.full_like(input_ids, -1)  # batch row of a completion token, -1 elsewhere
    # Prompt tokens: left-padded column k of run u goes to column prompt_end[u] - L + k, at position
    # (its index among the run's real tokens) k - (L - prompt_lengths[u]).
    run, k = prompt_mask.nonzero(as_tuple=True)
    offset = k - prompt_len
    at = (run_row[run], prompt_end[run] + offset)
    input_ids[at] = ids[first_rows[run], k]
    position_ids[at] = prompt_lengths[run] + offset
    run_of[at] = run
    # Completion token j of batch row b: its row's first column plus j, at position prompt + j.
    b, j = laid.nonzero(as_tuple=True)
    at = (rows[b], completion_columns[b, j])
    input_ids[at] = completions[b, j].long()
    position_ids[at] = prompt_lengths[inverse[b]] + j
    run_of[at] = inverse[b]
    owner[at] = b
    if max_position is not None:
        position_ids.clamp_(max=max_position)

    # Key column k is visible from query column q if it comes no later, belongs to q's run, and is
    # a prompt token or a token of q's own completion; every column sees itself, so no query
    # (padding, unused columns) is left with nothing to attend to.
    order = torch.arange(size, device=device)
    causal = order[None, :] <= order[:, None]
    same_run = (run_of[:, None, :] == run_of[:, :, None]) & (run_of[:, :, None] >= 0)
    own = (owner[:, None, :] == -1) | (owner[:, None, :] == owner[:, :, None])
    allowed = (causal[None] & same_run & own) | torch.eye(size, dtype=torch.bool, device=device)
    return PrefixTree(input_ids, position_ids, allowed, rows, columns, packing.first_column)
