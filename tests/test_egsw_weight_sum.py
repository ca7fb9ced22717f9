"""EGSW(weight_sum="one"): the paper's weights summing to 1 per set, in the config and in GRPO's loss.

The property test against the loop reference is in tests/test_egsw_core.py.
"""

from __future__ import annotations

import pytest
import torch

from egsw_gym import EGSW, egsw_weights
from egsw_gym.algorithms.grpo.core import grpo_loss


def test_uniform_scores_give_one_over_n_and_singletons_one():
    ids = torch.tensor([0, 0, 0, 0, 1, 2, 2])
    w = egsw_weights(torch.zeros(7), torch.zeros(7), ids, alpha=0.5, temperature=1.0, weight_sum="one")
    torch.testing.assert_close(w, torch.tensor([0.25, 0.25, 0.25, 0.25, 1.0, 0.5, 0.5]))


def test_weight_sum_is_validated_everywhere():
    x = torch.zeros(3)
    with pytest.raises(ValueError, match="weight_sum"):
        egsw_weights(x, x, torch.zeros(3, dtype=torch.long), alpha=0.1, temperature=1.0, weight_sum="sum")
    with pytest.raises(ValueError, match="EGSW.weight_sum"):
        EGSW(weight_sum="mean")
    with pytest.raises(ValueError, match="EGSW.weight_sum"):
        EGSW(weight_sum=1)
    with pytest.raises(ValueError, match="max_weight.*never binds"):
        EGSW(weight_sum="one", max_weight=2.0)


def test_config_round_trip_and_old_configs_load_with_the_default():
    cfg = EGSW(alpha=0.3, weight_sum="one")
    assert cfg.to_dict()["weight_sum"] == "one"
    assert EGSW.from_dict(cfg.to_dict()) == cfg
    old = EGSW().to_dict()
    del old["weight_sum"]  # a checkpoint saved before the field existed
    assert EGSW.from_dict(old).weight_sum == "set_size"
    assert EGSW().weight_sum == "set_size"


def test_sample_weights_in_both_modes_differ_by_the_set_size():
    g = torch.Generator().manual_seed(3)
    n = 24
    adv, ent = (
        torch.randn(n, generator=g, dtype=torch.float64),
        torch.rand(n, generator=g, dtype=torch.float64),
    )
    ids = dict(
        trajectory_ids=torch.arange(n) // 3,  # 8 trajectories of 3 steps
        step_ids=torch.arange(n) % 3,
        group_ids=torch.arange(n) // 12,  # 2 groups of 4 trajectories
    )
    for mode, set_size in (("trajectory", 4), ("step", 4)):
        full = EGSW(mode=mode).sample_weights(adv, ent, **ids)
        one = EGSW(mode=mode, weight_sum="one").sample_weights(adv, ent, **ids)
        torch.testing.assert_close(one * set_size, full, rtol=1e-12, atol=0)


def _grpo_batch(n_groups=3, group_size=4, horizon=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    b = n_groups * group_size
    lengths = torch.randint(2, horizon + 1, (b,), generator=g)
    mask = torch.arange(horizon)[None, :] < lengths[:, None]
    old = -torch.rand(b, horizon, generator=g, dtype=torch.float64)
    logp = (old + 0.3 * torch.randn(b, horizon, generator=g, dtype=torch.float64)).requires_grad_(True)
    seq_adv = torch.randn(b, generator=g, dtype=torch.float64)
    adv = seq_adv[:, None].expand(b, horizon) * mask
    ent = torch.rand(b, horizon, generator=g, dtype=torch.float64)
    ref = old + 0.1 * torch.randn(b, horizon, generator=g, dtype=torch.float64)
    flat = dict(
        trajectory_ids=torch.arange(b)[:, None].expand(b, horizon)[mask],
        step_ids=torch.arange(horizon)[None, :].expand(b, horizon)[mask],
        group_ids=(torch.arange(b) // group_size)[:, None].expand(b, horizon)[mask],
    )
    return mask, old, logp, adv, ent, ref, flat


def _weights_2d(cfg, mask, adv, ent, flat):
    w = torch.zeros_like(adv)
    w[mask] = cfg.sample_weights(adv[mask], ent[mask], **flat)
    return w


@pytest.mark.parametrize("loss_type", ["grpo", "dr_grpo", "token"])
def test_grpo_policy_term_with_one_is_set_size_over_n_and_one_times_n_is_identical(loss_type):
    """The documented equivalence, numerically: the policy-gradient term scales by exactly 1/G."""
    group_size = 4
    mask, old, logp, adv, ent, ref, flat = _grpo_batch(group_size=group_size)
    w_full = _weights_2d(EGSW(alpha=0.2), mask, adv, ent, flat)
    w_one = _weights_2d(EGSW(alpha=0.2, weight_sum="one"), mask, adv, ent, flat)
    assert not torch.allclose(w_full, torch.ones_like(w_full))  # a real, non-uniform weighting

    def loss_and_grad(weights, **kw):
        out = grpo_loss(logp, old, adv, mask, clip_range=0.2, loss_type=loss_type, weights=weights, **kw).loss
        (grad,) = torch.autograd.grad(out, logp)
        return out.detach(), grad

    l_full, g_full = loss_and_grad(w_full)
    l_one, g_one = loss_and_grad(w_one)
    # Policy term alone: "one" == "set_size" / G (value and gradient).
    torch.testing.assert_close(l_one, l_full / group_size, rtol=1e-12, atol=0)
    torch.testing.assert_close(g_one, g_full / group_size, rtol=1e-12, atol=1e-15)
    # "one" * G replaces GRPO's 1/G mean: the same update as the default, term for term.
    l_scaled, g_scaled = loss_and_grad(w_one * group_size)
    torch.testing.assert_close(l_scaled, l_full, rtol=1e-12, atol=0)
    torch.testing.assert_close(g_scaled, g_full, rtol=1e-12, atol=1e-15)
    # On top of the mean with unweighted KL / entropy terms, "one" is NOT a rescaled "set_size":
    # only the policy term shrinks, so the loss is not l_full / G.
    extra = dict(ref_log_probs=ref, beta=0.5, entropies=ent, ent_coef=0.1)
    l_full_kl, _ = loss_and_grad(w_full, **extra)
    l_one_kl, _ = loss_and_grad(w_one, **extra)
    l_kl_only, _ = loss_and_grad(torch.zeros_like(w_full), **extra)
    torch.testing.assert_close(
        l_one_kl - l_kl_only, (l_full_kl - l_kl_only) / group_size, rtol=1e-10, atol=1e-14
    )
    assert not torch.isclose(l_one_kl, l_full_kl / group_size, rtol=1e-3)
