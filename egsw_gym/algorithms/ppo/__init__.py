"""EGSW-PPO: :class:`PPO` (``ppo.py``) and its rollout buffers (``buffers.py``).

``egsw_gym.algorithms.ppo.PPO`` and the buffer names stay importable from here.
"""

from egsw_gym.algorithms.ppo.buffers import EGSWDictRolloutBuffer, EGSWRolloutBuffer, EGSWRolloutBufferSamples
from egsw_gym.algorithms.ppo.ppo import PPO

__all__ = ["PPO", "EGSWRolloutBuffer", "EGSWDictRolloutBuffer", "EGSWRolloutBufferSamples"]
