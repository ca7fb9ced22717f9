"""Reading checkpoint zips with every size bounded before memory is spent.

SB3 reads each member of a model zip whole (``archive.read``); a member that inflates to gigabytes
(a zip bomb) or a header that lies about sizes would cost that memory before anything could refuse
it. :func:`check_archive` looks at every member's header first (declared size, compression ratio,
total) and :func:`read_text_member` reads with a capped stream, so a hostile file is refused in
milliseconds with :class:`~egsw_gym.common.plain_data.UnsafeCheckpointError` naming the member.
"""

from __future__ import annotations

import io
import os
import zipfile
import zlib
from dataclasses import dataclass
from typing import Any

from egsw_gym.common.plain_data import UnsafeCheckpointError

__all__ = ["ZipLimits", "open_checkpoint", "check_archive", "read_text_member", "checkpoint_path"]

#: what opening or reading a damaged zip can raise (all turned into UnsafeCheckpointError)
ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError, ValueError, KeyError)


@dataclass(frozen=True)
class ZipLimits:
    """Bounds on a checkpoint zip, checked from the headers before any member is inflated.

    Attributes
    ----------
    max_json_bytes : int
        Largest JSON member (``data``, the plain-data and RNG members).
    max_member_bytes : int
        Largest member of any kind (tensor files of large language models are the big ones).
    max_total_bytes : int
        Largest sum of all members' sizes.
    max_ratio : float
        Largest inflation ratio of a compressed member above ``ratio_floor_bytes`` (SB3 stores
        members uncompressed, ratio 1; deflate reaches ~1000 on zeros).
    ratio_floor_bytes : int
        Members smaller than this are never refused for their ratio.
    max_members : int
        Most members in the archive.
    max_json_values : int
        Most values (counted by their separating commas, while streaming, before anything is
        parsed) in one JSON member. The largest legitimate entries are a space's bounds and the
        last observations (a Box's size, twice); a million-dimensional Box fits.
    """

    max_json_bytes: int = 256 * 2**20
    max_member_bytes: int = 64 * 2**30
    max_total_bytes: int = 128 * 2**30
    max_ratio: float = 200.0
    ratio_floor_bytes: int = 2**20
    max_members: int = 10_000
    max_json_values: int = 2**21


def checkpoint_path(path_or_file: Any) -> Any:
    """As SB3's load: a path that does not exist is tried with ``.zip`` appended; files pass through."""
    if isinstance(path_or_file, (str, os.PathLike)):
        path = os.fspath(path_or_file)
        if not os.path.exists(path) and os.path.exists(path + ".zip"):
            path += ".zip"
        return path
    return path_or_file


def open_checkpoint(path_or_file: Any) -> zipfile.ZipFile:
    """Open a checkpoint zip; a missing, truncated or non-zip file is an error naming it."""
    source = checkpoint_path(path_or_file)
    if isinstance(source, str) and not os.path.isfile(source):
        raise FileNotFoundError(f"checkpoint {source!r} does not exist (nor does {source + '.zip'!r})")
    if isinstance(source, io.IOBase) or hasattr(source, "seek"):
        source.seek(0)
    try:
        return zipfile.ZipFile(source)
    except ZIP_ERRORS as err:
        raise UnsafeCheckpointError(f"checkpoint {_name(path_or_file)} wasn't a zip-file ({err})") from err


def check_archive(archive: zipfile.ZipFile, limits: ZipLimits | None = None) -> None:
    """Refuse a zip whose headers claim more than ``limits`` allow, before anything is inflated."""
    limits = limits or ZipLimits()
    infos = archive.infolist()
    if len(infos) > limits.max_members:
        raise UnsafeCheckpointError(f"checkpoint holds {len(infos)} members, more than {limits.max_members}")
    total = 0
    for info in infos:
        size, packed = info.file_size, info.compress_size
        if size > limits.max_member_bytes:
            raise UnsafeCheckpointError(
                f"checkpoint member {info.filename!r} inflates to {size} bytes, more than {limits.max_member_bytes}"
            )
        if size > limits.ratio_floor_bytes and size > limits.max_ratio * max(packed, 1):
            raise UnsafeCheckpointError(
                f"checkpoint member {info.filename!r} inflates {packed} bytes to {size} "
                f"(ratio {size / max(packed, 1):.0f} > {limits.max_ratio:.0f}): a zip bomb"
            )
        total += size
    if total > limits.max_total_bytes:
        raise UnsafeCheckpointError(
            f"checkpoint members total {total} bytes, more than {limits.max_total_bytes}"
        )


def read_text_member(archive: zipfile.ZipFile, name: str, limits: ZipLimits | None = None) -> str | None:
    """The UTF-8 text of member ``name`` (``None`` if absent), read through a capped stream."""
    limits = limits or ZipLimits()
    try:
        info = archive.getinfo(name)
    except KeyError:
        return None
    if info.file_size > limits.max_json_bytes:
        raise UnsafeCheckpointError(
            f"checkpoint member {name!r} is {info.file_size} bytes, more than {limits.max_json_bytes} for JSON"
        )
    chunks, size, values = [], 0, 0
    try:
        with archive.open(info) as stream:
            while size <= limits.max_json_bytes:
                chunk = stream.read(2**20)
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
                values += chunk.count(b",")
                if values > limits.max_json_values:  # refused before a number of it is parsed
                    break
    except ZIP_ERRORS as err:
        raise UnsafeCheckpointError(f"checkpoint member {name!r} cannot be read: {err}") from err
    if values > limits.max_json_values:
        raise UnsafeCheckpointError(
            f"checkpoint member {name!r} holds more than {limits.max_json_values} JSON values (a list far "
            "longer than any entry of a checkpoint needs), refused before parsing"
        )
    if size > limits.max_json_bytes:
        raise UnsafeCheckpointError(f"checkpoint member {name!r} is larger than its header says")
    raw = b"".join(chunks)
    del chunks
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise UnsafeCheckpointError(
            f"checkpoint member {name!r} is not UTF-8 text (byte {err.start}: {err.reason})"
        ) from err


def _name(path_or_file: Any) -> str:
    return repr(os.fspath(path_or_file)) if isinstance(path_or_file, (str, os.PathLike)) else "(file object)"
