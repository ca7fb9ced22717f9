"""``transformers`` / ``peft`` version shims: the KV-cache keyword, the output's cache, the base model.

Newer ``transformers`` releases renamed the KV-cache keyword of ``forward`` and the output field
(``past_key_values`` -> ``cache``). Everything that depends on those names lives here, so the
policy and the forward passes read one answer.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

import torch

__all__ = ["forward_kwargs", "output_cache", "unwrap_peft"]


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
    """:func:`forward_kwargs` of one ``forward`` function (read once: ``inspect.signature`` is slow)."""
    params = inspect.signature(forward).parameters
    cache_kw = "cache" if "cache" in params else "past_key_values"
    return cache_kw, "logits_to_keep" in params


def output_cache(output: Any) -> Any:
    """The KV cache of a model output, whichever name this transformers version uses."""
    cache = getattr(output, "cache", None)
    return cache if cache is not None else getattr(output, "past_key_values", None)
