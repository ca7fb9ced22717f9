"""Loading a Hugging Face ``save_pretrained`` directory that a user (or a checkpoint) names: local only.

:class:`~egsw_gym.policies.lm.LMPolicy`'s ``model`` and the environments' ``tokenizer`` both take
a path. Neither may reach the hub, and a path that is not a loadable directory gets a
``ValueError`` naming the argument and the fix, not the loader's own message alone. Code shipped
in the directory (a config's ``auto_map``) is never run, nor offered to be run. Tokenizer files are
bounded in size and entries before transformers parses them
(:func:`~egsw_gym.common.model_size.check_tokenizer_files`), and ``config.json`` in size.
"""

from __future__ import annotations

import os
from typing import Any

__all__ = ["from_local_directory", "MAX_CONFIG_BYTES"]

#: largest ``config.json`` read (real configs are a few kilobytes)
MAX_CONFIG_BYTES = 16 * 2**20


def from_local_directory(
    loader: Any, path: str | os.PathLike, argument: str, kind: str, others: str, **kwargs: Any
) -> Any:
    """``loader.from_pretrained(path, local_files_only=True, trust_remote_code=False, **kwargs)`` for a local directory.

    Parameters
    ----------
    loader : type
        A ``transformers`` auto class (``AutoTokenizer``, ``AutoModelForCausalLM``).
    path : str or os.PathLike
        The directory.
    argument : str
        The argument's name in messages (``"model"``, ``"tokenizer"``).
    kind : str
        What the directory should hold, in messages (``"tokenizer"``).
    others : str
        The argument's other accepted values, in the message for a path that is not a directory.
    """
    from egsw_gym.common.model_size import check_tokenizer_files

    path = os.fspath(path)
    if not os.path.isdir(path):
        raise ValueError(
            f"{argument}={path!r} is not a local directory; pass a directory written by save_pretrained "
            f"(models are never fetched from the hub), {others}"
        )
    config = os.path.join(path, "config.json")
    if os.path.isfile(config) and os.path.getsize(config) > MAX_CONFIG_BYTES:
        raise ValueError(f"{argument}={path!r}: config.json is over {MAX_CONFIG_BYTES} bytes, not a config")
    if "Tokenizer" in getattr(loader, "__name__", ""):
        check_tokenizer_files(path, argument)
    try:
        # trust_remote_code=False, not the default None: with None, a directory whose config names
        # its own code (auto_map) makes transformers *ask* on a terminal whether to run it.
        return loader.from_pretrained(path, local_files_only=True, trust_remote_code=False, **kwargs)
    except (OSError, ValueError, KeyError) as err:  # not such a directory, or one transformers refuses
        raise ValueError(
            f"{argument}={path!r} is a directory but not a loadable {kind} ({type(err).__name__}: {err}); "
            "pass a directory written by save_pretrained"
        ) from err
