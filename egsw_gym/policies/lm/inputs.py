"""Input preparation for :class:`~egsw_gym.policies.lm.LMPolicy`: prompt packing and positions.

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
