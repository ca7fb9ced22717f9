"""What a model will cost, known before it is allocated; what stored weights hold, read from headers.

A language model's size follows from its config (layers, widths, vocabulary, positions, LoRA rank:
every architecture names them differently), so the model is never sized by reading fields: it is
instantiated on PyTorch's ``meta`` device, which runs the architecture's own constructor without
allocating a byte, and its parameters and buffers are counted (:func:`module_bytes`). The stored
weights it must match are described without reading their data: a ``torch.save`` file through
``torch.load(map_location="meta")`` (:func:`torch_file_shapes`, also for a file stored inside a
checkpoint zip: :func:`zip_member_shapes`) and a ``.safetensors`` file through its JSON header
(:func:`safetensors_shapes`). :func:`check_matches_stored` refuses a model whose tensors differ in
shape from the stored ones, or that claims more than they hold.

Hugging Face tokenizer files are parsed by Rust code that holds the whole vocabulary in memory:
:func:`check_tokenizer_files` bounds their sizes and entry counts before any of them is read.
"""

from __future__ import annotations

import io
import json
import math
import os
import struct
import zipfile
from collections.abc import Iterable
from typing import Any

import torch

__all__ = [
    "TOKENIZER_FILE_LIMITS",
    "MAX_TOKENIZER_ENTRIES",
    "module_bytes",
    "physical_memory_bytes",
    "torch_file_shapes",
    "zip_member_shapes",
    "safetensors_shapes",
    "directory_weight_shapes",
    "check_matches_stored",
    "check_tokenizer_files",
]

#: tokenizer file -> largest size in bytes read (the largest public tokenizers, 262k-token
#: vocabularies, are about 33 MB of tokenizer.json and 4 MB of SentencePiece model)
TOKENIZER_FILE_LIMITS = {
    "tokenizer.json": 64 * 2**20,
    "vocab.json": 32 * 2**20,
    "merges.txt": 32 * 2**20,
    "vocab.txt": 32 * 2**20,
    "tokenizer.model": 32 * 2**20,
    "spiece.model": 32 * 2**20,
    "sentencepiece.bpe.model": 32 * 2**20,
    "tokenizer_config.json": 16 * 2**20,
    "special_tokens_map.json": 2**20,
    "added_tokens.json": 16 * 2**20,
    "chat_template.jinja": 2**20,
}
#: most vocabulary entries (JSON object keys, or lines of vocab.txt) a tokenizer file may hold
MAX_TOKENIZER_ENTRIES = 2**20
#: largest safetensors header read (the JSON describing the tensors; megabytes for real models)
MAX_SAFETENSORS_HEADER = 64 * 2**20
_CHUNK = 2**20


def module_bytes(module: torch.nn.Module, dtype: torch.dtype | None = None) -> tuple[int, int, int]:
    """``(parameters, buffer elements, bytes)`` of a (meta) module; tied parameters count once.

    ``bytes`` counts every parameter and buffer at ``dtype`` (or its own dtype when ``None``).
    """
    params = sum(p.numel() for p in module.parameters())
    buffers = sum(b.numel() for b in module.buffers())
    size = 0
    for t in (*module.parameters(), *module.buffers()):
        item = torch.empty((), dtype=dtype).element_size() if dtype is not None else t.element_size()
        size += t.numel() * item
    return params, buffers, size


def physical_memory_bytes() -> int | None:
    """This machine's physical memory, or ``None`` where the OS does not say."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return None


def _shapes_of(loaded: Any) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    if not isinstance(loaded, dict):
        raise ValueError(f"expected a dict of tensors, got {type(loaded).__name__}")
    out = {}
    for key, value in loaded.items():
        if not (isinstance(key, str) and isinstance(value, torch.Tensor)):
            raise ValueError(f"expected a dict of tensors, got an entry {key!r}: {type(value).__name__}")
        out[key] = (tuple(value.shape), value.dtype)
    return out


def torch_file_shapes(source: Any) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """Shapes and dtypes of a ``torch.save``'d dict of tensors, without reading the tensor data.

    ``torch.load(weights_only=True, map_location="meta")``: only the small pickle describing the
    tensors is read; ``source`` is a path or a seekable binary file.
    """
    return _shapes_of(torch.load(source, map_location="meta", weights_only=True))


class _MemberWindow(io.RawIOBase):
    """A seekable read-only view of a stored (uncompressed) zip member, straight from the zip file."""

    def __init__(self, fp: Any, start: int, size: int) -> None:
        self._fp, self._start, self._size, self._pos = fp, start, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = min(max(base + offset, 0), self._size)
        return self._pos

    def readinto(self, buffer: Any) -> int:
        n = min(len(buffer), self._size - self._pos)
        if n <= 0:
            return 0
        self._fp.seek(self._start + self._pos)
        data = self._fp.read(n)
        buffer[: len(data)] = data
        self._pos += len(data)
        return len(data)


def zip_member_shapes(
    archive: zipfile.ZipFile, member: str
) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """:func:`torch_file_shapes` of a member of ``archive`` (read in place when it is stored uncompressed)."""
    info = archive.getinfo(member)
    if info.compress_type == zipfile.ZIP_STORED and archive.fp is not None:
        fp = open(archive.filename, "rb") if isinstance(archive.filename, str) else archive.fp  # noqa: SIM115
        try:
            fp.seek(info.header_offset)
            header = fp.read(30)
            if len(header) != 30 or header[:4] != b"PK\x03\x04":
                raise ValueError(f"member {member!r} has no local file header")
            name_len, extra_len = struct.unpack("<HH", header[26:30])
            window = _MemberWindow(fp, info.header_offset + 30 + name_len + extra_len, info.file_size)
            return torch_file_shapes(io.BufferedReader(window, _CHUNK))
        finally:
            if fp is not archive.fp:
                fp.close()
    with archive.open(member) as stream:  # compressed: zipfile's stream (slower, same bounded memory)
        return torch_file_shapes(stream)


def safetensors_shapes(path: str) -> dict[str, tuple[tuple[int, ...], str]]:
    """Shapes and dtypes of a ``.safetensors`` file from its header (the data is never read)."""
    with open(path, "rb") as fh:
        raw = fh.read(8)
        if len(raw) != 8:
            raise ValueError(f"{path}: not a safetensors file (shorter than its header length)")
        (length,) = struct.unpack("<Q", raw)
        if length > min(MAX_SAFETENSORS_HEADER, os.path.getsize(path) - 8):
            raise ValueError(f"{path}: safetensors header of {length} bytes (more than the file or 64 MiB)")
        header = json.loads(fh.read(length))
    if not isinstance(header, dict):
        raise ValueError(f"{path}: safetensors header is not a JSON object")
    out = {}
    for key, value in header.items():
        if key == "__metadata__":
            continue
        shape = value.get("shape") if isinstance(value, dict) else None
        if not (isinstance(shape, list) and all(isinstance(s, int) and s >= 0 for s in shape)):
            raise ValueError(f"{path}: tensor {key!r} has no valid shape in the header")
        out[key] = (tuple(shape), str(value.get("dtype")))
    return out


def directory_weight_shapes(path: str) -> dict[str, tuple[tuple[int, ...], Any]] | None:
    """The tensors a ``save_pretrained`` directory stores (safetensors headers, else ``*.bin`` pickles
    loaded on ``meta``); ``None`` when it holds no weight file."""
    names = sorted(os.listdir(path))
    files = [n for n in names if n.endswith(".safetensors")]
    reader: Any = safetensors_shapes
    if not files:
        files, reader = (
            [n for n in names if n.endswith(".bin") and n.startswith("pytorch_model")],
            torch_file_shapes,
        )
    if not files:
        return None
    out: dict[str, tuple[tuple[int, ...], Any]] = {}
    for name in files:
        out.update(reader(os.path.join(path, name)))
    return out


def check_matches_stored(
    model: torch.nn.Module,
    stored: dict[str, tuple[tuple[int, ...], Any]],
    prefix: str,
    what: str,
    exact_keys: bool = False,
) -> None:
    """Refuse (``ValueError`` naming ``what``) a meta ``model`` that does not fit the ``stored`` tensors.

    Every stored tensor named ``prefix + key`` for a key of ``model.state_dict()`` must have the
    model's shape, and the model's parameters and buffers together may not hold more elements than
    the stored tensors do (a config claiming a larger model than its weights). With ``exact_keys``
    (a full ``state_dict`` was stored), every tensor of the model must be stored.
    """
    state = model.state_dict(keep_vars=True)
    missing = [key for key in state if prefix + key not in stored] if exact_keys else []
    if missing:
        raise ValueError(
            f"{what} builds tensors the stored weights do not hold ({missing[:3]}{' ...' if len(missing) > 3 else ''}): "
            "the config does not describe the stored model"
        )
    for key, tensor in state.items():
        found = stored.get(prefix + key)
        if found is not None and tuple(found[0]) != tuple(tensor.shape):
            raise ValueError(
                f"{what} builds tensor {key!r} of shape {tuple(tensor.shape)}, but the stored weights hold "
                f"{tuple(found[0])}: the config does not describe the stored model"
            )
    params, buffers, _ = module_bytes(model)
    held = sum(math.prod(shape) for key, (shape, _) in stored.items() if key.startswith(prefix))
    slack = 2**20  # non-persistent buffers (rotary tables, masks) of real models are far smaller
    if params + buffers > held + slack:
        raise ValueError(
            f"{what} describes a model of {params} parameters and {buffers} buffer elements, but the stored "
            f"weights hold {held} values: the config does not describe the stored model"
        )


def _count_in_file(path: str, needle: bytes, limit: int) -> int:
    """Occurrences of ``needle`` in ``path``, streamed; stops counting past ``limit``."""
    count, tail = 0, b""
    with open(path, "rb") as fh:
        while count <= limit:
            chunk = fh.read(_CHUNK)
            if not chunk:
                break
            data = tail + chunk
            count += data.count(needle)
            tail = data[-(len(needle) - 1) :] if len(needle) > 1 else b""  # too short to hold a needle
    return count


def check_tokenizer_files(path: str, argument: str, names: Iterable[str] | None = None) -> None:
    """Refuse, before anything parses them, tokenizer files over :data:`TOKENIZER_FILE_LIMITS` or
    holding more than :data:`MAX_TOKENIZER_ENTRIES` vocabulary entries (``ValueError`` naming the file)."""
    for name in names if names is not None else TOKENIZER_FILE_LIMITS:
        file = os.path.join(path, name)
        if not os.path.lexists(file):
            continue
        if not os.path.isfile(file):
            raise ValueError(f"{argument}={path!r}: {name} is not a regular file")
        size, cap = os.path.getsize(file), TOKENIZER_FILE_LIMITS.get(name, 16 * 2**20)
        if size > cap:
            raise ValueError(
                f"{argument}={path!r}: {name} is {size} bytes, more than the {cap} a tokenizer file may be "
                "(egsw_gym.common.model_size.TOKENIZER_FILE_LIMITS)"
            )
        if name in ("tokenizer.json", "vocab.json", "added_tokens.json", "vocab.txt"):
            needle = b"\n" if name == "vocab.txt" else b'":'  # one per entry (an upper bound)
            entries = _count_in_file(file, needle, MAX_TOKENIZER_ENTRIES)
            if entries > MAX_TOKENIZER_ENTRIES:
                raise ValueError(
                    f"{argument}={path!r}: {name} holds more than {MAX_TOKENIZER_ENTRIES} entries (the "
                    "largest public vocabularies have about 262,000); "
                    "egsw_gym.common.model_size.MAX_TOKENIZER_ENTRIES bounds it"
                )
