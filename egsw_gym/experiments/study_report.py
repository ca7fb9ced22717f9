"""Write a study's results (the ``docs/results/`` layout) from one or more study output directories.

``results_dir`` receives:

- ``summary.md``: the code versions of the runs, normalisation anchors, per-domain IQM and
  optimality gap, probability of improvement (95% stratified-bootstrap CIs), the paired tests
  (final score and AUC, Holm-corrected; :mod:`~egsw_gym.experiments.paired_stats`) and the
  per-environment table;
- ``curves.csv``: every evaluation point of every run, long format, raw and normalised;
- ``domains.png`` (the domains side by side), ``performance_profiles.png``,
  ``sample_efficiency.png``, ``curves_<env>.png``;
- ``training_reward.png`` / ``training_reward.csv`` (language-model tasks, GRPO vs GRPO+EGSW);
- ``sensitivity.md`` and ``sensitivity_<env>.png`` when the runs hold an alpha x temperature grid.
"""

from __future__ import annotations

import csv
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from egsw_gym.experiments import figures
from egsw_gym.experiments.aggregate import (
    REFERENCE_SCORES,
    aggregate_scores,
    collect_study,
    egsw_pairs,
    improvement_probabilities,
    seeded_numpy,
)
from egsw_gym.experiments.controls import CONTROL_COMPARISONS, CONTROL_ONLY_VARIANTS
from egsw_gym.experiments.paired_stats import holm, paired_comparison
from egsw_gym.experiments.provenance import (
    MixedVersionsError,
    check_code_versions,
    code_versions,
    machine_key,
    machines,
)
from egsw_gym.experiments.report import plot_curves, summary_table
from egsw_gym.experiments.rundir import read_progress_log

__all__ = [
    "write_study_report",
    "training_reward_curves",
    "sensitivity_tables",
    "code_versions",
    "paired_tests",
    "MixedVersionsError",
]

_GRID = re.compile(r"^grpo-egsw-a(?P<alpha>[0-9.e-]+)-P(?P<temp>[0-9.e-]+)$")


def _ci(point: float, lo: float, hi: float) -> str:
    return f"{point:.3f} [{lo:.3f}, {hi:.3f}]"


def _write_curves_csv(runs: list[dict[str, Any]], path: Path) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(
            [
                "domain",
                "env_id",
                "variant",
                "algo",
                "egsw_mode",
                "egsw_alpha",
                "egsw_temperature",
                "seed",
                "timesteps",
                "fraction",
                "eval_mean",
                "normalized",
            ]
        )
        for r in sorted(runs, key=lambda r: (r["domain"], r["env_id"], r["variant"], r["seed"])):
            e = r["egsw"] or {}
            c = r["curve"]
            for t, fr, v, nv in zip(
                c["timesteps"], c["fraction"], c["eval_mean"], c["normalized"], strict=True
            ):
                w.writerow(
                    [
                        r["domain"],
                        r["env_id"],
                        r["variant"],
                        r["algo"],
                        e.get("mode", ""),
                        e.get("alpha", ""),
                        e.get("temperature", ""),
                        r["seed"],
                        int(t),
                        round(float(fr), 4),
                        v,
                        round(float(nv), 5),
                    ]
                )


def paired_differences(runs: list[dict[str, Any]], base: list[dict[str, Any]]) -> list[float]:
    """Normalised final score of each run minus that of the ``base`` run with the same seed.

    Runs of one environment with the same seed start from the same initial model and environment
    seeds, so the pairing removes that part of the seed-to-seed spread; runs whose seed has no
    base run are left out.
    """
    by_seed = {r["seed"]: r["final_normalized"] for r in base}
    return [r["final_normalized"] - by_seed[r["seed"]] for r in runs if r["seed"] in by_seed]


def _paired_cell(diffs: list[float]) -> str:
    """``+0.123; 4-0-1``: the mean paired difference and how many were above, equal to and below 0."""
    if not diffs:
        return "-"
    counts = (sum(d > 0 for d in diffs), sum(d == 0 for d in diffs), sum(d < 0 for d in diffs))
    return f"{np.mean(diffs):+.3f}; " + "-".join(map(str, counts))


def _comparisons(rs: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """``(x, y)`` pairs of one environment: the controls suite's list, else each EGSW variant
    against its base algorithm."""
    variants = {r["variant"] for r in rs}
    if variants & CONTROL_ONLY_VARIANTS:
        return [(x, y) for x, y in CONTROL_COMPARISONS if x in variants and y in variants]
    return [(x, y) for by, x, y in egsw_pairs(rs) if by == "variant"]


def paired_tests(runs: list[dict[str, Any]], *, reps: int = 2000, seed: int = 0) -> list[dict[str, Any]]:
    """Every comparison of every environment, on the final score (primary) and the AUC (secondary).

    Each row: ``env_id, x, y``, then ``final`` and ``auc``
    (:func:`~egsw_gym.experiments.paired_stats.paired_comparison` of the normalised values),
    with Holm-adjusted p-values ``p_t_holm``, ``p_wilcoxon_holm`` added over the family of all
    rows of the report, separately per metric. Comparisons with fewer than 2 common seeds are left out.
    """
    rows = []
    for env_id in sorted({r["env_id"] for r in runs}):
        rs = [r for r in runs if r["env_id"] == env_id]
        for x, y in _comparisons(rs):
            got = {}
            for metric, value in (("final", lambda r: r["final_normalized"]), ("auc", _auc)):
                xs = {r["seed"]: value(r) for r in rs if r["variant"] == x}
                ys = {r["seed"]: value(r) for r in rs if r["variant"] == y}
                got[metric] = paired_comparison(xs, ys, reps=reps, seed=seed)
            if got["final"] is not None:
                rows.append(dict(env_id=env_id, x=x, y=y, **got))
    for metric in ("final", "auc"):
        for test in ("p_t", "p_wilcoxon"):
            for row, adj in zip(rows, holm([r[metric][test] for r in rows]), strict=True):
                row[metric][f"{test}_holm"] = adj
    return rows


def _p(p: float) -> str:
    return f"{p:.3f}" if p >= 0.001 else "<0.001"


def _dz_cell(f: dict[str, Any]) -> str:
    """``d_z [lo, hi]``; ``-`` where it is undefined (every difference 0) or infinite (no spread)."""
    if not np.isfinite(f["dz"]):
        return "-"
    return f"{f['dz']:+.2f} [{f['dz_lo']:+.2f}, {f['dz_hi']:+.2f}]"


def _paired_tests_md(rows: list[dict[str, Any]]) -> str:
    out = [
        "| env | X | Y | seeds | final: X - Y [95% CI] | d_z [95% CI] | p (t) | p (t, Holm) | p (Wilcoxon) "
        "| p (Wilcoxon, Holm) | above-equal-below | AUC: X - Y [95% CI] | p (t, Holm) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        f, a = r["final"], r["auc"]
        out.append(
            f"| {r['env_id']} | {r['x']} | {r['y']} | {f['n']} | {f['mean']:+.3f} [{f['lo']:+.3f}, {f['hi']:+.3f}] | "
            f"{_dz_cell(f)} | {_p(f['p_t'])} | {_p(f['p_t_holm'])} | "
            f"{_p(f['p_wilcoxon'])} | {_p(f['p_wilcoxon_holm'])} | {f['above']}-{f['equal']}-{f['below']} | "
            f"{a['mean']:+.3f} [{a['lo']:+.3f}, {a['hi']:+.3f}] | {_p(a['p_t_holm'])} |"
        )
    return "\n".join(out)


def _versions_md(versions: dict[str, int]) -> list[str]:
    lines = ["## Code versions", ""]
    if len(versions) > 1:
        lines += [
            f"**Mixed code versions ({len(versions)}), pooled because `--allow-mixed-versions` was given**: "
            "these numbers mix runs of different code.",
            "",
        ]
    lines += ["| code version | runs |", "|---|---|", *(f"| {k} | {n} |" for k, n in versions.items()), ""]
    if "unrecorded" in versions:
        lines += ["`unrecorded`: runs made before result files recorded their code version.", ""]
    return lines


def _machines_md(runs: list[dict[str, Any]]) -> list[str]:
    kinds, mixed = machines(runs)
    lines = [
        "## Machines",
        "",
        "Runs of one commit agree exactly only on one kind of CPU: another kind sums floats in another "
        "order, and the warm start and RL amplify the difference. Every arm of a seed should run on one "
        "machine, so that the arms start from the same warm-start file.",
        "",
        "| CPU (torch capability; flags) | seeds |",
        "|---|---|",
        *(f"| {k} | {_seed_list(v)} |" for k, v in kinds.items()),
        "",
    ]
    if mixed:
        cells = ", ".join(f"{e} seed {s}" for e, s in mixed)
        lines += [f"**Arms on different machines** (not paired runs): {cells}.", ""]
    if len(kinds) > 1:
        lines += _machine_split_md(runs, list(kinds))
    return lines


def _machine_split_md(runs: list[dict[str, Any]], kinds: list[str]) -> list[str]:
    """Each paired comparison's mean final difference on each machine kind's seeds (descriptive)."""
    lines = [
        "Each comparison's mean paired difference in normalised final score on each machine's seeds "
        "(n seeds), a check that the machines agree; the tests below pool them.",
        "",
        "| env | X | Y | " + " | ".join(kinds) + " |",
        "|---|---|---|" + "---|" * len(kinds),
    ]
    final: dict[tuple[str, str, str], dict[int, float]] = defaultdict(dict)  # (machine, env, variant)
    for r in runs:
        kind = machine_key((r.get("provenance") or {}).get("cpu"))
        final[(kind, r["env_id"], r["variant"])][r["seed"]] = r["final_normalized"]
    for env_id in sorted({r["env_id"] for r in runs}):
        for x, y in _comparisons([r for r in runs if r["env_id"] == env_id]):
            cells = []
            for kind in kinds:
                xs, ys = final[(kind, env_id, x)], final[(kind, env_id, y)]
                d = [xs[k] - ys[k] for k in sorted(xs.keys() & ys.keys())]
                cells.append(f"{np.mean(d):+.3f} ({len(d)})" if d else "-")
            lines.append(f"| {env_id} | {x} | {y} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def _seed_list(seeds: list[int]) -> str:
    """``0-6, 9`` for [0, 1, ..., 6, 9]."""
    parts, start = [], None
    for i, s in enumerate(seeds):
        start = s if start is None else start
        if i + 1 == len(seeds) or seeds[i + 1] != s + 1:
            parts.append(f"{start}" if start == s else f"{start}-{s}")
            start = None
    return ", ".join(parts)


def _summary_md(
    runs: list[dict[str, Any]], agg: list[dict], poi: list[dict], reps: int, tests: list[dict]
) -> str:
    envs = sorted({r["env_id"] for r in runs})
    lines = [
        "# Study summary",
        "",
        "Generated by `egsw-gym study`; every interval is a 95% stratified-bootstrap CI (rliable, "
        f"{reps} resamples, seeded). Normalised score = (score - random) / (reference - random); sources in "
        "`REFERENCE_SCORES` (egsw_gym/experiments/aggregate.py).",
        "",
        *_versions_md(code_versions(runs)),
        *_machines_md(runs),
        "## Normalisation anchors",
        "",
        "| env | random | reference |",
        "|---|---|---|",
        *(f"| {e} | {REFERENCE_SCORES[e][0]:g} | {REFERENCE_SCORES[e][1]:g} |" for e in envs),
        "",
        "## Per domain: normalised final score",
        "",
        "Rows `algo[mode]` pool the EGSW runs of that mode whatever their variant. `overall` pools the "
        "domains' environments for rows that ran in every domain. Optimality gap: mean shortfall "
        "below a normalised score of 1 (lower is better).",
        "",
        "| domain | row | envs | seeds | IQM [95% CI] | optimality gap [95% CI] |",
        "|---|---|---|---|---|---|",
        *(
            f"| {r['domain']} | {r['label']} | {r['n_envs']} | {r['n_seeds']} | "
            f"{_ci(r['iqm'], r['iqm_lo'], r['iqm_hi'])} | {_ci(r['og'], r['og_lo'], r['og_hi'])} |"
            for r in agg
        ),
        "",
        "## Probability of improvement P(X+EGSW > X)",
        "",
        "0.5: no difference; an interval excluding 0.5 is a statistically meaningful difference "
        "(Agarwal et al., 2021).",
        "",
        "| domain | X+EGSW | X | envs | P(X+EGSW > X) [95% CI] |",
        "|---|---|---|---|---|",
        *(
            f"| {r['domain']} | {r['x']} | {r['y']} | {r['n_envs']} | {_ci(r['poi'], r['lo'], r['hi'])} |"
            for r in poi
        ),
        "",
        "## Per environment: paired tests",
        "",
        "Each X run against the Y run of the same seed (same initial model and environment seeds), "
        "on the normalised final score (primary) and the area under the normalised curve over the "
        "budget fraction (AUC, secondary): the mean difference with a 95% percentile-bootstrap CI, "
        "the standardised effect d_z = mean / sd of the differences with its CI (both seeded, "
        f"{reps} resamples), two-sided paired t and Wilcoxon signed-rank p-values, and the same "
        f"p-values Holm-adjusted over the family of all {len(tests)} rows of this table (per metric). "
        "The test plan is docs/results/PLAN.md.",
        "",
        _paired_tests_md(tests),
        "",
        "## Per environment: raw final evaluation score",
        "",
        summary_table(runs, reps=reps, key="variant"),
        "",
    ]
    return "\n".join(lines)


def training_reward_curves(
    runs: list[dict[str, Any]], variants: tuple[str, ...] = ("grpo", "grpo-egsw")
) -> dict[str, dict[str, list[tuple[np.ndarray, np.ndarray]]]]:
    """Per language-model env and variant, every seed's ``(time/iterations, train/group_return_mean)``
    from its ``logs/progress.csv`` (the mean reward of the completions sampled for each update)."""
    out: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for r in sorted(runs, key=lambda r: r["seed"]):
        if r["domain"] != "llm" or r["variant"] not in variants:
            continue
        # Read like every run file: no links, capped, finite values (egsw_gym.experiments.rundir).
        cols = read_progress_log(r["run_dir"], ("time/iterations", "train/group_return_mean"))
        if cols is not None and cols["time/iterations"].size:
            out[r["env_id"]][r["variant"]].append((cols["time/iterations"], cols["train/group_return_mean"]))
    return {e: dict(v) for e, v in out.items()}


def _auc(r: dict[str, Any]) -> float:
    """Area under the normalised curve over the budget fraction [0, 1] (the mean normalised score)."""
    return float(np.trapezoid(r["curve"]["normalized"], r["curve"]["fraction"]))


def sensitivity_tables(runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per env with an alpha x temperature grid: ``alphas``, ``temperatures``, mean-over-seeds
    ``final`` and ``auc`` matrices (NaN where a cell has no run), ``reference`` (plain GRPO's mean
    ``final`` and ``auc``, when it ran) and a markdown table of every variant, with each variant's
    mean paired difference to plain GRPO over the seeds both ran (the same seed starts from the
    same model, so the pairing removes the seed-to-seed spread of the start)."""
    out = {}
    for env_id in sorted({r["env_id"] for r in runs}):
        rs = [r for r in runs if r["env_id"] == env_id]
        cells: dict[tuple[float, float], list] = defaultdict(list)
        for r in rs:
            if _GRID.match(r["variant"]):
                cells[(r["egsw"]["alpha"], r["egsw"]["temperature"])].append(r)
        if len(cells) < 2:
            continue
        alphas = sorted({a for a, _ in cells})
        temps = sorted({t for _, t in cells})
        final = np.full((len(alphas), len(temps)), np.nan)
        auc = np.full_like(final, np.nan)
        for (a, t), cr in cells.items():
            final[alphas.index(a), temps.index(t)] = np.mean([r["final_normalized"] for r in cr])
            auc[alphas.index(a), temps.index(t)] = np.mean([_auc(r) for r in cr])
        by_variant: dict[str, list] = defaultdict(list)
        for r in rs:
            by_variant[r["variant"]].append(r)
        grpo = by_variant.get("grpo", [])
        reference = None
        if grpo:
            reference = {
                "final": float(np.mean([r["final_normalized"] for r in grpo])),
                "auc": float(np.mean([_auc(r) for r in grpo])),
            }
        table = [
            "| variant | mode | alpha | P | seeds | final (mean +- std) | AUC (mean +- std) | final - GRPO, paired by seed (mean; seeds above-equal-below) |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for v, vr in sorted(by_variant.items()):
            e = vr[0]["egsw"] or {}
            f_, a_ = [r["final_normalized"] for r in vr], [_auc(r) for r in vr]
            paired = "-" if v == "grpo" else _paired_cell(paired_differences(vr, grpo))
            table.append(
                f"| {v} | {e.get('mode', '-')} | {e.get('alpha', '-')} | {e.get('temperature', '-')} | "
                f"{len(vr)} | {np.mean(f_):.3f} +- {np.std(f_):.3f} | {np.mean(a_):.3f} +- {np.std(a_):.3f} | {paired} |"
            )
        out[env_id] = dict(
            alphas=alphas,
            temperatures=temps,
            final=final,
            auc=auc,
            reference=reference,
            table="\n".join(table),
        )
    return out


def _write_training_reward_csv(curves: dict[str, dict[str, list]], path: Path) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["env_id", "variant", "seed_index", "update", "training_reward"])
        for env_id, by_v in sorted(curves.items()):
            for v, seeds in sorted(by_v.items()):
                for k, (x, y) in enumerate(seeds):
                    w.writerows([env_id, v, k, int(a), float(b)] for a, b in zip(x, y, strict=True))
    return path


def write_study_report(
    out_dirs: list[str | Path],
    results_dir: str | Path,
    *,
    reps: int = 2000,
    allow_mixed_versions: bool = False,
) -> list[Path]:
    """Write every table, CSV and figure of the runs under ``out_dirs`` into ``results_dir``.

    Every bootstrap is seeded and the figures carry no date, so the same runs give the same
    files byte for byte.

    Raises
    ------
    MixedVersionsError
        When the runs come from more than one code version and ``allow_mixed_versions`` is false.

    Returns
    -------
    list of pathlib.Path
        The files written.
    """
    results = Path(results_dir)
    results.mkdir(parents=True, exist_ok=True)
    runs = collect_study(out_dirs)
    check_code_versions(code_versions(runs), allow_mixed_versions)
    agg = aggregate_scores(runs, reps=reps)
    poi = improvement_probabilities(runs, reps=reps)
    tests = paired_tests(runs, reps=reps)
    written = [results / "summary.md", results / "curves.csv"]
    with seeded_numpy(0):  # the per-environment table's rliable bootstrap
        written[0].write_text(_summary_md(runs, agg, poi, reps, tests))
    _write_curves_csv(runs, written[1])
    written.append(figures.plot_domains(agg, poi, results / "domains.png"))
    written.append(
        figures.plot_performance_profiles(runs, results / "performance_profiles.png", reps=min(reps, 500))
    )
    written.append(
        figures.plot_sample_efficiency(runs, results / "sample_efficiency.png", reps=min(reps, 500))
    )
    written += plot_curves(runs, results, key="variant")
    curves = training_reward_curves(runs)
    if curves:
        written.append(figures.plot_training_reward(curves, results / "training_reward.png"))
        written.append(_write_training_reward_csv(curves, results / "training_reward.csv"))
    sens = sensitivity_tables(runs)
    if sens:
        md = [
            "# Sensitivity of GRPO+EGSW",
            "",
            "Normalised final score and area under the normalised curve (AUC, over the budget "
            "fraction), mean over seeds. Heatmap colours are centred on plain GRPO's value (blue: "
            "above it, red: below). The last column pairs each run with plain GRPO's run of the "
            "same seed (same starting model): mean difference of the final scores and how many "
            "seeds were above, equal and below.",
            "",
        ]
        for env_id, s in sens.items():
            name = f"sensitivity_{env_id.replace('/', '_')}.png"
            written.append(
                figures.plot_sensitivity(
                    {"final score": s["final"], "AUC": s["auc"]},
                    s["alphas"],
                    s["temperatures"],
                    env_id,
                    results / name,
                    references=None
                    if s["reference"] is None
                    else {"final score": s["reference"]["final"], "AUC": s["reference"]["auc"]},
                )
            )
            md += [f"## {env_id}", "", f"![{env_id}]({name})", "", s["table"], ""]
        (results / "sensitivity.md").write_text("\n".join(md))
        written.append(results / "sensitivity.md")
    return written
