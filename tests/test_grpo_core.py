"""grpo.core against straightforward per-sequence / per-group loop references written in plain Python."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from egsw_gym.algorithms.grpo.core import (
    aggregate_loss,
    clipped_surrogate,
    discounted_returns,
    group_advantages,
    group_normalize,
    grpo_loss,
    k3_kl,
    reward_to_go,
)

torch.set_num_threads(1)


def random_batch(seed: int, B: int = 6, T: int = 7, n_groups: int = 2):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    mask = torch.arange(T)[None, :] < lengths[:, None]
    rewards = torch.randn(B, T, generator=g, dtype=torch.float64)
    group_ids = torch.arange(B) % n_groups * 7 + 3  # non-contiguous ids on purpose
    return rewards, mask, group_ids, lengths


# ---------------------------------------------------------------- references (loops, numpy)


def ref_returns(rewards, lengths, gamma):
    return [sum(gamma**t * float(rewards[i, t]) for t in range(int(lengths[i]))) for i in range(len(lengths))]


def ref_normalize(values, groups):
    out, zero = [0.0] * len(values), [False] * len(values)
    for g in set(groups):
        members = [i for i, x in enumerate(groups) if x == g]
        vals = np.array([values[i] for i in members])
        if len(vals) < 2 or np.ptp(vals) <= 1e-6 * (1 + abs(vals.max())):
            for i in members:
                zero[i] = True
            continue
        mu, sd = vals.mean(), vals.std(ddof=1)
        for i in members:
            out[i] = (values[i] - mu) / (sd + 1e-8)
    return out, zero


# ---------------------------------------------------------------- advantages


@pytest.mark.parametrize("gamma", [1.0, 0.9])
def test_outcome_advantage_matches_reference(gamma):
    rewards, mask, groups, lengths = random_batch(0)
    R = ref_returns(rewards, lengths, gamma)
    assert torch.allclose(discounted_returns(rewards, mask, gamma), torch.tensor(R, dtype=torch.float64))
    expected, _ = ref_normalize(R, groups.tolist())
    out = group_advantages(rewards, mask, groups, advantage="outcome", gamma=gamma)
    for i in range(len(R)):
        for t in range(mask.shape[1]):
            want = expected[i] if t < lengths[i] else 0.0
            assert out.advantages[i, t].item() == pytest.approx(want, abs=1e-9)
    assert out.n_groups == 2 and out.n_zero_std_groups == 0


@pytest.mark.parametrize("gamma", [1.0, 0.95])
def test_process_advantage_normalises_reward_to_go_per_step_over_running_members(gamma):
    rewards, mask, groups, lengths = random_batch(1, B=8, T=6)
    B, T = mask.shape
    G = torch.zeros(B, T, dtype=torch.float64)
    for i in range(B):
        for t in range(int(lengths[i])):
            G[i, t] = sum(gamma ** (k - t) * float(rewards[i, k]) for k in range(t, int(lengths[i])))
    assert torch.allclose(reward_to_go(rewards, mask, gamma), G)
    out = group_advantages(rewards, mask, groups, advantage="process", gamma=gamma).advantages
    for t in range(T):
        running = [i for i in range(B) if t < lengths[i]]
        expected, _ = ref_normalize([float(G[i, t]) for i in running], [int(groups[i]) for i in running])
        for j, i in enumerate(running):
            assert out[i, t].item() == pytest.approx(expected[j], abs=1e-9)
    assert torch.all(out[~mask] == 0)


def test_zero_std_groups_get_zero_advantage_and_are_counted():
    # Group 0: identical returns (CartPole-like all-500); group 1: informative; group 2: one member.
    rewards = torch.tensor([[1.0, 1.0], [1.0, 1.0], [1.0, 0.0], [0.0, 0.0], [5.0, 0.0]])
    mask = torch.ones_like(rewards, dtype=torch.bool)
    groups = torch.tensor([0, 0, 1, 1, 2])
    out = group_advantages(rewards, mask, groups)
    assert out.n_zero_std_groups == 2 and out.n_groups == 3
    assert torch.all(out.advantages[[0, 1, 4]] == 0)
    assert out.advantages[2, 0] > 0 > out.advantages[3, 0]
    # Without std scaling (Dr. GRPO) the group is only centred.
    centred = group_advantages(rewards, mask, groups, scale_by_std=False).advantages
    assert centred[2, 0].item() == pytest.approx(0.5) and centred[3, 0].item() == pytest.approx(-0.5)


def test_group_normalize_flags_singletons_and_is_finite():
    vals = torch.tensor([3.0, 3.0 + 1e-9, 7.0])
    out, zero = group_normalize(vals, torch.tensor([0, 0, 1]))
    assert zero.tolist() == [True, True, True] and torch.all(out == 0)


def test_bad_advantage_and_shapes_rejected():
    rewards, mask, groups, _ = random_batch(2)
    with pytest.raises(ValueError, match="advantage"):
        group_advantages(rewards, mask, groups, advantage="gae")
    with pytest.raises(ValueError, match="gamma"):
        group_advantages(rewards, mask, groups, gamma=0.0)
    with pytest.raises(ValueError, match="mask"):
        group_advantages(rewards, mask.float(), groups)
    with pytest.raises(ValueError, match="group_ids"):
        group_advantages(rewards, mask, groups[:-1])


# ---------------------------------------------------------------- surrogate, KL, aggregation


def ref_surrogate(lp, old, a, lo, hi):
    r = math.exp(lp - old)
    return -min(r * a, min(max(r, 1 - lo), 1 + hi) * a)


@pytest.mark.parametrize("clip_high", [None, 0.28])
def test_clipped_surrogate_and_clip_higher(clip_high):
    g = torch.Generator().manual_seed(3)
    lp, old, adv = (torch.randn(5, 4, generator=g, dtype=torch.float64) * 0.5 for _ in range(3))
    loss, ratio, clipped = clipped_surrogate(lp, old, adv, 0.2, clip_high)
    hi = 0.2 if clip_high is None else clip_high
    for i, j in np.ndindex(5, 4):
        assert loss[i, j].item() == pytest.approx(
            ref_surrogate(lp[i, j].item(), old[i, j].item(), adv[i, j].item(), 0.2, hi)
        )
        r, a = ratio[i, j].item(), adv[i, j].item()
        assert bool(clipped[i, j]) == ((r > 1 + hi and a > 0) or (r < 0.8 and a < 0))


def test_clip_higher_lets_positive_advantage_ratio_grow_further():
    lp, old, adv = torch.tensor([math.log(1.25)]), torch.zeros(1), torch.ones(1)
    sym, _, c_sym = clipped_surrogate(lp, old, adv, 0.2)
    high, _, c_high = clipped_surrogate(lp, old, adv, 0.2, 0.28)
    assert sym.item() == pytest.approx(-1.2) and bool(c_sym)
    assert high.item() == pytest.approx(-1.25) and not bool(c_high)


def test_k3_kl_reference_and_nonnegative():
    p = torch.tensor([-1.0, -2.0, -0.5])
    q = torch.tensor([-1.0, -1.0, -3.0])
    want = [math.exp(b - a) - (b - a) - 1 for a, b in zip(p.tolist(), q.tolist(), strict=True)]
    assert torch.allclose(k3_kl(p, q), torch.tensor(want))
    assert k3_kl(p, p).abs().max() == 0


def test_aggregations_against_loops():
    g = torch.Generator().manual_seed(4)
    per_step = torch.randn(4, 5, generator=g, dtype=torch.float64)
    lengths = [5, 2, 3, 1]
    mask = torch.arange(5)[None, :] < torch.tensor(lengths)[:, None]
    seq_means = [sum(per_step[i, :L].tolist()) / L for i, L in enumerate(lengths)]
    total = sum(sum(per_step[i, :L].tolist()) for i, L in enumerate(lengths))
    assert aggregate_loss(per_step, mask, "grpo").item() == pytest.approx(np.mean(seq_means))
    assert aggregate_loss(per_step, mask, "token").item() == pytest.approx(total / sum(lengths))
    assert aggregate_loss(per_step, mask, "dr_grpo").item() == pytest.approx(total / (4 * 5))
    assert aggregate_loss(per_step, mask, "dr_grpo", max_len=500).item() == pytest.approx(total / (4 * 500))
    with pytest.raises(ValueError, match="loss_type"):
        aggregate_loss(per_step, mask, "seq")


def test_padding_values_never_matter():
    g = torch.Generator().manual_seed(5)
    lp, old, adv = (torch.randn(3, 4, generator=g) for _ in range(3))
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]], dtype=torch.bool)
    junk = torch.where(mask, lp, torch.full_like(lp, 1e3))
    for lt in ("grpo", "dr_grpo", "token"):
        a = grpo_loss(lp, old, adv, mask, clip_range=0.2, loss_type=lt).loss
        b = grpo_loss(junk, old, adv, mask, clip_range=0.2, loss_type=lt).loss
        assert a.item() == pytest.approx(b.item())
        lp_j = junk.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(
            grpo_loss(lp_j, old, adv, mask, clip_range=0.2, loss_type=lt).loss, lp_j
        )
        assert torch.isfinite(grad).all() and torch.all(grad[~mask] == 0)


@pytest.mark.parametrize("loss_type", ["grpo", "dr_grpo", "token"])
def test_unit_weights_equal_unweighted_and_weights_touch_only_the_surrogate(loss_type):
    g = torch.Generator().manual_seed(6)
    lp = torch.randn(4, 6, generator=g, requires_grad=True)
    old, adv, ref, ent = (torch.randn(4, 6, generator=g) for _ in range(4))
    mask = torch.arange(6)[None, :] < torch.tensor([6, 3, 4, 1])[:, None]
    kw = dict(
        clip_range=0.2,
        clip_range_high=0.3,
        loss_type=loss_type,
        ref_log_probs=ref,
        beta=0.05,
        entropies=ent,
        ent_coef=0.01,
    )
    plain = grpo_loss(lp, old, adv, mask, **kw).loss
    ones = grpo_loss(lp, old, adv, mask, weights=torch.ones(4, 6), **kw).loss
    assert torch.equal(plain, ones)
    (g1,) = torch.autograd.grad(plain, lp)
    (g2,) = torch.autograd.grad(grpo_loss(lp, old, adv, mask, weights=torch.ones(4, 6), **kw).loss, lp)
    assert torch.equal(g1, g2)
    # Reference: w * surrogate + beta * k3 - c * H, aggregated by hand.
    w = torch.rand(4, 6, generator=g) * 2
    sur, _, _ = clipped_surrogate(lp, old, adv, 0.2, 0.3)
    expected = aggregate_loss(w * sur + 0.05 * k3_kl(lp, ref) - 0.01 * ent, mask, loss_type)
    got = grpo_loss(lp, old, adv, mask, weights=w, **kw).loss
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)


@pytest.mark.parametrize("clip_range_high", [None, 0.28])
def test_loss_statistics_mean_what_sb3_ppo_and_trl_mean(clip_range_high):
    """clip_fraction and approx_kl as SB3's PPO computes them; low/high clip fractions as TRL's GRPO."""
    g = torch.Generator().manual_seed(3)
    lp, old = torch.randn(5, 7, generator=g) * 0.3, torch.randn(5, 7, generator=g) * 0.3
    adv = torch.randn(5, 7, generator=g)
    mask = torch.rand(5, 7, generator=g) > 0.3
    mask[:, 0] = True
    eps_low = 0.2
    eps_high = eps_low if clip_range_high is None else clip_range_high
    out = grpo_loss(lp, old, adv, mask, clip_range=eps_low, clip_range_high=clip_range_high)
    # Loop references over the valid steps only.
    clipped = low = high = 0
    kls = []
    for i, t in mask.nonzero().tolist():
        log_ratio = float(lp[i, t] - old[i, t])
        ratio = math.exp(log_ratio)
        clipped += ratio < 1 - eps_low or ratio > 1 + eps_high  # SB3: |ratio - 1| > clip_range
        low += ratio < 1 - eps_low and float(adv[i, t]) < 0  # TRL: is_low_clipped
        high += ratio > 1 + eps_high and float(adv[i, t]) > 0  # TRL: is_high_clipped
        kls.append((ratio - 1) - log_ratio)  # SB3: approx_kl_div
    n = int(mask.sum())
    assert 0 < clipped < n and low > 0 and high > 0  # the data exercises every case
    assert out.clip_fraction == pytest.approx(clipped / n, abs=1e-6)
    assert out.clip_fraction_low == pytest.approx(low / n, abs=1e-6)
    assert out.clip_fraction_high == pytest.approx(high / n, abs=1e-6)
    assert out.approx_kl == pytest.approx(sum(kls) / n, rel=1e-5)


def test_grpo_loss_stats_and_requirements():
    lp = torch.zeros(2, 3)
    mask = torch.ones(2, 3, dtype=torch.bool)
    out = grpo_loss(lp, lp, torch.ones(2, 3), mask, clip_range=0.2)
    assert (
        out.clip_fraction == 0
        and out.approx_kl == 0
        and out.clip_fraction_low == 0
        and out.clip_fraction_high == 0
        and out.kl == 0
    )
    with pytest.raises(ValueError, match="ref_log_probs"):
        grpo_loss(lp, lp, lp, mask, clip_range=0.2, beta=0.1)
    with pytest.raises(ValueError, match="entropies"):
        grpo_loss(lp, lp, lp, mask, clip_range=0.2, ent_coef=0.1)
    with pytest.raises(ValueError, match="shape"):
        grpo_loss(lp[:, :2], lp, lp, mask, clip_range=0.2)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000), st.integers(2, 5), st.integers(1, 8))
def test_outcome_advantages_are_centred_within_each_group(seed, group_size, T):
    g = torch.Generator().manual_seed(seed)
    B = group_size * 3
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    mask = torch.arange(T)[None, :] < lengths[:, None]
    rewards = torch.randint(0, 3, (B, T), generator=g).double()
    groups = torch.arange(B) // group_size
    adv = group_advantages(rewards, mask, groups).advantages[:, 0]
    for k in range(3):
        assert abs(adv[groups == k].sum().item()) < 1e-6
    assert torch.isfinite(adv).all()
