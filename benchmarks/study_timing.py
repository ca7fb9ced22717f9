"""Training speed of each study environment and algorithm: the numbers behind ``SPEED`` and
``EVAL_S`` in ``egsw_gym/experiments/study.py`` (which size the study's budgets and shards).

Each case builds the run from the presets (``make_run_spec``, as ``egsw-gym study`` does), trains
it for a few thousand steps in this process with one torch thread and no evaluation callback,
then runs one evaluation. Prints one JSON line per case: steps, seconds, steps per second and
evaluation seconds. GRPO on MuJoCo needs a whole update (32 episodes, up to 32k steps) per call.

python benchmarks/study_timing.py ppo:CartPole-v1:8192 grpo-egsw:HalfCheetah-v5:32000 ...
(default: the cases timed for the study; run it with ``nice`` on a shared machine)
"""

from __future__ import annotations

import json
import os
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

from egsw_gym.experiments.presets import make_run_spec  # noqa: E402
from egsw_gym.experiments.runner import evaluate_model, make_model  # noqa: E402

DEFAULT_CASES = [
    "ppo:CartPole-v1:8192",
    "grpo-egsw:CartPole-v1:8192",
    "ppo:Acrobot-v1:8192",
    "grpo-egsw:Acrobot-v1:8192",
    "ppo:Pendulum-v1:8192",
    "grpo-egsw:Pendulum-v1:8192",
    "ppo-egsw:HalfCheetah-v5:4096",
    "ppo-egsw:Hopper-v5:4096",
    "grpo-egsw:Hopper-v5:16000",
    "grpo-egsw:HalfCheetah-v5:32000",
]


def time_case(algo: str, env_id: str, steps: int) -> dict:
    """Train ``algo`` on ``env_id`` for ``steps`` (at least one update) and evaluate once."""
    spec = make_run_spec(algo, env_id, 0, {"n_timesteps": steps})
    t0 = time.perf_counter()
    model = make_model(spec)
    t1 = time.perf_counter()
    model.learn(steps)
    t2 = time.perf_counter()
    evaluate_model(model, spec)
    t3 = time.perf_counter()
    return dict(
        algo=algo,
        env=env_id,
        steps=int(model.num_timesteps),
        build_s=round(t1 - t0, 1),
        learn_s=round(t2 - t1, 1),
        sps=round(model.num_timesteps / (t2 - t1), 1),
        eval_s=round(t3 - t2, 1),
        eval_episodes=spec.eval_episodes,
    )


def main() -> None:
    torch.set_num_threads(1)
    for case in sys.argv[1:] or DEFAULT_CASES:
        algo, env_id, steps = case.split(":")
        print(json.dumps(time_case(algo, env_id, int(steps))), flush=True)


if __name__ == "__main__":
    main()
