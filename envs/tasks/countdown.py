"""Countdown: reach a target with some of the given numbers, each at most once, and ``+ - * /``.

The verifier is a small recursive-descent parser over exact fractions: no ``eval``, no ``ast``,
no Python number parsing of unbounded strings, bounded length and nesting depth.
"""

from __future__ import annotations

from collections import Counter
from fractions import Fraction
from typing import Any

import numpy as np

from .base import DEFAULT_MAX_COMPLETION_CHARS, GeneratedTask, Problem
from .parsing import format_number

__all__ = ["CountdownTask", "parse_countdown_expression", "CountdownParseError"]

#: expressions longer than this (characters, after stripping) are rejected unread.
MAX_EXPRESSION_CHARS = 256
#: the deepest parenthesis nesting accepted.
MAX_DEPTH = 32
#: the longest integer literal accepted (the numbers of a puzzle are far shorter).
MAX_LITERAL_DIGITS = 6

_OPS = "+-*/"
_PRECEDENCE = {"+": 1, "-": 1, "*": 2, "/": 2}


class CountdownParseError(ValueError):
    """Why an expression was rejected (raised and caught inside the verifier only)."""


class _Parser:
    """``expr := term (('+'|'-') term)*``, ``term := factor (('*'|'/') factor)*``,
    ``factor := INT | '(' expr ')'``. No unary operators, no exponent, no other characters."""

    def __init__(self, text: str, available: Counter):
        self.tokens = self._tokenize(text)
        self.pos = 0
        self.available = Counter(available)
        self.used: list[int] = []

    @staticmethod
    def _tokenize(text: str) -> list[str | int]:
        tokens: list[str | int] = []
        i, n = 0, len(text)
        while i < n:
            c = text[i]
            if c in " \t":
                i += 1
            elif c in _OPS or c in "()":
                tokens.append(c)
                i += 1
            elif "0" <= c <= "9":
                j = i
                while j < n and "0" <= text[j] <= "9":
                    j += 1
                literal = text[i:j]
                if j - i > MAX_LITERAL_DIGITS:
                    raise CountdownParseError(f"number literal longer than {MAX_LITERAL_DIGITS} digits")
                if len(literal) > 1 and literal[0] == "0":
                    raise CountdownParseError(f"number with a leading zero: {literal}")
                tokens.append(int(literal))
                i = j
            else:
                raise CountdownParseError(f"unexpected character {c!r} at position {i}")
        return tokens

    def _peek(self) -> str | int | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def parse(self) -> Fraction:
        if not self.tokens:
            raise CountdownParseError("empty expression")
        value = self._expr(0)
        if self.pos != len(self.tokens):
            raise CountdownParseError(f"unexpected {self.tokens[self.pos]!r} after a complete expression")
        return value

    def _expr(self, depth: int) -> Fraction:
        value = self._term(depth)
        while self._peek() in ("+", "-"):
            op = self.tokens[self.pos]
            self.pos += 1
            rhs = self._term(depth)
            value = value + rhs if op == "+" else value - rhs
        return value

    def _term(self, depth: int) -> Fraction:
        value = self._factor(depth)
        while self._peek() in ("*", "/"):
            op = self.tokens[self.pos]
            self.pos += 1
            rhs = self._factor(depth)
            if op == "*":
                value = value * rhs
            else:
                if rhs == 0:
                    raise CountdownParseError("division by zero")
                value = value / rhs
        return value

    def _factor(self, depth: int) -> Fraction:
        tok = self._peek()
        if tok == "(":
            if depth >= MAX_DEPTH:
                raise CountdownParseError(f"parentheses nested deeper than {MAX_DEPTH}")
            self.pos += 1
            value = self._expr(depth + 1)
            if self._peek() != ")":
                raise CountdownParseError("unbalanced parentheses")
            self.pos += 1
            return value
        if isinstance(tok, int):
            if self.available[tok] <= 0:
                raise CountdownParseError(f"number {tok} is not available (not given, or already used)")
            self.available[tok] -= 1
            self.used.append(tok)
            self.pos += 1
            return Fraction(tok)
        raise CountdownParseError(f"expected a number or '(' but found {tok!r}")


def parse_countdown_expression(expression: str, numbers: list[int]) -> tuple[Fraction, list[int]]:
    """Evaluate a countdown expression exactly, checking that each number is used at most once.

    Parameters
    ----------
    expression : str
        Integers, ``+ - * /``, parentheses and spaces; no unary minus, no exponent. At most
        :data:`MAX_EXPRESSION_CHARS` characters and :data:`MAX_DEPTH` levels of parentheses.
    numbers : list of int
        The multiset of numbers that may be used (a number given twice may be used twice).

    Returns
    -------
    tuple of (fractions.Fraction, list of int)
        The exact value and the numbers used, in order.

    Raises
    ------
    CountdownParseError
        For anything else (unknown characters, reuse, division by zero, too long, too deep, ...).
    """
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise CountdownParseError(f"expression longer than {MAX_EXPRESSION_CHARS} characters")
    parser = _Parser(expression, Counter(numbers))
    value = parser.parse()
    return value, parser.used


def _combine(left: tuple[int, str, int], right: tuple[int, str, int], op: str) -> tuple[int, str, int]:
    """Join two ``(value, text, precedence)`` with minimal parentheses."""
    (va, ta, pa), (vb, tb, pb) = left, right
    p = _PRECEDENCE[op]
    if pa < p:
        ta = f"({ta})"
    if pb < p or (pb == p and op in "-/"):
        tb = f"({tb})"
    value = va + vb if op == "+" else va - vb if op == "-" else va * vb if op == "*" else va // vb
    return value, f"{ta}{op}{tb}", p


class CountdownTask(GeneratedTask):
    """Countdown numbers game.

    Prompt: ``"Numbers: 3 7 12. Target: 33. Use each number at most once.\\n"``; the completion
    is an arithmetic expression, e.g. ``"(12-7)*3+..."``. Answer: the target (``"33"``). The
    reference completion is the expression the target was generated from (always solvable).

    Verifier: the first line of the completion, up to an optional ``=`` (``"3*12-3 = 33"`` is
    read as ``3*12-3``), is parsed by :func:`parse_countdown_expression`. ``format_ok`` when it
    is a valid expression over the given numbers (each at most once, no division by zero);
    ``correct`` when, in addition, its exact value equals the target.

    Parameters
    ----------
    num_numbers : int
        How many numbers are given, 2 to 6 (default 3).
    max_number : int
        Numbers are drawn from ``[1, max_number]``, 2 to 1000 (default 20).
    max_target : int
        Targets are in ``[1, max_target]`` (default 200).
    seed : int
        Base seed of the problem streams.
    num_test : int
        Held-out test split size (default 500).
    format_weight : float
        Share of the score for a valid expression (default 0).
    max_completion_chars : int
        Longer completions score 0 unread.
    """

    name = "countdown"

    def __init__(
        self,
        *,
        num_numbers: int = 3,
        max_number: int = 20,
        max_target: int = 200,
        seed: int = 0,
        num_test: int = 500,
        format_weight: float = 0.0,
        max_completion_chars: int = DEFAULT_MAX_COMPLETION_CHARS,
    ):
        for arg, value, lo, hi in (
            ("num_numbers", num_numbers, 2, 6),
            ("max_number", max_number, 2, 1000),
            ("max_target", max_target, 1, 10**6),
        ):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not lo <= value <= hi:
                raise ValueError(f"{arg} must be an int in [{lo}, {hi}], got {value!r}")
        self.num_numbers, self.max_number, self.max_target = (
            int(num_numbers),
            int(max_number),
            int(max_target),
        )
        super().__init__(
            seed=seed,
            num_test=num_test,
            format_weight=format_weight,
            max_completion_chars=max_completion_chars,
        )
        self.suggested_max_new_tokens = self.num_numbers * (len(str(self.max_number)) + 3) + 2

    def space_size(self) -> int:
        """A lower bound: ``max_number ** num_numbers`` ordered number lists."""
        return self.max_number**self.num_numbers

    def max_prompt_chars(self) -> int:
        """The prompt template's length with the longest numbers and target."""
        return len(
            self._prompt(
                ["9" * len(str(self.max_number))] * self.num_numbers, 10 ** len(str(self.max_target))
            )
        )

    @staticmethod
    def _prompt(numbers: list, target: int) -> str:
        return (
            f"Numbers: {' '.join(str(x) for x in numbers)}. Target: {target}. Use each number at most once.\n"
        )

    def _generate(self, rng: np.random.Generator) -> Problem:
        numbers = [int(x) for x in rng.integers(1, self.max_number + 1, size=self.num_numbers)]
        for _ in range(200):
            k = int(rng.integers(2, self.num_numbers + 1))
            pool = [(numbers[i], str(numbers[i]), 3) for i in rng.permutation(self.num_numbers)[:k]]
            while len(pool) > 1:
                i, j = (int(x) for x in rng.choice(len(pool), size=2, replace=False))
                a, b = pool[i], pool[j]
                op = _OPS[int(rng.integers(4))]
                if op == "-" and a[0] < b[0]:
                    a, b = b, a
                if op == "/" and (b[0] == 0 or a[0] % b[0] != 0):
                    op = "+"
                merged = _combine(a, b, op)
                pool = [x for t, x in enumerate(pool) if t not in (i, j)] + [merged]
            value, text, _ = pool[0]
            if 1 <= value <= self.max_target:
                break
        else:  # pragma: no cover - practically unreachable: a sum of two numbers is always allowed
            value, text = numbers[0] + numbers[1], f"{numbers[0]}+{numbers[1]}"
        return Problem(
            self._prompt(numbers, value), str(value), {"numbers": numbers, "target": value, "solution": text}
        )

    def reference_completion(self, problem: Problem) -> str:
        """The expression the target was generated from, e.g. ``"(12-7)*3"``."""
        return problem.metadata["solution"]

    def _score(self, completion: str, problem: Problem) -> dict[str, Any]:
        line = completion.strip()
        newline = line.find("\n")
        if newline >= 0:
            line = line[:newline]
        eq = line.find("=")
        expression = (line if eq < 0 else line[:eq]).strip()
        out: dict[str, Any] = {
            "correct": False,
            "format_ok": False,
            "parsed": None,
            "value": None,
            "reason": "",
        }
        if len(expression) > MAX_EXPRESSION_CHARS:
            out["reason"] = f"expression longer than {MAX_EXPRESSION_CHARS} characters"
            return out
        out["parsed"] = expression
        try:
            value, _ = parse_countdown_expression(expression, problem.metadata["numbers"])
        except CountdownParseError as exc:
            out["reason"] = str(exc)[:120]
            return out
        out["format_ok"] = True
        out["value"] = format_number(value)
        out["correct"] = value == Fraction(problem.metadata["target"])
        out["reason"] = "" if out["correct"] else "value differs from the target"
        return out
