"""Text generation as a token-level Gymnasium environment with a verifiable reward.

The contract (shared by :class:`TextGenerationEnv` and
:class:`~egsw_gym.envs.vector.TextGenerationVectorEnv`; the LM policy and GRPO rely on it):

Observation
    ``spaces.Dict({"input_ids": Box(0, vocab_size - 1, (L,), int64),
    "attention_mask": Box(0, 1, (L,), int64)})`` with ``L = max_prompt_tokens + max_new_tokens``.
    The prompt's tokens are LEFT-padded into slots ``[0, max_prompt_tokens)``; the tokens
    generated so far follow from slot ``max_prompt_tokens`` on and the rest is right-padded with
    the pad id. ``attention_mask`` is 1 exactly on real (prompt or generated) tokens. So after
    ``t`` steps the generated tokens are ``input_ids[P:P + t]`` (``P = max_prompt_tokens``).
Action
    ``Discrete(vocab_size)``: the next token id (``vocab_size == len(tokenizer)``).
Episode
    One prompt per episode. ``terminated`` when the action is the EOS id (the EOS is written into
    the observation too); ``truncated`` after ``max_new_tokens`` tokens without EOS.
Reward
    0.0 on every step but the last; on the last step, the task's verifier score (in ``[0, 1]``)
    of the decoded completion.
Info
    At reset: ``prompt`` (str), ``answer`` (str), ``prompt_index`` (int, the problem's index in
    the split) and ``split``. On intermediate steps: ``{}``. On the last step: the same four, plus
    ``completion`` (the generated tokens without the final EOS, decoded with
    ``skip_special_tokens=True``), ``score`` (float, equal to the reward), ``num_new_tokens``
    (int, EOS included) and the verifier's breakdown (``correct``, ``format_ok``, ``parsed`` and
    the task's own keys, see :class:`~egsw_gym.envs.tasks.ScoreResult`).
Reset
    ``reset(seed=s)`` reseeds ``np_random`` from ``s`` and samples the problem with it, so the
    same seed always gives the same prompt (this is how GRPO makes a group share a prompt);
    ``reset()`` without a seed continues the generator. ``reset(options={"prompt_index": k})``
    picks problem ``k`` of the split (``0 <= k < task.num_problems(split)``) regardless of the
    generator; ``info["prompt_index"]`` always names the problem, so
    ``reset(options={"prompt_index": info["prompt_index"]})`` reproduces a sampled prompt.
"""

from __future__ import annotations

import os
from typing import Any

import gymnasium as gym
import numpy as np

from .core import PROMPT_TRUNCATION, TextGenerationCore, resolve_chat_template
from .tasks import Problem, Task

__all__ = [
    "TextGenerationEnv",
    "TextGenerationCore",
    "PROMPT_TRUNCATION",
    "check_action",
    "render_text_rgb",
    "resolve_chat_template",
]


#: the text ``render_mode="rgb_array"`` draws: ``_RGB_COLS`` characters by ``_RGB_ROWS`` lines.
_RGB_COLS, _RGB_ROWS, _CELL_W, _CELL_H = 64, 12, 8, 14


def check_action(action: Any, vocab_size: int) -> int:
    """A single action as a token id, or ``ValueError`` for anything ``Discrete(vocab_size)`` rejects.

    Python and NumPy integers (0-d integer arrays too) take a cheap path; everything else goes
    through ``spaces.Discrete.contains``, so floats (``3.7``, ``np.float32(5.5)``, ``5.0``),
    strings, ``Decimal``, ``inf`` and out-of-range ids are refused instead of truncated.

    Parameters
    ----------
    action : Any
        What was passed to ``step``.
    vocab_size : int
        The size of the action space.

    Returns
    -------
    int
    """
    if isinstance(action, (int, np.integer)) or (
        isinstance(action, np.ndarray) and action.shape == () and np.issubdtype(action.dtype, np.integer)
    ):
        token = int(action)
        if 0 <= token < vocab_size:
            return token
    raise ValueError(
        f"action must be a token id (an integer) in [0, {vocab_size}) as action_space.contains "
        f"accepts, got {action!r} ({type(action).__name__}); floats, strings and other types are not "
        "truncated to an id"
    )


def render_text_rgb(text: str) -> np.ndarray:
    """Draw text into a fixed-size RGB image (``render_mode="rgb_array"``).

    The image is always ``(_RGB_ROWS * 14, _RGB_COLS * 8, 3)`` uint8 (video recorders need a
    constant frame size): the text is wrapped at 64 characters per line and only its last 12
    lines are drawn, black on white, with Pillow's built-in bitmap font.

    Parameters
    ----------
    text : str
        What to draw (prompt plus completion so far).

    Returns
    -------
    numpy.ndarray
    """
    from PIL import Image, ImageDraw, ImageFont  # Pillow comes with matplotlib, a dependency

    lines: list[str] = []
    for para in text.split("\n"):
        lines.extend([para[i : i + _RGB_COLS] for i in range(0, len(para), _RGB_COLS)] or [""])
    image = Image.new("RGB", (_RGB_COLS * _CELL_W, _RGB_ROWS * _CELL_H), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    for row, line in enumerate(lines[-_RGB_ROWS:]):
        printable = "".join(c if c.isprintable() and ord(c) < 128 else "?" for c in line)
        draw.text((2, row * _CELL_H), printable, fill="black", font=font)
    return np.asarray(image, dtype=np.uint8)


def check_render_mode(render_mode: str | None, modes: list[str]) -> str | None:
    """Validate ``render_mode`` against the environment's ``metadata["render_modes"]``."""
    if render_mode is not None and render_mode not in modes:
        raise ValueError(f"render_mode must be None or one of {modes}, got {render_mode!r}")
    return render_mode


class TextGenerationEnv(gym.Env):
    """One prompt per episode, one token per step, the verifier's score at the end.

    See the module docstring for the exact observation layout, info keys and reset semantics.

    Parameters
    ----------
    task : str or Task
        ``"arithmetic"`` (default), ``"countdown"``, ``"gsm8k"``, ``"jsonl"`` or a
        :class:`~egsw_gym.envs.tasks.Task` object (then no task keyword arguments).
    tokenizer : None, str, os.PathLike or tokenizer object
        ``None`` (default): the built-in character tokenizer; a local ``save_pretrained``
        directory (never the hub); or a Hugging Face tokenizer object.
    max_prompt_tokens : int or None
        Prompt slots (default: fits every prompt of the task, see :class:`TextGenerationCore`).
    max_new_tokens : int or None
        Completion budget (default ``task.suggested_max_new_tokens``).
    split : str
        ``"train"`` (default) or ``"test"`` (held out, never overlapping train).
    data_path : str, os.PathLike or None
        The local JSONL file for ``task="jsonl"``.
    prompt_truncation : str
        ``"error"`` (default) or ``"left"``; see :class:`TextGenerationCore`.
    render_mode : str or None
        ``None``, ``"ansi"`` (``render()`` returns prompt plus completion so far) or
        ``"rgb_array"`` (that text drawn into a fixed-size image; what SB3's ``make_vec_env`` asks for).
    **task_kwargs
        Forwarded to the task: difficulty knobs (arithmetic ``digits``, ``operators``,
        ``allow_negative``; countdown ``num_numbers``, ``max_number``, ``max_target``; gsm8k
        ``kinds``; jsonl ``test_fraction``, ``match``, ``test_data_path``) and ``seed``,
        ``num_test``, ``format_weight``, ``max_completion_chars``.

    Attributes
    ----------
    task : Task
        The task (prompts and verifier).
    tokenizer : transformers.PreTrainedTokenizerBase
        The tokenizer.
    core : TextGenerationCore
        Prompt encoding (``core.encode(problem) -> (row, mask)``, exactly the observation's
        prompt slots) and final scoring (``core.finish(problem, generated_ids) -> (reward,
        info)``), shared with the vector environment; evaluation code can use it to score
        completions exactly as an episode would.
    max_prompt_tokens, max_new_tokens, eos_token_id, pad_token_id, vocab_size : int
        The resolved settings.
    problem : Problem or None
        The current episode's problem.
    """

    metadata = {"render_modes": ["ansi", "rgb_array"], "render_fps": 4}

    def __init__(
        self,
        task: str | Task = "arithmetic",
        tokenizer: Any = None,
        max_prompt_tokens: int | None = None,
        max_new_tokens: int | None = None,
        split: str = "train",
        data_path: str | os.PathLike | None = None,
        prompt_truncation: str = "error",
        render_mode: str | None = None,
        **task_kwargs: Any,
    ):
        self.render_mode = check_render_mode(render_mode, self.metadata["render_modes"])
        self.core = TextGenerationCore(
            task,
            tokenizer,
            max_prompt_tokens,
            max_new_tokens,
            split,
            data_path,
            prompt_truncation,
            **task_kwargs,
        )
        self.task, self.tokenizer = self.core.task, self.core.tokenizer
        self.split, self.max_prompt_tokens, self.max_new_tokens = (
            self.core.split,
            self.core.max_prompt_tokens,
            self.core.max_new_tokens,
        )
        self.eos_token_id, self.pad_token_id, self.vocab_size = (
            self.core.eos_token_id,
            self.core.pad_token_id,
            self.core.vocab_size,
        )
        self.observation_space = self.core.observation_space()
        self.action_space = self.core.action_space()
        L = self.core.seq_len
        self._ids = np.full(L, self.pad_token_id, dtype=np.int64)
        self._mask = np.zeros(L, dtype=np.int64)
        self._t = 0
        self._done = True
        self.problem: Problem | None = None

    def _obs(self) -> dict[str, np.ndarray]:
        return {"input_ids": self._ids.copy(), "attention_mask": self._mask.copy()}

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Start an episode with a new prompt.

        Parameters
        ----------
        seed : int or None
            Reseeds ``np_random``; the prompt is then a deterministic function of the seed.
        options : dict or None
            ``{"prompt_index": k}`` picks problem ``k`` of the split instead of sampling.

        Returns
        -------
        tuple of (dict, dict)
            The observation and ``{"prompt", "answer", "prompt_index", "split"}``.
        """
        super().reset(seed=seed)
        self.problem = self.core.choose_problem(self.np_random, options)
        row, mask = self.core.encode(self.problem)
        P = self.max_prompt_tokens
        self._ids.fill(self.pad_token_id)
        self._mask.fill(0)
        self._ids[:P], self._mask[:P] = row, mask
        self._t, self._done = 0, False
        return self._obs(), self.core.reset_info(self.problem)

    def step(self, action: int) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        """Append one token.

        Parameters
        ----------
        action : int
            A token id in ``[0, vocab_size)``.

        Returns
        -------
        tuple
            ``(obs, reward, terminated, truncated, info)``; reward and the full info only on the
            last step (see the module docstring).
        """
        if self._done:
            raise RuntimeError("the episode is over (or never started); call reset() before step()")
        token = check_action(action, self.vocab_size)
        pos = self.max_prompt_tokens + self._t
        self._ids[pos], self._mask[pos] = token, 1
        self._t += 1
        terminated = token == self.eos_token_id
        truncated = not terminated and self._t >= self.max_new_tokens
        if not (terminated or truncated):
            return self._obs(), 0.0, False, False, {}
        self._done = True
        P = self.max_prompt_tokens
        reward, info = self.core.finish(self.problem, self._ids[P : P + self._t])
        return self._obs(), reward, terminated, truncated, info

    def render(self) -> str | np.ndarray | None:
        """The prompt followed by the completion so far: a ``str`` with ``render_mode="ansi"``, an
        RGB image of that text (see :func:`render_text_rgb`) with ``"rgb_array"``; ``None`` without
        a render mode or before the first reset."""
        if self.render_mode is None or self.problem is None:
            return None
        P = self.max_prompt_tokens
        text = self.problem.prompt + self.core.decode(self._ids[P : P + self._t])
        return text if self.render_mode == "ansi" else render_text_rgb(text)
