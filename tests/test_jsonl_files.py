"""Issue 11, section 2: hostile and sloppy JSONL task files give a named error (file and line) or an
exact answer, never a silent wrong result; sizes are checked before memory is spent."""

from __future__ import annotations

import json
import tracemalloc
import warnings

import gymnasium as gym
import pytest

from egsw_gym.envs.tasks import JSONLTask
from egsw_gym.envs.tokenizer import load_tokenizer

GOOD = '{"prompt": "What is 1+1?", "answer": "2"}'


def write(path, lines: list[str | bytes]) -> str:
    path.write_bytes(b"\n".join(x if isinstance(x, bytes) else x.encode() for x in lines) + b"\n")
    return str(path)


def test_a_50_mb_prompt_line_is_refused_unread(tmp_path):
    path = tmp_path / "huge.jsonl"
    with open(path, "wb") as fh:
        fh.write(GOOD.encode() + b"\n" + b'{"prompt": "' + b"x" * (50 * 2**20) + b'", "answer": "1"}\n')
    tracemalloc.start()
    with pytest.raises(ValueError, match=r"huge\.jsonl, line 2: longer than max_line_bytes"):
        JSONLTask(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 5 * 2**20, peak  # the line is refused from its length, never read whole
    assert JSONLTask(path, max_line_bytes=60 * 2**20, test_fraction=0.0).num_problems() == 2


@pytest.mark.parametrize(
    ("answer", "stored", "right", "wrong"),
    [
        ("0.00001", "0.00001", ["0.00001", "#### 0.000010"], ["1e-05", "0.0001"]),
        ("1e-05", "0.00001", ["0.00001"], ["1e-05"]),
        ("2.5E+3", "2500", ["2500", "2,500"], ["2.5E+3"]),
        ("10.50", "10.50", ["10.5", "10.50"], ["10.05"]),
        ("-3", "-3", ["-3"], ["3"]),
        ('"1,234"', "1,234", ["1234", "1,234"], ["1,23"]),
    ],
)
def test_numeric_answers_are_stored_as_written_and_compared_as_numbers(
    tmp_path, answer, stored, right, wrong
):
    task = JSONLTask(
        write(tmp_path / "n.jsonl", [f'{{"prompt": "q", "answer": {answer}}}']), test_fraction=0.0
    )
    problem = task.problem(0)
    assert problem.answer == stored
    assert all(task.score(c, problem).correct for c in right)
    assert not any(task.score(c, problem).correct for c in wrong)
    assert task.score(task.reference_completion(problem), problem).correct


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"prompt": "q", "answer": ""}', "line 2: 'answer' is empty"),
        ('{"prompt": "q", "answer": "   "}', "line 2: 'answer' is empty"),
        ('{"prompt": "q", "answer": 1e999}', "line 2: 'answer' 1e999 has no plain decimal form"),
        ('{"prompt": "q", "answer": ' + "9" * 5000 + "}", "line 2: 'answer' is a 5000-character number"),
        ('{"prompt": "q", "answer": ' + "9" * 60 + "}", "line 2: 'answer' 9999.* can never be matched"),
        (
            '{"prompt": "q", "answer": "1", "metadata": {"n": ' + "7" * 5000 + "}}",
            "line 2: a 5000-digit integer",
        ),
        (
            '{"prompt": "q", "answer": "1", "metadata": ' + "[" * 100_000 + "]" * 100_000 + "}",
            "line 2: JSON nested too deeply",
        ),
        (b'{"prompt": "q\xff\xfe", "answer": "1"}', "line 2: not valid UTF-8"),
    ],
    ids=[
        "empty",
        "blank",
        "exponent_overflow",
        "digits_5000",
        "digits_60",
        "metadata_int",
        "deep",
        "undecodable",
    ],
)
def test_bad_lines_name_file_and_line(tmp_path, line, message):
    path = write(tmp_path / "bad.jsonl", [GOOD, line])
    with pytest.raises(ValueError, match=r"bad\.jsonl, " + message):
        JSONLTask(path)


def test_a_byte_order_mark_is_accepted(tmp_path):
    path = write(tmp_path / "bom.jsonl", [b"\xef\xbb\xbf" + GOOD.encode()])
    assert JSONLTask(path, test_fraction=0.0).problem(0).prompt == "What is 1+1?"


def test_characters_the_tokenizer_cannot_represent_are_reported_once_with_a_count(tmp_path):
    tokenizer = load_tokenizer(None)
    path = write(tmp_path / "u.jsonl", [GOOD, json.dumps({"prompt": "Prix: 5€ ou 7€?", "answer": "12€"})])
    task = JSONLTask(path, test_fraction=0.0)
    with pytest.warns(
        UserWarning, match=r"u\.jsonl: 3 characters \(1 distinct: '€'; first at line 2\).*<unk>"
    ):
        assert task.check_tokenizer(tokenizer) == 3
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert task.check_tokenizer(tokenizer) == 3  # reported once per tokenizer
    with pytest.raises(ValueError, match="cannot be represented"):
        JSONLTask(path, tokenizer=tokenizer, unknown_chars="error")
    assert JSONLTask(write(tmp_path / "ok.jsonl", [GOOD]), test_fraction=0.0).check_tokenizer(tokenizer) == 0


def test_the_environment_reports_characters_its_tokenizer_cannot_represent(tmp_path):
    """The env checks its own tokenizer against the file: the same count, raised when asked to."""
    path = write(tmp_path / "u.jsonl", [GOOD, json.dumps({"prompt": "Prix: 5€ ou 7€?", "answer": "12€"})])
    with pytest.warns(UserWarning, match=r"3 characters \(1 distinct: '€'"):
        gym.make("egsw/JSONL-v0", data_path=path, test_fraction=0.0)
    with pytest.raises(ValueError, match="cannot be represented"):
        gym.make("egsw/JSONL-v0", data_path=path, test_fraction=0.0, unknown_chars="error")
