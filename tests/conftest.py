"""Shared fixtures: the tiny-language-model GRPO setup several test files use.

``tiny_lm_grpo(**overrides)`` builds ``GRPO("LMPolicy", "egsw/Arithmetic-v0", ...)`` with a one-layer,
32-wide GPT-2 and 4-token completions, small enough for a handful of updates in a second; the
defaults give a gradient even when every reward is 0 (``ent_coef``) and turn EGSW on, so a test
exercises the whole update. ``tiny_lm_env(n_envs)`` is the matching vectorised env (for ``load``).
``one_thread`` runs a test on one torch thread and restores the count after it (the machine's cores
are shared by the xdist workers; use it with ``pytest.mark.usefixtures``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch

from egsw_gym import EGSW, GRPO
from egsw_gym.common.env_util import build_vec_env

#: The text environment and the tiny model the LM tests train.
LM_ENV_ID = "egsw/Arithmetic-v0"
LM_ENV_KWARGS = dict(max_new_tokens=4)
TINY_LM_CONFIG = dict(n_layer=1, n_embd=32, n_head=2)


@pytest.fixture
def tiny_lm_grpo() -> Callable[..., GRPO]:
    """Factory of tiny-LM GRPO models; keyword arguments override the defaults."""

    def make(**overrides: Any) -> GRPO:
        kwargs: dict[str, Any] = dict(
            group_size=2,
            n_groups=2,
            env_kwargs=dict(LM_ENV_KWARGS),
            policy_kwargs=dict(model_config=dict(TINY_LM_CONFIG)),
            learning_rate=1e-2,
            n_epochs=1,
            ent_coef=0.01,  # a gradient even when every reward is 0 (the untrained model never answers right)
            egsw=EGSW(),
            seed=5,
        )
        kwargs.update(overrides)
        return GRPO("LMPolicy", LM_ENV_ID, **kwargs)

    return make


@pytest.fixture
def tiny_lm_env() -> Callable[..., Any]:
    """Factory of the tiny-LM setup's vectorised env (``n_envs`` slots, default 4)."""
    return lambda n_envs=4: build_vec_env(LM_ENV_ID, n_envs, env_kwargs=dict(LM_ENV_KWARGS))


@pytest.fixture
def eager_lm_setup() -> Callable[..., tuple[Any, Any]]:
    """``eager_lm_setup(env_id, n_envs, max_new_tokens)``: a batched text env (``vector_entry_point``)
    and an eager-decoding ``LMPolicy`` on it (2 layers, 32 wide, seed 0), for decode-path tests."""
    import gymnasium as gym

    from egsw_gym.policies.lm import LMPolicy

    def make(env_id: str, n_envs: int, max_new_tokens: int) -> tuple[Any, Any]:
        venv = gym.make_vec(
            env_id, n_envs, vectorization_mode="vector_entry_point", max_new_tokens=max_new_tokens
        )
        policy = LMPolicy(
            venv.single_observation_space,
            venv.single_action_space,
            lambda _: 1e-3,
            model_config=dict(n_layer=2, n_embd=32, n_head=2, seed=0),
            accel=("shared_decode", "prefix_tree"),
        )
        return venv, policy

    return make


@pytest.fixture
def act_round() -> Callable[..., tuple[list[torch.Tensor], Any]]:
    """``act_round(policy, obs, steps, seed, deterministic=False)``: ``steps`` calls of ``policy.act``
    from ``torch.manual_seed(seed)``; returns the ``(B, steps)`` actions, log-probs and entropies
    and the last state."""

    def run(
        policy: Any, obs: Any, steps: int, seed: int, deterministic: bool = False
    ) -> tuple[list[torch.Tensor], Any]:
        torch.manual_seed(seed)
        state, out = None, []
        for _ in range(steps):
            actions, log_probs, entropies, state = policy.act(obs, state, deterministic=deterministic)
            out.append((actions, log_probs, entropies))
        return [torch.stack(x, 1) for x in zip(*out, strict=True)], state

    return run


@pytest.fixture
def flat_params() -> Callable[[Any], torch.Tensor]:
    """``flat_params(model)``: all policy parameters as one detached vector (for exact comparisons)."""
    return lambda model: torch.cat([p.detach().flatten() for p in model.policy.parameters()])


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Run the test on one torch thread, restoring the previous thread count afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
