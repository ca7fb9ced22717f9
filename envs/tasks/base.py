"""The ``Task`` interface: where prompts come from and how a completion is scored.

A task is a pure, deterministic object: the same ``(index, split)`` always gives the same
:class:`Problem`, and :meth:`Task.score` is a verifier that never raises and never executes
anything, whatever string it is given (see :meth:`Task.score`).

Splits
------
Every task has a ``"train"`` and a ``"test"`` split, both enumerable: ``problem(index, split)``
for ``0 <= index < num_problems(split)``. The two never share a prompt. Generated tasks
(:class:`GeneratedTask`) build the test split from their own seed stream, de-duplicated, and
exclude every test prompt from train by resampling; the train split is a virtual enumeration of
``2**31 - 1`` indices (duplicates within train are allowed).

Sampling
--------
``sample(rng_or_seed, split)`` draws an index uniformly from ``range(num_problems(split))`` with
a ``numpy.random.Generator`` (an int or ``None`` seeds a fresh one) and returns
``problem(index, split)``; the chosen index is in ``problem.metadata["index"]``.

Scoring
-------
``score(completion, problem) -> ScoreResult``; ``result.score`` is in ``[0, 1]``::

    score = (1 - format_weight) * accuracy + format_weight * format_ok

where ``accuracy`` is ``correct`` (0 or 1) unless the verifier reports a partial credit in
``breakdown["accuracy"]`` (third-party scorers such as reasoning-gym's may), so with the
default ``format_weight=0`` the reward is exactly correctness, and a positive
``format_weight`` gives partial credit for a well-formed but wrong answer.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Problem", "ScoreResult", "Task", "GeneratedTask", "TRAIN_SIZE", "SPLITS"]

#: the allowed split names.
SPLITS = ("train", "test")
#: the size of the virtual train enumeration of generated tasks.
TRAIN_SIZE = 2**31 - 1
#: default cap on a completion's length in characters; longer completions score 0 unread.
DEFAULT_MAX_COMPLETION_CHARS = 16_384
_RECENT_PROBLEMS = 4096  # train problems a generated task keeps (an LRU; each is a few hundred bytes)


@dataclass(frozen=True)
class Problem:
    """One prompt with its reference answer.

    Parameters
    ----------
    prompt : str
        The text the model continues (e.g. ``"12+7="``).
    answer : str
        The reference answer in canonical form (e.g. ``"19"``); what :meth:`Task.score` compares to.
    metadata : dict
        Task-specific extras: always ``"index"`` and ``"split"``; e.g. ``"numbers"``/``"target"``/
        ``"solution"`` for countdown, ``"kind"`` and ``"solution"`` for GSM8K-style problems.
    """

    prompt: str
    answer: str
    metadata: dict[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class ScoreResult:
    """What a verifier returns.

    Parameters
    ----------
    score : float
        The reward, a finite float in ``[0, 1]``.
    breakdown : dict
        Always has ``"correct"`` (bool), ``"format_ok"`` (bool) and ``"parsed"`` (the answer the
        verifier read, as a ``str``, or ``None``); tasks add their own keys (e.g. ``"reason"``
        explaining a rejection, ``"too_long"``). Values are plain Python scalars or ``None``.
    """

    score: float
    breakdown: dict[str, Any]

    @property
    def correct(self) -> bool:
        """Whether the completion's answer equals the reference answer."""
        return bool(self.breakdown.get("correct", False))

    @property
    def format_ok(self) -> bool:
        """Whether the completion has the expected format (whatever its value)."""
        return bool(self.breakdown.get("format_ok", False))

    @property
    def parsed(self) -> str | None:
        """The answer the verifier read from the completion, or ``None``."""
        return self.breakdown.get("parsed")


def check_split(split: str) -> str:
    """Validate a split name.

    Parameters
    ----------
    split : str
        ``"train"`` or ``"test"``.

    Returns
    -------
    str
        ``split`` unchanged.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return split


def as_generator(rng_or_seed: np.random.Generator | int | None) -> np.random.Generator:
    """A ``numpy.random.Generator``: passed through, or freshly seeded from an int / ``None``.

    Parameters
    ----------
    rng_or_seed : numpy.random.Generator, int or None
        A generator to draw from, or a seed (``None``: fresh OS entropy).

    Returns
    -------
    numpy.random.Generator
    """
    if isinstance(rng_or_seed, np.random.Generator):
        return rng_or_seed
    if rng_or_seed is None or (
        isinstance(rng_or_seed, (int, np.integer)) and not isinstance(rng_or_seed, bool)
    ):
        return np.random.default_rng(None if rng_or_seed is None else int(rng_or_seed))
    raise TypeError(
        f"rng_or_seed must be a numpy.random.Generator, an int seed or None, got {type(rng_or_seed).__name__}"
    )


def check_format_weight(format_weight: float) -> float:
    """Validate ``format_weight`` (a finite float in ``[0, 1]``).

    Parameters
    ----------
    format_weight : float
        The share of the score given for a well-formed answer.

    Returns
    -------
    float
    """
    try:
        fw = float(format_weight)
    except (TypeError, ValueError):
        raise ValueError(f"format_weight must be a float in [0, 1], got {format_weight!r}") from None
    if not (0.0 <= fw <= 1.0):
        raise ValueError(f"format_weight must be a float in [0, 1], got {format_weight!r}")
    return fw


class Task(ABC):
    """A source of prompts plus the verifier that scores completions.

    Subclasses implement :meth:`num_problems`, :meth:`problem`, :meth:`reference_completion` and
    :meth:`_score`; the public :meth:`score` wraps ``_score`` with the safety contract.

    Parameters
    ----------
    format_weight : float
        Share of the score given for a well-formed answer, in ``[0, 1]`` (default ``0``: the
        score is correctness only).
    max_completion_chars : int
        Completions longer than this many characters score 0 without being parsed
        (``breakdown["too_long"] = True``); bounds the verifier's work.

    Attributes
    ----------
    name : str
        Short registry name (``"arithmetic"``, ``"countdown"``, ``"gsm8k"``, ``"jsonl"``).
    system_prompt : str or None
        The default system message of the chat prompt (e.g. the answer-format instruction).
    suggested_max_new_tokens : int
        A completion budget (in characters, so in tokens for the built-in tokenizer) that fits
        the reference completions; the environment's default ``max_new_tokens``.
    """

    name: str = "task"
    suggested_max_new_tokens: int = 64
    #: the default system prompt of :meth:`messages` / :meth:`raw_prompt` (``None``: none).
    system_prompt: str | None = None
    #: whether :meth:`max_prompt_chars` bounds every prompt (else a finite task is measured).
    prompt_chars_bounded: bool = False

    def __init__(
        self, *, format_weight: float = 0.0, max_completion_chars: int = DEFAULT_MAX_COMPLETION_CHARS
    ):
        self.format_weight = check_format_weight(format_weight)
        if not isinstance(max_completion_chars, (int, np.integer)) or max_completion_chars < 1:
            raise ValueError(f"max_completion_chars must be a positive int, got {max_completion_chars!r}")
        self.max_completion_chars = int(max_completion_chars)

    def check_tokenizer(self, tokenizer: Any) -> int:
        """How many characters of the task's text ``tokenizer`` cannot represent (they would become ``<unk>``).

        The environment calls it once with its tokenizer. Generated tasks draw from alphabets the
        built-in tokenizer covers, so the default finds nothing; tasks that read text from files
        (:class:`~egsw_gym.envs.tasks.jsonl.JSONLTask`) count and warn or raise.
        """
        return 0

    # ----------------------------------------------------------------------------------- problems
    @abstractmethod
    def num_problems(self, split: str = "train") -> int:
        """Number of problems in a split (``problem(i, split)`` is valid for ``0 <= i < n``).

        Parameters
        ----------
        split : str
            ``"train"`` or ``"test"``.

        Returns
        -------
        int
        """

    @abstractmethod
    def problem(self, index: int, split: str = "train") -> Problem:
        """The problem at ``index`` of ``split`` (deterministic).

        Parameters
        ----------
        index : int
            ``0 <= index < num_problems(split)``.
        split : str
            ``"train"`` or ``"test"``.

        Returns
        -------
        Problem
        """

    def sample(self, rng_or_seed: np.random.Generator | int | None = None, split: str = "train") -> Problem:
        """Draw a problem uniformly from a split.

        Parameters
        ----------
        rng_or_seed : numpy.random.Generator, int or None
            The generator to draw the index from (advanced by one draw), or a seed for a fresh one.
        split : str
            ``"train"`` or ``"test"``.

        Returns
        -------
        Problem
            ``problem(index, split)`` with ``metadata["index"] == index``.
        """
        check_split(split)
        rng = as_generator(rng_or_seed)
        n = self.num_problems(split)
        if n <= 0:
            raise ValueError(f"split {split!r} of task {self.name!r} is empty; there is nothing to sample")
        return self.problem(int(rng.integers(n)), split)

    def check_index(self, index: int, split: str) -> int:
        """Validate a problem index for ``split`` and return it as an ``int``.

        Parameters
        ----------
        index : int
            The index.
        split : str
            ``"train"`` or ``"test"``.

        Returns
        -------
        int
        """
        check_split(split)
        n = self.num_problems(split)
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not 0 <= int(index) < n:
            raise ValueError(f"prompt index must be an int in [0, {n}) for split {split!r}, got {index!r}")
        return int(index)

    @abstractmethod
    def reference_completion(self, problem: Problem) -> str:
        """The correct completion in the task's expected format (without EOS), for warm starts.

        ``score(reference_completion(p), p).score == 1.0`` for every problem ``p``.

        Parameters
        ----------
        problem : Problem
            A problem of this task.

        Returns
        -------
        str
        """

    def max_prompt_chars(self) -> int:
        """An upper bound on the prompt length in characters (default ``max_prompt_tokens`` of the env).

        Returns
        -------
        int
        """
        return (
            max(len(self.problem(i, "test").prompt) for i in range(min(64, self.num_problems("test")))) + 16
        )

    def messages(self, problem: Problem, system_prompt: str | None = None) -> list[dict[str, str]]:
        """The prompt as chat messages, for tokenizers with a chat template.

        Parameters
        ----------
        problem : Problem
            The problem.
        system_prompt : str or None
            Overrides :attr:`system_prompt` (``""``: no system message).

        Returns
        -------
        list of dict
            ``[{"role": "system", ...}]`` (when there is a system prompt) then
            ``{"role": "user", "content": problem.prompt}``.
        """
        system = self.system_prompt if system_prompt is None else system_prompt
        user = [{"role": "user", "content": problem.prompt}]
        return ([{"role": "system", "content": system}] if system else []) + user

    def raw_prompt(self, problem: Problem, system_prompt: str | None = None) -> str:
        """The prompt as plain text, for tokenizers without a chat template: the system prompt and
        a blank line before the problem's prompt (just the prompt when there is no system prompt)."""
        system = self.system_prompt if system_prompt is None else system_prompt
        return f"{system}\n\n{problem.prompt}" if system else problem.prompt

    # ------------------------------------------------------------------------------------ scoring
    @abstractmethod
    def _score(self, completion: str, problem: Problem) -> dict[str, Any]:
        """Task-specific verification of a ``str`` of at most ``max_completion_chars`` characters.

        Returns the breakdown: at least ``correct``, ``format_ok`` and ``parsed``.
        """

    def score(self, completion: str, problem: Problem) -> ScoreResult:
        """Score a completion; the verifier.

        Safety contract: for *any* input (any ``str`` of any length or content, ``bytes``, even
        non-strings) this returns a :class:`ScoreResult` with a finite score in ``[0, 1]``, never
        raises, never calls ``eval``/``exec``/``compile``/``__import__``, and does bounded work:
        completions over ``max_completion_chars`` are rejected unread, numbers are parsed from at
        most :data:`~egsw_gym.envs.tasks.parsing.MAX_NUMBER_CHARS` characters, expressions with a
        bounded length and depth. Should a verifier bug raise anyway, the score is 0 and
        ``breakdown["error"]`` names the exception (the fuzz tests assert it never appears).

        Parameters
        ----------
        completion : str
            The generated text (EOS and padding already removed).
        problem : Problem
            The problem it answers.

        Returns
        -------
        ScoreResult
            ``score = (1 - format_weight) * correct + format_weight * format_ok``.
        """
        base = {"correct": False, "format_ok": False, "parsed": None}
        if isinstance(completion, bytes):
            completion = completion[: 4 * self.max_completion_chars].decode("utf-8", errors="replace")
        if not isinstance(completion, str):
            return ScoreResult(
                0.0, {**base, "reason": f"completion is not a str ({type(completion).__name__})"}
            )
        completion = str.__str__(completion)  # an exact str, whatever subclass came in
        if len(completion) > self.max_completion_chars:
            return ScoreResult(
                0.0, {**base, "too_long": True, "reason": "completion longer than max_completion_chars"}
            )
        try:
            breakdown = {**base, **self._score(completion, problem)}
        except Exception as exc:  # pragma: no cover - the fuzz tests check this never happens
            return ScoreResult(0.0, {**base, "error": f"{type(exc).__name__}: {exc}"[:200]})
        correct, format_ok = bool(breakdown["correct"]), bool(breakdown["format_ok"])
        breakdown["correct"], breakdown["format_ok"] = correct, format_ok
        accuracy = breakdown.get("accuracy", float(correct))  # partial credit of third-party scorers
        accuracy = float(accuracy) if isinstance(accuracy, (int, float)) and math.isfinite(accuracy) else 0.0
        value = (1.0 - self.format_weight) * min(1.0, max(0.0, accuracy)) + self.format_weight * format_ok
        return ScoreResult(float(min(1.0, max(0.0, value))), breakdown)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(format_weight={self.format_weight})"


class GeneratedTask(Task):
    """A task whose problems are generated from seeds, with disjoint train and test splits.

    The test split is ``problem(i, "test")`` for ``i < num_test``: generated from the seed stream
    ``(seed, 1, attempt)`` and de-duplicated by prompt. The train split is virtual:
    ``problem(i, "train")`` is generated from ``(seed, 0, i, attempt)`` for ``attempt = 0, 1, ...``
    until the prompt is not a test prompt, so the two splits never share a prompt.

    Parameters
    ----------
    seed : int
        The task's base seed; different seeds give different problem sets.
    num_test : int
        Size of the held-out test split. It is capped at a fifth of the number of distinct
        prompts the difficulty settings allow (so train keeps at least four fifths).
    format_weight : float
        See :class:`Task`.
    max_completion_chars : int
        See :class:`Task`.
    """

    def __init__(
        self,
        *,
        seed: int = 0,
        num_test: int = 500,
        format_weight: float = 0.0,
        max_completion_chars: int = DEFAULT_MAX_COMPLETION_CHARS,
    ):
        super().__init__(format_weight=format_weight, max_completion_chars=max_completion_chars)
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}")
        if isinstance(num_test, bool) or not isinstance(num_test, (int, np.integer)) or num_test < 1:
            raise ValueError(f"num_test must be a positive int, got {num_test!r}")
        self.seed = int(seed)
        self._num_test_requested = int(num_test)
        self._test: list[Problem] | None = None
        self._test_prompts: frozenset[str] = frozenset()
        # Recently generated train problems by index. GRPO resets a whole group with one seed, so
        # its group_size slots (and their later auto-resets) ask for the same index in a row.
        self._recent: OrderedDict[int, Problem] = OrderedDict()

    @abstractmethod
    def _generate(self, rng: np.random.Generator) -> Problem:
        """Generate one problem (without ``index``/``split`` metadata) from ``rng``."""

    @abstractmethod
    def space_size(self) -> int:
        """The number of distinct prompts the current settings can produce (or a lower bound).

        Returns
        -------
        int
        """

    def _build_test(self) -> None:
        if self._test is not None:
            return
        n = max(1, min(self._num_test_requested, self.space_size() // 5))
        problems: list[Problem] = []
        seen: set[str] = set()
        attempt = 0
        while len(problems) < n and attempt < 50 * n:
            p = self._generate(np.random.default_rng([self.seed, 1, attempt]))
            attempt += 1
            if p.prompt not in seen:
                seen.add(p.prompt)
                problems.append(p)
        self._test = [
            Problem(p.prompt, p.answer, {**p.metadata, "index": i, "split": "test"})
            for i, p in enumerate(problems)
        ]
        self._test_prompts = frozenset(seen)

    def num_problems(self, split: str = "train") -> int:
        """See :meth:`Task.num_problems`: ``TRAIN_SIZE`` for train, the test size for test."""
        check_split(split)
        if split == "train":
            return TRAIN_SIZE
        self._build_test()
        return len(self._test)

    def problem(self, index: int, split: str = "train") -> Problem:
        """See :meth:`Task.problem`."""
        index = self.check_index(index, split)
        self._build_test()
        if split == "test":
            return self._test[index]
        hit = self._recent.get(index)
        if hit is not None:
            self._recent.move_to_end(index)
            return hit
        for attempt in range(10_000):
            p = self._generate(np.random.default_rng([self.seed, 0, index, attempt]))
            if p.prompt not in self._test_prompts:
                problem = Problem(p.prompt, p.answer, {**p.metadata, "index": index, "split": "train"})
                self._recent[index] = problem
                if len(self._recent) > _RECENT_PROBLEMS:
                    self._recent.popitem(last=False)
                return problem
        raise RuntimeError(  # pragma: no cover - needs a test split of almost the whole space
            f"could not generate a train problem outside the test split for index {index}"
        )

    def is_test_prompt(self, prompt: str) -> bool:
        """Whether ``prompt`` belongs to the held-out test split.

        Parameters
        ----------
        prompt : str
            A prompt.

        Returns
        -------
        bool
        """
        self._build_test()
        return prompt in self._test_prompts
