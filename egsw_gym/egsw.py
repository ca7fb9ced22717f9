"""Entropy-guided sequence weighting (EGSW): the one weighting that PPO and GRPO share.

The specification (``shared/EGSW.md``, after Vanlioglu, arXiv 2503.22456)::

    score_i = (A_i + alpha * H_i) / P
    w_i     = N * exp(score_i) / sum_{j in set} exp(score_j)        (N = size of the set)

``A_i`` is a sample's advantage, ``H_i`` the policy's entropy at that sample, ``alpha >= 0``
how much uncertainty counts and ``P > 0`` the temperature. The comparison sets are named by
integer ids, so one primitive serves both settings:

- trajectory-wise: one sample per trajectory, the set is the group (GRPO) or the rollout (PPO);
- step-wise: one sample per (trajectory, step), the id is (group, step).

:func:`egsw_weights` is that formula and nothing else. :class:`EGSW` is the user-facing
configuration; :meth:`EGSW.weights` adds the documented options (advantage standardisation,
weight cap) around the same function, and is what the algorithms call.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch

__all__ = ["EGSW", "egsw_weights", "effective_sample_size", "egsw_statistics"]


def _check_1d_finite(name: str, x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(
            f"{name} must be a torch.Tensor, got {type(x).__name__}; wrap it with torch.as_tensor(...)"
        )
    if x.dim() != 1:
        raise ValueError(
            f"{name} must be 1-D (one entry per sample), got shape {tuple(x.shape)}; flatten it first"
        )
    if x.is_floating_point() and not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or inf; EGSW weights need finite inputs")


@torch.no_grad()
def egsw_weights(
    advantages: torch.Tensor,
    entropies: torch.Tensor,
    group_ids: torch.Tensor,
    *,
    alpha: float,
    temperature: float,
) -> torch.Tensor:
    """EGSW weights: set size times the softmax of ``(A + alpha * H) / P`` within each set.

    Parameters
    ----------
    advantages : torch.Tensor
        1-D float tensor, ``A_i`` for every sample.
    entropies : torch.Tensor
        1-D float tensor of the same length, ``H_i`` (policy entropy at the sample).
    group_ids : torch.Tensor
        1-D integer tensor of the same length; samples sharing an id form one comparison set.
        Ids need not be contiguous or sorted.
    alpha : float
        Entropy coefficient, ``>= 0``.
    temperature : float
        Softmax temperature ``P > 0``; large values flatten the weights towards 1.

    Returns
    -------
    torch.Tensor
        Weights (same dtype and device as ``advantages``, detached): finite, ``>= 0``, summing
        to the set size within each set. Sets of size 1 get weight 1.
    """
    _check_1d_finite("advantages", advantages)
    _check_1d_finite("entropies", entropies)
    _check_1d_finite("group_ids", group_ids)
    if group_ids.is_floating_point() or group_ids.dtype == torch.bool:
        raise TypeError(f"group_ids must be an integer tensor, got dtype {group_ids.dtype}")
    if not (advantages.shape == entropies.shape == group_ids.shape):
        raise ValueError(
            "advantages, entropies and group_ids must have the same length, got "
            f"{tuple(advantages.shape)}, {tuple(entropies.shape)} and {tuple(group_ids.shape)}"
        )
    if not (isinstance(alpha, (int, float)) and math.isfinite(alpha) and alpha >= 0):
        raise ValueError(f"alpha must be a finite number >= 0, got {alpha!r}")
    if not (isinstance(temperature, (int, float)) and temperature > 0 and not math.isnan(temperature)):
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    if advantages.numel() == 0:
        return advantages.new_ones(0)

    dtype = advantages.dtype if advantages.is_floating_point() else torch.get_default_dtype()
    scores = (advantages.to(dtype) + alpha * entropies.to(dtype)) / temperature
    # Contiguous set index for every sample, so the per-set reductions are scatter ops, not a loop.
    _, set_index, set_size = torch.unique(group_ids, return_inverse=True, return_counts=True)
    n_sets = set_size.numel()
    # Softmax shift invariance: subtracting the set maximum keeps exp() in [0, 1] for any score scale.
    set_max = scores.new_full((n_sets,), -math.inf).scatter_reduce(0, set_index, scores, reduce="amax")
    exp_scores = torch.exp(scores - set_max[set_index])
    set_sum = scores.new_zeros(n_sets).index_add_(0, set_index, exp_scores)
    return set_size.to(dtype)[set_index] * exp_scores / set_sum[set_index]


def effective_sample_size(weights: torch.Tensor) -> float:
    """Kish effective sample size of ``weights`` as a fraction of their number: ``(sum w)^2 / (n sum w^2)``.

    1.0 for uniform weights, ``1/n`` when one sample carries all the weight.
    """
    if weights.numel() == 0:
        return 1.0
    w = weights.double()
    return float(w.sum() ** 2 / (w.numel() * (w * w).sum()).clamp_min(1e-300))


def egsw_statistics(weights: torch.Tensor, entropies: Any) -> dict[str, float]:
    """The EGSW metrics every algorithm logs for one update batch, keyed by logger name.

    ``egsw/weight_max``, ``egsw/weight_min``, ``egsw/weight_ess`` (:func:`effective_sample_size`)
    and ``egsw/entropy_mean`` (mean rollout entropy of the weighted samples).
    """
    weights = torch.as_tensor(weights)
    return {
        "egsw/weight_max": float(weights.max()),
        "egsw/weight_min": float(weights.min()),
        "egsw/weight_ess": effective_sample_size(weights),
        "egsw/entropy_mean": float(torch.as_tensor(entropies, dtype=torch.float64).mean()),
    }


@dataclass(frozen=True)
class EGSW:
    """Configuration of entropy-guided sequence weighting, passed as ``egsw=EGSW(...)`` to PPO or GRPO.

    Parameters
    ----------
    alpha : float
        Weight of the entropy bonus in the score, ``>= 0``. Default ``0.1``. ``alpha=0`` is
        SR-GRPO's advantage softmax.
    temperature : float
        Softmax temperature ``P > 0``. Default ``1.0``. Large values give uniform weights, i.e. the
        plain algorithm.
    mode : {"step", "trajectory"}
        ``"step"``: one weight per (sample, step), the set at step ``t`` is the group's members
        still running (GRPO) or the ``n_envs`` environments (PPO). ``"trajectory"``: one weight per
        trajectory, scored by its (mean) advantage and mean entropy, the set is the group (GRPO) or
        the episode segments of a rollout (PPO). Default ``"step"``.
    standardize_advantages : bool
        Standardise advantages over the update batch (zero mean, unit std) before scoring, so that
        ``temperature`` means the same thing on every environment whatever its reward scale.
        Default ``True``. Only the *scores* see standardised advantages; the loss uses the
        algorithm's own advantages.
    max_weight : float or None
        Optional cap on a single weight for stability (weights are clipped at it after the
        softmax, so a capped set sums to less than its size). ``None`` (default) means no cap.
        Must be ``>= 1`` (a cap below 1 would shrink even uniform weights).
    entropy_reduction : {"mean", "sum"}
        How per-step entropies make the trajectory-wise ``H_i``: mean (default, length-neutral)
        or sum over the trajectory's steps (favours long, uncertain trajectories).
    """

    alpha: float = 0.1
    temperature: float = 1.0
    mode: Literal["step", "trajectory"] = "step"
    standardize_advantages: bool = True
    max_weight: float | None = None
    entropy_reduction: Literal["mean", "sum"] = "mean"

    def __post_init__(self) -> None:
        if (
            isinstance(self.alpha, bool)
            or not isinstance(self.alpha, (int, float))
            or not math.isfinite(self.alpha)
            or self.alpha < 0
        ):
            raise ValueError(f"EGSW.alpha must be a finite number >= 0, got {self.alpha!r}")
        if (
            isinstance(self.temperature, bool)
            or not isinstance(self.temperature, (int, float))
            or math.isnan(self.temperature)
            or self.temperature <= 0
        ):
            raise ValueError(
                f"EGSW.temperature must be a number > 0 (it divides the scores), got {self.temperature!r}"
            )
        if self.mode not in ("step", "trajectory"):
            raise ValueError(f"EGSW.mode must be 'step' or 'trajectory', got {self.mode!r}")
        if not isinstance(self.standardize_advantages, bool):
            raise ValueError(
                f"EGSW.standardize_advantages must be True or False, got {self.standardize_advantages!r}"
            )
        if self.max_weight is not None and (
            isinstance(self.max_weight, bool)
            or not isinstance(self.max_weight, (int, float))
            or math.isnan(self.max_weight)
            or self.max_weight < 1
        ):
            raise ValueError(f"EGSW.max_weight must be None or a number >= 1, got {self.max_weight!r}")
        if self.entropy_reduction not in ("mean", "sum"):
            raise ValueError(
                f"EGSW.entropy_reduction must be 'mean' or 'sum', got {self.entropy_reduction!r}"
            )

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> EGSW | None:
        """Rebuild a config from :meth:`to_dict` output (plain data, safe to store in checkpoints)."""
        if data is None:
            return None
        if not isinstance(data, dict):
            raise TypeError(f"EGSW.from_dict expects a dict, got {type(data).__name__}")
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(
                f"unknown EGSW field(s) {sorted(unknown)}; allowed: {sorted(cls.__dataclass_fields__)}"
            )
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        """The config as plain JSON-serialisable data."""
        return asdict(self)

    @torch.no_grad()
    def sample_weights(
        self,
        advantages: torch.Tensor,
        entropies: torch.Tensor,
        *,
        trajectory_ids: torch.Tensor,
        step_ids: torch.Tensor,
        group_ids: torch.Tensor,
        all_reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Per-step weights for one update batch, in either mode, from flat per-step data.

        This is the single entry point PPO and GRPO (control and language models) call. Every
        argument is a 1-D tensor with one entry per collected step (padding already removed).

        Parameters
        ----------
        advantages : torch.Tensor
            The step's advantage (GRPO: the trajectory's advantage repeated, or the process
            advantage; PPO: the GAE advantage).
        entropies : torch.Tensor
            Policy entropy at the step, recorded at rollout time.
        trajectory_ids : torch.Tensor
            Integer id of the trajectory (episode, episode segment, completion) the step belongs to.
        step_ids : torch.Tensor
            Integer position that makes the step-wise sets: the step index within the episode
            (GRPO) or the rollout step (PPO).
        group_ids : torch.Tensor
            Integer id of the comparison group of the step's trajectory (GRPO: the prompt / start
            state group; PPO: one group for the whole rollout).
        all_reduce : callable or None
            Sums a tensor over the processes of a data-parallel job (GRPO passes one under
            ``torchrun``). When given, ``standardize_advantages`` uses the mean and std of the
            *global* batch (every rank's samples), so N ranks weight exactly as one process would.
            Comparison sets never span ranks, so the softmax itself needs no communication.

        Returns
        -------
        torch.Tensor
            One weight per step. ``"step"`` mode: sets are (group, step) pairs. ``"trajectory"``
            mode: one weight per trajectory, scored with its mean advantage and its mean (or summed)
            entropy, within its group, repeated on each of its steps.
        """
        for name, ids in (
            ("trajectory_ids", trajectory_ids),
            ("step_ids", step_ids),
            ("group_ids", group_ids),
        ):
            if ids.shape != advantages.shape:
                raise ValueError(
                    f"{name} must have one entry per step: shape {tuple(ids.shape)} != {tuple(advantages.shape)}"
                )
        advantages, entropies = advantages.detach(), entropies.detach()
        if self.mode == "step":
            # (group, step) -> one integer id; step ids are non-negative so this pairing is injective.
            set_ids = (
                group_ids.long() * (int(step_ids.max()) + 1 if step_ids.numel() else 1) + step_ids.long()
            )
            return self._weights(advantages, entropies, set_ids, all_reduce)
        # Trajectory-wise: reduce each trajectory to one (A, H) sample, weight it within its group.
        _, traj_index, traj_len = torch.unique(trajectory_ids, return_inverse=True, return_counts=True)
        n_traj = traj_len.numel()
        traj_adv = advantages.new_zeros(n_traj).index_add_(0, traj_index, advantages) / traj_len
        traj_ent = entropies.new_zeros(n_traj).index_add_(0, traj_index, entropies)
        if self.entropy_reduction == "mean":
            traj_ent = traj_ent / traj_len
        traj_group = group_ids.new_zeros(n_traj).scatter_(0, traj_index, group_ids)
        return self._weights(traj_adv, traj_ent, traj_group, all_reduce)[traj_index]

    def _weights(
        self,
        advantages: torch.Tensor,
        entropies: torch.Tensor,
        set_ids: torch.Tensor,
        all_reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """:func:`egsw_weights` with this config's standardisation and cap."""
        if self.standardize_advantages and all_reduce is not None:
            # Global batch statistics, two-pass (mean first, then the centred sum of squares).
            x = advantages.double()
            n, total = all_reduce(torch.stack([x.new_tensor(float(x.numel())), x.sum()])).tolist()
            if n > 1:
                mean = total / n
                ss = float(all_reduce(((x - mean) ** 2).sum().reshape(1)))
                std = (ss / (n - 1)) ** 0.5
                advantages = ((x - mean) / (std + 1e-8)).to(advantages.dtype)
        elif self.standardize_advantages and advantages.numel() > 1:
            # std floored so a constant batch maps to zeros instead of NaN.
            advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
        w = egsw_weights(advantages, entropies, set_ids, alpha=self.alpha, temperature=self.temperature)
        if self.max_weight is not None:
            w = w.clamp_max(self.max_weight)
        return w
