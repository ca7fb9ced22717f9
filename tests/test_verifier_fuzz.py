"""Fuzzing the verifiers and the text environment with hostile input (issue 6).

Every verifier call must return a score in [0, 1] without raising, without calling
``eval``/``exec``/``compile``/``__import__`` (spied on around each call) and without touching the
file system (a sentinel file named by the injection strings must never appear), and must do
bounded work. No test here asserts a wall-clock time (a loaded machine would make that flaky): the
work is bounded by the code, and that is what is asserted (over-long inputs are rejected before
the verifier reads them; a third-party call that overruns its ``score_time_limit`` is cut by the
scorer and counted); ``pytest-timeout`` markers only catch a hang. The number of inputs each test
tried and the slowest call (informational) are printed at the end of the module (run with ``-s``);
tests/README.md records a run.
"""

from __future__ import annotations

import builtins
import contextlib
import json
import math
import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from egsw_gym.envs.tasks import (
    ArithmeticTask,
    CountdownTask,
    GSM8KTask,
    JSONLTask,
    ScoreResult,
    parse_countdown_expression,
    parse_number,
)
from egsw_gym.envs.tasks.countdown import CountdownParseError
from egsw_gym.envs.text_generation import TextGenerationEnv

COUNTS: Counter = Counter()
SLOWEST: dict[str, float] = {}
TIMEOUTS: Counter = Counter()
SENTINEL = Path(__file__).resolve().parent / "_fuzz_sentinel_must_not_exist"
#: a hang guard per test (pytest-timeout), never a performance assertion
HANG_GUARD_S = 600

INJECTIONS = [
    f"__import__('os').system('touch {SENTINEL}')",
    f"__import__('pathlib').Path('{SENTINEL}').touch()",
    f"open('{SENTINEL}', 'w').write('x')",
    f"exec(\"open('{SENTINEL}','w')\")",
    f"eval(\"__import__('os').system('touch {SENTINEL}')\")",
    "().__class__.__base__.__subclasses__()",
    "1+1; import os",
    "lambda: 0",
    "[x for x in range(10**9)]",
    "10**10**10",
    "9**9**9**9",
    "2**100000000",
    "1e999999",
    "NaN",
    "nan",
    "-inf",
    "Infinity",
    "1/0",
    "0/0",
    "#### __import__('os')",
    "\\boxed{__import__('os').getcwd()}",
    "#### 10**10**10",
    "\\boxed{" * 50,
    "}" * 50 + "\\boxed{1}",
    "#### " + "9" * 5000,
    "\\boxed{" + "9" * 5000 + "}",
    "${{7*7}}",
    "{{ self.__init__.__globals__ }}",
    "'; DROP TABLE problems; --",
    "\x00\x01\x02\x7f",
    "\u202e19\u202c",
    "١٩",
    "𝟏𝟗",
    "１９",
    # big-integer towers that a CAS evaluates in one uninterruptible C call (math-verify/sympy)
    "\\boxed{10^{10^{10}}}",
    "#### 9^{9^{9^{9}}}",
    "<think></think><answer>$10^{10^{10}}$</answer>",
    "$(10^{10})!$",
]

# Fragments repeated up to 1 MB: nested parentheses, digit walls, markers, unicode.
FRAGMENTS = [
    "(",
    ")",
    "((1+2)",
    "9",
    "1,",
    "#### ",
    "\\boxed{",
    "}",
    "+",
    "*",
    "-",
    "é",
    "🙂",
    "\n",
    " ",
    "\\",
    "$",
]


@contextmanager
def watch():
    """Spy on eval/exec/compile (refused) and __import__ (recorded) for the duration."""
    calls: list[str] = []
    saved = {name: getattr(builtins, name) for name in ("eval", "exec", "compile", "__import__")}

    def refuse(name):
        def spy(*args, **kwargs):
            calls.append(name)
            raise RuntimeError(f"{name} called by a verifier")

        return spy

    def record_import(*args, **kwargs):
        calls.append(f"__import__({args[0] if args else ''})")
        return saved["__import__"](*args, **kwargs)

    builtins.eval, builtins.exec, builtins.compile = refuse("eval"), refuse("exec"), refuse("compile")
    builtins.__import__ = record_import
    try:
        yield calls
    finally:
        for name, fn in saved.items():
            setattr(builtins, name, fn)


#: the time bound given to third-party scorers in the fuzz (the scorer enforces it: it interrupts
#: or kills an overrunning call and counts a timeout).
THIRD_PARTY_LIMIT_S = 0.2
#: tasks whose verifier calls into a third-party library (reasoning-gym, math-verify): eval/exec
#: inside that library is not ours to forbid (math-verify runs in a worker process, sympy's parser
#: evaluates generated code there), so they run without the spies; every other check applies.
THIRD_PARTY: set[str] = set()


def _third_party_tasks() -> dict:
    out = {}
    try:
        import reasoning_gym  # noqa: F401
    except ImportError:
        pass
    else:
        from egsw_gym.envs.tasks import ReasoningGymTask

        lim = {"score_time_limit": THIRD_PARTY_LIMIT_S, "size": 50, "num_test": 10}
        out["rg-gsm_symbolic"] = ReasoningGymTask("gsm_symbolic", **lim)
        out["rg-chain_sum-r1"] = ReasoningGymTask("chain_sum", answer_format="r1", format_weight=0.2, **lim)
        out["rg-leg_counting-boxed"] = ReasoningGymTask("leg_counting", answer_format="boxed", **lim)
    try:
        import math_verify  # noqa: F401
    except ImportError:
        pass
    else:
        out["gsm8k-math_verify"] = GSM8KTask(verifier="math_verify", score_time_limit=THIRD_PARTY_LIMIT_S)
        if "rg-gsm_symbolic" in out:
            from egsw_gym.envs.tasks import ReasoningGymTask

            out["rg-gsm_symbolic-math_verify"] = ReasoningGymTask(
                "gsm_symbolic",
                answer_format="boxed",
                verifier="math_verify",
                score_time_limit=THIRD_PARTY_LIMIT_S,
                size=50,
                num_test=10,
            )
    THIRD_PARTY.update(out)
    return out


@pytest.fixture(scope="module")
def tasks(tmp_path_factory):
    path = tmp_path_factory.mktemp("fuzz") / "data.jsonl"
    rows = [{"prompt": f"What is {i}*3?", "answer": 3 * i} for i in range(30)] + [
        {"prompt": f"Say word {i}", "answer": f"word{i}"} for i in range(10)
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    out = {
        "arithmetic": ArithmeticTask(),
        "arithmetic-fw": ArithmeticTask(digits=3, operators="+-*", allow_negative=True, format_weight=0.3),
        "countdown": CountdownTask(),
        "gsm8k": GSM8KTask(format_weight=0.1),
        "jsonl": JSONLTask(path, test_fraction=0.3),
    }
    out.update(_third_party_tasks())
    problems = {name: [t.problem(i) for i in range(3)] for name, t in out.items()}
    yield out, problems
    assert not SENTINEL.exists()


@pytest.fixture(scope="module", autouse=True)
def report():
    yield
    print("\nfuzz inputs per test:", dict(COUNTS))
    print("slowest call per test (ms):", {k: round(1000 * v, 2) for k, v in SLOWEST.items()})
    print("third-party scorer timeouts/errors:", dict(TIMEOUTS))


def check_all(tasks, completion, label: str):
    """Score ``completion`` with every task and problem; assert the safety contract."""
    task_map, problems = tasks
    for name, task in task_map.items():
        for problem in problems[name]:
            # Third-party scorers run unspied: a worker process forked under the spies would inherit
            # them, and their libraries' own eval (sympy) is theirs; the sentinel check still holds.
            with watch() if name not in THIRD_PARTY else contextlib.nullcontext([]) as calls:
                start = time.perf_counter()
                result = task.score(completion, problem)
                elapsed = time.perf_counter() - start
            if name not in THIRD_PARTY:
                assert calls == [], (name, calls)
            else:  # no timeout missed, no error escaped: a scorer exception would be counted here
                assert result.breakdown.get("scorer_error") is None, (name, result.breakdown)
                TIMEOUTS[f"{name} timeouts"] += bool(result.breakdown.get("scorer_timeout"))
            assert isinstance(result, ScoreResult)
            assert (
                isinstance(result.score, float) and math.isfinite(result.score) and 0.0 <= result.score <= 1.0
            )
            assert "error" not in result.breakdown, result.breakdown
            assert isinstance(result.correct, bool) and isinstance(result.format_ok, bool)
            assert result.parsed is None or isinstance(result.parsed, str)
            # the size cap, not the clock, bounds the work
            if isinstance(completion, str) and len(completion) > task.max_completion_chars:
                assert result.breakdown.get("too_long"), (name, result.breakdown)
            SLOWEST[label] = max(SLOWEST.get(label, 0.0), elapsed)
    COUNTS[label] += 1
    assert not SENTINEL.exists()


HOSTILE = st.one_of(
    st.sampled_from(INJECTIONS),
    st.integers(0, 20_000).map(lambda d: "(" * d + "1" + ")" * d),
    st.integers(0, 20_000).map(lambda d: "(" * d),
    st.integers(1, 100_000).map(lambda k: "9" * k),
    st.integers(1, 5_000).map(lambda k: "#### " + "1," * k + "000"),
    st.integers(1, 3_000).map(lambda k: "\\boxed{" * k + "7" + "}" * k),
    st.tuples(st.sampled_from(FRAGMENTS), st.integers(1, 1_000_000)).map(
        lambda t: t[0] * (t[1] // len(t[0]))
    ),
    st.integers(-(10**60), 10**60).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.decimals(allow_nan=True, allow_infinity=True).map(str),
)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
@given(text=st.text(max_size=3000))
@pytest.mark.timeout(HANG_GUARD_S)
def test_arbitrary_unicode(tasks, text):
    check_all(tasks, text, "arbitrary unicode text")


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
@given(text=HOSTILE)
@pytest.mark.timeout(HANG_GUARD_S)
def test_hostile_constructions(tasks, text):
    check_all(tasks, text, "hostile constructions (injection, nesting, huge numbers, 1 MB repeats)")


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
@given(
    parts=st.lists(
        st.one_of(HOSTILE.filter(lambda s: len(s) < 2000), st.text(max_size=50), st.sampled_from(FRAGMENTS)),
        max_size=12,
    )
)
@pytest.mark.timeout(HANG_GUARD_S)
def test_mixtures(tasks, parts):
    check_all(tasks, "".join(parts), "mixtures of fragments, injections and unicode")


@settings(max_examples=100, deadline=None)
@given(
    data=st.one_of(
        st.binary(max_size=2000), st.none(), st.integers(), st.lists(st.text(max_size=5), max_size=3)
    )
)
@pytest.mark.timeout(HANG_GUARD_S)
def test_non_strings(tasks, data):
    check_all(tasks, data, "bytes and non-strings")


@settings(max_examples=300, deadline=None)
@given(
    expr=st.text(alphabet="0123456789+-*/() .e^", max_size=300),
)
def test_countdown_parser_only_raises_its_own_error(expr):
    with watch() as calls:
        try:
            value, used = parse_countdown_expression(expr, [3, 7, 12, 25])
        except CountdownParseError:
            pass
        else:
            assert Counter(used) <= Counter([3, 7, 12, 25])
            assert value.denominator >= 1
    assert calls == []
    COUNTS["countdown parser, arithmetic-alphabet strings"] += 1


@settings(max_examples=300, deadline=None)
@given(text=st.one_of(st.text(max_size=80), st.text(alphabet="0123456789,.$-+ eE", max_size=60)))
def test_parse_number_never_raises(text):
    value = parse_number(text)
    assert value is None or value.denominator >= 1
    COUNTS["parse_number"] += 1


@pytest.mark.parametrize(
    "text",
    [
        "(" * 1_000_000,
        "9" * 1_000_000,
        "é🙂" * 333_333,
        "#### " * 200_000,
        "\\boxed{" * 140_000,
        ("(" * 500_000) + "1" + (")" * 500_000),
    ],
    ids=["parens", "digits", "unicode", "hashes", "boxed", "nested"],
)
def test_one_megabyte_is_rejected_unread(tasks, text, monkeypatch):
    """Over ``max_completion_chars``: scored 0 as ``too_long`` without the verifier reading it."""
    task_map, problems = tasks
    for name, task in task_map.items():
        read: list[str] = []
        monkeypatch.setattr(task, "_score", lambda *a, _n=name, _read=read, **k: _read.append(_n))
        result = task.score(text, problems[name][0])
        assert result.score == 0.0 and result.breakdown.get("too_long"), (name, result.breakdown)
        assert read == [], f"{name}: the verifier read a completion over max_completion_chars"
        monkeypatch.undo()
    COUNTS["1 MB strings"] += 1


@pytest.mark.timeout(HANG_GUARD_S)
def test_near_the_length_cap(tasks):
    """The worst inputs the verifiers do read (just under ``max_completion_chars``): no error, a score in [0, 1]."""
    task_map, problems = tasks
    for name, task in task_map.items():
        n = task.max_completion_chars
        for text in ("(" * (n - 1), "9" * n, "#### " + "9" * (n - 5), "\\boxed{" * (n // 7), "1+" * (n // 2)):
            start = time.perf_counter()
            result = task.score(text[:n], problems[name][0])
            SLOWEST["inputs at the length cap"] = max(
                SLOWEST.get("inputs at the length cap", 0.0), time.perf_counter() - start
            )
            assert "error" not in result.breakdown and 0.0 <= result.score <= 1.0, name
            assert result.breakdown.get("scorer_error") is None, (name, result.breakdown)
            COUNTS["inputs at the length cap"] += 1


_ENVS: dict[str, TextGenerationEnv] = {}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    task=st.sampled_from(["arithmetic", "countdown", "gsm8k"]),
    seed=st.integers(0, 2**31 - 1),
    tokens=st.lists(st.integers(0, 99), min_size=1, max_size=80),
)
def test_env_random_token_streams(task, seed, tokens):
    """Any token stream (specials included) gives a finite reward in [0, 1] at the end, never an error."""
    env = _ENVS.setdefault(task, TextGenerationEnv(task))
    env.reset(seed=seed)
    with watch() as calls:
        for tok in tokens:
            _, reward, term, trunc, info = env.step(tok)
            if term or trunc:
                assert 0.0 <= reward <= 1.0 and reward == info["score"]
                assert "error" not in info
                break
            assert reward == 0.0
    assert calls == []
    COUNTS["env: random token streams"] += 1


def test_sentinel_never_created():
    assert not SENTINEL.exists()


class _EvilTask(ArithmeticTask):
    """Calls eval: the spies must catch it (checks the checker)."""

    def _score(self, completion, problem):
        eval("1+1")  # noqa: S307 - deliberately evil
        return super()._score(completion, problem)


def test_the_spies_catch_a_verifier_that_evaluates():
    task = _EvilTask()
    with watch() as calls:
        result = task.score("19", task.problem(0))
    assert calls == ["eval"] and result.score == 0.0 and "error" in result.breakdown


@pytest.mark.timeout(HANG_GUARD_S)
def test_cas_towers_hit_the_time_bound_not_the_rollout(tasks):
    """math-verify spends minutes in one C call on ``$10^{10^{10}}$`` (no signal stops it): the
    worker process is killed at the bound, the score is 0, the timeout is counted, and the next
    call (a fresh worker) still verifies correctly."""
    task_map, problems = tasks
    names = [n for n in task_map if "math_verify" in n]
    if not names:
        pytest.skip("math-verify not installed")
    for name in names:
        task, problem = task_map[name], problems[name][0]
        right = f"#### {problem.answer}" if "gsm8k" in name else f"\\boxed{{{problem.answer}}}"
        before = task._math_verify.scorer.timeouts
        for text in ("#### $10^{10^{10}}$", "\\boxed{$9^{9^{9^{9}}}$}"):
            # A correct answer first: after a kill it starts the fresh worker (not the tower's time)
            # and shows that the replacement verifies correctly.
            good = task.score(right, problem)
            assert good.correct, (name, good.breakdown)
            result = task.score(text, problem)  # cut by the scorer at its bound (it would run for minutes)
            assert result.score == 0.0, (name, text, result.breakdown)
            COUNTS["CAS towers"] += 1
        assert task._math_verify.scorer.timeouts > before, name
        assert task.score(right, problem).correct, name
