"""The controls suite: what separates EGSW's gain from a bigger step or an up-weighting of successes.

With binary rewards, EGSW's softmax of the advantage gives a group's rare correct answers most of
the weight (one correct in 8 at alpha = 0, P = 1: weight 5.66 against 0.33 for each wrong one),
so its weighted advantage no longer sums to 0 and its positive mass is several times GRPO's. The
suite therefore runs, on ``egsw/Arithmetic-v0`` (:data:`CONTROL_ENVS`):

- ``grpo``, ``grpo-lr2x``, ``grpo-lr4x``: the GRPO baseline at the preset's learning rate, 2x, 4x;
- ``grpo-egsw``, ``grpo-egsw-lr2x``, ``grpo-egsw-lr4x``: GRPO+EGSW at the same three rates;
- ``grpo-posw``: GRPO with the surrogate of positive-advantage steps multiplied by a constant,
  :func:`matched_positive_weight` of the preset's EGSW (its average positive mass);
- ``grpo-egsw-entonly``: EGSW without the advantage term (``advantage_coef=0``) at alpha = 1;
- ``grpo-egsw-a1``, ``grpo-egsw-a3``: EGSW with alpha 1 and 3 (the preset has 0.1);
- ``grpo-top20``: GRPO trained on the top 20% highest-entropy tokens only (Wang et al. 2025,
  TRL's ``top_entropy_quantile=0.2``).
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import torch

from egsw_gym.algorithms.grpo.core import group_advantages
from egsw_gym.egsw import EGSW

__all__ = [
    "CONTROL_ENVS",
    "CONTROL_BUDGETS",
    "CONTROL_COMPARISONS",
    "CONTROL_ONLY_VARIANTS",
    "control_variants",
    "matched_positive_weight",
    "scale_rate",
]

CONTROL_ENVS = ["egsw/Arithmetic-v0"]
#: (n_timesteps, eval_freq): the default suite's language-model budget
CONTROL_BUDGETS: dict[str, tuple[int, int]] = {"egsw/Arithmetic-v0": (500_000, 50_000)}
#: success rates over which :func:`matched_positive_weight` averages (the held-out accuracy of
#: Arithmetic runs goes from about 0.2 after the warm start to about 0.8 at the end)
MATCH_SUCCESS_RATES = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
#: the entropy-only variant's alpha: large enough that entropy differences move the weights
ENTROPY_ONLY_ALPHA = 1.0


def scale_rate(value: Any, factor: float) -> Any:
    """A preset learning rate times ``factor``: ``0.0002`` or ``"lin_0.0002"`` (the schedule kept)."""
    if isinstance(value, str) and value.startswith("lin_"):
        return f"lin_{float(value[4:]) * factor:g}"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value) * factor
    raise ValueError(f"cannot scale learning_rate={value!r}: expected a number or 'lin_<number>'")


@functools.lru_cache(maxsize=16)
def matched_positive_weight(
    egsw: EGSW, group_size: int, n_groups: int, *, batches: int = 200, seed: int = 0
) -> float:
    """EGSW's average positive mass relative to GRPO's, on binary rewards: the ``grpo-posw`` constant.

    For each success rate of :data:`MATCH_SUCCESS_RATES`, ``batches`` update batches of
    ``n_groups`` groups of ``group_size`` Bernoulli rewards get GRPO's group-normalised advantages
    ``A`` and ``egsw``'s weights ``w`` (one sample per completion, equal entropies: at the preset's
    alpha = 0.1 the entropy term moves the scores by a few hundredths). Returns
    ``sum(w * A) / sum(A)`` over every positive-advantage sample of every batch, rounded to 2
    decimals: the factor by which EGSW scales the positive part of GRPO's update on average.
    Seeded, so the plan is the same everywhere.
    """
    rng = np.random.default_rng(seed)
    num = den = 0.0
    n = group_size * n_groups
    groups = torch.arange(n_groups).repeat_interleave(group_size)
    ids = torch.arange(n)
    for p in MATCH_SUCCESS_RATES:
        for _ in range(batches):
            rewards = torch.as_tensor(rng.random(n) < p, dtype=torch.float64)[:, None]
            adv = group_advantages(rewards, torch.ones_like(rewards, dtype=torch.bool), groups).advantages[:, 0]
            w = egsw.sample_weights(
                adv, torch.zeros(n, dtype=torch.float64), trajectory_ids=ids, step_ids=torch.zeros_like(ids),
                group_ids=groups,
            )  # fmt: skip
            pos = adv > 0
            num += float((w[pos] * adv[pos]).sum())
            den += float(adv[pos].sum())
    return round(num / den, 2)


def control_variants(grpo_block: dict[str, Any], egsw: EGSW) -> list[tuple[str, str, dict[str, Any], dict[str, Any]]]:
    """``(variant, algo, egsw overrides, grpo-block overrides)`` rows of the controls suite.

    Parameters
    ----------
    grpo_block : dict
        The environment preset's ``grpo`` block (its ``learning_rate``, ``group_size``, ``n_groups``).
    egsw : EGSW
        The preset's EGSW config (GRPO+EGSW's), which ``grpo-posw`` is matched to.
    """
    lr = grpo_block["learning_rate"]
    c = matched_positive_weight(egsw, int(grpo_block["group_size"]), int(grpo_block["n_groups"]))
    rows: list[tuple[str, str, dict[str, Any], dict[str, Any]]] = [
        ("grpo", "grpo", {}, {}),
        ("grpo-egsw", "grpo-egsw", {}, {}),
    ]
    for k in (2, 4):
        rows.append((f"grpo-lr{k}x", "grpo", {}, {"learning_rate": scale_rate(lr, k)}))
        rows.append((f"grpo-egsw-lr{k}x", "grpo-egsw", {}, {"learning_rate": scale_rate(lr, k)}))
    rows += [
        ("grpo-posw", "grpo", {}, {"positive_weight": c}),
        ("grpo-egsw-entonly", "grpo-egsw", {"advantage_coef": 0.0, "alpha": ENTROPY_ONLY_ALPHA}, {}),
        ("grpo-egsw-a1", "grpo-egsw", {"alpha": 1.0}, {}),
        ("grpo-egsw-a3", "grpo-egsw", {"alpha": 3.0}, {}),
        ("grpo-top20", "grpo", {}, {"top_entropy_quantile": 0.2}),
    ]
    return rows


#: the controls suite's pre-registered comparisons ``(x, y)``, tested as ``x - y`` paired by seed
#: (docs/results/PLAN.md): EGSW against GRPO at each learning rate and at its own, against the
#: up-weighting control and the top-20% method, and each EGSW ablation against plain GRPO
CONTROL_COMPARISONS: list[tuple[str, str]] = [
    ("grpo-egsw", "grpo"),
    ("grpo-egsw", "grpo-lr2x"),
    ("grpo-egsw", "grpo-lr4x"),
    ("grpo-egsw-lr2x", "grpo-lr2x"),
    ("grpo-egsw-lr4x", "grpo-lr4x"),
    ("grpo-egsw", "grpo-posw"),
    ("grpo-egsw", "grpo-top20"),
    ("grpo-egsw-entonly", "grpo"),
    ("grpo-egsw-a1", "grpo"),
    ("grpo-egsw-a3", "grpo"),
    ("grpo-top20", "grpo"),
]
#: variants only the controls suite has: a report that sees one uses :data:`CONTROL_COMPARISONS`
CONTROL_ONLY_VARIANTS = frozenset(
    {"grpo-lr2x", "grpo-lr4x", "grpo-egsw-lr2x", "grpo-egsw-lr4x", "grpo-posw", "grpo-egsw-entonly",
     "grpo-egsw-a1", "grpo-egsw-a3", "grpo-top20"}
)  # fmt: skip
