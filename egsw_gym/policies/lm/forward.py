"""The plain numbers of :class:`~egsw_gym.policies.lm.LMPolicy`: token statistics and the training pass.

For next-token logits ``z`` (the model's output over the vocabulary, restricted to the action
space and divided by the sampling temperature ``tau``)::

    log p(a) = log_softmax(z / tau)[a]          (log-probability of token a)
    H        = -sum_a p(a) log p(a)              (entropy of the distribution, in nats)

:func:`choose_tokens` computes both for the token it picks (sampling, in :meth:`LMPolicy.act`),
:func:`sequence_log_probs` for every token of whole completions in one teacher-forced pass (the
training pass of :meth:`LMPolicy.evaluate_sequences` and of :func:`~egsw_gym.llm.warm_start`).
"""

from __future__ import annotations

from typing import Any

import torch

from egsw_gym.policies.lm.compat import forward_kwargs, unwrap_peft
from egsw_gym.policies.lm.inputs import last_position, position_ids_from_mask, prepare_prompt

__all__ = ["choose_tokens", "sequence_log_probs", "token_log_softmax"]


def token_log_softmax(logits: torch.Tensor, n_actions: int | None, temperature: float) -> torch.Tensor:
    """``log p = log_softmax(logits[..., :n_actions] / temperature)`` in float32.

    ``n_actions`` restricts the distribution to the environment's action space (a model's
    vocabulary may be padded larger); ``None`` keeps every token.
    """
    if n_actions is not None:
        logits = logits[..., :n_actions]
    logits = logits.float()
    if temperature != 1.0:
        logits = logits / temperature
    return torch.log_softmax(logits, dim=-1)


def choose_tokens(
    log_p: torch.Tensor, uniform: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Tokens, their log-probs and the entropies of ``(B, V)`` log-probabilities ``log_p``.

    ``uniform`` ``(B, 1)`` in ``[0, 1)`` samples by inverse CDF: the token is the first one whose
    cumulative probability exceeds ``u`` (the same draw as ``torch.multinomial``'s distribution, from
    one random number a row). ``None`` takes the most likely token (greedy).
    """
    probs = log_p.exp()
    if uniform is None:
        actions = log_p.argmax(-1)
    else:
        cdf = probs.cumsum(-1)
        u = uniform * cdf[:, -1:]  # cdf[:, -1] is 1 up to rounding
        actions = torch.searchsorted(cdf, u, right=True).squeeze(-1).clamp_(max=cdf.shape[-1] - 1)
    log_probs = log_p.gather(-1, actions.unsqueeze(-1)).squeeze(-1)
    entropies = -(probs * log_p).sum(-1)
    return actions, log_probs, entropies


def sequence_log_probs(
    model: torch.nn.Module,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    actions: torch.Tensor,
    n_actions: int | None = None,
    temperature: float = 1.0,
    fill_token_id: int = 0,
    chunk_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher-forced log-probs and entropies of ``actions`` after each prompt, with gradients.

    One forward pass over ``prompt + actions`` per chunk of rows; the logits at the prompt's last
    token predict the first action, those at action ``t`` predict action ``t + 1``. Only those
    ``T + 1`` columns' logits are computed (``logits_to_keep``), and the last is dropped (it would
    predict a token after the completion).

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
    chunk_size : int or None
        Rows per forward pass (bounds the activations kept for backward); ``None``: all at once.

    Returns
    -------
    log_probs : torch.Tensor
        ``(B, T)`` float32 log-probability of each action.
    entropies : torch.Tensor
        ``(B, T)`` float32 Shannon entropy (nats) of each step's next-token distribution.
    """
    ids, mask = prepare_prompt(prompt_ids, prompt_mask, fill_token_id)
    actions = actions.to(ids.device, torch.long)
    batch, steps = actions.shape
    if steps == 0:
        empty = torch.zeros(batch, 0, device=ids.device)
        return empty, empty.clone()
    input_ids = torch.cat([ids, actions], dim=1)
    attention_mask = torch.cat([mask, torch.ones_like(actions)], dim=1)
    # Left padding: positions count real tokens only, as generate() (and so act()) numbers them.
    position_ids = position_ids_from_mask(attention_mask, last_position(unwrap_peft(model).config))
    _, has_keep = forward_kwargs(model)
    keep: dict[str, Any] = {"logits_to_keep": steps + 1} if has_keep else {}
    log_probs, entropies = [], []
    chunk = chunk_size or batch
    for start in range(0, batch, chunk):
        rows = slice(start, start + chunk)
        logits = model(
            input_ids=input_ids[rows],
            attention_mask=attention_mask[rows],
            position_ids=position_ids[rows],
            use_cache=False,
            **keep,
        ).logits[:, -(steps + 1) : -1]  # (b, T, V): the logits before each action
        log_p = token_log_softmax(logits, n_actions, temperature)
        log_probs.append(log_p.gather(-1, actions[rows].unsqueeze(-1)).squeeze(-1))
        entropies.append(-(log_p.exp() * log_p).sum(-1))
    return torch.cat(log_probs), torch.cat(entropies)
