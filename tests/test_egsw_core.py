"""The EGSW core against an independent numpy reference, and the five properties of shared/EGSW.md."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from egsw_gym import EGSW, effective_sample_size, egsw_statistics, egsw_weights


def reference_weights(adv, ent, ids, alpha, temperature, weight_sum="set_size"):
    """Loop-per-set numpy transcription of the formula: w_i = N * softmax((A + alpha H) / P)_i.

    ``weight_sum="one"``: the paper's form, the softmax without the factor N.
    """
    adv, ent, ids = np.asarray(adv, np.float64), np.asarray(ent, np.float64), np.asarray(ids)
    out = np.empty_like(adv)
    for g in np.unique(ids):
        m = ids == g
        s = (adv[m] + alpha * ent[m]) / temperature
        e = np.exp(s - s.max())
        out[m] = (m.sum() if weight_sum == "set_size" else 1.0) * e / e.sum()
    return out


def t(x, dtype=torch.float64):
    return torch.as_tensor(np.asarray(x), dtype=dtype)


samples = st.integers(1, 40).flatmap(
    lambda n: st.tuples(
        st.lists(st.floats(-50, 50), min_size=n, max_size=n),
        st.lists(st.floats(0, 5), min_size=n, max_size=n),
        st.lists(st.integers(-3, 6), min_size=n, max_size=n),
        st.floats(0, 3),
        st.floats(0.05, 20),
    )
)


@settings(max_examples=200, deadline=None)
@given(samples)
def test_matches_numpy_reference_and_sums_to_set_size(case):
    adv, ent, ids, alpha, temp = case
    w = egsw_weights(t(adv), t(ent), t(ids, torch.long), alpha=alpha, temperature=temp)
    ref = reference_weights(adv, ent, ids, alpha, temp)
    np.testing.assert_allclose(w.numpy(), ref, rtol=1e-9, atol=1e-9)
    # Property 1: per set, sum = set size; finite and >= 0.
    assert torch.isfinite(w).all() and (w >= 0).all()
    ids_np = np.asarray(ids)
    for g in np.unique(ids_np):
        assert w.numpy()[ids_np == g].sum() == pytest.approx((ids_np == g).sum(), rel=1e-9)


@settings(max_examples=200, deadline=None)
@given(samples)
def test_weight_sum_one_is_the_softmax_and_the_default_divided_by_the_set_size(case):
    adv, ent, ids, alpha, temp = case
    args = (t(adv), t(ent), t(ids, torch.long))
    one = egsw_weights(*args, alpha=alpha, temperature=temp, weight_sum="one")
    ref = reference_weights(adv, ent, ids, alpha, temp, weight_sum="one")
    np.testing.assert_allclose(one.numpy(), ref, rtol=1e-9, atol=1e-12)
    assert torch.isfinite(one).all() and (one >= 0).all() and (one <= 1).all()
    full = egsw_weights(*args, alpha=alpha, temperature=temp)
    ids_np = np.asarray(ids)
    for g in np.unique(ids_np):
        m = ids_np == g
        assert one.numpy()[m].sum() == pytest.approx(1.0, rel=1e-12)
        # Exactly the set-size weights over N (same float64 softmax, one multiplication apart).
        np.testing.assert_allclose(one.numpy()[m] * m.sum(), full.numpy()[m], rtol=1e-14, atol=0)


def test_uniform_cases_give_weight_one():
    rng = np.random.default_rng(0)
    adv, ent, ids = rng.normal(size=64), rng.uniform(0, 2, 64), rng.integers(0, 5, 64)
    # Property 2: alpha = 0 and P -> infinity.
    w = egsw_weights(t(adv), t(ent), t(ids, torch.long), alpha=0.0, temperature=1e12)
    np.testing.assert_allclose(w.numpy(), 1.0, atol=1e-10)
    # ... or all scores equal within a set.
    w = egsw_weights(t(np.ones(64)), t(np.full(64, 0.7)), t(ids, torch.long), alpha=0.5, temperature=0.01)
    np.testing.assert_array_equal(w.numpy(), 1.0)


def test_shift_invariance_and_stability_for_huge_scores():
    rng = np.random.default_rng(1)
    adv, ent, ids = rng.normal(size=30), rng.uniform(0, 2, 30), rng.integers(0, 3, 30)
    base = egsw_weights(t(adv), t(ent), t(ids, torch.long), alpha=0.3, temperature=0.7)
    # Property 3: a constant added to every score of a set (here: per-set constants) changes nothing.
    shift = np.array([1e4, -3e3, 5e5])[ids]
    shifted = egsw_weights(t(adv + shift), t(ent), t(ids, torch.long), alpha=0.3, temperature=0.7)
    np.testing.assert_allclose(shifted.numpy(), base.numpy(), rtol=1e-6, atol=1e-9)
    # Stable where a naive exp overflows: float32 scores of 1e6 / 1e-3.
    w32 = egsw_weights(
        t([1e6, 1e6 - 1e-3, -1e6], torch.float32),
        t([0, 0, 0], torch.float32),
        t([0, 0, 0], torch.long),
        alpha=0.0,
        temperature=1e-3,
    )
    assert torch.isfinite(w32).all() and w32.sum().item() == pytest.approx(3.0, rel=1e-5)


@settings(max_examples=100, deadline=None)
@given(samples, st.integers(0, 39), st.floats(0.01, 10), st.booleans())
def test_raising_own_advantage_or_entropy_never_lowers_weight(case, idx, delta, raise_entropy):
    adv, ent, ids, alpha, temp = case
    idx = idx % len(adv)
    before = egsw_weights(t(adv), t(ent), t(ids, torch.long), alpha=alpha, temperature=temp)[idx]
    adv2, ent2 = list(adv), list(ent)
    if raise_entropy:
        ent2[idx] += delta
    else:
        adv2[idx] += delta
    after = egsw_weights(t(adv2), t(ent2), t(ids, torch.long), alpha=alpha, temperature=temp)[idx]
    assert after >= before - 1e-12  # Property 4


def test_singleton_sets_get_weight_one():
    w = egsw_weights(
        t([5.0, -2.0, 0.3]), t([0.1, 3.0, 1.0]), t([0, 1, 2], torch.long), alpha=1.0, temperature=0.1
    )
    np.testing.assert_array_equal(w.numpy(), [1.0, 1.0, 1.0])  # Property 5


def test_weights_are_detached_and_keep_dtype():
    adv = torch.randn(8, requires_grad=True)
    w = egsw_weights(adv, torch.rand(8), torch.zeros(8, dtype=torch.long), alpha=0.1, temperature=1.0)
    assert not w.requires_grad and w.dtype == torch.float32


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(alpha=0.1, temperature=0.0), "temperature"),
        (dict(alpha=0.1, temperature=-1.0), "temperature"),
        (dict(alpha=-0.1, temperature=1.0), "alpha"),
        (dict(alpha=float("nan"), temperature=1.0), "alpha"),
    ],
)
def test_bad_hyperparameters_are_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        egsw_weights(torch.zeros(3), torch.zeros(3), torch.zeros(3, dtype=torch.long), **kwargs)


def test_bad_inputs_are_rejected_with_the_argument_named():
    z = torch.zeros(3)
    ids = torch.zeros(3, dtype=torch.long)
    with pytest.raises(ValueError, match="same length"):
        egsw_weights(z, torch.zeros(4), ids, alpha=0.1, temperature=1.0)
    with pytest.raises(ValueError, match="advantages.*NaN"):
        egsw_weights(torch.tensor([0.0, math.nan, 1.0]), z, ids, alpha=0.1, temperature=1.0)
    with pytest.raises(ValueError, match="entropies.*NaN or inf"):
        egsw_weights(z, torch.tensor([0.0, math.inf, 1.0]), ids, alpha=0.1, temperature=1.0)
    with pytest.raises(ValueError, match="advantages must be 1-D"):
        egsw_weights(torch.zeros(3, 1), z, ids, alpha=0.1, temperature=1.0)
    with pytest.raises(TypeError, match="group_ids must be an integer"):
        egsw_weights(z, z, torch.zeros(3), alpha=0.1, temperature=1.0)


@pytest.mark.parametrize(
    "field, value",
    [
        ("alpha", -1),
        ("temperature", 0),
        ("temperature", -2.0),
        ("mode", "episode"),
        ("max_weight", 0.5),
        ("entropy_reduction", "max"),
        ("standardize_advantages", "yes"),
        ("standardize_advantages", 1),
        ("alpha", True),
        ("temperature", True),
        ("max_weight", True),
        ("alpha", 1e300),
        ("temperature", 1e-300),
        ("temperature", math.inf),
        ("alpha", math.nan),
        ("mode", True),
    ],
)
def test_config_validation_names_the_field(field, value):
    with pytest.raises(ValueError, match=f"^EGSW.{field} must be .*, got {re.escape(repr(value))}"):
        EGSW(**{field: value})


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(alpha=True, temperature=1.0), "alpha"),
        (dict(alpha=1e300, temperature=1.0), "alpha"),
        (dict(alpha=0.1, temperature=1e-300), "temperature"),
        (dict(alpha=0.1, temperature=np.bool_(True)), "temperature"),
    ],
)
def test_egsw_weights_uses_the_config_rules(kwargs, name):
    """The function and the config refuse the same values, naming the same argument."""
    with pytest.raises(ValueError, match=f"^{name} must be a finite number"):
        egsw_weights(torch.zeros(3), torch.zeros(3), torch.zeros(3, dtype=torch.long), **kwargs)
    with pytest.raises(ValueError, match=f"^EGSW.{name} must be a finite number"):
        EGSW(**kwargs)


def test_default_mode_is_trajectory():
    assert EGSW().mode == "trajectory"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_extreme_accepted_settings_cannot_overflow(dtype):
    """At the bounds (alpha=1e6, temperature=1e-6) and the largest float32 inputs, weights stay finite.

    The result is the hard limit: a set's maximum score takes the whole set size (ties share it).
    """
    big = torch.finfo(torch.float32).max
    adv = torch.tensor([big, -big, 0.0, 1.0, 1.0, -3.0], dtype=dtype)
    ent = torch.tensor([big, big, -big, 0.0, 0.0, 5.0], dtype=dtype)
    ids = torch.tensor([0, 0, 0, 1, 1, 1])
    w = egsw_weights(adv, ent, ids, alpha=1e6, temperature=1e-6)
    assert w.dtype == dtype and bool(torch.isfinite(w).all())
    expected = torch.tensor([3.0, 0.0, 0.0, 0.0, 0.0, 3.0], dtype=dtype)  # set 1: 5e6 - 3 wins
    torch.testing.assert_close(w, expected)
    # ties share: two equal maxima split the set size
    w = egsw_weights(
        t([1.0, 1.0, 0.0]), t([0.0, 0.0, 0.0]), torch.zeros(3, dtype=torch.long), alpha=0.0, temperature=1e-6
    )
    torch.testing.assert_close(w, t([1.5, 1.5, 0.0]))


def test_float64_overflow_is_a_named_error():
    adv = torch.tensor([1e305, 0.0], dtype=torch.float64)
    ent = torch.tensor([1e305, 0.0], dtype=torch.float64)
    with pytest.raises(
        ValueError, match=r"advantages \+ alpha \* entropies overflows float64 \(alpha=1000000.0"
    ):
        egsw_weights(adv, ent, torch.zeros(2, dtype=torch.long), alpha=1e6, temperature=1.0)


def test_config_round_trips_as_plain_data():
    cfg = EGSW(alpha=0.3, temperature=2.0, mode="trajectory", max_weight=4.0)
    assert EGSW.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown EGSW field"):
        EGSW.from_dict({"alpha": 0.1, "beta": 2})


def test_sample_weights_step_mode_uses_group_and_step_sets():
    rng = np.random.default_rng(3)
    n = 50
    adv, ent = rng.normal(size=n), rng.uniform(0, 1, n)
    groups, steps = rng.integers(0, 3, n), rng.integers(0, 4, n)
    cfg = EGSW(alpha=0.2, temperature=0.5, mode="step", standardize_advantages=False)
    w = cfg.sample_weights(
        t(adv),
        t(ent),
        trajectory_ids=t(np.arange(n), torch.long),
        step_ids=t(steps, torch.long),
        group_ids=t(groups, torch.long),
    )
    ref = reference_weights(adv, ent, groups * 100 + steps, 0.2, 0.5)
    np.testing.assert_allclose(w.numpy(), ref, rtol=1e-9)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_sample_weights_trajectory_mode_scores_each_trajectory_once(reduction):
    rng = np.random.default_rng(4)
    lengths = [3, 5, 1, 4, 2, 6]
    traj = np.repeat(np.arange(6), lengths)
    group_of_traj = np.array([0, 0, 0, 1, 1, 1])
    adv, ent = rng.normal(size=traj.size), rng.uniform(0, 1, traj.size)
    cfg = EGSW(
        alpha=0.4,
        temperature=0.8,
        mode="trajectory",
        standardize_advantages=True,
        entropy_reduction=reduction,
    )
    w = cfg.sample_weights(
        t(adv),
        t(ent),
        trajectory_ids=t(traj, torch.long),
        step_ids=t(np.concatenate([np.arange(n) for n in lengths]), torch.long),
        group_ids=t(group_of_traj[traj], torch.long),
    )
    a = np.array([adv[traj == i].mean() for i in range(6)])
    h = np.array([getattr(ent[traj == i], reduction)() for i in range(6)])
    a = (a - a.mean()) / (a.std(ddof=1) + 1e-8)
    ref = reference_weights(a, h, group_of_traj, 0.4, 0.8)[traj]
    np.testing.assert_allclose(w.numpy(), ref, rtol=1e-7)


def test_max_weight_caps_and_effective_sample_size():
    cfg = EGSW(alpha=0.0, temperature=0.01, standardize_advantages=False, max_weight=1.5)
    w = cfg.sample_weights(
        t([0.0, 0.0, 10.0]),
        t([0.0, 0.0, 0.0]),
        trajectory_ids=t([0, 1, 2], torch.long),
        step_ids=t([0, 0, 0], torch.long),
        group_ids=t([0, 0, 0], torch.long),
    )
    assert w.max().item() == 1.5
    assert effective_sample_size(torch.ones(10)) == pytest.approx(1.0)
    assert effective_sample_size(torch.tensor([10.0, 0, 0, 0, 0, 0, 0, 0, 0, 0])) == pytest.approx(0.1)


def test_egsw_statistics_are_the_logged_metrics():
    w = torch.tensor([0.5, 1.5, 1.0, 1.0])
    stats = egsw_statistics(w, np.array([0.1, 0.3, 0.2, 0.2], dtype=np.float32))
    assert stats["egsw/weight_max"] == 1.5 and stats["egsw/weight_min"] == 0.5
    assert stats["egsw/weight_ess"] == pytest.approx(16 / (4 * (0.25 + 2.25 + 1 + 1)))
    assert stats["egsw/entropy_mean"] == pytest.approx(0.2)
