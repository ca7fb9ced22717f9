"""Pure GRPO math, shared by the control path (MLP policy) and the language-model path (LM policy).

Everything here works on padded ``(B, T)`` tensors: ``B`` sequences (episodes or completions),
``T`` the longest one, and a bool ``mask`` that is ``True`` on real steps and ``False`` on padding.
No function looks at a policy or an environment; :class:`egsw_gym.algorithms.grpo.GRPO` calls them.

The pieces, in the order an update uses them::

    outcome advantage   A_i     = (R_i - mean_g R) / (std_g R + eps)       R_i = sum_t gamma^t r_it
    process advantage   A_it    = (G_it - mean_{g,t} G) / (std_{g,t} G + eps)  G_it = sum_{k>=t} gamma^(k-t) r_ik
    SR-GRPO advantage   A_i     = sum_{j in g} softmax_j(z / tau) R_j,   z = (R - mean_g R) / (std_g R + eps)
    ratio               rho_it  = exp(log pi(a_it) - log pi_old(a_it))
    clipped surrogate   l_it    = -min(rho A, clip(rho, 1 - eps_low, 1 + eps_high) A)
    k3 KL to reference  kl_it   = exp(q - p) - (q - p) - 1,   p = log pi, q = log pi_ref
    per-step loss       L_it    = w_it * l_it + beta * kl_it - ent_coef * H_it   (w: EGSW, detached)
    aggregation         "grpo": mean_i (sum_t L_it / T_i);  "dr_grpo": sum_it L_it / (B * T_max);
                        "token": sum_it L_it / sum_i T_i

``mean_g`` / ``std_g`` run over the members of group ``g``; ``mean_{g,t}`` over the members of group
``g`` still running at step ``t``. ``std`` is the unbiased sample std (as in TRL's GRPO). The
advantages are in :mod:`~egsw_gym.algorithms.grpo.advantages` (re-exported here), the loss below.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch

from egsw_gym.algorithms.grpo.advantages import (
    ADVANTAGE_TYPES,
    GroupAdvantages,
    _check_mask,
    _check_padded,
    discounted_returns,
    group_advantages,
    group_normalize,
    reward_to_go,
    sr_grpo_advantages,
)
from egsw_gym.algorithms.grpo.sr_grpo import check_sr_temperature

__all__ = [
    "ADVANTAGE_TYPES",
    "LOSS_TYPES",
    "GroupAdvantages",
    "GRPOLossOutput",
    "aggregate_loss",
    "clipped_surrogate",
    "discounted_returns",
    "group_advantages",
    "group_normalize",
    "grpo_loss",
    "high_entropy_mask",
    "k3_kl",
    "reward_to_go",
    "sr_grpo_advantages",
    "check_sr_temperature",
]

LOSS_TYPES = ("grpo", "dr_grpo", "token")


def clipped_surrogate(
    log_probs: torch.Tensor,
    old_log_probs: torch.Tensor,
    advantages: torch.Tensor,
    clip_range: float,
    clip_range_high: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-step PPO clipped surrogate loss with optional clip-higher (DAPO).

    ``l = -min(rho A, clip(rho, 1 - clip_range, 1 + clip_range_high) A)``, ``rho = exp(logp - logp_old)``.

    Parameters
    ----------
    log_probs : torch.Tensor
        Log-probs of the taken actions under the current policy (with grad).
    old_log_probs : torch.Tensor
        Log-probs at rollout time (constants).
    advantages : torch.Tensor
        Advantages, same shape.
    clip_range : float
        Lower clip ``eps_low`` (and upper one when ``clip_range_high`` is None).
    clip_range_high : float or None
        Upper clip ``eps_high``; DAPO raises it (e.g. 0.28) so low-probability actions can grow.

    Returns
    -------
    loss : torch.Tensor
        Per-step loss (to be minimised), same shape as the inputs.
    ratio : torch.Tensor
        Probability ratio ``rho``.
    clipped : torch.Tensor
        Bool, ``True`` where the clip is active, i.e. the step's gradient is zeroed by it
        (``rho > 1 + eps_high`` with ``A > 0``, or ``rho < 1 - eps_low`` with ``A < 0``).
    """
    high = clip_range if clip_range_high is None else clip_range_high
    ratio = torch.exp(log_probs - old_log_probs)
    unclipped = ratio * advantages
    clipped_obj = torch.clamp(ratio, 1.0 - clip_range, 1.0 + high) * advantages
    loss = -torch.min(unclipped, clipped_obj)
    clipped = ((ratio > 1.0 + high) & (advantages > 0)) | ((ratio < 1.0 - clip_range) & (advantages < 0))
    return loss, ratio, clipped


def k3_kl(log_probs: torch.Tensor, ref_log_probs: torch.Tensor) -> torch.Tensor:
    """Schulman's k3 estimator of ``KL(pi || pi_ref)`` per step: ``exp(q - p) - (q - p) - 1 >= 0``.

    Unbiased for samples from ``pi`` and non-negative, as in GRPO (DeepSeekMath).
    """
    d = ref_log_probs - log_probs
    return torch.exp(d) - d - 1.0


def aggregate_loss(
    per_step: torch.Tensor,
    mask: torch.Tensor,
    loss_type: Literal["grpo", "dr_grpo", "token"] = "grpo",
    max_len: int | None = None,
) -> torch.Tensor:
    """Reduce a ``(B, T)`` per-step loss to a scalar over the valid steps.

    Parameters
    ----------
    per_step : torch.Tensor
        ``(B, T)`` per-step loss.
    mask : torch.Tensor
        ``(B, T)`` bool, ``True`` on real steps.
    loss_type : {"grpo", "dr_grpo", "token"}
        ``"grpo"``: mean over each sequence's steps, then mean over sequences (long sequences get
        less weight per step). ``"dr_grpo"``: sum over all steps divided by the constant
        ``B * max_len`` (no length bias). ``"token"``: mean over all valid steps (DAPO).
    max_len : int or None
        The constant of ``"dr_grpo"``; ``None`` uses ``T``, the padded length.

    Returns
    -------
    torch.Tensor
        Scalar loss.
    """
    _check_mask(mask)
    _check_padded("per_step", per_step, mask)
    m = mask.to(per_step.dtype)
    # where(), not a product: padding may hold inf/NaN (0 * inf = NaN), and must not leak in.
    masked = torch.where(mask, per_step, torch.zeros_like(per_step))
    if loss_type == "grpo":
        # Sequences with no valid step (should not occur) are skipped rather than divided by zero.
        lengths = m.sum(dim=1)
        has_steps = lengths > 0
        return (masked.sum(dim=1)[has_steps] / lengths[has_steps]).sum() / has_steps.sum().clamp_min(1)
    if loss_type == "dr_grpo":
        denom = per_step.shape[0] * (per_step.shape[1] if max_len is None else max_len)
        return masked.sum() / max(denom, 1)
    if loss_type == "token":
        return masked.sum() / m.sum().clamp_min(1.0)
    raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {loss_type!r}")


def high_entropy_mask(entropies: torch.Tensor, mask: torch.Tensor, quantile: float) -> torch.Tensor:
    """``True`` on the valid steps whose entropy is in the top ``quantile`` fraction of the valid steps.

    The threshold is ``torch.quantile`` of the valid entropies at ``1 - quantile`` (linear
    interpolation), and a step is kept when its entropy is ``>=`` it, as TRL's
    ``get_high_entropy_mask`` (one process: the batch's own steps).
    """
    _check_mask(mask)
    valid = entropies[mask].float()
    if valid.numel() == 0:
        return torch.zeros_like(mask)
    threshold = torch.quantile(valid, 1.0 - float(quantile))
    return (entropies >= threshold) & mask


class GRPOLossOutput(NamedTuple):
    """Output of :func:`grpo_loss`: the scalar to minimise and detached statistics.

    The statistics are means over the valid steps. ``clip_fraction`` and ``approx_kl`` are defined as
    in Stable-Baselines3's PPO, so ``train/clip_fraction`` and ``train/approx_kl`` mean the same thing
    for both algorithms; ``clip_fraction_low`` / ``clip_fraction_high`` are TRL's ``clip_ratio/low_mean``
    and ``clip_ratio/high_mean`` (the steps whose gradient the lower / upper clip zeroes).
    """

    loss: torch.Tensor
    #: fraction of steps with the ratio outside ``[1 - eps_low, 1 + eps_high]`` (SB3: ``|rho - 1| > eps``)
    clip_fraction: float
    #: fraction of steps with ``rho < 1 - eps_low`` and ``A < 0`` (TRL's ``clip_ratio/low_mean``)
    clip_fraction_low: float
    #: fraction of steps with ``rho > 1 + eps_high`` and ``A > 0`` (TRL's ``clip_ratio/high_mean``)
    clip_fraction_high: float
    #: k3 KL to the reference policy (0 when ``beta == 0``)
    kl: float
    #: mean entropy of the current policy (NaN when no entropies were passed)
    entropy: float
    #: SB3's ``approx_kl``: ``mean((rho - 1) - log rho)``, an estimate of ``KL(pi_old || pi)``
    approx_kl: float


def grpo_loss(
    log_probs: torch.Tensor,
    old_log_probs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    clip_range: float,
    clip_range_high: float | None = None,
    loss_type: Literal["grpo", "dr_grpo", "token"] = "grpo",
    max_len: int | None = None,
    weights: torch.Tensor | None = None,
    ref_log_probs: torch.Tensor | None = None,
    beta: float = 0.0,
    entropies: torch.Tensor | None = None,
    ent_coef: float = 0.0,
    positive_weight: float = 1.0,
    top_entropy_quantile: float = 1.0,
) -> GRPOLossOutput:
    """The full GRPO objective on padded sequences.

    ``L_it = w_it * l_it + beta * kl_it - ent_coef * H_it``, aggregated with ``loss_type``. The
    EGSW weight ``w`` multiplies only the clipped surrogate ``l`` (spec: KL and entropy stay
    unweighted) and is detached.

    Parameters
    ----------
    log_probs, old_log_probs : torch.Tensor
        ``(B, T)`` current log-probs (with grad) and rollout log-probs.
    advantages : torch.Tensor
        ``(B, T)`` advantages.
    mask : torch.Tensor
        ``(B, T)`` bool, ``True`` on real steps.
    clip_range, clip_range_high : float, and float or None
        Lower and upper clip (clip-higher); ``clip_range_high=None`` means ``clip_range``.
    loss_type, max_len : {"grpo", "dr_grpo", "token"}, and int or None
        Aggregation and the ``"dr_grpo"`` constant, see :func:`aggregate_loss`.
    weights : torch.Tensor or None
        ``(B, T)`` EGSW weights; ``None`` is weight 1 everywhere.
    ref_log_probs, beta : torch.Tensor or None, and float
        ``(B, T)`` log-probs under the frozen reference policy, needed when the KL coefficient
        ``beta`` is not 0.
    entropies, ent_coef : torch.Tensor or None, and float
        ``(B, T)`` current entropies (with grad), needed when the entropy coefficient is not 0.
    positive_weight : float
        Factor on the surrogate of the steps with a positive advantage (1: plain GRPO).
    top_entropy_quantile : float
        Keep the surrogate only on the steps in this top fraction of the batch's entropies
        (Wang et al. 2025, TRL's ``top_entropy_quantile``; 1: every step). Needs ``entropies``.

    Returns
    -------
    GRPOLossOutput
        The loss and the masked means of its parts (clip fractions, KL, entropy, ``approx_kl``).
    """
    _check_mask(mask)
    for name, x in (("log_probs", log_probs), ("old_log_probs", old_log_probs), ("advantages", advantages)):
        _check_padded(name, x, mask)
    log_probs, ref_log_probs, entropies = _fill_padding(
        mask, log_probs, old_log_probs, ref_log_probs, entropies
    )
    surrogate, ratio, _ = clipped_surrogate(log_probs, old_log_probs, advantages, clip_range, clip_range_high)
    surrogate = _reshape_surrogate(
        surrogate, advantages, entropies, mask, positive_weight, top_entropy_quantile
    )
    per_step = surrogate if weights is None else weights.detach() * surrogate
    kl = None
    if beta != 0.0:
        if ref_log_probs is None:
            raise ValueError("ref_log_probs is required when beta != 0")
        kl = k3_kl(log_probs, ref_log_probs)
        per_step = per_step + beta * kl
    if ent_coef != 0.0:
        if entropies is None:
            raise ValueError("entropies is required when ent_coef != 0")
        per_step = per_step - ent_coef * entropies
    loss = aggregate_loss(per_step, mask, loss_type, max_len)
    clip = (clip_range, clip_range if clip_range_high is None else clip_range_high)
    return _with_statistics(loss, (log_probs, old_log_probs), ratio, advantages, mask, clip, kl, entropies)


def _fill_padding(
    mask: torch.Tensor,
    log_probs: torch.Tensor,
    old_log_probs: torch.Tensor,
    ref_log_probs: torch.Tensor | None,
    entropies: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Padding carries whatever the policy produced there; replace it before any ``exp()`` so that
    neither the loss nor its gradient can pick up inf/NaN from it (``where()`` routes zero grad)."""
    log_probs = torch.where(mask, log_probs, old_log_probs.to(log_probs.dtype))
    if ref_log_probs is not None:
        ref_log_probs = torch.where(mask, ref_log_probs, log_probs.detach())
    if entropies is not None:
        entropies = torch.where(mask, entropies, torch.zeros_like(entropies))
    return log_probs, ref_log_probs, entropies


def _reshape_surrogate(
    surrogate: torch.Tensor,
    advantages: torch.Tensor,
    entropies: torch.Tensor | None,
    mask: torch.Tensor,
    positive_weight: float,
    top_entropy_quantile: float,
) -> torch.Tensor:
    """:func:`grpo_loss`'s optional surrogate controls: ``positive_weight`` and ``top_entropy_quantile``."""
    if positive_weight != 1.0:
        surrogate = torch.where(advantages > 0, positive_weight * surrogate, surrogate)
    if top_entropy_quantile < 1.0:
        if entropies is None:
            raise ValueError("entropies is required when top_entropy_quantile < 1")
        keep = high_entropy_mask(entropies.detach(), mask, top_entropy_quantile)
        surrogate = surrogate * keep.to(surrogate.dtype)
    return surrogate


@torch.no_grad()
def _with_statistics(
    loss: torch.Tensor,
    log_probs: tuple[torch.Tensor, torch.Tensor],
    ratio: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip: tuple[float, float],
    kl: torch.Tensor | None,
    entropies: torch.Tensor | None,
) -> GRPOLossOutput:
    """``loss`` with the masked means of :class:`GRPOLossOutput`.

    ``log_probs`` is ``(current, rollout)``, ``clip`` is ``(eps_low, eps_high)``.
    """
    log_ratio = log_probs[0] - log_probs[1]
    below, above = ratio < 1.0 - clip[0], ratio > 1.0 + clip[1]
    terms = [below | above, below & (advantages < 0), above & (advantages > 0), ratio - 1.0 - log_ratio]
    terms += [x for x in (kl, entropies) if x is not None]
    # Means over the valid steps, all in one reduction (one host transfer).
    stacked = torch.stack([x.to(log_probs[0].dtype) for x in terms])
    sums = torch.where(mask, stacked, torch.zeros((), dtype=stacked.dtype, device=stacked.device)).sum((1, 2))
    means = (sums / mask.sum().clamp_min(1)).tolist()
    clipped, low, high_frac, approx_kl = means[:4]
    rest = iter(means[4:])
    return GRPOLossOutput(
        loss=loss,
        clip_fraction=clipped,
        clip_fraction_low=low,
        clip_fraction_high=high_frac,
        kl=next(rest) if kl is not None else 0.0,
        entropy=next(rest) if entropies is not None else float("nan"),
        approx_kl=approx_kl,
    )
