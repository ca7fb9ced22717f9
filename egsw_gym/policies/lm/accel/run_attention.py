"""Attention over a prefix tree that computes only the query-key pairs its layout allows.

A prefix tree (:mod:`~egsw_gym.policies.lm.accel.prefix_tree`) lays a run out as ``prompt, c_1, ...,
c_R`` in one row of the model's batch. Its mask allows each completion token the prompt and its own
completion's earlier tokens, so most of the row's ``S x S`` pairs are masked; an attention kernel
given the dense mask still computes them all. Here the allowed pairs are gathered into small
dense problems instead (:class:`AttentionGroup`): one per run's prompt (its tokens, causally) and
one per completion (its tokens against its prompt and itself), each a batched SDPA call. The
outputs are written back to their columns; columns in no group (padding) get zeros.

:func:`run_attention` is registered with ``transformers``' ``AttentionInterface`` as
:data:`RUN_ATTENTION` and serves the model only inside :func:`attending_by_runs`: the tree's pass
gives it the groups as a keyword of the model's forward (``transformers`` hands it to every attention
call); the run decode (:mod:`~egsw_gym.policies.lm.accel.shared_decode`) gives it a ready 4D mask,
which it applies with SDPA reading fewer key-value heads (GQA) as they are.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F

from egsw_gym.policies.lm.compat import unwrap_peft

__all__ = ["RUN_ATTENTION", "AttentionGroup", "attending_by_runs", "run_attention"]

#: The name :func:`run_attention` is registered under in ``transformers.AttentionInterface``.
RUN_ATTENTION = "egsw_run_groups"


class AttentionGroup(NamedTuple):
    """``N`` dense attention problems of one shape, gathered from the tree's ``(K, S)`` columns.

    ``rows`` ``(N,)`` is the tree row of each problem, ``queries`` ``(N, Q)`` and ``keys`` ``(N, C)``
    its columns, ``allowed`` ``(N, Q, C)`` which pairs attend (every query slot sees at least one
    key), and ``real`` ``(N, Q)`` the query slots whose outputs are written back (the others pad).
    """

    rows: torch.Tensor
    queries: torch.Tensor
    keys: torch.Tensor
    allowed: torch.Tensor
    real: torch.Tensor


def run_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    attention_groups: tuple[AttentionGroup, ...] | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """``transformers`` attention function: ``softmax(q k^T * scaling) v`` over each group's pairs.

    ``query`` is ``(K, H, S, D)``, ``key``/``value`` ``(K, H_kv, S, D)``; returns ``(K, S, H, D)`` as
    ``transformers``' own functions do. Without ``attention_groups`` it is SDPA under the ready 4D
    ``attention_mask`` (the run decode's), with ``H_kv < H`` key-value heads read as they are where
    ``transformers`` would copy them ``H / H_kv`` times.
    """
    gqa = query.shape[1] != key.shape[1]
    if attention_groups is None:
        out = F.scaled_dot_product_attention(
            query, key, value, attn_mask=attention_mask, dropout_p=dropout, scale=scaling, enable_gqa=gqa
        )
        return out.transpose(1, 2).contiguous(), None
    # Over the flattened (K * S) columns: gather each group's queries and keys, attend under its
    # mask, and write each real query's output back to its column.
    rows, size, heads, dim = query.shape[0], query.shape[2], query.shape[1], query.shape[3]
    flat = [t.transpose(1, 2).reshape(rows * size, t.shape[1], dim) for t in (query, key, value)]
    out = query.new_zeros(rows * size, heads, dim)
    for group in attention_groups:
        (n, q_len), k_len = group.queries.shape, group.keys.shape[1]
        q_at = (group.rows[:, None] * size + group.queries).flatten()
        k_at = (group.rows[:, None] * size + group.keys).flatten()
        q = flat[0].index_select(0, q_at).view(n, q_len, heads, dim).transpose(1, 2)  # (N, H, Q, D)
        k, v = (t.index_select(0, k_at).view(n, k_len, -1, dim).transpose(1, 2) for t in flat[1:])
        o = F.scaled_dot_product_attention(
            q, k, v, attn_mask=group.allowed[:, None], dropout_p=dropout, scale=scaling,
            enable_gqa=gqa,
        )  # fmt: skip
        real = group.real.flatten()
        out = out.index_copy(0, q_at[real], o.transpose(1, 2).reshape(n * q_len, heads, dim)[real])
    out = out.view(rows, size, heads, dim)
    return out, None


@contextlib.contextmanager
def attending_by_runs(model: torch.nn.Module) -> Iterator[None]:
    """Within the block, ``model`` attends through :func:`run_attention` (its forward then takes
    ``attention_groups=``, or a ready 4D mask); its own attention implementation is restored on
    leaving."""
    from transformers import AttentionInterface

    AttentionInterface.register(RUN_ATTENTION, run_attention)  # one name, the same function each time
    config = unwrap_peft(model).config
    before = config._attn_implementation
    config._attn_implementation = RUN_ATTENTION
    try:
        yield
    finally:
        config._attn_implementation = before
