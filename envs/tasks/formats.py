"""Answer formats for instruct models: plain, R1-style tags and ``\\boxed{}``, with a format check.

``answer_format`` is an option of the tasks that support it (reasoning-gym and math tasks):

``"plain"``
    The whole completion (stripped) is the answer. Well formed when non-empty.
``"r1"``
    DeepSeek-R1 style: ``<think>reasoning</think><answer>final answer</answer>``. The answer is
    the content of the last ``<answer>...</answer>`` pair; the completion is well formed only when
    it is exactly one think block followed by one answer block (whitespace around them allowed).
``"boxed"``
    The answer is the content of the last ``\\boxed{...}`` (braces balanced); well formed when
    there is one.

All parsing is ``str.find``-based and linear in the completion's length (no regular expressions
that could backtrack). The format reward is the task's ``format_weight``:
``score = (1 - format_weight) * accuracy + format_weight * format_ok``.
"""

from __future__ import annotations

from .parsing import extract_boxed

__all__ = ["ANSWER_FORMATS", "check_answer_format", "extract_answer", "format_instruction", "wrap_answer"]

#: the supported ``answer_format`` values.
ANSWER_FORMATS = ("plain", "r1", "boxed")

_INSTRUCTIONS = {
    "plain": None,
    "r1": (
        "A conversation between User and Assistant. The user asks a question, and the Assistant solves "
        "it. The Assistant first thinks about the reasoning process and then gives the answer. The "
        "reasoning and the answer are enclosed within <think> </think> and <answer> </answer> tags, "
        "i.e. <think> reasoning here </think><answer> answer here </answer>. Put only the final "
        "answer inside the answer tags."
    ),
    "boxed": "Reason step by step, and put your final answer within \\boxed{}.",
}


def check_answer_format(answer_format: str) -> str:
    """Validate ``answer_format`` (one of :data:`ANSWER_FORMATS`)."""
    if answer_format not in ANSWER_FORMATS:
        raise ValueError(f"answer_format must be one of {ANSWER_FORMATS}, got {answer_format!r}")
    return answer_format


def format_instruction(answer_format: str) -> str | None:
    """The default system prompt that asks for ``answer_format`` (``None`` for ``"plain"``)."""
    return _INSTRUCTIONS[check_answer_format(answer_format)]


def _last_tag_content(text: str, tag: str) -> str | None:
    close = text.rfind(f"</{tag}>")
    if close < 0:
        return None
    open_ = text.rfind(f"<{tag}>", 0, close)
    return None if open_ < 0 else text[open_ + len(tag) + 2 : close]


def _r1_well_formed(text: str) -> bool:
    s = text.strip()
    if not s.startswith("<think>") or not s.endswith("</answer>"):
        return False
    end_think = s.find("</think>")
    if end_think < 0 or s.count("<think>") != 1 or s.count("</think>") != 1:
        return False
    rest = s[end_think + len("</think>") :].lstrip()
    return rest.startswith("<answer>") and rest.count("<answer>") == 1 and rest.count("</answer>") == 1


def extract_answer(completion: str, answer_format: str) -> tuple[str | None, bool]:
    """Read the answer out of a completion.

    Parameters
    ----------
    completion : str
        The generated text.
    answer_format : str
        One of :data:`ANSWER_FORMATS`.

    Returns
    -------
    tuple of (str or None, bool)
        The stripped answer (``None`` when the format's marker is missing) and whether the
        completion is well formed.
    """
    if answer_format == "plain":
        answer = completion.strip()
        return (answer or None), bool(answer)
    if answer_format == "r1":
        content = _last_tag_content(completion, "answer")
        return (None if content is None else content.strip()), _r1_well_formed(completion)
    check_answer_format(answer_format)
    content = extract_boxed(completion)
    return content, content is not None


def wrap_answer(answer: str, answer_format: str, reasoning: str = "") -> str:
    """A completion that gives ``answer`` in ``answer_format`` (reference completions, warm starts).

    Parameters
    ----------
    answer : str
        The final answer.
    answer_format : str
        One of :data:`ANSWER_FORMATS`.
    reasoning : str
        Text for the think block (``"r1"``) or before the box (``"boxed"``).

    Returns
    -------
    str
    """
    check_answer_format(answer_format)
    if answer_format == "r1":
        return f"<think>{reasoning}</think><answer>{answer}</answer>"
    if answer_format == "boxed":
        return f"{reasoning}\\boxed{{{answer}}}"
    return answer
