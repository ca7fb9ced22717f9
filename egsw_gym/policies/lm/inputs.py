"""Pure input preparation for :class:`~egsw_gym.policies.lm.LMPolicy`: packing, positions, repeats.

The sampling path (:meth:`LMPolicy.act`) and the training path
(:func:`~egsw_gym.policies.lm.forward.sequence_log_probs`) build their inputs with the same
functions, which is what makes their log-probs agree: prompts are left-padded, so positions must
come from the attention mask, as ``generate`` does, or every padded prompt would be read at shifted
positions. Nothing here calls a model.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = [
    "causal_attention_mask",
    "distinct_prompts",
    "last_position",
    "last_true",
    "position_ids_from_mask",
    "prepare_prompt",
]


def prepare_prompt(
    input_ids: torch.Tensor, attention_mask: torch.Tensor, fill_token_id: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pack the real tokens of each row and drop the columns that are padding in every row.

    The environment's observation holds a left-padded prompt followed by right-padded generated
    tokens. Moving each row's real tokens to the right end (keeping their order) turns it into the
    left-padded batch a KV-cached decoder wants: the next-token logits of every row are then in the
    last column. Positions come from the mask (:func:`position_ids_from_mask`), so packing does not
    change what the model computes. A row without any real token gets ``fill_token_id`` in its last
    slot, because a query that may attend to nothing gives undefined attention.

    Parameters
    ----------
    input_ids : torch.Tensor
        ``(B, L)`` token ids.
    attention_mask : torch.Tensor
        ``(B, L)`` 1 for real tokens, 0 for padding.
    fill_token_id : int
        Token placed in rows that have no real token (the BOS or EOS token is a good choice).

    Returns
    -------
    input_ids : torch.Tensor
        ``(B, L')`` int64, left-padded, ``L' = max(1, longest row)``.
    attention_mask : torch.Tensor
        ``(B, L')`` int64.
    """
    ids = input_ids.long()
    mask = attention_mask.long()
    # Drop the trailing columns no row uses (the empty completion slots of a first observation),
    # which makes a first observation a plain left-padded batch.
    used = mask.any(0).nonzero()
    if len(used) and int(used[-1]) + 1 < mask.shape[1]:
        ids, mask = ids[:, : int(used[-1]) + 1], mask[:, : int(used[-1]) + 1]
    # Fast path (the normal first observation): the mask never goes 1 -> 0 along a row, i.e. the
    # batch is already left-padded. Otherwise sort pads to the front; a stable sort keeps token order.
    if bool((mask[:, 1:] < mask[:, :-1]).any()):
        order = torch.argsort(mask, dim=1, stable=True)
        ids = ids.gather(1, order)
        mask = mask.gather(1, order)
    lengths = mask.sum(1)
    if bool((lengths == 0).any()):
        empty = lengths == 0
        ids = ids.clone()
        mask = mask.clone()
        ids[empty, -1] = fill_token_id
        mask[empty, -1] = 1
        lengths = mask.sum(1)
    keep = max(int(lengths.max()), 1)
    return ids[:, -keep:], mask[:, -keep:]


def position_ids_from_mask(attention_mask: torch.Tensor, max_position: int | None = None) -> torch.Tensor:
    """Position ids that count only real tokens, as ``GenerationMixin.generate`` builds them.

    Parameters
    ----------
    attention_mask : torch.Tensor
        ``(B, L)`` 1 for real tokens, 0 for padding.
    max_position : int or None
        Clamp positions to this value (the model's last position embedding). Only tokens fed after
        an episode has used all its slots can reach it, and their outputs are masked anyway.

    Returns
    -------
    torch.Tensor
        ``(B, L)`` int64; 0 on padding (never attended to, so the value does not matter).
    """
    positions = attention_mask.long().cumsum(-1) - 1
    positions = positions.clamp_(min=0)
    if max_position is not None:
        positions = positions.clamp_(max=max_position)
    return positions


def causal_attention_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """The ``(B, 1, L, L)`` boolean attention mask of a left-padded batch (True: attend).

    Query ``i`` sees every real key ``j <= i``, which is what ``transformers`` builds from the 2D
    mask for SDPA attention; passed as it is, the model builds none. A padding query sees only
    itself: its output is never used, but a query that may attend to nothing would give undefined
    values (and NaN keys or values in a KV cache).

    Parameters
    ----------
    attention_mask : torch.Tensor
        ``(B, L)`` 1 for real tokens, 0 for padding.

    Returns
    -------
    torch.Tensor
        ``(B, 1, L, L)`` bool.
    """
    length = attention_mask.shape[1]
    device = attention_mask.device
    causal = torch.ones(length, length, dtype=torch.bool, device=device).tril_()
    allowed = (causal & attention_mask.bool()[:, None, :]) | torch.eye(
        length, dtype=torch.bool, device=device
    )
    return allowed[:, None]


def last_position(config: Any) -> int | None:
    """Last usable position of models with a fixed position table (GPT-2), else ``None``."""
    for name in ("n_positions", "max_position_embeddings"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value - 1
    return None


def last_true(mask: torch.Tensor) -> torch.Tensor:
    """``(B,)`` one past the last True entry of each row of a ``(B, T)`` mask (0 for an all-False row).

    The length of each row's episode: for an episode mask (True while it runs) its number of steps.
    """
    steps = torch.arange(1, mask.shape[1] + 1, device=mask.device)
    return (mask.bool() * steps).amax(1) if mask.shape[1] else mask.new_zeros(mask.shape[0], dtype=torch.long)


def distinct_prompts(ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Rows that start each run of repeated prompts, and every row's run, when some prompts repeat.

    GRPO samples ``group_size`` completions of every prompt, and lays a group's rows out next to
    each other, so a batch usually holds each prompt ``group_size`` times in a row. A causal LM's
    states over a prompt do not depend on what follows it, so such a run needs one forward pass;
    its KV cache is then gathered for every row of the run (:func:`~egsw_gym.policies.lm.compat.gather_cache`), or
    decoded as one sequence per run (:mod:`~egsw_gym.policies.lm.shared_decode`), which is exact
    (also for gradients, which the gather sums back). Only *adjacent* equal rows are merged: that
    is one comparison per row (a sort-based ``torch.unique`` costs more than the pass it saves on
    small batches), and equal prompts further apart are simply run again.

    Parameters
    ----------
    ids, mask : torch.Tensor
        ``(B, L)`` packed prompts (:func:`prepare_prompt`).

    Returns
    -------
    tuple of torch.Tensor or None
        ``(first_rows, inverse)``: ``first_rows`` ``(U,)`` the first row of each run, increasing;
        ``inverse`` ``(B,)`` the index into ``first_rows`` of every row's run; ``None`` when no two
        adjacent rows hold the same prompt (nothing to share).
    """
    batch = ids.shape[0]
    if batch < 2:
        return None
    # Padding ids may differ between equal prompts: compare ids only where the mask is real (token
    # ids are >= 0, so -1 also encodes the mask itself).
    key = torch.where(mask.bool(), ids, -1)
    starts = torch.ones(batch, dtype=torch.bool, device=ids.device)
    starts[1:] = (key[1:] != key[:-1]).any(1)
    first_rows = starts.nonzero().squeeze(1)
    if len(first_rows) == batch:
        return None
    return first_rows, starts.cumsum(0) - 1
