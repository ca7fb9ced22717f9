"""math-verify as a verifier option, cross-checked against our own parsers on generated problems.

Run ``python tests/test_math_verify.py`` to print the agreement table quoted in
docs/language_models.md.
"""

from __future__ import annotations

import signal
import time
from collections import Counter
from fractions import Fraction

import pytest

pytest.importorskip("math_verify")

from egsw_gym.envs.tasks import ArithmeticTask, GSM8KTask, make_task  # noqa: E402
from egsw_gym.envs.tasks import mathverify as mathverify_module  # noqa: E402
from egsw_gym.envs.tasks.mathverify import MathVerifier  # noqa: E402
from egsw_gym.envs.tasks.parsing import format_number, parse_number  # noqa: E402

#: perturbations of a gold answer on which both checkers must agree (plain numeric spellings).
NUMERIC = {
    "gold": lambda g: format_number(g),
    "plus_one": lambda g: format_number(g + 1),
    "negated": lambda g: format_number(-g) if g != 0 else "1",
    "times_ten": lambda g: format_number(g * 10) if g != 0 else "7",
    "decimal_zero": lambda g: f"{format_number(g)}.0" if g.denominator == 1 else format_number(g + 2),
    "dollar": lambda g: f"${format_number(g)}" if g >= 0 else None,
    "trailing_period": lambda g: f"{format_number(g)}.",
    "spaces": lambda g: f"  {format_number(g)} ",
}
#: spellings where the two differ (see the mathverify module docstring): family -> (maker, the
#: (ours, math-verify) verdicts always seen).
DIFFERENT = {
    # math-verify reads the last number of free text; ours wants a bare number
    "unit_word": (lambda g: f"{format_number(g)} apples", (False, True)),
    # math-verify evaluates the fraction; ours refuses "/" (a model must give the value)
    "fraction_expr": (lambda g: f"{format_number(2 * g)}/2", (False, True)),
    # "-$5": ours reads -5, math-verify does not see a number it can compare
    "negative_dollar": (lambda g: f"-${format_number(-g)}" if g < 0 else None, (True, False)),
}


def _problems():
    rg = [
        make_task("reasoning_gym", dataset=d, size=10, seed=0, num_test=n)
        for d, n in (("chain_sum", 120), ("basic_arithmetic", 120), ("gsm_symbolic", 60))
    ]
    tasks = [ArithmeticTask(seed=0, num_test=150), GSM8KTask(seed=0, num_test=150), *rg]
    for task in tasks:
        name = getattr(task, "dataset_name", task.name)
        for i in range(task.num_problems("test")):
            p = task.problem(i, "test")
            gold = parse_number(p.answer)
            if gold is not None:
                yield name, p.answer, gold


def agreement(limit: int | None = None) -> dict[str, Counter]:
    """Per perturbation family: counts of (ours, math-verify) verdict pairs."""
    mv = MathVerifier(time_limit=2.0)
    table: dict[str, Counter] = {k: Counter() for k in (*NUMERIC, *DIFFERENT)}
    for n, (_, answer, gold) in enumerate(_problems()):
        if limit is not None and n >= limit:
            break
        makers = {**NUMERIC, **{fam: make for fam, (make, _) in DIFFERENT.items()}}
        for fam, make in makers.items():
            cand = make(Fraction(gold))
            if cand is None:  # the family does not apply to this answer
                continue
            ours = parse_number(cand) == gold
            theirs, extra = mv.check(cand, answer)
            assert extra["scorer_error"] is None and not extra["scorer_timeout"], (cand, extra)
            table[fam][(ours, theirs)] += 1
    return table


def test_math_verify_agrees_with_our_parsers_on_numeric_answers():
    table = agreement(limit=400)
    for fam in NUMERIC:
        pairs = table[fam]
        n = sum(pairs.values())
        assert n == 400 or (fam == "dollar" and n > 300)
        assert pairs[(True, False)] == pairs[(False, True)] == 0, (fam, pairs)  # full agreement
        expected = (True, True) if fam not in ("plus_one", "negated", "times_ten") else (False, False)
        assert pairs[expected] == n, (fam, pairs)
    for fam, (_, expected) in DIFFERENT.items():  # the documented differences, every time
        assert sum(table[fam].values()) == table[fam][expected] > 0, (fam, table[fam])


def test_gsm8k_math_verify_option_scores_like_builtin():
    builtin, mv = GSM8KTask(seed=1, num_test=60), GSM8KTask(seed=1, num_test=60, verifier="math_verify")
    for i in range(60):
        p = builtin.problem(i, "test")
        assert mv.problem(i, "test") == p
        ref = builtin.reference_completion(p)
        wrong = ref.rsplit("####", 1)[0] + f"#### {int(p.answer) + 3}"
        for text, want in ((ref, 1.0), (wrong, 0.0), (ref.replace("####", "answer:"), 0.0)):
            assert builtin.score(text, p).score == mv.score(text, p).score == want
    r = mv.score(f"#### \\frac{{{int(p.answer)}}}{{1}}", p)
    assert r.correct and r.breakdown["scorer_errors_total"] == 0
    with pytest.raises(ValueError, match="verifier"):
        GSM8KTask(verifier="sympy")


def test_reasoning_gym_math_verify_option():
    task = make_task(
        "reasoning_gym", dataset="gsm_symbolic", size=10, seed=0, num_test=20, verifier="math_verify"
    )
    for i in range(20):
        p = task.problem(i, "test")
        assert task.score(p.answer, p).score == 1.0
        assert task.score(str(int(p.answer) + 1), p).score == 0.0


def _slow_verify(answer, gold):
    """math-verify's check, slow for the answer ``"SLOW"`` (runs in the worker; pickled by reference)."""
    if answer == "SLOW":
        time.sleep(3.0)
    return mathverify_module._real_verify(answer, gold)


def _interrupt(signum, frame):
    raise KeyboardInterrupt


@pytest.mark.timeout(60)
@pytest.mark.parametrize("where", ["poll", "sleep_then_late_answer"])
def test_an_interrupted_call_never_shifts_later_verdicts(monkeypatch, where):
    """Ctrl-C while the worker checks a slow answer: its late answer must never be scored against a
    later call (answers 18, 17, 18, 17 against gold 18 stay True, False, True, False)."""
    monkeypatch.setattr(mathverify_module, "_real_verify", mathverify_module._verify, raising=False)
    monkeypatch.setattr(mathverify_module, "_verify", _slow_verify)
    mv = MathVerifier(time_limit=30.0)
    assert mv.check("18", "18")[0]  # the worker is up
    old = signal.signal(signal.SIGALRM, _interrupt)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.3)
        with pytest.raises(KeyboardInterrupt):
            mv.check("SLOW", "18")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    if where == "sleep_then_late_answer":
        time.sleep(3.5)  # the slow answer would be waiting in the pipe by now
    verdicts = [mv.check(answer, "18") for answer in ("18", "17", "18", "17")]
    assert [v for v, _ in verdicts] == [True, False, True, False]
    assert all(extra["scorer_error"] is None and not extra["scorer_timeout"] for _, extra in verdicts)
    assert mv.scorer._worker.restarts == 1


def test_answers_are_matched_to_requests_by_id(monkeypatch):
    """A stale answer left in the pipe (the worker not restarted) is discarded by its request id."""
    mv = MathVerifier(time_limit=30.0)
    worker = mv.scorer._worker
    assert mv.check("18", "18")[0]
    worker._conn.send((-7, mathverify_module._verify, ("18", "18")))  # a request whose answer nobody awaits
    time.sleep(0.5)
    assert [mv.check(a, "18")[0] for a in ("17", "18", "17")] == [False, True, False]
    assert worker.stale_answers == 1 and worker.restarts == 0


@pytest.mark.parametrize("isolation", ["process", "signal"])
@pytest.mark.parametrize("limit", [0.0, 1e-4, 601.0, 1e8, 1e12, float("inf"), float("nan"), -1.0, True, "1"])
def test_a_time_limit_outside_1ms_to_10min_is_refused_at_construction(isolation, limit):
    with pytest.raises(ValueError, match=r"score_time_limit must be a number of seconds in \[0.001, 600\]"):
        MathVerifier(time_limit=limit, isolation=isolation)
    with pytest.raises(ValueError, match="score_time_limit"):
        GSM8KTask(verifier="math_verify", score_time_limit=limit)


@pytest.mark.parametrize("limit", [1e-3, 600.0])
def test_the_time_limit_bounds_themselves_are_accepted(limit):
    assert MathVerifier(time_limit=limit, isolation="signal").scorer.time_limit == limit


if __name__ == "__main__":
    for fam, pairs in agreement().items():
        total = sum(pairs.values())
        agree = pairs[(True, True)] + pairs[(False, False)]
        print(f"{fam:15s} n={total:5d} agree={agree / total:6.1%} {dict(pairs)}")
