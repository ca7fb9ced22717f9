"""The in-place growing KV cache of the run decode (``policies/lm/accel/cache.py``): the same keys,
values, tokens, log-probs and entropies as transformers' concatenating ``DynamicLayer``."""

from __future__ import annotations

import pytest
import torch

import egsw_gym  # noqa: F401  (registers the egsw/ ids)
import egsw_gym.policies.lm.accel.shared_decode as shared_decode_module
from egsw_gym.policies.lm.accel.cache import GrowingLayer, reserve_cache

transformers = pytest.importorskip("transformers")
from transformers.cache_utils import DynamicCache, DynamicLayer, DynamicSlidingWindowLayer  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def states(generator, batch=3, heads=2, length=1, dim=4):
    return torch.randn(batch, heads, length, dim, generator=generator), torch.randn(
        batch, heads, length, dim, generator=generator
    )


def test_growing_layer_returns_what_concatenation_returns_past_its_capacity():
    g = torch.Generator().manual_seed(0)
    reference = DynamicLayer()
    reference.update(*states(g, length=5))
    grown = GrowingLayer(reference.keys.clone(), reference.values.clone(), capacity=7)
    buffer = grown._buffers_kv[0]
    for step in range(12):  # capacity 7: doubles to 14 at the 8th position, then to 28
        k, v = states(g, length=2 if step == 3 else 1)  # a multi-token update as well
        want = reference.update(k, v)
        got = grown.update(k, v)
        torch.testing.assert_close(got[0], want[0], rtol=0, atol=0)
        torch.testing.assert_close(got[1], want[1], rtol=0, atol=0)
        assert grown.get_seq_length() == reference.get_seq_length()
        if step == 0:
            assert grown._buffers_kv[0] is buffer and got[0].data_ptr() == buffer.data_ptr()  # in place
    assert grown._buffers_kv[0].shape[-2] == 28


def test_growing_layer_honours_replaced_tensors():
    """A row gather (reorder_cache) or crop replaces keys/values: the next update starts from them."""
    g = torch.Generator().manual_seed(1)
    reference = DynamicLayer()
    reference.update(*states(g, length=4))
    grown = GrowingLayer(reference.keys.clone(), reference.values.clone(), capacity=16)
    index = torch.tensor([2, 0, 0])
    for layer in (reference, grown):
        layer.reorder_cache(index)
    k, v = states(g)
    torch.testing.assert_close(grown.update(k, v)[0], reference.update(k, v)[0], rtol=0, atol=0)
    assert grown._buffers_kv[0].shape[-2] == 16  # re-adopted into the same room, not doubled
    for layer in (reference, grown):
        layer.crop(-2)
    k, v = states(g)
    got, want = grown.update(k, v), reference.update(k, v)
    torch.testing.assert_close(got[1], want[1], rtol=0, atol=0)
    assert got[0].shape[-2] == 4


def test_growing_layer_refuses_states_that_do_not_extend_the_cache():
    """A smaller batch would broadcast through copy_: refused, as DynamicLayer's torch.cat refuses it."""
    g = torch.Generator().manual_seed(4)
    keys, values = states(g, batch=3, length=2)
    reference, grown = DynamicLayer(), GrowingLayer(keys.clone(), values.clone(), capacity=8)
    reference.update(keys, values)
    wrong = states(g, batch=1)
    with pytest.raises(RuntimeError):
        reference.update(*wrong)
    with pytest.raises(RuntimeError, match="do not extend"):
        grown.update(*wrong)
    assert grown.get_seq_length() == 2


def test_reserve_cache_converts_only_plain_dynamic_layers():
    g = torch.Generator().manual_seed(2)
    cache = DynamicCache()
    for index in range(2):
        cache.update(*states(g, length=3), index)
    sliding = DynamicSlidingWindowLayer(sliding_window=4)
    sliding.update(*states(g, length=3))
    cache.layers.append(sliding)
    before = [layer.keys.clone() for layer in cache.layers]
    assert reserve_cache(cache, 10)
    assert [type(layer) for layer in cache.layers] == [GrowingLayer, GrowingLayer, DynamicSlidingWindowLayer]
    for layer, keys in zip(cache.layers, before, strict=True):
        torch.testing.assert_close(layer.keys, keys, rtol=0, atol=0)
    assert cache.get_seq_length() == 3
    assert not reserve_cache(object(), 10)  # not a layered cache: left alone


@pytest.mark.parametrize("env_id", ["egsw/Arithmetic-v0", "egsw/GSM8K-v0"])
def test_run_decode_on_the_growing_cache_matches_concatenation(
    monkeypatch, env_id, eager_lm_setup, act_round
):
    """Same tokens, log-probs and entropies with and without the reserved room, over more steps than
    the observation window (the room doubles)."""
    venv, policy = eager_lm_setup(env_id, 8, 12)
    obs, _ = venv.reset(seed=[3, 3, 3, 3, 5, 5, 5, 5])
    obs = {k: torch.as_tensor(v) for k, v in obs.items()}
    with torch.inference_mode():
        first = policy.act(obs, None)[3]
    runs = first.accel.runs
    room = max(min(policy.obs_len, 2 * runs.prompt_length) - runs.prompt_length, 1)
    assert [layer._buffers_kv[0].shape[-2] for layer in first.accel.cache.layers] == [
        runs.cache_length(room)
    ] * 2
    steps = policy.obs_len + 4
    grown, state = act_round(policy, obs, steps, seed=4)
    assert all(isinstance(layer, GrowingLayer) for layer in state.accel.cache.layers)
    monkeypatch.setattr(shared_decode_module, "reserve_cache", lambda cache, capacity: False)
    plain, state = act_round(policy, obs, steps, seed=4)
    assert all(type(layer) is DynamicLayer for layer in state.accel.cache.layers)
    for a, b in zip(grown, plain, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_reserve_cache_leaves_a_layer_it_cannot_convert(monkeypatch):
    """A transformers whose DynamicLayer no longer fits GrowingLayer: the cache keeps its layers."""
    g = torch.Generator().manual_seed(3)
    cache = DynamicCache()
    cache.update(*states(g, length=3), 0)
    layer = cache.layers[0]

    def broken(self, *args, **kwargs):
        raise TypeError("DynamicLayer.__init__ changed")

    monkeypatch.setattr(GrowingLayer, "__init__", broken)
    assert not reserve_cache(cache, 10)
    assert cache.layers[0] is layer
    k, v = states(g)
    assert cache.update(k, v, 0)[0].shape[-2] == 4  # still works, by concatenation
