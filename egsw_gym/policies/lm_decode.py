"""Deprecated alias of :mod:`egsw_gym.policies.lm.decode` (the compiled decode path moved there).

The alias is the module itself (``sys.modules``), not a copy of its names, so attributes set on it
(tests monkeypatch ``LENGTH_BUCKET``, ``_compile``...) reach the code that reads them.
"""

import sys
import warnings

from egsw_gym.policies.lm.accel import static_decode as _decode

warnings.warn(
    "egsw_gym.policies.lm_decode is deprecated; import egsw_gym.policies.lm.decode instead",
    DeprecationWarning,
    stacklevel=2,
)
sys.modules[__name__] = _decode
