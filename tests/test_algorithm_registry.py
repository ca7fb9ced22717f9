"""The algorithm table: the presets, the runner and the CLI read every algorithm from it."""

from __future__ import annotations

import json
from types import MappingProxyType

import pytest
import torch

from egsw_gym import GRPO, PPO
from egsw_gym.algorithms import registry
from egsw_gym.algorithms.registry import ALGORITHMS, BASES, Algorithm, get_algorithm
from egsw_gym.cli import main
from egsw_gym.experiments.compare import plan_runs
from egsw_gym.experiments.presets import make_run_spec
from egsw_gym.experiments.runner import make_model

torch.set_num_threads(1)


@pytest.mark.parametrize("name", list(ALGORITHMS))
def test_every_name_builds_its_class_with_its_egsw_and_fixed_arguments(name):
    entry = get_algorithm(name)
    env_id = "CartPole-v1"
    spec = make_run_spec(name, env_id, seed=0)
    assert spec.base_algo == entry.base
    assert (spec.egsw is not None) == entry.egsw
    for key, value in entry.kwargs.items():
        assert spec.algo_kwargs[key] == value
    model = make_model(spec)
    assert type(model) is entry.cls is BASES[entry.base].cls
    assert (model.egsw is not None) == entry.egsw


def test_the_table_holds_the_two_classes_and_sr_grpo():
    assert {b.cls for b in BASES.values()} == {PPO, GRPO}
    assert get_algorithm("grpo-sr").kwargs == {"advantage": "sr_grpo"}
    # (base, egsw) indexing, as the reports read it
    assert tuple(ALGORITHMS["ppo-egsw"][:2]) == ("ppo", True)


@pytest.mark.parametrize(
    "typo, meant",
    [("sr-grpo", "grpo-sr"), ("ppo-egws", "ppo-egsw"), ("GRPO", "grpo"), ("grpo_egsw", "grpo-egsw")],
)
def test_an_unknown_name_lists_the_valid_ones_and_the_closest(typo, meant):
    for call in (
        lambda: get_algorithm(typo),
        lambda: make_run_spec(typo, "CartPole-v1", 0),
        lambda: plan_runs(None, ["CartPole-v1"], ["ppo", typo], [0]),
    ):
        with pytest.raises(ValueError) as err:
            call()
        message = str(err.value)
        assert f"did you mean {meant!r}" in message
        assert all(name in message for name in ALGORITHMS)


def test_a_name_with_nothing_close_gets_no_guess():
    with pytest.raises(ValueError, match="unknown algorithm 'sac'; valid: ppo, ppo-egsw") as err:
        get_algorithm("sac")
    assert "did you mean" not in str(err.value)


def test_cli_algo_typo_names_the_closest(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--algo", "sr-grpo", "--env", "CartPole-v1"])
    assert exc.value.code == 2
    assert "did you mean 'grpo-sr'" in capsys.readouterr().err


def test_an_algorithm_added_to_the_table_alone_runs_end_to_end(monkeypatch, tmp_path, capsys):
    """A new name (Dr. GRPO: no std scaling, its loss) needs only a registry entry."""
    added = {**ALGORITHMS, "grpo-dr": Algorithm("grpo", False, MappingProxyType({"scale_rewards": False}))}
    monkeypatch.setattr(registry, "ALGORITHMS", MappingProxyType(added))
    spec = make_run_spec("grpo-dr", "CartPole-v1", 0)
    assert spec.base_algo == "grpo" and spec.algo_kwargs["scale_rewards"] is False and spec.egsw is None
    out = tmp_path / "runs"
    args = ["train", "--algo", "grpo-dr", "--env", "CartPole-v1", "--out", str(out), "--timesteps", "300"]
    args += ["--set", "eval_freq=1000000", "--set", "eval_episodes=1", "--set", "grpo.n_epochs=1"]
    assert main(args) == 0
    run_dir = out / "CartPole-v1" / "grpo-dr" / "seed0"
    assert json.loads((run_dir / "config.json").read_text())["algo_kwargs"]["scale_rewards"] is False
    capsys.readouterr()
    assert main(["evaluate", str(run_dir), "--episodes", "1"]) == 0
    assert json.loads(capsys.readouterr().out)["algo"] == "grpo-dr"


def test_cli_timesteps_flag_sets_the_budget(tmp_path):
    args = ["train", "--algo", "ppo", "--env", "CartPole-v1", "--out", str(tmp_path), "--timesteps", "1e3"]
    assert main([*args, "--set", "eval_freq=1000000", "--set", "eval_episodes=1"]) == 0
    run_dir = tmp_path / "CartPole-v1" / "ppo" / "seed0"
    assert json.loads((run_dir / "config.json").read_text())["n_timesteps"] == 1000
    assert json.loads((run_dir / "result.json").read_text())["timesteps"] >= 1000


@pytest.mark.parametrize("value", ["0", "-5", "abc", "1.5"])
def test_cli_timesteps_flag_refuses_non_positive_or_fractional_budgets(value, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--algo", "ppo", "--env", "CartPole-v1", "--timesteps", value])
    assert exc.value.code == 2 and "--timesteps" in capsys.readouterr().err


def test_cli_timesteps_flag_and_set_must_agree(capsys):
    with pytest.raises(SystemExit) as exc:
        main(
            ["train", "--algo", "ppo", "--env", "CartPole-v1", "--timesteps", "500", "--set", "n_timesteps=6"]
        )
    assert exc.value.code == 2 and "--timesteps and --set n_timesteps" in capsys.readouterr().err


def test_cli_help_shows_timesteps_and_how_threads_are_chosen(capsys):
    for cmd in (["train"], []):
        with pytest.raises(SystemExit):
            main([*cmd, "--help"])
        out = capsys.readouterr().out
        assert "Threads:" in out and "--threads" in out and "one torch thread" in out
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "--timesteps N" in capsys.readouterr().out


@pytest.mark.parametrize("policy", ["LMPolicy", "lm_class"])
def test_ppo_points_language_models_at_grpo(policy):
    if policy == "lm_class":
        from egsw_gym.policies.lm import LMPolicy

        policy = LMPolicy
    with pytest.raises(ValueError, match=r"Language models train with GRPO.*GRPO\('LMPolicy', env"):
        PPO(policy, "egsw/Arithmetic-v0")


def test_cli_threads_must_be_at_least_one(capsys, tmp_path):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--algo", "ppo", "--env", "CartPole-v1", "--threads", "0", "--out", str(tmp_path)])
    assert exc.value.code == 2 and "argument --threads: must be an integer >= 1" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # refused before any run directory is made
