"""``transformers`` version shims: the KV-cache keyword and output field, cache row gathers.

Newer ``transformers`` releases renamed the KV-cache keyword of ``forward`` and the output field
(``past_key_values`` -> ``cache``), and changed the ``Cache`` classes' internals. Everything that
depends on those names lives here, so the forward passes (:mod:`egsw_gym.policies.lm.forward`),
the policy and the compiled decoder read one answer.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

import torch

__all__ = [
    "CUSTOM_MASK_MODEL_TYPES",
    "checkpoints_activations",
    "custom_mask_attention",
    "forward_kwargs",
    "gather_cache",
    "output_cache",
    "unwrap_peft",
]


def unwrap_peft(model: Any) -> Any:
    """The ``transformers`` model inside a peft wrapper (its ``config``, ``forward``...), else ``model``."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def forward_kwargs(model: torch.nn.Module) -> tuple[str, bool]:
    """Name of the KV-cache keyword (``cache`` in transformers >= 5.2x, else ``past_key_values``) and
    whether ``logits_to_keep`` is accepted, read from the signature of the underlying model."""
    forward = unwrap_peft(model).forward
    forward = getattr(forward, "__func__", forward)
    try:
        return _forward_kwargs(forward)
    except TypeError:  # an unhashable callable object: read its signature every time
        return _forward_kwargs.__wrapped__(forward)


@functools.lru_cache(maxsize=64)
def _forward_kwargs(forward: Any) -> tuple[str, bool]:
    """:func:`forward_kwargs` of one ``forward`` function (``inspect.signature`` costs ~0.2 ms a call)."""
    params = inspect.signature(forward).parameters
    cache_kw = "cache" if "cache" in params else "past_key_values"
    return cache_kw, "logits_to_keep" in params


# Architectures whose positions come from ``position_ids`` and whose forward takes a custom 4D
# attention mask as it is: each was checked against one pass per row (transformers 5.24, sdpa and
# eager attention). Others (ALiBi models such as BLOOM, which build their biases from a 2D mask;
# per-layer sliding windows...) take the KV-cache route.
CUSTOM_MASK_MODEL_TYPES = frozenset(
    {
        "gemma",
        "gpt2",
        "gpt_neox",
        "granite",
        "llama",
        "mistral",
        "olmo2",
        "phi",
        "phi3",
        "qwen2",
        "qwen3",
        "stablelm",
    }
)


def custom_mask_attention(model: torch.nn.Module, length: int | None = None) -> str | None:
    """The attention implementation (``"sdpa"`` or ``"eager"``) of a model that takes a 4D mask as it is.

    ``None`` when the model's forward would not honour a custom ``(B, 1, Q, K)`` mask: architectures
    not in :data:`CUSTOM_MASK_MODEL_TYPES`, flash-attention kernels (no arbitrary masks), or a
    sliding window shorter than ``length`` (the sequences the mask covers; ``None``: any window),
    which a custom mask would bypass. ``"sdpa"`` takes a boolean mask (True: attend), ``"eager"``
    an additive one (0 or the dtype's minimum).
    """
    config = getattr(unwrap_peft(model), "config", None)
    if getattr(config, "model_type", None) not in CUSTOM_MASK_MODEL_TYPES:
        return None
    attention = getattr(config, "_attn_implementation", None)
    if attention not in ("sdpa", "eager"):
        return None
    window = getattr(config, "sliding_window", None)
    if isinstance(window, int) and (length is None or window < length):
        return None
    return attention


def output_cache(output: Any) -> Any:
    """The KV cache of a model output, whichever name this transformers version uses."""
    cache = getattr(output, "cache", None)
    return cache if cache is not None else getattr(output, "past_key_values", None)


def checkpoints_activations(model: torch.nn.Module) -> bool:
    """Whether activation (gradient) checkpointing is on: ``transformers`` then refuses ``use_cache``."""
    name = "is_activation_checkpointing" if hasattr(model, "is_activation_checkpointing") else None
    return bool(getattr(model, name or "is_gradient_checkpointing", False))


def gather_cache(cache: Any, index: torch.Tensor) -> bool:
    """Gather the batch rows ``index`` of a ``transformers`` KV cache in place; ``False`` if unsupported."""
    layers = getattr(cache, "layers", None)
    if layers is None or not hasattr(cache, "reorder_cache"):
        return False
    # Only plain key/value layers (DynamicLayer and friends): sliding-window or recurrent layers keep
    # other state that a row gather would have to follow.
    if not all(hasattr(layer, "keys") and hasattr(layer, "values") for layer in layers):
        return False
    cache.reorder_cache(index)  # index_select per layer: differentiable, not in place on the tensors
    return True
