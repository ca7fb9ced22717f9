"""``--set KEY=VALUE``: YAML without aliases or tags, every key checked (with the closest valid key),
values checked against the target's signature; one line and exit 2 on the command line."""

from __future__ import annotations

import tracemalloc

import pytest

from egsw_gym.cli import main
from egsw_gym.experiments.overrides import MAX_DEPTH, OverrideError, parse_overrides
from egsw_gym.experiments.presets import make_run_spec

pytestmark = pytest.mark.timeout(60)  # hang protection only (an alias bomb used to run for minutes)


def _bomb(levels: int = 9, width: int = 9) -> str:
    """The billion-laughs shape: each level lists the previous one ``width`` times (~170 characters)."""
    parts = ["&l0 [" + ",".join(["1"] * width) + "]"]
    for k in range(1, levels):
        parts.append(f"&l{k} [" + ",".join([f"*l{k - 1}"] * width) + "]")
    return "[" + ", ".join(parts) + "]"


#: item -> what the one line says
BAD = {
    f"env_kwargs.x={_bomb()}": "YAML anchors (&name) are not allowed",
    "env_kwargs.x=[*a]": "YAML aliases (*name) are not allowed",
    "env_kwargs.x=&a 1": "YAML anchors (&name) are not allowed",
    "ppo.learning_rate=!!python/object/apply:os.system ['echo owned']": "YAML tags",
    "n_timesteps=!!python/name:os.system": "YAML tags",
    "env_kwargs.x=!!binary aGk=": "YAML tags",
    "env_kwargs.x=[1, 2": "not a valid YAML value",
    "env_kwargs.x=" + "[" * 4000 + "]" * 4000: f"nested more than {MAX_DEPTH} deep",
    "env_kwargs.x=" + "[" * 6000 + "]" * 6000: "longer than 10000 characters",
    "a." * 5000 + "b=1": "more than 6 dotted parts",
    "ppo..learning_rate=1": "KEY must be dotted names",
    "noequals": "--set expects KEY=VALUE",
    "n_timestep=1000": "unknown key 'n_timestep'; did you mean 'n_timesteps'?",
    "egsw.alpah=0.2": "unknown EGSW field 'alpah'; did you mean 'alpha'?",
    "ppo.learning_rat=1e-3": "unknown PPO setting 'learning_rat'; did you mean 'learning_rate'?",
    "grpo.group_sise=4": "unknown GRPO setting 'group_sise'; did you mean 'group_size'?",
    "ppo.egsw.tempreature=2": "unknown EGSW field 'tempreature'; did you mean 'temperature'?",
    "warm_start_kwargs.lrr=1e-3": "unknown warm_start argument 'lrr'; did you mean 'lr'?",
    "learning_rate=1e-3": "did you mean ppo.learning_rate or grpo.learning_rate?",
    "n_envs=4": "did you mean ppo.n_envs or grpo.n_envs?",
    "ppo.device=cuda": "egsw-gym trains on the CPU",
    "ppo.seed=3": "use --seed",
    "grpo.seed=3": "use --seed",
    "ppo.tensorboard_log=/tmp/x": "choose the place with --out",
    "ppo.verbose=2": "use --progress",
    "ppo.env=Acrobot-v1": "use --env",
    "grpo.env_kwargs.max_new_tokens=4": "use env_kwargs.NAME=VALUE",
    "ppo=5": "ppo is a mapping of settings; set its keys",
    "egsw=0.1": "egsw is a mapping of settings",
    "env_kwargs=[1]": "env_kwargs is a mapping of settings",
    "ppo.n_envs=-1": "must be a whole number in [1, 65536]",
    "ppo.n_envs=100000": "must be a whole number in [1, 65536]",
    "n_timesteps=.inf": "non-finite number inf",
    "n_timesteps=.nan": "non-finite number nan",
    "n_timesteps=-5": "must be a whole number in [1, ",
    "n_timesteps=0": "must be a whole number in [1, ",
    "n_timesteps=1.5": "must be a whole number in [1, ",
    "n_timesteps=true": "must be a whole number in [1, ",
    "n_timesteps=many": "must be a whole number in [1, ",
    "ppo.n_steps=1000000000000000000000": "beyond +-2**53",
    "ppo.n_steps=64.5": "ppo.n_steps=64.5: expects int",
    "ppo.gamma=high": "ppo.gamma='high': expects float",
    "ppo.normalize_advantage=1": "expects bool",
    "ppo.normalize=yes please": "expects true or false",
    "grpo.learning_rate=lin_fast": "expects float | Schedule",
    "grpo.loss_type=ppo": "expects Literal['grpo', 'dr_grpo', 'token']",
    "egsw.mode=sideways": "expects Literal['trajectory', 'step']",
    "ppo.policy_kwargs=5": "expects dict[str, Any] | None",
    "ppo.rollout_buffer_class=RolloutBuffer": "expects type[RolloutBuffer] | None",
    "env_kwargs.day=2024-01-01": "a date value is not allowed",
    "env_kwargs.m={1: 2}": "mapping keys must be strings",
}


@pytest.mark.parametrize("item", list(BAD), ids=[f"case{k}" for k in range(len(BAD))])
def test_bad_overrides_are_one_named_line(item):
    tracemalloc.start()
    try:
        with pytest.raises(OverrideError) as info:
            parse_overrides([item])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    text = str(info.value)
    assert BAD[item] in text, text
    assert "\n" not in text and len(text) < 700, text
    assert peak < 50 * 2**20


def test_conflicting_items_are_named():
    with pytest.raises(OverrideError, match="ppo.learning_rate was set to a value by an earlier --set"):
        parse_overrides(["ppo.learning_rate=1e-3", "ppo.learning_rate.x=2"])


def test_good_overrides_are_parsed_coerced_and_reach_the_run_spec():
    over = parse_overrides(
        [
            "ppo.n_steps=1e3",  # an integral float becomes the int the signature asks for
            "ppo.policy_kwargs.net_arch=[64, 64]",
            "ppo.normalize=true",
            "ppo.learning_rate=lin_1e-3",
            "grpo.egsw.mode=step",
            "grpo.sr_temperature=0.3",
            "egsw.alpha=0.2",
            "env_kwargs.max_new_tokens=4",
            "warm_start_kwargs.lr=1e-3",
            "n_timesteps=2e4",
            "eval_freq=5000",
        ]
    )
    assert over["ppo"] == {
        "n_steps": 1000,
        "policy_kwargs": {"net_arch": [64, 64]},
        "normalize": True,
        "learning_rate": "lin_1e-3",
    }
    assert isinstance(over["ppo"]["n_steps"], int) and over["n_timesteps"] == 20_000
    assert over["warm_start_kwargs"] == {"lr": 1e-3} and over["egsw"] == {"alpha": 0.2}
    spec = make_run_spec("ppo-egsw", "CartPole-v1", 0, over)
    assert spec.algo_kwargs["n_steps"] == 1000 and spec.normalize and spec.egsw.alpha == 0.2
    assert spec.n_timesteps == 20_000 and spec.eval_freq == 5000
    lr = spec.algorithm_kwargs()["learning_rate"]
    assert lr(1.0) == pytest.approx(1e-3) and lr(0.0) == pytest.approx(0.0)
    assert make_run_spec("grpo-egsw", "CartPole-v1", 0, over).egsw.mode == "step"


@pytest.mark.parametrize(
    "args",
    [
        ["train", "--algo", "ppo", "--env", "CartPole-v1"],
        ["compare", "--envs", "CartPole-v1", "--out", "unused"],
        ["study", "--dry-run"],
    ],
    ids=["train", "compare", "study-dry-run"],
)
@pytest.mark.parametrize(
    "item, message",
    [
        (f"env_kwargs.x={_bomb()}", "YAML anchors"),
        ("ppo.learning_rate=!!python/object/apply:os.system ['echo owned']", "YAML tags"),
        ("n_timestep=1000", "did you mean 'n_timesteps'?"),
        ("n_timesteps=-5", "must be a whole number"),
        ("ppo.learning_rat=1e-3", "did you mean 'learning_rate'?"),
        ("ppo.seed=1", "use --seed"),
    ],
    ids=["bomb", "tag", "typo", "negative", "algo-typo", "cli-key"],
)
def test_every_command_refuses_bad_overrides_with_one_line(tmp_path, capsys, args, item, message):
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main([*args, "--set", item])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "Traceback" not in err
    assert err.startswith("egsw-gym: error: --set ") and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "unused").exists()


def test_study_dry_run_accepts_good_overrides(capsys):
    assert main(["study", "--dry-run", "--envs", "CartPole-v1", "--set", "n_timesteps=5000"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[1] == "5000"
