"""GSM8K-style grade-school word problems generated from templates (nothing is downloaded).

Six kinds of story (shopping with change, distance at two speeds, packing into bags, weekly
savings, ages, planting rows), with names, items and numbers drawn from a seed. Every problem has
an integer answer and a short worked solution ending in ``#### <answer>``, the GSM8K convention.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .base import DEFAULT_MAX_COMPLETION_CHARS, GeneratedTask, Problem
from .mathverify import MathVerifier, check_verifier
from .parsing import extract_final_answer, format_number, parse_number

__all__ = ["GSM8KTask", "KINDS"]

_NAMES = (
    "Ana",
    "Ben",
    "Carla",
    "Dev",
    "Emma",
    "Farid",
    "Gina",
    "Hugo",
    "Ivy",
    "Jon",
    "Kemal",
    "Lea",
    "Mia",
    "Noor",
)
_ITEMS = ("pencils", "apples", "books", "stickers", "cupcakes", "marbles", "notebooks", "oranges")
_VEHICLES = ("train", "car", "bus", "boat", "truck")
_PLANTS = ("tomato", "pepper", "rose", "bean", "lettuce")
_THINGS = ("bike", "game", "jacket", "lamp", "radio")


def _pick(rng: np.random.Generator, seq: tuple) -> Any:
    return seq[int(rng.integers(len(seq)))]


def _int(rng: np.random.Generator, lo: int, hi: int) -> int:
    return int(rng.integers(lo, hi + 1))


def _shopping(rng):
    name, item = _pick(rng, _NAMES), _pick(rng, _ITEMS)
    n, price = _int(rng, 2, 9), _int(rng, 2, 12)
    cost = n * price
    bill = next(b for b in (20, 50, 100, 200) if b >= cost)
    q = f"{name} buys {n} {item} at ${price} each and pays with a ${bill} bill. How many dollars of change does {name} get?"
    return q, bill - cost, f"{n}*{price}={cost}. {bill}-{cost}={bill - cost}."


def _speed(rng):
    v = _pick(rng, _VEHICLES)
    s1, h1, s2, h2 = _int(rng, 2, 9) * 10, _int(rng, 1, 5), _int(rng, 2, 9) * 10, _int(rng, 1, 5)
    d1, d2 = s1 * h1, s2 * h2
    q = f"A {v} travels at {s1} km per hour for {h1} hours, then at {s2} km per hour for {h2} hours. How many km does it travel in total?"
    return q, d1 + d2, f"{s1}*{h1}={d1}. {s2}*{h2}={d2}. {d1}+{d2}={d1 + d2}."


def _bags(rng):
    name, item = _pick(rng, _NAMES), _pick(rng, _ITEMS)
    per, bags = _int(rng, 2, 12), _int(rng, 3, 15)
    given = _int(rng, 1, bags - 1)
    total = per * bags
    q = f"{name} has {total} {item} and puts them in bags of {per}. {name} gives away {given} bags. How many bags are left?"
    return q, bags - given, f"{total}/{per}={bags}. {bags}-{given}={bags - given}."


def _savings(rng):
    name, thing = _pick(rng, _NAMES), _pick(rng, _THINGS)
    weekly, weeks = _int(rng, 3, 25), _int(rng, 2, 12)
    saved = weekly * weeks
    spent = _int(rng, 1, saved - 1)
    q = f"{name} saves ${weekly} every week for {weeks} weeks, then spends ${spent} on a {thing}. How many dollars are left?"
    return q, saved - spent, f"{weekly}*{weeks}={saved}. {saved}-{spent}={saved - spent}."


def _ages(rng):
    a, b = _pick(rng, _NAMES), _pick(rng, _NAMES)
    while b == a:
        b = _pick(rng, _NAMES)
    age, times, years = _int(rng, 2, 12), _int(rng, 2, 5), _int(rng, 1, 20)
    older = age * times
    q = f"{a} is {age} years old. {b} is {times} times as old as {a}. How old will {b} be in {years} years?"
    return q, older + years, f"{age}*{times}={older}. {older}+{years}={older + years}."


def _garden(rng):
    plant = _pick(rng, _PLANTS)
    rows, per = _int(rng, 2, 12), _int(rng, 3, 15)
    total = rows * per
    dead = _int(rng, 1, total - 1)
    q = f"A farmer plants {rows} rows of {per} {plant} plants. {dead} of the plants die. How many plants are left?"
    return q, total - dead, f"{rows}*{per}={total}. {total}-{dead}={total - dead}."


#: the story kinds, by name.
KINDS: dict[str, Callable] = {
    "shopping": _shopping,
    "speed": _speed,
    "bags": _bags,
    "savings": _savings,
    "ages": _ages,
    "garden": _garden,
}


class GSM8KTask(GeneratedTask):
    """GSM8K-style word problems from templates, with worked solutions.

    Prompt: the question and a newline. Answer: an integer (``"29"``). Reference completion: a
    short worked solution ending in the GSM8K answer line, e.g. ``"7*3=21. 50-21=29.\\n#### 29"``.

    Verifier: the final answer is read after the last ``####`` (rest of that line) or from the
    last ``\\boxed{...}``, whichever comes last, and parsed tolerantly (``"1,234"``, ``"$18"``,
    ``"18."``, ``"18.00"`` all work). ``format_ok`` when a marker holds a parseable number;
    ``correct`` when that number equals the answer. Text without a marker is not correct, even
    if it contains the right number.

    Parameters
    ----------
    kinds : sequence of str or None
        Story kinds to draw from (default all of :data:`KINDS`: ``shopping``, ``speed``, ``bags``,
        ``savings``, ``ages``, ``garden``).
    seed : int
        Base seed of the problem streams.
    num_test : int
        Held-out test split size (default 500).
    format_weight : float
        Share of the score for a parseable final answer (default 0).
    max_completion_chars : int
        Longer completions score 0 unread.
    verifier : str
        ``"builtin"`` (default: :func:`~.parsing.parse_number` equality) or ``"math_verify"``
        (math-verify compares the text after the marker with the answer, under
        ``score_time_limit`` seconds; see :mod:`~.mathverify`). The marker is required either way.
    score_time_limit : float
        Seconds per math-verify call.
    """

    name = "gsm8k"

    def __init__(
        self,
        *,
        kinds: tuple[str, ...] | list[str] | None = None,
        seed: int = 0,
        num_test: int = 500,
        format_weight: float = 0.0,
        max_completion_chars: int = DEFAULT_MAX_COMPLETION_CHARS,
        verifier: str = "builtin",
        score_time_limit: float = 1.0,
    ):
        self.verifier = check_verifier(verifier)
        self._math_verify = MathVerifier(score_time_limit) if verifier == "math_verify" else None
        if kinds is None:
            kinds = tuple(KINDS)
        if isinstance(kinds, str) or not kinds or any(k not in KINDS for k in kinds):
            raise ValueError(f"kinds must be a non-empty list of names from {tuple(KINDS)}, got {kinds!r}")
        self.kinds = tuple(dict.fromkeys(kinds))
        super().__init__(
            seed=seed,
            num_test=num_test,
            format_weight=format_weight,
            max_completion_chars=max_completion_chars,
        )
        #: the longest worked solution is 42 characters; room for it, EOS and some slack.
        self.suggested_max_new_tokens = 64

    def space_size(self) -> int:
        """A lower bound on distinct prompts per the chosen kinds (at least thousands each)."""
        return 2000 * len(self.kinds)

    def max_prompt_chars(self) -> int:
        """An upper bound: the longest template with the longest names, items and numbers (128)."""
        return 128

    def _generate(self, rng: np.random.Generator) -> Problem:
        kind = self.kinds[int(rng.integers(len(self.kinds)))]
        question, answer, steps = KINDS[kind](rng)
        return Problem(f"{question}\n", str(answer), {"kind": kind, "solution": f"{steps}\n#### {answer}"})

    def reference_completion(self, problem: Problem) -> str:
        """The worked solution ending in ``#### <answer>``."""
        return problem.metadata["solution"]

    def _score(self, completion: str, problem: Problem) -> dict[str, Any]:
        text, marker = extract_final_answer(completion)
        if self._math_verify is not None:
            correct, extra = self._math_verify.check(text, problem.answer)
            return {**extra, "correct": correct, "format_ok": bool(text), "parsed": text, "marker": marker}
        value = parse_number(text) if text is not None else None
        expected = parse_number(problem.answer)
        return {
            "correct": value is not None and expected is not None and value == expected,
            "format_ok": value is not None,
            "parsed": None if value is None else format_number(value),
            "marker": marker,
        }
