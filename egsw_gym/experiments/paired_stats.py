"""Paired tests of a study: two variants of one environment, matched by seed.

Runs of one environment with the same seed start from the same model (and, for language models,
the same saved warm start), so the per-seed difference removes the start's spread. For each
comparison :func:`paired_comparison` gives the mean difference with a seeded bootstrap interval,
the standardised effect ``d_z = mean / sd`` with its interval, the two-sided paired t-test and the
two-sided Wilcoxon signed-rank test; :func:`holm` adjusts a family of p-values (Holm 1979). The
plan these implement is ``docs/results/PLAN.md``. Every resample is drawn from
``numpy.random.default_rng(seed)``, so a report recomputes to the same digits.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["paired_comparison", "holm", "bootstrap_interval", "PAIRED_KEYS"]

#: the fields of :func:`paired_comparison`'s result
PAIRED_KEYS = ("n", "mean", "lo", "hi", "dz", "dz_lo", "dz_hi", "p_t", "p_wilcoxon", "above", "equal", "below")


def bootstrap_interval(
    diffs: np.ndarray, stat: Any, *, reps: int = 2000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``stat(diffs)`` (seeds resampled with replacement).

    NaN resamples (a zero spread for ``d_z``) are dropped; ``(nan, nan)`` when none is left.
    """
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(diffs), size=(reps, len(diffs)))
    values = np.array([stat(diffs[i]) for i in idx])
    values = values[np.isfinite(values)]
    if values.size == 0:
        return float("nan"), float("nan")
    a = (1 - level) / 2
    return float(np.quantile(values, a)), float(np.quantile(values, 1 - a))


def _dz(d: np.ndarray) -> float:
    """``mean / sd`` of the differences; NaN (undefined) when their spread is zero up to rounding."""
    sd = float(np.std(d, ddof=1)) if len(d) > 1 else 0.0
    if sd <= 1e-12 * max(1.0, float(np.max(np.abs(d)))):
        # a bootstrap resample that drew one seed n times, or differences equal but for rounding
        # (whose sd of ~1e-17 would turn d_z into ~1e16)
        return float("nan")
    return float(np.mean(d)) / sd


def paired_comparison(
    x: dict[int, float], y: dict[int, float], *, reps: int = 2000, seed: int = 0
) -> dict[str, Any] | None:
    """``x - y`` over the seeds both have: effect sizes with 95% intervals and two-sided tests.

    Parameters
    ----------
    x, y : dict of int to float
        Per-seed scores of the two variants.
    reps : int
        Bootstrap resamples.
    seed : int
        Seed of the bootstrap.

    Returns
    -------
    dict or None
        :data:`PAIRED_KEYS`: ``n`` seeds, ``mean`` difference ``[lo, hi]``, ``dz`` ``[dz_lo,
        dz_hi]``, ``p_t`` (paired t), ``p_wilcoxon`` (signed-rank, zero differences dropped; 1.0
        when every difference is 0), and the seeds ``above``/``equal``/``below`` 0. ``None`` with
        fewer than 2 common seeds.
    """
    from scipy import stats

    seeds = sorted(set(x) & set(y))
    if len(seeds) < 2:
        return None
    d = np.array([x[s] - y[s] for s in seeds], dtype=float)
    lo, hi = bootstrap_interval(d, np.mean, reps=reps, seed=seed)
    dz_lo, dz_hi = bootstrap_interval(d, _dz, reps=reps, seed=seed)
    if np.all(d == d[0]):  # no spread: the t statistic is undefined
        p_t = 1.0 if d[0] == 0 else 0.0
    else:
        p_t = float(stats.ttest_rel(np.array([x[s] for s in seeds]), np.array([y[s] for s in seeds])).pvalue)
    nonzero = d[d != 0]
    p_w = 1.0 if nonzero.size == 0 else float(stats.wilcoxon(nonzero, alternative="two-sided").pvalue)
    return dict(
        n=len(seeds),
        mean=float(d.mean()),
        lo=lo,
        hi=hi,
        dz=_dz(d),
        dz_lo=dz_lo,
        dz_hi=dz_hi,
        p_t=p_t,
        p_wilcoxon=p_w,
        above=int((d > 0).sum()),
        equal=int((d == 0).sum()),
        below=int((d < 0).sum()),
    )


def holm(pvalues: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the input order (family-wise error control).

    The k-th smallest p (k = 0, 1, ...) is multiplied by ``m - k``, made non-decreasing along that
    order and capped at 1.
    """
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: (pvalues[i], i))
    adjusted = [0.0] * m
    running = 0.0
    for k, i in enumerate(order):
        running = max(running, min(1.0, (m - k) * float(pvalues[i])))
        adjusted[i] = running
    return adjusted
