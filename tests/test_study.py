"""The study: plan, shards, resume, merge, cross-domain statistics and the results layout.

Everything but the last test works on synthetic run directories (no training).
"""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from egsw_gym.experiments import study
from egsw_gym.experiments.aggregate import (
    REFERENCE_SCORES,
    aggregate_scores,
    collect_study,
    improvement_probabilities,
    normalize,
)
from egsw_gym.experiments.study import StudyRun, merge_runs, plan_study, run_study, shard
from egsw_gym.experiments.study_report import paired_differences, sensitivity_tables, write_study_report

# ----------------------------------------------------------------------------------------- plan


def test_default_plan_covers_the_issue_grid():
    plan = plan_study()
    keys = [r.key for r in plan]
    assert len(keys) == len(set(keys)) and keys == sorted(keys)
    cells: dict[tuple[str, str], set[int]] = {}
    for r in plan:
        cells.setdefault((r.spec.env_id, r.variant), set()).add(r.spec.seed)
    assert all(seeds == set(range(5)) for seeds in cells.values())
    by_domain: dict[str, set[str]] = {}
    for (env_id, variant), _ in cells.items():
        by_domain.setdefault(study.domain_of(env_id), set()).add(variant)
    assert by_domain["control"] == {"ppo", "ppo-egsw", "ppo-egsw-alt", "grpo", "grpo-egsw", "grpo-egsw-alt"}
    # PPO runs one MuJoCo env, where step mode has sets of size 1: no "alt" row there.
    assert by_domain["mujoco"] == {"ppo", "ppo-egsw", "grpo", "grpo-egsw", "grpo-egsw-alt"}
    assert by_domain["llm"] == {"grpo", "grpo-egsw", "grpo-egsw-alt"}
    assert {e for e, _ in cells} == {e for envs in study.DOMAINS.values() for e in envs}
    assert len(plan) == 5 * (3 * 6 + 2 * 5 + 2 * 3)
    for r in plan:
        assert (r.spec.n_timesteps, r.spec.eval_freq) == study.BUDGETS[r.spec.env_id]
        if r.variant.endswith("-alt"):
            main = next(p for p in plan if p.key == r.key.replace("-alt/", "/"))
            assert {r.spec.egsw.mode, main.spec.egsw.mode} == {"step", "trajectory"}
            assert replace(r.spec.egsw, mode=main.spec.egsw.mode) == main.spec.egsw
    # --full: 1M MuJoCo steps, the presets' budgets elsewhere
    full = {r.spec.env_id: r.spec.n_timesteps for r in plan_study(full=True, seeds=[0])}
    assert full["Hopper-v5"] == full["Walker2d-v5"] == 1_000_000 and full["CartPole-v1"] == 100_000


def test_sensitivity_plan_is_the_alpha_temperature_grid_plus_modes():
    plan = plan_study("sensitivity")
    for env_id in study.SENSITIVITY_ENVS:
        rs = [r for r in plan if r.spec.env_id == env_id and r.spec.seed == 0]
        grid = {
            (r.spec.egsw.alpha, r.spec.egsw.temperature)
            for r in rs
            if "-a" in r.variant and r.spec.egsw and r.spec.egsw.mode == rs[1].spec.egsw.mode
        }
        assert grid >= {(a, t) for a in study.SENSITIVITY_ALPHAS for t in study.SENSITIVITY_TEMPERATURES}
        assert {r.spec.egsw.mode for r in rs if r.spec.egsw} == {"step", "trajectory"}
        # the plain GRPO reference and the SR-GRPO baseline
        plain = {r.variant: r.spec.algo_kwargs.get("advantage", "outcome") for r in rs if r.spec.egsw is None}
        assert plain == {"grpo": "outcome", "grpo-sr": "sr_grpo"}
        # The paper's weights summing to 1 per set: one row, at the preset's alpha, P and mode.
        sum1 = [r for r in rs if r.spec.egsw and r.spec.egsw.weight_sum == "one"]
        preset = study.make_run_spec("grpo-egsw", env_id, 0).egsw
        assert [r.variant for r in sum1] == [f"grpo-egsw-sum1-a{preset.alpha:g}-P{preset.temperature:g}"]
        assert replace(sum1[0].spec.egsw, weight_sum="set_size") == preset
        assert all(r.spec.egsw.weight_sum == "set_size" for r in rs if r.spec.egsw and r not in sum1)
    assert {r.spec.seed for r in plan} == {0, 1, 2}


def test_plan_filters_and_overrides_and_rejects_unknown_names():
    plan = plan_study(
        envs=["CartPole-v1"],
        variants=["ppo", "grpo-egsw-alt"],
        seeds=[3],
        overrides={"n_timesteps": 777, "egsw": {"mode": "step"}},
    )
    assert [r.key for r in plan] == ["CartPole-v1/grpo-egsw-alt/seed3", "CartPole-v1/ppo/seed3"]
    assert all(r.spec.n_timesteps == 777 for r in plan)
    # the variant's own mode wins over a global --set egsw.mode
    assert plan[0].spec.egsw.mode == "step"
    with pytest.raises(ValueError, match="not in the 'default' suite"):
        plan_study(envs=["Ant-v5"])
    with pytest.raises(ValueError, match="variants"):
        plan_study(variants=["sac"])
    with pytest.raises(ValueError, match="suite must be one of"):
        plan_study("atari")


@pytest.mark.parametrize("n", [1, 2, 3, 7])
def test_shards_partition_the_plan_exactly_and_deterministically(n):
    plan = plan_study()
    parts = [shard(plan, i, n) for i in range(1, n + 1)]
    keys = [r.key for p in parts for r in p]
    assert sorted(keys) == sorted(r.key for r in plan) and len(keys) == len(set(keys))
    assert [r.key for r in shard(plan_study(), 1, n)] == [r.key for r in parts[0]]
    loads = [sum(r.est_s for r in p) for p in parts]
    assert max(loads) - min(loads) <= max(r.est_s for r in plan)  # longest-first greedy
    with pytest.raises(ValueError, match="i/n"):
        study.parse_shard("3/2")
    assert study.parse_shard("2/4") == (2, 4)


def test_estimated_wall_time_scales_with_workers():
    plan = plan_study()
    one, two, many = (study.estimate_wall_s(plan, w) for w in (1, 2, 1000))
    assert one == pytest.approx(sum(r.est_s for r in plan))
    assert one / 2 <= two <= one / 2 + max(r.est_s for r in plan)
    assert many == pytest.approx(max(r.est_s for r in plan))


# ------------------------------------------------------------------------------- fake run dirs


def _fake(out: Path, run: StudyRun, curve: list[float], progress: list[float] | None = None) -> Path:
    """A finished run directory of ``run`` whose evaluation curve is ``curve`` (raw scores)."""
    d = out / run.key
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps(run.spec.to_dict(), default=float))
    steps = np.linspace(0, run.spec.n_timesteps, len(curve)).astype(int)
    with open(d / "curve.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["timesteps", "eval_mean", "eval_std", "wall_s"])
        w.writerows([int(t), v, 0.0, 0.0] for t, v in zip(steps, curve, strict=True))
    if progress is not None:
        (d / "logs").mkdir()
        with open(d / "logs" / "progress.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["time/iterations", "train/group_return_mean"])
            w.writerows([k + 1, v] for k, v in enumerate(progress))
    (d / "result.json").write_text(
        json.dumps(
            dict(algo=run.spec.algo, env_id=run.spec.env_id, seed=run.spec.seed, final_eval_mean=curve[-1])
        )
    )
    return d


def _raw(env_id: str, normalized: float) -> float:
    lo, hi = REFERENCE_SCORES[env_id]
    return lo + normalized * (hi - lo)


def _one(plan: list[StudyRun], env_id: str, variant: str, seed: int) -> StudyRun:
    return next(r for r in plan if r.spec.env_id == env_id and r.variant == variant and r.spec.seed == seed)


# ------------------------------------------------------------------------------ resume, merge


def test_run_study_skips_finished_runs_and_refuses_changed_configs(tmp_path, monkeypatch):
    plan = plan_study(envs=["CartPole-v1"], variants=["ppo", "grpo"], seeds=[0, 1])
    _fake(tmp_path, plan[0], [10.0, 20.0])
    submitted = []
    monkeypatch.setattr(study, "run_parallel", lambda work, **kw: submitted.extend(work))
    counts = run_study(plan, tmp_path, workers=2, progress=False)
    assert counts == {"planned": 4, "skipped": 1, "trained": 3}
    assert sorted(Path(d).relative_to(tmp_path).as_posix() for _, d in submitted) == sorted(
        r.key for r in plan[1:]
    )
    # longest first
    ests = [next(r for r in plan if str(tmp_path / r.key) == d).est_s for _, d in submitted]
    assert ests == sorted(ests, reverse=True)
    changed = plan_study(
        envs=["CartPole-v1"], variants=["ppo", "grpo"], seeds=[0, 1], overrides={"n_timesteps": 5}
    )
    with pytest.raises(ValueError, match="another config"):
        run_study(changed, tmp_path, progress=False)


def test_merge_copies_finished_runs_and_rejects_conflicts(tmp_path):
    plan = plan_study(envs=["CartPole-v1"], variants=["ppo"], seeds=[0, 1, 2])
    a, b, dest = tmp_path / "a", tmp_path / "b", tmp_path / "merged"
    _fake(a, plan[0], [1.0, 2.0])
    _fake(b, plan[1], [3.0, 4.0])
    _fake(b, plan[0], [1.0, 2.5])  # the same run finished on both machines: first copy kept
    (b / plan[2].key).mkdir(parents=True)
    (b / plan[2].key / "config.json").write_text("{}")  # unfinished: left out
    counts = merge_runs([a, b], dest)
    assert counts == {"copied": 2, "duplicate": 1, "unfinished": 1}
    assert json.loads((dest / plan[0].key / "result.json").read_text())["final_eval_mean"] == 2.0
    assert len(collect_study([dest])) == 2
    other = replace(plan[0], spec=replace(plan[0].spec, n_timesteps=5))
    _fake(tmp_path / "c", other, [1.0])
    with pytest.raises(ValueError, match="different configs"):
        merge_runs([tmp_path / "c"], dest)
    with pytest.raises(FileNotFoundError):
        merge_runs([tmp_path / "missing"], dest)


# ------------------------------------------------------------------------------- statistics


def test_normalize_uses_the_anchors():
    assert normalize("CartPole-v1", 500.0) == pytest.approx(1.0)
    assert normalize("Acrobot-v1", REFERENCE_SCORES["Acrobot-v1"][0]) == pytest.approx(0.0)
    assert normalize("egsw/Arithmetic-v0", 0.37) == pytest.approx(0.37)
    with pytest.raises(ValueError, match="REFERENCE_SCORES"):
        normalize("NoSuchEnv-v0", 1.0)


def _two_domain_study(out: Path) -> None:
    """ppo: control 0.1-0.4 / mujoco 0.5-0.8 (normalised); ppo-egsw clearly above on control,
    identical to ppo on mujoco."""
    plan = plan_study(envs=["CartPole-v1", "Hopper-v5"], variants=["ppo", "ppo-egsw"], seeds=[0, 1, 2, 3])
    values = {
        ("CartPole-v1", "ppo"): [0.1, 0.2, 0.3, 0.4],
        ("Hopper-v5", "ppo"): [0.5, 0.6, 0.7, 0.8],
        ("CartPole-v1", "ppo-egsw"): [0.9, 0.95, 1.0, 0.85],
        ("Hopper-v5", "ppo-egsw"): [0.5, 0.6, 0.7, 0.8],
    }
    for (env_id, variant), vals in values.items():
        for seed, v in enumerate(vals):
            _fake(
                out,
                _one(plan, env_id, variant, seed),
                [_raw(env_id, 0.0), _raw(env_id, v / 2), _raw(env_id, v)],
            )


def test_iqm_optimality_gap_and_improvement_match_hand_computed_values(tmp_path):
    _two_domain_study(tmp_path)
    runs = collect_study([tmp_path])
    agg = {(r["domain"], r["label"]): r for r in aggregate_scores(runs, reps=300)}
    # IQM of 4 runs = mean of the middle two; over 8 (2 envs x 4 seeds): mean of the middle four.
    assert agg["control", "ppo"]["iqm"] == pytest.approx(0.25)
    assert agg["mujoco", "ppo"]["iqm"] == pytest.approx(0.65)
    assert agg["overall", "ppo"]["iqm"] == pytest.approx(np.mean([0.3, 0.4, 0.5, 0.6]))
    assert agg["overall", "ppo"]["n_envs"] == 2 and agg["overall", "ppo"]["n_seeds"] == 4
    # optimality gap: mean of max(1 - x, 0)
    assert agg["control", "ppo"]["og"] == pytest.approx(0.75)
    assert agg["control", "ppo-egsw"]["og"] == pytest.approx(np.mean([0.1, 0.05, 0.0, 0.15]))
    for r in agg.values():
        assert r["iqm_lo"] <= r["iqm"] + 1e-12 and r["iqm"] <= r["iqm_hi"] + 1e-12
    poi = {(r["domain"], r["x"], r["y"]): r for r in improvement_probabilities(runs, reps=300)}
    sep, same = poi["control", "ppo-egsw", "ppo"], poi["mujoco", "ppo-egsw", "ppo"]
    assert sep["poi"] == pytest.approx(1.0) and sep["lo"] == pytest.approx(1.0)
    assert same["poi"] == pytest.approx(0.5)  # identical samples: ties count half
    assert poi["overall", "ppo-egsw", "ppo"]["poi"] == pytest.approx(0.75)  # average over the 2 envs


def test_mode_rows_pool_variants_by_their_egsw_mode(tmp_path):
    plan = plan_study(
        envs=["CartPole-v1", "Acrobot-v1"], variants=["grpo", "grpo-egsw", "grpo-egsw-alt"], seeds=[0, 1]
    )
    for r in plan:
        _fake(tmp_path, r, [_raw(r.spec.env_id, 0.5 if r.spec.egsw and r.spec.egsw.mode == "step" else 0.2)])
    agg = {r["label"]: r for r in aggregate_scores(collect_study([tmp_path]), reps=100)}
    # CartPole's preset GRPO mode is trajectory, Acrobot's step: the mode rows pool across variants.
    assert agg["grpo-egsw[step]"]["n_envs"] == 2 and agg["grpo-egsw[step]"]["iqm"] == pytest.approx(0.5)
    assert agg["grpo-egsw[trajectory]"]["iqm"] == pytest.approx(0.2)
    assert agg["grpo-egsw"]["iqm"] == pytest.approx(0.35)


def test_report_writes_the_results_layout(tmp_path):
    out, results = tmp_path / "runs", tmp_path / "results"
    _two_domain_study(out)
    plan = plan_study(envs=["egsw/Arithmetic-v0"], variants=["grpo", "grpo-egsw"], seeds=[0, 1])
    for r in plan:
        _fake(out, r, [0.2, 0.4, 0.6], progress=[0.1, 0.3, 0.5, 0.6])
    written = write_study_report([out], results, reps=100)
    names = {p.name for p in written}
    assert {
        "summary.md",
        "curves.csv",
        "domains.png",
        "performance_profiles.png",
        "sample_efficiency.png",
        "training_reward.png",
        "training_reward.csv",
        "curves_Hopper-v5.png",
    } <= names
    assert all(p.exists() and p.stat().st_size > 0 for p in written)
    assert all(p.stat().st_size > 5000 for p in written if p.suffix == ".png")
    summary = (results / "summary.md").read_text()
    assert "| control | ppo | 1 | 4 | 0.250 [0.100, 0.400] |" in summary
    assert "| overall |" not in summary  # no row ran in all three domains (PPO has no LM runs)
    # Same finals for both rows on every seed: a zero paired difference, no seed above.
    assert "| egsw/Arithmetic-v0 | grpo-egsw | grpo | 2 | +0.000 [+0.000, +0.000] | - | 1.000 | 1.000 |" in summary
    assert "| 0-2-0 |" in summary
    with open(results / "curves.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == (16 + 4) * 3
    assert {
        float(r["normalized"]) for r in rows if r["env_id"] == "CartPole-v1" and r["fraction"] == "1.0"
    } >= {0.1, 0.4, 0.9}
    with open(results / "training_reward.csv") as f:
        assert sum(1 for _ in f) == 1 + 2 * 2 * 4


def test_paired_differences_match_runs_by_seed():
    base = [{"seed": s, "final_normalized": v} for s, v in ((0, 0.5), (1, 0.2), (2, 0.9))]
    runs = [{"seed": s, "final_normalized": v} for s, v in ((2, 0.8), (0, 0.75), (7, 1.0))]  # seed 7: no pair
    assert paired_differences(runs, base) == pytest.approx([-0.1, 0.25])


def test_sensitivity_tables_and_heatmaps(tmp_path):
    plan = [
        r
        for r in plan_study("sensitivity", envs=["CartPole-v1"], seeds=[0, 1])
        if r.variant == "grpo" or r.variant.startswith("grpo-egsw-a")
    ]
    for r in plan:
        e = r.spec.egsw
        v = 0.0 if e is None else e.alpha + e.temperature / 10 + 0.01 * r.spec.seed
        _fake(tmp_path / "runs", r, [_raw("CartPole-v1", v), _raw("CartPole-v1", v)])
    runs = collect_study([tmp_path / "runs"])
    s = sensitivity_tables(runs)["CartPole-v1"]
    assert s["alphas"] == list(study.SENSITIVITY_ALPHAS)
    assert s["temperatures"] == list(study.SENSITIVITY_TEMPERATURES)
    i, j = s["alphas"].index(0.3), s["temperatures"].index(2.0)
    assert s["final"][i, j] == pytest.approx(0.3 + 0.2 + 0.005)
    assert s["auc"][i, j] == pytest.approx(0.3 + 0.2 + 0.005)  # flat curve: AUC = its value
    assert s["reference"] == {"final": pytest.approx(0.0), "auc": pytest.approx(0.0)}  # plain GRPO's 0
    # Paired with plain GRPO's run of the same seed: (0.5 + 0.01 s) - 0 for seeds 0 and 1.
    row = next(line for line in s["table"].splitlines() if line.startswith("| grpo-egsw-a0.3-P2 |"))
    assert row.endswith("| +0.505; 2-0-0 |")
    written = write_study_report([tmp_path / "runs"], tmp_path / "results", reps=50)
    assert (tmp_path / "results" / "sensitivity_CartPole-v1.png") in written
    assert "grpo-egsw-a0.3-P2" in (tmp_path / "results" / "sensitivity.md").read_text()


# --------------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_micro_study_end_to_end(tmp_path, capsys):
    from egsw_gym.cli import main

    args = (
        "study --envs CartPole-v1,Hopper-v5 --variants ppo,ppo-egsw --seeds 2 --workers 2 --reps 100".split()
    )
    args += ["--set", "n_timesteps=512", "--set", "eval_freq=256", "--set", "eval_episodes=2"]
    args += ["--out", str(tmp_path / "runs"), "--results", str(tmp_path / "results")]
    assert main(args) == 0
    assert "8 runs trained, 0 already finished" in capsys.readouterr().out
    for name in (
        "summary.md",
        "curves.csv",
        "domains.png",
        "performance_profiles.png",
        "sample_efficiency.png",
    ):
        assert (tmp_path / "results" / name).exists()
    assert main([*args[:-2], "--no-report"]) == 0  # resumed: nothing left to train
    assert "0 runs trained, 8 already finished" in capsys.readouterr().out


def test_cli_dry_run_lists_the_shard_and_estimates_time(capsys):
    from egsw_gym.cli import main

    assert main(["study", "--dry-run", "--shard", "2/3", "--workers", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    listed = [line.split()[0] for line in out[:-1]]
    assert listed == [r.key for r in shard(plan_study(), 2, 3)]
    assert out[-1].startswith(f"{len(listed)} runs, ~") and "h wall on 2 workers" in out[-1]
    with pytest.raises(SystemExit) as exc:
        main(["study", "--dry-run", "--shard", "0/3"])
    assert exc.value.code == 2 and "--shard i/n needs 1 <= i <= n" in capsys.readouterr().err
