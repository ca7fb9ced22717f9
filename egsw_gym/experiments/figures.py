"""The study's figures (PNG, matplotlib's Agg backend), drawn with rliable's ``plot_utils`` where it fits.

- :func:`plot_domains`: the domains side by side ("MuJoCo versus LLM"): IQM of normalised final
  scores and P(X+EGSW > X), with 95% CIs, one column per domain;
- :func:`plot_performance_profiles` and :func:`plot_sample_efficiency`: one panel per domain;
- :func:`plot_training_reward`: the paper's figure on our tasks (training reward against update step);
- :func:`plot_sensitivity`: heatmaps of the alpha x temperature grid.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from egsw_gym.experiments.aggregate import SE_POINTS, sample_efficiency, score_matrix, seeded_numpy

__all__ = [
    "plot_domains",
    "plot_performance_profiles",
    "plot_sample_efficiency",
    "plot_training_reward",
    "plot_sensitivity",
]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    """Tight layout, then PNG cropped to every label and title, without matplotlib's version stamp
    (same inputs, same bytes)."""
    fig.tight_layout()
    fig.savefig(path, dpi=120, metadata={"Software": None}, bbox_inches="tight", pad_inches=0.1)
    _plt().close(fig)
    return path


def plot_domains(agg: list[dict[str, Any]], poi: list[dict[str, Any]], path: Path) -> Path:
    """One column per domain (and ``overall``): IQM with its CI per row label (top), and
    P(X+EGSW > X) with its CI per pair (bottom; 0.5 = no difference)."""
    plt = _plt()
    domains = list(dict.fromkeys(r["domain"] for r in agg))
    fig, axes = plt.subplots(2, len(domains), figsize=(4.2 * len(domains), 7), squeeze=False)
    for j, domain in enumerate(domains):
        rows = [r for r in agg if r["domain"] == domain]
        ax = axes[0, j]
        y = np.arange(len(rows))
        ax.errorbar(
            [r["iqm"] for r in rows],
            y,
            xerr=[[r["iqm"] - r["iqm_lo"] for r in rows], [r["iqm_hi"] - r["iqm"] for r in rows]],
            fmt="o",
            capsize=3,
        )
        ax.set_yticks(y, [r["label"] for r in rows])
        ax.set_title(f"{domain}\nIQM of normalised final score")
        ax.set_xlabel("normalised score")
        ax.grid(alpha=0.3)
        ax = axes[1, j]
        prow = [r for r in poi if r["domain"] == domain]
        y = np.arange(len(prow))
        ax.errorbar(
            [r["poi"] for r in prow],
            y,
            xerr=[[r["poi"] - r["lo"] for r in prow], [r["hi"] - r["poi"] for r in prow]],
            fmt="o",
            color="C2",
            capsize=3,
        )
        ax.axvline(0.5, color="grey", ls="--")
        ax.set_xlim(0, 1)
        ax.set_yticks(y, [f"{r['x']} > {r['y']}" for r in prow])
        ax.set_title(f"{domain}\nP(X+EGSW > X)")
        ax.set_xlabel("probability of improvement (0.5: none)")
        ax.grid(alpha=0.3)
    fig.suptitle(
        "normalised score: 0 = random policy, 1 = reference; points: estimate; "
        "bars: 95% stratified-bootstrap CI over runs (rliable)"
    )
    return _save(fig, path)


def _domains(runs: list[dict[str, Any]]) -> list[str]:
    return sorted({r["domain"] for r in runs})


def plot_performance_profiles(runs: list[dict[str, Any]], path: Path, *, reps: int = 500) -> Path:
    """Score distributions (fraction of runs with normalised final score > tau) with 95% CIs, per domain."""
    from rliable import library as rly
    from rliable import plot_utils

    plt = _plt()
    domains = _domains(runs)
    fig, axes = plt.subplots(1, len(domains), figsize=(5 * len(domains), 4), squeeze=False)
    for ax, domain in zip(axes[0], domains, strict=True):
        rs = [r for r in runs if r["domain"] == domain]
        scores = {}
        for v in sorted({r["variant"] for r in rs}):
            got = score_matrix(rs, v)
            if got is not None:
                scores[v] = got[0]
        allv = np.concatenate([s.ravel() for s in scores.values()])
        taus = np.linspace(min(0.0, allv.min()), max(1.0, allv.max()), 41)
        with seeded_numpy(0):
            profiles, cis = rly.create_performance_profile(scores, taus, reps=reps)
        plot_utils.plot_performance_profiles(
            profiles,
            taus,
            performance_profile_cis=cis,
            ax=ax,
            xlabel=r"normalised score ($\tau$)",
            ylabel=r"fraction of runs > $\tau$",
            labelsize="medium",
            ticklabelsize="medium",
        )
        ax.set_title(f"{domain} (band: 95% bootstrap CI)")
        ax.legend(fontsize="small")  # rliable labels each line with its method
    return _save(fig, path)


def plot_sample_efficiency(runs: list[dict[str, Any]], path: Path, *, reps: int = 500) -> Path:
    """IQM normalised score against the fraction of the training budget, 95% CI bands, per domain."""
    from rliable import plot_utils

    plt = _plt()
    domains = _domains(runs)
    fig, axes = plt.subplots(1, len(domains), figsize=(5 * len(domains), 4), squeeze=False)
    for ax, domain in zip(axes[0], domains, strict=True):
        point, interval = sample_efficiency(runs, domain, reps=reps)
        plot_utils.plot_sample_efficiency_curve(
            SE_POINTS,
            point,
            interval,
            algorithms=list(point),
            ax=ax,
            xlabel="fraction of the training budget",
            ylabel="IQM normalised score",
            labelsize="medium",
            ticklabelsize="medium",
        )
        ax.set_title(f"{domain} (band: 95% bootstrap CI)")
        ax.legend(fontsize="small")  # rliable labels each line with its method
    return _save(fig, path)


def plot_training_reward(
    curves: dict[str, dict[str, list[tuple[np.ndarray, np.ndarray]]]], path: Path
) -> Path:
    """The paper's figure: mean training reward (of the update's sampled completions) against the
    update step, one panel per environment, mean over seeds with a +-1 standard deviation band.

    ``curves`` maps env id -> variant -> per-seed ``(update_steps, reward)`` arrays.
    """
    plt = _plt()
    envs = sorted(curves)
    fig, axes = plt.subplots(1, len(envs), figsize=(5.5 * len(envs), 4), squeeze=False)
    for ax, env_id in zip(axes[0], envs, strict=True):
        for variant, seeds in sorted(curves[env_id].items()):
            n = min(len(x) for x, _ in seeds)  # every seed has the same number of updates
            steps = seeds[0][0][:n]
            ys = np.stack([y[:n] for _, y in seeds])
            mean, std = ys.mean(0), ys.std(0)
            ax.plot(steps, mean, label=f"{variant} (n={len(seeds)})")
            ax.fill_between(steps, mean - std, mean + std, alpha=0.2)
        ax.set_xlabel("update step")
        ax.set_ylabel("training reward (mean over the update's completions)")
        ax.set_title(f"{env_id}\nline: mean over seeds; band: +-1 std over seeds", fontsize="medium")
        ax.grid(alpha=0.3)
        ax.legend()
    return _save(fig, path)


def plot_sensitivity(
    grid: dict[str, np.ndarray],
    alphas: list[float],
    temperatures: list[float],
    title: str,
    path: Path,
    references: dict[str, float] | None = None,
) -> Path:
    """Heatmaps (one per entry of ``grid``, e.g. final score and AUC) over alpha (rows) x temperature (columns).

    With ``references`` (plain GRPO's value per entry), the colours diverge around it (blue above,
    red below, symmetric range) and the title states it, so a narrow colour range cannot make
    equal cells look different from the baseline.
    """
    plt = _plt()
    fig, axes = plt.subplots(1, len(grid), figsize=(4.5 * len(grid), 3.8), squeeze=False)
    for ax, (name, values) in zip(axes[0], grid.items(), strict=True):
        ref = None if references is None else references.get(name)
        if ref is None:
            im = ax.imshow(values, cmap="viridis", origin="lower", aspect="auto")
        else:
            half = max(float(np.nanmax(np.abs(values - ref))), 1e-9)
            im = ax.imshow(
                values, cmap="RdBu", vmin=ref - half, vmax=ref + half, origin="lower", aspect="auto"
            )
        for i in range(values.shape[0]):
            for j in range(values.shape[1]):
                if np.isfinite(values[i, j]):
                    dark = ref is None or abs(values[i, j] - ref) > 0.6 * half  # white text on dark cells
                    color = "w" if dark else "k"
                    ax.text(j, i, f"{values[i, j]:.2f}", ha="center", va="center", color=color, fontsize=8)
        ax.set_xticks(range(len(temperatures)), [f"{t:g}" for t in temperatures])
        ax.set_yticks(range(len(alphas)), [f"{a:g}" for a in alphas])
        ax.set_xlabel("temperature P")
        ax.set_ylabel("alpha")
        ax.set_title(f"{title}: {name}" + ("" if ref is None else f"\n(plain GRPO: {ref:.2f})"))
        fig.colorbar(im, ax=ax)
    return _save(fig, path)
