"""The ``"shared_decode"`` acceleration (``policies/lm/accel/shared_decode.py``): GRPO's runs of one
prompt decoded with one KV-cache sequence per run. The layout's mask against a loop reference, and
the same tokens, log-probs and entropies as the plain path (one cache row per sequence)."""

from __future__ import annotations

import pytest
import torch

import egsw_gym  # noqa: F401  (registers the egsw/ ids)
import egsw_gym.policies.lm.accel.shared_decode as shared_decode_module
from egsw_gym.policies.lm.accel.cache import GrowingLayer
from egsw_gym.policies.lm.accel.runs import uniform_runs
from egsw_gym.policies.lm.accel.shared_decode import RunDecode, run_decode_mask

pytest.importorskip("transformers")

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def test_run_decode_mask_matches_a_loop_reference():
    prompt_mask = torch.tensor([[0, 1, 1], [1, 1, 1]])
    size, steps = 3, 4
    got = run_decode_mask(prompt_mask, size, steps)
    assert got.shape == (2, 1, size, 3 + steps * size) and got.dtype == torch.bool
    for g in range(2):
        for r in range(size):
            for k in range(3 + steps * size):
                want = bool(prompt_mask[g, k]) if k < 3 else (k - 3) % size == r
                assert bool(got[g, 0, r, k]) == want, (g, r, k)


def test_run_decode_grows_its_mask():
    prompt_mask = torch.tensor([[1, 1], [0, 1]])
    runs = RunDecode.start(prompt_mask, size=2, steps=1)
    first = runs.step_mask(1)
    assert first.shape == (2, 1, 2, 4) and first.dtype == torch.bool
    late = runs.step_mask(5)  # past the room of one step: rebuilt with more
    torch.testing.assert_close(late, run_decode_mask(prompt_mask, 2, 5), rtol=0, atol=0)
    assert runs.cache_length(5) == 2 + 5 * 2
    assert not first[1, 0, 0, 0] and first[1, 0, 0, 1]


@pytest.mark.parametrize(
    "first_rows, batch, want",
    [
        ([0, 4, 8], 12, 4),
        ([0, 2], 4, 2),
        ([0, 4, 6], 8, None),  # runs of 4, 2, 2
        ([0, 1, 2], 3, None),  # every prompt distinct
        ([0, 3], 8, None),  # 8 rows do not split into 2 runs of one length
    ],
)
def test_uniform_runs(first_rows, batch, want):
    assert uniform_runs(torch.tensor(first_rows), batch) == want


def assert_same_round(a, b):
    (tokens_a, logp_a, ent_a), (tokens_b, logp_b, ent_b) = a, b
    torch.testing.assert_close(tokens_a, tokens_b, rtol=0, atol=0)
    torch.testing.assert_close(logp_a, logp_b, rtol=0, atol=1e-5)
    torch.testing.assert_close(ent_a, ent_b, rtol=0, atol=1e-5)


@pytest.mark.parametrize("env_id, max_new_tokens", [("egsw/Arithmetic-v0", 5), ("egsw/GSM8K-v0", 24)])
@pytest.mark.parametrize("deterministic", [False, True])
def test_runs_decode_like_one_cache_row_per_sequence(
    env_id, max_new_tokens, deterministic, eager_lm_setup, act_round
):
    """GRPO-style groups (4 runs of 4): one cache sequence per run, the same round as per-row
    caches, over more steps than the observation window (the mask and the cache grow)."""
    venv, policy = eager_lm_setup(env_id, 16, max_new_tokens)
    obs, _ = venv.reset(seed=[3] * 4 + [5] * 4 + [7] * 4 + [9] * 4)
    obs = {k: torch.as_tensor(v) for k, v in obs.items()}
    steps = policy.obs_len + 3
    runs, state = act_round(policy, obs, steps, seed=4, deterministic=deterministic)
    assert state.accel.runs.size == 4
    assert all(isinstance(layer, GrowingLayer) for layer in state.accel.cache.layers)
    assert [layer.keys.shape[0] for layer in state.accel.cache.layers] == [4, 4]  # one row per run
    assert state.accel.cache.get_seq_length() == state.accel.runs.cache_length(steps - 1)
    policy.accel = ()  # the plain path
    rows, state = act_round(policy, obs, steps, seed=4, deterministic=deterministic)
    assert state.accel is None and state.cache.layers[0].keys.shape[0] == 16
    assert_same_round(runs, rows)


def test_runs_reserve_room_for_as_many_new_tokens_as_the_prompt_has(eager_lm_setup):
    venv, policy = eager_lm_setup("egsw/Arithmetic-v0", 8, 5)
    obs, _ = venv.reset(seed=[1] * 4 + [2] * 4)
    with torch.inference_mode():
        state = policy.act({k: torch.as_tensor(v) for k, v in obs.items()}, None)[3]
    runs = state.accel.runs
    room = max(min(policy.obs_len, 2 * runs.prompt_length) - runs.prompt_length, 1)
    assert [layer._buffers_kv[0].shape[-2] for layer in state.accel.cache.layers] == [
        runs.cache_length(room)
    ] * 2


def test_runs_of_an_eager_attention_model_decode_like_one_cache_row_per_sequence(eager_lm_setup, act_round):
    """The run decode's steps attend through run_attention (SDPA under the boolean mask) whatever
    the model's own attention; the round is the plain path's, which attends eagerly."""
    venv, policy = eager_lm_setup("egsw/Arithmetic-v0", 8, 5)
    policy.model.config._attn_implementation = "eager"
    obs, _ = venv.reset(seed=[1] * 4 + [2] * 4)
    obs = {k: torch.as_tensor(v) for k, v in obs.items()}
    runs, state = act_round(policy, obs, 6, seed=0)
    assert state.accel.runs.mask.dtype == torch.bool
    policy.accel = ()
    rows, _ = act_round(policy, obs, 6, seed=0)
    assert_same_round(runs, rows)


def test_rounds_that_cannot_run_as_runs_decode_per_row(monkeypatch, eager_lm_setup):
    """Runs of unequal length, and a model that would not honour the layout's mask (a sliding window
    shorter than the runs may grow), decode on the plain path."""
    venv, policy = eager_lm_setup("egsw/Arithmetic-v0", 8, 5)
    obs, _ = venv.reset(seed=[1] * 4 + [2] * 2 + [3] * 2)
    with torch.inference_mode():
        assert policy.act({k: torch.as_tensor(v) for k, v in obs.items()}, None)[3].accel is None
    obs, _ = venv.reset(seed=[1] * 4 + [2] * 4)
    obs = {k: torch.as_tensor(v) for k, v in obs.items()}
    seen = []

    def no_long_masks(model, length=None):
        seen.append(length)
        return None if length is not None and length > policy.obs_len else "sdpa"

    monkeypatch.setattr(shared_decode_module, "custom_mask_attention", no_long_masks)
    with torch.inference_mode():
        assert policy.act(obs, None)[3].accel is None
    assert max(seen) > policy.obs_len  # asked about the runs' longest sequence, not one row's


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_runs_of_a_grouped_query_model_decode_like_one_cache_row_per_sequence(attn, act_round):
    """A Qwen2-shaped model with 4 query and 2 key-value heads: the run decode's attention
    (``run_attention``, which reads the key-value heads as they are) gives the plain path's round."""
    import gymnasium as gym

    from egsw_gym.policies.lm import LMPolicy

    venv = gym.make_vec("egsw/GSM8K-v0", 8, vectorization_mode="vector_entry_point", max_new_tokens=12)
    config = dict(
        model_type="qwen2", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
    )  # fmt: skip
    torch.manual_seed(0)
    space = (venv.single_observation_space, venv.single_action_space)
    policy = LMPolicy(*space, lambda _: 1e-3, model_config=config, accel=("shared_decode",))
    policy.model.config._attn_implementation = attn
    obs, _ = venv.reset(seed=[3] * 4 + [5] * 4)
    obs = {k: torch.as_tensor(v) for k, v in obs.items()}
    runs, state = act_round(policy, obs, 12, seed=4)
    assert state.accel.runs.size == 4
    assert policy.model.config._attn_implementation == attn  # restored after every step
    policy.accel = ()
    assert_same_round(runs, act_round(policy, obs, 12, seed=4)[0])
