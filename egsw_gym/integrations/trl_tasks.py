"""This project's tasks as TRL data: a prompt dataset and a reward function that uses the task's verifier.

Re-exported by :mod:`egsw_gym.integrations.trl`; see :func:`task_dataset` and :func:`task_reward_func`.
The two meet through the dataset's ``index`` and ``split`` columns: TRL passes every dataset column
to the reward functions, and the reward function looks the problem up with
``task.problem(index, split)`` (deterministic for every task), so it scores with the problem's own
metadata (Countdown's numbers, a JSONL row's answer) and never trusts text from the completion.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from egsw_gym.envs.tasks import TRAIN_SIZE, Task, make_task
from egsw_gym.envs.tasks.base import check_split

__all__ = ["task_dataset", "task_reward_func", "completion_text", "greedy_accuracy"]


def _resolve(task: str | Task, task_kwargs: dict[str, Any]) -> Task:
    if isinstance(task, Task) and task_kwargs:
        raise ValueError(
            f"task is already a Task object; configure it directly instead of passing {sorted(task_kwargs)}"
        )
    return make_task(task, **task_kwargs)


def task_dataset(
    task: str | Task,
    split: str = "train",
    n: int | None = None,
    *,
    chat: bool = False,
    system_prompt: str | None = None,
    **task_kwargs: Any,
) -> Any:
    """A ``datasets.Dataset`` of the first ``n`` problems of a task's split, in TRL's prompt format.

    Parameters
    ----------
    task : str or Task
        A task name of :func:`~egsw_gym.envs.tasks.make_task` (``"arithmetic"``, ``"countdown"``,
        ``"gsm8k"``, ``"jsonl"``, ``"reasoning_gym"``) or a task object.
    split : {"train", "test"}
        Which split the problems come from (``"test"`` is held out from training).
    n : int or None
        How many problems (the first ``n``; problem ``i`` is ``task.problem(i, split)``). ``None``
        takes the whole split, which must then be finite (a generated task's train split is not).
    chat : bool
        ``False`` (default): ``prompt`` is plain text, ``task.raw_prompt`` (the system prompt, if
        any, then the problem), what the environment feeds a tokenizer without a chat template.
        ``True``: ``prompt`` is a list of chat messages, ``task.messages``; TRL applies the
        tokenizer's chat template (an instruct model such as Qwen2.5-Instruct wants this).
    system_prompt : str or None
        Overrides the task's system prompt (``""``: none).
    **task_kwargs
        The task's own keyword arguments when ``task`` is a name (``seed``, ``format_weight``,
        ``data_path`` for ``"jsonl"`` ...). Pass the same ones to :func:`task_reward_func`.

    Returns
    -------
    datasets.Dataset
        Columns ``prompt``, ``answer`` (the reference answer, for inspection), ``index`` and
        ``split`` (how the reward function finds the problem again).
    """
    from datasets import Dataset

    task = _resolve(task, task_kwargs)
    check_split(split)
    available = task.num_problems(split)
    if n is None:
        if available >= TRAIN_SIZE:  # a generated train split: endless
            raise ValueError(
                f"n=None asks for the whole {split!r} split of task {task.name!r}, which is generated "
                "without end; pass n=<number of problems>"
            )
        n = available
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= available:
        raise ValueError(
            f"n must be an int in [1, {available}] for split {split!r} of {task.name!r}, got {n!r}"
        )
    if not isinstance(chat, bool):
        raise ValueError(f"chat must be a bool, got {chat!r}")
    rows = []
    for index in range(n):
        problem = task.problem(index, split)
        prompt = task.messages(problem, system_prompt) if chat else task.raw_prompt(problem, system_prompt)
        rows.append({"prompt": prompt, "answer": problem.answer, "index": index, "split": split})
    return Dataset.from_list(rows)


def completion_text(completion: Any) -> str:
    """The text of one TRL completion: a plain string, or the content of its last chat message."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, Sequence) and completion and isinstance(completion[-1], dict):
        content = completion[-1].get("content", "")
        if isinstance(content, list):  # typed content blocks: keep the text ones
            return "".join(c.get("text", "") for c in content if isinstance(c, dict))
        return content if isinstance(content, str) else ""
    return ""


def task_reward_func(task: str | Task, **task_kwargs: Any) -> Callable[..., list[float]]:
    """A TRL reward function that scores completions with the task's own bounded verifier.

    Parameters
    ----------
    task : str or Task
        The task (name or object) the dataset was made from (:func:`task_dataset`).
    **task_kwargs
        The task's keyword arguments when ``task`` is a name; they must match the dataset's.
        ``format_weight=f`` gives a format reward: the score becomes
        ``(1 - f) * correct + f * well_formed`` (the task's own rule).

    Returns
    -------
    callable
        ``reward(completions, index, split, **kwargs) -> list[float]``, each reward the task's
        score in ``[0, 1]``. Its ``__name__`` is ``"<task>_reward"`` (TRL's metric name).
        Whatever a completion holds, the verifier does bounded work and never raises.
    """
    task = _resolve(task, task_kwargs)

    def reward(completions: list[Any], index: list[int], split: list[str], **kwargs: Any) -> list[float]:
        return [
            task.score(completion_text(c), task.problem(int(i), s)).score
            for c, i, s in zip(completions, index, split, strict=True)
        ]

    reward.__name__ = reward.__qualname__ = f"{task.name}_reward"
    return reward


@torch.no_grad()
def greedy_accuracy(
    model: Any,
    tokenizer: Any,
    task: str | Task,
    split: str = "test",
    n: int = 200,
    *,
    chat: bool = False,
    system_prompt: str | None = None,
    max_new_tokens: int | None = None,
    batch_size: int = 64,
    **task_kwargs: Any,
) -> float:
    """Greedy accuracy of a Hugging Face causal LM on the first ``n`` problems of a split.

    The prompts are those of :func:`task_dataset` (``chat`` and ``system_prompt`` alike), tokenized as
    TRL tokenizes them, and the completions are scored by the task's verifier, so the number is the
    fraction of problems whose greedy completion :func:`task_reward_func` would count as correct.

    Parameters
    ----------
    model : transformers.PreTrainedModel
        The model (put in eval mode for the call, then restored).
    tokenizer : transformers.PreTrainedTokenizerBase
        Its tokenizer (padding side switched to left for the call).
    task : str or Task
        The task; ``**task_kwargs`` configure it when it is a name.
    split, n, chat, system_prompt
        As for :func:`task_dataset`.
    max_new_tokens : int or None
        Completion budget; ``None`` uses the task's ``suggested_max_new_tokens``.
    batch_size : int
        Prompts generated together.

    Returns
    -------
    float
        Fraction correct, in ``[0, 1]``.
    """
    task = _resolve(task, task_kwargs)
    data = task_dataset(task, split, n, chat=chat, system_prompt=system_prompt)
    max_new_tokens = max_new_tokens or task.suggested_max_new_tokens
    was_training, side = model.training, tokenizer.padding_side
    model.eval()
    tokenizer.padding_side = "left"
    correct = 0
    try:
        for start in range(0, len(data), batch_size):
            part = data[start : start + batch_size]
            texts = part["prompt"]
            if chat:
                texts = [
                    tokenizer.apply_chat_template(m, add_generation_prompt=True, tokenize=False)
                    for m in texts
                ]
            enc = tokenizer(text=texts, padding=True, return_tensors="pt", add_special_tokens=not chat)
            enc = {k: v.to(model.device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}
            out = model.generate(
                **enc,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
            )
            completions = tokenizer.batch_decode(
                out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True
            )
            for text, index in zip(completions, part["index"], strict=True):
                correct += task.score(text, task.problem(index, split)).correct
    finally:
        model.train(was_training)
        tokenizer.padding_side = side
    return correct / len(data)
