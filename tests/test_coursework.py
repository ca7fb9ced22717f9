"""Coursework material: ``examples/grpo_minimal.py`` and the two notebooks.

The minimal file's EGSW weights are checked against :func:`egsw_gym.egsw_weights`, it runs with a tiny
budget here and, marked slow, reaches CartPole's 475 with its full budget. The notebooks (jupytext
percent files) are converted and executed with small budgets (``EGSW_NOTEBOOK_SMOKE=1``) on a kernel
that runs this interpreter.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

from egsw_gym import EGSW, egsw_weights

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"


@pytest.fixture(scope="module")
def minimal() -> ModuleType:
    """``examples/grpo_minimal.py`` imported as a module (its training runs only under ``__main__``)."""
    spec = importlib.util.spec_from_file_location("grpo_minimal", ROOT / "examples" / "grpo_minimal.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["grpo_minimal"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("grpo_minimal", None)


# ------------------------------------------------------------------------------------------------
# examples/grpo_minimal.py
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("alpha", "temperature"), [(0.1, 2.0), (0.0, 0.5), (3.0, 1.0), (0.5, 1e-3)])
def test_minimal_weights_equal_the_library(minimal, dtype, alpha, temperature):
    gen = torch.Generator().manual_seed(int(alpha * 10 + temperature * 100))
    n_groups, group_size = 5, 8
    adv = torch.randn(n_groups, group_size, generator=gen, dtype=dtype) * 2
    ent = torch.rand(n_groups, group_size, generator=gen, dtype=dtype)
    mine = minimal.egsw_weights(adv, ent, alpha, temperature)
    group_ids = torch.arange(n_groups).repeat_interleave(group_size)
    lib = egsw_weights(adv.reshape(-1), ent.reshape(-1), group_ids, alpha=alpha, temperature=temperature)
    assert mine.dtype == dtype
    torch.testing.assert_close(mine.reshape(-1), lib, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(mine.sum(dim=1), torch.full((n_groups,), float(group_size), dtype=dtype))


def test_minimal_weights_with_standardisation_equal_egsw_sample_weights(minimal):
    """The file's standardise-then-weigh matches ``EGSW.sample_weights`` in trajectory mode."""
    gen = torch.Generator().manual_seed(0)
    adv = torch.randn(3, 4, generator=gen)
    ent = torch.rand(3, 4, generator=gen)
    a = (adv - adv.mean()) / (adv.std() + 1e-8)
    mine = minimal.egsw_weights(a, ent, 0.1, 2.0).reshape(-1)
    lib = EGSW(alpha=0.1, temperature=2.0, mode="trajectory").sample_weights(
        adv.reshape(-1),
        ent.reshape(-1),
        trajectory_ids=torch.arange(12),
        step_ids=torch.zeros(12, dtype=torch.long),
        group_ids=torch.arange(3).repeat_interleave(4),
    )
    torch.testing.assert_close(mine, lib, rtol=1e-5, atol=1e-6)


def test_minimal_weights_uniform_without_entropy_at_huge_temperature(minimal):
    adv = torch.randn(4, 8, generator=torch.Generator().manual_seed(1)) * 3
    ent = torch.rand(4, 8)
    w = minimal.egsw_weights(adv, ent, 0.0, 1e12)
    torch.testing.assert_close(w, torch.ones_like(w), rtol=0, atol=1e-9)
    # Raising one sample's advantage never lowers its weight (and a real temperature is not uniform).
    w1 = minimal.egsw_weights(adv, ent, 0.1, 1.0)
    bumped = adv.clone()
    bumped[0, 0] += 1.0
    assert minimal.egsw_weights(bumped, ent, 0.1, 1.0)[0, 0] > w1[0, 0]
    assert not torch.allclose(w1, torch.ones_like(w1))


@pytest.mark.usefixtures("one_thread")
def test_minimal_runs_with_a_tiny_budget(minimal, capsys):
    args = minimal.parse_args(["--total-timesteps", "500", "--eval-episodes", "1", "--check-library"])
    assert args.egsw and args.n_groups == 2 and args.group_size == 8
    result = minimal.main(args)
    assert result["steps"] >= 500
    assert 0 < result["final_eval"] <= 500
    assert "final eval return" in capsys.readouterr().out
    plain = minimal.main(
        minimal.parse_args(["--total-timesteps", "300", "--eval-episodes", "1", "--no-egsw"])
    )
    assert plain["steps"] >= 300


def test_minimal_rejects_bad_flags_by_name(minimal, capsys):
    with pytest.raises(SystemExit):
        minimal.parse_args(["--group-size", "1"])
    assert "--group-size must be >= 2" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        minimal.parse_args(["--temperature", "0"])
    assert "--temperature must be > 0" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_minimal_full_budget_reaches_475(minimal):
    result = minimal.main(minimal.parse_args(["--seed", "0"]))
    assert result["steps"] >= 200_000
    assert result["final_eval"] >= 475, result["curve"]


# ------------------------------------------------------------------------------------------------
# Notebooks
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def kernel_name(tmp_path_factory) -> str:
    """A kernelspec running this interpreter (``sys.executable``), found through ``JUPYTER_PATH``."""
    pytest.importorskip("ipykernel")
    name = "egsw-coursework-test"
    spec_dir = tmp_path_factory.mktemp("jupyter") / "kernels" / name
    spec_dir.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "egsw-gym test kernel",
        "language": "python",
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    mp = pytest.MonkeyPatch()
    mp.setenv("JUPYTER_PATH", str(spec_dir.parents[1]))
    yield name
    mp.undo()


def run_notebook(path: Path, kernel: str, cwd: Path, monkeypatch) -> tuple[list[str], list[dict]]:
    """Execute the jupytext file with small budgets; returns the cells' printed text and outputs."""
    jupytext = pytest.importorskip("jupytext")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("EGSW_NOTEBOOK_SMOKE", "1")
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    notebook = jupytext.read(path)
    client = nbclient.NotebookClient(
        notebook, kernel_name=kernel, timeout=300, resources={"metadata": {"path": str(cwd)}}
    )
    client.execute()  # raises CellExecutionError on the first failing cell
    outputs = [out for cell in notebook.cells if cell.cell_type == "code" for out in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    text = [
        o.get("text", "") for o in outputs if o.get("output_type") == "stream" and o.get("name") == "stdout"
    ]
    return text, outputs


def check_notebook_source(path: Path) -> None:
    source = path.read_text()
    assert "torch.set_num_threads(1)" in source
    assert 'os.environ.get("EGSW_NOTEBOOK_SMOKE") == "1"' in source
    assert source.count("# %% [markdown]") >= 5, "a tutorial explains its steps in markdown cells"


def test_egsw_in_ten_minutes_runs(kernel_name, tmp_path, monkeypatch):
    path = NOTEBOOKS / "egsw_in_ten_minutes.py"
    check_notebook_source(path)
    text, outputs = run_notebook(path, kernel_name, tmp_path, monkeypatch)
    printed = "".join(text)
    # The toy group: the weights of the one success at P = 1 (EGSW.md's worked example).
    assert re.search(r"P =\s+1: success weight  5\.66, each failure 0\.33, sum 8\.0", printed), printed
    finals = re.findall(r"final eval return (PPO|PPO\+EGSW): mean ([\d.]+)", printed)
    assert [name for name, _ in finals] == ["PPO", "PPO+EGSW"], printed
    assert all(0 < float(value) <= 500 for _, value in finals)
    assert any("image/png" in o.get("data", {}) for o in outputs), "the learning-curve plot is missing"


def test_first_language_model_run_runs(kernel_name, tmp_path, monkeypatch):
    pytest.importorskip("transformers")  # LMPolicy's model
    path = NOTEBOOKS / "first_language_model_run.py"
    check_notebook_source(path)
    text, _ = run_notebook(path, kernel_name, tmp_path, monkeypatch)
    printed = "".join(text)
    assert "answer '129': reward 1.0, correct True" in printed
    assert "answer '128': reward 0.0, correct False" in printed
    match = re.search(r"greedy accuracy ([\d.]+)% -> ([\d.]+)% \(([+-][\d.]+) points\)", printed)
    assert match, printed
    before, after, gain = (float(x) for x in match.groups())
    assert 0 <= before <= 100 and 0 <= after <= 100
    assert gain == pytest.approx(after - before, abs=0.15)
    assert re.search(r"after GRPO\+EGSW \((\d+) tokens\)", printed)
    assert re.search(r"\d+ tokens: [\d.]+% of sampled completions correct", printed), printed
