"""GRPO's advantages: returns and their normalisation within groups (outcome, process, SR-GRPO).

Everything here works on padded ``(B, T)`` tensors: ``B`` sequences (episodes or completions),
``T`` the longest one, and a bool ``mask`` that is ``True`` on real steps and ``False`` on padding::

    outcome advantage   A_i     = (R_i - mean_g R) / (std_g R + eps)       R_i = sum_t gamma^t r_it
    process advantage   A_it    = (G_it - mean_{g,t} G) / (std_{g,t} G + eps)  G_it = sum_{k>=t} gamma^(k-t) r_ik
    SR-GRPO advantage   A_i     = sum_{j in g} softmax_j(z / tau) R_j,   z = (R - mean_g R) / (std_g R + eps)

``mean_g`` / ``std_g`` run over the members of group ``g``; ``mean_{g,t}`` over the members of group
``g`` still running at step ``t``. ``std`` is the unbiased sample std (as in TRL's GRPO). The loss
that uses them is in :mod:`~egsw_gym.algorithms.grpo.core`, which re-exports every name here.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch

from egsw_gym.algorithms.grpo.sr_grpo import check_sr_temperature, sr_grpo_weights

__all__ = [
    "ADVANTAGE_TYPES",
    "ZERO_STD_TOL",
    "GroupAdvantages",
    "discounted_returns",
    "group_advantages",
    "group_normalize",
    "reward_to_go",
    "sr_grpo_advantages",
]

ADVANTAGE_TYPES = ("outcome", "process", "sr_grpo")


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

    Unlike EGSW it is not a per-sample weight on the surrogate: the softmax
    (:func:`~egsw_gym.algorithms.grpo.sr_grpo.sr_grpo_weights`, SR-GRPO's own) only forms the
    group's one advantage, a soft maximum of its returns (``tau -> 0``: the best return; ``tau -> inf``:
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
    w = sr_grpo_weights(z, group_ids, temperature)
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
