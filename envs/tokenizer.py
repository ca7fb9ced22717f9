"""Re-export of :mod:`egsw_gym.common.tokenizer` (the built-in character tokenizer).

The tokenizer lives in ``egsw_gym.common`` because policies and ``egsw_gym.llm`` use it as much as
the environments do; ``egsw_gym.envs.tokenizer`` keeps working for existing imports.
"""

from egsw_gym.common.tokenizer import (
    CHARACTERS,
    SPECIAL_TOKENS,
    build_char_tokenizer,
    decode_ids,
    encode_text,
    load_tokenizer,
)

__all__ = [
    "SPECIAL_TOKENS",
    "CHARACTERS",
    "build_char_tokenizer",
    "decode_ids",
    "encode_text",
    "load_tokenizer",
]
