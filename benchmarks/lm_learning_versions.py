"""The demo's GRPO arithmetic run on two checkouts of egsw-gym, paired by seed.

Each checkout (a git clone, with ``egsw_gym/envs`` linked to its ``envs/``) runs
``egsw-gym train --algo grpo --env egsw/Arithmetic-v0`` (the ``llm.yaml`` preset, one torch thread)
with ``PYTHONPATH=<clone>`` from inside the clone, so each side imports its own code; the script
checks that before any run. Runs go ``--jobs`` at a time (seed by seed, both sides of a seed
together), niced. Finished runs (a ``result.json``) are reused. It then prints a per-seed table and
this repository's paired statistics (:mod:`egsw_gym.experiments.paired_stats`) of second minus first
checkout for the final held-out greedy accuracy, the accuracy after the warm start and the area under
the evaluation curve (mean accuracy over the token budget, trapezoidal).

python benchmarks/lm_learning_versions.py --clone old=/tmp/lw-old --clone new=/tmp/lw-new \
    [--seeds 10] [--jobs 2] [--nice 5] [--out runs/lm_learning_versions] \
    [--set KEY=VALUE ...] [--set-for new:KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from itertools import pairwise
from pathlib import Path

from egsw_gym.experiments.compare import run_dir_of
from egsw_gym.experiments.paired_stats import paired_comparison

ENV_ID = "egsw/Arithmetic-v0"
ALGO = "grpo"


def _pair(text: str, sep: str, what: str) -> tuple[str, str]:
    if sep not in text:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    left, right = text.split(sep, 1)
    return left.strip(), right.strip()


def check_clone(python: str, clone: Path) -> str:
    """The clone's commit, after checking that ``egsw_gym`` and ``egsw_gym.envs`` import from it."""
    code = "import egsw_gym, egsw_gym.envs as e; print(egsw_gym.__file__); print(e.__file__)"
    env = {**os.environ, "PYTHONPATH": str(clone)}
    out = subprocess.run([python, "-c", code], cwd=clone, env=env, capture_output=True, text=True, check=True)
    for path in out.stdout.split():
        if not Path(path).resolve().is_relative_to(clone.resolve()):
            raise SystemExit(
                f"{clone}: egsw_gym imports from {path}, not from the clone (link egsw_gym/envs?)"
            )
    return subprocess.run(
        ["git", "-C", str(clone), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()


def train(python: str, clone: Path, out: Path, seed: int, sets: list[str], nice: int) -> Path:
    """One demo run of ``clone`` (skipped when its result exists); returns its run directory."""
    run = run_dir_of(out, ALGO, ENV_ID, seed)
    if (run / "result.json").exists():
        return run
    cmd = ["nice", "-n", str(nice), python, "-m", "egsw_gym.cli", "train", "--algo", ALGO, "--env", ENV_ID]
    cmd += ["--seed", str(seed), "--out", str(out.resolve()), "--threads", "1"]
    for item in sets:
        cmd += ["--set", item]
    out.mkdir(parents=True, exist_ok=True)
    with open(out / f"seed{seed}.log", "w") as log:
        env = {**os.environ, "PYTHONPATH": str(clone)}
        done = subprocess.run(cmd, cwd=clone, env=env, stdout=log, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        raise RuntimeError(
            f"{clone} seed {seed} exited with {done.returncode}; see {out / f'seed{seed}.log'}"
        )
    return run


def summary(run: Path) -> dict[str, float]:
    """Warm-start steps, accuracy after it, final accuracy, curve area and wall time of one run."""
    result = json.loads((run / "result.json").read_text())
    with open(run / "curve.csv", newline="") as f:
        rows = [(float(r["timesteps"]), float(r["eval_mean"])) for r in csv.DictReader(f)]
    area = sum((t1 - t0) * (a0 + a1) / 2 for (t0, a0), (t1, a1) in pairwise(rows))
    return {
        "ws_steps": result.get("warm_start", {}).get("steps", 0),
        "start": rows[0][1],
        "final": result["final_eval_mean"],
        "auc": area / (rows[-1][0] - rows[0][0]),
        "wall": result["wall_s"],
    }


def report(labels: list[str], seeds: list[int], runs: dict[tuple[str, int], dict[str, float]]) -> None:
    a, b = labels
    print(
        f"| seed | {a} ws steps | {b} ws steps | {a} start | {b} start | {a} final | {b} final "
        f"| {b}-{a} final | {a} AUC | {b} AUC | {a} wall s | {b} wall s |"
    )
    print("|---" * 12 + "|")
    for s in seeds:
        x, y = runs[a, s], runs[b, s]
        print(
            f"| {s} | {x['ws_steps']} | {y['ws_steps']} | {x['start']:.3f} | {y['start']:.3f} "
            f"| {x['final']:.3f} | {y['final']:.3f} | {y['final'] - x['final']:+.3f} | {x['auc']:.3f} "
            f"| {y['auc']:.3f} | {x['wall']:.0f} | {y['wall']:.0f} |"
        )
    print(f"\n{b} - {a}, paired by seed (bootstrap 95% interval of the mean, 2000 resamples, seed 0):")
    for metric in ("final", "start", "auc"):
        xs = {s: runs[a, s][metric] for s in seeds}
        ys = {s: runs[b, s][metric] for s in seeds}
        st = paired_comparison(ys, xs)
        print(
            f"{metric:6s} mean {a} {sum(xs.values()) / len(xs):.3f} {b} {sum(ys.values()) / len(ys):.3f}; "
            f"diff {st['mean']:+.3f} [{st['lo']:+.3f}, {st['hi']:+.3f}], d_z {st['dz']:+.2f}, "
            f"paired t p={st['p_t']:.3f}, Wilcoxon p={st['p_wilcoxon']:.3f}, "
            f"above/equal/below {st['above']}/{st['equal']}/{st['below']}"
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--clone",
        action="append",
        required=True,
        metavar="LABEL=PATH",
        type=lambda t: _pair(t, "=", "LABEL=PATH"),
        help="twice: baseline first",
    )
    p.add_argument("--seeds", type=int, default=10)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--nice", type=int, default=5)
    p.add_argument("--python", default=sys.executable, help="interpreter for the runs (default: this one)")
    p.add_argument("--out", default="runs/lm_learning_versions")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override for both")
    p.add_argument(
        "--set-for",
        action="append",
        default=[],
        metavar="LABEL:KEY=VALUE",
        type=lambda t: _pair(t, ":", "LABEL:KEY=VALUE"),
        help="override for one checkout",
    )
    args = p.parse_args()
    clones = {label: Path(path) for label, path in args.clone}
    if len(clones) != 2:
        p.error("give exactly two --clone LABEL=PATH with different labels")
    unknown = {label for label, _ in args.set_for} - set(clones)
    if unknown:
        p.error(f"--set-for names unknown checkouts {sorted(unknown)}; known: {sorted(clones)}")
    for label, clone in clones.items():
        print(f"{label}: {clone} at {check_clone(args.python, clone)}")
    sets = {label: args.set + [kv for lb, kv in args.set_for if lb == label] for label in clones}
    seeds = list(range(args.seeds))
    out = Path(args.out)
    jobs = [(label, s) for s in seeds for label in clones]
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        dirs = pool.map(
            lambda j: train(args.python, clones[j[0]], out / j[0], j[1], sets[j[0]], args.nice), jobs
        )
        runs = {job: summary(run) for job, run in zip(jobs, dirs, strict=True)}
    report(list(clones), seeds, runs)


if __name__ == "__main__":
    main()
