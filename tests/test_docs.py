"""The documentation site builds: `mkdocs build --strict` fails on broken links, missing anchors,
unresolvable API references (mkdocstrings) and missing snippet files."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

MISSING = [m for m in ("mkdocs", "material", "mkdocstrings_handlers") if importlib.util.find_spec(m) is None]


@pytest.mark.skipif(
    bool(MISSING), reason=f"the docs extra is not installed ({', '.join(MISSING)}): pip install -e '.[docs]'"
)
def test_mkdocs_build_strict(tmp_path):
    site = tmp_path / "site"
    out = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        timeout=600,
    )
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    # The API reference was generated from the docstrings, not left empty.
    egsw_page = (site / "api" / "egsw" / "index.html").read_text()
    for name in ("EGSW", "egsw_weights", "temperature", "sample_weights"):
        assert name in egsw_page
    pages = {
        "ppo": "PPO",
        "grpo": "GRPO",
        "lm_policy": "LMPolicy",
        "envs": "TextGenerationEnv",
        "tasks": "JSONLTask",
    }
    for page, name in pages.items():
        assert name in (site / "api" / page / "index.html").read_text(), page
    # The benchmarks page is benchmarks/README.md, included (not a stale copy).
    assert "grpo_vs_trl.py" in (site / "benchmarks" / "index.html").read_text()
    shutil.rmtree(site)
