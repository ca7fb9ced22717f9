"""Accelerated training pass ``"prompt_cache"``: each run of a repeated prompt through one prompt pass.

GRPO's batch holds every prompt ``group_size`` times in a row. The plain teacher-forced pass runs
``prompt + completion`` for every row, so each prompt is computed ``group_size`` times. Here the
pass is split in two (:func:`prompt_cache_log_probs`):

1. the distinct prompts, one row per run, with the model's KV cache kept; the logits at each
   prompt's last token predict its rows' first action;
2. every row's actions but the last, attending to its run's prompt through that cache, gathered
   back to one row per batch row (an ``index_select``, so gradients flow back into the prompt pass).

A causal LM's states over a prompt do not depend on what follows it, so both passes compute what
the plain pass computes, up to float rounding. Where completions are long next to the prompt
(GSM8K-style rounds), this beats the prefix tree (:mod:`~egsw_gym.policies.lm.accel.prefix_tree`),
whose attention grows with the square of a run's whole width: here each completion token attends
only to its prompt and its own row's tokens.
"""

from __future__ import annotations

from typing import Any

import torch

from egsw_gym.policies.lm.accel.runs import cost_units, distinct_prompts
from egsw_gym.policies.lm.compat import forward_kwargs, output_cache, unwrap_peft
from egsw_gym.policies.lm.forward import token_log_softmax
from egsw_gym.policies.lm.inputs import last_position, position_ids_from_mask

__all__ = ["gather_cache", "prompt_cache_cost", "prompt_cache_log_probs"]


def gather_cache(cache: Any, index: torch.Tensor) -> bool:
    """Gather the batch rows ``index`` of a ``transformers`` KV cache in place; ``False`` if unsupported.

    Only caches of plain key/value layers (``DynamicLayer`` and friends) are gathered: sliding-window
    or recurrent layers keep other state that a row gather would have to follow. The gather is an
    ``index_select`` per layer (differentiable; the prompt pass's tensors are not changed).
    """
    layers = getattr(cache, "layers", None)
    if layers is None or not hasattr(cache, "reorder_cache"):
        return False
    if not all(hasattr(layer, "keys") and hasattr(layer, "values") for layer in layers):
        return False
    cache.reorder_cache(index)
    return True


def prompt_cache_cost(model: torch.nn.Module, prompt_len: int, width: int, n_runs: int, batch: int) -> float:
    """The cost of :func:`prompt_cache_log_probs` in the units of
    :func:`~egsw_gym.policies.lm.accel.runs.cost_units`: ``n_runs`` prompts of ``prompt_len``
    columns, then ``batch`` rows of ``width`` completion tokens attending to their prompt and
    themselves."""
    dense, logit = cost_units(model)
    return (
        n_runs * prompt_len * (dense + prompt_len)
        + batch * width * (dense + prompt_len + width)
        + (n_runs + batch * width) * logit
    )


def _checkpointing(model: torch.nn.Module) -> bool:
    """Whether the model recomputes activations (transformers' activation/gradient checkpointing)."""
    base = unwrap_peft(model)
    for name in ("is_activation_checkpointing", "is_gradient_checkpointing"):  # newer name first
        if hasattr(type(base), name):
            return bool(getattr(base, name))
    return False


def _prompt_pass(
    model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor
) -> tuple[Any, torch.Tensor]:
    """The prompts' KV cache (``use_cache=True``) and ``(U, V)`` logits after each one's last token."""
    cache_kw, has_keep = forward_kwargs(model)
    output = model(
        input_ids=ids,
        attention_mask=mask,
        position_ids=positions,
        use_cache=True,
        **{cache_kw: None},
        **({"logits_to_keep": 1} if has_keep else {}),
    )
    return output_cache(output), output.logits[:, -1]


def prompt_cache_log_probs(
    model: torch.nn.Module,
    ids: torch.Tensor,
    mask: torch.Tensor,
    actions: torch.Tensor,
    n_actions: int | None,
    temperature: float,
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """:func:`~egsw_gym.policies.lm.forward.sequence_log_probs` with each run's prompt computed once.

    Parameters
    ----------
    model : torch.nn.Module
        The causal LM.
    ids, mask : torch.Tensor
        ``(B, L)`` packed, left-padded prompts (:func:`~egsw_gym.policies.lm.inputs.prepare_prompt`).
    actions : torch.Tensor
        ``(B, T)`` completion tokens (entries after a row's end may be any valid id).
    n_actions, temperature
        As in :func:`~egsw_gym.policies.lm.forward.sequence_log_probs`.

    Returns
    -------
    tuple of torch.Tensor or None
        ``(B, T)`` log-probs and entropies; ``None`` where no prompt repeats, the model keeps no KV
        cache here (gradient checkpointing while training), or its cache cannot be gathered by rows.
    """
    batch, steps = actions.shape
    shared = distinct_prompts(ids, mask) if steps else None
    if shared is None or (model.training and _checkpointing(model)):  # it keeps no cache in training
        return None
    first_rows, inverse = shared
    full_mask = torch.cat([mask, mask.new_ones(batch, steps - 1)], dim=1)
    positions = position_ids_from_mask(full_mask, last_position(unwrap_peft(model).config))
    prompt_len = ids.shape[1]
    cache, first_logits = _prompt_pass(
        model, ids[first_rows], mask[first_rows], positions[first_rows, :prompt_len]
    )
    if cache is None or not gather_cache(cache, inverse):
        return None
    log_p = token_log_softmax(first_logits, n_actions, temperature)[inverse].unsqueeze(1)  # (B, 1, V)
    if steps > 1:  # the later actions, after each row's earlier ones
        cache_kw, _ = forward_kwargs(model)
        rest = model(
            input_ids=actions[:, :-1],
            attention_mask=full_mask,
            position_ids=positions[:, prompt_len:],
            use_cache=True,
            **{cache_kw: cache},
        ).logits
        log_p = torch.cat([log_p, token_log_softmax(rest, n_actions, temperature)], dim=1)
    return log_p.gather(-1, actions.unsqueeze(-1)).squeeze(-1), -(log_p.exp() * log_p).sum(-1)
