"""SR-GRPO's weighting (Soft Reward GRPO, KAIST-AILab, https://github.com/KAIST-AILab/SR-GRPO).

SR-GRPO replaces a group's normalised returns by one soft maximum of them: within each group ``g``,

    z_i = (R_i - mean_g R) / (std_g R + eps)
    w_i = exp(z_i / tau) / sum_{j in g} exp(z_j / tau)      <- :func:`sr_grpo_weights`
    A_g = sum_{j in g} w_j R_j                              (every member's advantage)

(``module/sr_grpo_trainer.py``, ``SRGRPOTrainer.compute_loss``). The weights only form the group's
advantage; they never multiply a sample's loss. The softmax is written out here, on its own, so
that SR-GRPO does not change when EGSW's weighting (:func:`egsw_gym.egsw.egsw_weights`) does.
:func:`~egsw_gym.algorithms.grpo.advantages.sr_grpo_advantages` builds ``z`` and ``A_g`` around it.
"""

from __future__ import annotations

import torch

from egsw_gym.common.checks import check_number
from egsw_gym.egsw import MIN_TEMPERATURE

__all__ = ["check_sr_temperature", "sr_grpo_weights"]


def check_sr_temperature(name: str, value: object) -> object:
    """SR-GRPO's ``tau``: a finite number ``>= 1e-6`` (:data:`~egsw_gym.egsw.MIN_TEMPERATURE`)."""
    return check_number(
        name, value, low=MIN_TEMPERATURE, hint="0.5 is SR-GRPO's default; smaller tends to the best return"
    )


def sr_grpo_weights(scores: torch.Tensor, group_ids: torch.Tensor, temperature: float) -> torch.Tensor:
    """The within-group softmax ``w_i = exp(z_i / tau) / sum_{j in g(i)} exp(z_j / tau)``.

    Parameters
    ----------
    scores : torch.Tensor
        1-D float tensor of finite ``z_i`` (SR-GRPO: the group-normalised returns).
    group_ids : torch.Tensor
        1-D integer tensor of the same length; equal ids form one group (need not be contiguous).
    temperature : float
        ``tau``, finite and ``>= 1e-6``.

    Returns
    -------
    torch.Tensor
        float64 weights in ``[0, 1]`` summing to 1 within each group (a group of one gets 1).
        Each group's largest score is subtracted before ``exp``, so no ``tau`` overflows.
    """
    check_sr_temperature("sr_temperature", temperature)
    if scores.dim() != 1 or group_ids.shape != scores.shape:
        raise ValueError(
            f"scores and group_ids must be 1-D of equal length, got {tuple(scores.shape)} and {tuple(group_ids.shape)}"
        )
    if group_ids.is_floating_point() or group_ids.dtype == torch.bool:
        raise TypeError(f"group_ids must be an integer tensor, got dtype {group_ids.dtype}")
    z = scores.double()
    if not bool(torch.isfinite(z).all()):
        raise ValueError("scores must be finite")
    if z.numel() == 0:
        return z.clone()
    _, group = torch.unique(group_ids, return_inverse=True)
    n_groups = int(group.max()) + 1
    group_max = z.new_full((n_groups,), -torch.inf).scatter_reduce(0, group, z, reduce="amax")
    exp_scores = torch.exp((z - group_max[group]) / temperature)
    group_sum = z.new_zeros(n_groups).index_add_(0, group, exp_scores)
    return exp_scores / group_sum[group]
