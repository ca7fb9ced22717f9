"""The egsw-gym command line, in process: train -> evaluate round trip, plot, --help, bad input."""

from __future__ import annotations

import json

import pytest

from egsw_gym.cli import main


@pytest.mark.parametrize(
    "algo, env_id, overrides",
    [
        # Acrobot's GRPO preset normalises observations: evaluate must restore the statistics.
        ("grpo-egsw", "Acrobot-v1", ["n_timesteps=2000", "eval_freq=1000000", "eval_episodes=2"]),
        ("ppo-egsw", "CartPole-v1", ["n_timesteps=1024", "eval_freq=1000000", "eval_episodes=3"]),
    ],
)
def test_train_then_evaluate_reproduces_the_final_evaluation(tmp_path, capsys, algo, env_id, overrides):
    args = ["train", "--algo", algo, "--env", env_id, "--seed", "1", "--out", str(tmp_path)]
    for o in overrides:
        args += ["--set", o]
    assert main(args) == 0
    run_dir = tmp_path / env_id / algo / "seed1"
    result = json.loads((run_dir / "result.json").read_text())
    assert result["timesteps"] >= int(overrides[0].split("=")[1])
    capsys.readouterr()
    # The saved model (loaded without unpickling) on the same seeded evaluation episodes gives the
    # same deterministic score as the evaluation at the end of training.
    assert main(["evaluate", str(run_dir)]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["eval_mean"] == pytest.approx(result["final_eval_mean"])
    # A second train call finds the finished run and skips it (same result, no retraining).
    assert main(args) == 0
    assert json.loads((run_dir / "result.json").read_text()) == result


def test_plot_writes_table_and_png(tmp_path, capsys):
    main(
        [
            "train",
            "--algo",
            "ppo",
            "--env",
            "CartPole-v1",
            "--out",
            str(tmp_path),
            "--set",
            "n_timesteps=512",
            "--set",
            "eval_freq=256",
            "--set",
            "eval_episodes=2",
        ]
    )
    capsys.readouterr()
    assert main(["plot", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| CartPole-v1 | ppo | 1 |" in out
    assert (tmp_path / "summary.md").exists() and list(tmp_path.glob("curves_*.png"))


@pytest.mark.parametrize(
    "cmd", [[], ["train"], ["compare"], ["plot"], ["evaluate"], ["demo"], ["study"], ["merge"]]
)
def test_help_everywhere(cmd, capsys):
    with pytest.raises(SystemExit) as exc:
        main([*cmd, "--help"])
    assert exc.value.code == 0
    assert "usage: egsw-gym" in capsys.readouterr().out


def test_bad_input_names_the_argument(capsys):
    with pytest.raises(SystemExit):
        main(["compare", "--suite", "classic", "--algos", "ppo,sac", "--out", "x"])
    assert "unknown algorithm(s) ['sac']" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["train", "--algo", "ppo", "--env", "CartPole-v1", "--set", "noequals"])
    assert exc.value.code == 2 and "--set expects KEY=VALUE" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "--algo", "ppo-egsw", "--env", "CartPole-v1", "--set", "egsw.temperature=0"])
    assert "EGSW.temperature must be a finite number >= 1e-06" in capsys.readouterr().err
