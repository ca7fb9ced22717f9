"""Accelerations of :class:`~egsw_gym.policies.lm.LMPolicy`, behind one boundary.

The plain path (:meth:`LMPolicy.act` and :meth:`LMPolicy.evaluate_sequences` in
:mod:`~egsw_gym.policies.lm.policy`) is complete without this package. Each acceleration is a name
in ``LMPolicy(accel=...)``, takes over one part of the plain path where it applies (and leaves the
rest to it), and computes the same tokens, log-probs and entropies up to float rounding (tested
against the plain path):

``"shared_decode"``
    :mod:`~egsw_gym.policies.lm.accel.shared_decode`: a round whose rows come in runs of one prompt
    (GRPO's groups) prefills each prompt once and decodes each run as one KV-cache sequence.
``"prefix_tree"``
    :mod:`~egsw_gym.policies.lm.accel.prefix_tree`: the training pass over each run of one prompt
    as one prefix tree (the prompt computed once per run, attention only over the pairs the tree
    allows: :mod:`~egsw_gym.policies.lm.accel.run_attention`), where a cost model finds it cheaper.
``"decode_cache"``
    :mod:`~egsw_gym.policies.lm.accel.decode_cache`: rounds that decode plainly (one cache row per
    sequence) write each step into cache room reserved after the prefill, and SDPA models get each
    step's 4D mask as they take it (``transformers`` then builds none).
``"compile"``
    :mod:`~egsw_gym.policies.lm.accel.static_decode`: decode steps on a static KV cache with a
    ``torch.compile`` d step. Each new shape compiles first (seconds to tens of seconds on a CPU),
    so it pays only on long runs; off by default. Where a round also qualifies for
    ``"shared_decode"``, the run decode is used.

Nothing here keeps state between calls except the compiled steps of ``"compile"``, which the
policy owns (``LMPolicy._decoder``). ``"shared_decode"`` and ``"prefix_tree"`` register one
attention function with ``transformers`` (:data:`~egsw_gym.policies.lm.accel.run_attention.RUN_ATTENTION`)
and switch a model to it only for the duration of their own calls.
"""

from __future__ import annotations

from collections.abc import Iterable

from egsw_gym.policies.lm.accel.decode_cache import reserve_decode_room, step_mask
from egsw_gym.policies.lm.accel.prefix_tree import prefix_tree_log_probs
from egsw_gym.policies.lm.accel.shared_decode import RunRound, start_run_decode
from egsw_gym.policies.lm.accel.static_decode import StaticDecoder, StaticRound

__all__ = [
    "ACCEL_OPTIONS",
    "DEFAULT_ACCEL",
    "RunRound",
    "StaticDecoder",
    "StaticRound",
    "check_accel",
    "prefix_tree_log_probs",
    "reserve_decode_room",
    "start_run_decode",
    "step_mask",
]

#: Every acceleration :class:`~egsw_gym.policies.lm.LMPolicy` knows (see the module docstring).
ACCEL_OPTIONS = ("shared_decode", "prefix_tree", "decode_cache", "compile")
#: The accelerations on by default: those faster on the demo's GRPO runs.
DEFAULT_ACCEL = ("shared_decode", "prefix_tree", "decode_cache")


def check_accel(accel: str | Iterable[str]) -> tuple[str, ...]:
    """``accel`` as a tuple of known names: ``"all"`` is every option, one name is itself.

    Raises
    ------
    ValueError
        For an unknown name or a value that is not a string or an iterable of strings.
    """
    if isinstance(accel, str):
        accel = ACCEL_OPTIONS if accel == "all" else (accel,)
    try:
        names = tuple(accel)
    except TypeError:
        names = (accel,)
    unknown = [n for n in names if n not in ACCEL_OPTIONS]
    if unknown:
        raise ValueError(
            f"accel must name options among {ACCEL_OPTIONS} (or be 'all', or () for the plain path), "
            f"got {accel!r}"
        )
    return tuple(n for n in ACCEL_OPTIONS if n in names)
