"""Every example runs end to end with a tiny budget (as a user would launch it: a subprocess)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

CASES = {
    "ppo_cartpole.py": ["--timesteps", "512"],
    "ppo_mujoco.py": ["--timesteps", "1024"],
    "grpo_cartpole.py": ["--timesteps", "600"],
    "grpo_minimal.py": ["--total-timesteps", "600", "--eval-episodes", "1", "--check-library"],
    "compare.py": ["--timesteps", "600", "--seeds", "1"],
    "grpo_arithmetic.py": ["--timesteps", "400", "--warm-start-steps", "5", "--eval-problems", "16"],
    "custom_task.py": ["--timesteps", "400"],
}


def test_every_example_is_covered():
    assert sorted(p.name for p in (ROOT / "examples").glob("*.py")) == sorted(CASES)


@pytest.mark.parametrize("script", sorted(CASES))
def test_example_runs(script, tmp_path):
    args = list(CASES[script])
    if script in ("compare.py", "ppo_mujoco.py"):
        args += ["--out", str(tmp_path / "out")]
    env = dict(os.environ, MUJOCO_GL="egl", PYTHONWARNINGS="ignore")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / script), *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert proc.stdout.strip(), f"{script} printed nothing"
