"""scripts/sb3_suite: Stable-Baselines3's own PPO tests with egsw_gym.PPO swapped in.

The full run downloads the installed SB3 version's source distribution with pip, so it is slow-marked
(``pytest -m slow tests/test_sb3_suite.py``). Its failures must be the deliberate differences listed in
docs/sb3.md, nothing else.
"""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RUN = ROOT / "scripts" / "sb3_suite" / "run.sh"

#: SB3 tests that fail with EGSW on by design (docs/sb3.md explains each), by mode. env2 is
#: IdentityEnvMultiBinary (SB3 2.9.2's parametrization of test_discrete).
DELIBERATE = {
    "default": {"tests.test_identity::test_discrete[env2-PPO]"},
    "trajectory": {"tests.test_identity::test_discrete[env2-PPO]"},
}


def _env(tmp_path: Path | None = None) -> dict[str, str]:
    env = dict(os.environ, PYTHON=sys.executable)
    if tmp_path is not None:
        env["SB3_SUITE_WORK"] = str(tmp_path)
    return env


def test_run_sh_refuses_an_unknown_mode():
    out = subprocess.run(["bash", str(RUN), "stepwise"], capture_output=True, text=True, env=_env())
    assert out.returncode == 2
    assert "usage" in out.stderr and "trajectory" in out.stderr


def _failures(xml_path: Path) -> tuple[int, set[str]]:
    root = ET.parse(xml_path).getroot()
    passed, failed = 0, set()
    for case in root.iter("testcase"):
        outcome = {child.tag for child in case}
        if outcome & {"failure", "error"}:
            failed.add(f"{case.get('classname')}::{case.get('name')}")
        elif "skipped" not in outcome:
            passed += 1
    return passed, failed


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["default"])
def test_sb3_ppo_tests_pass_with_egsw_gym(mode, tmp_path_factory):
    work = Path(os.environ.get("SB3_SUITE_WORK") or tmp_path_factory.mktemp("sb3-suite"))
    out = subprocess.run(
        ["bash", str(RUN), mode], capture_output=True, text=True, env=_env(work), timeout=3600
    )
    if "could not download" in out.stderr:
        pytest.skip(f"the SB3 source distribution could not be downloaded: {out.stderr.strip()}")
    passed, failed = _failures(work / "results" / f"{mode}.xml")
    assert passed > 50, out.stdout + out.stderr
    assert failed <= DELIBERATE.get(mode, set()), f"unexpected SB3 test failures: {failed - DELIBERATE[mode]}"
