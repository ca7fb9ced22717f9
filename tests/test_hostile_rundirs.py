"""Run directories someone else produced, crafted as an attacker would, read by merge, plot, the
study report and evaluate: every case ends in a named error (or a correct result) with bounded
memory, never hangs, and never writes outside the requested directory.

Each case builds a small tree of fake finished runs (no training), damages it, and runs the
reader in process. Memory is measured with tracemalloc (peak of Python and NumPy allocations).
"""

from __future__ import annotations

import contextlib
import filecmp
import json
import os
import tracemalloc
from pathlib import Path

import pytest

from egsw_gym.cli import main
from egsw_gym.experiments import rundir
from egsw_gym.experiments.aggregate import collect_study
from egsw_gym.experiments.merge import merge_runs
from egsw_gym.experiments.presets import make_run_spec
from egsw_gym.experiments.report import collect_runs
from egsw_gym.experiments.rundir import RunDirError, RunDirLimits, read_json_file

pytestmark = pytest.mark.timeout(60)  # hang protection only: every case is far faster

MAX_GROWTH = 200 * 2**20
KEY = ("CartPole-v1", "ppo", "seed0")


@contextlib.contextmanager
def bounded_memory():
    tracemalloc.start()
    try:
        yield
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < MAX_GROWTH, f"peak allocation {peak / 2**20:.0f} MiB"


def fake_run(root: Path, env_id="CartPole-v1", algo="ppo", seed=0, final=100.0, variant=None) -> Path:
    """A finished run directory as train_run writes it (config, curve, result, model, logs)."""
    d = root / env_id.replace("/", "_") / (variant or algo) / f"seed{seed}"
    (d / "logs").mkdir(parents=True)
    spec = make_run_spec(algo, env_id, seed, {"n_timesteps": 2000})
    (d / "config.json").write_text(json.dumps(spec.to_dict(), default=float))
    (d / "curve.csv").write_text(
        f"timesteps,eval_mean,eval_std,wall_s\n0,10.0,1.0,0.1\n2000,{final},2.0,0.5\n"
    )
    (d / "model.zip").write_bytes(b"PK\x05\x06" + b"\0" * 18)
    (d / "logs" / "progress.csv").write_text("time/iterations,train/group_return_mean\n1,0.5\n2,0.75\n")
    (d / "result.json").write_text(
        json.dumps(dict(algo=algo, env_id=env_id, seed=seed, final_eval_mean=final))
    )
    return d


@pytest.fixture
def tree(tmp_path) -> Path:
    root = tmp_path / "runs"
    for seed in (0, 1):
        fake_run(root, seed=seed, final=100.0 + seed)
        fake_run(root, algo="ppo-egsw", seed=seed, final=200.0 + seed)
    return root


@pytest.fixture
def outside(tmp_path) -> Path:
    """A directory outside every tree, with a file a link may point at."""
    d = tmp_path / "outside"
    d.mkdir()
    (d / "secret.txt").write_text("not for the merged directory\n")
    return d


def snapshot(path: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(path)): p.read_bytes() if p.is_file() else b"<dir>"
        for p in sorted(path.rglob("*"))
        if not p.is_symlink()
    }


def run_cli(args: list[str], capsys) -> list[str]:
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(args)
    err = capsys.readouterr().err
    assert exc.value.code == 2, err
    assert "Traceback" not in err
    lines = err.splitlines()
    assert lines and all(line.startswith("egsw-gym: error: ") for line in lines), err
    return lines


# ------------------------------------------------------------------------ damaged files, one by one


def _link(target):
    def make(run: Path, name: str, outside: Path) -> None:
        (run / name).unlink(missing_ok=True)
        os.symlink(target if isinstance(target, str) else outside / target, run / name)

    return make


def _fifo(run: Path, name: str, outside: Path) -> None:
    (run / name).unlink(missing_ok=True)
    os.mkfifo(run / name)


def _text(content: str | bytes):
    def make(run: Path, name: str, outside: Path) -> None:
        (run / name).write_bytes(content if isinstance(content, bytes) else content.encode())

    return make


def _result(**fields):
    def make(run: Path, name: str, outside: Path) -> None:
        data = json.loads((run / "result.json").read_text())
        data.update(fields)
        (run / "result.json").write_text(json.dumps(data))

    return make


def _config(**fields):
    def make(run: Path, name: str, outside: Path) -> None:
        data = json.loads((run / "config.json").read_text())
        data.update(fields)
        (run / "config.json").write_text(json.dumps(data))

    return make


def _big_curve(rows: int, row: str = "1,1\n"):
    def make(run: Path, name: str, outside: Path) -> None:
        with open(run / "curve.csv", "w") as f:
            f.write(
                "timesteps,eval_mean,eval_std,wall_s\n" if row.count(",") == 3 else "timesteps,eval_mean\n"
            )
            f.write(row * rows)

    return make


#: case -> (file, damage, what the one line says)
CASES = {
    "curve_dev_zero": ("curve.csv", _link("/dev/zero"), "is a symbolic link"),
    "curve_fifo": ("curve.csv", _fifo, "is a FIFO"),
    "curve_proc_link": ("curve.csv", _link("/proc/self/fd/0"), "is a symbolic link"),
    "curve_outside": ("curve.csv", _link("secret.txt"), "is a symbolic link"),
    "result_outside": ("result.json", _link("secret.txt"), "is a symbolic link"),
    "result_loop": ("result.json", _link("result.json"), "is a symbolic link"),
    "curve_2M_rows": ("curve.csv", _big_curve(2_000_000, "10000,1.5,0.0,0.1\n"), "larger than the 8388608-byte cap"),
    "curve_rows_cap": ("curve.csv", _big_curve(100_001), "more than 100000 rows"),
    "curve_nan": ("curve.csv", _text("timesteps,eval_mean\n0,1\n5,nan\n"), "line 3, column 'eval_mean': non-finite"),
    "curve_text": ("curve.csv", _text("timesteps,eval_mean\n0,abc\n"), "not a number"),
    "curve_no_column": ("curve.csv", _text("timesteps,score\n0,1\n"), "no column(s) ['eval_mean']"),
    "curve_empty": ("curve.csv", _text("timesteps,eval_mean\n"), "no evaluation rows"),
    "curve_backwards": ("curve.csv", _text("timesteps,eval_mean\n5,1\n2,1\n"), "non-decreasing"),
    "curve_short_row": ("curve.csv", _text("timesteps,eval_mean,eval_std\n0,1\n"), "line 2 has 2 fields"),
    "curve_binary": ("curve.csv", _text(b"timesteps,eval_mean\n\xff\xfe,1\n"), "not a valid CSV file"),
    "curve_missing": ("curve.csv", lambda run, name, o: (run / name).unlink(), "curve.csv: missing"),
    "result_not_json": ("result.json", _text("{not json"), "result.json: not valid JSON"),
    "result_empty": ("result.json", _text(""), "result.json: not valid JSON"),
    "result_deep": ("result.json", _text("[" * 200_000 + "]" * 200_000), "nested too deeply"),
    "result_huge": ("result.json", _text(" " * (2**20 + 1)), "larger than the 1048576-byte cap"),
    "result_not_utf8": ("result.json", _text(b"\xff\xfe{}"), "not valid JSON"),
    "result_list": ("result.json", _text("[1, 2]"), "must hold a JSON object, got list"),
    "result_no_score": ("result.json", _text('{"algo": "ppo", "env_id": "CartPole-v1", "seed": 0}'),
                        "field 'final_eval_mean' is missing"),
    "result_nan": ("result.json", _result(final_eval_mean=float("nan")), "'final_eval_mean' must be a finite"),
    "result_inf": ("result.json", _result(final_eval_mean=float("inf")), "'final_eval_mean' must be a finite"),
    "result_big_int": ("result.json", _text('{"seed": ' + "9" * 5000 + "}"), "not valid JSON"),
    "result_seed_bool": ("result.json", _result(seed=True), "field 'seed' must be an integer"),
    "result_other_env": ("result.json", _result(env_id="Acrobot-v1"),
                         "records env_id 'Acrobot-v1', which does not match its directory 'CartPole-v1'"),
    "result_other_algo": ("result.json", _result(algo="ppo-egsw"), "records algo 'ppo-egsw'"),
    "result_other_seed": ("result.json", _result(seed=7), "records seed 7, which does not match its directory 'seed0'"),
    "config_other_env": ("config.json", _config(env_id="Acrobot-v1"), "env_id 'Acrobot-v1' differs from result.json's"),
    "config_bad_budget": ("config.json", _config(n_timesteps=-1), "field 'n_timesteps' must be an integer >= 1"),
    "config_nan_alpha": ("config.json", _config(egsw={"alpha": float("nan")}), "field 'egsw' must be"),
    "config_egsw_no_mode": ("config.json", _config(egsw={"alpha": 0.1, "temperature": 1.0}), "field 'egsw' must be"),
    "result_provenance": ("result.json", _result(provenance="main"), "field 'provenance' must be an object"),
    "result_code_version": ("result.json", _result(provenance={"code": [1]}), "field 'provenance' must be"),
    "config_fifo": ("config.json", _fifo, "is a FIFO"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(CASES))
def test_damaged_run_file_is_one_named_line_in_every_reader(tree, outside, tmp_path, capsys, case):
    name, damage, message = CASES[case]
    run = tree.joinpath(*KEY)
    damage(run, name, outside)
    before = snapshot(outside)
    with bounded_memory():
        with pytest.raises(RunDirError) as info:
            collect_study([tree])
    assert str(run / name) in str(info.value) and message in str(info.value), str(info.value)
    assert len(info.value.problems) == 1  # the other three runs are intact
    # plot and the study report: the same line, exit 2, nothing written
    for args in (
        ["plot", str(tree)],
        ["study", "--report-only", "--out", str(tree), "--results", str(tmp_path / "res")],
    ):
        lines = run_cli(args, capsys)
        assert len(lines) == 1 and message in lines[0] and str(run / name) in lines[0], lines
    assert not (tree / "summary.md").exists() and not (tmp_path / "res" / "summary.md").exists()
    # merge: the same line, and nothing written at all
    lines = run_cli(["merge", str(tree), "--out", str(tmp_path / "merged")], capsys)
    assert len(lines) == 1 and message in lines[0], lines
    assert not (tmp_path / "merged").exists()
    assert snapshot(outside) == before


def test_every_damaged_file_gets_its_own_line(tree, outside, tmp_path, capsys):
    _link("/dev/zero")(tree.joinpath(*KEY), "zeros.bin", outside)
    _result(env_id="Acrobot-v1")(tree / "CartPole-v1" / "ppo" / "seed1", "result.json", outside)
    _text("timesteps,eval_mean\n0,inf\n")(tree / "CartPole-v1" / "ppo-egsw" / "seed0", "curve.csv", outside)
    lines = run_cli(["merge", str(tree), "--out", str(tmp_path / "merged")], capsys)
    assert len(lines) == 3
    assert any("seed0/zeros.bin: is a symbolic link" in x for x in lines)
    assert any("seed1/result.json: records env_id 'Acrobot-v1'" in x for x in lines)
    assert any("ppo-egsw/seed0/curve.csv: line 2" in x for x in lines)
    assert not (tmp_path / "merged").exists()


def test_many_damaged_files_are_listed_up_to_a_bound(tmp_path):
    root = tmp_path / "runs"
    for seed in range(30):
        d = fake_run(root, seed=seed)
        (d / "curve.csv").write_text("timesteps,eval_mean\n")
    with pytest.raises(RunDirError) as info:
        collect_runs(root)
    assert len(info.value.problems) == 30
    lines = str(info.value).splitlines()
    assert len(lines) == 21 and lines[-1] == "... and 10 more damaged files"


# ---------------------------------------------------------------------------------- links, trees


def test_links_and_special_files_anywhere_in_the_tree_are_refused(tree, outside, tmp_path):
    run = tree.joinpath(*KEY)
    cases = {
        "zeros.bin": lambda p: os.symlink("/dev/zero", p),  # merge wrote 3.9 GB from it
        "model_link": lambda p: (run / "model.zip").unlink() or os.symlink(outside / "secret.txt", run / "model.zip"),
        "logs": lambda p: __import__("shutil").rmtree(p) or os.symlink(outside, p),  # a linked directory
        "loop": lambda p: os.symlink("loop", p),
        "dirloop": lambda p: os.symlink(".", p),
        "proc": lambda p: os.symlink("/proc/self/root", p),
        "fifo": os.mkfifo,
    }  # fmt: skip
    for name, make in cases.items():
        path = run / name
        make(path)
        with bounded_memory(), pytest.raises(RunDirError) as info:
            merge_runs([tree], tmp_path / "merged")
        assert " is a symbolic link" in str(info.value) or "is a FIFO" in str(info.value), (name, info.value)
        assert not (tmp_path / "merged").exists()
        if path.is_symlink() or path.is_fifo():
            path.unlink()
        if name == "logs":
            (run / "logs").mkdir()
        if name == "model_link":
            (run / "model.zip").unlink()
            (run / "model.zip").write_bytes(b"PK")
    assert merge_runs([tree], tmp_path / "merged")["copied"] == 4  # the repaired tree merges


def test_a_linked_run_directory_is_refused_not_followed(tree, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    fake_run(elsewhere, seed=5)
    os.symlink(elsewhere / "CartPole-v1" / "ppo" / "seed5", tree / "CartPole-v1" / "ppo" / "seed5")
    with pytest.raises(RunDirError, match=r"ppo/seed5: is a symbolic link"):
        collect_runs(tree)


def test_the_named_root_may_be_a_link(tree, tmp_path):
    os.symlink(tree, tmp_path / "alias")
    assert len(collect_runs(tmp_path / "alias")) == 4


def test_tree_size_and_depth_are_bounded(tmp_path):
    deep = tmp_path / "deep"
    (deep / Path(*["d"] * 14)).mkdir(parents=True)
    with pytest.raises(RunDirError, match="more than 12 directory levels deep"):
        collect_runs(deep)
    wide = tmp_path / "wide"
    wide.mkdir()
    for k in range(50):
        (wide / f"f{k}").write_text("")
    with pytest.raises(RunDirError, match="more than 40 entries: not a tree of runs"):
        rundir.collect_runs(wide, limits=RunDirLimits(entries=40))


def test_a_run_outside_the_layout_is_named(tmp_path):
    d = tmp_path / "runs" / "seed0"
    d.mkdir(parents=True)
    (d / "result.json").write_text(
        '{"algo": "ppo", "env_id": "CartPole-v1", "seed": 0, "final_eval_mean": 1}'
    )
    with pytest.raises(RunDirError, match=r"a run lies at <env>/<variant>/seed<k> below"):
        collect_runs(tmp_path / "runs")
    (tmp_path / "x" / "CartPole-v1" / "sac" / "seed0").mkdir(parents=True)
    (tmp_path / "x" / "CartPole-v1" / "sac" / "seed0" / "result.json").write_text(
        (d / "result.json").read_text()
    )
    with pytest.raises(RunDirError, match="'sac' does not start with an algorithm name"):
        collect_runs(tmp_path / "x")


# -------------------------------------------------------------------------------------- merge


def test_merge_copies_exactly_the_regular_files(tree, tmp_path):
    (tree / "CartPole-v1" / "ppo" / "seed9").mkdir()
    (tree / "CartPole-v1" / "ppo" / "seed9" / "config.json").write_text("{}")  # unfinished
    dest = tmp_path / "merged"
    assert merge_runs([tree], dest) == {"copied": 4, "duplicate": 0, "unfinished": 1}
    for run in ("ppo/seed0", "ppo/seed1", "ppo-egsw/seed0", "ppo-egsw/seed1"):
        a, b = tree / "CartPole-v1" / run, dest / "CartPole-v1" / run
        cmp = filecmp.dircmp(a, b)
        assert not (cmp.left_only or cmp.right_only or cmp.diff_files), run
        assert filecmp.cmp(a / "logs" / "progress.csv", b / "logs" / "progress.csv", shallow=False)
    assert not (dest / "CartPole-v1" / "ppo" / "seed9").exists()
    assert [p.name for p in (dest / "CartPole-v1" / "ppo").iterdir() if p.name.startswith(".")] == []
    assert merge_runs([tree], dest) == {"copied": 0, "duplicate": 4, "unfinished": 1}
    assert len(collect_study([dest])) == 4


def test_merge_never_follows_a_link_in_out(tree, tmp_path):
    victim = tmp_path / "victim"
    (victim / "ppo" / "seed0").mkdir(parents=True)
    (victim / "ppo" / "seed0" / "notes.txt").write_text("precious")
    dest = tmp_path / "merged"
    dest.mkdir()
    os.symlink(victim, dest / "CartPole-v1")
    before = snapshot(victim)
    with pytest.raises(
        RunDirError, match=r"merged/CartPole-v1: is a symbolic link; merge writes only inside --out"
    ):
        merge_runs([tree], dest)
    assert snapshot(victim) == before
    # A link one level down (the run directory itself) is refused the same way.
    (dest / "CartPole-v1").unlink()
    (dest / "CartPole-v1" / "ppo").mkdir(parents=True)
    os.symlink(victim / "ppo" / "seed0", dest / "CartPole-v1" / "ppo" / "seed0")
    with pytest.raises(RunDirError, match=r"ppo/seed0: is a symbolic link"):
        merge_runs([tree], dest)
    assert snapshot(victim) == before


def test_merge_replaces_an_unfinished_copy_inside_out_only(tree, tmp_path):
    dest = tmp_path / "merged"
    half = dest / "CartPole-v1" / "ppo" / "seed0"
    half.mkdir(parents=True)
    (half / "config.json").write_text("{}")
    (half / "stale.txt").write_text("partial")
    assert merge_runs([tree], dest)["copied"] == 4
    assert not (half / "stale.txt").exists() and (half / "result.json").exists()


def test_merge_refuses_oversized_files_before_reading(tree, tmp_path):
    big = tree.joinpath(*KEY) / "big.bin"
    with open(big, "wb") as f:
        f.truncate(300 * 2**20)  # sparse: costs no disk
    with bounded_memory(), pytest.raises(RunDirError, match=r"big.bin: larger than the 268435456-byte cap"):
        merge_runs([tree], tmp_path / "merged")
    assert not (tmp_path / "merged").exists()


def test_merge_refuses_an_out_inside_a_source_and_conflicting_configs(tree, tmp_path):
    with pytest.raises(RunDirError, match="lies inside the merge source"):
        merge_runs([tree], tree / "merged")
    other = tmp_path / "other"
    d = fake_run(other)
    cfg = json.loads((d / "config.json").read_text())
    cfg["n_timesteps"] = 5
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(RunDirError, match="different configs"):
        merge_runs([tree, other], tmp_path / "merged")
    assert not (tmp_path / "merged").exists()
    with pytest.raises(FileNotFoundError):
        merge_runs([tmp_path / "missing"], tmp_path / "merged")
    (tmp_path / "a_file").write_text("")
    with pytest.raises(RunDirError, match="exists and is not a directory"):
        merge_runs([tree], tmp_path / "a_file")


# ------------------------------------------------------------------- study resume, evaluate, logs


def test_the_study_resume_check_reads_config_safely(tmp_path):
    os.symlink("/dev/zero", tmp_path / "config.json")
    with pytest.raises(RunDirError, match="is a symbolic link"):
        read_json_file(tmp_path / "config.json")


@pytest.mark.parametrize(
    "name, make",
    [
        ("config.json", lambda run, out: (run / "config.json").unlink() or os.symlink(out / "secret.txt", run / "config.json")),
        ("model.zip", lambda run, out: (run / "model.zip").unlink() or os.symlink("/dev/zero", run / "model.zip")),
        ("model.zip", lambda run, out: (run / "model.zip").unlink() or os.mkfifo(run / "model.zip")),
        ("vecnormalize.json", lambda run, out: os.mkfifo(run / "vecnormalize.json")),
        ("vecnormalize.json", lambda run, out: os.symlink("/dev/zero", run / "vecnormalize.json")),
    ],
)  # fmt: skip
def test_evaluate_refuses_links_and_fifos(tree, outside, capsys, name, make):
    run = tree.joinpath(*KEY)
    cfg = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({k: v for k, v in cfg.items() if k != "provenance"}))
    make(run, outside)
    lines = run_cli(["evaluate", str(run)], capsys)
    assert len(lines) == 1 and f"{name}: is a" in lines[0], lines


def test_training_reward_logs_are_read_with_caps(tmp_path):
    from egsw_gym.experiments.study_report import training_reward_curves

    root = tmp_path / "runs"
    d = fake_run(root, env_id="egsw/Arithmetic-v0", algo="grpo")
    runs = collect_study([root])
    ((x, y),) = training_reward_curves(runs)["egsw/Arithmetic-v0"]["grpo"]
    assert x.tolist() == [1.0, 2.0] and y.tolist() == [0.5, 0.75]
    (d / "logs" / "progress.csv").unlink()
    os.symlink("/dev/zero", d / "logs" / "progress.csv")
    with pytest.raises(RunDirError, match="progress.csv: is a symbolic link"):
        training_reward_curves(runs)


def test_plot_never_writes_through_a_link_in_its_directory(tree, outside, capsys):
    os.symlink(outside / "secret.txt", tree / "summary.md")
    before = snapshot(outside)
    lines = run_cli(["plot", str(tree)], capsys)
    assert len(lines) == 1 and "summary.md: is a symbolic link" in lines[0]
    assert snapshot(outside) == before and not (tree / "curves.csv").exists()


def test_resuming_over_a_finished_run_reads_its_result_safely(tmp_path):
    from egsw_gym.experiments.runner import train_run

    run = tmp_path / "CartPole-v1" / "ppo" / "seed0"
    run.mkdir(parents=True)
    os.symlink("/dev/zero", run / "result.json")
    with bounded_memory(), pytest.raises(RunDirError, match="result.json: is a symbolic link"):
        train_run(make_run_spec("ppo", "CartPole-v1", 0), run)
