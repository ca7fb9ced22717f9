"""Time- and size-bounded calls into third-party scorers (reasoning-gym's ``score_answer``, math-verify).

Why a timer and size caps rather than a process pool: a scorer runs once per finished episode,
thousands of times per update, and a worker process would add an IPC round trip (and pickling of
the problem) to every call. The bound is instead built from two parts:

1. **Size caps before the call** (the caller's job): completions over ``max_completion_chars``
   and extracted answers over ``max_answer_chars`` are rejected unread, so the work a scorer can be
   asked to do is bounded up front. This also bounds the parts a signal cannot interrupt (a single
   C-level call such as one regular-expression match over the capped answer).
2. **A wall-clock timer** (:func:`call_with_time_limit`): on the main thread of a POSIX process,
   ``signal.setitimer(ITIMER_REAL)`` raises :class:`ScoreTimeout` inside the scorer after
   ``seconds``; Python checks signals between bytecodes, so pure-Python loops (sympy
   simplification, a slow parser) are interrupted. :class:`ScoreTimeout` derives from
   ``BaseException`` so a scorer's ``except Exception`` cannot swallow it. An outer
   ``ITIMER_REAL`` (pytest-timeout, math-verify's own alarm) is saved and re-armed afterwards.

Off the main thread (or without ``setitimer``) no signal can be delivered: the call runs with the
size caps only and :func:`call_with_time_limit` reports ``timed=False``. Environments normally run
on the main thread of their process (SB3's ``SubprocVecEnv`` workers included).

A signal is only handled between bytecodes, so it cannot stop one long C-level call. math-verify
is exposed to exactly that: sympy turns ``$10^{10^{10}}$`` into a big-integer power that runs for
minutes inside one C call. For such scorers
``isolation="process"`` runs every call in a persistent worker process (forked once, so nothing
is re-imported) and kills and replaces the worker when a call overruns: the bound then holds for
any call, at the price of a pipe round trip per call. A replaced worker is forked and warmed up
(one unbounded warm-up call) before it serves, so the call after a kill waits for that restart
too, but no scorer work runs past ``time_limit``.

The pipe protocol cannot fall out of step: every request carries an id and only the answer with
that id is taken (an answer to an earlier request is discarded and counted), and a call that does
not complete (its time bound, a ``KeyboardInterrupt`` in a notebook, a broken pipe) kills the
worker, so a late answer is never scored against the next call. ``time_limit`` must lie in
:data:`TIME_LIMIT_RANGE` (1 ms to 10 min), checked at construction.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = [
    "ScoreTimeout",
    "ScorerProcessError",
    "BoundedScorer",
    "TIME_LIMIT_RANGE",
    "call_with_time_limit",
    "check_time_limit",
    "timer_available",
]

#: the ways a scorer call can be bounded.
ISOLATIONS = ("signal", "process")
#: the accepted range of a time limit in seconds: below it no scorer can answer, above it a stuck
#: call would hold a rollout for longer than any episode is worth (and the timers overflow).
TIME_LIMIT_RANGE = (1e-3, 600.0)


def check_time_limit(time_limit: Any, name: str = "score_time_limit") -> float:
    """``time_limit`` as a float, or a ``ValueError`` naming ``name`` when it is not a number of
    seconds in :data:`TIME_LIMIT_RANGE` (1 ms to 10 min)."""
    low, high = TIME_LIMIT_RANGE
    if (
        isinstance(time_limit, bool)
        or not isinstance(time_limit, (int, float))
        or not (math.isfinite(time_limit) and low <= time_limit <= high)
    ):
        raise ValueError(
            f"{name} must be a number of seconds in [{low:g}, {high:g}] (1 ms to 10 min), got {time_limit!r}"
        )
    return float(time_limit)


class ScoreTimeout(BaseException):
    """Raised inside a scorer when its time bound expires (a ``BaseException``: not swallowable by
    ``except Exception``)."""


class ScorerProcessError(RuntimeError):
    """The scorer raised inside the worker process (its type and message are in the text)."""


def _serve(conn: Any) -> None:  # pragma: no cover - runs in the worker process
    """The worker loop: receive ``(request_id, fn, args)``, send back ``(request_id, ok, value_or_error)``."""
    while True:
        try:
            request_id, fn, args = conn.recv()
        except (EOFError, OSError):
            return
        try:
            conn.send((request_id, True, fn(*args)))
        except BaseException as exc:  # the parent decides what an error means
            conn.send((request_id, False, f"{type(exc).__name__}: {exc}"[:200]))


_WARMUP_S = 60.0


class _ProcessWorker:
    """One persistent worker process (fork) that runs calls; killed and replaced after any call
    that did not complete (overrun, interrupt), and answers matched to requests by id."""

    def __init__(self, warmup: tuple | None = None) -> None:
        self._proc: Any = None
        self._conn: Any = None
        self.warmup = warmup
        self._next_id = 0
        #: answers discarded because they carried another request's id; workers killed mid-call
        self.stale_answers = self.restarts = 0

    def _start(self) -> None:
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        ctx = multiprocessing.get_context(method)
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve, args=(child,), daemon=True)
        self._proc.start()
        child.close()
        if self.warmup is not None:  # a fresh worker's first call fills caches: not the scorer's time
            try:
                self._exchange(*self.warmup, seconds=_WARMUP_S)
            except ScoreTimeout:  # a late warm-up answer carries its own id and is discarded
                pass

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.join(timeout=5)
            self._conn.close()
        self._proc = self._conn = None

    def _exchange(self, fn: Callable[..., Any], args: tuple, seconds: float) -> tuple[bool, Any]:
        """Send one request and wait for the answer carrying its id; raise ScoreTimeout after ``seconds``."""
        self._next_id += 1
        request_id = self._next_id
        self._conn.send((request_id, fn, args))
        deadline = time.monotonic() + seconds
        while True:
            if not self._conn.poll(max(deadline - time.monotonic(), 0.0)):
                raise ScoreTimeout("score call exceeded its time bound (worker process killed)")
            answer_id, ok, value = self._conn.recv()
            if answer_id == request_id:
                return ok, value
            self.stale_answers += 1  # an answer to an earlier request: never scored against this one

    def call(self, fn: Callable[..., Any], args: tuple, seconds: float) -> Any:
        """``fn(*args)`` in the worker. A call that does not complete (timeout, interrupt, error in
        the exchange) kills the worker, so no late answer can be read as the next call's."""
        try:
            if self._proc is None or not self._proc.is_alive():
                self.stop()
                self._start()
            ok, value = self._exchange(fn, args, seconds)
        except BaseException:  # ScoreTimeout, KeyboardInterrupt, a broken pipe: start afresh next time
            self.stop()
            self.restarts += 1
            raise
        if not ok:
            raise ScorerProcessError(value)
        return value

    def __del__(self) -> None:
        try:
            self.stop()
        except Exception:  # pragma: no cover - interpreter shutdown
            pass


def timer_available() -> bool:
    """Whether :func:`call_with_time_limit` can interrupt a call here (POSIX main thread)."""
    return hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()


def _raise_timeout(signum: int, frame: Any) -> None:
    raise ScoreTimeout("score call exceeded its time bound")


def call_with_time_limit(fn: Callable[..., Any], *args: Any, seconds: float) -> tuple[Any, bool]:
    """Call ``fn(*args)``, interrupting it with :class:`ScoreTimeout` after ``seconds``.

    Parameters
    ----------
    fn : callable
        The call to bound.
    *args
        Its arguments.
    seconds : float
        The wall-clock bound (positive).

    Returns
    -------
    tuple of (Any, bool)
        ``fn``'s result and whether the timer was armed (``False`` off the main thread).

    Raises
    ------
    ScoreTimeout
        When the bound expired; any exception of ``fn`` propagates unchanged.
    """
    if not timer_available():
        return fn(*args), False
    old_handler = signal.signal(signal.SIGALRM, _raise_timeout)
    outer_delay, outer_interval = signal.getitimer(signal.ITIMER_REAL)
    start = time.monotonic()
    delay = seconds if outer_delay <= 0 else min(seconds, outer_delay)
    signal.setitimer(signal.ITIMER_REAL, delay)
    try:
        return fn(*args), True
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old_handler)
        if outer_delay > 0:  # re-arm the outer timer with what is left of it (fires at once if spent)
            left = max(outer_delay - (time.monotonic() - start), 1e-6)
            signal.setitimer(signal.ITIMER_REAL, left, outer_interval)


class BoundedScorer:
    """Calls a third-party scorer under :func:`call_with_time_limit` and counts what went wrong.

    An exception in the scorer or an expired time bound never propagates: the call yields
    ``None`` and is counted. The counts are cumulative over the scorer's life and are copied into
    every score breakdown (so they reach each episode's final ``info``), and the first failure
    of each kind is logged as a warning.

    Parameters
    ----------
    name : str
        What is scored (for the log message).
    time_limit : float
        Seconds per call, in :data:`TIME_LIMIT_RANGE` (1 ms to 10 min).
    isolation : str
        ``"signal"`` (default: :func:`call_with_time_limit` in this process) or ``"process"``
        (a worker process that is killed on overrun; ``fn`` and its arguments must pickle).
    warmup : tuple or None
        With ``"process"``: a ``(fn, args)`` call each new worker runs once, unbounded by the time
        limit, before serving (so a replaced worker's cold caches do not count against a call).

    Attributes
    ----------
    calls, errors, timeouts : int
        Cumulative counts.
    max_seconds : float
        The longest call seen (wall clock).
    """

    def __init__(self, name: str, time_limit: float, isolation: str = "signal", warmup: tuple | None = None):
        if isolation not in ISOLATIONS:
            raise ValueError(f"isolation must be one of {ISOLATIONS}, got {isolation!r}")
        self.name, self.time_limit = name, check_time_limit(time_limit)
        self.isolation = isolation
        self._worker = _ProcessWorker(warmup) if isolation == "process" else None
        self.calls = self.errors = self.timeouts = 0
        self.max_seconds = 0.0

    def __call__(self, fn: Callable[..., Any], *args: Any) -> tuple[Any, dict[str, Any]]:
        """Run ``fn(*args)`` bounded.

        Returns
        -------
        tuple of (Any, dict)
            The result (``None`` after an error or a timeout) and the breakdown entries
            ``scorer_error`` (the exception's type and message, or ``None``), ``scorer_timeout``
            (bool), ``scorer_errors_total`` and ``scorer_timeouts_total``.
        """
        self.calls += 1
        error, timed_out, result = None, False, None
        start = time.monotonic()
        try:
            if self._worker is not None:
                result = self._worker.call(fn, args, self.time_limit)
            else:
                result, _ = call_with_time_limit(fn, *args, seconds=self.time_limit)
        except ScoreTimeout:
            timed_out = True
            self.timeouts += 1
            if self.timeouts == 1:
                logging.getLogger(__name__).warning(
                    "%s: a score call exceeded %.3g s and scored 0 (counted in info['scorer_timeouts_total'])",
                    self.name,
                    self.time_limit,
                )
        except Exception as exc:  # a third-party scorer's bug must never end a rollout
            error = f"{type(exc).__name__}: {exc}"[:200]
            self.errors += 1
            if self.errors == 1:
                logging.getLogger(__name__).warning(
                    "%s: the scorer raised %s; scored 0 (counted in info['scorer_errors_total'])",
                    self.name,
                    error,
                )
        self.max_seconds = max(self.max_seconds, time.monotonic() - start)
        return result, {**self.counts(), "scorer_error": error, "scorer_timeout": timed_out}

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_worker"] = _ProcessWorker(self._worker.warmup) if self._worker is not None else None
        return state

    def counts(self) -> dict[str, Any]:
        """The breakdown entries of a score that did not call the scorer (no error, no timeout)."""
        return {
            "scorer_error": None,
            "scorer_timeout": False,
            "scorer_errors_total": self.errors,
            "scorer_timeouts_total": self.timeouts,
        }
