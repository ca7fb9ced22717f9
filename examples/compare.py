"""The comparison harness from Python: algorithms x environments x seeds, table and plots.

    python examples/compare.py [--out runs/example_compare] [--timesteps 30000]

The same as ``egsw-gym compare --envs CartPole-v1 --algos ppo,ppo-egsw,grpo,grpo-egsw --seeds 2``.
"""

import argparse

from egsw_gym.experiments.compare import compare


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default="runs/example_compare")
    parser.add_argument("--timesteps", type=int, default=30_000)
    parser.add_argument("--seeds", type=int, default=2)
    args = parser.parse_args()

    table = compare(
        env_ids=["CartPole-v1"],
        algos=["ppo", "ppo-egsw", "grpo", "grpo-egsw"],
        seeds=list(range(args.seeds)),
        out_dir=args.out,
        overrides={"n_timesteps": args.timesteps, "eval_freq": max(args.timesteps // 5, 1)},
    )
    print(table)
    print(f"plots and CSVs in {args.out}")


if __name__ == "__main__":  # required: runs execute in spawned processes that re-import this file
    main()
