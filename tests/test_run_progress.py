"""Progress inside runs (egsw_gym.experiments.progress): timesteps read back from SB3's CSV log."""

from __future__ import annotations

from types import SimpleNamespace

from egsw_gym.experiments.progress import RunProgress, logged_timesteps


def _write_log(run_dir, text: str) -> None:
    (run_dir / "logs").mkdir(parents=True, exist_ok=True)
    (run_dir / "logs" / "progress.csv").write_text(text)


def test_logged_timesteps_reads_the_last_complete_row(tmp_path):
    assert logged_timesteps(tmp_path) == 0  # no log yet (warm start, first rollout)
    _write_log(tmp_path, "train/loss,time/total_timesteps,time/fps\n0.5,256,10\n0.4,512,11\n0.3,76")
    assert logged_timesteps(tmp_path) == 512  # the half-written last line is ignored
    _write_log(tmp_path, 'a,time/total_timesteps\n1,256\n"x,y",1024\n')
    assert logged_timesteps(tmp_path) == 1024  # quoted commas do not shift the column


def test_logged_timesteps_without_the_column_or_rows(tmp_path):
    _write_log(tmp_path, "train/loss\n0.5\n")
    assert logged_timesteps(tmp_path) == 0
    _write_log(tmp_path, "time/total_timesteps\n")
    assert logged_timesteps(tmp_path) == 0


def test_logged_timesteps_reads_only_the_tail_of_a_long_log(tmp_path):
    rows = "".join(f"{i * 0.1},{i * 100}\n" for i in range(20_000))  # ~300 kB, longer than the tail read
    _write_log(tmp_path, "train/loss,time/total_timesteps\n" + rows)
    assert logged_timesteps(tmp_path) == 19_999 * 100


def test_run_progress_sums_runs_caps_them_and_counts_finished_ones(tmp_path):
    runs = []
    for name, env_id in (("a", "CartPole-v1"), ("b", "CartPole-v1")):
        (tmp_path / name).mkdir()
        runs.append((SimpleNamespace(env_id=env_id, n_timesteps=1000), str(tmp_path / name)))
    _write_log(tmp_path / "a", "time/total_timesteps\n300\n")
    _write_log(tmp_path / "b", "time/total_timesteps\n1300\n")  # GRPO may pass its budget: capped
    with RunProgress(runs, interval=60, disable=True) as bar:
        bar.refresh()
        assert (bar.completed, bar.total) == (1300, 2000)
        bar.finished(runs[0][1], "a done")
        assert bar.completed == 2000
        assert bar.starting == 0


def test_run_progress_counts_runs_before_their_first_update(tmp_path):
    spec = SimpleNamespace(env_id="CartPole-v1", n_timesteps=100)
    runs = [(spec, str(tmp_path / "started")), (spec, str(tmp_path / "queued"))]
    (tmp_path / "started").mkdir()  # created by train_run; no log yet
    with RunProgress(runs, disable=True) as bar:
        bar.refresh()
        assert bar.starting == 1
    assert bar.unit == "steps"


def test_run_progress_names_tokens_for_language_model_runs(tmp_path):
    spec = SimpleNamespace(env_id="egsw/Arithmetic-v0", n_timesteps=10)
    with RunProgress([(spec, str(tmp_path))], disable=True) as bar:
        assert bar.unit == "tokens"
