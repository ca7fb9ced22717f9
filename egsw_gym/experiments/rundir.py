"""Reading run directories someone else produced: only regular files inside the tree, with caps.

Every reader of finished runs (``egsw-gym plot``, ``study --report-only``, ``merge``,
``evaluate``) goes through this module:

- under the directory named on the command line (which may itself be reached through a link),
  every entry must be a directory or a regular file: symbolic links, FIFOs, devices and sockets
  are refused by name, and nothing is opened through a link (each directory is opened relative to
  its parent with ``O_NOFOLLOW``, files with ``O_NOFOLLOW | O_NONBLOCK`` and checked with
  ``fstat``);
- sizes are checked before reading (:class:`RunDirLimits`) and reads stop at the cap;
- JSON and CSV errors name the file; non-finite scores are errors;
- a run lives at ``<env>/<variant>/seed<k>`` and must record the environment, algorithm and seed
  of its place (``variant`` is the algorithm, or the algorithm followed by ``-<suffix>``).

Problems are collected, one line per damaged file naming the file and what is wrong, and raised
together as one :class:`RunDirError` (a ``ValueError``: the command line prints the lines and
exits with status 2).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import stat
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

__all__ = [
    "LIMITS",
    "RunDirError",
    "RunDirLimits",
    "RunTree",
    "collect_runs",
    "finished_runs",
    "read_json_file",
    "read_csv_file",
    "read_progress_log",
    "check_regular_file",
]

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


@dataclass(frozen=True)
class RunDirLimits:
    """Caps on what a run directory tree may hold; anything larger is refused before it is read.

    Parameters
    ----------
    json_bytes : int
        ``result.json``, ``config.json``, ``vecnormalize.json``.
    curve_bytes, curve_rows : int
        ``curve.csv`` (one row per evaluation).
    log_bytes, log_rows : int
        ``logs/progress.csv`` (one row per update), streamed.
    file_bytes : int
        Any other file ``merge`` copies.
    model_bytes : int
        ``model.zip`` (the checkpoint loader applies its own caps to the content).
    entries, depth : int
        Entries in the whole tree, and directory levels below its root.
    problems_shown : int
        Damaged files listed in one error (the rest are counted).
    """

    json_bytes: int = 2**20
    curve_bytes: int = 8 * 2**20
    curve_rows: int = 100_000
    log_bytes: int = 64 * 2**20
    log_rows: int = 1_000_000
    file_bytes: int = 256 * 2**20
    model_bytes: int = 16 * 2**30
    entries: int = 200_000
    depth: int = 12
    problems_shown: int = 20


LIMITS = RunDirLimits()


class RunDirError(ValueError):
    """Damaged run files: one line per file, each naming the file and the problem."""

    def __init__(self, problems: str | Iterable[str], shown: int = LIMITS.problems_shown):
        # One line per file: the first problem found in it (the walk and the read may both see it).
        self.problems, files = [], set()
        for line in [problems] if isinstance(problems, str) else problems:
            file = line.split(": ", 1)[0]
            if file not in files:
                files.add(file)
                self.problems.append(line)
        lines = self.problems[:shown]
        if len(self.problems) > shown:
            lines.append(f"... and {len(self.problems) - shown} more damaged files")
        super().__init__("\n".join(lines))


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISLNK, "a symbolic link"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISREG, "a regular file"),
    ):
        if test(mode):
            return name
    return "a special file"


def _open_at(dir_fd: int, name: str, shown: Path, *, directory: bool) -> int:
    """Open ``name`` in ``dir_fd`` without following a link; anything else than wanted is refused."""
    want = "directory" if directory else "regular file"
    try:
        mode = os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode
    except FileNotFoundError:
        raise RunDirError(f"{shown}: missing") from None
    except OSError as err:
        raise RunDirError(f"{shown}: cannot be read ({err.strerror})") from None
    if not (stat.S_ISDIR(mode) if directory else stat.S_ISREG(mode)):
        raise RunDirError(f"{shown}: is {_kind(mode)}, not a {want}; run directories hold only those")
    try:
        fd = os.open(name, _DIR_FLAGS if directory else _FILE_FLAGS, dir_fd=dir_fd)
    except OSError as err:  # replaced by a link or a FIFO since the check: ELOOP, ENXIO ...
        raise RunDirError(f"{shown}: cannot be opened as a {want} ({err.strerror})") from None
    mode = os.fstat(fd).st_mode
    if not (stat.S_ISDIR(mode) if directory else stat.S_ISREG(mode)):
        os.close(fd)
        raise RunDirError(f"{shown}: is {_kind(mode)}, not a {want}")
    return fd


class _Capped(io.RawIOBase):
    """A raw reader that refuses to go past ``cap`` bytes (a file that grows while it is read)."""

    def __init__(self, fd: int, cap: int, shown: Path):
        self._file, self._left, self._shown, self._cap = os.fdopen(fd, "rb", buffering=0), cap, shown, cap

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._left <= 0:
            if self._file.read(1):
                raise RunDirError(f"{self._shown}: larger than the {self._cap}-byte cap (it grew)")
            return 0
        view = memoryview(buffer)[: min(len(buffer), self._left)]
        n = self._file.readinto(view) or 0
        self._left -= n
        return n

    def close(self) -> None:
        self._file.close()
        super().close()


class RunTree:
    """A directory tree of runs, opened once and read without following any link below its root.

    Parameters
    ----------
    root : path
        The tree's root, as named by the user (it may itself be reached through a link).
    limits : RunDirLimits
        Size and count caps.
    """

    def __init__(self, root: str | os.PathLike, limits: RunDirLimits = LIMITS):
        self.root, self.limits = Path(root), limits
        try:
            self.fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise FileNotFoundError(f"{self.root} does not exist") from None
        except OSError as err:
            raise RunDirError(f"{self.root}: not a readable directory ({err.strerror})") from None

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> RunTree:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def path(self, parts: Iterable[str]) -> Path:
        return self.root.joinpath(*parts)

    @contextlib.contextmanager
    def directory(self, parts: tuple[str, ...]) -> Iterator[int]:
        """The fd of ``root/parts``, every component opened without following links."""
        fds: list[int] = []
        fd = self.fd
        try:
            for k, name in enumerate(parts):
                fd = _open_at(fd, name, self.path(parts[: k + 1]), directory=True)
                fds.append(fd)
            yield fd
        finally:
            for f in fds:
                os.close(f)

    def open(self, parts: tuple[str, ...], cap: int) -> BinaryIO:
        """A binary reader of the regular file ``root/parts`` (refused if larger than ``cap``)."""
        shown = self.path(parts)
        with self.directory(parts[:-1]) as dir_fd:
            fd = _open_at(dir_fd, parts[-1], shown, directory=False)
        size = os.fstat(fd).st_size
        if size > cap:
            os.close(fd)
            raise RunDirError(f"{shown}: larger than the {cap}-byte cap ({size} bytes)")
        os.set_blocking(fd, True)
        return io.BufferedReader(_Capped(fd, cap, shown), buffer_size=2**16)

    def read_json(self, parts: tuple[str, ...], cap: int | None = None) -> Any:
        """The JSON content of ``root/parts``; any damage is an error naming the file."""
        cap = self.limits.json_bytes if cap is None else cap
        with self.open(parts, cap) as f:
            raw = f.read()
        try:
            return json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as err:
            what = "nested too deeply" if isinstance(err, RecursionError) else str(err)[:160]
            raise RunDirError(f"{self.path(parts)}: not valid JSON ({type(err).__name__}: {what})") from None

    def read_csv(
        self,
        parts: tuple[str, ...],
        columns: tuple[str, ...],
        *,
        cap: int,
        max_rows: int,
        skip_empty: str | None = None,
    ) -> dict[str, np.ndarray]:
        """``columns`` of a CSV file as finite float arrays, streamed (other columns are not kept).

        Rows whose ``skip_empty`` column is empty are left out (progress logs of mixed loggers).
        """
        shown = self.path(parts)
        values = {c: array("d") for c in columns}
        with self.open(parts, cap) as raw, io.TextIOWrapper(raw, encoding="utf-8", newline="") as text:
            try:
                rows = csv.reader(text)
                header = next(rows, None)
                missing = [c for c in columns if header is None or c not in header]
                if missing:
                    raise RunDirError(f"{shown}: no column(s) {missing} in its header")
                index = [header.index(c) for c in columns]
                skip = header.index(skip_empty) if skip_empty else None
                for n, row in enumerate(rows, start=2):
                    if n - 1 > max_rows:
                        raise RunDirError(f"{shown}: more than {max_rows} rows")
                    if skip is not None and (len(row) <= skip or not row[skip]):
                        continue
                    if len(row) != len(header):
                        raise RunDirError(
                            f"{shown}: line {n} has {len(row)} fields, the header {len(header)}"
                        )
                    for c, i in zip(columns, index, strict=True):
                        values[c].append(_finite(row[i], shown, n, c))
            except (csv.Error, UnicodeDecodeError) as err:
                raise RunDirError(
                    f"{shown}: not a valid CSV file ({type(err).__name__}: {str(err)[:120]})"
                ) from None
        return {c: np.frombuffer(v, dtype=float).copy() for c, v in values.items()}

    def walk(self) -> tuple[dict[tuple[str, ...], dict[str, tuple[str, int]]], list[str]]:
        """Every directory (its parts below the root) -> ``{name: (kind, size)}``, and the problems.

        ``kind`` is ``"dir"`` or ``"file"``; any other entry (link, FIFO, device, socket) is a
        problem. More than ``limits.entries`` entries is an error at once (not a tree of runs).
        """
        out: dict[tuple[str, ...], dict[str, tuple[str, int]]] = {}
        problems: list[str] = []
        self._walk(self.fd, (), out, problems, [0])
        return out, problems

    def _walk(self, fd: int, parts: tuple[str, ...], out: dict, problems: list[str], seen: list[int]) -> None:
        if len(parts) > self.limits.depth:
            problems.append(f"{self.path(parts)}: more than {self.limits.depth} directory levels deep")
            return
        entries: dict[str, tuple[str, int]] = {}
        with os.scandir(fd) as it:
            for e in it:
                seen[0] += 1
                if seen[0] > self.limits.entries:
                    raise RunDirError(
                        f"{self.root}: more than {self.limits.entries} entries: not a tree of runs"
                    )
                st = e.stat(follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    entries[e.name] = ("dir", 0)
                elif stat.S_ISREG(st.st_mode):
                    entries[e.name] = ("file", st.st_size)
                else:
                    problems.append(
                        f"{self.path((*parts, e.name))}: is {_kind(st.st_mode)}; "
                        "run directories hold only regular files and directories"
                    )
        out[parts] = entries
        for name in sorted(n for n, (kind, _) in entries.items() if kind == "dir"):
            try:
                child = _open_at(fd, name, self.path((*parts, name)), directory=True)
            except RunDirError as err:
                problems += err.problems
                continue
            try:
                self._walk(child, (*parts, name), out, problems, seen)
            finally:
                os.close(child)

    def read_run(self, parts: tuple[str, ...], *, require_config: bool = False) -> dict[str, Any]:
        """One finished run: its checked ``result.json`` fields, ``curve``, ``config`` and ``run_dir``.

        Raises
        ------
        RunDirError
            One line per damaged file of the run.
        """
        problems: list[str] = []

        def attempt(fn: Any, *args: Any) -> Any:
            try:
                return fn(*args)
            except RunDirError as err:
                problems.extend(err.problems)
                return None

        result = attempt(self._read_result, parts)
        config = None
        if require_config or _exists(self.fd, (*parts, "config.json")):
            config = attempt(self._read_config, parts, result)
        curve = attempt(self._read_curve, parts)
        if problems:
            raise RunDirError(problems)
        record = dict(result)
        record.update(curve=curve, config=config, run_dir=str(self.path(parts)))
        return record

    def _read_result(self, parts: tuple[str, ...]) -> dict[str, Any]:
        shown = self.path((*parts, "result.json"))
        data = self.read_json((*parts, "result.json"))
        _check_fields(data, shown, _RESULT_FIELDS)
        if len(parts) < 3:
            raise RunDirError(f"{shown}: a run lies at <env>/<variant>/seed<k> below {self.root}")
        env_dir, variant, seed_dir = parts[-3:]
        if _algo_of_variant(variant) is None:
            raise RunDirError(f"{shown}: its directory {variant!r} does not start with an algorithm name")
        place = {
            "env_id": (data["env_id"].replace("/", "_") == env_dir, env_dir),
            "seed": (seed_dir == f"seed{data['seed']}", seed_dir),
            "algo": (_algo_of_variant(variant) == data["algo"], variant),
        }
        for name, (ok, where) in place.items():
            if not ok:
                raise RunDirError(
                    f"{shown}: records {name} {data[name]!r}, which does not match its directory {where!r}"
                )
        return data

    def _read_config(self, parts: tuple[str, ...], result: dict[str, Any] | None) -> dict[str, Any]:
        shown = self.path((*parts, "config.json"))
        data = self.read_json((*parts, "config.json"))
        _check_fields(data, shown, _CONFIG_FIELDS)
        for name in ("algo", "env_id", "seed"):
            if result is not None and data[name] != result[name]:
                raise RunDirError(
                    f"{shown}: {name} {data[name]!r} differs from result.json's {result[name]!r}"
                )
        return data

    def _read_curve(self, parts: tuple[str, ...]) -> dict[str, np.ndarray]:
        shown = self.path((*parts, "curve.csv"))
        curve = self.read_csv(
            (*parts, "curve.csv"),
            ("timesteps", "eval_mean"),
            cap=self.limits.curve_bytes,
            max_rows=self.limits.curve_rows,
        )
        t = curve["timesteps"]
        if t.size == 0:
            raise RunDirError(f"{shown}: no evaluation rows")
        if t[0] < 0 or np.any(np.diff(t) < 0):
            raise RunDirError(f"{shown}: timesteps must be >= 0 and non-decreasing")
        return curve


def _exists(root_fd: int, parts: tuple[str, ...]) -> bool:
    try:
        os.stat(os.path.join(*parts), dir_fd=root_fd, follow_symlinks=False)
    except OSError:
        return False
    return True


def _finite(text: str, shown: Path, line: int, column: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise RunDirError(f"{shown}: line {line}, column {column!r}: not a number ({text[:40]!r})") from None
    if not math.isfinite(value):
        raise RunDirError(f"{shown}: line {line}, column {column!r}: non-finite value {text[:40]!r}")
    return value


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


#: result.json fields: (required, check, what it must be)
_RESULT_FIELDS: dict[str, tuple[bool, Any, str]] = {
    "algo": (True, lambda x: isinstance(x, str), "a string"),
    "env_id": (True, lambda x: isinstance(x, str) and 0 < len(x) <= 200, "an environment id"),
    "seed": (True, lambda x: _is_int(x) and 0 <= x < 2**63, "an integer >= 0"),
    "final_eval_mean": (True, _is_finite, "a finite number"),
    "initial_eval_mean": (False, _is_finite, "a finite number"),
    "final_eval_std": (False, _is_finite, "a finite number"),
    "timesteps": (False, lambda x: _is_int(x) and x >= 0, "an integer >= 0"),
    "provenance": (
        False,
        lambda x: isinstance(x, dict) and (x.get("code") is None or isinstance(x["code"], dict)),
        "an object whose 'code' is null or an object",
    ),
}
#: config.json fields the readers use
_CONFIG_FIELDS: dict[str, tuple[bool, Any, str]] = {
    "algo": (True, lambda x: isinstance(x, str), "a string"),
    "env_id": (True, lambda x: isinstance(x, str), "a string"),
    "seed": (True, _is_int, "an integer"),
    "n_timesteps": (True, lambda x: _is_int(x) and x >= 1, "an integer >= 1"),
    "egsw": (
        False,
        lambda x: x is None or _is_egsw(x),
        "null or an EGSW config (mode, finite alpha, temperature)",
    ),
}


def _is_egsw(x: Any) -> bool:
    """An EGSW config as ``EGSW.to_dict`` writes it, as far as the reports read it."""
    return (
        isinstance(x, dict)
        and x.get("mode") in ("trajectory", "step")
        and all(_is_finite(x.get(k)) for k in ("alpha", "temperature"))
    )


def _check_fields(data: Any, shown: Path, fields: dict[str, tuple[bool, Any, str]]) -> None:
    if not isinstance(data, dict):
        raise RunDirError(f"{shown}: must hold a JSON object, got {type(data).__name__}")
    for name, (required, check, what) in fields.items():
        if name not in data:
            if required:
                raise RunDirError(f"{shown}: field {name!r} is missing")
        elif not check(data[name]):
            raise RunDirError(f"{shown}: field {name!r} must be {what}, got {_short(data[name])}")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _algo_of_variant(variant: str) -> str | None:
    """The algorithm a run directory's name stands for: the longest algorithm name it starts with."""
    from egsw_gym.experiments.presets import ALGORITHMS

    names = [a for a in ALGORITHMS if variant == a or variant.startswith(a + "-")]
    return max(names, key=len) if names else None


def finished_runs(
    dirs: dict[tuple[str, ...], dict[str, tuple[str, int]]], tree: RunTree
) -> tuple[list, list[str]]:
    """The directories of ``dirs`` holding a ``result.json`` file, in path order, and the problems."""
    runs, problems = [], []
    for parts, entries in dirs.items():
        kind = entries.get("result.json", (None, 0))[0]
        if kind == "file":
            runs.append(parts)
        elif kind is not None:
            problems.append(f"{tree.path((*parts, 'result.json'))}: is a directory, not a regular file")
    return sorted(runs, key="/".join), problems


def collect_runs(
    root: str | os.PathLike, *, require_config: bool = False, limits: RunDirLimits = LIMITS
) -> list[dict]:
    """Every finished run under ``root`` (see :meth:`RunTree.read_run`), checked.

    Raises
    ------
    RunDirError
        Listing every damaged file of the tree, one per line.
    """
    with RunTree(root, limits) as tree:
        dirs, problems = tree.walk()
        parts_list, more = finished_runs(dirs, tree)
        problems += more
        runs = []
        for parts in parts_list:
            try:
                runs.append(tree.read_run(parts, require_config=require_config))
            except RunDirError as err:
                problems += err.problems
    if problems:
        raise RunDirError(problems, limits.problems_shown)
    return runs


def read_json_file(path: str | os.PathLike, cap: int = LIMITS.json_bytes) -> Any:
    """The JSON content of one regular file (not a link), at most ``cap`` bytes, errors naming it."""
    path = Path(path)
    with RunTree(path.parent) as tree:
        return tree.read_json((path.name,), cap)


def read_csv_file(
    path: str | os.PathLike,
    columns: tuple[str, ...],
    *,
    cap: int = LIMITS.log_bytes,
    max_rows: int = LIMITS.log_rows,
    skip_empty: str | None = None,
) -> dict[str, np.ndarray]:
    """``columns`` of one regular CSV file as finite float arrays (see :meth:`RunTree.read_csv`)."""
    path = Path(path)
    with RunTree(path.parent) as tree:
        return tree.read_csv((path.name,), columns, cap=cap, max_rows=max_rows, skip_empty=skip_empty)


def read_progress_log(run_dir: str | os.PathLike, columns: tuple[str, ...]) -> dict[str, np.ndarray] | None:
    """``columns`` of a run's ``logs/progress.csv`` (rows where the last one is empty are left out),
    or ``None`` when the run has no such file; read like every run file (no links, capped)."""
    with RunTree(run_dir) as tree:
        if not _exists(tree.fd, ("logs", "progress.csv")):
            return None
        return tree.read_csv(
            ("logs", "progress.csv"),
            columns,
            cap=tree.limits.log_bytes,
            max_rows=tree.limits.log_rows,
            skip_empty=columns[-1],
        )


def check_regular_file(path: str | os.PathLike, cap: int) -> None:
    """Refuse ``path`` unless it is a regular file (not a link, FIFO or device) of at most ``cap`` bytes."""
    path = Path(path)
    with RunTree(path.parent) as tree, tree.open((path.name,), cap):
        pass
