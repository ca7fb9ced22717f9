"""GRPO, split the way SB3 splits PPO: the algorithm, its rollout, its math.

- :mod:`~egsw_gym.algorithms.grpo.grpo`: :class:`GRPO` (construction, set-up, ``learn``, ``train``,
  logging, saving);
- :mod:`~egsw_gym.algorithms.grpo.rollout`: :class:`GroupBatch` and the collection of groups in
  rounds of ``n_envs`` episodes (plain and dynamic sampling);
- :mod:`~egsw_gym.algorithms.grpo.core`: the pure loss and advantage math (no policy, no env).
"""

from egsw_gym.algorithms.grpo.grpo import GRPO
from egsw_gym.algorithms.grpo.rollout import GroupBatch

__all__ = ["GRPO", "GroupBatch"]

# Checkpoints name classes by module + qualname: the public path, as before the split (see ppo/__init__).
GRPO.__module__ = GroupBatch.__module__ = __name__
