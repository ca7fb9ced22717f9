"""Problems from a local JSONL file a user supplies: one ``{"prompt": ..., "answer": ...}`` per line."""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections import Counter
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import numpy as np

from .base import DEFAULT_MAX_COMPLETION_CHARS, Problem, Task, check_split
from .parsing import MAX_NUMBER_CHARS, extract_final_answer, format_number, parse_number

__all__ = ["JSONLTask", "load_jsonl_problems"]

_MATCH_MODES = ("auto", "number", "exact")


#: the longest line read (bytes, before decoding or parsing); longer lines are refused unread
DEFAULT_MAX_LINE_BYTES = 1_000_000
#: the most lines a file may hold (counted before any is parsed): problems are validated and held in
#: memory (about 1 KB each), and RL problem sets (GSM8K 7,473, MATH 7,500) are far smaller
DEFAULT_MAX_PROBLEMS = 100_000
#: Python's limit on converting digit strings to int (sys.get_int_max_str_digits)
_MAX_INT_DIGITS = 4300


class _NumberLiteral(str):
    """A JSON number exactly as written in the file (never converted to float and back)."""


def _check_line_count(path: str, max_problems: int) -> None:
    """Refuse a file of more than ``max_problems`` lines, counted in 1 MiB chunks before any is parsed."""
    lines, last = 0, b"\n"
    with open(path, "rb") as fh:
        while chunk := fh.read(2**20):
            lines += chunk.count(b"\n")
            last = chunk[-1:]
            if lines > max_problems:
                break
    lines += last != b"\n"  # a last line without a newline
    if lines > max_problems:
        raise ValueError(
            f"{path} holds more than max_problems={max_problems} lines; every problem is validated and held "
            "in memory (about 1 KB each), so a larger file needs max_problems=<its line count> "
            "(env_kwargs={'max_problems': ...})"
        )


def _read_lines(path: str, max_line_bytes: int) -> Iterator[tuple[int, str]]:
    """``(line number, text)`` of each line, streamed; too long or undecodable lines name file and line."""
    with open(path, "rb") as fh:
        lineno = 0
        while raw := fh.readline(max_line_bytes + 2):
            lineno += 1
            body = raw.rstrip(b"\r\n")
            if len(body) > max_line_bytes:
                raise ValueError(
                    f"{path}, line {lineno}: longer than max_line_bytes={max_line_bytes} bytes (refused unread); "
                    "shorten the prompt or pass a larger max_line_bytes"
                )
            try:
                text = body.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as err:
                raise ValueError(
                    f"{path}, line {lineno}: not valid UTF-8 (byte {err.start}: {err.reason})"
                ) from None
            yield lineno, text


def _answer_text(answer: Any, where: str) -> str:
    """The answer as stored: strings stripped of nothing, numbers exactly as written (exponents expanded)."""
    if isinstance(answer, _NumberLiteral):
        if len(answer) > _MAX_INT_DIGITS:
            raise ValueError(
                f"{where}: 'answer' is a {len(answer)}-character number; at most {MAX_NUMBER_CHARS} can match"
            )
        text = str(answer)
        if "e" in text or "E" in text:  # 1e-05 -> 0.00001: a form a model can write
            value = Decimal(text)
            if abs(value.adjusted()) > MAX_NUMBER_CHARS:
                raise ValueError(
                    f"{where}: 'answer' {text} has no plain decimal form of at most {MAX_NUMBER_CHARS} characters"
                )
            text = format(value, "f")
        if parse_number(text) is None:
            raise ValueError(
                f"{where}: 'answer' {text[:60]} can never be matched (numbers of at most {MAX_NUMBER_CHARS} "
                "characters are compared); write it as a string to compare it exactly"
            )
        return text
    if isinstance(answer, float):  # NaN / Infinity constants
        raise ValueError(f"{where}: 'answer' must be finite, got {answer!r}")
    if not isinstance(answer, str):
        raise ValueError(f"{where}: 'answer' must be a string or a number, got {type(answer).__name__}")
    if not answer.strip():
        raise ValueError(f"{where}: 'answer' is empty; a problem without an answer can never score")
    return answer


def _plain_numbers(value: Any, where: str) -> Any:
    """Metadata with its number literals converted (ints of more than 4300 digits are refused)."""
    if isinstance(value, _NumberLiteral):
        if any(c in value for c in ".eE"):
            return float(value)
        if len(value.lstrip("-")) > _MAX_INT_DIGITS:
            raise ValueError(
                f"{where}: a {len(value)}-digit integer in 'metadata' (at most {_MAX_INT_DIGITS})"
            )
        return int(value)
    if isinstance(value, dict):
        return {k: _plain_numbers(v, where) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain_numbers(v, where) for v in value]
    return value


def _parse_row(text: str, where: str, lineno: int) -> Problem:
    try:
        row = json.loads(text, parse_int=_NumberLiteral, parse_float=_NumberLiteral)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{where}: invalid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(row, dict):
        raise ValueError(
            f'{where}: expected a JSON object like {{"prompt": ..., "answer": ...}}, got {type(row).__name__}'
        )
    missing = [k for k in ("prompt", "answer") if k not in row]
    if missing:
        raise ValueError(f"{where}: missing key(s) {missing}; each line needs 'prompt' and 'answer'")
    prompt = row["prompt"]
    if not isinstance(prompt, str) or not prompt:
        raise ValueError(f"{where}: 'prompt' must be a non-empty string, got {type(prompt).__name__}")
    answer = _answer_text(row["answer"], where)
    metadata = row.get("metadata", {})
    if not isinstance(metadata, dict):
        raise ValueError(f"{where}: 'metadata' must be an object, got {type(metadata).__name__}")
    return Problem(prompt, answer, {**_plain_numbers(metadata, where), "line": lineno})


def load_jsonl_problems(
    path: str | os.PathLike,
    *,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    max_problems: int = DEFAULT_MAX_PROBLEMS,
) -> list[Problem]:
    """Read and validate a JSONL problem file, streaming it line by line.

    Each non-blank line must be a JSON object with a non-empty string ``"prompt"`` and an
    ``"answer"`` that is a non-empty string or a number; an optional ``"metadata"`` must be an
    object. Numbers are stored exactly as written (``0.00001`` stays ``"0.00001"``; an exponent is
    expanded, ``1e-05`` -> ``"0.00001"``) and compared as exact numbers by the verifier. Blank
    lines are skipped.

    Parameters
    ----------
    path : str or os.PathLike
        A local file (UTF-8).
    max_line_bytes : int
        Longer lines (so longer prompts) are refused before they are decoded, parsed or tokenised.
    max_problems : int
        A file of more lines is refused before any line is parsed (default 100,000).

    Returns
    -------
    list of Problem
        In file order; ``metadata["line"]`` is the 1-based line number.

    Raises
    ------
    ValueError
        Naming the file and line number for the first invalid line (bad JSON, undecodable bytes,
        nesting too deep, a number of more than 4300 digits, a line too long, an empty
        answer), or when the file is missing or holds no problems.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(
            f"data_path={path!r} is not a file; pass a local JSONL file with one "
            '{"prompt": ..., "answer": ...} object per line'
        )
    _check_line_count(path, max_problems)
    problems: list[Problem] = []
    for lineno, text in _read_lines(path, max_line_bytes):
        if not text.strip():
            continue
        where = f"{path}, line {lineno}"
        try:
            problems.append(_parse_row(text, where, lineno))
        except RecursionError:
            raise ValueError(f"{where}: JSON nested too deeply") from None
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
    max_line_bytes : int
        Longer lines of the file are refused unread (default 1,000,000).
    max_problems : int
        Most lines of each file (default 100,000), counted before any is parsed: the problems are
        validated at construction and held in memory (about 1 KB each).
    tokenizer : tokenizer object or None
        When given, :meth:`check_tokenizer` runs at once (the environment can also call it).
    unknown_chars : str
        What :meth:`check_tokenizer` does about characters the tokenizer cannot represent (they
        would silently become ``<unk>``): ``"warn"`` (once, with the count) or ``"error"``.
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
        max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
        max_problems: int = DEFAULT_MAX_PROBLEMS,
        tokenizer: Any = None,
        unknown_chars: str = "warn",
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
        for name, value in (("max_line_bytes", max_line_bytes), ("max_problems", max_problems)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if unknown_chars not in ("warn", "error"):
            raise ValueError(f"unknown_chars must be 'warn' or 'error', got {unknown_chars!r}")
        self.unknown_chars = unknown_chars
        self._checked_tokenizers: dict[int, int] = {}
        self.data_path, self.match, self.test_fraction, self.seed = (
            os.fspath(data_path),
            match,
            float(test_fraction),
            int(seed),
        )
        rows = load_jsonl_problems(data_path, max_line_bytes=max_line_bytes, max_problems=max_problems)
        if test_data_path is not None:
            test = load_jsonl_problems(
                test_data_path, max_line_bytes=max_line_bytes, max_problems=max_problems
            )
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
        if tokenizer is not None:
            self.check_tokenizer(tokenizer)

    def check_tokenizer(self, tokenizer: Any) -> int:
        """Count the characters of the prompts and answers that ``tokenizer`` cannot represent.

        Such characters would silently become ``<unk>``. Warns once per tokenizer with the count,
        the distinct characters and the first line holding one (``unknown_chars="warn"``), or
        raises ``ValueError`` (``"error"``). Tokenizers without an unknown token (byte-level BPE)
        represent everything.

        Returns
        -------
        int
            How many characters (occurrences) cannot be represented.
        """
        if id(tokenizer) in self._checked_tokenizers:
            return self._checked_tokenizers[id(tokenizer)]
        unk = getattr(tokenizer, "unk_token_id", None)
        counts: Counter[str] = Counter()
        problems = [p for ps in self._splits.values() for p in ps]
        for p in problems:
            counts.update(p.prompt)
            counts.update(p.answer)
        bad = set()
        if unk is not None:
            for char in counts:
                if unk in tokenizer.encode(char, add_special_tokens=False):
                    bad.add(char)
        n_bad = sum(counts[c] for c in bad)
        self._checked_tokenizers[id(tokenizer)] = n_bad
        if n_bad:
            line = min(p.metadata["line"] for p in problems if bad & set(p.prompt + p.answer))
            shown = "".join(sorted(bad))[:20]
            message = (
                f"{self.data_path}: {n_bad} characters ({len(bad)} distinct: {shown!r}; first at line {line}) cannot "
                "be represented by the tokenizer and would become <unk>; use a tokenizer that covers them or "
                "clean the file"
            )
            if self.unknown_chars == "error":
                raise ValueError(message)
            warnings.warn(message, stacklevel=2)
        return n_bad

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
