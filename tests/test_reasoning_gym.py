"""egsw/ReasoningGym-v0: reasoning-gym datasets as token-level environments, with bounded scoring."""

from __future__ import annotations

import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import egsw_gym  # noqa: F401  (registers the ids)
from egsw_gym.envs.tasks import ReasoningGymTask, make_task
from egsw_gym.envs.tasks.bounded import BoundedScorer, call_with_time_limit
from egsw_gym.envs.tasks.formats import extract_answer, wrap_answer
from egsw_gym.envs.text_generation import TextGenerationEnv

pytest.importorskip("reasoning_gym")

ENV_ID = "egsw/ReasoningGym-v0"


def _play(env, text: str):
    u = env.unwrapped
    out = None
    for tok in list(u.tokenizer.encode(text)) + [u.eos_token_id]:
        out = env.step(tok)
        if out[2] or out[3]:
            return out
    return out


@pytest.mark.parametrize("dataset", ["gsm_symbolic", "chain_sum", "leg_counting", "basic_arithmetic"])
def test_env_checkers_and_reference_scores_one(dataset):
    env = gym.make(ENV_ID, dataset=dataset, size=200, seed=3, num_test=40)
    gym_check_env(env.unwrapped, skip_render_check=True)
    sb3_check_env(env.unwrapped)
    for seed in range(3):
        _, info = env.reset(seed=seed)
        ref = env.unwrapped.task.reference_completion(env.unwrapped.problem)
        _, reward, terminated, _, final = _play(env, ref)
        assert terminated and reward == 1.0 and final["correct"] and final["answer"] == info["answer"]
        env.reset(seed=seed)
        _, reward, *_, final = _play(env, "no idea")
        assert reward == 0.0 and not final["correct"]
        assert final["scorer_errors_total"] == 0 and final["scorer_timeouts_total"] == 0


def test_splits_never_overlap_and_are_deterministic():
    # A tiny question space (two one-digit terms) forces train items to collide with test ones.
    kw = dict(
        dataset="chain_sum",
        size=3000,
        seed=1,
        num_test=60,
        config={"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1},
    )
    task, again = make_task("reasoning_gym", **kw), ReasoningGymTask(**kw)
    test = [task.problem(i, "test").prompt for i in range(task.num_problems("test"))]
    assert len(set(test)) == len(test) == task.num_problems("test") > 20
    train = [task.problem(i, "train") for i in range(task.num_problems("train"))]
    assert not {p.prompt for p in train} & set(test)
    assert sum(p.metadata["attempt"] > 0 for p in train) > 0  # resampling happened and was needed
    assert [p.prompt for p in train[:500]] == [again.problem(i).prompt for i in range(500)]
    env = TextGenerationEnv(task, split="test")
    for s in range(20):
        _, info = env.reset(seed=s)
        assert info["prompt"] in set(test) and info["split"] == "test"


def test_answer_formats_and_format_reward():
    task = ReasoningGymTask(
        "basic_arithmetic", size=50, seed=0, num_test=10, answer_format="r1", format_weight=0.2
    )
    p = task.problem(0, "test")
    assert "<think>" in task.system_prompt
    assert task.score(wrap_answer(p.answer, "r1", "easy"), p).score == 1.0
    r = task.score(f"thinking...<answer>{p.answer}</answer>", p)  # right answer, malformed
    assert r.correct and not r.format_ok and r.score == pytest.approx(0.8)
    r = task.score("<think>x</think><answer>nonsense</answer>", p)
    assert r.format_ok and not r.correct and r.score == pytest.approx(0.2)
    boxed = ReasoningGymTask("basic_arithmetic", size=50, seed=0, num_test=10, answer_format="boxed")
    assert boxed.score(f"so \\boxed{{{p.answer}}}", p).score == 1.0
    assert boxed.score(p.answer, p).score == 0.0  # no box, no answer
    assert extract_answer("<think>a</think> <answer> 7 </answer>", "r1") == ("7", True)
    assert extract_answer("<think>a</think><answer>7</answer><answer>8</answer>", "r1") == ("8", False)
    assert extract_answer("<answer>7", "r1") == (None, False)


def _slow_scorer(answer, entry):
    x = 0
    while True:  # a pure-Python stall
        x += 1


def _broken_scorer(answer, entry):
    raise KeyError("metadata")


def _swallowing_scorer(answer, entry):
    try:
        _slow_scorer(answer, entry)
    except Exception:  # a scorer that swallows everything must still be interrupted
        return 1.0


@pytest.mark.timeout(300)
def test_scorer_errors_and_timeouts_score_zero_and_are_counted(monkeypatch):
    task = ReasoningGymTask("chain_sum", size=50, seed=0, num_test=10, score_time_limit=0.05)
    p = task.problem(0, "test")
    data = task._dataset(0)
    monkeypatch.setattr(data, "score_answer", _broken_scorer)
    r = task.score(p.answer, p)
    assert (
        r.score == 0.0
        and "KeyError" in r.breakdown["scorer_error"]
        and r.breakdown["scorer_errors_total"] == 1
    )
    for fn in (_slow_scorer, _swallowing_scorer):
        monkeypatch.setattr(data, "score_answer", fn)
        r = task.score(p.answer, p)  # the scorer's own timer cuts it (pytest-timeout only guards a hang)
        assert r.score == 0.0 and r.breakdown["scorer_timeout"]
    assert task.scorer_stats["timeouts"] == 2 and task.scorer_stats["errors"] == 1
    env = TextGenerationEnv(task, split="test")
    env.reset(options={"prompt_index": 0})
    _, reward, terminated, _, info = _play(env, p.answer)
    assert terminated and reward == 0.0 and info["scorer_timeouts_total"] == 3
    # too long answers never reach the scorer
    monkeypatch.setattr(data, "score_answer", _broken_scorer)
    r = task.score("9" * 5000, p)
    assert r.score == 0.0 and task.scorer_stats["errors"] == 1 and "max_answer_chars" in r.breakdown["reason"]


def test_time_limit_restores_outer_timer():
    import signal

    signal.setitimer(signal.ITIMER_REAL, 30.0)
    try:
        value, timed = call_with_time_limit(sum, [1, 2], seconds=0.5)
        assert (value, timed) == (3, True)
        assert 25.0 < signal.getitimer(signal.ITIMER_REAL)[0] <= 30.0
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    with pytest.raises(ValueError, match="score_time_limit"):
        BoundedScorer("x", float("inf"))


@pytest.mark.parametrize(
    "kwargs, arg",
    [
        ({"dataset": "no_such_dataset"}, "dataset"),
        ({"dataset": "chain_sum", "size": 0}, "size"),
        ({"dataset": "chain_sum", "answer_format": "xml"}, "answer_format"),
        ({"dataset": "chain_sum", "config": {"min_terms": 5, "max_terms": 2}}, "config"),
        ({"dataset": "chain_sum", "score_time_limit": 0}, "score_time_limit"),
    ],
)
def test_bad_arguments(kwargs, arg):
    with pytest.raises(ValueError, match=arg):
        gym.make(ENV_ID, **kwargs)


def test_lazy_import_and_install_hint():
    code = (
        "import sys; sys.modules['reasoning_gym'] = None\n"
        "import egsw_gym, gymnasium as gym\n"
        "try:\n    gym.make('egsw/ReasoningGym-v0', dataset='chain_sum')\n"
        "except ImportError as e:\n    print('HINT', e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "HINT" in out.stdout and "pip install 'egsw-gym[tasks]'" in out.stdout, out.stderr[-2000:]


def test_vector_env_reports_scorer_counts():
    envs = gym.make_vec(
        ENV_ID, 3, vectorization_mode="vector_entry_point", dataset="chain_sum", size=100, seed=0, num_test=10
    )
    envs.reset(seed=0)
    u = envs.unwrapped
    _, rewards, term, _, info = envs.step(np.full(3, u.eos_token_id))
    assert term.all() and (rewards == 0).all()
    assert info["final_info"]["scorer_errors_total"].tolist() == [0, 0, 0]


@pytest.mark.slow
@pytest.mark.parametrize("dataset", ["gsm_symbolic", "chain_sum", "leg_counting"])
def test_cli_trains_and_evaluates_on_reasoning_gym_datasets(tmp_path, capsys, dataset):
    import json

    from egsw_gym.cli import main

    args = ["train", "--algo", "grpo-egsw", "--env", ENV_ID, "--out", str(tmp_path)]
    for o in (
        f"env_kwargs.dataset={dataset}",
        "n_timesteps=1024",
        "eval_freq=1000000",
        "eval_episodes=4",
        "warm_start_steps=2",
        "grpo.n_envs=16",
        "grpo.n_groups=2",
    ):
        args += ["--set", o]
    assert main(args) == 0
    run_dir = tmp_path / "egsw_ReasoningGym-v0" / "grpo-egsw" / "seed0"
    result = json.loads((run_dir / "result.json").read_text())
    assert result["timesteps"] >= 1024 and 0.0 <= result["final_eval_mean"] <= 1.0
    assert json.loads((run_dir / "config.json").read_text())["env_kwargs"]["dataset"] == dataset
    capsys.readouterr()
    assert main(["evaluate", str(run_dir)]) == 0
    assert json.loads(capsys.readouterr().out)["eval_mean"] == pytest.approx(result["final_eval_mean"])
