"""Tasks: hand-checked verifier cases, deterministic problems, disjoint splits, JSONL validation."""

from __future__ import annotations

import json
from fractions import Fraction

import numpy as np
import pytest

from egsw_gym.envs.tasks import (
    TRAIN_SIZE,
    ArithmeticTask,
    CountdownTask,
    GSM8KTask,
    JSONLTask,
    Problem,
    extract_final_answer,
    make_task,
    parse_countdown_expression,
    parse_number,
)
from egsw_gym.envs.tasks.countdown import MAX_DEPTH, CountdownParseError

ALL_GENERATED = [ArithmeticTask, CountdownTask, GSM8KTask]


# ------------------------------------------------------------------------------------- parsing
@pytest.mark.parametrize(
    "text, value",
    [
        ("42", 42),
        (" -7 ", -7),
        ("1,234", 1234),
        ("$18", 18),
        ("-$3.50", Fraction(-7, 2)),
        ("$-3", -3),
        ("18.", 18),
        ("18.00", 18),
        (".5", Fraction(1, 2)),
        ("+4", 4),
    ],
)
def test_parse_number_accepts(text, value):
    assert parse_number(text) == value


@pytest.mark.parametrize(
    "text",
    [
        "",
        " ",
        "$",
        ".",
        "1e5",
        "nan",
        "NaN",
        "inf",
        "1/2",
        "1,23",
        "12,3456",
        "--3",
        "1.2.3",
        "١٩",
        "9" * 49,
        "10**10**10",
        "4 5",
    ],
)
def test_parse_number_refuses(text):
    assert parse_number(text) is None


def test_extract_final_answer():
    assert extract_final_answer("3*4=12.\n#### 12") == ("12", "####")
    assert extract_final_answer("so \\boxed{1,234} done") == ("1,234", "boxed")
    assert extract_final_answer("#### 5\nlater \\boxed{7}") == ("7", "boxed")  # the last marker wins
    assert extract_final_answer("\\boxed{3} then #### 4 \nmore") == ("4", "####")
    assert extract_final_answer("\\boxed{\\frac{1}{2}}") == ("\\frac{1}{2}", "boxed")
    assert extract_final_answer("no marker 12") == (None, None)
    assert extract_final_answer("\\boxed{12") == (None, None)


# ------------------------------------------------------------------------------------ arithmetic
def test_arithmetic_prompt_format_and_hand_checked_scores():
    task = ArithmeticTask()
    p = Problem("12+7=", "19", {"index": 0, "split": "train"})
    cases = {
        "19": (1.0, True, True),
        " 19\n": (1.0, True, True),
        "19.": (1.0, True, False),
        "$19": (1.0, True, False),
        "20": (0.0, False, True),
        "19 apples": (0.0, False, False),
        "": (0.0, False, False),
        "-19": (0.0, False, True),
    }
    for completion, (score, correct, fmt) in cases.items():
        r = task.score(completion, p)
        assert (r.score, r.correct, r.format_ok) == (score, correct, fmt), completion
    fw = ArithmeticTask(format_weight=0.2)
    assert fw.score("20", p).score == pytest.approx(0.2)
    assert fw.score("19.", p).score == pytest.approx(0.8)
    assert fw.score("19", p).score == 1.0
    for i in range(200):
        q = task.problem(i)
        assert q.prompt.endswith("=") and len(q.prompt) <= task.max_prompt_chars()
        a, op, b = q.metadata["a"], q.metadata["operator"], q.metadata["b"]
        assert q.prompt == f"{a}{op}{b}=" and int(q.answer) == a + b
        assert len(q.answer) + 1 <= task.suggested_max_new_tokens


def test_arithmetic_operators_and_negative():
    task = ArithmeticTask(digits=1, operators="-*")
    ops = {task.problem(i).metadata["operator"] for i in range(100)}
    assert ops == {"-", "*"}
    assert all(int(task.problem(i).answer) >= 0 for i in range(200))
    neg = ArithmeticTask(digits=1, operators="-", allow_negative=True)
    assert any(int(neg.problem(i).answer) < 0 for i in range(200))


@pytest.mark.parametrize(
    "kwargs, arg",
    [
        ({"digits": 0}, "digits"),
        ({"digits": 10}, "digits"),
        ({"operators": "/"}, "operators"),
        ({"operators": ""}, "operators"),
        ({"format_weight": 1.5}, "format_weight"),
        ({"seed": -1}, "seed"),
        ({"num_test": 0}, "num_test"),
    ],
)
def test_arithmetic_bad_kwargs(kwargs, arg):
    with pytest.raises(ValueError, match=arg):
        ArithmeticTask(**kwargs)


def test_make_task_errors():
    with pytest.raises(ValueError, match="task must be one of"):
        make_task("poetry")
    with pytest.raises(ValueError, match="allowed"):
        make_task("arithmetic", digitz=3)
    with pytest.raises(ValueError, match="data_path"):
        make_task("arithmetic", data_path="x.jsonl")
    with pytest.raises(ValueError, match="already a Task"):
        make_task(ArithmeticTask(), digits=3)
    with pytest.raises(ValueError, match="data_path"):
        make_task("jsonl")


# ------------------------------------------------------------------------------------- countdown
def test_countdown_parser_hand_checked():
    nums = [3, 7, 12]
    assert parse_countdown_expression("(12-7)*3", nums) == (Fraction(15), [12, 7, 3])
    assert parse_countdown_expression("12/3+7", nums)[0] == 11
    assert parse_countdown_expression("7/3", nums)[0] == Fraction(7, 3)  # exact rationals
    assert parse_countdown_expression(" ( ( 3 ) ) ", nums)[0] == 3
    assert parse_countdown_expression("3*3", [3, 3])[0] == 9  # a number given twice may be used twice


@pytest.mark.parametrize(
    "expression, reason",
    [
        ("3*3", "not available"),  # reuse
        ("12+12", "not available"),
        ("5+3", "not available"),  # not given
        ("3+x", "unexpected character"),
        ("__import__('os')", "unexpected character"),
        ("12/(7-7)", "not available"),  # 7 reused before the division is reached
        ("3**7", "expected a number"),
        ("-3+7", "expected a number"),  # no unary minus
        ("(3+7", "unbalanced"),
        ("3+7)", "unexpected"),
        ("", "empty"),
        ("07+3", "leading zero"),
        ("3 7", "unexpected"),
        ("1e3", "unexpected character"),
        ("3.5+7", "unexpected character"),
    ],
)
def test_countdown_parser_rejects(expression, reason):
    with pytest.raises(CountdownParseError, match=reason):
        parse_countdown_expression(expression, [3, 7, 12])


def test_countdown_division_by_zero_and_depth():
    with pytest.raises(CountdownParseError, match="division by zero"):
        parse_countdown_expression("3/(7-7)", [3, 7, 7])
    ok = "(" * MAX_DEPTH + "3" + ")" * MAX_DEPTH
    assert parse_countdown_expression(ok, [3])[0] == 3
    with pytest.raises(CountdownParseError, match="deeper"):
        parse_countdown_expression("(" + ok + ")", [3])
    with pytest.raises(CountdownParseError, match="longer"):
        parse_countdown_expression("3" + "+3" * 200, [3])


def test_countdown_scores_and_references():
    task = CountdownTask()
    p = Problem("", "15", {"numbers": [3, 7, 12], "target": 15, "solution": "(12-7)*3"})
    assert task.score("(12-7)*3", p).score == 1.0
    assert task.score("(12-7)*3 = 15", p).correct
    assert task.score(" 12+3\nexplanation 7*7", p).correct
    r = task.score("12+7", p)
    assert (r.correct, r.format_ok, r.breakdown["value"]) == (False, True, "19")
    r = task.score("12/0", p)
    assert not r.format_ok and "not available" in r.breakdown["reason"]
    for i in range(300):
        q = task.problem(i)
        ref = task.reference_completion(q)
        assert task.score(ref, q).score == 1.0, (q, ref)
        assert 1 <= int(q.answer) <= task.max_target
        assert len(q.prompt) <= task.max_prompt_chars()
        assert len(ref) + 1 <= task.suggested_max_new_tokens


# ----------------------------------------------------------------------------------------- gsm8k
def test_gsm8k_scores():
    task = GSM8KTask()
    p = Problem("q\n", "1234", {"solution": "#### 1234"})
    assert task.score("so 1000+234=1234.\n#### 1234", p).score == 1.0
    assert task.score("#### 1,234", p).correct
    assert task.score("#### $1,234.", p).correct
    assert task.score("The answer is \\boxed{1234}.", p).correct
    assert task.score("#### 1234.00", p).correct
    r = task.score("the answer is 1234", p)  # no marker: not correct
    assert (r.correct, r.format_ok) == (False, False)
    r = task.score("#### 1235", p)
    assert (r.correct, r.format_ok, r.parsed) == (False, True, "1235")
    assert GSM8KTask(format_weight=0.1).score("#### 7", p).score == pytest.approx(0.1)


def test_gsm8k_kinds_and_references():
    task = GSM8KTask()
    problems = [task.problem(i) for i in range(600)]
    assert {p.metadata["kind"] for p in problems} == {
        "shopping",
        "speed",
        "bags",
        "savings",
        "ages",
        "garden",
    }
    for p in problems:
        ref = task.reference_completion(p)
        assert task.score(ref, p).score == 1.0
        assert int(p.answer) >= 0
        assert len(p.prompt) <= task.max_prompt_chars()
        assert len(ref) + 1 <= task.suggested_max_new_tokens
    assert {p.metadata["kind"] for p in (GSM8KTask(kinds=["ages"]).problem(i) for i in range(20))} == {"ages"}
    with pytest.raises(ValueError, match="kinds"):
        GSM8KTask(kinds=["poems"])


# ---------------------------------------------------------------------------------------- splits
@pytest.mark.parametrize("cls", ALL_GENERATED)
def test_generated_splits_are_disjoint_and_deterministic(cls):
    task = cls()
    test_prompts = {task.problem(i, "test").prompt for i in range(task.num_problems("test"))}
    assert len(test_prompts) == task.num_problems("test") == 500  # de-duplicated
    train = [task.problem(i, "train") for i in range(3000)]
    assert not test_prompts & {p.prompt for p in train}
    assert task.num_problems("train") == TRAIN_SIZE
    again = cls()
    assert [again.problem(i).prompt for i in range(50)] == [p.prompt for p in train[:50]]
    assert again.problem(7, "test") == task.problem(7, "test")
    other_seed = cls(seed=1)
    assert [other_seed.problem(i, "test").prompt for i in range(5)] != [
        task.problem(i, "test").prompt for i in range(5)
    ]


def test_small_space_keeps_train_nonempty_and_disjoint():
    task = ArithmeticTask(digits=1, operators="+")  # only 100 distinct prompts
    n_test = task.num_problems("test")
    assert n_test == 10  # a fifth of the lower bound 50
    test_prompts = {task.problem(i, "test").prompt for i in range(n_test)}
    train_prompts = {task.problem(i, "train").prompt for i in range(2000)}
    assert not test_prompts & train_prompts
    assert len(train_prompts) == 100 - n_test  # every other prompt still reachable


def test_sample_uses_rng_and_index():
    task = ArithmeticTask()
    a = task.sample(np.random.default_rng(3))
    b = task.sample(3)
    assert a == b and a == task.problem(a.metadata["index"])
    t = task.sample(0, "test")
    assert t.metadata["split"] == "test" and t == task.problem(t.metadata["index"], "test")
    with pytest.raises(ValueError, match="split"):
        task.sample(0, "validation")
    with pytest.raises(ValueError, match="prompt index"):
        task.problem(500, "test")
    with pytest.raises(ValueError, match="prompt index"):
        task.problem(-1)


# ----------------------------------------------------------------------------------------- jsonl
def _write(path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_jsonl_task(tmp_path):
    rows = [json.dumps({"prompt": f"What is {i}+1?", "answer": i + 1}) for i in range(200)]
    rows.insert(5, "")  # blank lines are skipped
    rows.append(json.dumps({"prompt": "Capital of France?", "answer": "Paris"}))
    path = _write(tmp_path / "data.jsonl", rows)
    task = JSONLTask(path, test_fraction=0.2)
    n_train, n_test = task.num_problems("train"), task.num_problems("test")
    assert n_train + n_test == 201 and 20 <= n_test <= 60
    train = {task.problem(i, "train").prompt for i in range(n_train)}
    test = {task.problem(i, "test").prompt for i in range(n_test)}
    assert not train & test
    p = next(
        task.problem(i, s)
        for s in ("train", "test")
        for i in range(task.num_problems(s))
        if task.problem(i, s).prompt == "What is 9+1?"
    )
    assert (
        task.score("10", p).correct and task.score("#### 10.", p).correct and not task.score("11", p).correct
    )
    assert task.score(task.reference_completion(p), p).score == 1.0
    q = next(
        task.problem(i, s)
        for s in ("train", "test")
        for i in range(task.num_problems(s))
        if task.problem(i, s).answer == "Paris"
    )
    assert task.score(" Paris\n", q).correct and not task.score("paris", q).correct
    assert q.metadata["line"] == 202  # 1-based line numbers, blank line included


def test_jsonl_separate_test_file(tmp_path):
    train = _write(
        tmp_path / "train.jsonl", [json.dumps({"prompt": f"p{i}", "answer": str(i)}) for i in range(10)]
    )
    test = _write(
        tmp_path / "test.jsonl", [json.dumps({"prompt": f"p{i}", "answer": str(i)}) for i in (2, 3, 99)]
    )
    task = JSONLTask(train, test_data_path=test)
    assert task.num_problems("train") == 8 and task.num_problems("test") == 3


@pytest.mark.parametrize(
    "line, message",
    [
        ("{not json", "line 2: invalid JSON"),
        ('["a", "b"]', "line 2: expected a JSON object"),
        ('{"prompt": "x"}', "line 2: missing key"),
        ('{"prompt": "", "answer": "1"}', "line 2: 'prompt' must be a non-empty string"),
        ('{"prompt": "x", "answer": null}', "line 2: 'answer' must be a string or a number"),
        ('{"prompt": "x", "answer": true}', "line 2: 'answer' must be a string or a number"),
        ('{"prompt": "x", "answer": NaN}', "line 2: 'answer' must be finite"),
        ('{"prompt": "x", "answer": "1", "metadata": 3}', "line 2: 'metadata' must be an object"),
    ],
)
def test_jsonl_validation_names_the_line(tmp_path, line, message):
    path = _write(tmp_path / "bad.jsonl", ['{"prompt": "ok", "answer": "1"}', line])
    with pytest.raises(ValueError, match=message):
        JSONLTask(path)


def test_jsonl_missing_and_empty(tmp_path):
    with pytest.raises(ValueError, match="not a file"):
        JSONLTask(tmp_path / "nope.jsonl")
    with pytest.raises(ValueError, match="no problems"):
        JSONLTask(_write(tmp_path / "empty.jsonl", ["", "  "]))
    with pytest.raises(ValueError, match="match"):
        JSONLTask(_write(tmp_path / "one.jsonl", ['{"prompt": "a", "answer": 1}']), match="fuzzy")


@pytest.mark.parametrize("cls", [ArithmeticTask, CountdownTask, GSM8KTask])
def test_recent_problem_cache_returns_what_generation_returns(cls):
    """Train problems served from the LRU of recent ones equal freshly generated ones; it stays bounded."""
    from egsw_gym.envs.tasks.base import _RECENT_PROBLEMS

    warm, fresh = cls(seed=3), cls(seed=3)
    indices = [int(i) for i in np.random.default_rng(0).integers(0, 2**31 - 1, _RECENT_PROBLEMS + 50)]
    for i in indices:
        warm.problem(i)
    assert len(warm._recent) == _RECENT_PROBLEMS
    for i in indices[:60] + indices[-60:]:  # evicted ones are regenerated, recent ones come from the LRU
        assert warm.problem(i) == fresh.problem(i)
