"""The README's Python examples run as written (training budgets shrunk to a few hundred steps)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


@pytest.fixture(scope="module")
def local_checkpoint(tmp_path_factory):
    """A tiny model + tokenizer saved the way a user's real local checkpoint would be."""
    from egsw_gym.common.tokenizer import build_char_tokenizer
    from egsw_gym.policies.tiny_lm import build_tiny_lm

    path = tmp_path_factory.mktemp("ckpt")
    tok = build_char_tokenizer()
    build_tiny_lm(len(tok), tokenizer=tok).save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


def test_readme_has_examples():
    assert len(BLOCKS) >= 4


@pytest.mark.parametrize("index", range(len(BLOCKS)))
@pytest.mark.usefixtures("one_thread")
def test_readme_block_runs(index, local_checkpoint, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the examples save files
    code = re.sub(r"learn\(\s*[\d_]+", "learn(256", BLOCKS[index])
    code = re.sub(r"\bsteps=[\d_]+", "steps=4", code)  # the warm start's supervised steps
    code = code.replace("/path/to/checkpoint", local_checkpoint)
    exec(compile(code, f"README block {index}", "exec"), {"__name__": "readme"})
