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
``g`` still running at step ``t``. ``std`` is the unbiased sample std (as in TRL's GRPO).
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch

from egsw_gym.common.checks import check_number
from egsw_gym.egsw import MIN_TEMPERATURE, egsw_weights

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
    "k3_kl",
    "reward_to_go",
    "sr_grpo_advantages",
    "check_sr_temperature",
]

ADVANTAGE_TYPES = ("outcome", "process", "sr_grpo")
LOSS_TYPES = ("grpo", "dr_grpo", "token")


def _check_padded(name: str, x: torch.Tensor, mask: torch.Tensor) -> None:
    if x.shape != mask.shape:
        raise ValueError(
            f"{name} must have the mask's shape {tuple(mask.shape)} (B, T), got {tuple(x.shape)}"
        )


def _check_mask(mask: torch.Tensor) -> None:
    if mask.dtype != torch.bool or mask.dim() != 2:
        raise ValueError(
            f"mask must be a 2-D bool tensor (B, T), got dtype {mask.dtype} and shape {tuple(mask.shape)}"
        )


# ----------------------------------------------------------------------------------------------
# Advantages
# ----------------------------------------------------------------------------------------------


def discounted_returns(rewards: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0) -> torch.Tensor:
    """Episode return ``R_i = sum_t gamma^t r_it`` over the valid steps of every sequence.

    Parameters
    ----------
    rewards : torch.Tensor
        ``(B, T)`` float rewards; values on padding are ignored.
    mask : torch.Tensor
        ``(B, T)`` bool, ``True`` on real steps.
    gamma : float
        Discount in ``(0, 1]``; ``1.0`` (default) is the plain sum, the usual GRPO outcome reward.

    Returns
    -------
    torch.Tensor
        ``(B,)`` returns.
    """
    _check_mask(mask)
    _check_padded("rewards", rewards, mask)
    discount = gamma ** torch.arange(rewards.shape[1], dtype=rewards.dtype, device=rewards.device)
    return (rewards * discount * mask).sum(dim=1)


def reward_to_go(rewards: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0) -> torch.Tensor:
    """Reward-to-go ``G_it = sum_{k>=t} gamma^(k-t) r_ik`` on valid steps, 0 on padding.

    Parameters
    ----------
    rewards : torch.Tensor
        ``(B, T)`` float rewards.
    mask : torch.Tensor
        ``(B, T)`` bool, ``True`` on real steps.
    gamma : float
        Discount in ``(0, 1]``.

    Returns
    -------
    torch.Tensor
        ``(B, T)`` reward-to-go.
    """
    _check_mask(mask)
    _check_padded("rewards", rewards, mask)
    r = rewards * mask
    out = torch.zeros_like(r)
    running = torch.zeros_like(r[:, 0])
    # Backwards recursion G_t = r_t + gamma G_{t+1}: stable for any gamma (no division by gamma^t).
    for t in range(r.shape[1] - 1, -1, -1):
        running = r[:, t] + gamma * running
        out[:, t] = running
    return out * mask


#: A set of values counts as zero-std when ``max - min <= ZERO_STD_TOL * (1 + |max|)``.
ZERO_STD_TOL = 1e-6


def group_normalize(
    values: torch.Tensor,
    group_ids: torch.Tensor,
    *,
    scale_by_std: bool = True,
    eps: float = 1e-8,
    zero_std_tol: float = ZERO_STD_TOL,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalise ``values`` within the sets named by ``group_ids``: ``(x - mean_g) / (std_g + eps)``.

    A set whose values are all equal (within ``zero_std_tol``, relative) carries no learning signal:
    its members get exactly 0, and are flagged. A set of one member counts as zero-std too.

    Parameters
    ----------
    values : torch.Tensor
        1-D float tensor, one value per sample.
    group_ids : torch.Tensor
        1-D integer tensor of the same length; equal ids form one set (need not be contiguous).
    scale_by_std : bool
        Divide by the set's std (GRPO). ``False`` only centres (Dr. GRPO).
    eps : float
        Added to the std so that tiny but non-zero spreads stay finite.
    zero_std_tol : float
        A set counts as zero-std when ``max - min <= zero_std_tol * (1 + |max|)``.

    Returns
    -------
    normalized : torch.Tensor
        1-D tensor like ``values``.
    zero_std : torch.Tensor
        1-D bool tensor, ``True`` for samples whose set had zero spread.
    """
    if values.dim() != 1 or group_ids.shape != values.shape:
        raise ValueError(
            f"values and group_ids must be 1-D of equal length, got {tuple(values.shape)} and {tuple(group_ids.shape)}"
        )
    out, zero_std, idx = _group_normalize(values, group_ids, scale_by_std, eps, zero_std_tol)
    return out, zero_std[idx]


def _group_normalize(
    values: torch.Tensor, group_ids: torch.Tensor, scale_by_std: bool, eps: float, zero_std_tol: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`group_normalize` with the per-set flags: ``(normalized, zero_std of each set, set of each sample)``."""
    if values.numel() == 0:
        empty = torch.zeros(0, dtype=torch.bool, device=values.device)
        return values.clone(), empty, torch.zeros(0, dtype=torch.long, device=values.device)
    _, idx, count = torch.unique(group_ids, return_inverse=True, return_counts=True)
    n = count.numel()
    count_f = count.to(values.dtype)
    mean = values.new_zeros(n).index_add_(0, idx, values) / count_f
    centred = values - mean[idx]
    # Unbiased variance; sets of one member have no spread to estimate (flagged as zero-std below).
    var = values.new_zeros(n).index_add_(0, idx, centred * centred) / (count_f - 1).clamp_min(1.0)
    std = var.sqrt()
    vmax = values.new_full((n,), -torch.inf).scatter_reduce(0, idx, values, reduce="amax")
    vmin = values.new_full((n,), torch.inf).scatter_reduce(0, idx, values, reduce="amin")
    zero_std = ((vmax - vmin) <= zero_std_tol * (1.0 + vmax.abs())) | (count == 1)
    out = centred / (std[idx] + eps) if scale_by_std else centred
    out = torch.where(zero_std[idx], torch.zeros_like(out), out)
    return out, zero_std, idx


def check_sr_temperature(name: str, value: object) -> object:
    """SR-GRPO's ``tau``: finite, ``>= 1e-6`` (EGSW's :data:`~egsw_gym.egsw.MIN_TEMPERATURE`; the rule
    :class:`GRPO` and :func:`sr_grpo_advantages` share)."""
    return check_number(
        name, value, low=MIN_TEMPERATURE, hint="0.5 is SR-GRPO's default; smaller tends to the best return"
    )


def sr_grpo_advantages(
    returns: torch.Tensor,
    group_ids: torch.Tensor,
    *,
    temperature: float = 0.5,
    scale_by_std: bool = True,
    eps: float = 1e-8,
) -> torch.Tensor:
    """SR-GRPO's soft-reward advantage: one softmax-weighted mean return per group, given to every member.

    Soft Reward GRPO (KAIST-AILab, https://github.com/KAIST-AILab/SR-GRPO,
    ``module/sr_grpo_trainer.py``, ``SRGRPOTrainer.compute_loss``)::

        z_i = (R_i - mean_g R) / (std_g R + eps)        (unbiased std, as torch's ``std``)
        w_i = exp(z_i / tau) / sum_{j in g} exp(z_j / tau)
        A_g = sum_{j in g} w_j R_j                       (the same advantage for every member of g)

    Unlike EGSW it is not a per-sample weight on the surrogate: the softmax only forms the group's
    one advantage, a soft maximum of its returns (``tau -> 0``: the best return; ``tau -> inf``:
    the mean). A group whose returns are all equal (or a group of one) has ``z = 0``, uniform
    ``w``, and gets its (common) return, as in the reference code (which adds ``eps = 1e-5``; we
    use ``eps`` like the other advantages, and exactly 0 for zero-spread groups).

    Parameters
    ----------
    returns : torch.Tensor
        1-D float tensor, the episode return ``R_i`` of every sequence.
    group_ids : torch.Tensor
        1-D integer tensor of the same length; equal ids form one group.
    temperature : float
        ``tau``, finite and ``>= 1e-6``; 0.5 is the reference code's default.
    scale_by_std : bool
        Divide the centred returns by the group std in ``z`` (the reference code) or only centre them.
    eps : float
        Added to the std in ``z``.

    Returns
    -------
    torch.Tensor
        1-D advantages, like ``returns``.
    """
    check_sr_temperature("sr_temperature", temperature)
    z, _ = group_normalize(returns, group_ids, scale_by_std=scale_by_std, eps=eps)
    if returns.numel() == 0:
        return returns.clone()
    # The within-group softmax of z / tau is EGSW's weighting with alpha = 0 and weights summing to 1.
    w = egsw_weights(
        z.double(),
        torch.zeros_like(z, dtype=torch.float64),
        group_ids,
        alpha=0.0,
        temperature=temperature,
        weight_sum="one",
    )
    _, idx = torch.unique(group_ids, return_inverse=True)
    soft = w.new_zeros(int(idx.max()) + 1).index_add_(0, idx, w * returns.double())
    return soft[idx].to(returns.dtype)


class GroupAdvantages(NamedTuple):
    """Output of :func:`group_advantages`."""

    advantages: torch.Tensor
    """``(B, T)`` advantage per step, 0 on padding."""
    n_zero_std_groups: int
    """Groups whose (discounted) episode returns have zero spread: no learning signal."""
    n_groups: int
    """Number of distinct groups."""


def group_advantages(
    rewards: torch.Tensor,
    mask: torch.Tensor,
    group_ids: torch.Tensor,
    *,
    advantage: Literal["outcome", "process", "sr_grpo"] = "outcome",
    gamma: float = 1.0,
    scale_by_std: bool = True,
    eps: float = 1e-8,
    sr_temperature: float = 0.5,
) -> GroupAdvantages:
    """Group-normalised advantages on padded sequences.

    Parameters
    ----------
    rewards : torch.Tensor
        ``(B, T)`` float per-step rewards.
    mask : torch.Tensor
        ``(B, T)`` bool, ``True`` on real steps.
    group_ids : torch.Tensor
        ``(B,)`` integer group of every sequence (its start state or prompt).
    advantage : {"outcome", "process", "sr_grpo"}
        ``"outcome"``: the episode return ``R_i`` normalised within the group, repeated on each
        step. ``"process"``: the reward-to-go ``G_it`` normalised at each step ``t`` across the
        group's members still running at ``t`` (a member alone at ``t`` gets 0). ``"sr_grpo"``:
        SR-GRPO's soft-reward group advantage (:func:`sr_grpo_advantages`), repeated on each step.
    gamma : float
        Discount in ``(0, 1]`` for ``R_i`` / ``G_it``.
    scale_by_std : bool
        Divide by the std (GRPO) or only centre (Dr. GRPO).
    eps : float
        Added to the std.
    sr_temperature : float
        SR-GRPO's softmax temperature ``tau`` (only used by ``"sr_grpo"``).

    Returns
    -------
    GroupAdvantages
        ``advantages (B, T)``, and the zero-std group count (judged on the episode returns in both
        modes, so ``frac_reward_zero_std`` means the same thing whatever the advantage).
    """
    _check_mask(mask)
    _check_padded("rewards", rewards, mask)
    if advantage not in ADVANTAGE_TYPES:
        raise ValueError(f"advantage must be one of {ADVANTAGE_TYPES}, got {advantage!r}")
    if not (0.0 < gamma <= 1.0):
        raise ValueError(f"gamma must be in (0, 1], got {gamma!r}")
    if group_ids.shape != (rewards.shape[0],):
        raise ValueError(
            f"group_ids must have shape (B,) = ({rewards.shape[0]},), got {tuple(group_ids.shape)}"
        )
    returns = discounted_returns(rewards, mask, gamma)
    outcome_adv, zero_std_groups, _ = _group_normalize(returns, group_ids, scale_by_std, eps, ZERO_STD_TOL)
    n_zero, n_groups = int(zero_std_groups.sum()), len(zero_std_groups)
    if advantage == "outcome":
        adv = outcome_adv[:, None].expand_as(rewards) * mask
    elif advantage == "sr_grpo":
        sr = sr_grpo_advantages(
            returns, group_ids, temperature=sr_temperature, scale_by_std=scale_by_std, eps=eps
        )
        adv = sr[:, None].expand_as(rewards) * mask
    else:
        rtg = reward_to_go(rewards, mask, gamma)
        T = rewards.shape[1]
        # One set per (group, step) among valid steps; group index * T + t is injective.
        _, gidx = torch.unique(group_ids, return_inverse=True)
        set_ids = gidx[:, None] * T + torch.arange(T, device=rewards.device)[None, :]
        adv = torch.zeros_like(rtg)
        adv[mask], _ = group_normalize(rtg[mask], set_ids[mask], scale_by_std=scale_by_std, eps=eps)
    return GroupAdvantages(adv.to(rewards.dtype), n_zero, n_groups)


# ----------------------------------------------------------------------------------------------
# Loss terms
# ----------------------------------------------------------------------------------------------


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
    log_probs : torch.Tensor
        ``(B, T)`` current log-probs (with grad).
    old_log_probs : torch.Tensor
        ``(B, T)`` rollout log-probs.
    advantages : torch.Tensor
        ``(B, T)`` advantages.
    mask : torch.Tensor
        ``(B, T)`` bool, ``True`` on real steps.
    clip_range : float
        Lower (and default upper) clip.
    clip_range_high : float or None
        Upper clip (clip-higher); ``None`` means ``clip_range``.
    loss_type : {"grpo", "dr_grpo", "token"}
        Aggregation, see :func:`aggregate_loss`.
    max_len : int or None
        ``"dr_grpo"`` constant.
    weights : torch.Tensor or None
        ``(B, T)`` EGSW weights; ``None`` is weight 1 everywhere.
    ref_log_probs : torch.Tensor or None
        ``(B, T)`` log-probs under the frozen reference policy; needed when ``beta > 0``.
    beta : float
        KL penalty coefficient.
    entropies : torch.Tensor or None
        ``(B, T)`` current entropies (with grad); needed when ``ent_coef != 0``.
    ent_coef : float
        Entropy bonus coefficient.
    positive_weight : float
        Factor on the surrogate of every step with a positive advantage (1: plain GRPO); a
        control for EGSW, which puts more weight on a group's rare successes.
    top_entropy_quantile : float
        Keep the surrogate only on the steps whose entropy is in this top fraction of the
        batch's valid steps (``entropy >= quantile(H, 1 - q)``; 1: every step), the rest count as
        0 in the aggregation (Wang et al. 2025, TRL's ``top_entropy_quantile``). Needs
        ``entropies``.

    Returns
    -------
    GRPOLossOutput
        The loss and masked means of its parts (clip fractions, KL to the reference, entropy,
        and SB3's ``approx_kl`` to the rollout policy).
    """
    _check_mask(mask)
    for name, x in (("log_probs", log_probs), ("old_log_probs", old_log_probs), ("advantages", advantages)):
        _check_padded(name, x, mask)
    # Padding carries whatever the policy produced there; replace it before any exp() so that
    # neither the loss nor its gradient can pick up inf/NaN from it (where() routes zero grad).
    log_probs = torch.where(mask, log_probs, old_log_probs.to(log_probs.dtype))
    if ref_log_probs is not None:
        ref_log_probs = torch.where(mask, ref_log_probs, log_probs.detach())
    if entropies is not None:
        entropies = torch.where(mask, entropies, torch.zeros_like(entropies))
    surrogate, ratio, _ = clipped_surrogate(log_probs, old_log_probs, advantages, clip_range, clip_range_high)
    if positive_weight != 1.0:
        surrogate = torch.where(advantages > 0, positive_weight * surrogate, surrogate)
    if top_entropy_quantile < 1.0:
        if entropies is None:
            raise ValueError("entropies is required when top_entropy_quantile < 1")
        keep = high_entropy_mask(entropies.detach(), mask, top_entropy_quantile)
        surrogate = surrogate * keep.to(surrogate.dtype)
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

    with torch.no_grad():
        high = clip_range if clip_range_high is None else clip_range_high
        below, above = ratio < 1.0 - clip_range, ratio > 1.0 + high
        log_ratio = log_probs - old_log_probs
        terms = [below | above, below & (advantages < 0), above & (advantages > 0), ratio - 1.0 - log_ratio]
        terms += [x for x in (kl, entropies) if x is not None]
        # Means over the valid steps, all in one reduction (one host transfer).
        stacked = torch.stack([x.to(log_probs.dtype) for x in terms])
        sums = torch.where(mask, stacked, torch.zeros((), dtype=stacked.dtype, device=stacked.device)).sum(
            (1, 2)
        )
        means = (sums / mask.sum().clamp_min(1)).tolist()
        clipped, low, high_frac, approx_kl = means[:4]
        rest = iter(means[4:])
        stats = GRPOLossOutput(
            loss=loss,
            clip_fraction=clipped,
            clip_fraction_low=low,
            clip_fraction_high=high_frac,
            kl=next(rest) if kl is not None else 0.0,
            entropy=next(rest) if entropies is not None else float("nan"),
            approx_kl=approx_kl,
        )
    return stats
