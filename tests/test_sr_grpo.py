"""SR-GRPO's soft-reward group advantage against the published formula (KAIST-AILab/SR-GRPO)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from egsw_gym import GRPO
from egsw_gym.algorithms.grpo.core import group_advantages, sr_grpo_advantages
from egsw_gym.algorithms.grpo.sr_grpo import sr_grpo_weights

torch.set_num_threads(1)


def published_sr_grpo(returns, group_ids, tau, eps):
    """Loop transcription of SRGRPOTrainer.compute_loss (module/sr_grpo_trainer.py), group by group:

    z = (r - mean) / (std + eps) with the unbiased std; w = softmax(z / tau); A = sum(w * r),
    broadcast to every member of the group.
    """
    out = [0.0] * len(returns)
    for g in sorted(set(group_ids)):
        members = [i for i, x in enumerate(group_ids) if x == g]
        r = [float(returns[i]) for i in members]
        mu = sum(r) / len(r)
        sd = math.sqrt(sum((x - mu) ** 2 for x in r) / (len(r) - 1))
        z = [(x - mu) / (sd + eps) for x in r]
        m = max(zi / tau for zi in z)
        e = [math.exp(zi / tau - m) for zi in z]
        soft = sum(ei / sum(e) * x for ei, x in zip(e, r, strict=True))
        for i in members:
            out[i] = soft
    return out


groups = st.integers(1, 5).flatmap(
    lambda n_groups: st.integers(2, 8).flatmap(
        lambda size: st.tuples(
            st.lists(st.floats(-20, 20), min_size=n_groups * size, max_size=n_groups * size).filter(
                # a spread the std can see, so the zero-spread rule (exact 0) is not what is compared
                lambda r: all(np.ptp(r[k::n_groups]) > 1e-3 for k in range(n_groups))
            ),
            st.just(n_groups),
            st.floats(0.05, 10),
        )
    )
)


@settings(max_examples=150, deadline=None)
@given(groups)
def test_matches_the_published_formula(case):
    returns, n_groups, tau = case
    ids = [k % n_groups * 5 - 2 for k in range(len(returns))]  # interleaved, non-contiguous ids
    got = sr_grpo_advantages(
        torch.tensor(returns, dtype=torch.float64), torch.tensor(ids), temperature=tau, eps=1e-5
    )
    np.testing.assert_allclose(
        got.numpy(), published_sr_grpo(returns, ids, tau, 1e-5), rtol=1e-10, atol=1e-10
    )


def test_group_advantage_is_a_soft_maximum_of_the_returns():
    r = torch.tensor([0.0, 1.0, 0.0, 0.0, 3.0, -1.0, 2.0, 0.5], dtype=torch.float64)
    ids = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    sharp = sr_grpo_advantages(r, ids, temperature=1e-3)
    flat = sr_grpo_advantages(r, ids, temperature=1e6)
    torch.testing.assert_close(
        sharp, torch.tensor([1.0] * 4 + [3.0] * 4, dtype=torch.float64)
    )  # the best return
    torch.testing.assert_close(
        flat, torch.tensor([0.25] * 4 + [1.125] * 4, dtype=torch.float64), rtol=0, atol=1e-5
    )
    mid = sr_grpo_advantages(r, ids, temperature=0.5)
    assert torch.all((flat <= mid) & (mid <= sharp))  # monotone in the temperature
    # Every member of a group shares one advantage (it is not a per-sample weight).
    assert mid[:4].unique().numel() == 1 and mid[4:].unique().numel() == 1
    # Equal returns: uniform weights, the common return (the reference's z = 0 / eps = 0).
    torch.testing.assert_close(
        sr_grpo_advantages(torch.full((4,), 2.5), torch.zeros(4, dtype=torch.long)), torch.full((4,), 2.5)
    )


def test_group_advantages_broadcasts_the_discounted_sr_advantage_on_valid_steps():
    g = torch.Generator().manual_seed(0)
    B, T, gamma = 6, 5, 0.9
    lengths = torch.tensor([5, 2, 4, 1, 3, 5])
    mask = torch.arange(T)[None, :] < lengths[:, None]
    rewards = torch.randn(B, T, generator=g, dtype=torch.float64)
    ids = torch.tensor([4, 9, 4, 9, 4, 9])
    out = group_advantages(rewards, mask, ids, advantage="sr_grpo", gamma=gamma, sr_temperature=0.7)
    R = [sum(gamma**t * float(rewards[i, t]) for t in range(int(lengths[i]))) for i in range(B)]
    want = published_sr_grpo(R, ids.tolist(), 0.7, 1e-8)
    for i in range(B):
        for t in range(T):
            assert out.advantages[i, t].item() == pytest.approx(want[i] if t < lengths[i] else 0.0, abs=1e-9)
    assert out.n_groups == 2


@pytest.mark.parametrize("tau", [0, -1.0, float("nan"), float("inf"), True, "0.5"])
def test_bad_temperature_is_refused_by_name(tau):
    r, ids = torch.zeros(4), torch.zeros(4, dtype=torch.long)
    with pytest.raises(ValueError, match="sr_temperature"):
        sr_grpo_advantages(r, ids, temperature=tau)
    with pytest.raises(ValueError, match="sr_temperature"):
        GRPO("MlpPolicy", "CartPole-v1", group_size=2, n_groups=1, advantage="sr_grpo", sr_temperature=tau)


def test_grpo_trains_with_sr_grpo_and_keeps_tau_across_save_load(tmp_path):
    model = GRPO(
        "MlpPolicy", "CartPole-v1", group_size=4, n_groups=2, advantage="sr_grpo", sr_temperature=0.3, seed=0
    )
    before = torch.cat([p.detach().flatten().clone() for p in model.policy.parameters()])
    model.learn(600)
    after = torch.cat([p.detach().flatten() for p in model.policy.parameters()])
    assert not torch.equal(
        before, after
    )  # CartPole's returns are positive: SR-GRPO's advantage moves the policy
    model.save(tmp_path / "sr")
    loaded = GRPO.load(tmp_path / "sr")
    assert loaded.advantage == "sr_grpo" and loaded.sr_temperature == 0.3


def test_grpo_sr_is_a_preset_algorithm_and_overrides_still_win():
    from egsw_gym.cli import build_parser
    from egsw_gym.experiments.presets import ALGORITHMS, make_run_spec

    spec = make_run_spec("grpo-sr", "CartPole-v1", 0)
    plain = make_run_spec("grpo", "CartPole-v1", 0)
    assert spec.base_algo == "grpo" and spec.egsw is None
    assert spec.algo_kwargs == {**plain.algo_kwargs, "advantage": "sr_grpo"}
    tuned = make_run_spec("grpo-sr", "CartPole-v1", 0, {"grpo": {"sr_temperature": 0.3}})
    assert tuned.algo_kwargs["sr_temperature"] == 0.3 and tuned.algo_kwargs["advantage"] == "sr_grpo"
    assert make_run_spec("grpo", "CartPole-v1", 0).algo_kwargs.get("advantage", "outcome") == "outcome"
    assert "grpo-sr" in ALGORITHMS
    # compare's default stays the four algorithms; grpo-sr is opt-in
    args = build_parser().parse_args(["compare", "--suite", "classic", "--out", "x"])
    assert args.algos == ["ppo", "ppo-egsw", "grpo", "grpo-egsw"]
    assert build_parser().parse_args(
        ["compare", "--suite", "classic", "--out", "x", "--algos", "grpo-sr"]
    ).algos == ["grpo-sr"]


def loop_softmax(scores, ids, tau):
    """Loop reference of SR-GRPO's weights: exp(z_i / tau) / sum_{j in g(i)} exp(z_j / tau), group by group."""
    out = [0.0] * len(scores)
    for g in set(ids):
        members = [i for i, x in enumerate(ids) if x == g]
        top = max(scores[i] / tau for i in members)
        e = {i: math.exp(scores[i] / tau - top) for i in members}
        for i in members:
            out[i] = e[i] / sum(e.values())
    return out


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.tuples(st.floats(-50, 50), st.integers(-3, 3)), min_size=1, max_size=24),
    st.floats(1e-3, 100),
)
def test_sr_grpo_weights_match_a_loop_reference(pairs, tau):
    scores, ids = [p[0] for p in pairs], [p[1] for p in pairs]
    got = sr_grpo_weights(torch.tensor(scores, dtype=torch.float64), torch.tensor(ids), tau)
    assert got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), loop_softmax(scores, ids, tau), rtol=1e-12, atol=1e-300)
    for g in set(ids):  # each group's weights sum to 1
        assert float(got[torch.tensor(ids) == g].sum()) == pytest.approx(1.0, abs=1e-12)


def test_sr_grpo_weights_do_not_overflow_and_refuse_bad_input():
    w = sr_grpo_weights(torch.tensor([1e3, 0.0, -1e3]), torch.zeros(3, dtype=torch.long), 1e-6)
    assert torch.equal(w, torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64))
    assert sr_grpo_weights(torch.zeros(0), torch.zeros(0, dtype=torch.long), 0.5).numel() == 0
    with pytest.raises(ValueError, match="sr_temperature"):
        sr_grpo_weights(torch.zeros(2), torch.zeros(2, dtype=torch.long), 0.0)
    with pytest.raises(ValueError, match="1-D of equal length"):
        sr_grpo_weights(torch.zeros(2), torch.zeros(3, dtype=torch.long), 0.5)
    with pytest.raises(TypeError, match="integer"):
        sr_grpo_weights(torch.zeros(2), torch.zeros(2), 0.5)
    with pytest.raises(ValueError, match="finite"):
        sr_grpo_weights(torch.tensor([0.0, float("nan")]), torch.zeros(2, dtype=torch.long), 0.5)


def test_sr_grpo_does_not_depend_on_egsw_weighting(monkeypatch):
    """Changing EGSW's formula must not change SR-GRPO: it has its own softmax."""
    import egsw_gym.egsw as egsw_module
    from egsw_gym.algorithms.grpo import advantages, core
    from egsw_gym.algorithms.grpo import sr_grpo as sr_module

    def changed_egsw(*args, **kwargs):
        raise AssertionError("SR-GRPO called EGSW's weighting")

    for module in (egsw_module, advantages, core, sr_module):
        monkeypatch.setattr(module, "egsw_weights", changed_egsw, raising=False)
    r = [0.0, 1.0, 3.0, -1.0, 2.0, 2.0]
    ids = [0, 0, 0, 1, 1, 1]
    got = sr_grpo_advantages(
        torch.tensor(r, dtype=torch.float64), torch.tensor(ids), temperature=0.5, eps=1e-5
    )
    np.testing.assert_allclose(got.numpy(), published_sr_grpo(r, ids, 0.5, 1e-5), rtol=1e-12)
