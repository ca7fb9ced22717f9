"""Issue 11, section 2: ``egsw-gym evaluate`` on tampered run directories gives one line and a non-zero exit."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import pytest

from egsw_gym.cli import main


@pytest.fixture(scope="module")
def run_dirs(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("runs")
    common = ["--seed", "0", "--out", str(out), "--set", "n_timesteps=256", "--set", "eval_freq=1000000",
              "--set", "eval_episodes=2"]  # fmt: skip
    assert (
        main(["train", "--algo", "ppo", "--env", "CartPole-v1", *common, "--set", "ppo.normalize=true"]) == 0
    )
    assert main(["train", "--algo", "ppo", "--env", "Pendulum-v1", *common]) == 0
    return {
        "cartpole": out / "CartPole-v1" / "ppo" / "seed0",
        "pendulum": out / "Pendulum-v1" / "ppo" / "seed0",
    }


def _config(run: Path) -> dict:
    return json.loads((run / "config.json").read_text())


def _set_config(field, value):
    def edit(run: Path) -> None:
        cfg = _config(run)
        cfg[field] = value
        (run / "config.json").write_text(json.dumps(cfg))

    return edit


def _write(name: str, data: bytes | str):
    def edit(run: Path) -> None:
        (run / name).write_bytes(data if isinstance(data, bytes) else data.encode())

    return edit


def _delete(name: str):
    return lambda run: (run / name).unlink()


def _norm(edit):
    def apply(run: Path) -> None:
        data = json.loads((run / "vecnormalize.json").read_text())
        edit(data)
        (run / "vecnormalize.json").write_text(json.dumps(data))

    return apply


def _truncate(run: Path) -> None:
    raw = (run / "model.zip").read_bytes()
    (run / "model.zip").write_bytes(raw[: len(raw) // 3])


def _tamper_model_value(run: Path) -> None:
    path = run / "model.zip"
    with zipfile.ZipFile(path) as zf:
        content = {n: zf.read(n) for n in zf.namelist()}
    data = json.loads(content["data"])
    data["n_steps"] = 0
    content["data"] = json.dumps(data).encode()
    with zipfile.ZipFile(path, "w") as zf:
        for name, raw in content.items():
            zf.writestr(name, raw)


CASES = {
    "config_missing": (_delete("config.json"), "config.json not found"),
    "config_not_json": (_write("config.json", "{not json"), "not valid JSON"),
    "config_not_utf8": (_write("config.json", b"\xff\xfe{}"), "not valid JSON"),
    "config_deep": (_write("config.json", "[" * 100_000 + "]" * 100_000), "not valid JSON"),
    "config_list": (_write("config.json", "[1, 2]"), "must hold a JSON object"),
    "config_huge": (_write("config.json", " " * 2_000_000), "larger than"),
    "unknown_field": (_set_config("evil", 1), "unknown fields ['evil']"),
    "unknown_algo": (_set_config("algo", "sac"), "field 'algo' must be one of"),
    "seed_string": (_set_config("seed", "x"), "field 'seed' must be int"),
    "episodes_negative": (_set_config("eval_episodes", -3), "'eval_episodes'"),
    "episodes_bool": (_set_config("eval_episodes", True), "field 'eval_episodes' must be int"),
    "bad_egsw": (_set_config("egsw", {"alpha": -1.0}), "field 'egsw'"),
    "unknown_env": (_set_config("env_id", "NoSuchEnv-v0"), "NoSuchEnv"),
    "model_missing": (_delete("model.zip"), "model.zip not found"),
    "model_truncated": (_truncate, "checkpoint"),
    "model_not_zip": (_write("model.zip", "hello"), "wasn't a zip-file"),
    "model_value": (_tamper_model_value, "n_steps must be an integer >= 1"),
    "model_other_env": ("pendulum", "Observation spaces do not match"),
    "norm_missing": (_delete("vecnormalize.json"), "vecnormalize.json not found"),
    "norm_not_json": (_write("vecnormalize.json", "{"), "vecnormalize.json is not valid JSON"),
    "norm_shape": (_norm(lambda d: d["obs_rms"].__setitem__("mean", [0.0])), "entry 'obs_rms.mean'"),
    "norm_nan": (_norm(lambda d: d["obs_rms"].__setitem__("var", [float("nan")] * 4)), "entry 'obs_rms.var'"),
    "norm_key": (_norm(lambda d: d.pop("ret_rms")), "entry 'ret_rms.mean': missing"),
    "norm_count": (_norm(lambda d: d["ret_rms"].__setitem__("count", -1)), "entry 'ret_rms.count'"),
    "norm_clip": (_norm(lambda d: d.__setitem__("clip_obs", "x")), "entry 'clip_obs'"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_tampered_run_directory_gives_one_line_and_nonzero_exit(run_dirs, tmp_path, capsys, case):
    edit, message = CASES[case]
    run = tmp_path / "run"
    shutil.copytree(run_dirs["cartpole"], run)
    if isinstance(edit, str):
        shutil.copy(run_dirs[edit] / "model.zip", run / "model.zip")
    else:
        edit(run)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", str(run)])
    err = capsys.readouterr().err
    assert exc.value.code == 2
    assert err.startswith("egsw-gym: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert message in err, err


def test_the_untouched_run_evaluates(run_dirs, capsys):
    capsys.readouterr()
    assert main(["evaluate", str(run_dirs["cartpole"]), "--episodes", "2"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["episodes"] == 2 and out["eval_mean"] > 0


@pytest.mark.parametrize("episodes", ["-3", "0", "abc"])
def test_bad_episode_counts_are_rejected(run_dirs, capsys, episodes):
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", str(run_dirs["cartpole"]), "--episodes", episodes])
    assert exc.value.code == 2 and "--episodes: must be an integer >= 1" in capsys.readouterr().err


def test_a_missing_run_directory_is_named(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", str(tmp_path / "nope")])
    assert exc.value.code == 2 and "nope' does not exist" in capsys.readouterr().err
