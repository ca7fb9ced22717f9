"""Presets, overrides, the run grid and the report (no training here; see test_cli_smoke for that)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from egsw_gym import EGSW
from egsw_gym.experiments.compare import plan_runs, run_dir_of
from egsw_gym.experiments.presets import (
    SUITES,
    NoAlgorithmBlockError,
    load_suite,
    make_run_spec,
    parse_overrides,
)
from egsw_gym.experiments.report import summary_table, write_report


def test_every_preset_builds_a_valid_run_spec():
    for suite in SUITES:
        for env_id, preset in load_suite(suite).items():
            for algo in ("ppo", "ppo-egsw", "grpo", "grpo-egsw"):
                if algo.split("-")[0] not in preset:
                    continue
                spec = make_run_spec(algo, env_id, seed=3)
                assert spec.n_timesteps > 0 and spec.n_envs >= 1 and spec.seed == 3
                assert (spec.egsw is not None) == algo.endswith("egsw")
                assert "n_envs" not in spec.algo_kwargs and "policy" not in spec.algo_kwargs


def test_overrides_are_parsed_as_yaml_and_merged():
    ov = parse_overrides(
        ["grpo.learning_rate=1e-3", "egsw.alpha=0.5", "n_timesteps=5000", "egsw.mode=trajectory"]
    )
    assert ov == {
        "grpo": {"learning_rate": 1e-3},
        "egsw": {"alpha": 0.5, "mode": "trajectory"},
        "n_timesteps": 5000,
    }
    spec = make_run_spec("grpo-egsw", "CartPole-v1", 0, ov)
    assert spec.algo_kwargs["learning_rate"] == 1e-3 and spec.n_timesteps == 5000
    preset = load_suite("classic")["CartPole-v1"]
    # env-level egsw < the grpo block's egsw < the user's overrides
    assert spec.egsw == EGSW(
        **{**preset["egsw"], **preset["grpo"]["egsw"], "alpha": 0.5, "mode": "trajectory"}
    )
    spec = make_run_spec("grpo-egsw", "CartPole-v1", 0, parse_overrides(["egsw.temperature=7"]))
    assert spec.egsw.temperature == 7.0
    # "lin_<x>" is a linear decay from x to 0
    spec = make_run_spec("grpo", "CartPole-v1", 0)
    assert spec.algo_kwargs["learning_rate"] == "lin_2e-3"  # plain data in config.json
    lr = spec.algorithm_kwargs()["learning_rate"]
    assert lr(1.0) == pytest.approx(2e-3) and lr(0.5) == pytest.approx(1e-3) and lr(0.0) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_overrides(["learning_rate"])
    with pytest.raises(ValueError, match="EGSW.temperature"):
        make_run_spec("ppo-egsw", "CartPole-v1", 0, {"egsw": {"temperature": 0}})


def test_bad_names_are_rejected_with_allowed_values():
    with pytest.raises(ValueError, match="unknown algorithm .sac.; valid: ppo, ppo-egsw"):
        make_run_spec("sac", "CartPole-v1", 0)
    with pytest.raises(ValueError, match="no preset for env"):
        make_run_spec("ppo", "NoSuchEnv-v0", 0)
    with pytest.raises(ValueError, match="suite must be one of"):
        load_suite("atari")


def test_plan_leaves_out_ppo_on_text_tasks_and_covers_the_grid():
    plan = plan_runs("llm", None, ["ppo", "grpo", "grpo-egsw"], [0, 1])
    assert {s.algo for s in plan} == {"grpo", "grpo-egsw"}
    assert len(plan) == len(load_suite("llm")) * 2 * 2
    plan = plan_runs(None, ["CartPole-v1"], ["ppo", "ppo-egsw"], [0, 1, 2])
    assert sorted((s.algo, s.seed) for s in plan) == sorted(
        (a, s) for a in ("ppo", "ppo-egsw") for s in range(3)
    )


def test_missing_algorithm_block_is_a_typed_error_the_plan_skips_but_other_errors_surface():
    with pytest.raises(NoAlgorithmBlockError, match="has no 'ppo' block"):
        make_run_spec("ppo", "egsw/Arithmetic-v0", 0)
    assert issubclass(NoAlgorithmBlockError, ValueError)
    # Any other bad input is not mistaken for a skippable combination, whatever its message says.
    with pytest.raises(ValueError, match="no preset for env") as info:
        plan_runs(None, ["NoSuchEnv-v0"], ["ppo"], [0])
    assert not isinstance(info.value, NoAlgorithmBlockError)


def _fake_run(out, algo, env_id, seed, finals):
    d = run_dir_of(out, algo, env_id, seed)
    d.mkdir(parents=True)
    with open(d / "curve.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["timesteps", "eval_mean", "eval_std", "wall_s"])
        for i, v in enumerate(finals):
            w.writerow([1000 * (i + 1), v, 0.0, i])
    (d / "result.json").write_text(
        json.dumps(dict(algo=algo, env_id=env_id, seed=seed, final_eval_mean=finals[-1]))
    )


def test_report_iqm_matches_reference_and_writes_files(tmp_path):
    finals = {"ppo": [10.0, 20.0, 30.0, 40.0], "ppo-egsw": [100.0, 100.0, 100.0, 100.0]}
    for algo, vals in finals.items():
        for seed, v in enumerate(vals):
            _fake_run(tmp_path, algo, "CartPole-v1", seed, [v / 2, v])
    table, plots = write_report(tmp_path)
    # IQM of 4 values = mean of the middle two (scipy trim_mean 25%): (20 + 30) / 2.
    row = next(line for line in table.splitlines() if "| ppo |" in line)
    assert "| 25 |" in row and "10, 20, 30, 40" in row
    assert "| 100 | [100, 100] |" in table
    assert (tmp_path / "summary.md").read_text().strip() == table
    assert plots and all(p.exists() and p.stat().st_size > 1000 for p in plots)
    with open(tmp_path / "curves.csv") as f:
        assert sum(1 for _ in f) == 1 + 8 * 2


def test_summary_table_ci_brackets_the_point_estimate(tmp_path):
    rng = np.random.default_rng(0)
    for seed, v in enumerate(rng.normal(50, 10, size=6)):
        _fake_run(tmp_path, "grpo", "Acrobot-v1", seed, [float(v)])
    from egsw_gym.experiments.report import collect_runs

    row = summary_table(collect_runs(tmp_path)).splitlines()[-1]
    cells = [c.strip() for c in row.split("|")[1:-1]]
    iqm = float(cells[3])
    lo, hi = (float(x) for x in cells[4].strip("[]").split(","))
    assert lo <= iqm <= hi
