"""A KV cache that grows in place, for the run decode and the plain decode's ``"decode_cache"``.

``transformers``' ``DynamicLayer.update`` runs ``torch.cat([keys, new], dim=-2)`` for every layer and
step, so a round of ``T`` steps copies its cache ``T`` times: O(T^2) bytes moved, which on long
rounds costs about as much as the attention itself. :class:`GrowingLayer` keeps the same tensors as
views ``buffer[:, :, :length]`` of a preallocated buffer, and an update copies only the new token: the
keys and values each step returns, and so the attention, are the same numbers.

Only plain full-attention layers (``DynamicLayer`` itself) are converted (:func:`reserve_cache`);
sliding-window, quantized or offloaded layers keep their own update rules.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["GrowingLayer", "decode_room", "reserve_cache"]


def _dynamic_layer_class() -> type | None:
    try:
        from transformers.cache_utils import DynamicLayer  # lazy: the optional [llm] extra
    except ImportError:  # pragma: no cover - transformers without cache layers (< 4.56)
        return None
    return DynamicLayer


_DYNAMIC_LAYER = _dynamic_layer_class()


def _make_growing_layer_class() -> type | None:
    if _DYNAMIC_LAYER is None:  # pragma: no cover - see above
        return None

    class GrowingLayer(_DYNAMIC_LAYER):
        """A ``DynamicLayer`` whose ``keys``/``values`` are views of buffers with room to grow.

        ``update`` writes the new states after the current ones and returns the longer views; when
        the room runs out the buffers double. Anything that replaces ``keys``/``values`` (a row
        gather, a crop) is honoured: the next update copies them into buffers of the same room.
        """

        def __init__(self, keys: torch.Tensor, values: torch.Tensor, capacity: int) -> None:
            super().__init__()
            self.device = keys.device
            self.is_initialized = True
            self._adopt(keys, values, capacity)

        def _adopt(self, keys: torch.Tensor, values: torch.Tensor, capacity: int) -> None:
            """Copy ``keys``/``values`` into new buffers of ``capacity`` positions."""
            length = keys.shape[-2]
            key_buffer = keys.new_empty((*keys.shape[:-2], capacity, keys.shape[-1]))
            value_buffer = values.new_empty((*values.shape[:-2], capacity, values.shape[-1]))
            key_buffer[..., :length, :].copy_(keys)
            value_buffer[..., :length, :].copy_(values)
            self._buffers_kv = (key_buffer, value_buffer)
            self.keys, self.values = key_buffer[..., :length, :], value_buffer[..., :length, :]
            self._views = (self.keys, self.values)

        def update(
            self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
        ) -> tuple[torch.Tensor, torch.Tensor]:
            length = self.keys.shape[-2]
            end = length + key_states.shape[-2]
            key_buffer, value_buffer = self._buffers_kv
            for name, new, old in (("key", key_states, self.keys), ("value", value_states, self.values)):
                if new.shape[:-2] != old.shape[:-2] or new.shape[-1] != old.shape[-1]:
                    # torch.cat would refuse; copy_ would broadcast a smaller batch silently.
                    raise RuntimeError(
                        f"new {name} states of shape {tuple(new.shape)} do not extend cached ones of "
                        f"shape {tuple(old.shape)} (only the sequence dimension, -2, may differ)"
                    )
            replaced = self.keys is not self._views[0] or self.values is not self._views[1]
            room = key_buffer.shape[-2]
            if replaced or end > room:
                self._adopt(self.keys, self.values, room if end <= room else max(end, 2 * room))
                key_buffer, value_buffer = self._buffers_kv
            key_buffer[..., length:end, :].copy_(key_states)
            value_buffer[..., length:end, :].copy_(value_states)
            self.keys, self.values = key_buffer[..., :end, :], value_buffer[..., :end, :]
            self._views = (self.keys, self.values)
            return self.keys, self.values

    return GrowingLayer


GrowingLayer = _make_growing_layer_class()


def decode_room(prompt_len: int, obs_len: int) -> int:
    """Decode steps to reserve cache room for after a prefill of ``prompt_len`` columns: as many as
    the prompt has, within the observation window ``obs_len``, at least one (a longer round doubles
    the room as it grows)."""
    return max(min(obs_len, 2 * prompt_len) - prompt_len, 1)


def reserve_cache(cache: Any, capacity: int) -> bool:
    """Give every plain ``DynamicLayer`` of ``cache`` room for ``capacity`` positions, in place.

    Returns whether any layer was converted. Layers of other types (sliding windows, static,
    quantized...) and caches without ``layers`` are left as they are; their updates keep working,
    only without the reserved room. So is a layer that cannot be converted (a ``transformers``
    version whose ``DynamicLayer`` no longer fits :class:`GrowingLayer`).
    """
    layers = getattr(cache, "layers", None)
    if GrowingLayer is None or not isinstance(layers, list) or getattr(cache, "offloading", False):
        return False
    converted = False
    for index, layer in enumerate(layers):
        if type(layer) is not _DYNAMIC_LAYER or not layer.is_initialized:
            continue
        if not (torch.is_tensor(layer.keys) and torch.is_tensor(layer.values)) or layer.keys.dim() != 4:
            continue
        try:
            grown = GrowingLayer(layer.keys, layer.values, max(capacity, layer.keys.shape[-2]))
        except Exception:  # an optimisation only: the layer keeps concatenating, as transformers does
            continue
        layers[index] = grown
        converted = True
    return converted
