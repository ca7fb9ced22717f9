"""Issue 25: environment sizes a user (or a preset) may ask for are bounded by name or cheap.

``egsw/ReasoningGym-v0`` with ``num_test=2**20``, a JSONL file of a million lines and
``gym.make_vec(..., 100_000)`` each end in a ``ValueError`` that names the bound and how to raise
it, with resident memory growing by less than 200 MB; legitimate sizes at the bounds build. Time
is never asserted (``pytest.mark.timeout`` only guards against a hang); ``pytest -s`` prints each
case's time and growth.
"""

from __future__ import annotations

import gymnasium as gym
import pytest
from memory_bound import MB, RSS_BOUND, RssGrowth

import egsw_gym  # noqa: F401 - registers the environments
from egsw_gym.envs.tasks import JSONLTask
from egsw_gym.envs.vector import TextGenerationVectorEnv

pytestmark = pytest.mark.timeout(300)  # a hang guard, not a performance assertion
REPORT: list[str] = []


@pytest.fixture(scope="module", autouse=True)
def report():
    yield
    print("\n" + "\n".join(REPORT))


def refused(case: str, build, match: str) -> None:
    with RssGrowth() as rss:
        with pytest.raises(ValueError, match=match) as info:
            build()
    REPORT.append(f"{case}: {rss.seconds:.2f} s, RSS +{rss.growth / MB:.1f} MB: {str(info.value)[:150]}")
    assert rss.growth < RSS_BOUND, f"{case}: RSS grew {rss.growth / MB:.0f} MB"


def test_make_vec_of_100_000_slots_is_refused_naming_the_bound():
    refused(
        "make_vec(100_000)",
        lambda: gym.make_vec("egsw/Arithmetic-v0", 100_000, vectorization_mode="vector_entry_point"),
        r"num_envs=100000 is more than max_num_envs=16384 .* TextGenerationVectorEnv\.max_num_envs",
    )


def test_make_vec_at_the_bound_builds_without_per_slot_work():
    n = TextGenerationVectorEnv.max_num_envs
    with RssGrowth() as rss:
        env = gym.make_vec("egsw/Arithmetic-v0", n, vectorization_mode="vector_entry_point")
    REPORT.append(f"make_vec({n}): {rss.seconds:.2f} s, RSS +{rss.growth / MB:.1f} MB")
    assert env.num_envs == n and env.observation_space["input_ids"].shape[0] == n
    assert rss.growth < RSS_BOUND
    env.close()


def test_unseeded_slots_draw_their_own_problems():
    """Slots get their generators lazily: unseeded slots still draw independently."""
    env = TextGenerationVectorEnv(64, "arithmetic")
    env.reset()
    assert len({p.prompt for p in env.problems}) > 1


def test_a_million_line_jsonl_file_is_refused_before_parsing(tmp_path):
    path = tmp_path / "big.jsonl"
    line = b'{"prompt": "What is 1+1?", "answer": "2"}\n'
    with open(path, "wb") as fh:
        for _ in range(10):
            fh.write(line * 100_000)
    refused("JSONL of 1e6 lines", lambda: JSONLTask(path), r"more than max_problems=100000 lines")
    refused(
        "JSONL env of 1e6 lines",
        lambda: gym.make("egsw/JSONL-v0", data_path=str(path)),
        "max_problems",
    )


def test_max_problems_admits_a_file_at_the_bound(tmp_path):
    path = tmp_path / "small.jsonl"
    path.write_text("".join(f'{{"prompt": "p{i}", "answer": "{i}"}}\n' for i in range(50)))
    assert JSONLTask(path, max_problems=50, test_fraction=0.0).num_problems() == 50
    with pytest.raises(ValueError, match="max_problems=49"):
        JSONLTask(path, max_problems=49)
    with pytest.raises(ValueError, match="max_problems must be an integer"):
        JSONLTask(path, max_problems=0)


def test_reasoning_gym_num_test_2_20_is_refused_naming_the_bound():
    pytest.importorskip("reasoning_gym")
    refused(
        "ReasoningGym num_test=2**20",
        lambda: gym.make("egsw/ReasoningGym-v0", dataset="chain_sum", num_test=2**20),
        r"num_test=1048576 is more than max_num_test=32768: .* ReasoningGymTask\.max_num_test",
    )


@pytest.mark.parametrize("limit", [1e12, 1e8, 601, 1e-4])
def test_reasoning_gym_score_time_limit_out_of_range_is_refused(limit):
    pytest.importorskip("reasoning_gym")
    refused(
        f"ReasoningGym score_time_limit={limit:g}",
        lambda: gym.make("egsw/ReasoningGym-v0", dataset="chain_sum", num_test=10, score_time_limit=limit),
        r"score_time_limit must be a number of seconds in \[0.001, 600\]",
    )
