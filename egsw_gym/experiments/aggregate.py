"""Statistics of a study across environments and domains (rliable): normalised scores, IQM and
optimality gap, probability of improvement, performance profiles, sample-efficiency curves.

Scores are normalised per environment as ``(score - random) / (reference - random)``
(:data:`REFERENCE_SCORES`): 0 is the uniform random policy, 1 the reference. Every interval is
rliable's 95% stratified bootstrap (runs resampled within each environment).
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from egsw_gym.experiments.presets import ALGORITHMS
from egsw_gym.experiments.report import collect_runs
from egsw_gym.experiments.study import domain_of

__all__ = [
    "REFERENCE_SCORES",
    "normalize",
    "collect_study",
    "score_matrix",
    "egsw_pairs",
    "aggregate_scores",
    "improvement_probabilities",
    "sample_efficiency",
    "SE_POINTS",
    "seeded_numpy",
]

#: env id -> (random-policy score, reference score). Normalised score = (x - random) / (ref - random).
REFERENCE_SCORES: dict[str, tuple[float, float]] = {
    # Random: mean return of 100 uniform-random episodes, measured here (benchmarks/random_scores.py;
    # standard errors 1.2, 1.9, 29, 7.2, 1.8, 0.8). Reference: RL Zoo's PPO, the "ppo" rows of
    # DLR-RM/rl-baselines3-zoo benchmark.md (one trained agent each; budgets in brackets), MuJoCo
    # rows on the -v3 envs, whose rewards the -v5 envs keep.
    "CartPole-v1": (23.68, 500.0),  # reference: the env's maximum return, reached by PPO (100k)
    "Acrobot-v1": (-497.08, -73.506),  # PPO (1M)
    "Pendulum-v1": (-1207.56, -172.225),  # PPO (100k)
    "HalfCheetah-v5": (-282.49, 5819.099),  # PPO on HalfCheetah-v3 (1M)
    "Hopper-v5": (16.67, 2410.435),  # PPO on Hopper-v3 (1M)
    "Walker2d-v5": (1.77, 3478.798),  # PPO on Walker2d-v3 (1M)
    # Language-model tasks: held-out greedy exact-match accuracy is already on [0, 1]; 0 (the
    # untrained and the random policy solve nothing) and 1 (every problem solved) are the anchors,
    # not a measured warm-start baseline (the warm start's accuracy is the curve's first point).
    "egsw/Arithmetic-v0": (0.0, 1.0),
    "egsw/Countdown-v0": (0.0, 1.0),
    "egsw/GSM8K-v0": (0.0, 1.0),
    "egsw/ReasoningGym-v0": (0.0, 1.0),
}

#: points (fractions of each run's budget) of the sample-efficiency curves
SE_POINTS = np.linspace(0.0, 1.0, 11)


def normalize(env_id: str, score: Any) -> Any:
    """``(score - random) / (reference - random)`` with the anchors of :data:`REFERENCE_SCORES`."""
    if env_id not in REFERENCE_SCORES:
        raise ValueError(
            f"no random/reference score for env {env_id!r}: add one to REFERENCE_SCORES in "
            "egsw_gym/experiments/aggregate.py (with its source)"
        )
    lo, hi = REFERENCE_SCORES[env_id]
    return (np.asarray(score, dtype=float) - lo) / (hi - lo)


def collect_study(out_dirs: list[str | Path]) -> list[dict[str, Any]]:
    """Every finished run under ``out_dirs``, with ``variant``, ``domain``, its EGSW config and
    normalised final score and curve (``curve["normalized"]``, ``curve["fraction"]`` of the budget)."""
    runs = []
    for out in out_dirs:
        for r in collect_runs(out, require_config=True):  # checked: regular files, caps, places
            run_dir = Path(r["run_dir"])
            cfg = r["config"]
            r["variant"] = run_dir.parent.name
            r["domain"] = domain_of(r["env_id"])
            r["egsw"] = cfg.get("egsw")
            r["n_timesteps"] = int(cfg["n_timesteps"])
            r["final_normalized"] = float(normalize(r["env_id"], r["final_eval_mean"]))
            r["curve"]["normalized"] = normalize(r["env_id"], r["curve"]["eval_mean"])
            r["curve"]["fraction"] = r["curve"]["timesteps"] / max(r["n_timesteps"], 1)
            runs.append(r)
    if not runs:
        raise FileNotFoundError(f"no finished runs (result.json) under {[str(d) for d in out_dirs]}")
    return runs


def _mode_label(run: dict[str, Any]) -> str | None:
    """``grpo-egsw[step]``: the algorithm and EGSW mode of an EGSW run, whatever its variant name."""
    return f"{run['algo']}[{run['egsw']['mode']}]" if run.get("egsw") else None


def score_matrix(
    runs: list[dict[str, Any]], label: str, *, by: str = "variant", value: str = "final"
) -> tuple[np.ndarray, list[str]] | None:
    """``(runs x environments [x SE_POINTS])`` normalised scores of one row label, for rliable.

    ``by="variant"`` groups by directory name, ``by="mode"`` by ``algo[mode]``. Seeds are those
    present in every environment of the label (rliable needs a full matrix). ``value="curve"``
    gives the normalised curve interpolated at :data:`SE_POINTS` of each run's budget.
    Returns ``None`` when no environment has a run of the label.
    """
    key = (lambda r: r["variant"]) if by == "variant" else _mode_label
    by_env: dict[str, dict[int, dict]] = defaultdict(dict)
    for r in runs:
        if key(r) == label:
            by_env[r["env_id"]][r["seed"]] = r
    if not by_env:
        return None
    envs = sorted(by_env)
    seeds = sorted(set.intersection(*(set(by_env[e]) for e in envs)))
    if not seeds:
        return None
    if value == "final":
        m = np.array([[by_env[e][s]["final_normalized"] for e in envs] for s in seeds])
    else:
        m = np.array(
            [
                [
                    np.interp(
                        SE_POINTS, by_env[e][s]["curve"]["fraction"], by_env[e][s]["curve"]["normalized"]
                    )
                    for e in envs
                ]
                for s in seeds
            ]
        )
    return m, envs


def _labels(runs: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Row labels: ``variant`` names, and ``mode`` labels (only when a mode label differs from its variants)."""
    variants = sorted({r["variant"] for r in runs})
    modes = sorted({m for r in runs if (m := _mode_label(r))})
    # A mode row adds information only if it pools runs from different variant names.
    modes = [m for m in modes if len({r["variant"] for r in runs if _mode_label(r) == m}) > 1]
    return {"variant": variants, "mode": modes}


def _domain_groups(runs: list[dict[str, Any]]) -> tuple[list[str], list[tuple[str, list[dict]]]]:
    """The domains of ``runs``, and ``(domain, its runs)`` per domain plus ``("overall", runs)``."""
    domains = sorted({r["domain"] for r in runs})
    groups = [(d, [r for r in runs if r["domain"] == d]) for d in domains]
    if len(domains) > 1:
        groups.append(("overall", runs))
    return domains, groups


def _interval_estimates(scores: dict[str, Any], func: Any, reps: int, seed: int) -> tuple[dict, dict]:
    """rliable's stratified-bootstrap estimates, reproducible: see :func:`seeded_numpy`."""
    from rliable import library as rly

    with seeded_numpy(seed):
        return rly.get_interval_estimates(scores, func, reps=reps)


@contextlib.contextmanager
def seeded_numpy(seed: int):
    """Seed NumPy's global generator for the block, then restore it.

    rliable 1.2 resamples with ``np.random.choice`` (the global generator) whatever
    ``random_state`` it is given, so seeding that generator is what makes its intervals repeatable.
    """
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def _iqm_og(x: np.ndarray) -> np.ndarray:
    from rliable import metrics

    return np.array([metrics.aggregate_iqm(x), metrics.aggregate_optimality_gap(x)])


def aggregate_scores(runs: list[dict[str, Any]], *, reps: int = 2000, seed: int = 0) -> list[dict[str, Any]]:
    """IQM and optimality gap of normalised final scores with 95% CIs, per domain and ``overall``.

    ``overall`` pools the environments of every domain, for the labels that ran in every domain.

    Returns
    -------
    list of dict
        One row per (domain, label): ``domain, label, n_envs, n_seeds, iqm, iqm_lo, iqm_hi, og,
        og_lo, og_hi``.
    """
    domains, groups = _domain_groups(runs)
    rows = []
    for domain, rs in groups:
        labels = _labels(rs)
        for by, names in labels.items():
            for label in names:
                if domain == "overall" and any(
                    not any(
                        (r["variant"] if by == "variant" else _mode_label(r)) == label
                        for r in runs
                        if r["domain"] == d
                    )
                    for d in domains
                ):
                    continue
                got = score_matrix(rs, label, by=by)
                if got is None:
                    continue
                m, envs = got
                point, ci = _interval_estimates({label: m}, _iqm_og, reps, seed)
                rows.append(
                    dict(
                        domain=domain,
                        label=label,
                        n_envs=len(envs),
                        n_seeds=m.shape[0],
                        iqm=point[label][0],
                        iqm_lo=ci[label][0, 0],
                        iqm_hi=ci[label][1, 0],
                        og=point[label][1],
                        og_lo=ci[label][0, 1],
                        og_hi=ci[label][1, 1],
                    )
                )
    return rows


def egsw_pairs(runs: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    """``(by, X+EGSW label, X label)`` pairs: every EGSW variant and mode row against its base algorithm."""
    labels = _labels(runs)
    plain = {r["variant"] for r in runs if not r.get("egsw") and r["variant"] == r["algo"]}
    pairs = []
    for by, names in labels.items():
        for label in names:
            algo = (
                label.split("[")[0]
                if by == "mode"
                else next((r["algo"] for r in runs if r["variant"] == label), label)
            )
            if algo not in ALGORITHMS or not ALGORITHMS[algo][1]:
                continue
            base = ALGORITHMS[algo][0]
            if base in plain:
                pairs.append((by, label, base))
    return pairs


def improvement_probabilities(
    runs: list[dict[str, Any]], *, reps: int = 2000, seed: int = 0
) -> list[dict[str, Any]]:
    """P(X+EGSW > X) on normalised final scores, with 95% CIs, per domain and ``overall``.

    rliable's probability of improvement: the Mann-Whitney U probability per environment (ties
    count half), averaged over the environments both ran on, with a stratified bootstrap.
    """
    from rliable import metrics

    domains, groups = _domain_groups(runs)
    rows = []
    for domain, rs in groups:
        for by, x_label, y_label in egsw_pairs(rs):
            gx, gy = score_matrix(rs, x_label, by=by), score_matrix(rs, y_label)
            if gx is None or gy is None:
                continue
            envs = sorted(set(gx[1]) & set(gy[1]))
            if not envs or (domain == "overall" and len({domain_of(e) for e in envs}) < len(domains)):
                continue
            x = gx[0][:, [gx[1].index(e) for e in envs]]
            y = gy[0][:, [gy[1].index(e) for e in envs]]
            name = f"{x_label} > {y_label}"
            point, ci = _interval_estimates(
                {name: (x, y)}, lambda a, b: np.array([metrics.probability_of_improvement(a, b)]), reps, seed
            )
            rows.append(
                dict(
                    domain=domain,
                    x=x_label,
                    y=y_label,
                    n_envs=len(envs),
                    poi=float(point[name][0]),
                    lo=float(ci[name][0, 0]),
                    hi=float(ci[name][1, 0]),
                )
            )
    return rows


def sample_efficiency(
    runs: list[dict[str, Any]], domain: str, *, reps: int = 500, seed: int = 0
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """IQM of the normalised score at each of :data:`SE_POINTS` with 95% CIs, per variant of ``domain``.

    Returns rliable's ``(point_estimates, interval_estimates)``: ``{variant: (n_points,)}`` and
    ``{variant: (2, n_points)}``.
    """
    from rliable import metrics

    rs = [r for r in runs if domain in ("overall", r["domain"])]
    scores = {}
    for label in _labels(rs)["variant"]:
        got = score_matrix(rs, label, value="curve")
        if got is not None:
            scores[label] = got[0]

    def iqm_per_point(x: np.ndarray) -> np.ndarray:
        return np.array([metrics.aggregate_iqm(x[..., k]) for k in range(x.shape[-1])])

    return _interval_estimates(scores, iqm_per_point, reps, seed)
