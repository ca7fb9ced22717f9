"""Held-out accuracy of GRPO and GRPO+EGSW on arithmetic with the demo settings, over seeds.

Every run is exactly a demo run (``egsw-gym train --algo grpo[-egsw] --env egsw/Arithmetic-v0``:
the ``llm.yaml`` preset, warm start included, one torch thread per run), run two at a time in
separate processes. Per seed it prints the held-out greedy accuracy after the warm start and after
GRPO, the gain in points, when the gain first reached +20 points, and the wall time of the run
(warm start + training + evaluations). Target: +20 points within 10 minutes on 2 cores.

python benchmarks/lm_learning.py [--seeds 3] [--jobs 2] [--out runs/lm_learning] [--set KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

from egsw_gym.experiments.compare import compare, run_dir_of
from egsw_gym.experiments.presets import parse_overrides

ENV_ID = "egsw/Arithmetic-v0"
ALGOS = ["grpo", "grpo-egsw"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--jobs", type=int, default=2, help="runs in parallel (one torch thread each)")
    p.add_argument("--out", default="runs/lm_learning")
    p.add_argument(
        "--set", action="append", metavar="KEY=VALUE", help="preset override, as for egsw-gym train"
    )
    args = p.parse_args()

    t0 = time.perf_counter()
    compare(
        None,
        env_ids=[ENV_ID],
        algos=ALGOS,
        seeds=list(range(args.seeds)),
        out_dir=args.out,
        overrides=parse_overrides(args.set),
        jobs=args.jobs,
        progress=False,
    )
    total = time.perf_counter() - t0

    print(
        f"{'algo':10s} {'seed':>4s} {'warm start':>10s} {'after':>7s} {'gain':>7s} {'+20 at (s)':>10s} "
        f"{'tokens':>8s} {'wall s':>7s}"
    )
    gains: dict[str, list[float]] = {a: [] for a in ALGOS}
    for algo in ALGOS:
        for seed in range(args.seeds):
            run = run_dir_of(args.out, algo, ENV_ID, seed)
            result = json.loads((run / "result.json").read_text())
            with open(run / "curve.csv", newline="") as f:
                rows = list(csv.DictReader(f))
            start = float(rows[0]["eval_mean"])
            reached = next((float(r["wall_s"]) for r in rows if float(r["eval_mean"]) >= start + 0.2), None)
            gain = 100 * (result["final_eval_mean"] - start)
            gains[algo].append(gain)
            print(
                f"{algo:10s} {seed:4d} {start:10.1%} {result['final_eval_mean']:7.1%} {gain:+7.1f} "
                f"{'-' if reached is None else f'{reached:.0f}':>10s} {result['timesteps']:8d} "
                f"{result['wall_s']:7.0f}"
            )
    for algo, g in gains.items():
        print(
            f"{algo:10s} mean gain {sum(g) / len(g):+.1f} points; seeds with >= +20: "
            f"{sum(x >= 20 for x in g)}/{len(g)}"
        )
    print(
        f"all {len(ALGOS) * args.seeds} runs in {total:.0f} s with {args.jobs} parallel jobs "
        f"(runs already finished in {Path(args.out)} are reused)"
    )


if __name__ == "__main__":
    main()
