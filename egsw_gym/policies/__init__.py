"""Policies for GRPO: the :class:`GRPOPolicy` interface and the critic-free :class:`MlpPolicy`.

``LMPolicy`` (``egsw_gym.policies.lm``) is imported lazily by ``GRPO("LMPolicy", ...)`` so that
``transformers`` is only needed when a language model is used.
"""

from egsw_gym.policies.base import GRPOPolicy
from egsw_gym.policies.mlp import MlpPolicy

__all__ = ["GRPOPolicy", "MlpPolicy"]
