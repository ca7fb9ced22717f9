"""Progress inside runs that train in other processes: timesteps read from each run's log.

A run trained by :func:`~egsw_gym.experiments.runner.train_run` writes SB3's CSV log,
``logs/progress.csv``, after every update. :class:`RunProgress` reads the last
``time/total_timesteps`` of every run in a background thread and shows their sum as one
progress bar, in environment steps (control) or generated tokens (language models), so that
progress is visible from the first update instead of at the end of the first run.
"""

from __future__ import annotations

import csv
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from egsw_gym.common.env_util import is_text_env

__all__ = ["logged_timesteps", "RunProgress"]

#: How much of the end of ``progress.csv`` is read to find its last row.
_TAIL_BYTES = 65536


def logged_timesteps(run_dir: str | Path) -> int:
    """The last ``time/total_timesteps`` in ``run_dir/logs/progress.csv``; 0 if there is none yet.

    Parameters
    ----------
    run_dir : path
        A run directory written by :func:`~egsw_gym.experiments.runner.train_run`.

    Returns
    -------
    int
        Timesteps (environment steps, or generated tokens for text environments) logged so far.
    """
    path = Path(run_dir) / "logs" / "progress.csv"
    try:
        with open(path, "rb") as f:
            header = f.readline()
            size = f.seek(0, 2)
            f.seek(max(len(header), size - _TAIL_BYTES))
            tail = f.read()
    except OSError:
        return 0
    columns = next(csv.reader([header.decode("utf-8", "replace")]), [])
    if "time/total_timesteps" not in columns:
        return 0
    index = columns.index("time/total_timesteps")
    # The last line may be half written: only complete lines (ending in a newline) are read.
    lines = tail.decode("utf-8", "replace").split("\n")[:-1]
    for row in csv.reader(reversed(lines)):
        if len(row) == len(columns):
            try:
                return int(float(row[index]))
            except ValueError:
                continue
    return 0


def _unit(specs: Sequence[Any]) -> str:
    kinds = {"tokens" if is_text_env(s.env_id) else "steps" for s in specs}
    return kinds.pop() if len(kinds) == 1 else "timesteps"


class RunProgress:
    """A progress bar over the timesteps of runs training in other processes.

    Parameters
    ----------
    work : list of (RunSpec, str)
        The runs and their directories, as given to
        :func:`~egsw_gym.experiments.compare.run_parallel`.
    interval : float
        Seconds between two reads of the runs' logs.
    disable : bool
        Show nothing (the bar and its thread are not started).
    """

    def __init__(self, work: Sequence[tuple[Any, str]], *, interval: float = 2.0, disable: bool = False):
        self._runs = [(str(run_dir), int(spec.n_timesteps)) for spec, run_dir in work]
        self._done: set[str] = set()
        self._interval = interval
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._label = ""
        self.disable = disable
        #: what the bar counts ("steps", "tokens", or "timesteps" for a mix), its total and position
        self.unit = _unit([s for s, _ in work])
        self.total = sum(n for _, n in self._runs)
        self.completed = 0
        #: runs started but not yet past their first update
        self.starting = 0
        self.bar = tqdm(
            total=self.total,
            desc=f"{len(self._runs)} run(s), {self.unit}",
            unit=self.unit[:-1],  # "step", "token": the rate reads "1.9k step/s"
            unit_scale=True,
            disable=disable,
            mininterval=0.5,
        )
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def __enter__(self) -> RunProgress:
        if not self.disable:
            self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self.refresh()
        self.bar.close()

    def finished(self, run_dir: str, label: str) -> None:
        """Count ``run_dir`` as complete and show ``label`` (its name and final score)."""
        with self._lock:
            self._done.add(str(run_dir))
            self._label = label
        self.refresh()

    def refresh(self) -> None:
        """Read every run's logged timesteps and move the bar there."""
        with self._lock:
            total, starting = 0, 0
            for run_dir, n in self._runs:
                logged = n if run_dir in self._done else min(n, logged_timesteps(run_dir))
                # Started (its directory exists) but nothing logged yet: building, warm start, first update.
                starting += logged == 0 and Path(run_dir).is_dir()
                total += logged
            self.completed, self.starting, self.bar.n = total, starting, total
            done = f"{len(self._done)}/{len(self._runs)} runs done"
            if starting:
                done += f", {starting} before their first update (warm start, first rollout)"
            self.bar.set_postfix_str(f"{done}; last: {self._label}" if self._label else done, refresh=False)
            self.bar.refresh()

    def _poll(self) -> None:
        while not self._stop.wait(self._interval):
            self.refresh()
