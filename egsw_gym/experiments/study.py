"""The study: every domain x algorithm x seed the question "does EGSW help, and where?" needs.

A study is a *plan*, a sorted list of :class:`StudyRun` (one per environment, variant and seed),
run through the compare machinery (:func:`~egsw_gym.experiments.compare.run_parallel`, one
process and one torch thread per run). Each run lives in ``OUT/<env>/<variant>/seed<k>/``:

- resumable: a run whose ``result.json`` exists is skipped (after checking that its
  ``config.json`` is the planned one, so a changed budget never mixes with old results);
- shardable: :func:`shard` splits the plan into ``n`` disjoint parts that cover it exactly, the
  same on every machine (it depends on the plan only), balanced by estimated run time;
- mergeable: :func:`merge_runs` copies the finished runs of several output directories into one,
  which :func:`egsw_gym.experiments.study_report.write_study_report` then reports on.

Suites (:data:`SUITES`): ``default`` (control, MuJoCo and language models; budgets in
:data:`BUDGETS`, sized so that the whole suite takes at most about 3 hours on 2 cores),
``sensitivity`` (GRPO+EGSW's alpha x temperature grid and step vs trajectory mode on CartPole and
Arithmetic), ``lm`` (GRPO vs GRPO+EGSW on three language tasks with 20 paired seeds) and
``controls`` (learning-rate, up-weighting, entropy-only, alpha and top-20%-entropy controls on
Arithmetic, :mod:`egsw_gym.experiments.controls`). ``full=True`` uses the presets' budgets, and
1M steps on MuJoCo (RL Zoo, CleanRL). Language-model runs of one study share their warm starts
(``OUT/warm_starts/``, :func:`~egsw_gym.llm.warm_start_artifact.cached_warm_start`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from egsw_gym.experiments.compare import run_parallel
from egsw_gym.experiments.controls import CONTROL_BUDGETS, CONTROL_ENVS, control_variants
from egsw_gym.experiments.presets import RunSpec, _merge, find_env_preset, load_suite, make_run_spec
from egsw_gym.experiments.rundir import read_json_file

__all__ = [
    "DOMAINS",
    "BUDGETS",
    "FULL_BUDGETS",
    "FULL_EXTRA_ENVS",
    "SUITES",
    "StudyRun",
    "domain_of",
    "plan_study",
    "shard",
    "parse_shard",
    "run_study",
    "merge_runs",
    "estimate_wall_s",
]

#: domain -> environments of the default study
DOMAINS: dict[str, list[str]] = {
    "control": ["CartPole-v1", "Acrobot-v1", "Pendulum-v1"],
    "mujoco": ["HalfCheetah-v5", "Hopper-v5"],
    "llm": ["egsw/Arithmetic-v0", "egsw/Countdown-v0"],
}

# Per-run budgets of the default suite: (n_timesteps, eval_freq). Sized from single-thread runs
# timed on this (shared, loaded) 2-core machine with `nice` (benchmarks/study_timing.py, steps per
# second in SPEED below), so that 5 seeds of every variant fit in about 3 hours on 2 cores.
# MuJoCo: 100k steps, 10% of the 1M steps RL Zoo and CleanRL report (FULL_BUDGETS uses 1M);
# GRPO collects 32 whole episodes (up to 32k steps) per update there, so 100k is ~3-10 updates:
# enough to see the direction of EGSW's effect early in training, not asymptotic performance.
BUDGETS: dict[str, tuple[int, int]] = {
    "CartPole-v1": (100_000, 10_000),  # = the preset; RL Zoo's PPO reaches 500 in 100k
    "Acrobot-v1": (100_000, 10_000),  # = the preset (RL Zoo trains PPO 1M)
    "Pendulum-v1": (200_000, 20_000),  # preset 300k; RL Zoo's PPO 100k (-172)
    "HalfCheetah-v5": (100_000, 10_000),
    "Hopper-v5": (100_000, 10_000),
    "egsw/Arithmetic-v0": (500_000, 50_000),  # preset 1M tokens (the demo's learning check)
    "egsw/Countdown-v0": (500_000, 50_000),
}
#: ``--full`` adds these environments (a third MuJoCo task: too long for the 3-hour default)
FULL_EXTRA_ENVS: list[str] = ["Walker2d-v5"]
#: ``--full``: the presets' budgets, and 1M environment steps on MuJoCo (RL Zoo, CleanRL)
FULL_BUDGETS: dict[str, tuple[int, int]] = {
    "HalfCheetah-v5": (1_000_000, 50_000),
    "Hopper-v5": (1_000_000, 50_000),
    "Walker2d-v5": (1_000_000, 50_000),
}
#: measured single-thread training speed (environment steps, or generated tokens, per second) of
#: (env, base algorithm), and seconds per evaluation; only used to order and shard runs and to
#: estimate wall time. Timed at a load average of ~4 on 2 cores (6 users).
SPEED: dict[tuple[str, str], float] = {
    ("CartPole-v1", "ppo"): 1950.0,
    ("CartPole-v1", "grpo"): 9000.0,
    ("Acrobot-v1", "ppo"): 2700.0,
    ("Acrobot-v1", "grpo"): 5900.0,
    ("Pendulum-v1", "ppo"): 1250.0,
    ("Pendulum-v1", "grpo"): 3700.0,
    ("HalfCheetah-v5", "ppo"): 550.0,
    ("HalfCheetah-v5", "grpo"): 6200.0,
    ("Hopper-v5", "ppo"): 980.0,
    ("Hopper-v5", "grpo"): 5700.0,
    ("Walker2d-v5", "ppo"): 550.0,  # not timed: like HalfCheetah (20 epochs, batch 32)
    ("Walker2d-v5", "grpo"): 5700.0,
    ("egsw/Arithmetic-v0", "grpo"): 6000.0,  # README: 1M tokens in ~2.5 min per run, 2 in parallel
    ("egsw/Countdown-v0", "grpo"): 3000.0,  # longer prompts and completions than Arithmetic
    ("egsw/ReasoningGym-v0", "grpo"): 4700.0,  # basic_arithmetic: 0.78x Arithmetic's CPU time per token
}
EVAL_S: dict[str, float] = {
    "CartPole-v1": 0.7,
    "Acrobot-v1": 3.5,
    "Pendulum-v1": 2.0,
    "HalfCheetah-v5": 2.5,
    "Hopper-v5": 2.5,
    "Walker2d-v5": 2.5,
}
_DEFAULT_SPEED, _DEFAULT_EVAL_S, _STARTUP_S = 1000.0, 5.0, 5.0

# The sensitivity suite: GRPO+EGSW's alpha x temperature grid (the preset's mode), the other mode at
# the preset's alpha and temperature, the paper's weights summing to 1 per set (EGSW(weight_sum="one"))
# at the same setting, plain GRPO as the reference and SR-GRPO (GRPO(advantage="sr_grpo")) as a
# baseline, on one control and one LM task.
SENSITIVITY_ENVS = ["CartPole-v1", "egsw/Arithmetic-v0"]
SENSITIVITY_ALPHAS = (0.0, 0.05, 0.1, 0.3)
SENSITIVITY_TEMPERATURES = (0.5, 1.0, 2.0, 4.0)
SENSITIVITY_BUDGETS: dict[str, tuple[int, int]] = {
    "CartPole-v1": (100_000, 10_000),
    "egsw/Arithmetic-v0": (300_000, 50_000),
}
# The lm suite: the paired comparison with the power the default suite's 5 seeds lack.
# basic_arithmetic: reasoning-gym's sums of two 2-digit numbers (docs/language_models.md).
BASIC_ARITHMETIC = {
    "dataset": "basic_arithmetic",
    "config": {
        "min_terms": 2,
        "max_terms": 2,
        "min_digits": 2,
        "max_digits": 2,
        "operators": ["+"],
        "allow_parentheses": False,
        "allow_negation": False,
    },
}
LM_ENVS = ["egsw/Arithmetic-v0", "egsw/Countdown-v0", "egsw/ReasoningGym-v0"]
LM_BUDGETS: dict[str, tuple[int, int]] = {e: (500_000, 50_000) for e in LM_ENVS}
#: per-environment overrides of the lm suite. basic_arithmetic's warm start: 350 steps (of the
#: preset's 500-step schedule), the median of where "stop at 12% sampled accuracy" stopped on it
#: for seeds 0-4 (475, 225, 350, 500 without reaching it, 350)
LM_OVERRIDES: dict[str, dict[str, Any]] = {
    "egsw/ReasoningGym-v0": {"env_kwargs": BASIC_ARITHMETIC, "warm_start_steps": 350},
}
SUITES = ("default", "sensitivity", "lm", "controls")
#: seeds a suite runs when none are given
DEFAULT_SEEDS = {"default": 5, "sensitivity": 3, "lm": 20, "controls": 10}


@dataclass(frozen=True)
class StudyRun:
    """One run of a study.

    Parameters
    ----------
    domain : str
        ``control``, ``mujoco`` or ``llm`` (see :func:`domain_of`).
    variant : str
        Row label and directory name, e.g. ``grpo-egsw`` (the preset's EGSW mode) or
        ``grpo-egsw-alt`` (the other mode); the mode itself is in the run's ``config.json``.
    spec : RunSpec
        What :func:`~egsw_gym.experiments.runner.train_run` trains.
    """

    domain: str
    variant: str
    spec: RunSpec

    @property
    def key(self) -> str:
        """``<env>/<variant>/seed<k>``: the run's directory relative to the study's output directory."""
        return f"{self.spec.env_id.replace('/', '_')}/{self.variant}/seed{self.spec.seed}"

    @property
    def est_s(self) -> float:
        """Estimated single-thread wall time in seconds (training plus evaluations)."""
        s = self.spec
        speed = SPEED.get((s.env_id, s.base_algo), _DEFAULT_SPEED)
        evals = s.n_timesteps // max(s.eval_freq, 1) + 2
        return _STARTUP_S + s.n_timesteps / speed + evals * EVAL_S.get(s.env_id, _DEFAULT_EVAL_S)


def domain_of(env_id: str) -> str:
    """The domain of an environment: its :data:`DOMAINS` entry, else its preset family."""
    for domain, envs in DOMAINS.items():
        if env_id in envs:
            return domain
    for family, domain in (("classic", "control"), ("mujoco", "mujoco"), ("llm", "llm")):
        if env_id in load_suite(family):
            return domain
    raise ValueError(f"no domain for env {env_id!r}: add it to DOMAINS in egsw_gym/experiments/study.py")


def _other_mode(mode: str) -> str:
    return "trajectory" if mode == "step" else "step"


def _variants_default(env_id: str, domain: str, seed: int) -> list[tuple[str, str, dict[str, Any]]]:
    """(variant, algo, egsw overrides) rows of the default suite for one environment.

    ``<algo>-egsw`` uses the preset's EGSW mode; ``<algo>-egsw-alt`` the other mode (an extra row
    at the same budget), except PPO's step mode on one environment, where every step-wise set has
    size 1 (PPO refuses it: the weights would all be 1).
    """
    bases = ["grpo"] if domain == "llm" else ["ppo", "grpo"]
    rows: list[tuple[str, str, dict[str, Any]]] = []
    for base in bases:
        rows.append((base, base, {}))
        rows.append((f"{base}-egsw", f"{base}-egsw", {}))
        spec = make_run_spec(f"{base}-egsw", env_id, seed)
        other = _other_mode(spec.egsw.mode)
        if not (base == "ppo" and other == "step" and spec.n_envs < 2):
            rows.append((f"{base}-egsw-alt", f"{base}-egsw", {"mode": other}))
    return rows


def _fmt(x: float) -> str:
    return f"{x:g}"


def _variants_sensitivity(env_id: str, seed: int) -> list[tuple[str, str, dict[str, Any]]]:
    preset = make_run_spec("grpo-egsw", env_id, seed).egsw
    # Plain GRPO, and SR-GRPO (softmax-weighted group return as the advantage) as a baseline.
    rows: list[tuple[str, str, dict[str, Any]]] = [("grpo", "grpo", {}), ("grpo-sr", "grpo-sr", {})]
    for alpha in SENSITIVITY_ALPHAS:
        for temp in SENSITIVITY_TEMPERATURES:
            rows.append(
                (
                    f"grpo-egsw-a{_fmt(alpha)}-P{_fmt(temp)}",
                    "grpo-egsw",
                    {"alpha": alpha, "temperature": temp},
                )
            )
    other = _other_mode(preset.mode)
    rows.append(
        (
            f"grpo-egsw-{other}-a{_fmt(preset.alpha)}-P{_fmt(preset.temperature)}",
            "grpo-egsw",
            {"mode": other},
        )
    )
    # The paper's normalisation (weights summing to 1 in a set, EGSW(weight_sum="one")) at the
    # preset's alpha, P and mode: on top of GRPO's mean it scales the policy term by 1/G.
    rows.append(
        (
            f"grpo-egsw-sum1-a{_fmt(preset.alpha)}-P{_fmt(preset.temperature)}",
            "grpo-egsw",
            {"weight_sum": "one"},
        )
    )
    return rows


def _suite_envs_budgets(suite: str, full: bool) -> tuple[list[str], dict[str, tuple[int, int]]]:
    if suite == "default":
        return [e for d in DOMAINS.values() for e in d] + (FULL_EXTRA_ENVS if full else []), BUDGETS
    return {
        "sensitivity": (list(SENSITIVITY_ENVS), SENSITIVITY_BUDGETS),
        "lm": (list(LM_ENVS), LM_BUDGETS),
        "controls": (list(CONTROL_ENVS), CONTROL_BUDGETS),
    }[suite]


def _suite_rows(suite: str, env_id: str, domain: str) -> list[tuple[str, str, dict[str, Any], dict[str, Any]]]:
    """(variant, algo, EGSW overrides, algorithm-block overrides) of one environment of a suite."""
    if suite == "default":
        return [(*r, {}) for r in _variants_default(env_id, domain, 0)]
    if suite == "sensitivity":
        return [(*r, {}) for r in _variants_sensitivity(env_id, 0)]
    if suite == "lm":
        return [("grpo", "grpo", {}, {}), ("grpo-egsw", "grpo-egsw", {}, {})]
    return control_variants(find_env_preset(env_id)["grpo"], make_run_spec("grpo-egsw", env_id, 0).egsw)


def plan_study(
    suite: str = "default",
    *,
    full: bool = False,
    seeds: list[int] | None = None,
    envs: list[str] | None = None,
    variants: list[str] | None = None,
    overrides: dict[str, Any] | None = None,
) -> list[StudyRun]:
    """The runs of a study, sorted by their :attr:`StudyRun.key`.

    Parameters
    ----------
    suite : {"default", "sensitivity", "lm", "controls"}
        Which study.
    full : bool
        The presets' own budgets (and 1M steps on MuJoCo) instead of :data:`BUDGETS`.
    seeds : list of int, optional
        Default (:data:`DEFAULT_SEEDS`): 0-4 (``default``), 0-2 (``sensitivity``), 0-19 (``lm``),
        0-9 (``controls``).
    envs, variants : list of str, optional
        Keep only these environments / variant names of the suite (unknown names are an error).
    overrides : dict, optional
        Preset overrides applied to every run on top of the study's budgets (``--set``).
    """
    if suite not in SUITES:
        raise ValueError(f"suite must be one of {list(SUITES)}, got {suite!r}")
    seeds = list(range(DEFAULT_SEEDS[suite])) if seeds is None else list(seeds)
    suite_envs, budgets = _suite_envs_budgets(suite, full)
    budgets = {} if full else budgets
    if full:
        budgets = {**budgets, **FULL_BUDGETS}
    if envs is not None:
        unknown = sorted(set(envs) - set(suite_envs))
        if unknown:
            raise ValueError(f"--envs {unknown} are not in the {suite!r} suite; its envs: {suite_envs}")
        suite_envs = [e for e in suite_envs if e in envs]
    plan, seen_variants = [], set()
    for env_id in suite_envs:
        domain = domain_of(env_id)
        for variant, algo, egsw_over, algo_over in _suite_rows(suite, env_id, domain):
            seen_variants.add(variant)
            if variants is not None and variant not in variants:
                continue
            over: dict[str, Any] = {}
            if env_id in budgets:
                over["n_timesteps"], over["eval_freq"] = budgets[env_id]
            if suite == "lm" and env_id in LM_OVERRIDES:
                over.update(json.loads(json.dumps(LM_OVERRIDES[env_id])))
            if algo_over:
                over[algo.split("-")[0]] = dict(algo_over)
            if egsw_over:
                # The variant's EGSW setting refines the algorithm block's own `egsw` (its mode,
                # alpha, temperature are the defaults the variant departs from).
                base = algo.split("-")[0]
                over.setdefault(base, {})["egsw"] = dict(egsw_over)
            over = _merge(over, json.loads(json.dumps(overrides or {})))
            for seed in seeds:
                spec = make_run_spec(algo, env_id, seed, over)
                if egsw_over and spec.egsw is not None:
                    # `--set egsw.*` would override the variant: the variant's own setting wins.
                    spec = replace(spec, egsw=replace(spec.egsw, **egsw_over))
                plan.append(StudyRun(domain, variant, spec))
    if variants is not None:
        unknown = sorted(set(variants) - seen_variants)
        if unknown:
            raise ValueError(
                f"--variants {unknown} are not in the {suite!r} suite; its variants: {sorted(seen_variants)}"
            )
    return sorted(plan, key=lambda r: r.key)


def parse_shard(text: str) -> tuple[int, int]:
    """``"2/4"`` -> ``(2, 4)``: shard 2 of 4, counted from 1."""
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard expects i/n with integers, e.g. 1/4, got {text!r}") from None
    if not (n >= 1 and 1 <= i <= n):
        raise ValueError(f"--shard i/n needs 1 <= i <= n, got {text!r}")
    return i, n


def shard(plan: list[StudyRun], i: int, n: int) -> list[StudyRun]:
    """Shard ``i`` of ``n`` (1-based) of ``plan``: disjoint, together exactly the plan, balanced.

    Longest-processing-time-first: runs, in order of decreasing estimated time (ties by key), go
    to the shard with the least estimated work so far (ties to the lowest index), so the split
    depends on the plan alone and the shards' totals differ by at most one run's estimate.
    """
    if not (n >= 1 and 1 <= i <= n):
        raise ValueError(f"shard needs 1 <= i <= n, got i={i}, n={n}")
    return sorted(_lpt(plan, n)[1][i - 1], key=lambda r: r.key)


def _lpt(plan: list[StudyRun], n: int) -> tuple[list[float], list[list[StudyRun]]]:
    """Longest-first greedy split of ``plan`` into ``n`` bins: (estimated load, runs) per bin."""
    loads: list[float] = [0.0] * n
    parts: list[list[StudyRun]] = [[] for _ in range(n)]
    for run in sorted(plan, key=lambda r: (-r.est_s, r.key)):
        k = loads.index(min(loads))
        loads[k] += run.est_s
        parts[k].append(run)
    return loads, parts


def estimate_wall_s(plan: list[StudyRun], workers: int) -> float:
    """Wall time of ``plan`` on ``workers`` single-thread processes, longest runs first (LPT)."""
    return max(_lpt(plan, max(1, workers))[0])


def _check_finished(run: StudyRun, run_dir: Path) -> bool:
    """Whether ``run_dir`` holds this run, finished; a finished run with another config is an error."""
    if not (run_dir / "result.json").exists():
        return False
    stored = read_json_file(run_dir / "config.json")
    planned = json.loads(json.dumps(run.spec.to_dict(), default=float))
    if stored != planned:
        changed = sorted(k for k in planned if stored.get(k) != planned[k])
        raise ValueError(
            f"{run_dir} holds a finished run with another config (differs in {changed}); "
            "use a new --out for a study with other settings (e.g. --full), or delete that run"
        )
    return True


def run_study(
    plan: list[StudyRun], out_dir: str | Path, *, workers: int | None = None, progress: bool = True
) -> dict[str, int]:
    """Train the unfinished runs of ``plan`` into ``out_dir``, longest first, ``workers`` at a time.

    Returns
    -------
    dict
        ``{"planned": ..., "skipped": ..., "trained": ...}``.
    """
    out_dir = Path(out_dir)
    todo = [r for r in plan if not _check_finished(r, out_dir / r.key)]
    todo.sort(key=lambda r: (-r.est_s, r.key))
    run_parallel(
        [(r.spec, str(out_dir / r.key)) for r in todo],
        jobs=workers,
        progress=progress,
        run_kwargs={"warm_start_dir": str(out_dir / "warm_starts")},
    )
    return {"planned": len(plan), "skipped": len(plan) - len(todo), "trained": len(todo)}


def merge_runs(sources: list[str | Path], dest: str | Path) -> dict[str, int]:
    """Copy the finished runs of several study output directories (one per machine) into ``dest``.

    See :func:`egsw_gym.experiments.merge.merge_runs`: every source file is checked (regular
    files only, sizes capped, each run's recorded env, algorithm and seed matching its place),
    nothing is written on any problem, and nothing is written outside ``dest`` or through a link.

    Returns
    -------
    dict
        ``{"copied": ..., "duplicate": ..., "unfinished": ...}``.
    """
    from egsw_gym.experiments.merge import merge_runs as merge

    return merge(sources, dest)
