"""The tanh-GELU that LMPolicy swaps into GPT-2-style models: same function, native kernel under grad."""

from __future__ import annotations

import pytest
import torch
from gymnasium import spaces

pytest.importorskip("transformers")

from transformers.activations import GELUTanh, NewGELUActivation  # noqa: E402

from egsw_gym.policies.lm.activations import TanhGELU, use_fast_tanh_gelu  # noqa: E402


def test_values_match_the_float64_gelu_as_closely_as_torchs_kernel():
    x = torch.cat([torch.linspace(-30, 30, 20001), torch.tensor([0.0, -0.0, 1e-30, -1e-30, 1e20, -1e20])])
    exact = torch.nn.functional.gelu(x.double(), approximate="tanh")
    with torch.no_grad():
        fast = TanhGELU()(x)
    native = torch.nn.functional.gelu(x, approximate="tanh")
    assert fast.dtype == torch.float32
    assert (fast.double() - exact).abs().max() <= 2 * (native.double() - exact).abs().max() + 1e-12
    assert torch.allclose(fast, native, rtol=1e-6, atol=1e-6)
    with torch.no_grad():
        assert torch.equal(TanhGELU()(torch.tensor([float("inf")])), torch.tensor([float("inf")]))
        assert torch.isnan(TanhGELU()(torch.tensor([float("nan")]))).all()


def test_gradients_and_other_dtypes_use_torchs_kernel():
    x = (torch.randn(64, 512) * 3).requires_grad_()
    y = TanhGELU()(x)
    assert y.grad_fn is not None and type(y.grad_fn).__name__.startswith("GeluBackward")
    assert torch.equal(y, torch.nn.functional.gelu(x, approximate="tanh"))
    half = torch.randn(8, 16, dtype=torch.bfloat16)
    with torch.no_grad():
        assert torch.equal(TanhGELU()(half), torch.nn.functional.gelu(half, approximate="tanh"))


@pytest.mark.parametrize("cls", [GELUTanh, NewGELUActivation])
def test_swap_replaces_the_tanh_gelu_modules_only_and_keeps_the_model(cls):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=40, n_embd=32, n_layer=2, n_head=4, n_positions=32)).eval()
    for block in model.transformer.h:
        block.mlp.act = cls()
    ids = torch.randint(0, 40, (3, 9))
    with torch.no_grad():
        before = model(ids).logits
    state = {k: v.clone() for k, v in model.state_dict().items()}
    assert use_fast_tanh_gelu(model) == 2
    assert all(isinstance(block.mlp.act, TanhGELU) for block in model.transformer.h)
    assert use_fast_tanh_gelu(model) == 0  # idempotent
    with torch.no_grad():
        after = model(ids).logits
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def test_lm_policy_models_run_it():
    from egsw_gym.policies.lm import LMPolicy

    space = spaces.Dict({k: spaces.Box(0, 39, (12,), dtype="int64") for k in ("input_ids", "attention_mask")})
    policy = LMPolicy(space, spaces.Discrete(40), lambda _: 1e-3)
    acts = [m for m in policy.model.modules() if "GELU" in type(m).__name__]
    assert acts and all(isinstance(m, TanhGELU) for m in acts)
