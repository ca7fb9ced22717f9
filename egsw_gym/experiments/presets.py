"""Hyperparameter presets, RL Zoo style: one YAML file per environment family.

Each file maps an environment id to run settings (``n_timesteps``, ``eval_freq``, ``eval_episodes``,
``env_kwargs``, ``warm_start_steps``), one block per base algorithm (``ppo``, ``grpo``: constructor
arguments plus ``n_envs``, ``policy``, ``normalize``) and an ``egsw`` block, the EGSW config the
``-egsw`` algorithm variants add (an ``egsw`` block inside an algorithm block refines it for that
algorithm). ``"lin_<x>"`` values (learning rates, clip ranges) decay linearly from x to 0. Any value can be overridden from the command line with
``--set KEY=VALUE`` where KEY is dotted (``grpo.learning_rate=1e-3``, ``egsw.alpha=0.2``,
``n_timesteps=5000``); values are parsed as YAML scalars.
"""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import yaml
from stable_baselines3.common.utils import LinearSchedule

from egsw_gym.algorithms.registry import ALGORITHMS, DEFAULT_ALGORITHMS, get_algorithm
from egsw_gym.egsw import EGSW

__all__ = [
    "ALGORITHMS",
    "DEFAULT_ALGORITHMS",
    "SUITES",
    "NoAlgorithmBlockError",
    "RunSpec",
    "load_suite",
    "find_env_preset",
    "make_run_spec",
    "parse_overrides",
]

#: suite name -> preset file (also the environment family)
SUITES = ("classic", "mujoco", "llm")

_RUN_KEYS = (
    "n_timesteps",
    "eval_freq",
    "eval_episodes",
    "env_kwargs",
    "warm_start_steps",
    "warm_start_kwargs",
)
_ALGO_RUN_KEYS = ("n_envs", "policy", "normalize")


@dataclass
class RunSpec:
    """Everything needed to train one (algorithm, environment, seed) run.

    Parameters
    ----------
    algo : str
        An algorithm name of :data:`~egsw_gym.algorithms.registry.ALGORITHMS`.
    env_id : str
        Gymnasium environment id.
    seed : int
        Random seed of the run.
    n_timesteps : int
        Training budget in environment steps (tokens for language-model environments).
    n_envs : int
        Number of parallel environments.
    policy : str
        Policy name (``"MlpPolicy"``, ``"LMPolicy"``).
    algo_kwargs : dict
        Remaining constructor arguments of the algorithm.
    egsw : EGSW or None
        EGSW config for the ``-egsw`` variants, ``None`` otherwise.
    eval_freq : int
        Evaluate every this many environment steps.
    eval_episodes : int
        Episodes (or held-out problems) per evaluation.
    normalize : bool
        Wrap the training env in ``VecNormalize``.
    env_kwargs : dict
        Keyword arguments for ``gym.make``.
    warm_start_steps : int
        Supervised warm-start steps for language-model policies (0 for none).
    warm_start_kwargs : dict
        Other keyword arguments of :func:`egsw_gym.llm.warm_start` (``lr``, ``batch_size``).
    """

    algo: str
    env_id: str
    seed: int
    n_timesteps: int
    n_envs: int
    policy: str
    algo_kwargs: dict[str, Any] = field(default_factory=dict)
    egsw: EGSW | None = None
    eval_freq: int = 10_000
    eval_episodes: int = 10
    normalize: bool = False
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    warm_start_steps: int = 0
    warm_start_kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def base_algo(self) -> str:
        """The base algorithm (``ppo``, ``grpo``) of :attr:`algo`, from the algorithm table."""
        return get_algorithm(self.algo).base

    def algorithm_kwargs(self) -> dict[str, Any]:
        """``algo_kwargs`` ready for the constructor: ``"lin_<x>"`` strings become linear schedules.

        The spec itself keeps the strings, so ``config.json`` stays plain, readable data.
        """
        return {k: _schedule(v) for k, v in self.algo_kwargs.items()}

    def to_dict(self) -> dict[str, Any]:
        """Plain-data view (written next to each run as ``config.json``)."""
        d = dict(self.__dict__)
        d["egsw"] = self.egsw.to_dict() if self.egsw is not None else None
        return d


def load_suite(suite: str) -> dict[str, dict[str, Any]]:
    """The presets of one environment family (``classic``, ``mujoco``, ``llm``)."""
    if suite not in SUITES:
        raise ValueError(f"suite must be one of {list(SUITES)}, got {suite!r}")
    return copy.deepcopy(_parsed_suite(suite))


@functools.cache
def _parsed_suite(suite: str) -> dict[str, dict[str, Any]]:
    """The parsed YAML file (parsed once per process: a study plans hundreds of runs from it)."""
    text = resources.files("egsw_gym.experiments").joinpath("presets", f"{suite}.yaml").read_text()
    return yaml.safe_load(text)


def find_env_preset(env_id: str) -> dict[str, Any]:
    """The preset block of ``env_id``, searched in every suite."""
    for suite in SUITES:
        presets = load_suite(suite)
        if env_id in presets:
            return copy.deepcopy(presets[env_id])
    known = sorted(k for s in SUITES for k in load_suite(s))
    raise ValueError(f"no preset for env {env_id!r}; known: {known}. Add a block to a presets YAML file.")


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """``["grpo.learning_rate=1e-3", "n_timesteps=5000"]`` -> nested dict of YAML-parsed values.

    Strict: YAML aliases, anchors and tags are refused, and every key and value is checked (an
    unknown key gets the closest valid one); see :mod:`egsw_gym.experiments.overrides`.
    """
    from egsw_gym.experiments.overrides import parse_overrides as parse

    return parse(items)


def _schedule(value: Any) -> Any:
    """RL Zoo's ``"lin_2e-3"``: a linear decay from 2e-3 to 0 over training (SB3 ``LinearSchedule``)."""
    if isinstance(value, str) and value.startswith("lin_"):
        return LinearSchedule(float(value[4:]), 0.0, 1.0)
    return value


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            _merge(base[k], v)
        else:
            base[k] = v
    return base


class NoAlgorithmBlockError(ValueError):
    """An environment's preset has no block for the requested base algorithm (e.g. PPO on a text task).

    A ``ValueError`` (the argument combination is invalid); grids such as
    :func:`~egsw_gym.experiments.compare.plan_runs` catch it to skip the combination.
    """


def make_run_spec(algo: str, env_id: str, seed: int, overrides: dict[str, Any] | None = None) -> RunSpec:
    """Build the :class:`RunSpec` of one run from the presets plus ``overrides``.

    Parameters
    ----------
    algo : str
        A name of the algorithm table (:data:`~egsw_gym.algorithms.registry.ALGORITHMS`:
        ``ppo``, ``ppo-egsw``, ``grpo``, ``grpo-egsw``, ``grpo-sr``).
    env_id : str
        Environment id with a preset.
    seed : int
        Random seed.
    overrides : dict, optional
        Nested overrides, e.g. from :func:`parse_overrides`.

    Raises
    ------
    ValueError
        For an unknown ``algo`` (the message lists the valid names).
    NoAlgorithmBlockError
        When the preset of ``env_id`` has no block for ``algo``'s base algorithm.
    """
    entry = get_algorithm(algo)
    base, use_egsw = entry.base, entry.egsw
    preset = find_env_preset(env_id)
    if base in preset and entry.kwargs:
        # The variant's fixed arguments win over the preset file; the user's overrides win over them.
        _merge(preset[base], copy.deepcopy(dict(entry.kwargs)))
    preset = _merge(preset, copy.deepcopy(overrides or {}))
    if base not in preset:
        raise NoAlgorithmBlockError(
            f"the preset of {env_id!r} has no {base!r} block, so {algo!r} cannot run on it"
        )
    algo_kwargs = dict(preset[base])
    run = {k: algo_kwargs.pop(k) for k in _ALGO_RUN_KEYS if k in algo_kwargs}
    # Precedence: the environment's `egsw` block < the algorithm block's `egsw` < the user's `--set egsw.*`.
    egsw_config = {
        **(preset.get("egsw") or {}),
        **(algo_kwargs.pop("egsw", None) or {}),
        **((overrides or {}).get("egsw") or {}),
    }
    return RunSpec(
        algo=algo,
        env_id=env_id,
        seed=int(seed),
        n_timesteps=int(preset["n_timesteps"]),
        n_envs=int(run.get("n_envs", 1)),
        policy=str(run.get("policy", "MlpPolicy")),
        normalize=bool(run.get("normalize", False)),
        algo_kwargs=algo_kwargs,
        egsw=EGSW(**egsw_config) if use_egsw else None,
        eval_freq=int(preset.get("eval_freq", 10_000)),
        eval_episodes=int(preset.get("eval_episodes", 10)),
        env_kwargs=dict(preset.get("env_kwargs") or {}),
        warm_start_steps=int(preset.get("warm_start_steps", 0)),
        warm_start_kwargs=dict(preset.get("warm_start_kwargs") or {}),
    )
