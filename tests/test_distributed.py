"""Data-parallel GRPO: 2 gloo processes under torchrun reproduce 1 process (same global batch, seed)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)
pytest.importorskip("torch.distributed")

import torch.distributed as dist  # noqa: E402

if not dist.is_available() or not dist.is_gloo_available():
    pytest.skip("torch.distributed with gloo is not available", allow_module_level=True)

sys.path.insert(0, str(Path(__file__).parent))
import distributed_worker as worker  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def launch_two_ranks(launcher: list[str], out: Path, cases: list[str] | None = None) -> list[dict]:
    """Run the worker's cases in 2 CPU processes started by ``launcher``; each rank's results."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="", PYTHONPATH=str(ROOT))
    cmd = [*launcher, str(ROOT / "tests" / "distributed_worker.py"), str(out), *(cases or [])]
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(2)]


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    """Run every case once under ``torchrun --standalone --nproc_per_node 2`` (gloo, localhost)."""
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    return launch_two_ranks(torchrun, tmp_path_factory.mktemp("ddp"))


@pytest.fixture(scope="module")
def one_rank() -> dict:
    """The same cases in this (non-distributed) process."""
    return worker.run_cases(list(worker.CASES))


@pytest.mark.parametrize("case", list(worker.CASES))
def test_two_processes_match_one(case: str, two_ranks: list[dict], one_rank: dict) -> None:
    ref = one_rank[case]
    r0, r1 = two_ranks[0][case], two_ranks[1][case]
    # The ranks hold identical weights (summed gradients, same optimizer steps) ...
    for k in ref["params"]:
        torch.testing.assert_close(r0["params"][k], r1["params"][k], rtol=0, atol=0)
    # ... equal to one process's, within float tolerance (summation order differs).
    changed = False
    for k, v in ref["params"].items():
        torch.testing.assert_close(r0["params"][k], v, rtol=1e-4, atol=1e-5, msg=f"{case}: {k}")
        changed |= not torch.equal(v, worker_initial_param(case, k))
    assert changed, "training did not move the parameters; the comparison would be vacuous"
    # Groups are sharded, not duplicated: the ranks' seeds are disjoint and their union is the
    # single-process set; the step count is global.
    assert not set(r0["seeds"]) & set(r1["seeds"])
    assert sorted(r0["seeds"] + r1["seeds"]) == ref["seeds"]
    assert r0["num_timesteps"] == r1["num_timesteps"] == ref["num_timesteps"]


_INITIAL: dict[str, dict] = {}


def worker_initial_param(case: str, key: str) -> torch.Tensor:
    """The parameter before training (same seed), to check that training changed something."""
    if case not in _INITIAL:
        cfg = dict(worker.CASES[case])
        cfg.pop("total_timesteps")
        model = worker.GRPO(seed=3, device="cpu", **cfg)
        _INITIAL[case] = model.policy.state_dict()
    return _INITIAL[case][key]


def test_single_process_is_not_distributed() -> None:
    from egsw_gym.common.distributed import DistInfo, init_distributed, local_n_groups

    info, device = init_distributed("cpu")
    assert info == DistInfo() and device == torch.device("cpu") and not dist.is_initialized()
    assert local_n_groups(8, 2) == 4
    with pytest.raises(ValueError, match="multiple of the number of processes"):
        local_n_groups(5, 2)


def test_accelerate_launch_starts_the_same_two_rank_run(tmp_path: Path, two_ranks: list[dict]) -> None:
    """``accelerate launch --multi_gpu`` (torchrun underneath; gloo on a CPU-only machine) trains the
    same parameters as torchrun. ``--cpu`` would start one plain process: see docs/distributed.md."""
    pytest.importorskip("accelerate")
    case = "lm_grpo"
    accelerate = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
    ]  # fmt: skip
    ranks = launch_two_ranks(accelerate, tmp_path, [case])
    for r in range(2):
        for k, v in two_ranks[r][case]["params"].items():
            torch.testing.assert_close(ranks[r][case]["params"][k], v, rtol=0, atol=0, msg=k)
        assert ranks[r][case]["seeds"] == two_ranks[r][case]["seeds"]
