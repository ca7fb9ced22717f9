"""A faster CPU forward for the tanh-approximated GELU of GPT-2-style models, swapped in by :class:`LMPolicy`.

``transformers`` computes ``gelu_new`` / ``gelu_pytorch_tanh`` (GPT-2, GPT-J, Phi, Gemma...) with
PyTorch's CPU GELU kernel, which evaluates its tanh about 4x slower than ``torch.tanh`` or
``torch.sigmoid`` run on their own: ~215 us for a ``(240, 512)`` float32 activation on one thread,
where the identity ``0.5 x (1 + tanh u) = x sigmoid(2u)`` in five passes of faster kernels takes
~115 us. On the default tiny model the GELU was ~5% of a GRPO step.

:class:`TanhGELU` uses that identity where nothing records a gradient (rollouts, reference passes,
evaluation) on float32 CPU tensors, and PyTorch's kernel everywhere else: training passes (its
fused backward is faster than the composite's), other dtypes and devices. The two agree to float32
rounding (~5e-7 absolute, as close to the float64 GELU as PyTorch's kernel is).
"""

from __future__ import annotations

import math

import torch

__all__ = ["TanhGELU", "use_fast_tanh_gelu"]

_C2 = 2.0 * math.sqrt(2.0 / math.pi)  # 2u = x (_C2 + _C2K x^2),  u = sqrt(2/pi) (x + 0.044715 x^3)
_C2K = _C2 * 0.044715
#: ``transformers.activations`` classes that compute exactly the tanh-approximated GELU
TANH_GELU_CLASSES = ("GELUTanh", "NewGELUActivation", "PytorchGELUTanh")


class TanhGELU(torch.nn.Module):
    """``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))``; see the module docstring."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (
            x.dtype != torch.float32
            or x.device.type != "cpu"
            or (x.requires_grad and torch.is_grad_enabled())
        ):
            return torch.nn.functional.gelu(x, approximate="tanh")
        out = x * x
        out.mul_(_C2K).add_(_C2).mul_(x).sigmoid_()  # sigmoid(2u) = (1 + tanh u) / 2
        return out.mul_(x)


def use_fast_tanh_gelu(model: torch.nn.Module) -> int:
    """Replace ``model``'s tanh-GELU activation modules (:data:`TANH_GELU_CLASSES`) by :class:`TanhGELU`.

    Activations hold no parameters, so the state dict and ``save_pretrained`` are unchanged.
    Returns how many were replaced.
    """
    replaced = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child).__name__ in TANH_GELU_CLASSES and type(child).__module__.startswith(
                "transformers."
            ):
                setattr(parent, name, TanhGELU())
                replaced += 1
    return replaced
