"""egsw-gym: entropy-guided sequence weighting for PPO and GRPO, from CartPole to language models."""

from egsw_gym.algorithms.grpo import GRPO
from egsw_gym.algorithms.ppo import PPO
from egsw_gym.egsw import EGSW, effective_sample_size, egsw_statistics, egsw_weights
from egsw_gym.envs import register_envs as _register_envs  # noqa: F401  (registers the egsw/* gymnasium ids)

__version__ = "0.1.0"

__all__ = ["GRPO", "EGSW", "egsw_weights", "egsw_statistics", "effective_sample_size", "__version__", "PPO"]
