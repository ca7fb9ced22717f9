"""GRPO stops at the first round boundary at or after ``total_timesteps`` (within one round of it)."""

from __future__ import annotations

import pytest
import torch

from egsw_gym import GRPO
from egsw_gym.algorithms.grpo.rollout import RoundPlan

torch.set_num_threads(1)


def recorded_learn(model: GRPO, total: int) -> tuple[list[int], list[int], list[torch.Tensor]]:
    """Run ``learn(total)``, recording ``num_timesteps`` after every round, the number of rounds
    of each update, and the ``group_ids`` of every batch trained on."""
    round_ends: list[int] = []
    rounds_per_update: list[int] = [0]
    trained: list[torch.Tensor] = []
    collect_round, train = model._collect_round, model.train

    def spy_round(*args, **kwargs):
        batch = collect_round(*args, **kwargs)
        round_ends.append(model.num_timesteps)
        rounds_per_update[-1] += 1
        return batch

    def spy_train(batch):
        trained.append(batch.group_ids.clone())
        rounds_per_update.append(0)
        return train(batch)

    model._collect_round, model.train = spy_round, spy_train
    model.learn(total)
    return round_ends, rounds_per_update[:-1], trained


def assert_whole_groups(group_ids: torch.Tensor, group_size: int) -> None:
    counts = torch.bincount(group_ids)
    assert torch.all(counts == group_size), counts  # every group trained on is complete
    assert torch.equal(group_ids.unique(), torch.arange(counts.numel()))


@pytest.mark.parametrize(
    "n_envs, group_size, n_groups",
    [(4, 2, 8), (3, 2, 6)],  # aligned (a round is 2 whole groups); unaligned (a block is 2 rounds)
)
@pytest.mark.parametrize("total", [1, 150, 700])
def test_learn_stops_at_the_first_block_boundary_at_or_after_the_budget(n_envs, group_size, n_groups, total):
    model = GRPO(
        "MlpPolicy",
        "CartPole-v1",
        n_envs=n_envs,
        group_size=group_size,
        n_groups=n_groups,
        n_epochs=1,
        seed=3,
    )
    round_ends, rounds, trained = recorded_learn(model, total)
    plan = RoundPlan(n_envs, group_size)
    full_rounds = n_groups * group_size // n_envs
    assert model.num_timesteps == round_ends[-1] >= total
    # The budget was not reached at any earlier block boundary.
    earlier_boundaries = [t for i, t in enumerate(round_ends[:-1]) if (i + 1) % plan.rounds_per_block == 0]
    assert all(t < total for t in earlier_boundaries)
    last_block_start = (
        round_ends[-1 - plan.rounds_per_block] if len(round_ends) > plan.rounds_per_block else 0
    )
    assert last_block_start < total  # overshoot is less than the last block's steps
    # Every update but the last is whole; the last one stops at a block boundary.
    assert all(r == full_rounds for r in rounds[:-1])
    assert rounds[-1] % plan.rounds_per_block == 0 and 0 < rounds[-1] <= full_rounds
    for ids in trained:
        assert_whole_groups(ids, group_size)
    assert trained[-1].numel() == rounds[-1] * n_envs


def test_a_tiny_budget_trains_once_on_the_first_round():
    model = GRPO("MlpPolicy", "CartPole-v1", n_envs=4, group_size=2, n_groups=8, n_epochs=1, seed=0)
    round_ends, rounds, trained = recorded_learn(model, 1)
    assert len(round_ends) == 1 and rounds == [1] and model._n_updates == 1
    assert trained[0].tolist() == [0, 0, 1, 1]


def test_whole_updates_when_the_budget_falls_on_an_update_boundary():
    model = GRPO("MlpPolicy", "CartPole-v1", n_envs=8, group_size=4, n_groups=2, n_epochs=1, seed=1)
    round_ends, rounds, _ = recorded_learn(model, 300)
    assert rounds == [1] * len(rounds)  # one round per update: nothing to cut
    assert round_ends[-2] < 300 <= round_ends[-1]


def test_dynamic_sampling_also_stops_at_the_budget():
    model = GRPO(
        "MlpPolicy",
        "CartPole-v1",
        n_envs=4,
        group_size=2,
        n_groups=8,
        n_epochs=1,
        dynamic_sampling=True,
        seed=0,
    )
    round_ends, rounds, trained = recorded_learn(model, 1)
    assert len(round_ends) == 1 and model.num_timesteps == round_ends[0]
    assert_whole_groups(trained[0], 2)


def test_collect_groups_without_a_budget_collects_every_group():
    model = GRPO("MlpPolicy", "CartPole-v1", n_envs=4, group_size=2, n_groups=8, seed=0)
    _, callback = model._setup_learn(1, None)
    batch = model.collect_groups(model.env, callback)  # no max_timesteps: the whole update
    assert batch.group_ids.numel() == 16 and model.num_timesteps >= 1


def test_whole_updates_completes_the_update_that_reaches_the_budget():
    model = GRPO("MlpPolicy", "CartPole-v1", n_envs=4, group_size=2, n_groups=8, n_epochs=1, seed=0)
    model.whole_updates = True  # what torch.distributed runs do
    _, rounds, trained = recorded_learn(model, 1)
    assert rounds == [4] and trained[0].numel() == 16
