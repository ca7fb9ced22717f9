"""Accelerated decode ``"decode_cache"``: the plain KV-cache decode without its per-step rebuilding.

A round that decodes plainly (one cache row per sequence: distinct prompts, or a model the run layout
does not serve) pays two costs each step that do not change its numbers:

- ``transformers``' ``DynamicLayer.update`` concatenates every layer's whole cache with the new
  token, so a round of ``T`` steps copies its cache ``T`` times. :func:`reserve_decode_room` turns
  the prefilled cache into :class:`~egsw_gym.policies.lm.accel.cache.GrowingLayer` s, which write the
  new token into room reserved after the prompt (as many tokens as the prompt has, within the
  observation window; a longer round doubles it).
- From a 2D attention mask, ``transformers`` builds the 4D mask of the step. A model that takes a
  custom 4D mask as it is (:func:`~egsw_gym.policies.lm.accel.runs.custom_mask_attention`) with
  SDPA gets the ``(B, 1, 1, K)`` boolean mask of its one new token instead (:func:`step_mask`): the
  same keys attended, no mask built.
"""

from __future__ import annotations

from typing import Any

import torch

from egsw_gym.policies.lm.accel.cache import decode_room, reserve_cache
from egsw_gym.policies.lm.accel.runs import custom_mask_attention

__all__ = ["reserve_decode_room", "step_mask"]


def reserve_decode_room(cache: Any, prompt_len: int, obs_len: int) -> None:
    """Reserve room in a prefilled cache for as many new tokens as the prompt has (at least one),
    within the observation window ``obs_len``; layers that are not plain ``DynamicLayer`` s stay as
    they are."""
    reserve_cache(cache, prompt_len + decode_room(prompt_len, obs_len))


def step_mask(model: torch.nn.Module, mask: torch.Tensor) -> torch.Tensor:
    """The attention mask of a decode step whose keys are the ``(B, K)`` 0/1 ``mask``: its
    ``(B, 1, 1, K)`` boolean form where ``model`` takes it as it is with SDPA, else ``mask``."""
    if custom_mask_attention(model, mask.shape[1]) == "sdpa":
        return mask[:, None, None, :].bool()
    return mask
