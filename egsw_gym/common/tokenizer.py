"""The built-in character-level tokenizer, built locally (nothing is downloaded).

Every printable ASCII character is one token, plus four specials. It is a real
``transformers.PreTrainedTokenizerFast`` (saved and loaded with ``save_pretrained`` /
``from_pretrained``), so anything that accepts a Hugging Face tokenizer accepts it, and a user can
swap in the tokenizer of a real checkpoint by passing its local directory instead.
"""

from __future__ import annotations

import copy
import string
from functools import lru_cache

from egsw_gym.common.local_pretrained import from_local_directory

__all__ = [
    "SPECIAL_TOKENS",
    "CHARACTERS",
    "build_char_tokenizer",
    "load_tokenizer",
]

SPECIAL_TOKENS = ("<pad>", "<eos>", "<bos>", "<unk>")
#: printable ASCII without the whitespace controls other than space and newline.
CHARACTERS = tuple(c for c in string.printable if c not in "\t\r\x0b\x0c")


@lru_cache(maxsize=1)
def _build():
    # lazy: tokenizers/transformers are the optional [llm] extra, and slow to import
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS + CHARACTERS)}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    # One token per character; Fuse joins them back without inserting spaces.
    core.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    core.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token="<pad>",
        eos_token="<eos>",
        bos_token="<bos>",
        unk_token="<unk>",
        padding_side="left",
    )


def build_char_tokenizer():
    """Return the built-in character tokenizer (a fresh copy each call; building it is cached).

    Returns
    -------
    transformers.PreTrainedTokenizerFast
        ``pad_token_id == 0``, ``eos_token_id == 1``, left padding (what batched generation wants).
    """
    return copy.deepcopy(_build())


def load_tokenizer(tokenizer=None):
    """Resolve a tokenizer argument: ``None`` -> the built-in one; a path -> ``AutoTokenizer`` from that
    local directory (never the hub); a tokenizer object -> itself.

    Parameters
    ----------
    tokenizer : None, str, os.PathLike or transformers.PreTrainedTokenizerBase
        What the user passed.
    """
    if tokenizer is None:
        return build_char_tokenizer()
    if isinstance(tokenizer, (str, bytes)) or hasattr(tokenizer, "__fspath__"):
        from transformers import AutoTokenizer  # lazy: transformers is the optional [llm] extra

        tok = from_local_directory(
            AutoTokenizer,
            tokenizer,
            "tokenizer",
            "tokenizer",
            "a tokenizer object, or None for the built-in character tokenizer",
        )
        if tok.pad_token_id is None:
            tok.pad_token = tok.eos_token
        return tok
    if not hasattr(tokenizer, "encode") or not hasattr(tokenizer, "decode"):
        raise TypeError(
            f"tokenizer must be None, a local directory or a Hugging Face tokenizer, got {type(tokenizer).__name__}"
        )
    return tokenizer
