"""The logic both text environments share: task, tokenizer, spaces, prompt encoding, scoring.

:class:`TextGenerationCore` is not an environment: :class:`~egsw_gym.envs.text_generation.TextGenerationEnv`
(one episode at a time) and :class:`~egsw_gym.envs.vector.TextGenerationVectorEnv` (a batch) each
hold one and add their own stepping. The observation/action contract is documented in
:mod:`egsw_gym.envs.text_generation`.
"""

from __future__ import annotations

import copy
import os
from collections import OrderedDict
from typing import Any

import numpy as np
from gymnasium import spaces

from egsw_gym.common.tokenizer import load_tokenizer

from .tasks import TRAIN_SIZE, Problem, Task, make_task
from .tasks.base import check_split

__all__ = [
    "PROMPT_TRUNCATION",
    "RESET_OPTION_KEYS",
    "TextGenerationCore",
    "resolve_chat_template",
    "set_eos_token",
]

#: allowed values of ``prompt_truncation``.
PROMPT_TRUNCATION = ("error", "left")
#: keys ``reset(options=...)`` accepts.
RESET_OPTION_KEYS = ("prompt_index",)
_PROMPT_CACHE_SIZE = 8192


def resolve_chat_template(tokenizer: Any, chat_template: bool | None) -> bool:
    """Whether prompts go through the tokenizer's chat template.

    Parameters
    ----------
    tokenizer : transformers.PreTrainedTokenizerBase
        The tokenizer.
    chat_template : bool or None
        ``None``: use it when the tokenizer has one; ``True``: require one; ``False``: raw prompts.

    Returns
    -------
    bool
    """
    has = bool(getattr(tokenizer, "chat_template", None)) and hasattr(tokenizer, "apply_chat_template")
    if chat_template is None:
        return has
    if not isinstance(chat_template, bool):
        raise ValueError(f"chat_template must be None, True or False, got {chat_template!r}")
    if chat_template and not has:
        raise ValueError(
            "chat_template=True but the tokenizer has no chat template; set tokenizer.chat_template "
            "(a Jinja string) or pass chat_template=False for raw prompts"
        )
    return chat_template


def set_eos_token(tokenizer: Any, eos_token: str) -> None:
    """Make ``eos_token`` (an existing single token, e.g. ChatML's ``"<|im_end|>"``) the token that
    ends episodes, as chat models end their turn with it. The environment calls it on its own copy.

    Parameters
    ----------
    tokenizer : transformers.PreTrainedTokenizerBase
        The tokenizer (modified in place).
    eos_token : str
        A token of its vocabulary.
    """
    vocab = tokenizer.get_vocab() if hasattr(tokenizer, "get_vocab") else {}
    if not isinstance(eos_token, str) or eos_token not in vocab:
        raise ValueError(
            f"eos_token must be a single token of the tokenizer's vocabulary (e.g. '<|im_end|>'), got {eos_token!r}"
        )
    tokenizer.eos_token = eos_token


def _positive_int(name: str, value: Any, upper: int = 1 << 20) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 1 <= value <= upper:
        raise ValueError(f"{name} must be an int in [1, {upper}], got {value!r}")
    return int(value)


class TextGenerationCore:
    """Everything the single and the vector environment share: task, tokenizer, spaces, prompt
    encoding and the final scoring. Not an environment itself.

    Parameters
    ----------
    task : str or Task
        ``"arithmetic"``, ``"countdown"``, ``"gsm8k"``, ``"jsonl"`` or a
        :class:`~egsw_gym.envs.tasks.Task` object.
    tokenizer : None, str, os.PathLike or tokenizer object
        ``None``: the built-in character tokenizer; a local directory; or a Hugging Face tokenizer.
    max_prompt_tokens : int or None
        Prompt slots. ``None``: for generated tasks the task's bound on prompt characters plus the
        tokenizer's special tokens (exact for the built-in tokenizer); for JSONL the longest
        tokenized prompt in the file.
    max_new_tokens : int or None
        Completion budget. ``None``: ``task.suggested_max_new_tokens``.
    split : str
        ``"train"`` or ``"test"``.
    data_path : str, os.PathLike or None
        JSONL file for ``task="jsonl"``.
    prompt_truncation : str
        What to do with a prompt longer than ``max_prompt_tokens``: ``"error"`` (default, raise a
        ``ValueError`` at reset) or ``"left"`` (keep its last ``max_prompt_tokens`` tokens).
    chat_template : bool or None
        Render prompts as chat messages with the tokenizer's chat template
        (``apply_chat_template(messages, add_generation_prompt=True)``). ``None`` (default): when
        the tokenizer has a template; ``True``: require one; ``False``: raw text.
    system_prompt : str or None
        The system message (``None``: the task's own, e.g. its answer-format instruction; ``""``:
        none). Without a chat template it is prepended to the prompt, followed by a blank line.
    eos_token : str or None
        Make this existing token the one that ends episodes (e.g. ``"<|im_end|>"``, the end of an
        assistant turn in ChatML templates); ``None``: the tokenizer's ``eos_token``.
    **task_kwargs
        Forwarded to the task (difficulty knobs such as ``digits``, ``operators``,
        ``num_numbers``, ``kinds``; ``seed``, ``num_test``, ``format_weight``).
    """

    def __init__(
        self,
        task: str | Task = "arithmetic",
        tokenizer: Any = None,
        max_prompt_tokens: int | None = None,
        max_new_tokens: int | None = None,
        split: str = "train",
        data_path: str | os.PathLike | None = None,
        prompt_truncation: str = "error",
        chat_template: bool | None = None,
        system_prompt: str | None = None,
        eos_token: str | None = None,
        **task_kwargs: Any,
    ):
        self.split = check_split(split)
        if prompt_truncation not in PROMPT_TRUNCATION:
            raise ValueError(
                f"prompt_truncation must be one of {PROMPT_TRUNCATION}, got {prompt_truncation!r}"
            )
        self.prompt_truncation = prompt_truncation
        self.task = make_task(task, data_path=data_path, **task_kwargs)
        if self.task.num_problems(self.split) <= 0:
            raise ValueError(
                f"split={self.split!r} of task {self.task.name!r} is empty; use the other split or more data"
            )
        self.tokenizer = load_tokenizer(tokenizer)
        self.task.check_tokenizer(self.tokenizer)  # characters that would silently become <unk>
        self.vocab_size = int(len(self.tokenizer))
        if eos_token is not None:
            self.tokenizer = copy.deepcopy(self.tokenizer)  # never modify the caller's tokenizer
            set_eos_token(self.tokenizer, eos_token)
        self.use_chat_template = resolve_chat_template(self.tokenizer, chat_template)
        if system_prompt is not None and not isinstance(system_prompt, str):
            raise ValueError(f"system_prompt must be a str or None, got {type(system_prompt).__name__}")
        self.system_prompt = system_prompt
        eos = getattr(self.tokenizer, "eos_token_id", None)
        if eos is None:
            raise ValueError("tokenizer has no eos_token_id; the environment ends episodes on EOS")
        pad = getattr(self.tokenizer, "pad_token_id", None)
        self.eos_token_id = int(eos)
        self.pad_token_id = int(eos if pad is None else pad)
        if max_prompt_tokens is None:
            max_prompt_tokens = self._default_prompt_tokens()
        self.max_prompt_tokens = _positive_int("max_prompt_tokens", max_prompt_tokens)
        if max_new_tokens is None:
            max_new_tokens = self.task.suggested_max_new_tokens
        self.max_new_tokens = _positive_int("max_new_tokens", max_new_tokens)
        self.seq_len = self.max_prompt_tokens + self.max_new_tokens
        self._cache: OrderedDict[str, tuple[np.ndarray, np.ndarray]] = OrderedDict()  # prompt -> encoding

    def _default_prompt_tokens(self) -> int:
        if self.task.num_problems("train") < TRAIN_SIZE and not self.task.prompt_chars_bounded:
            # a finite data set without a known bound: measure it
            prompts = [
                self.task.problem(i, s) for s in ("train", "test") for i in range(self.task.num_problems(s))
            ]
            return max(len(self.prompt_ids(p)) for p in prompts)
        # The template (or system prompt) around an empty question, plus at most one token per
        # character of the question: exact for the character tokenizer, an upper bound for
        # byte-level BPE on ASCII text. A longer prompt is never cut silently (see encode).
        return len(self.prompt_ids(Problem("", ""))) + self.task.max_prompt_chars()

    def prompt_ids(self, problem: Problem) -> list[int]:
        """The prompt's token ids: the task's chat messages through the tokenizer's chat template
        (``apply_chat_template(..., add_generation_prompt=True)``) when ``use_chat_template``, else
        the task's raw prompt (system prompt, blank line, prompt) through ``tokenizer.encode``.

        Parameters
        ----------
        problem : Problem
            The problem.

        Returns
        -------
        list of int
        """
        if self.use_chat_template:
            messages = self.task.messages(problem, self.system_prompt)
            out = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
            ids = out["input_ids"] if hasattr(out, "keys") else out
            return [int(i) for i in ids]
        return list(self.tokenizer.encode(self.task.raw_prompt(problem, self.system_prompt)))

    # ------------------------------------------------------------------------------------ spaces
    def observation_space(self) -> spaces.Dict:
        """The single-environment observation space (see the module docstring)."""
        return spaces.Dict(
            {
                "input_ids": spaces.Box(0, self.vocab_size - 1, (self.seq_len,), np.int64),
                "attention_mask": spaces.Box(0, 1, (self.seq_len,), np.int64),
            }
        )

    def action_space(self) -> spaces.Discrete:
        """``Discrete(vocab_size)``."""
        return spaces.Discrete(self.vocab_size)

    # ----------------------------------------------------------------------------------- prompts
    def choose_problem(self, rng: np.random.Generator, options: dict | None) -> Problem:
        """The problem of a reset: ``options["prompt_index"]`` if given, else sampled with ``rng``.

        Parameters
        ----------
        rng : numpy.random.Generator
            The environment's generator (advanced by one draw when sampling).
        options : dict or None
            Reset options; only ``"prompt_index"`` is understood.

        Returns
        -------
        Problem
        """
        index = None
        if options:
            unknown = [k for k in options if k not in RESET_OPTION_KEYS]
            if unknown:
                raise ValueError(f"unknown reset option(s) {unknown}; allowed: {RESET_OPTION_KEYS}")
            index = options.get("prompt_index")
        if index is None:
            return self.task.sample(rng, self.split)
        return self.task.problem(self.task.check_index(index, self.split), self.split)

    def encode(self, problem: Problem) -> tuple[np.ndarray, np.ndarray]:
        """The left-padded prompt row and its mask, both ``(max_prompt_tokens,)`` int64 (cached).

        Parameters
        ----------
        problem : Problem
            The problem whose prompt to encode.

        Returns
        -------
        tuple of numpy.ndarray
            ``(input_ids, attention_mask)`` for slots ``[0, max_prompt_tokens)``.
        """
        # The encoding depends on the prompt text only (a str caches its hash, so the lookup is cheap).
        key = problem.prompt
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit
        ids = self.prompt_ids(problem)
        P = self.max_prompt_tokens
        if len(ids) > P:
            if self.prompt_truncation == "error":
                raise ValueError(
                    f"the prompt of problem {problem.metadata.get('index')} has {len(ids)} tokens but "
                    f"max_prompt_tokens={P}; raise max_prompt_tokens or pass prompt_truncation='left'"
                )
            ids = ids[-P:]
        row = np.full(P, self.pad_token_id, dtype=np.int64)
        mask = np.zeros(P, dtype=np.int64)
        if ids:
            row[P - len(ids) :] = ids
            mask[P - len(ids) :] = 1
        row.flags.writeable = False
        mask.flags.writeable = False
        self._cache[key] = (row, mask)
        if len(self._cache) > _PROMPT_CACHE_SIZE:
            self._cache.popitem(last=False)
        return row, mask

    @staticmethod
    def reset_info(problem: Problem) -> dict[str, Any]:
        """The info of a reset: ``prompt``, ``answer``, ``prompt_index`` and ``split``.

        Parameters
        ----------
        problem : Problem
            The episode's problem.

        Returns
        -------
        dict
        """
        return {
            "prompt": problem.prompt,
            "answer": problem.answer,
            "prompt_index": int(problem.metadata.get("index", -1)),
            "split": str(problem.metadata.get("split", "")),
        }

    # ----------------------------------------------------------------------------------- scoring
    def decode(self, generated: np.ndarray) -> str:
        """Decode generated token ids, dropping one final EOS and all special tokens.

        Parameters
        ----------
        generated : numpy.ndarray
            The episode's generated ids, in order.

        Returns
        -------
        str
        """
        ids = generated.tolist()
        if ids and ids[-1] == self.eos_token_id:
            ids = ids[:-1]
        return self.tokenizer.decode(ids, skip_special_tokens=True) if ids else ""

    def finish(self, problem: Problem, generated: np.ndarray) -> tuple[float, dict[str, Any]]:
        """Score a finished episode.

        Parameters
        ----------
        problem : Problem
            The episode's problem.
        generated : numpy.ndarray
            Its generated ids (EOS included when it terminated).

        Returns
        -------
        tuple of (float, dict)
            The reward and the final info (see the module docstring).
        """
        completion = self.decode(generated)
        result = self.task.score(completion, problem)
        info = {
            **result.breakdown,
            **self.reset_info(problem),
            "completion": completion,
            "score": float(result.score),
            "num_new_tokens": int(len(generated)),
        }
        return float(result.score), info
