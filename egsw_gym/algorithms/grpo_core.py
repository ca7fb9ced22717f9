"""Deprecated alias of :mod:`egsw_gym.algorithms.grpo.core` (the pure GRPO math moved there).

``import egsw_gym.algorithms.grpo_core`` keeps working and re-exports the same objects, with a
``DeprecationWarning``; import from ``egsw_gym.algorithms.grpo.core`` instead.
"""

from __future__ import annotations

import warnings

from egsw_gym.algorithms.grpo.core import *  # noqa: F403
from egsw_gym.algorithms.grpo.core import __all__  # noqa: F401

warnings.warn(
    "egsw_gym.algorithms.grpo_core is deprecated; import from egsw_gym.algorithms.grpo.core",
    DeprecationWarning,
    stacklevel=2,
)
