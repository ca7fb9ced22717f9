"""Run algorithms x environments x seeds in parallel processes, resumably, then report.

Each run lives in ``OUT/<env>/<algo>/seed<k>/``; finished runs are skipped on rerun and
interrupted ones restart cleanly (see :func:`egsw_gym.experiments.runner.train_run`).
"""

from __future__ import annotations

import multiprocessing as mp
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from egsw_gym.algorithms.registry import get_algorithm
from egsw_gym.experiments.presets import NoAlgorithmBlockError, load_suite, make_run_spec
from egsw_gym.experiments.progress import RunProgress
from egsw_gym.experiments.report import write_report
from egsw_gym.experiments.runner import train_run

__all__ = ["run_dir_of", "plan_runs", "run_parallel", "compare"]


def run_dir_of(out_dir: str | Path, algo: str, env_id: str, seed: int) -> Path:
    """Where one run's files go."""
    return Path(out_dir) / env_id.replace("/", "_") / algo / f"seed{seed}"


def plan_runs(
    suite: str | None,
    env_ids: list[str] | None,
    algos: list[str],
    seeds: list[int],
    overrides: dict[str, Any] | None = None,
) -> list[tuple[Any, str]]:
    """The (RunSpec, algo) grid. Combinations a preset has no block for (PPO on a text task) are left out."""
    if env_ids is None:
        if suite is None:
            raise ValueError("give --suite or --envs")
        env_ids = list(load_suite(suite))
    for a in algos:
        get_algorithm(a)  # an unknown name fails before any run starts, naming the closest one
    plan = []
    for env_id in env_ids:
        for algo in algos:
            for seed in seeds:
                try:
                    plan.append(make_run_spec(algo, env_id, seed, overrides))
                except NoAlgorithmBlockError:
                    continue
    return plan


def _run_one(args: tuple[Any, str, dict[str, Any]]) -> dict[str, Any]:
    spec, run_dir, kwargs = args
    return train_run(spec, run_dir, **kwargs)


def run_parallel(
    work: list[tuple[Any, str]],
    *,
    jobs: int | None = None,
    progress: bool = True,
    run_kwargs: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Train every ``(RunSpec, run_dir)`` of ``work`` in ``jobs`` processes (one torch thread each).

    Finished runs are skipped (:func:`~egsw_gym.experiments.runner.train_run`). Runs are submitted
    in the order given, so putting the longest first shortens the wall time. ``run_kwargs`` go to
    every :func:`~egsw_gym.experiments.runner.train_run` call (e.g. ``warm_start_dir``).

    Returns
    -------
    list of dict
        The results, in completion order.
    """
    if not work:
        return []
    jobs = max(1, min(jobs or os.cpu_count() or 1, len(work)))
    results = []
    # One bar over the runs' timesteps (steps, or tokens for LMs), read from their logs as they train.
    bar = RunProgress(work, disable=not progress)

    def done(item: tuple[Any, str], r: dict[str, Any]) -> None:
        results.append(r)
        bar.finished(item[1], f"{r['env_id']} {r['algo']} s{r['seed']}: {r['final_eval_mean']:.3g}")

    with bar:
        if jobs == 1:
            for item in work:
                done(item, _run_one((*item, dict(run_kwargs or {}))))
        else:
            # spawn: fresh interpreters, no torch thread pools or RNG state inherited through fork.
            with ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn")) as pool:
                futures = {pool.submit(_run_one, (*item, dict(run_kwargs or {}))): item for item in work}
                for fut in as_completed(futures):
                    done(futures[fut], fut.result())
    return results


def compare(
    suite: str | None = None,
    *,
    env_ids: list[str] | None = None,
    algos: list[str],
    seeds: list[int],
    out_dir: str | Path,
    overrides: dict[str, Any] | None = None,
    jobs: int | None = None,
    progress: bool = True,
) -> str:
    """Train every run of the grid (in ``jobs`` processes) and write the report.

    Parameters
    ----------
    suite : str, optional
        ``classic``, ``mujoco`` or ``llm``: all environments of that preset file.
    env_ids : list of str, optional
        Explicit environments instead of a suite.
    algos : list of str
        Names of the algorithm table (:data:`~egsw_gym.algorithms.registry.ALGORITHMS`).
    seeds : list of int
        Seeds; every (env, algo) pair runs each.
    out_dir : path
        Output directory.
    overrides : dict, optional
        Preset overrides applied to every run.
    jobs : int, optional
        Parallel processes; default: the number of cores.
    progress : bool
        Show a progress bar over runs.

    Returns
    -------
    str
        The markdown summary table (also written to ``out_dir/summary.md``).
    """
    specs = plan_runs(suite, env_ids, algos, seeds, overrides)
    work = [(s, str(run_dir_of(out_dir, s.algo, s.env_id, s.seed))) for s in specs]
    run_parallel(work, jobs=jobs, progress=progress)
    table, _ = write_report(out_dir)
    return table
