"""Problems from a local JSONL file a user supplies: one ``{"prompt": ..., "answer": ...}`` per line."""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import numpy as np

from .base import DEFAULT_MAX_COMPLETION_CHARS, Problem, Task, check_split
from .parsing import MAX_NUMBER_CHARS, extract_final_answer, format_number, parse_number

__all__ = ["JSONLTask", "load_jsonl_problems"]

_MATCH_MODES = ("auto", "number", "exact")


def load_jsonl_problems(path: str | os.PathLike) -> list[Problem]:
    """Read and validate a JSONL problem file.

    Each non-blank line must be a JSON object with a non-empty string ``"prompt"`` and an
    ``"answer"`` that is a string or a number (numbers are stored as their JSON text); an optional
    ``"metadata"`` must be an object. Blank lines are skipped.

    Parameters
    ----------
    path : str or os.PathLike
        A local file (UTF-8).

    Returns
    -------
    list of Problem
        In file order; ``metadata["line"]`` is the 1-based line number.

    Raises
    ------
    ValueError
        Naming the file and line number for the first invalid line, or when the file is missing
        or holds no problems.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(
            f"data_path={path!r} is not a file; pass a local JSONL file with one "
            '{"prompt": ..., "answer": ...} object per line'
        )
    problems: list[Problem] = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            where = f"{path}, line {lineno}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{where}: invalid JSON ({exc.msg} at column {exc.colno})") from None
            if not isinstance(row, dict):
                raise ValueError(
                    f'{where}: expected a JSON object like {{"prompt": ..., "answer": ...}}, got {type(row).__name__}'
                )
            missing = [k for k in ("prompt", "answer") if k not in row]
            if missing:
                raise ValueError(f"{where}: missing key(s) {missing}; each line needs 'prompt' and 'answer'")
            prompt, answer = row["prompt"], row["answer"]
            if not isinstance(prompt, str) or not prompt:
                raise ValueError(f"{where}: 'prompt' must be a non-empty string, got {type(prompt).__name__}")
            if isinstance(answer, bool) or not isinstance(answer, (str, int, float)):
                raise ValueError(
                    f"{where}: 'answer' must be a string or a number, got {type(answer).__name__}"
                )
            if isinstance(answer, float) and not np.isfinite(answer):
                raise ValueError(f"{where}: 'answer' must be finite, got {answer!r}")
            metadata = row.get("metadata", {})
            if not isinstance(metadata, dict):
                raise ValueError(f"{where}: 'metadata' must be an object, got {type(metadata).__name__}")
            answer_text = answer if isinstance(answer, str) else json.dumps(answer)
            problems.append(Problem(prompt, answer_text, {**metadata, "line": lineno}))
    if not problems:
        raise ValueError(f"data_path={path!r} holds no problems (every line is blank)")
    return problems


def _in_test(prompt: str, test_fraction: float, seed: int) -> bool:
    digest = hashlib.sha256(f"{seed}\x00{prompt}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < test_fraction


class JSONLTask(Task):
    """Prompts and answers from a local JSONL file.

    Splits: with only ``data_path``, a problem is in the test split when a hash of its prompt
    (and ``seed``) falls under ``test_fraction``, so identical prompts always land in the same
    split and the splits never overlap. With ``test_data_path``, that file is the test split and
    every train problem whose prompt also appears there is dropped.

    Verifier (``match``):

    - ``"number"``: the answer is read after ``####`` / in ``\\boxed{}`` if present, else the
      whole stripped completion, and compared as an exact number (``"1,234"``, ``"$5"``, ``"5."``);
      ``format_ok`` when a number could be read.
    - ``"exact"``: the same extraction, then string equality after stripping whitespace;
      ``format_ok`` when the extracted text is non-empty.
    - ``"auto"`` (default): ``"number"`` for problems whose answer parses as a number, else ``"exact"``.

    The reference completion is the answer itself.

    Parameters
    ----------
    data_path : str or os.PathLike
        The JSONL file (see :func:`load_jsonl_problems` for the line format).
    test_data_path : str, os.PathLike or None
        Optional separate test file.
    test_fraction : float
        Share of prompts held out when there is no test file, in ``[0, 1)`` (default 0.1).
    seed : int
        Salt of the split hash.
    match : str
        ``"auto"``, ``"number"`` or ``"exact"``.
    format_weight : float
        Share of the score for a well-formed answer (default 0).
    max_completion_chars : int
        Longer completions score 0 unread.
    """

    name = "jsonl"

    def __init__(
        self,
        data_path: str | os.PathLike | None = None,
        *,
        test_data_path: str | os.PathLike | None = None,
        test_fraction: float = 0.1,
        seed: int = 0,
        match: str = "auto",
        format_weight: float = 0.0,
        max_completion_chars: int = DEFAULT_MAX_COMPLETION_CHARS,
    ):
        super().__init__(format_weight=format_weight, max_completion_chars=max_completion_chars)
        if data_path is None:
            raise ValueError(
                'the jsonl task needs data_path: a local JSONL file of {"prompt": ..., "answer": ...} lines'
            )
        if match not in _MATCH_MODES:
            raise ValueError(f"match must be one of {_MATCH_MODES}, got {match!r}")
        if (
            isinstance(test_fraction, bool)
            or not isinstance(test_fraction, (int, float))
            or not 0 <= test_fraction < 1
        ):
            raise ValueError(f"test_fraction must be a float in [0, 1), got {test_fraction!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise ValueError(f"seed must be an int, got {seed!r}")
        self.data_path, self.match, self.test_fraction, self.seed = (
            os.fspath(data_path),
            match,
            float(test_fraction),
            int(seed),
        )
        rows = load_jsonl_problems(data_path)
        if test_data_path is not None:
            test = load_jsonl_problems(test_data_path)
            test_prompts = {p.prompt for p in test}
            train = [p for p in rows if p.prompt not in test_prompts]
        else:
            flags = [_in_test(p.prompt, self.test_fraction, self.seed) for p in rows]
            train = [p for p, f in zip(rows, flags, strict=True) if not f]
            test = [p for p, f in zip(rows, flags, strict=True) if f]
        self._splits = {
            split: [
                Problem(p.prompt, p.answer, {**p.metadata, "index": i, "split": split})
                for i, p in enumerate(ps)
            ]
            for split, ps in (("train", train), ("test", test))
        }
        longest_answer = max((len(p.answer) for ps in self._splits.values() for p in ps), default=8)
        self.suggested_max_new_tokens = max(16, longest_answer + 8)

    def num_problems(self, split: str = "train") -> int:
        """See :meth:`Task.num_problems`."""
        return len(self._splits[check_split(split)])

    def problem(self, index: int, split: str = "train") -> Problem:
        """See :meth:`Task.problem`."""
        return self._splits[split][self.check_index(index, split)]

    def max_prompt_chars(self) -> int:
        """The longest prompt in the file."""
        return max(len(p.prompt) for ps in self._splits.values() for p in ps)

    def reference_completion(self, problem: Problem) -> str:
        """The answer itself."""
        return problem.answer

    def _score(self, completion: str, problem: Problem) -> dict[str, Any]:
        text, marker = extract_final_answer(completion)
        if text is None:
            text = completion.strip()
        expected = parse_number(problem.answer) if self.match != "exact" else None
        mode = self.match if self.match != "auto" else ("number" if expected is not None else "exact")
        if mode == "number":
            value = parse_number(text) if len(text) <= MAX_NUMBER_CHARS else None
            return {
                "correct": value is not None and expected is not None and value == expected,
                "format_ok": value is not None,
                "parsed": None if value is None else format_number(value),
                "marker": marker,
            }
        return {
            "correct": bool(text) and text == problem.answer.strip(),
            "format_ok": bool(text),
            "parsed": text[:200],
            "marker": marker,
        }
