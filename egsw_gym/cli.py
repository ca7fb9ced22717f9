"""The ``egsw-gym`` command line: train, compare, plot, evaluate, demo.

Examples
--------
::

    egsw-gym train --algo ppo-egsw --env CartPole-v1 --seed 0 --out runs/one
    egsw-gym compare --suite classic --algos ppo,ppo-egsw,grpo,grpo-egsw --seeds 5 --out runs/classic
    egsw-gym plot runs/classic
    egsw-gym evaluate runs/one/CartPole-v1/ppo-egsw/seed0 --episodes 20
    egsw-gym demo
    egsw-gym study --dry-run                        # the default study's runs and estimated time
    egsw-gym study --workers 16                     # run it (resumable), then write docs/results
    egsw-gym study --shard 2/4 --out runs/study-2   # one machine's share; then `egsw-gym merge`
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np

from egsw_gym.algorithms import registry
from egsw_gym.algorithms.registry import ALGORITHMS, DEFAULT_ALGORITHMS, closest_name, get_algorithm
from egsw_gym.egsw import EGSW
from egsw_gym.experiments import study
from egsw_gym.experiments.compare import compare, run_dir_of
from egsw_gym.experiments.presets import SUITES, RunSpec, make_run_spec, parse_overrides
from egsw_gym.experiments.report import write_report
from egsw_gym.experiments.rundir import LIMITS as RUN_LIMITS
from egsw_gym.experiments.rundir import check_regular_file, read_json_file
from egsw_gym.experiments.runner import evaluate_model, train_run
from egsw_gym.experiments.study_report import write_study_report

__all__ = ["main", "build_parser", "DEMO"]

#: What ``egsw-gym demo`` runs: 4 CartPole runs of 100k steps and 2 arithmetic runs of 1M tokens.
DEMO = [
    dict(
        env_ids=["CartPole-v1"],
        algos=["ppo", "ppo-egsw"],
        seeds=[0, 1],
        overrides={"eval_freq": 20000, "eval_episodes": 10},
    ),
    dict(env_ids=["egsw/Arithmetic-v0"], algos=["grpo", "grpo-egsw"], seeds=[0], overrides={}),
]

DEMO_INTRO = (
    "egsw-gym demo: PPO vs PPO+EGSW on CartPole-v1 (2 seeds x 100k steps), then GRPO vs GRPO+EGSW on\n"
    "egsw/Arithmetic-v0 with a tiny language model (1 seed x 1M generated tokens, after a short\n"
    "supervised warm start). Runs go in parallel, one per core; each bar counts the runs' steps or tokens.\n"
    "It needs about 7.5 CPU-minutes: about 4 minutes on 2 idle cores, longer in proportion when other\n"
    "jobs share them (34 minutes with ~7 busy jobs on 2 cores). Finished runs are skipped on rerun.\n"
)
DEMO_NOTE = (
    "Scores can differ slightly from another machine's: CPUs with different instruction sets (AVX2,\n"
    "AVX-512, ...) sum floats in a different order, and RL amplifies those last-digit differences. The\n"
    "same machine and code reproduce the same numbers."
)


def _seeds(text: str) -> list[int]:
    """``"5"`` -> seeds 0..4; ``"0,3,7"`` -> those seeds."""
    if "," in text:
        return [int(s) for s in text.split(",") if s.strip()]
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError(f"--seeds must be >= 1 or a comma-separated list, got {text!r}")
    return list(range(n))


def _algos(text: str) -> list[str]:
    """``--algos``: comma-separated names of the algorithm table; a typo gets the closest name."""
    algos = [a.strip() for a in text.split(",") if a.strip()]
    valid = list(registry.ALGORITHMS)
    bad = [a for a in algos if a not in valid]
    if bad:
        close = {a: closest_name(a, valid) for a in bad}
        hints = [f"{c!r} for {a!r}" for a, c in close.items() if c]
        hint = f" (did you mean {', '.join(hints)}?)" if hints else ""
        raise argparse.ArgumentTypeError(f"unknown algorithm(s) {bad}{hint}; allowed: {', '.join(valid)}")
    return algos


def _algo(text: str) -> str:
    """``--algo``: one name of the algorithm table (the error lists them and the closest one)."""
    try:
        get_algorithm(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text


def _timesteps(text: str) -> int:
    """``--timesteps``: an integer >= 1 (``1e5`` and ``100_000`` are accepted)."""
    try:
        value = float(text.replace("_", ""))
    except ValueError:
        value = 0.0
    if not (value >= 1 and value == int(value)):
        raise argparse.ArgumentTypeError(f"must be a whole number of steps >= 1, got {text!r}")
    return int(value)


#: How runs choose their torch threads, for the command line's help.
THREADS_HELP = (
    "Threads: `train` runs with --threads torch threads (default 1: the small networks and the "
    "tiny language model train fastest on one thread, and torch's default of one thread per core "
    "is much slower on a busy machine); `compare`, `study` and `demo` run each run in its own "
    "process with one torch thread, --jobs/--workers processes at a time (default: one per core)."
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="egsw-gym",
        description="EGSW-augmented PPO and GRPO, from CartPole to LLMs.",
        epilog=THREADS_HELP,
    )
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser(
        "train", help="train one algorithm on one environment with its preset", epilog=THREADS_HELP
    )
    t.add_argument(
        "--algo", required=True, type=_algo, metavar="ALGO", help=f"one of {', '.join(ALGORITHMS)}"
    )
    t.add_argument("--env", required=True, help="environment id with a preset, e.g. CartPole-v1")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--out", default="runs/train", help="output directory (default: runs/train)")
    t.add_argument(
        "--set", action="append", metavar="KEY=VALUE", help="preset override, e.g. grpo.learning_rate=1e-3"
    )
    t.add_argument(
        "--timesteps",
        type=_timesteps,
        default=None,
        metavar="N",
        help="training budget in environment steps (tokens for language models); the same as "
        "--set n_timesteps=N (default: the preset's)",
    )
    t.add_argument("--progress", action="store_true", help="show a progress bar")
    t.add_argument(
        "--threads",
        type=_episodes,
        default=1,
        help="torch threads of the run (default 1, fastest for small networks; try more for a large model)",
    )

    c = sub.add_parser(
        "compare", help="algorithms x environments x seeds, with table and plots", epilog=THREADS_HELP
    )
    g = c.add_mutually_exclusive_group(required=True)
    g.add_argument("--suite", choices=list(SUITES))
    g.add_argument("--envs", help="comma-separated environment ids")
    c.add_argument(
        "--algos",
        type=_algos,
        default=list(DEFAULT_ALGORITHMS),
        help=f"comma-separated, of {', '.join(ALGORITHMS)} (default: {','.join(DEFAULT_ALGORITHMS)})",
    )
    c.add_argument("--seeds", type=_seeds, default=[0, 1, 2], help="a count (5) or a list (0,3,7); default 3")
    c.add_argument("--out", required=True)
    c.add_argument("--set", action="append", metavar="KEY=VALUE", help="preset override for every run")
    c.add_argument(
        "--jobs", type=int, default=None, help="parallel runs, one torch thread each (default: all cores)"
    )

    pl = sub.add_parser("plot", help="(re)write the table and plots of a compare output directory")
    pl.add_argument("out")
    pl.add_argument(
        "--allow-mixed-versions",
        action="store_true",
        help="report runs made by different code versions together (the table then says so)",
    )

    e = sub.add_parser("evaluate", help="evaluate a trained run directory")
    e.add_argument("run_dir", help="a directory written by train/compare (holds config.json and model.zip)")
    e.add_argument("--episodes", type=_episodes, default=None, help="evaluation episodes / problems (>= 1)")

    _add_study_parsers(sub)

    d = sub.add_parser(
        "demo", help="the main job: PPO vs PPO+EGSW on CartPole, GRPO vs GRPO+EGSW on arithmetic"
    )
    d.add_argument("--out", default="runs/demo")
    d.add_argument(
        "--jobs", type=int, default=None, help="parallel runs, one torch thread each (default: all cores)"
    )
    return p


def _add_study_parsers(sub) -> None:
    s = sub.add_parser(
        "study",
        help="the cross-domain study (control, MuJoCo, LMs): resumable, shardable, with rliable statistics",
        description="Train every run of a study suite that is not finished yet, then write its tables, "
        "CSV and figures. Runs are single-threaded processes, `--workers` at a time.",
    )
    s.add_argument("--suite", choices=list(study.SUITES), default="default")
    s.add_argument("--full", action="store_true", help="the presets' budgets and 1M MuJoCo steps")
    s.add_argument("--out", default=None, help="run directory (default runs/study, or runs/study-<suite>)")
    s.add_argument(
        "--results", default=None, help="where to write the report (default docs/results[/<suite>])"
    )
    s.add_argument("--workers", type=int, default=None, help="parallel runs (default: all cores)")
    s.add_argument(
        "--shard", default=None, metavar="I/N", help="run only shard I of N (1-based); report after merge"
    )
    s.add_argument(
        "--seeds", type=_seeds, default=None, help="a count or a list (default 5; sensitivity 3, lm 20, controls 10)"
    )
    s.add_argument("--envs", default=None, help="comma-separated subset of the suite's environments")
    s.add_argument("--variants", default=None, help="comma-separated subset of the suite's variants")
    s.add_argument("--set", action="append", metavar="KEY=VALUE", help="preset override for every run")
    s.add_argument("--reps", type=int, default=2000, help="bootstrap resamples of the report (default 2000)")
    s.add_argument(
        "--allow-mixed-versions",
        action="store_true",
        help="report runs made by different code versions together (the report then says so)",
    )
    mode = s.add_mutually_exclusive_group()
    mode.add_argument("--dry-run", action="store_true", help="list the runs and the estimated time only")
    mode.add_argument("--report-only", action="store_true", help="write the report of the finished runs only")
    mode.add_argument("--no-report", action="store_true", help="train only")

    m = sub.add_parser("merge", help="copy the finished runs of several study directories into one")
    m.add_argument("sources", nargs="+", help="study output directories (one per machine)")
    m.add_argument(
        "--out", required=True, help="the merged directory (then: egsw-gym study --report-only --out)"
    )


def _csv(text: str | None) -> list[str] | None:
    return None if text is None else [x.strip() for x in text.split(",") if x.strip()]


def _run_study(args: argparse.Namespace) -> None:
    default = args.suite == "default"
    out = args.out or ("runs/study" if default else f"runs/study-{args.suite}")
    results = args.results or ("docs/results" if default else f"docs/results/{args.suite}")
    plan = study.plan_study(
        args.suite,
        full=args.full,
        seeds=args.seeds,
        envs=_csv(args.envs),
        variants=_csv(args.variants),
        overrides=parse_overrides(args.set),
    )
    if args.shard:
        plan = study.shard(plan, *study.parse_shard(args.shard))
    workers = args.workers or os.cpu_count() or 1
    if args.dry_run:
        for r in plan:
            print(f"{r.key:60s} {r.spec.n_timesteps:>9d} steps  ~{r.est_s:5.0f} s")
        wall = study.estimate_wall_s(plan, workers)
        print(
            f"{len(plan)} runs, ~{sum(r.est_s for r in plan) / 3600:.1f} core-hours; "
            f"~{wall / 3600:.1f} h wall on {workers} workers (estimate from SPEED in study.py)"
        )
        return
    if not args.report_only:
        counts = study.run_study(plan, out, workers=workers)
        print(f"{counts['trained']} runs trained, {counts['skipped']} already finished, in {out}")
    if args.shard and not args.report_only:
        print(
            f"shard {args.shard} done: `egsw-gym merge <every shard's --out> --out runs/study`, then "
            "`egsw-gym study --report-only --out runs/study`"
        )
        return
    if args.no_report:
        return
    for path in write_study_report([out], results, reps=args.reps, allow_mixed_versions=args.allow_mixed_versions):
        print(f"wrote {path}")


def _episodes(text: str) -> int:
    """``--episodes``, ``--threads``: an integer >= 1 (argparse turns the ValueError into a one-line usage error)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}")
    return value


#: config.json fields of a run and what each must be (bool is not accepted where an int is meant)
_SPEC_TYPES: dict[str, tuple[type, ...]] = {
    "algo": (str,), "env_id": (str,), "seed": (int,), "n_timesteps": (int,), "n_envs": (int,),
    "policy": (str,), "algo_kwargs": (dict,), "egsw": (dict, type(None)), "eval_freq": (int,),
    "eval_episodes": (int,), "normalize": (bool,), "env_kwargs": (dict,), "warm_start_steps": (int,),
    "warm_start_kwargs": (dict,),
}  # fmt: skip
_MAX_CONFIG_BYTES = 1_000_000


def _load_spec(run_dir: Path):
    """The run's ``config.json`` as a RunSpec; any damage is a ValueError naming the file and field."""
    if not run_dir.is_dir():
        raise ValueError(f"run directory {str(run_dir)!r} does not exist or is not a directory")
    path = run_dir / "config.json"
    if not path.is_file():
        raise ValueError(f"{path} not found: not a run directory written by 'egsw-gym train'")
    cfg = read_json_file(path, _MAX_CONFIG_BYTES)  # a regular file (no link, FIFO), capped, errors name it
    if not isinstance(cfg, dict):
        raise ValueError(f"{path} must hold a JSON object, got {type(cfg).__name__}")
    unknown, missing = (
        set(cfg) - set(_SPEC_TYPES),
        {"algo", "env_id", "seed", "n_timesteps", "n_envs", "policy"} - set(cfg),
    )
    if unknown or missing:
        raise ValueError(f"{path}: unknown fields {sorted(unknown)}, missing fields {sorted(missing)}")
    for name, types in _SPEC_TYPES.items():
        value = cfg.get(name)
        if name in cfg and (not isinstance(value, types) or (bool not in types and isinstance(value, bool))):
            raise ValueError(
                f"{path}: field {name!r} must be {' or '.join(t.__name__ for t in types)}, got {value!r}"
            )
    if cfg["algo"] not in registry.ALGORITHMS:
        valid = sorted(registry.ALGORITHMS)
        raise ValueError(f"{path}: field 'algo' must be one of {valid}, got {cfg['algo']!r}")
    if cfg.get("eval_episodes", 1) < 1 or cfg["n_envs"] < 1:
        raise ValueError(f"{path}: fields 'eval_episodes' and 'n_envs' must be >= 1")
    try:
        cfg["egsw"] = EGSW.from_dict(cfg.get("egsw"))
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path}: field 'egsw': {err}") from None
    return RunSpec(**cfg)


def _evaluate(args: argparse.Namespace) -> dict:
    """``egsw-gym evaluate``: the run's saved model on its evaluation episodes (never unpickles)."""
    run_dir = Path(args.run_dir)
    spec = _load_spec(run_dir)
    if args.episodes:
        spec.eval_episodes = args.episodes
    algo_cls = get_algorithm(spec.algo).cls
    model_path = run_dir / "model.zip"
    if not os.path.lexists(model_path):
        raise ValueError(
            f"{model_path} not found: the run has no saved model (train it, or pass its directory)"
        )
    check_regular_file(model_path, RUN_LIMITS.model_bytes)  # not a link, FIFO or device
    if os.path.lexists(run_dir / "vecnormalize.json"):
        check_regular_file(run_dir / "vecnormalize.json", RUN_LIMITS.json_bytes)
    model = algo_cls.load(model_path, device="cpu")
    try:
        # Observation statistics of normalised runs come back from the run's plain-JSON file.
        mean, std = evaluate_model(model, spec, normalization_path=run_dir / "vecnormalize.json")
    except (
        OSError,
        gym.error.Error,
    ) as err:  # an env id the installed packages do not know, unreadable files
        raise ValueError(f"evaluating {run_dir}: {err}") from err
    if not (np.isfinite(mean) and np.isfinite(std)):
        raise ValueError(
            f"evaluating {run_dir} gave a non-finite score ({mean}, {std}); the run files are damaged"
        )
    return dict(env_id=spec.env_id, algo=spec.algo, seed=spec.seed, episodes=spec.eval_episodes,
                eval_mean=mean, eval_std=std)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return _run(args)
    except (ValueError, FileNotFoundError) as err:
        # Bad settings (unknown env, invalid hyperparameter, missing run directory) are user errors:
        # one clear line that names the argument, not a traceback.
        # Damaged run directories list one file per line (egsw_gym.experiments.rundir.RunDirError).
        lines = str(err).splitlines() or [repr(err)]
        parser.exit(2, "".join(f"egsw-gym: error: {line}\n" for line in lines))


def _run(args: argparse.Namespace) -> int:
    if args.command == "train":
        overrides = parse_overrides(args.set)
        if args.timesteps is not None:
            if "n_timesteps" in overrides and overrides["n_timesteps"] != args.timesteps:
                raise ValueError("--timesteps and --set n_timesteps= disagree; give one of them")
            overrides["n_timesteps"] = args.timesteps
        spec = make_run_spec(args.algo, args.env, args.seed, overrides)
        run_dir = run_dir_of(args.out, spec.algo, spec.env_id, spec.seed)
        result = train_run(spec, run_dir, progress_bar=args.progress, torch_threads=args.threads)
        print(json.dumps(result, indent=2))
        print(f"run directory: {run_dir}")
    elif args.command == "compare":
        envs = [e.strip() for e in args.envs.split(",")] if args.envs else None
        table = compare(
            args.suite,
            env_ids=envs,
            algos=args.algos,
            seeds=args.seeds,
            out_dir=args.out,
            overrides=parse_overrides(args.set),
            jobs=args.jobs,
        )
        print(table)
        print(f"\ncurves, plots and summary.md in {args.out}")
    elif args.command == "plot":
        table, plots = write_report(args.out, allow_mixed_versions=args.allow_mixed_versions)
        print(table)
        for p in plots:
            print(f"wrote {p}")
    elif args.command == "evaluate":
        print(json.dumps(_evaluate(args), indent=2))
    elif args.command == "study":
        _run_study(args)
    elif args.command == "merge":
        counts = study.merge_runs(args.sources, args.out)
        print(f"merged into {args.out}: {counts}")
    elif args.command == "demo":
        t0 = time.perf_counter()
        print(DEMO_INTRO)
        for part in DEMO:
            table = compare(None, out_dir=args.out, jobs=args.jobs, **part)
        print(table)  # the last report covers every run in the output directory
        print(f"\ndemo finished in {time.perf_counter() - t0:.0f} s; plots and summary.md in {args.out}")
        print(DEMO_NOTE)
    return 0


if __name__ == "__main__":
    sys.exit(main())
