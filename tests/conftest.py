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
