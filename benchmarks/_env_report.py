"""What a side-by-side benchmark must state next to its numbers: precision, threads, CPU, versions.

A ratio between two implementations means little without the conditions it was measured under:
the dtype each side computes in (TRL's ``GRPOConfig`` turns bf16 on by default, which a CPU without
native bf16 emulates ~10x slower), the torch thread count, the CPU and its vector/matrix
extensions (AVX2, AVX-512, AMX, AVX-512 BF16), the library versions, and the machine's load.
Every side-by-side benchmark calls :func:`print_env_report` once, and times its sides interleaved
(:func:`interleaved_medians`) so that load on a shared machine hits both alike.

Not part of the package: benchmarks import it as ``from _env_report import ...`` (their own
directory is on ``sys.path`` when run as scripts).
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import time
from collections.abc import Callable
from importlib import metadata
from typing import Any

import numpy as np
import torch

__all__ = [
    "cpu_info",
    "env_report",
    "interleaved_medians",
    "peak_rss_mib",
    "print_env_report",
    "ratio_interval",
    "reset_peak_rss",
]

#: /proc/cpuinfo flags that decide how fast float32 / bfloat16 matmuls run on a CPU.
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16")
LIBRARIES = ("torch", "transformers", "trl", "stable-baselines3", "gymnasium", "numpy")


def cpu_info() -> dict[str, Any]:
    """CPU model, logical cores and the :data:`CPU_FLAGS` present (from ``/proc/cpuinfo`` on Linux)."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    model = value.strip()
                elif key.strip() == "flags":
                    flags = set(value.split())
                if model and flags:
                    break
    except OSError:
        pass
    return {
        "cpu": model,
        "logical_cores": os.cpu_count(),
        "flags": {flag: flag in flags for flag in CPU_FLAGS},
        "load_avg_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
    }


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def env_report(precision: dict[str, str]) -> dict[str, Any]:
    """Everything a benchmark line must be read with.

    Parameters
    ----------
    precision : dict of str to str
        The dtype each side computes in, e.g. ``{"egsw": "float32", "TRL": "float32"}``.

    Returns
    -------
    dict
        ``precision``, ``torch_threads``, the :func:`cpu_info` fields, ``cuda`` (device name or
        ``None``) and the versions of :data:`LIBRARIES`.
    """
    return {
        "precision": precision,
        "torch_threads": torch.get_num_threads(),
        **cpu_info(),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "versions": {name: _version(name) for name in LIBRARIES},
        "python": platform.python_version(),
    }


def print_env_report(precision: dict[str, str]) -> dict[str, Any]:
    """Print :func:`env_report` (a readable block and one ``ENV {json}`` line) and return it."""
    report = env_report(precision)
    flags = " ".join(f"{k}={'yes' if v else 'no'}" for k, v in report["flags"].items())
    versions = ", ".join(f"{k} {v}" for k, v in report["versions"].items() if v)
    print(f"precision: {', '.join(f'{side} {dtype}' for side, dtype in precision.items())}")
    print(
        f"cpu: {report['cpu']} ({report['logical_cores']} logical cores, load {report['load_avg_1m']}); "
        f"torch threads {report['torch_threads']}; cuda {report['cuda']}"
    )
    print(f"cpu flags: {flags}")
    print(f"versions: {versions}; python {report['python']}")
    print("ENV " + json.dumps(report), flush=True)
    return report


def interleaved_medians(
    fns: dict[str, Callable[[], Any]], reps: int, warmup: int = 1
) -> dict[str, list[float]]:
    """Wall times of each function over ``reps`` rounds, timed in turn (A, B, A, B, ...).

    Interleaving makes a burst of load on a shared machine hit every side alike, so the ratio of
    medians stays meaningful when absolute times are noisy.

    Parameters
    ----------
    fns : dict of str to callable
        The functions to time, by name.
    reps : int
        Timed rounds.
    warmup : int
        Untimed rounds first.

    Returns
    -------
    dict of str to list of float
        Every timed run's seconds, per name (``statistics.median`` of it is the figure to report).
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return times


def median(values: list[float]) -> float:
    """``statistics.median`` (re-exported so benchmarks need one import)."""
    return float(statistics.median(values))


def ratio_interval(
    ours: list[float], baseline: list[float], level: float = 0.95, reps: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """Bootstrap interval of ``median(ours) / median(baseline)`` over paired rounds.

    ``ours[i]`` and ``baseline[i]`` were timed in the same round (interleaved), so rounds are
    resampled as pairs (``scipy.stats.bootstrap(paired=True)``, percentile method, seeded): the
    interval covers the step-to-step noise of one run, not the drift of the host between runs.

    Parameters
    ----------
    ours, baseline : list of float
        Per-round times of the two sides, equally long (at least 2).
    level : float
        Confidence level.
    reps : int
        Bootstrap resamples.
    seed : int
        Seed of the resampling.

    Returns
    -------
    tuple of float
        ``(low, high)``.
    """
    from scipy.stats import bootstrap

    if len(ours) != len(baseline) or len(ours) < 2:
        raise ValueError(f"need two equally long lists of >= 2 times, got {len(ours)} and {len(baseline)}")

    def ratio(a, b, axis=-1):
        return np.median(a, axis=axis) / np.median(b, axis=axis)

    result = bootstrap(
        (np.asarray(ours, dtype=float), np.asarray(baseline, dtype=float)),
        ratio,
        paired=True,
        vectorized=True,
        n_resamples=reps,
        confidence_level=level,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def reset_peak_rss() -> bool:
    """Restart this process's peak-RSS counter (Linux ``VmHWM``, via ``/proc/self/clear_refs``).

    Returns ``False`` where it cannot (then :func:`peak_rss_mib` is the peak since process start).
    """
    try:
        with open("/proc/self/clear_refs", "w", encoding="utf-8") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def peak_rss_mib() -> float:
    """This process's peak resident set size in MiB: ``VmHWM`` (since :func:`reset_peak_rss`), else ``ru_maxrss``."""
    try:
        with open("/proc/self/status", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
