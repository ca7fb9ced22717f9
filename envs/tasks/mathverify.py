"""math-verify (the answer checker of TRL and open-r1) as a bounded verifier option for math answers.

``pip install egsw-gym[tasks]``; imported lazily. :class:`MathVerifier` compares an answer text
(already extracted from the completion by the task: after ``####``, inside ``\\boxed{}``, inside
``<answer>`` tags or the bare completion) with the reference answer using ``math_verify.parse`` and
``math_verify.verify``, which understand LaTeX, fractions, sets and intervals. Both calls run
under the same bounds as every third-party scorer here (:class:`~.bounded.BoundedScorer`): the
text is capped at ``max_answer_chars`` before parsing, parse plus verify are interrupted after
``time_limit`` seconds in a worker process that is killed on overrun (math-verify's own
``signal.alarm`` timeouts are switched off: they have one-second resolution and, like any signal,
cannot stop the long C-level big-integer arithmetic sympy does for ``$10^{10^{10}}$``), and an
exception scores 0 and is counted. math-verify (through sympy's ``parse_expr``) evaluates
generated Python code internally; our verifiers never do, and running math-verify in the worker
process also keeps that out of the training process.

How it differs from our own parsers (:mod:`~.parsing`), measured by ``tests/test_math_verify.py``
over 600 generated problems (our arithmetic and GSM8K-style tasks, reasoning-gym ``chain_sum``,
``basic_arithmetic`` and ``gsm_symbolic``): on the gold answer and on plain numeric spellings and
perturbations of it (``+1``, negated, ``x10``, ``"18.0"``, ``"$18"``, ``"18."``, padded) the two
agree on all 4,699 cases. They differ by design on three spellings: math-verify reads the *last
number* of free text (``"18 apples"`` is 18; ours refuses anything but a number), evaluates
fractions (``"36/2"`` is 18; ours refuses ``/``), and does not read a negative amount written
``"-$18"`` (ours reads -18).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from .bounded import BoundedScorer, check_time_limit

__all__ = ["MathVerifier", "import_math_verify", "VERIFIERS"]

#: the ``verifier`` option values of the math tasks.
VERIFIERS = ("builtin", "math_verify")


def import_math_verify():
    """Import math-verify, or raise an ``ImportError`` that says how to install it."""
    try:
        import math_verify
    except ImportError as exc:
        raise ImportError(
            "the math_verify verifier needs math-verify: pip install 'egsw-gym[tasks]'"
        ) from exc
    return math_verify


def check_verifier(verifier: str) -> str:
    """Validate a ``verifier`` option (one of :data:`VERIFIERS`)."""
    if verifier not in VERIFIERS:
        raise ValueError(f"verifier must be one of {VERIFIERS}, got {verifier!r}")
    return verifier


_PARSED_GOLD: OrderedDict[str, Any] = OrderedDict()
#: constant (answer, gold) pairs that exercise math-verify's LaTeX and expression parsers.
_WARMUP = (("$\\frac{1}{2}$", "0.5"), ("1/2 + 3", "3.5"), ("\\boxed{-2}", "-2"))


def _verify(answer: str, gold: str) -> bool:
    """``verify(parse(gold), parse(answer))`` (module level so that it pickles to the worker)."""
    import math_verify as mv

    parsed_gold = _PARSED_GOLD.get(gold)
    if parsed_gold is None:
        parsed_gold = mv.parse(gold, parsing_timeout=None)
        _PARSED_GOLD[gold] = parsed_gold
        if len(_PARSED_GOLD) > 4096:
            _PARSED_GOLD.popitem(last=False)
    parsed = mv.parse(answer, parsing_timeout=None)
    if not parsed or not parsed_gold:
        return False
    return bool(mv.verify(parsed_gold, parsed, timeout_seconds=None))


class MathVerifier:
    """``math_verify.verify(parse(gold), parse(answer))`` with size and time bounds.

    Parameters
    ----------
    time_limit : float
        Seconds for parse plus verify of one answer, from 1 ms to 10 min (a ``ValueError``
        otherwise). A call that does not complete (this bound, a ``KeyboardInterrupt``) replaces
        the worker, so no late answer is ever scored against a later call.
    max_answer_chars : int
        Longer answers are not parsed (they score 0).
    isolation : str
        ``"process"`` (default): every call runs in a worker process that is killed when it
        overruns, because sympy can spend minutes in one C call (``$10^{10^{10}}$``) that no signal
        interrupts; ``"signal"``: in this process under a ``SIGALRM`` timer (faster, but only
        bounds pure-Python work). See :mod:`~.bounded`.

    Attributes
    ----------
    scorer : BoundedScorer
        The bounded call and its error/timeout counts.
    """

    def __init__(self, time_limit: float = 1.0, max_answer_chars: int = 512, isolation: str = "process"):
        check_time_limit(time_limit)
        import_math_verify()
        if (
            isinstance(max_answer_chars, bool)
            or not isinstance(max_answer_chars, int)
            or max_answer_chars < 1
        ):
            raise ValueError(f"max_answer_chars must be a positive int, got {max_answer_chars!r}")
        self.max_answer_chars = max_answer_chars
        # Warm math-verify's lazily built parsers here, on constant input, before any worker is
        # forked: every worker then starts with warm caches and answers its first call at once.
        for answer, gold in _WARMUP:
            _verify(answer, gold)
        self.scorer = BoundedScorer("math-verify", time_limit, isolation, warmup=(_verify, _WARMUP[0]))

    def check(self, answer: str | None, gold: str) -> tuple[bool, dict[str, Any]]:
        """Whether ``answer`` equals ``gold`` mathematically.

        Parameters
        ----------
        answer : str or None
            The extracted answer text (``None``: nothing to check).
        gold : str
            The reference answer.

        Returns
        -------
        tuple of (bool, dict)
            The verdict and the breakdown entries of :meth:`BoundedScorer.__call__` (plus
            ``reason`` when the answer was refused unread).
        """
        if not isinstance(answer, str) or not answer.strip():
            return False, self.scorer.counts()
        if len(answer) > self.max_answer_chars:
            return False, {**self.scorer.counts(), "reason": "answer longer than max_answer_chars"}
        verdict, extra = self.scorer(_verify, answer, gold)
        return verdict is True, extra
