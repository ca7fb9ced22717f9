"""Environments of egsw-gym (installed as ``egsw_gym.envs``): text generation with verifiable rewards.

Importing this package (``import egsw_gym`` does) registers, with ``entry_point`` (the single
:class:`~egsw_gym.envs.text_generation.TextGenerationEnv`) and ``vector_entry_point`` (the batched
:class:`~egsw_gym.envs.vector.TextGenerationVectorEnv`, for
``gym.make_vec(id, n, vectorization_mode="vector_entry_point")``):

- ``egsw/Arithmetic-v0``: ``task="arithmetic"`` (``"12+7="`` -> ``"19"``)
- ``egsw/Countdown-v0``: ``task="countdown"``
- ``egsw/GSM8K-v0``: ``task="gsm8k"`` (template word problems, answer after ``####``)
- ``egsw/JSONL-v0``: ``task="jsonl"``, needs ``data_path=...``
- ``egsw/ReasoningGym-v0``: ``task="reasoning_gym"``, any reasoning-gym dataset
  (``dataset="gsm_symbolic"``, ``size``, ``seed``, ``config={...}``; ``pip install egsw-gym[tasks]``)

Every keyword of the environments can be passed to ``gym.make`` / ``gym.make_vec``.
"""

from __future__ import annotations

import gymnasium as gym

__all__ = ["ENV_IDS", "register_envs"]

#: registered id -> task name.
ENV_IDS = {
    "egsw/Arithmetic-v0": "arithmetic",
    "egsw/Countdown-v0": "countdown",
    "egsw/GSM8K-v0": "gsm8k",
    "egsw/JSONL-v0": "jsonl",
    "egsw/ReasoningGym-v0": "reasoning_gym",
}


def register_envs() -> None:
    """Register the ``egsw/*`` ids with gymnasium (idempotent)."""
    for env_id, task in ENV_IDS.items():
        if env_id in gym.registry:
            continue
        gym.register(
            id=env_id,
            entry_point="egsw_gym.envs.text_generation:TextGenerationEnv",
            vector_entry_point="egsw_gym.envs.vector:TextGenerationVectorEnv",
            kwargs={"task": task},
        )


register_envs()
