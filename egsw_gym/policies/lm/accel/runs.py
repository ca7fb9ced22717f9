"""What the shared-prompt accelerations have in common: runs of repeated prompts and custom masks.

GRPO samples ``group_size`` completions of every prompt and lays a group's rows out next to each
other, so a batch holds each prompt ``group_size`` times in a row. A causal LM's states over a prompt
do not depend on what follows it, so such a run needs the prompt computed once:
:mod:`~egsw_gym.policies.lm.accel.shared_decode` decodes each run as one KV-cache sequence,
:mod:`~egsw_gym.policies.lm.accel.prefix_tree` trains on each run as one prefix tree. The decode
feeds the model a custom 4D attention mask, which only some architectures honour
(:func:`custom_mask_attention`).
"""

from __future__ import annotations

import torch

from egsw_gym.policies.lm.compat import unwrap_peft

__all__ = [
    "CUSTOM_MASK_MODEL_TYPES",
    "custom_mask_attention",
    "distinct_prompts",
    "uniform_runs",
]

# Architectures whose positions come from ``position_ids`` and whose forward takes a custom 4D
# attention mask as it is: each was checked against one pass per sequence (sdpa and eager attention;
# tests/test_prefix_tree.py). Others (ALiBi models such as BLOOM, which build their biases from a 2D
# mask; per-layer sliding windows...) take the plain path.
CUSTOM_MASK_MODEL_TYPES = frozenset(
    {
        "gemma",
        "gpt2",
        "gpt_neox",
        "granite",
        "llama",
        "mistral",
        "olmo2",
        "phi",
        "phi3",
        "qwen2",
        "qwen3",
        "stablelm",
    }
)


def custom_mask_attention(model: torch.nn.Module, length: int | None = None) -> str | None:
    """The attention implementation (``"sdpa"`` or ``"eager"``) of a model that takes a 4D mask as it is.

    ``None`` when the model's forward would not honour a custom ``(B, 1, Q, K)`` mask: architectures
    not in :data:`CUSTOM_MASK_MODEL_TYPES`, flash-attention kernels (no arbitrary masks), or a
    sliding window shorter than ``length`` (the sequences the mask covers; ``None``: any window),
    which a custom mask would bypass. ``"sdpa"`` takes a boolean mask (True: attend), ``"eager"``
    an additive one (0 where allowed, the dtype's minimum elsewhere).
    """
    config = getattr(unwrap_peft(model), "config", None)
    if getattr(config, "model_type", None) not in CUSTOM_MASK_MODEL_TYPES:
        return None
    attention = getattr(config, "_attn_implementation", None)
    if attention not in ("sdpa", "eager"):
        return None
    window = getattr(config, "sliding_window", None)
    if isinstance(window, int) and (length is None or window < length):
        return None
    return attention


def distinct_prompts(ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Rows that start each run of repeated prompts, and every row's run, when some prompts repeat.

    Only *adjacent* equal rows are merged (one comparison per row); equal prompts further apart are
    simply run again.

    Parameters
    ----------
    ids, mask : torch.Tensor
        ``(B, L)`` packed prompts (:func:`~egsw_gym.policies.lm.inputs.prepare_prompt`).

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


def uniform_runs(first_rows: torch.Tensor, batch: int) -> int | None:
    """Rows per run when the ``batch`` rows form runs of one length ``R >= 2`` (``first_rows`` from
    :func:`distinct_prompts`), else ``None``."""
    runs = len(first_rows)
    if runs == 0 or batch % runs:
        return None
    size = batch // runs
    if size < 2 or not torch.equal(first_rows, torch.arange(0, batch, size, device=first_rows.device)):
        return None
    return size
