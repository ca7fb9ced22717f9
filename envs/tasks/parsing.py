"""Safe, bounded answer parsing shared by the verifiers.

Nothing here calls ``eval``, ``exec``, ``compile``, ``float`` on user text or ``int`` on
unbounded digit strings: numbers are matched by ASCII-only regular expressions without nested
quantifiers (linear time), and a literal with more than :data:`MAX_NUMBER_CHARS` characters is
refused instead of converted. Every function returns ``None`` on anything it does not
recognise; none of them raises on any ``str`` input.
"""

from __future__ import annotations

import re
from fractions import Fraction

__all__ = [
    "MAX_NUMBER_CHARS",
    "parse_number",
    "format_number",
    "extract_final_answer",
    "extract_boxed",
]

#: the longest numeric literal (digits, separators and sign) that is converted; longer is refused.
MAX_NUMBER_CHARS = 48

# A number as people write it: optional sign and dollar sign, digits with optional thousands
# separators, optional decimals, optional trailing period (end of sentence). ASCII digits only.
_NUMBER = re.compile(
    r"""
    \s*
    (?P<sign>[+-]?)\s*\$?\s*(?P<sign2>[+-]?)
    (?P<int>\d{1,3}(?:,\d{3})+|\d+)?
    (?:\.(?P<frac>\d+))?
    \.?\s*
    """,
    re.VERBOSE | re.ASCII,
)
_BOXED = "\\boxed{"
_HASHES = "####"


def parse_number(text: str) -> Fraction | None:
    """Parse one number written the way a person (or GSM8K) writes it, exactly.

    Accepted: ``"42"``, ``"-7"``, ``"1,234"``, ``"$18"``, ``"-$3.50"``, ``"18."`` (trailing
    period), ``" 0.25 "``, ``".5"``. Refused (``None``): empty text, exponents (``1e5``), ``nan``,
    ``inf``, fractions written with ``/``, non-ASCII digits, malformed separators (``1,23``), and
    any literal longer than :data:`MAX_NUMBER_CHARS` characters once stripped.

    Parameters
    ----------
    text : str
        The candidate number, possibly surrounded by whitespace.

    Returns
    -------
    fractions.Fraction or None
        The exact value (decimals become exact fractions: ``"0.1" -> 1/10``), or ``None``.
    """
    if not isinstance(text, str):
        return None
    stripped = text.strip()
    if not stripped or len(stripped) > MAX_NUMBER_CHARS:
        return None
    m = _NUMBER.fullmatch(stripped)
    if m is None:
        return None
    sign, sign2, int_part, frac = m.group("sign", "sign2", "int", "frac")
    if int_part is None and frac is None:
        return None
    if sign and sign2:
        return None
    value = Fraction(int((int_part or "0").replace(",", "")))
    if frac:
        value += Fraction(int(frac), 10 ** len(frac))
    return -value if "-" in (sign + sign2) else value


def format_number(value: Fraction | int) -> str:
    """Write an exact number canonically: integers bare (``"18"``), others as a reduced fraction.

    Parameters
    ----------
    value : fractions.Fraction or int
        The number.

    Returns
    -------
    str
        ``"18"``, ``"-3"`` or ``"7/2"``.
    """
    value = Fraction(value)
    return str(value.numerator) if value.denominator == 1 else f"{value.numerator}/{value.denominator}"


def _boxed_content(text: str, start: int, max_chars: int = 256) -> str | None:
    """Content of the ``\\boxed{`` opened just before ``start``, balancing braces, at most ``max_chars``."""
    depth = 1
    end = min(len(text), start + max_chars)
    for i in range(start, end):
        c = text[i]
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return text[start:i]
    return None


def extract_final_answer(text: str) -> tuple[str | None, str | None]:
    """Find the final answer of a worked solution: after the last ``####`` or in the last ``\\boxed{}``.

    Whichever marker occurs last in the text wins. After ``####`` the answer is the rest of that
    line. Inside ``\\boxed{...}`` braces are balanced and the content is limited to 256 characters.

    Parameters
    ----------
    text : str
        The completion.

    Returns
    -------
    tuple of (str or None, str or None)
        ``(answer_text, marker)`` with ``marker`` in ``{"####", "boxed"}``, or ``(None, None)``
        when neither marker is present (or a ``\\boxed{`` is never closed).
    """
    if not isinstance(text, str):
        return None, None
    h = text.rfind(_HASHES)
    b = text.rfind(_BOXED)
    if h < 0 and b < 0:
        return None, None
    if h > b:
        rest = text[h + len(_HASHES) :]
        nl = rest.find("\n")
        return (rest if nl < 0 else rest[:nl]).strip(), "####"
    content = extract_boxed(text)
    return (None, None) if content is None else (content, "boxed")


def extract_boxed(text: str, max_chars: int = 256) -> str | None:
    """The stripped content of the last ``\\boxed{...}`` (braces balanced, at most ``max_chars``).

    Parameters
    ----------
    text : str
        The completion.
    max_chars : int
        The longest content read; a longer (or never closed) box gives ``None``.

    Returns
    -------
    str or None
    """
    if not isinstance(text, str):
        return None
    b = text.rfind(_BOXED)
    if b < 0:
        return None
    content = _boxed_content(text, b + len(_BOXED), max_chars)
    return None if content is None else content.strip()
