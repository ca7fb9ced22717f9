"""Entropy-guided sequence weighting (EGSW): the one weighting that PPO and GRPO share.

The method (``docs/egsw.md``, after Vanlioglu, arXiv 2503.22456)::

    score_i = (A_i + alpha * H_i) / P
    w_i     = N * exp(score_i) / sum_{j in set} exp(score_j)        (N = size of the set)

(``weight_sum="set_size"``, the default: mean weight 1). ``weight_sum="one"`` drops the factor
``N`` (the weights sum to 1 in a set), the form a summary of the paper gives; see :class:`EGSW`
for when the two are the same update.

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

from egsw_gym.common.checks import check_bool, check_choice, check_number

__all__ = [
    "EGSW",
    "egsw_weights",
    "effective_sample_size",
    "egsw_statistics",
    "MAX_ALPHA",
    "MIN_TEMPERATURE",
    "WEIGHT_SUMS",
]

#: Largest accepted ``alpha`` and smallest accepted ``temperature``: beyond them the weights are a
#: hard arg-max, not a soft weighting. Scores are computed in float64 as ``(z - max z) / P`` with
#: ``z = A + alpha * H``, so within them no input can produce NaN or inf weights.
MAX_ALPHA = 1e6
MIN_TEMPERATURE = 1e-6


def _check_alpha_temperature(alpha: Any, temperature: Any, prefix: str = "") -> None:
    """The rules :class:`EGSW` and :func:`egsw_weights` share for ``alpha`` and ``temperature``."""
    check_number(
        f"{prefix}alpha",
        alpha,
        low=0.0,
        high=MAX_ALPHA,
        hint="it weighs entropy against advantage in the score (0.1 by default; 0 = no entropy term)",
    )
    check_number(
        f"{prefix}temperature",
        temperature,
        low=MIN_TEMPERATURE,
        hint="it divides the scores (1.0 by default); smaller is sharper, larger is closer to uniform weights",
    )


#: What the weights of one comparison set sum to (:func:`egsw_weights`, :attr:`EGSW.weight_sum`).
WEIGHT_SUMS = ("set_size", "one")


def _check_weight_sum(weight_sum: Any, prefix: str = "") -> None:
    check_choice(
        f"{prefix}weight_sum",
        weight_sum,
        WEIGHT_SUMS,
        hint="'set_size' (default) gives mean weight 1, 'one' the paper's softmax summing to 1 in a set",
    )


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
    weight_sum: Literal["set_size", "one"] = "set_size",
) -> torch.Tensor:
    """EGSW weights: set size times the softmax of ``(A + alpha * H) / P`` within each set.

    With ``weight_sum="one"``, the softmax itself (weights summing to 1 within a set).

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
        Entropy coefficient, a finite number in ``[0, MAX_ALPHA]`` (``1e6``); a bool is refused.
    temperature : float
        Softmax temperature ``P``, a finite number ``>= MIN_TEMPERATURE`` (``1e-6``); large values
        flatten the weights towards 1.
    weight_sum : {"set_size", "one"}
        What the weights of a set sum to: its size ``N`` (default; mean weight 1, uniform weights
        are all 1) or 1 (uniform weights are ``1/N``). The two differ by exactly the factor ``N``.

    Returns
    -------
    torch.Tensor
        Weights (same dtype and device as ``advantages``, detached): finite, ``>= 0``, summing
        to the set size (or to 1) within each set. Sets of size 1 get weight 1 either way.

    Raises
    ------
    ValueError
        For a bad ``alpha`` / ``temperature`` (same rules as :class:`EGSW`), mismatched lengths,
        non-finite inputs, or ``A + alpha * H`` beyond float64 (only possible for float64 inputs
        above ~1e302).
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
    _check_alpha_temperature(alpha, temperature)
    _check_weight_sum(weight_sum)
    if advantages.numel() == 0:
        return advantages.new_ones(0)

    dtype = advantages.dtype if advantages.is_floating_point() else torch.get_default_dtype()
    # float64 and shift-before-divide: see MAX_ALPHA. z is finite for any accepted alpha and float32 input.
    z = advantages.double() + alpha * entropies.double()
    if not bool(torch.isfinite(z).all()):
        raise ValueError(
            f"advantages + alpha * entropies overflows float64 (alpha={alpha!r}, max |advantage| "
            f"{float(advantages.abs().max()):.3g}, max |entropy| {float(entropies.abs().max()):.3g}); "
            "rescale the inputs or lower alpha"
        )
    # Contiguous set index for every sample, so the per-set reductions are scatter ops, not a loop.
    _, set_index, set_size = torch.unique(group_ids, return_inverse=True, return_counts=True)
    n_sets = set_size.numel()
    # Softmax shift invariance: (z - set max) / P <= 0, so exp() is in [0, 1] for any P > 0.
    set_max = z.new_full((n_sets,), -math.inf).scatter_reduce(0, set_index, z, reduce="amax")
    exp_scores = torch.exp((z - set_max[set_index]) / temperature)
    set_sum = z.new_zeros(n_sets).index_add_(0, set_index, exp_scores)
    weights = exp_scores / set_sum[set_index]
    if weight_sum == "set_size":
        weights = set_size.double()[set_index] * weights
    return weights.to(dtype)


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

    Each sample's clipped surrogate term is multiplied by ``N * softmax((A + alpha * H) / P)`` over
    its comparison set. The method, the choice of defaults and the options' effects are explained
    in ``docs/egsw.md``.

    Parameters
    ----------
    alpha : float
        Weight of the entropy ``H`` in the score, in ``[0, 1e6]``. Default ``0.1``; ``0`` weights
        by advantage alone (not SR-GRPO, which is ``GRPO(advantage="sr_grpo")``).
    temperature : float
        Softmax temperature ``P``, finite and ``>= 1e-6``. Default ``1.0``; large values flatten the
        weights towards 1 (the plain algorithm).
    mode : {"trajectory", "step"}
        ``"trajectory"`` (default): one weight per trajectory, compared within its group (GRPO) or
        among the rollout's episode segments (PPO). ``"step"``: one weight per sample and step,
        compared among the group's running members (GRPO) or the ``n_envs`` environments (PPO).
    standardize_advantages : bool
        Standardise advantages over the update batch before scoring, so that ``temperature`` means
        the same on every environment. Default ``True``; the loss keeps the algorithm's advantages.
    max_weight : float or None
        Cap on a single weight, ``>= 1``, applied after the softmax. Default ``None`` (no cap).
    entropy_reduction : {"mean", "sum"}
        How a trajectory's step entropies make its ``H``: ``"mean"`` (default, length-neutral) or
        ``"sum"``.
    weight_sum : {"set_size", "one"}
        What a set's weights sum to: its size ``N`` (default; mean weight 1) or ``1`` (the paper's
        plain softmax, i.e. the default weights divided by ``N``). ``"one"`` refuses ``max_weight``.
    advantage_coef : float
        Factor on the (standardised) advantage in the score, in ``[0, 1e6]``. Default ``1.0`` (the
        method); ``0`` leaves entropy alone in the score (an ablation).
    """

    alpha: float = 0.1
    temperature: float = 1.0
    mode: Literal["trajectory", "step"] = "trajectory"
    standardize_advantages: bool = True
    max_weight: float | None = None
    entropy_reduction: Literal["mean", "sum"] = "mean"
    weight_sum: Literal["set_size", "one"] = "set_size"
    advantage_coef: float = 1.0

    def __post_init__(self) -> None:
        _check_alpha_temperature(self.alpha, self.temperature, prefix="EGSW.")
        check_choice(
            "EGSW.mode",
            self.mode,
            ("trajectory", "step"),
            hint="'trajectory' weighs whole episodes (segments) against each other, 'step' the samples "
            "sharing a step",
        )
        check_bool("EGSW.standardize_advantages", self.standardize_advantages)
        check_number(
            "EGSW.max_weight",
            self.max_weight,
            low=1.0,
            allow_none=True,
            hint="None means no cap; a cap below 1 would shrink even uniform weights",
        )
        check_choice("EGSW.entropy_reduction", self.entropy_reduction, ("mean", "sum"))
        _check_weight_sum(self.weight_sum, prefix="EGSW.")
        check_number(
            "EGSW.advantage_coef",
            self.advantage_coef,
            low=0.0,
            high=MAX_ALPHA,
            hint="1.0 is the specification's score; 0 leaves entropy alone in it",
        )
        if self.weight_sum == "one" and self.max_weight is not None:
            raise ValueError(
                f"EGSW.max_weight={self.max_weight!r} never binds with weight_sum='one' (its weights sum to 1 "
                "in a set, so none exceeds 1); drop max_weight or use weight_sum='set_size'"
            )

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> EGSW | None:
        """Rebuild a config from :meth:`to_dict` output (plain data, safe to store in checkpoints).

        Fields missing from ``data`` take their defaults, so a config saved before a field existed
        (e.g. ``weight_sum``) loads as the behaviour it was trained with.
        """
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
        if self.advantage_coef != 1.0:
            advantages = advantages * self.advantage_coef
        w = egsw_weights(
            advantages,
            entropies,
            set_ids,
            alpha=self.alpha,
            temperature=self.temperature,
            weight_sum=self.weight_sum,
        )
        if self.max_weight is not None:
            w = w.clamp_max(self.max_weight)
        return w
