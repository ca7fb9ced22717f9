"""Reproducible evidence: run records, the saved warm start, the controls and the paired statistics."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

from egsw_gym.algorithms.grpo.core import grpo_loss, high_entropy_mask
from egsw_gym.egsw import EGSW, egsw_weights
from egsw_gym.experiments import study
from egsw_gym.experiments.controls import CONTROL_COMPARISONS, matched_positive_weight, scale_rate
from egsw_gym.experiments.paired_stats import holm, paired_comparison
from egsw_gym.experiments.presets import make_run_spec
from egsw_gym.experiments.provenance import code_version_key, cpu_info, machine_key, machines
from egsw_gym.experiments.runner import make_model, train_run
from egsw_gym.experiments.study_report import MixedVersionsError, write_study_report
from egsw_gym.llm.warm_start_artifact import weights_sha256

# A language-model run small enough for a test: a 5-step warm start, 2 updates, 16 eval problems.
TINY_LM = {
    "n_timesteps": 1500,
    "eval_freq": 1000,
    "eval_episodes": 16,
    "warm_start_steps": 5,
    "warm_start_kwargs": {"lr": 0.0015, "batch_size": 8},
    "grpo": {"n_envs": 16, "n_groups": 2, "group_size": 8},
}
#: fields of a result file that legitimately differ between two runs of one spec: wall-clock
#: times, and the hash of uncommitted changes (other work may edit the tree between the runs)
VOLATILE = [
    ("wall_s",),
    ("warm_start", "seconds"),
    ("provenance", "code", "dirty"),
    ("provenance", "code", "diff_sha256"),
]


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _strip(result: dict, paths=VOLATILE) -> dict:
    result = json.loads(json.dumps(result))
    for path in paths:
        node = result
        for key in path[:-1]:
            node = node.get(key, {})
        node.pop(path[-1], None)
    return result


def _csv_without(path: Path, drop: set[str]) -> list[dict]:
    with open(path, newline="") as f:
        return [{k: v for k, v in row.items() if k not in drop} for row in csv.DictReader(f)]


def test_lm_arms_start_from_byte_identical_warm_start(tmp_path):
    cache = tmp_path / "warm_starts"
    arms = [
        make_model(make_run_spec(a, "egsw/Arithmetic-v0", 3, TINY_LM), warm_start_dir=cache)
        for a in ("grpo", "grpo-egsw")
    ]
    (key,) = {m.warm_start_result["key"] for m in arms}
    assert sorted(p.name for p in cache.glob("*.safetensors")) == [f"{key}.safetensors"]  # trained once
    a, b = (m.policy.model.state_dict() for m in arms)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert weights_sha256(arms[0].policy.model) == weights_sha256(arms[1].policy.model)
    assert arms[0].warm_start_result == arms[1].warm_start_result
    # Trained in-process (no cache) gives the same bytes on this machine, and the RNG after it is the same.
    plain = make_model(make_run_spec("grpo", "egsw/Arithmetic-v0", 3, TINY_LM))
    assert weights_sha256(plain.policy.model) == arms[0].warm_start_result["weights_sha256"]
    # Another seed is another artifact with other weights.
    other = make_model(make_run_spec("grpo", "egsw/Arithmetic-v0", 4, TINY_LM), warm_start_dir=cache)
    assert other.warm_start_result["key"] != key
    assert other.warm_start_result["weights_sha256"] != arms[0].warm_start_result["weights_sha256"]


def test_warm_start_file_of_another_config_is_refused(tmp_path):
    cache = tmp_path / "ws"
    spec = make_run_spec("grpo", "egsw/Arithmetic-v0", 0, TINY_LM)
    key = make_model(spec, warm_start_dir=cache).warm_start_result["key"]
    other = make_run_spec("grpo", "egsw/Arithmetic-v0", 1, TINY_LM)
    other_key = make_model(other, warm_start_dir=cache).warm_start_result["key"]
    (cache / f"{other_key}.safetensors").replace(cache / f"{key}.safetensors")
    with pytest.raises(ValueError, match="another config"):
        make_model(spec, warm_start_dir=cache)


def test_same_spec_same_machine_gives_identical_result_files(tmp_path):
    spec = make_run_spec("grpo-egsw", "egsw/Arithmetic-v0", 0, TINY_LM)
    runs = [train_run(spec, tmp_path / f"run{i}", warm_start_dir=tmp_path / f"ws{i}") for i in (0, 1)]
    files = [json.loads((tmp_path / f"run{i}" / "result.json").read_text()) for i in (0, 1)]
    assert files == runs
    assert _strip(files[0]) == _strip(files[1])
    assert files[0]["config"] == spec.to_dict()
    assert files[0]["provenance"]["cpu"]["torch_threads"] == 1
    assert {"torch", "numpy", "gymnasium", "stable-baselines3", "transformers"} <= set(
        files[0]["provenance"]["packages"]
    )
    curves = [_csv_without(tmp_path / f"run{i}" / "curve.csv", {"wall_s"}) for i in (0, 1)]
    assert curves[0] == curves[1] and len(curves[0]) >= 2
    # Every training statistic of every update, not only the scores (time columns dropped).
    logs = [tmp_path / f"run{i}" / "logs" / "progress.csv" for i in (0, 1)]
    header = logs[0].read_text().splitlines()[0].split(",")
    timing = {
        c for c in header if c.startswith("time/") and c not in ("time/iterations", "time/total_timesteps")
    }
    assert _csv_without(logs[0], timing) == _csv_without(logs[1], timing)


def test_cpu_info_reads_model_and_flags(tmp_path):
    fake = tmp_path / "cpuinfo"
    fake.write_text(
        "processor\t: 0\nmodel name\t: AMD EPYC 7B13\nflags\t\t: fpu sse avx2 fma\n\nprocessor\t: 1\n"
    )
    info = cpu_info(fake)
    assert info["model"] == "AMD EPYC 7B13" and info["flags"] == ["avx2"]
    assert cpu_info(tmp_path / "missing")["model"] is None


def test_code_version_key():
    assert code_version_key(None) == "unrecorded"
    assert code_version_key({"commit": "a" * 40, "dirty": False}) == "a" * 12
    assert (
        code_version_key({"commit": "a" * 40, "dirty": True, "diff_sha256": "b" * 64})
        == "a" * 12 + "+dirty." + "b" * 12
    )
    assert code_version_key({"commit": None, "package_version": "0.1.0"}) == "pkg-0.1.0"


# ------------------------------------------------------------------------------ GRPO/EGSW options
def _loss_inputs(seed=0, b=6, t=5):
    g = torch.Generator().manual_seed(seed)
    lp = torch.randn(b, t, generator=g, dtype=torch.float64) * 0.1 - 1
    old = lp + torch.randn(b, t, generator=g, dtype=torch.float64) * 0.1
    adv = torch.randn(b, 1, generator=g, dtype=torch.float64).expand(b, t).clone()
    mask = torch.ones(b, t, dtype=torch.bool)
    mask[0, 3:] = False
    mask[2, 1:] = False
    ent = torch.rand(b, t, generator=g, dtype=torch.float64)
    return lp, old, adv, mask, ent


def _reference_loss(lp, old, adv, mask, ent, c=1.0, q=1.0, eps=0.2):
    """Loop reference: per-sequence mean of the (scaled, masked) clipped surrogate, then the mean."""
    valid = [float(ent[i, j]) for i in range(lp.shape[0]) for j in range(lp.shape[1]) if mask[i, j]]
    thr = float(np.quantile(valid, 1 - q))
    total = 0.0
    for i in range(lp.shape[0]):
        terms = []
        for j in range(lp.shape[1]):
            if not mask[i, j]:
                continue
            r = float(torch.exp(lp[i, j] - old[i, j]))
            a = float(adv[i, j])
            term = -min(r * a, min(max(r, 1 - eps), 1 + eps) * a)
            term *= c if a > 0 else 1.0
            term *= 1.0 if (q >= 1.0 or float(ent[i, j]) >= thr) else 0.0
            terms.append(term)
        total += sum(terms) / len(terms)
    return total / lp.shape[0]


@pytest.mark.parametrize("c,q", [(1.0, 1.0), (2.22, 1.0), (1.0, 0.2), (3.0, 0.5)])
def test_grpo_loss_positive_weight_and_top_entropy_match_loop(c, q):
    lp, old, adv, mask, ent = _loss_inputs()
    out = grpo_loss(
        lp, old, adv, mask, clip_range=0.2, entropies=ent, positive_weight=c, top_entropy_quantile=q
    )
    assert float(out.loss) == pytest.approx(_reference_loss(lp, old, adv, mask, ent, c, q), rel=1e-12)


def test_high_entropy_mask_keeps_the_top_fraction_of_valid_steps():
    ent = torch.arange(20, dtype=torch.float64).reshape(4, 5)
    mask = torch.ones(4, 5, dtype=torch.bool)
    mask[3] = False  # the largest entropies sit on padding: never kept, never counted
    keep = high_entropy_mask(ent, mask, 0.2)
    assert int(keep.sum()) == 3 and not keep[3].any() and keep[2, 2:].all()


def test_grpo_options_are_checked():
    from egsw_gym.algorithms.grpo import GRPO

    for kwargs in (
        {"positive_weight": 0.0},
        {"positive_weight": float("nan")},
        {"top_entropy_quantile": 1.5},
        {"top_entropy_quantile": 0},
    ):
        with pytest.raises(ValueError, match=next(iter(kwargs))):
            GRPO("MlpPolicy", "CartPole-v1", n_envs=2, group_size=2, n_groups=1, **kwargs)


def test_egsw_advantage_coef_zero_weights_by_entropy_alone():
    g = torch.Generator().manual_seed(1)
    adv, ent = (
        torch.randn(12, generator=g, dtype=torch.float64),
        torch.rand(12, generator=g, dtype=torch.float64),
    )
    ids = torch.arange(12) // 4
    w = EGSW(alpha=1.0, advantage_coef=0.0, mode="trajectory").sample_weights(
        adv, ent, trajectory_ids=torch.arange(12), step_ids=torch.zeros(12, dtype=torch.long), group_ids=ids
    )
    ref = torch.cat([4 * torch.softmax(ent[k * 4 : (k + 1) * 4], 0) for k in range(3)])
    assert torch.allclose(w, ref, atol=1e-12)
    assert torch.allclose(
        w, egsw_weights(torch.zeros(12, dtype=torch.float64), ent, ids, alpha=1.0, temperature=1.0)
    )
    with pytest.raises(ValueError, match="advantage_coef"):
        EGSW(advantage_coef=-1.0)
    assert EGSW.from_dict(EGSW(advantage_coef=0.0).to_dict()).advantage_coef == 0.0


def test_matched_positive_weight():
    # Near-uniform weights leave GRPO's positive mass unchanged; the preset's EGSW raises it.
    assert matched_positive_weight(EGSW(temperature=1e6), 8, 2, batches=3) == 1.0
    c = matched_positive_weight(EGSW(alpha=0.1, mode="step"), 8, 4, batches=20)
    assert 1.0 < c < 8.0
    assert c == matched_positive_weight(EGSW(alpha=0.1, mode="step"), 8, 4, batches=20)  # seeded


def test_controls_plan():
    plan = study.plan_study("controls", seeds=[0, 1])
    by_variant = {r.variant: r.spec for r in plan if r.spec.seed == 0}
    assert len(plan) == 2 * len(by_variant) == 22
    base = by_variant["grpo"].algo_kwargs["learning_rate"]
    assert by_variant["grpo-lr2x"].algo_kwargs["learning_rate"] == scale_rate(base, 2)
    assert by_variant["grpo-egsw-lr4x"].algo_kwargs["learning_rate"] == scale_rate(base, 4)
    assert by_variant["grpo-egsw-lr4x"].egsw == by_variant["grpo-egsw"].egsw
    assert by_variant["grpo-posw"].algo_kwargs["positive_weight"] > 1 and by_variant["grpo-posw"].egsw is None
    assert by_variant["grpo-top20"].algo_kwargs["top_entropy_quantile"] == 0.2
    assert by_variant["grpo-egsw-entonly"].egsw.advantage_coef == 0.0
    assert (by_variant["grpo-egsw-a1"].egsw.alpha, by_variant["grpo-egsw-a3"].egsw.alpha) == (1.0, 3.0)
    assert {v for pair in CONTROL_COMPARISONS for v in pair} == set(by_variant)
    assert scale_rate("lin_0.0002", 2) == "lin_0.0004" and scale_rate(1e-3, 4) == 4e-3
    lm = study.plan_study("lm")
    assert len(lm) == 3 * 2 * 20 and {r.spec.warm_start_kwargs.get("target_accuracy") for r in lm} == {None}


# ------------------------------------------------------------------------------ statistics
def test_holm_matches_the_step_down_definition():
    rng = np.random.default_rng(0)
    for _ in range(50):
        p = list(rng.random(rng.integers(1, 8)) ** 2)
        order = np.argsort(p, kind="stable")
        ref = np.empty(len(p))
        running = 0.0
        for k, i in enumerate(order):
            running = max(running, min(1.0, (len(p) - k) * p[i]))
            ref[i] = running
        assert np.allclose(holm(p), ref)
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])


def test_paired_comparison_matches_scipy_and_is_seeded():
    # The committed default study's Arithmetic finals (GRPO+EGSW vs GRPO, seeds 0-4).
    x = {0: 0.75, 1: 0.69, 2: 0.78, 3: 0.655, 4: 0.77}
    y = {0: 0.71, 1: 0.605, 2: 0.77, 3: 0.505, 4: 0.565, 9: 0.1}
    r = paired_comparison(x, y, reps=500)
    d = np.array([x[s] - y[s] for s in range(5)])
    assert r["n"] == 5 and r["mean"] == pytest.approx(d.mean())
    assert r["p_t"] == pytest.approx(stats.ttest_1samp(d, 0).pvalue)
    assert r["p_wilcoxon"] == pytest.approx(stats.wilcoxon(d).pvalue)
    assert r["dz"] == pytest.approx(d.mean() / d.std(ddof=1))
    assert r["lo"] < r["mean"] < r["hi"] and (r["above"], r["equal"], r["below"]) == (5, 0, 0)
    assert paired_comparison(x, y, reps=500) == r
    assert paired_comparison(x, y, reps=500, seed=1)["lo"] != r["lo"]
    assert paired_comparison({0: 1.0, 1: 1.0}, {0: 1.0, 1: 1.0})["p_wilcoxon"] == 1.0
    assert paired_comparison({0: 1.0}, {0: 0.0}) is None


def _fake_run(root: Path, env: str, variant: str, algo: str, seed: int, final: float, version: dict | None):
    spec = make_run_spec(algo, env, seed)
    d = root / env.replace("/", "_") / variant / f"seed{seed}"
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps(spec.to_dict()))
    with open(d / "curve.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["timesteps", "eval_mean", "eval_std", "wall_s"])
        for k, t in enumerate(np.linspace(0, spec.n_timesteps, 4)):
            w.writerow([int(t), final * k / 3, 0.0, 1.0])
    result = dict(algo=algo, env_id=env, seed=seed, timesteps=spec.n_timesteps, initial_eval_mean=0.0,
                  final_eval_mean=final, final_eval_std=0.0, wall_s=1.0)  # fmt: skip
    if version is not None:
        result["provenance"] = {"code": version}
    (d / "result.json").write_text(json.dumps(result))


def _fake_study(root: Path, versions=(None, None)):
    rng = np.random.default_rng(0)
    for seed in range(4):
        for variant, version in zip(("grpo", "grpo-egsw"), versions, strict=True):
            final = float(np.round(rng.uniform(0.3, 0.6) + (0.1 if variant == "grpo-egsw" else 0), 3))
            _fake_run(root, "egsw/Arithmetic-v0", variant, variant, seed, final, version)


def test_report_refuses_mixed_code_versions(tmp_path):
    v1, v2 = {"commit": "1" * 40, "dirty": False}, {"commit": "2" * 40, "dirty": False}
    _fake_study(tmp_path / "runs", versions=(v1, v2))
    with pytest.raises(MixedVersionsError, match="--allow-mixed-versions"):
        write_study_report([tmp_path / "runs"], tmp_path / "out", reps=50)
    write_study_report([tmp_path / "runs"], tmp_path / "out", reps=50, allow_mixed_versions=True)
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "Mixed code versions (2)" in summary and "1" * 12 in summary and "2" * 12 in summary


def test_report_only_is_byte_identical(tmp_path):
    _fake_study(tmp_path / "runs")
    digests = []
    for k in (0, 1):
        written = write_study_report([tmp_path / "runs"], tmp_path / f"out{k}", reps=50)
        digests.append({p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in written})
    assert digests[0] == digests[1] and any(n.endswith(".png") for n in digests[0])
    summary = (tmp_path / "out0" / "summary.md").read_text()
    assert "p (t, Holm)" in summary and "| egsw/Arithmetic-v0 | grpo-egsw | grpo | 4 |" in summary


def test_machines_lists_seeds_per_cpu_and_flags_split_pairs():
    intel = {"model": "Intel Xeon", "torch_cpu_capability": "AVX512", "flags": ["avx2", "amx_tile"]}
    amd = {"model": "AMD EPYC", "torch_cpu_capability": "AVX512", "flags": ["avx2"]}
    runs = [
        {"env_id": "e", "seed": s, "provenance": {"cpu": cpu}}
        for s, cpu in [(0, intel), (0, intel), (1, intel), (1, amd), (2, amd), (3, amd), (5, None)]
    ]
    kinds, mixed = machines(runs)
    assert kinds == {machine_key(amd): [1, 2, 3], machine_key(intel): [0, 1], "unrecorded": [5]}
    assert machine_key(intel) == "Intel Xeon (AVX512; avx2+amx_tile)"
    assert mixed == [("e", 1)]


def test_report_names_the_machines(tmp_path):
    _fake_study(tmp_path / "runs")
    write_study_report([tmp_path / "runs"], tmp_path / "out", reps=50)
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "## Machines" in summary and "| unrecorded | 0-3 |" in summary
    assert "Arms on different machines" not in summary and "on each machine's seeds" not in summary


def test_report_splits_paired_differences_by_machine(tmp_path):
    _fake_study(tmp_path / "runs")
    for f in (tmp_path / "runs").rglob("result.json"):  # seeds 0-1 on one CPU kind, 2-3 on another
        r = json.loads(f.read_text())
        r["provenance"] = {"cpu": {"model": "A" if r["seed"] < 2 else "B", "torch_cpu_capability": "AVX2"}}
        f.write_text(json.dumps(r))
    write_study_report([tmp_path / "runs"], tmp_path / "out", reps=50)
    summary = (tmp_path / "out" / "summary.md").read_text()
    results = [json.loads(f.read_text()) for f in (tmp_path / "runs").rglob("result.json")]
    finals = {(r["algo"], r["seed"]): r["final_eval_mean"] for r in results}
    by_kind = [
        np.mean([finals["grpo-egsw", s] - finals["grpo", s] for s in seeds]) for seeds in ((0, 1), (2, 3))
    ]
    row = f"| egsw/Arithmetic-v0 | grpo-egsw | grpo | {by_kind[0]:+.3f} (2) | {by_kind[1]:+.3f} (2) |"
    assert "| A (AVX2; none) | 0-1 |" in summary and row in summary


def test_plot_refuses_mixed_code_versions(tmp_path):
    from egsw_gym.experiments.report import write_report

    v1, v2 = {"commit": "1" * 40, "dirty": False}, {"commit": "2" * 40, "dirty": False}
    _fake_study(tmp_path, versions=(v1, v2))
    with pytest.raises(MixedVersionsError, match="2 code versions"):
        write_report(tmp_path, allow_mixed_versions=False)
    table, _ = write_report(tmp_path)  # compare/demo: pooled, and the table says so
    assert "Mixed code versions" in (tmp_path / "summary.md").read_text()


def test_effect_size_interval_ignores_zero_spread_resamples():
    """Three seeds: a resample drawing one seed three times has no spread; its d_z is dropped, not +-inf."""
    from egsw_gym.experiments.paired_stats import _dz

    assert np.isnan(_dz(np.array([0.07, 0.07, 0.07])))
    assert np.isnan(_dz(np.array([0.1, 0.1 + 1e-17, 0.1])))  # equal but for rounding
    assert _dz(np.array([0.0, 0.1, 0.2])) == pytest.approx(1.0)
