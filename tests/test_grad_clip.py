"""``egsw_gym.common.grad.clip_grad_norm`` against ``torch.nn.utils.clip_grad_norm_``: same norm, same
gradients bit for bit, whether or not the bound clips, and NaN gradients stay NaN."""

from __future__ import annotations

import math

import pytest
import torch

from egsw_gym.common.grad import clip_grad_norm


def params_with_grads(scale: float, seed: int = 0) -> list[torch.nn.Parameter]:
    g = torch.Generator().manual_seed(seed)
    params = [torch.nn.Parameter(torch.randn(shape, generator=g)) for shape in ((3, 4), (5,), (2, 2, 2))]
    for p in params:
        p.grad = torch.randn(p.shape, generator=g) * scale
    params.append(torch.nn.Parameter(torch.zeros(2)))  # no gradient: skipped by both
    return params


@pytest.mark.parametrize("scale", [1e-3, 0.2, 10.0])  # under, near and over the bound
def test_same_norm_and_gradients_as_torch(scale):
    ours, theirs = params_with_grads(scale), params_with_grads(scale)
    norm = clip_grad_norm(ours, 1.0)
    want = torch.nn.utils.clip_grad_norm_(theirs, 1.0)
    assert torch.equal(norm, want)
    for a, b in zip(ours, theirs, strict=True):
        assert (a.grad is None) == (b.grad is None)
        if a.grad is not None:
            assert torch.equal(a.grad, b.grad)
    after = torch.nn.utils.get_total_norm([p.grad for p in ours if p.grad is not None])
    assert float(after) <= 1.0 + 1e-5
    assert (float(norm) > 1.0) == (float(after) < float(norm))  # clipped exactly when over the bound


def test_non_finite_norm_is_returned_and_gradients_become_nan():
    params = params_with_grads(1.0)
    params[0].grad[0, 0] = float("nan")
    norm = clip_grad_norm(params, 1.0)
    assert math.isnan(float(norm))
    assert all(torch.isnan(p.grad).all() for p in params if p.grad is not None)
