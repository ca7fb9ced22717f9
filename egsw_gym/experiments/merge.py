"""``egsw-gym merge``: copy the finished runs of several study directories into one, safely.

The sources are read through :mod:`egsw_gym.experiments.rundir` (regular files only, nothing
followed through a link, sizes capped, every finished run checked). Everything is checked before
anything is written, so a refused merge leaves ``dest`` as it was. Writing never leaves ``dest``:
each directory below it is created or opened relative to its parent without following links (an
existing link such as ``dest/CartPole-v1 -> /elsewhere`` is refused, not followed), files are
created with ``O_EXCL | O_NOFOLLOW`` in a fresh temporary directory, which is then renamed into
place. The only thing ever deleted is an unfinished run directory inside ``dest`` that a finished
copy replaces.
"""

from __future__ import annotations

import os
import shutil
import stat
from dataclasses import dataclass, field
from pathlib import Path

from egsw_gym.experiments.rundir import LIMITS, RunDirError, RunDirLimits, RunTree, finished_runs

__all__ = ["merge_runs"]

_CHUNK = 2**20
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass
class _Copy:
    """One finished run to copy: where it comes from and its files (parts inside the run, cap)."""

    source: Path
    parts: tuple[str, ...]
    config: dict
    files: list[tuple[tuple[str, ...], int]] = field(default_factory=list)


def _run_files(
    dirs: dict, parts: tuple[str, ...], tree: RunTree, limits: RunDirLimits
) -> tuple[list, list[str]]:
    """The regular files below the run directory ``parts`` (parts inside it, cap), and oversize problems."""
    files, problems = [], []
    for d, entries in dirs.items():
        if d[: len(parts)] != parts:
            continue
        for name, (kind, size) in entries.items():
            if kind != "file":
                continue
            inner = (*d[len(parts) :], name)
            cap = limits.model_bytes if inner == ("model.zip",) else limits.file_bytes
            if size > cap:
                problems.append(f"{tree.path((*d, name))}: larger than the {cap}-byte cap ({size} bytes)")
            files.append((inner, cap))
    return sorted(files), problems


def _scan_source(src: Path, limits: RunDirLimits, counts: dict[str, int]) -> tuple[list[_Copy], list[str]]:
    """Every finished run of one source, checked, with its files; unfinished ones are counted."""
    if not src.is_dir():
        raise FileNotFoundError(f"merge source {src} is not a directory")
    with RunTree(src, limits) as tree:
        dirs, problems = tree.walk()
        runs, more = finished_runs(dirs, tree)
        problems += more
        counts["unfinished"] += sum(
            1 for p, e in dirs.items() if "config.json" in e and "result.json" not in e
        )
        copies = []
        for parts in runs:
            try:
                record = tree.read_run(parts, require_config=True)
            except RunDirError as err:
                problems += err.problems
                continue
            files, oversize = _run_files(dirs, parts, tree, limits)
            problems += oversize
            copies.append(_Copy(src, parts, record["config"], files))
    return copies, problems


def _dest_state(dest_fd: int | None, parts: tuple[str, ...], dest: Path) -> tuple[str, str | None]:
    """``("absent" | "unfinished" | "finished", problem)`` of ``dest/parts``, never following a link."""
    if dest_fd is None:
        return "absent", None
    fd, opened = dest_fd, []
    try:
        for k, name in enumerate(parts):
            shown = dest.joinpath(*parts[: k + 1])
            try:
                mode = os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode
            except FileNotFoundError:
                return "absent", None
            if not stat.S_ISDIR(mode):
                kind = "a symbolic link" if stat.S_ISLNK(mode) else "not a directory"
                return "absent", (
                    f"{shown}: is {kind}; merge writes only inside --out and never follows links "
                    "(remove it or choose another --out)"
                )
            fd = os.open(name, _DIR, dir_fd=fd)
            opened.append(fd)
        try:
            mode = os.stat("result.json", dir_fd=fd, follow_symlinks=False).st_mode
        except FileNotFoundError:
            return "unfinished", None
        return (
            ("finished", None)
            if stat.S_ISREG(mode)
            else ("absent", f"{dest.joinpath(*parts)}/result.json: not a regular file")
        )
    finally:
        for f in opened:
            os.close(f)


def _plan(sources: list[Path], dest: Path, limits: RunDirLimits) -> tuple[list[_Copy], dict[str, int]]:
    """Check every source and the destination; return the runs to copy (nothing is written here)."""
    counts = {"copied": 0, "duplicate": 0, "unfinished": 0}
    dest_real = os.path.realpath(dest)
    problems: list[str] = []
    chosen: dict[tuple[str, ...], _Copy] = {}
    for src in sources:
        src_real = os.path.realpath(src)
        if dest_real != src_real and dest_real.startswith(src_real.rstrip(os.sep) + os.sep):
            raise RunDirError(f"--out {dest} lies inside the merge source {src}: choose an --out outside it")
        copies, more = _scan_source(src, limits, counts)
        problems += more
        for c in copies:
            first = chosen.get(c.parts)
            if first is not None and first.config != c.config:
                problems.append(
                    f"{src.joinpath(*c.parts)}: run {'/'.join(c.parts)} has different configs in {first.source} "
                    f"and {src}; they come from different studies: merge only outputs of the same suite and flags"
                )
            elif first is not None or dest_real == src_real:
                counts["duplicate"] += 1
            else:
                chosen[c.parts] = c
    todo = []
    dest_tree = RunTree(dest, limits) if dest.is_dir() else None
    try:
        for parts, c in sorted(chosen.items()):
            state, problem = _dest_state(dest_tree.fd if dest_tree else None, parts, dest)
            if problem:
                problems.append(problem)
            elif state == "finished":
                try:
                    theirs = dest_tree.read_json((*parts, "config.json"))
                except RunDirError as err:
                    problems += err.problems
                    continue
                if theirs != c.config:
                    problems.append(
                        f"{dest.joinpath(*parts)}: run {'/'.join(parts)} has different configs in {c.source} "
                        f"and {dest}; they come from different studies: merge only outputs of the same suite and flags"
                    )
                else:
                    counts["duplicate"] += 1
            else:
                todo.append(c)
    finally:
        if dest_tree is not None:
            dest_tree.close()
    if problems:
        raise RunDirError(problems, limits.problems_shown)
    return todo, counts


def _make_dirs(dest_fd: int, parts: tuple[str, ...], dest: Path) -> int:
    """Open (creating as needed) ``dest/parts`` without following links; the caller closes the fd."""
    fd = os.dup(dest_fd)
    for k, name in enumerate(parts):
        try:
            os.mkdir(name, 0o755, dir_fd=fd)
        except FileExistsError:
            pass
        try:
            child = os.open(name, _DIR, dir_fd=fd)
        except OSError as err:
            os.close(fd)
            raise RunDirError(
                f"{dest.joinpath(*parts[: k + 1])}: not a directory merge may write into ({err.strerror})"
            ) from None
        os.close(fd)
        fd = child
    return fd


def _copy_run(c: _Copy, dest_fd: int, dest: Path, limits: RunDirLimits) -> None:
    """Copy one run into ``dest`` through a temporary sibling directory, then rename it into place."""
    parent_fd = _make_dirs(dest_fd, c.parts[:-1], dest)
    name, tmp = c.parts[-1], f".{c.parts[-1]}.merging-{os.getpid()}"
    try:
        for stale in (tmp, name):  # a crashed merge's leftovers; an unfinished copy of the run
            try:
                mode = os.stat(stale, dir_fd=parent_fd, follow_symlinks=False).st_mode
            except FileNotFoundError:
                continue
            if not stat.S_ISDIR(mode):
                raise RunDirError(
                    f"{dest.joinpath(*c.parts[:-1], stale)}: not a directory; merge will not replace it"
                )
            shutil.rmtree(stale, dir_fd=parent_fd)  # fd-based: never follows a link inside
        os.mkdir(tmp, 0o755, dir_fd=parent_fd)
        with RunTree(c.source, limits) as tree:
            for inner, cap in c.files:
                dir_fd = _make_dirs(parent_fd, (tmp, *inner[:-1]), dest)
                try:
                    _copy_file(tree, (*c.parts, *inner), cap, dir_fd, inner[-1])
                finally:
                    os.close(dir_fd)
        os.rename(tmp, name, src_dir_fd=parent_fd, dst_dir_fd=parent_fd)
    finally:
        os.close(parent_fd)


def _copy_file(tree: RunTree, parts: tuple[str, ...], cap: int, dir_fd: int, name: str) -> None:
    with tree.open(parts, cap) as src:
        out = os.open(name, _NEW_FILE, 0o644, dir_fd=dir_fd)
        with os.fdopen(out, "wb") as dst:
            while chunk := src.read(_CHUNK):
                dst.write(chunk)


def merge_runs(
    sources: list[str | os.PathLike], dest: str | os.PathLike, *, limits: RunDirLimits = LIMITS
) -> dict[str, int]:
    """Copy the finished runs of several study output directories (one per machine) into ``dest``.

    A run finished in more than one place must have the same ``config.json`` (the first copy is
    kept); different configs under one name are an error, never a silent choice. Unfinished runs
    are left out; an unfinished run already in ``dest`` is replaced by a finished copy.

    Returns
    -------
    dict
        ``{"copied": ..., "duplicate": ..., "unfinished": ...}``.

    Raises
    ------
    RunDirError
        Any damaged source file, conflicting config or link in ``dest``, one line each; nothing
        is written then.
    """
    dest = Path(dest)
    if os.path.lexists(dest) and not dest.is_dir():
        raise RunDirError(f"--out {dest} exists and is not a directory")
    todo, counts = _plan([Path(s) for s in sources], dest, limits)
    if not todo:
        return counts
    try:
        dest.mkdir(parents=True, exist_ok=True)
        with RunTree(dest, limits) as out:
            for c in todo:
                _copy_run(c, out.fd, dest, limits)
                counts["copied"] += 1
    except OSError as err:  # disk full, permissions: one line, the runs copied so far are complete
        raise RunDirError(f"{dest}: writing the merged runs failed ({err})") from None
    return counts
