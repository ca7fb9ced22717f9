"""Arithmetic: ``"12+7="`` -> ``"19"``. Short enough for a one-layer character model."""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from .base import DEFAULT_MAX_COMPLETION_CHARS, GeneratedTask, Problem
from .parsing import MAX_NUMBER_CHARS, format_number, parse_number

__all__ = ["ArithmeticTask"]

_BARE_INT = re.compile(r"-?\d+", re.ASCII)
_ALLOWED_OPERATORS = "+-*"


class ArithmeticTask(GeneratedTask):
    """Two-operand integer arithmetic.

    Prompt ``f"{a}{op}{b}="`` (e.g. ``"12+7="``), answer the bare result (``"19"``); the
    reference completion is the answer itself (the environment adds EOS).

    Verifier: the completion, stripped of surrounding whitespace, is parsed as one number
    (tolerant of ``$``, thousands commas and a trailing period); ``correct`` when it equals the
    answer. ``format_ok`` when the stripped completion is a bare integer (``-?[0-9]+``).
    Extra text (``"19 apples"``) is not correct.

    Parameters
    ----------
    digits : int
        Operands are drawn uniformly from ``[0, 10**digits)``; 1 to 9 (default 2).
    operators : str
        Which operators to draw from, a non-empty subset of ``"+-*"`` (default ``"+"``).
    allow_negative : bool
        If ``False`` (default), subtraction puts the larger operand first so results are >= 0.
    seed : int
        Base seed of the problem streams (see :class:`~egsw_gym.envs.tasks.base.GeneratedTask`).
    num_test : int
        Held-out test split size (default 500, capped at a fifth of the distinct problems).
    format_weight : float
        Share of the score for a bare-integer answer (default 0).
    max_completion_chars : int
        Longer completions score 0 unread.
    """

    name = "arithmetic"

    def __init__(
        self,
        *,
        digits: int = 2,
        operators: str = "+",
        allow_negative: bool = False,
        seed: int = 0,
        num_test: int = 500,
        format_weight: float = 0.0,
        max_completion_chars: int = DEFAULT_MAX_COMPLETION_CHARS,
    ):
        if isinstance(digits, bool) or not isinstance(digits, (int, np.integer)) or not 1 <= digits <= 9:
            raise ValueError(f"digits must be an int in [1, 9], got {digits!r}")
        if (
            not isinstance(operators, str)
            or not operators
            or any(op not in _ALLOWED_OPERATORS for op in operators)
        ):
            raise ValueError(
                f"operators must be a non-empty string of characters from {_ALLOWED_OPERATORS!r}, got {operators!r}"
            )
        if not isinstance(allow_negative, (bool, np.bool_)):
            raise ValueError(f"allow_negative must be True or False, got {allow_negative!r}")
        self.digits = int(digits)
        self.operators = "".join(dict.fromkeys(operators))
        self.allow_negative = bool(allow_negative)
        super().__init__(
            seed=seed,
            num_test=num_test,
            format_weight=format_weight,
            max_completion_chars=max_completion_chars,
        )
        biggest = 10**self.digits - 1
        answer_chars = {
            "+": len(str(2 * biggest)),
            "-": self.digits + self.allow_negative,
            "*": len(str(biggest * biggest)),
        }
        self.max_answer_chars = max(answer_chars[op] for op in self.operators)
        #: answer, EOS and one spare token.
        self.suggested_max_new_tokens = self.max_answer_chars + 2

    def space_size(self) -> int:
        """Distinct prompts, a lower bound: ``10**(2 * digits) * len(operators) // 2``."""
        return 10 ** (2 * self.digits) * len(self.operators) // 2

    def max_prompt_chars(self) -> int:
        """Exactly ``2 * digits + 2`` (two operands, the operator and ``=``)."""
        return 2 * self.digits + 2

    def _generate(self, rng: np.random.Generator) -> Problem:
        high = 10**self.digits
        a, b = (int(x) for x in rng.integers(0, high, size=2))
        op = self.operators[int(rng.integers(len(self.operators)))]
        if op == "-" and not self.allow_negative and b > a:
            a, b = b, a
        result = a + b if op == "+" else a - b if op == "-" else a * b
        return Problem(f"{a}{op}{b}=", str(result), {"a": a, "b": b, "operator": op})

    def reference_completion(self, problem: Problem) -> str:
        """The bare answer, e.g. ``"19"``."""
        return problem.answer

    def _score(self, completion: str, problem: Problem) -> dict[str, Any]:
        stripped = completion.strip()
        value = parse_number(stripped)
        format_ok = len(stripped) <= MAX_NUMBER_CHARS and _BARE_INT.fullmatch(stripped) is not None
        expected = parse_number(problem.answer)
        return {
            "correct": value is not None and expected is not None and value == expected,
            "format_ok": format_ok,
            "parsed": None if value is None else format_number(value),
        }
