"""Turn a directory of finished runs into a table (IQM with 95% bootstrap CIs, via rliable) and plots."""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

import numpy as np

from egsw_gym.experiments import rundir
from egsw_gym.experiments.provenance import check_code_versions, code_versions

__all__ = ["collect_runs", "summary_table", "plot_curves", "write_report"]


def collect_runs(out_dir: str | Path, *, require_config: bool = False) -> list[dict]:
    """Every finished run under ``out_dir``: its ``result.json`` plus ``curve``, ``config`` and ``run_dir``.

    Read through :func:`egsw_gym.experiments.rundir.collect_runs`: regular files only (no links,
    FIFOs or devices), sizes capped, finite scores, each run's env, algorithm and seed matching
    its place ``<env>/<algo>/seed<k>``; damaged files are a
    :class:`~egsw_gym.experiments.rundir.RunDirError` naming each one.
    """
    return rundir.collect_runs(out_dir, require_config=require_config)


def _grouped(runs: list[dict], key: str = "algo") -> dict[str, dict[str, list[dict]]]:
    by_env: dict[str, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for r in runs:
        by_env[r["env_id"]][r[key]].append(r)
    return by_env


def summary_table(runs: list[dict], reps: int = 2000, key: str = "algo", seed: int = 0) -> str:
    """Markdown table: per environment and algorithm, the final evaluation score's interquartile
    mean with a 95% stratified-bootstrap confidence interval (rliable), the mean, and each seed.
    ``key`` names the run field that makes the rows (``"variant"`` for a study); ``seed`` seeds the
    bootstrap (NumPy's global generator, which rliable draws from, is restored afterwards)."""
    from rliable import library as rly
    from rliable import metrics

    lines = [
        "| env | algorithm | seeds | IQM | 95% CI | mean | per seed | first eval (mean) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for env_id, by_algo in sorted(_grouped(runs, key).items()):
        scores = {
            algo: np.array([[r["final_eval_mean"]] for r in sorted(rs, key=lambda r: r["seed"])])
            for algo, rs in sorted(by_algo.items())
        }
        state = np.random.get_state()
        np.random.seed(seed)
        try:
            point, interval = rly.get_interval_estimates(
                scores, lambda x: np.array([metrics.aggregate_iqm(x)]), reps=reps
            )
        finally:
            np.random.set_state(state)
        for algo, s in scores.items():
            lo, hi = interval[algo][:, 0]
            per_seed = ", ".join(f"{v:.3g}" for v in s[:, 0])
            # The first curve point: the untrained (or, for LMs, warm-started) policy, for scale.
            first = np.mean([r["curve"]["eval_mean"][0] for r in by_algo[algo]])
            lines.append(
                f"| {env_id} | {algo} | {len(s)} | {point[algo][0]:.3g} | [{lo:.3g}, {hi:.3g}] | "
                f"{s.mean():.3g} | {per_seed} | {first:.3g} |"
            )
    return "\n".join(lines)


def curve_axis_labels(env_id: str, eval_episodes: int | None = None) -> tuple[str, str]:
    """``(x label, y label)`` of an evaluation curve in the task's own units."""
    if env_id.startswith("egsw/"):  # text tasks: timesteps are generated tokens, the score an accuracy
        n = f" ({eval_episodes} problems)" if eval_episodes else ""
        return "generated tokens", f"held-out greedy accuracy{n}"
    n = f"{eval_episodes} " if eval_episodes else ""
    return "environment steps", f"mean return of {n}evaluation episodes"


def _thousands(x: float, _pos: int = 0) -> str:
    """Tick label: 0, 50k, 1.5M."""
    if abs(x) >= 1e6:
        return f"{x / 1e6:g}M"
    return f"{x / 1e3:g}k" if abs(x) >= 1e3 else f"{x:g}"


def plot_curves(runs: list[dict], out_dir: str | Path, key: str = "algo") -> list[Path]:
    """One PNG per environment: mean evaluation curve per algorithm (or ``key``) with a min-max band over seeds.

    Axes are in the task's units (:func:`curve_axis_labels`), the title names the band, and the
    legend sits beside the axes so it covers no curve.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    paths = []
    for env_id, by_algo in sorted(_grouped(runs, key).items()):
        fig, ax = plt.subplots(figsize=(8, 4))
        for algo, rs in sorted(by_algo.items()):
            # Seeds can evaluate at slightly different steps: interpolate onto the first seed's grid.
            grid = rs[0]["curve"]["timesteps"]
            ys = np.stack([np.interp(grid, r["curve"]["timesteps"], r["curve"]["eval_mean"]) for r in rs])
            ax.plot(grid, ys.mean(0), label=f"{algo} (n={len(rs)})")
            ax.fill_between(grid, ys.min(0), ys.max(0), alpha=0.2)
        first = next(iter(by_algo.values()))[0]
        xlabel, ylabel = curve_axis_labels(env_id, (first.get("config") or {}).get("eval_episodes"))
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(f"{env_id}: line = mean over seeds, band = min to max over seeds", fontsize="medium")
        ax.xaxis.set_major_locator(MaxNLocator(nbins=6))
        ax.xaxis.set_major_formatter(FuncFormatter(_thousands))
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small", frameon=False)
        fig.tight_layout()
        path = Path(out_dir) / f"curves_{env_id.replace('/', '_')}.png"
        # No version stamp (same runs, same bytes); cropped to the legend beside the axes.
        fig.savefig(path, dpi=120, metadata={"Software": None}, bbox_inches="tight", pad_inches=0.1)
        plt.close(fig)
        paths.append(path)
    return paths


def write_report(out_dir: str | Path, *, allow_mixed_versions: bool = True) -> tuple[str, list[Path]]:
    """Write ``summary.md``, ``curves.csv`` (all curves, long format) and the PNG plots of ``out_dir``.

    With ``allow_mixed_versions=False`` (``egsw-gym plot``), runs of different code versions are
    refused (:class:`~egsw_gym.experiments.provenance.MixedVersionsError`); otherwise (``compare``
    and ``demo``, whose reruns keep earlier runs) the table names the versions when there are
    several.
    """
    out_dir = Path(out_dir)
    runs = collect_runs(out_dir)
    if not runs:
        raise FileNotFoundError(f"no finished runs (result.json) under {out_dir}")
    versions = code_versions(runs)
    check_code_versions(versions, allow_mixed_versions)
    with open(out_dir / "curves.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["env_id", "algo", "seed", "timesteps", "eval_mean"])
        for r in runs:
            for t, v in zip(r["curve"]["timesteps"], r["curve"]["eval_mean"], strict=True):
                w.writerow([r["env_id"], r["algo"], r["seed"], int(t), v])
    table = summary_table(runs)
    if len(versions) > 1:
        listed = ", ".join(f"{k} ({n} runs)" for k, n in versions.items())
        table = f"**Mixed code versions, pooled because --allow-mixed-versions was given**: {listed}.\n\n" + table
    (out_dir / "summary.md").write_text(table + "\n")
    return table, plot_curves(runs, out_dir)
