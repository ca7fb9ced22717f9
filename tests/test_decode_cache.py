"""The ``"decode_cache"`` acceleration (``policies/lm/accel/decode_cache.py``): the plain decode
writing into reserved cache room with ready 4D masks; the same round as the plain path."""

from __future__ import annotations

import pytest
import torch

import egsw_gym  # noqa: F401  (registers the egsw/ ids)
from egsw_gym.policies.lm.accel.cache import GrowingLayer
from egsw_gym.policies.lm.accel.decode_cache import step_mask

pytest.importorskip("transformers")

from test_shared_decode import assert_same_round  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("env_id, max_new_tokens", [("egsw/Arithmetic-v0", 5), ("egsw/GSM8K-v0", 24)])
def test_decode_cache_rounds_equal_the_plain_path(attn, env_id, max_new_tokens, eager_lm_setup, act_round):
    """Distinct prompts (no runs to share), more steps than the reserved room and the observation
    window: the same tokens, log-probs and entropies as the plain path."""
    venv, policy = eager_lm_setup(env_id, 6, max_new_tokens)
    policy.model.config._attn_implementation = attn
    obs, _ = venv.reset(seed=list(range(6)))
    obs = {k: torch.as_tensor(v) for k, v in obs.items()}
    steps = policy.obs_len + 3
    policy.accel = ("decode_cache",)
    cached, state = act_round(policy, obs, steps, seed=2)
    assert all(isinstance(layer, GrowingLayer) for layer in state.cache.layers)
    policy.accel = ()
    plain, state = act_round(policy, obs, steps, seed=2)
    assert not any(isinstance(layer, GrowingLayer) for layer in state.cache.layers)
    assert_same_round(cached, plain)


def test_step_mask_is_4d_only_where_the_model_takes_it(eager_lm_setup):
    _, policy = eager_lm_setup("egsw/Arithmetic-v0", 2, 5)
    mask = torch.tensor([[0, 1, 1], [1, 1, 1]])
    ready = step_mask(policy.model, mask)
    assert ready.shape == (2, 1, 1, 3) and ready.dtype == torch.bool
    assert torch.equal(ready[:, 0, 0], mask.bool())
    policy.model.config._attn_implementation = "eager"  # eager attention adds an additive mask
    assert step_mask(policy.model, mask) is mask
