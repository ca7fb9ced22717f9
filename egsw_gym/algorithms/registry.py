"""The algorithm table: every algorithm name the experiment runner, the CLI and the presets accept.

A name is a *base* algorithm (a class, and the block of a preset file that holds its
hyperparameters) with EGSW on or off, plus constructor arguments the variant fixes::

    name         base    EGSW   fixed arguments
    ppo          ppo     off
    ppo-egsw     ppo     on     (the preset's egsw block)
    grpo         grpo    off
    grpo-egsw    grpo    on     (the preset's egsw block)
    grpo-sr      grpo    off    advantage="sr_grpo"  (SR-GRPO's soft-reward group advantage)

Adding an algorithm means adding its base to :data:`BASES` and its names to :data:`ALGORITHMS`
(plus a block for it in the preset files of the environments it should run on); the runner, the
CLI and :func:`~egsw_gym.experiments.presets.make_run_spec` read everything else from here.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, NamedTuple

from stable_baselines3.common.base_class import BaseAlgorithm

from egsw_gym.algorithms.grpo import GRPO
from egsw_gym.algorithms.ppo import PPO

__all__ = [
    "ALGORITHMS",
    "BASES",
    "DEFAULT_ALGORITHMS",
    "Algorithm",
    "Base",
    "closest_name",
    "get_algorithm",
    "unknown_name_message",
]


class Base(NamedTuple):
    """A base algorithm: the class that trains, and how the runner treats its environment."""

    cls: type[BaseAlgorithm]
    """The algorithm class (constructed as ``cls(policy, env, egsw=..., **preset_block)``)."""
    normalize_reward: bool
    """Whether ``normalize: true`` in a preset also normalises rewards (``VecNormalize``): on for a
    learned critic (PPO), off for group-normalised returns (GRPO, which normalises within groups)."""


class Algorithm(NamedTuple):
    """One name of the table (indexable as ``(base, egsw)`` like a pair)."""

    base: str
    """Key of :data:`BASES`, and the preset block that holds the hyperparameters."""
    egsw: bool
    """Whether the run gets the preset's EGSW config (``-egsw`` variants) or ``egsw=None``."""
    kwargs: Mapping[str, Any] = MappingProxyType({})
    """Constructor arguments the variant sets: they win over the preset file, and ``--set`` wins
    over them (``--set grpo.sr_temperature=0.3``)."""

    @property
    def cls(self) -> type[BaseAlgorithm]:
        """The class that trains this algorithm."""
        return BASES[self.base].cls


#: base name -> class and environment treatment
BASES: Mapping[str, Base] = MappingProxyType(
    {
        "ppo": Base(PPO, normalize_reward=True),
        "grpo": Base(GRPO, normalize_reward=False),
    }
)

#: algorithm name -> :class:`Algorithm`
ALGORITHMS: Mapping[str, Algorithm] = MappingProxyType(
    {
        "ppo": Algorithm("ppo", egsw=False),
        "ppo-egsw": Algorithm("ppo", egsw=True),
        "grpo": Algorithm("grpo", egsw=False),
        "grpo-egsw": Algorithm("grpo", egsw=True),
        # SR-GRPO (KAIST-AILab/SR-GRPO): the softmax-weighted group return as the advantage, with
        # GRPO's sr_temperature (0.5 by default, as in the reference code).
        "grpo-sr": Algorithm("grpo", egsw=False, kwargs=MappingProxyType({"advantage": "sr_grpo"})),
    }
)

#: what ``egsw-gym compare`` runs when ``--algos`` is not given (baselines such as grpo-sr are opt-in)
DEFAULT_ALGORITHMS = ("ppo", "ppo-egsw", "grpo", "grpo-egsw")


def closest_name(name: object, valid: list[str]) -> str | None:
    """The valid name a typo most likely meant: the same words in another order (``"sr-grpo"`` for
    ``"grpo-sr"``), else the closest spelling (:func:`difflib.get_close_matches`); ``None`` if none is close."""
    text = str(name).lower()
    words = sorted(re.split(r"[-_ ]+", text))
    same_words = [v for v in valid if sorted(re.split(r"[-_ ]+", v)) == words]
    close = same_words or difflib.get_close_matches(text, valid, n=1, cutoff=0.5)
    return close[0] if close else None


def unknown_name_message(what: str, name: object, valid: list[str]) -> str:
    """``"unknown <what> 'x'; did you mean 'y'? valid: a, b, c"`` (the hint only for a close match)."""
    close = closest_name(name, valid)
    hint = f"; did you mean {close!r}?" if close else ";"
    return f"unknown {what} {name!r}{hint} valid: {', '.join(valid)}"


def get_algorithm(name: str) -> Algorithm:
    """The table entry of ``name``.

    Parameters
    ----------
    name : str
        An algorithm name of :data:`ALGORITHMS` (``"ppo"``, ``"grpo-egsw"``...).

    Raises
    ------
    ValueError
        For an unknown name; the message lists the valid names and the closest one.
    """
    if not isinstance(name, str) or name not in ALGORITHMS:
        raise ValueError(unknown_name_message("algorithm", name, list(ALGORITHMS)))
    return ALGORITHMS[name]
