"""Policies for GRPO: the :class:`GRPOPolicy` interface and the critic-free MLP / CNN / multi-input actors.

``LMPolicy`` (``egsw_gym.policies.lm``) is imported lazily by ``GRPO("LMPolicy", ...)`` so that
``transformers`` is only needed when a language model is used.
"""

from egsw_gym.policies.base import GRPOPolicy
from egsw_gym.policies.mlp import CnnPolicy, MlpPolicy, MultiInputPolicy

__all__ = ["CnnPolicy", "GRPOPolicy", "MlpPolicy", "MultiInputPolicy"]
