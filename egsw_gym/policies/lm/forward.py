"""Pure forward passes of a causal LM over prompts and completions (no policy state).

- :func:`shared_prefill`: one pass per run of repeated prompts, its KV cache gathered back to
  every row (GRPO's groups repeat each prompt ``group_size`` times in a row);
- :func:`sequence_log_probs`: teacher-forced log-probs and entropies of whole completions, with
  gradients (the training pass of :meth:`~egsw_gym.policies.lm.LMPolicy.evaluate_sequences` and of
  :func:`~egsw_gym.llm.warm_start.warm_start`).
"""

from __future__ import annotations

from typing import Any

import torch

from egsw_gym.policies.lm.compat import checkpoints_activations, forward_kwargs, gather_cache, output_cache
from egsw_gym.policies.lm.inputs import (
    distinct_prompts,
    last_position,
    position_ids_from_mask,
    prepare_prompt,
)

__all__ = ["sequence_log_probs", "shared_prefill", "shared_prompt_logits"]


def shared_prefill(
    model: torch.nn.Module, inputs: dict[str, Any], first_rows: torch.Tensor, inverse: torch.Tensor
) -> tuple[Any, torch.Tensor] | None:
    """Run a batch of prompts for the rows ``first_rows`` only, then give every row its prompt's state.

    ``inputs`` are the model's keyword arguments for the whole batch (tensors with the batch first;
    other values are passed as they are). Returns the KV cache gathered back to every row
    (``inverse``, see :func:`distinct_prompts`) and the ``(B, V)`` logits at the last prompt
    position; ``None`` when the model's cache cannot be gathered by rows (the caller then runs the
    whole batch).
    """
    distinct = {k: v[first_rows] if torch.is_tensor(v) else v for k, v in inputs.items()}
    output = model(**distinct, use_cache=True)
    cache = output_cache(output)
    if cache is None or not gather_cache(cache, inverse):
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


def sequence_log_probs(
    model: torch.nn.Module,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    actions: torch.Tensor,
    n_actions: int | None = None,
    temperature: float = 1.0,
    fill_token_id: int = 0,
    share_prompts: bool = True,
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
        Run each run of adjacent repeated prompts through the model once and reuse its KV cache for
        every row of the run (:func:`distinct_prompts`), instead of one teacher-forced pass over
        every row's prompt plus completion. Same log-probs and gradients up to float rounding;
        GRPO's groups repeat every prompt ``group_size`` times in a row, so this saves most of the
        prompt compute. Models whose cache cannot be gathered by rows fall back to the single pass.

    Returns
    -------
    log_probs : torch.Tensor
        ``(B, T)`` float32 log-probability of each action.
    entropies : torch.Tensor
        ``(B, T)`` float32 Shannon entropy (nats) of each step's next-token distribution.
    """
    ids, mask = prepare_prompt(prompt_ids, prompt_mask, fill_token_id)
    actions = actions.long().to(ids.device)
    batch, steps = actions.shape
    if steps == 0:
        empty = torch.zeros(batch, 0, device=ids.device)
        return empty, empty.clone()
    full_mask = torch.cat([mask, torch.ones_like(actions)], dim=1)
    positions = position_ids_from_mask(full_mask, last_position(getattr(model, "config", None)))
    shared = distinct_prompts(ids, mask) if share_prompts else None
    logits = None
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
    log_probs = log_p.gather(-1, actions.unsqueeze(-1)).squeeze(-1)
    entropies = -(log_p.exp() * log_p).sum(-1)
    return log_probs, entropies
