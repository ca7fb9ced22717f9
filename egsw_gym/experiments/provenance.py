"""What a run was made with: code version, package versions, CPU and threads.

:func:`run_provenance` is recorded in every run's ``result.json`` (key ``provenance``) by
:func:`~egsw_gym.experiments.runner.train_run`, and :func:`code_version_key` is what the study
report compares before it pools runs: runs made by different code are not the same experiment
(decoding, numerics and defaults change between commits), so
:func:`~egsw_gym.experiments.study_report.write_study_report` refuses to pool them unless told to.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import platform
import subprocess
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "code_version",
    "code_version_key",
    "code_versions",
    "check_code_versions",
    "machine_key",
    "machines",
    "cpu_info",
    "package_versions",
    "run_provenance",
    "MixedVersionsError",
    "PACKAGES",
]

#: distributions whose versions every run records (None when one is not installed)
PACKAGES = ("egsw-gym", "torch", "numpy", "gymnasium", "stable-baselines3", "transformers")
#: CPU flags that change which kernels torch runs on CPU (and so the float results)
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
_PACKAGE_DIR = Path(__file__).resolve().parents[1]  # .../egsw_gym


def _git(*args: str, cwd: Path) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, check=True, timeout=30
        ).stdout.decode("utf-8", "replace")
    except (OSError, subprocess.SubprocessError):
        return None
    return out


def code_version() -> dict[str, Any]:
    """The code that runs: the git commit of the source tree, or the installed package version.

    Returns
    -------
    dict
        ``commit`` (40 hex digits, or ``None`` outside a git checkout of this project), ``dirty``
        (tracked files differ from the commit), ``diff_sha256`` (hash of ``git diff HEAD`` when
        dirty, so two different uncommitted states are told apart) and ``package_version``.
    """
    try:
        version = importlib.metadata.version("egsw-gym")
    except importlib.metadata.PackageNotFoundError:
        version = None
    info: dict[str, Any] = {"commit": None, "dirty": None, "diff_sha256": None, "package_version": version}
    top = _git("rev-parse", "--show-toplevel", cwd=_PACKAGE_DIR)
    # Only a checkout of this project counts (not an unrelated repository the package sits in).
    if top is None or (Path(top.strip()) / "egsw_gym").resolve() != _PACKAGE_DIR:
        return info
    commit = _git("rev-parse", "HEAD", cwd=_PACKAGE_DIR)
    diff = _git("diff", "HEAD", "--", ".", cwd=Path(top.strip()))
    if commit is None or diff is None:
        return info
    info["commit"] = commit.strip()
    info["dirty"] = bool(diff)
    if diff:
        info["diff_sha256"] = hashlib.sha256(diff.encode("utf-8")).hexdigest()
    return info


def code_version_key(version: dict[str, Any] | None) -> str:
    """One string per code version: ``<commit>``, ``<commit>+dirty.<diff hash>``, ``pkg-<version>``,
    or ``"unrecorded"`` for runs made before versions were recorded."""
    if not version:
        return "unrecorded"
    if version.get("commit"):
        key = str(version["commit"])[:12]
        if version.get("dirty"):
            key += f"+dirty.{str(version.get('diff_sha256') or '')[:12]}"
        return key
    return f"pkg-{version.get('package_version')}"


def package_versions() -> dict[str, str | None]:
    """Installed versions of :data:`PACKAGES` (``None`` for one not installed), and Python's."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def cpu_info(cpuinfo: str | Path = "/proc/cpuinfo") -> dict[str, Any]:
    """CPU model, the :data:`CPU_FLAGS` it has, and torch's CPU kernel level and thread count.

    ``model`` and ``flags`` are ``None`` where ``cpuinfo`` cannot be read (not Linux).
    """
    model, flags = None, None
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and model is None:
            model = value.strip()
        elif key.strip() == "flags" and flags is None:
            present = set(value.split())
            flags = [f for f in CPU_FLAGS if f in present]
    return {
        "model": model,
        "flags": flags,
        "machine": platform.machine(),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch_threads": torch.get_num_threads(),
    }


def run_provenance() -> dict[str, Any]:
    """``code``, ``packages`` and ``cpu`` of this process (see the functions of the same names)."""
    return {"code": code_version(), "packages": package_versions(), "cpu": cpu_info()}


class MixedVersionsError(ValueError):
    """Runs made by different code versions were about to be pooled in one report."""


def code_versions(runs: list[dict[str, Any]]) -> dict[str, int]:
    """Run count per code version (:func:`code_version_key`)."""
    counts: dict[str, int] = defaultdict(int)
    for r in runs:
        counts[code_version_key((r.get("provenance") or {}).get("code"))] += 1
    return dict(sorted(counts.items()))


def check_code_versions(versions: dict[str, int], allow_mixed: bool) -> None:
    """Refuse (:class:`MixedVersionsError`) more than one code version unless ``allow_mixed``."""
    if len(versions) > 1 and not allow_mixed:
        listed = ", ".join(f"{k} ({n} runs)" for k, n in versions.items())
        raise MixedVersionsError(
            f"the runs come from {len(versions)} code versions: {listed}. Rerun them at one commit, "
            "report each version's runs separately, or pass --allow-mixed-versions (the report then says so)"
        )


def machine_key(cpu: dict[str, Any] | None) -> str:
    """One string per machine kind: CPU model, torch's CPU capability and the recorded flags.

    Runs of one commit on two such kinds give different floats (the kernels sum in another order),
    and a language model's warm start and RL amplify them: the runs agree statistically, not exactly.
    """
    if not cpu:
        return "unrecorded"
    flags = "+".join(cpu.get("flags") or []) or "none"
    return f"{cpu.get('model')} ({cpu.get('torch_cpu_capability')}; {flags})"


def machines(runs: list[dict[str, Any]]) -> tuple[dict[str, list[int]], list[tuple[str, int]]]:
    """The seeds run on each machine kind, and the (env, seed) pairs whose arms ran on different kinds.

    Returns
    -------
    tuple
        ``{machine_key: sorted seeds}`` and the sorted ``(env_id, seed)`` cells that mix machine
        kinds (their arms did not start from the same warm-start file, so they are not paired runs).
    """
    seeds: dict[str, set[int]] = defaultdict(set)
    cells: dict[tuple[str, int], set[str]] = defaultdict(set)
    for r in runs:
        key = machine_key((r.get("provenance") or {}).get("cpu"))
        seeds[key].add(int(r["seed"]))
        cells[(r["env_id"], int(r["seed"]))].add(key)
    mixed = sorted(c for c, keys in cells.items() if len(keys) > 1)
    return {k: sorted(v) for k, v in sorted(seeds.items())}, mixed
