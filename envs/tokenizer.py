"""Re-export of :mod:`egsw_gym.common.tokenizer` (the built-in character tokenizer).

The tokenizer lives in ``egsw_gym.common`` because policies and ``egsw_gym.llm`` use it as much as
the environments do; ``egsw_gym.envs.tokenizer`` keeps working for existing imports.
"""

from egsw_gym.common.tokenizer import *  # noqa: F403 (the module's __all__, re-exported as it is)
from egsw_gym.common.tokenizer import __all__  # noqa: F401
