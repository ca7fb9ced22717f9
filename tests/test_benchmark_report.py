"""The benchmarks' shared statistics (``benchmarks/_env_report.py``)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from _env_report import ratio_interval  # noqa: E402


def test_ratio_interval_resamples_rounds_as_pairs():
    # Both sides slowed alike round by round (a shared host): the ratio of medians is 0.5 in every
    # paired resample, so the interval has no width; resampling the sides apart would give a wide one.
    rng = np.random.default_rng(0)
    baseline = list(0.1 * rng.lognormal(0.0, 0.5, size=40))
    ours = [0.5 * t for t in baseline]
    low, high = ratio_interval(ours, baseline)
    assert low == pytest.approx(0.5) and high == pytest.approx(0.5)


def test_ratio_interval_covers_the_estimate_and_narrows_with_more_rounds():
    rng = np.random.default_rng(1)

    def width(n):
        ours = 0.05 * (1 + 0.1 * rng.standard_normal(n))
        base = 0.1 * (1 + 0.1 * rng.standard_normal(n))
        low, high = ratio_interval(list(ours), list(base))
        estimate = np.median(ours) / np.median(base)
        assert low <= estimate <= high
        return high - low

    assert width(400) < width(20) / 2


def test_ratio_interval_is_seeded_and_refuses_unpaired_input():
    rng = np.random.default_rng(2)
    ours, base = list(rng.random(30) + 1), list(rng.random(30) + 2)
    assert ratio_interval(ours, base, seed=3) == ratio_interval(ours, base, seed=3)
    with pytest.raises(ValueError, match="equally long"):
        ratio_interval(ours, base[:-1])
    with pytest.raises(ValueError, match=">= 2"):
        ratio_interval(ours[:1], base[:1])
