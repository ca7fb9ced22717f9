"""Any reasoning-gym dataset as a task: its generator for prompts, its ``score_answer`` as the verifier.

reasoning-gym (``pip install egsw-gym[tasks]``) is imported lazily, only when a
:class:`ReasoningGymTask` is built, so ``import egsw_gym`` works without it.

Splits
------
A reasoning-gym dataset of ``num_test + size`` items with the task's ``seed`` generates the
problems. The test split is items ``0 .. num_test - 1``, de-duplicated by question; train problem
``i`` is item ``num_test + i``, or, when that item's question is a test question (or longer than
``max_prompt_chars``), item ``num_test + i`` of the first resampling dataset (same size, seeds
derived from ``(seed, k)``, ``k = 1, 2, ...``) whose question is not. So the splits never share a
question, and both are deterministic.

Scoring
-------
The answer is read from the completion in ``answer_format`` (see
:mod:`~egsw_gym.envs.tasks.formats`) and passed to the dataset's ``score_answer(answer, entry)``
(reasoning-gym's scores are in ``[0, 1]`` and may give partial credit), under the safety bounds:
completions over ``max_completion_chars`` and answers over ``max_answer_chars`` score 0 unread,
each call is interrupted after ``score_time_limit`` seconds, and an exception in the scorer
scores 0; timeouts and exceptions are counted (``scorer_timeouts_total`` /
``scorer_errors_total`` in every breakdown, so in each episode's final info).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .base import DEFAULT_MAX_COMPLETION_CHARS, Problem, Task, check_split
from .bounded import BoundedScorer
from .formats import check_answer_format, extract_answer, format_instruction, wrap_answer
from .mathverify import MathVerifier

__all__ = ["ReasoningGymTask", "import_reasoning_gym"]

_MAX_ATTEMPTS = 64
_PROMPT_PROBE = 256  # test problems measured for the default prompt-length bound


def import_reasoning_gym():
    """Import reasoning-gym, or raise an ``ImportError`` that says how to install it."""
    try:
        import reasoning_gym
    except ImportError as exc:
        raise ImportError(
            "the reasoning-gym tasks need the reasoning-gym package: pip install 'egsw-gym[tasks]'"
        ) from exc
    return reasoning_gym


def _bounded_int(name: str, value: Any, low: int, high: int = 1 << 31) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not low <= value <= high:
        raise ValueError(f"{name} must be an int in [{low}, {high}], got {value!r}")
    return int(value)


class ReasoningGymTask(Task):
    """A reasoning-gym dataset (``reasoning_gym.create_dataset(dataset, ...)``) as a task.

    Parameters
    ----------
    dataset : str
        A reasoning-gym dataset name (``"gsm_symbolic"``, ``"basic_arithmetic"``, ``"chain_sum"``,
        ``"leg_counting"``, ...; ``reasoning_gym.factory.DATASETS`` lists them).
    size : int
        Number of train problems.
    seed : int
        The dataset seed (non-negative).
    num_test : int
        Number of held-out test items generated (fewer after de-duplication), at most
        :attr:`max_num_test` (32,768). The test split is generated at construction, because its
        questions must be known to keep them out of the train split (which is generated lazily,
        by index, at any ``size``).
    config : dict or None
        The dataset's own configuration keywords (e.g. ``{"min_terms": 2, "max_terms": 2}`` for
        ``chain_sum``), passed to ``create_dataset``.
    answer_format : str
        ``"plain"`` (default: the whole completion is the answer), ``"r1"`` or ``"boxed"``.
    system_prompt : str or None
        The chat system prompt; ``None``: the answer format's instruction (none for plain).
    max_prompt_chars : int or None
        Problems with a longer question are skipped (resampled as described in the module
        docstring), so a fixed prompt budget always fits. ``None``: 1.25 x the longest of the
        first 256 test questions.
    format_weight, max_completion_chars : see :class:`~egsw_gym.envs.tasks.Task`.
    max_answer_chars : int
        Extracted answers longer than this score 0 without calling the scorer.
    score_time_limit : float
        Seconds per ``score_answer`` call (see :mod:`~egsw_gym.envs.tasks.bounded`).
    suggested_max_new_tokens : int or None
        The environment's default completion budget; ``None``: 1.5 x the longest reference
        completion of the test split plus 4.
    verifier : str
        ``"score_answer"`` (default: the dataset's own scorer) or ``"math_verify"`` (math-verify
        against the item's answer, for math datasets such as ``gsm_symbolic``; same bounds).
    """

    name = "reasoning_gym"
    prompt_chars_bounded = True
    #: largest ``num_test``: held-out sets in the literature are far smaller (GSM8K 1,319, MATH 5,000);
    #: a class attribute, so a subclass (or an assignment) can raise it
    max_num_test = 1 << 15

    def __init__(
        self,
        dataset: str = "basic_arithmetic",
        *,
        size: int = 100_000,
        seed: int = 0,
        num_test: int = 500,
        config: dict[str, Any] | None = None,
        answer_format: str = "plain",
        system_prompt: str | None = None,
        max_prompt_chars: int | None = None,
        format_weight: float = 0.0,
        max_completion_chars: int = DEFAULT_MAX_COMPLETION_CHARS,
        max_answer_chars: int = 1024,
        score_time_limit: float = 1.0,
        suggested_max_new_tokens: int | None = None,
        verifier: str = "score_answer",
    ):
        super().__init__(format_weight=format_weight, max_completion_chars=max_completion_chars)
        rg = import_reasoning_gym()
        if not isinstance(dataset, str) or dataset not in rg.factory.DATASETS:
            raise ValueError(
                f"dataset must be a reasoning-gym dataset name, got {dataset!r}; "
                f"known: {sorted(rg.factory.DATASETS)[:12]}... (reasoning_gym.factory.DATASETS)"
            )
        if config is not None and not isinstance(config, dict):
            raise ValueError(f"config must be a dict of the dataset's options or None, got {config!r}")
        self.dataset_name = dataset
        self.size = _bounded_int("size", size, 1)
        self.seed = _bounded_int("seed", seed, 0)
        if (
            isinstance(num_test, (int, np.integer))
            and not isinstance(num_test, bool)
            and num_test > self.max_num_test
        ):
            raise ValueError(
                f"num_test={num_test} is more than max_num_test={self.max_num_test}: the test split is generated "
                "and de-duplicated at construction (its questions are kept out of the train split); use fewer "
                "test items, or raise ReasoningGymTask.max_num_test"
            )
        self.num_test_requested = _bounded_int("num_test", num_test, 1, self.max_num_test)
        self.answer_format = check_answer_format(answer_format)
        self.system_prompt = format_instruction(answer_format) if system_prompt is None else system_prompt
        self.max_answer_chars = _bounded_int("max_answer_chars", max_answer_chars, 1, 1 << 20)
        self._scorer = BoundedScorer(f"reasoning-gym {dataset}", score_time_limit)
        if verifier not in ("score_answer", "math_verify"):
            raise ValueError(f"verifier must be 'score_answer' or 'math_verify', got {verifier!r}")
        self.verifier = verifier
        self._math_verify = (
            MathVerifier(score_time_limit, self.max_answer_chars) if verifier == "math_verify" else None
        )
        self._rg, self._config = rg, dict(config or {})
        self._span = self.num_test_requested + self.size
        self._datasets: dict[int, Any] = {}
        self._data = self._dataset(0)
        self._build_test(max_prompt_chars)
        if suggested_max_new_tokens is None:
            longest = max(len(self.reference_completion(p)) for p in self._test)
            suggested_max_new_tokens = int(math.ceil(1.5 * longest)) + 4
        self.suggested_max_new_tokens = _bounded_int("suggested_max_new_tokens", suggested_max_new_tokens, 1)
        self._train_cache: dict[int, Problem] = {}

    # ----------------------------------------------------------------------------------- problems
    def _dataset(self, attempt: int) -> Any:
        """The dataset object of resampling round ``attempt`` (0: seed ``seed``), built lazily."""
        data = self._datasets.get(attempt)
        if data is None:
            seed = (
                self.seed
                if attempt == 0
                else int(np.random.SeedSequence([self.seed, attempt]).generate_state(1)[0])
            )
            try:
                data = self._rg.create_dataset(self.dataset_name, size=self._span, seed=seed, **self._config)
            except (TypeError, ValueError, AssertionError) as exc:
                raise ValueError(
                    f"config={self._config!r} is not valid for reasoning-gym dataset {self.dataset_name!r}: {exc}"
                ) from exc
            self._datasets[attempt] = data
        return data

    def _item(self, i: int, attempt: int = 0) -> dict[str, Any]:
        entry = self._dataset(attempt)[i]
        if not isinstance(entry.get("question"), str) or entry.get("answer") is None:
            raise RuntimeError(f"reasoning-gym {self.dataset_name} item {i} has no question or answer")
        return entry

    def _build_test(self, max_prompt_chars: int | None) -> None:
        items = [self._item(i) for i in range(self.num_test_requested)]
        if max_prompt_chars is None:
            longest = max(len(e["question"]) for e in items[:_PROMPT_PROBE])
            max_prompt_chars = int(math.ceil(1.25 * longest))
        self.max_question_chars = _bounded_int("max_prompt_chars", max_prompt_chars, 1)
        seen: set[str] = set()
        self._test: list[Problem] = []
        for i, e in enumerate(items):
            q = e["question"]
            if q in seen or len(q) > self.max_question_chars:
                continue
            seen.add(q)
            self._test.append(self._problem(e, i, len(self._test), "test"))
        if not self._test:
            raise ValueError(
                f"no test question of {self.dataset_name!r} fits max_prompt_chars={max_prompt_chars}"
            )
        self._test_questions = frozenset(seen)

    @staticmethod
    def _problem(entry: dict[str, Any], item: int, index: int, split: str, attempt: int = 0) -> Problem:
        meta = {"index": index, "split": split, "item": item, "attempt": attempt, "entry": entry}
        return Problem(entry["question"], str(entry["answer"]), meta)

    def num_problems(self, split: str = "train") -> int:
        """``size`` for train, the de-duplicated test size for test."""
        return self.size if check_split(split) == "train" else len(self._test)

    def problem(self, index: int, split: str = "train") -> Problem:
        """See :meth:`Task.problem`; ``metadata["entry"]`` is the reasoning-gym item."""
        index = self.check_index(index, split)
        if split == "test":
            return self._test[index]
        hit = self._train_cache.get(index)
        if hit is not None:
            return hit
        item = self.num_test_requested + index
        for attempt in range(_MAX_ATTEMPTS):
            entry = self._item(item, attempt)
            q = entry["question"]
            if q not in self._test_questions and len(q) <= self.max_question_chars:
                problem = self._problem(entry, item, index, "train", attempt)
                if len(self._train_cache) >= 4096:
                    self._train_cache.pop(next(iter(self._train_cache)))
                self._train_cache[index] = problem
                return problem
        raise RuntimeError(
            f"reasoning-gym {self.dataset_name}: {_MAX_ATTEMPTS} candidates for train problem {index} were "
            "all test questions or too long; the dataset's configuration allows too few distinct questions "
            "for this num_test (lower num_test or widen the config)"
        )

    def is_test_prompt(self, prompt: str) -> bool:
        """Whether ``prompt`` is a held-out test question."""
        return prompt in self._test_questions

    def max_prompt_chars(self) -> int:
        """The question-length bound (problems over it are never served)."""
        return self.max_question_chars

    def reference_completion(self, problem: Problem) -> str:
        """The reference answer in ``answer_format`` (an empty think block for ``"r1"``)."""
        return wrap_answer(problem.answer, self.answer_format)

    # ------------------------------------------------------------------------------------ scoring
    @property
    def scorer_stats(self) -> dict[str, float]:
        """Cumulative ``calls``, ``errors``, ``timeouts`` and ``max_seconds`` of the scorer."""
        s = self._scorer
        return {"calls": s.calls, "errors": s.errors, "timeouts": s.timeouts, "max_seconds": s.max_seconds}

    def _score(self, completion: str, problem: Problem) -> dict[str, Any]:
        answer, format_ok = extract_answer(completion, self.answer_format)
        base = {
            "parsed": answer,
            "format_ok": format_ok,
            "correct": False,
            "accuracy": 0.0,
            **self._scorer.counts(),
        }
        if answer is None:
            return {**base, "reason": f"no answer in {self.answer_format} format"}
        if len(answer) > self.max_answer_chars:
            return {**base, "parsed": answer[:64], "reason": "answer longer than max_answer_chars"}
        entry = problem.metadata.get("entry")
        if not isinstance(entry, dict):
            return {**base, "reason": "problem has no reasoning-gym entry"}
        if self._math_verify is not None:
            correct, extra = self._math_verify.check(answer, problem.answer)
            return {**base, **extra, "accuracy": float(correct), "correct": correct}
        data = self._dataset(int(problem.metadata.get("attempt", 0)))
        value, extra = self._scorer(data.score_answer, answer, entry)
        accuracy = float(value) if isinstance(value, (int, float)) and math.isfinite(value) else 0.0
        accuracy = min(1.0, max(0.0, accuracy))
        return {**base, **extra, "accuracy": accuracy, "correct": accuracy >= 1.0}

    def __repr__(self) -> str:
        return (
            f"ReasoningGymTask({self.dataset_name!r}, size={self.size}, seed={self.seed}, "
            f"answer_format={self.answer_format!r})"
        )
