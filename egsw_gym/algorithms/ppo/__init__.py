"""EGSW-PPO: :class:`PPO` (``ppo.py``) and its rollout buffers (``buffers.py``).

``egsw_gym.algorithms.ppo.PPO`` and the buffer names stay importable from here.
"""

from egsw_gym.algorithms.ppo.buffers import EGSWDictRolloutBuffer, EGSWRolloutBuffer, EGSWRolloutBufferSamples
from egsw_gym.algorithms.ppo.ppo import PPO

__all__ = ["PPO", "EGSWRolloutBuffer", "EGSWDictRolloutBuffer", "EGSWRolloutBufferSamples"]

# Checkpoints name classes by module + qualname, and loading accepts a class only under the name it
# reports: the public path keeps files written before the split (egsw-gym 0.1.0) and after it alike.
for _cls in (PPO, EGSWRolloutBuffer, EGSWDictRolloutBuffer, EGSWRolloutBufferSamples):
    _cls.__module__ = __name__
del _cls
