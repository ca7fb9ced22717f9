"""Tasks for the text-generation environment: the :class:`Task` interface, four tasks of ours and
any reasoning-gym dataset (:class:`ReasoningGymTask`).

``make_task(name_or_task, **kwargs)`` resolves the ``task`` argument of the environments.
"""

from __future__ import annotations

import inspect
from typing import Any

from .arithmetic import ArithmeticTask
from .base import SPLITS, TRAIN_SIZE, GeneratedTask, Problem, ScoreResult, Task
from .countdown import CountdownTask, parse_countdown_expression
from .gsm8k import GSM8KTask
from .jsonl import JSONLTask, load_jsonl_problems
from .parsing import extract_final_answer, format_number, parse_number
from .reasoning import ReasoningGymTask

__all__ = [
    "Task",
    "GeneratedTask",
    "Problem",
    "ScoreResult",
    "SPLITS",
    "TRAIN_SIZE",
    "ArithmeticTask",
    "CountdownTask",
    "GSM8KTask",
    "JSONLTask",
    "ReasoningGymTask",
    "TASKS",
    "make_task",
    "load_jsonl_problems",
    "parse_countdown_expression",
    "parse_number",
    "format_number",
    "extract_final_answer",
]

#: task classes by name.
TASKS: dict[str, type[Task]] = {
    "arithmetic": ArithmeticTask,
    "countdown": CountdownTask,
    "gsm8k": GSM8KTask,
    "jsonl": JSONLTask,
    "reasoning_gym": ReasoningGymTask,
}


def make_task(task: str | Task = "arithmetic", data_path: Any = None, **kwargs: Any) -> Task:
    """Build a task from its name, or pass a :class:`Task` through.

    Parameters
    ----------
    task : str or Task
        One of ``"arithmetic"``, ``"countdown"``, ``"gsm8k"``, ``"jsonl"``, ``"reasoning_gym"``
        (needs ``dataset=...``; see :class:`ReasoningGymTask`) (case-insensitive), or
        a ready task object.
    data_path : str, os.PathLike or None
        The JSONL file, for ``task="jsonl"`` (passing it with another task name is an error;
        passing it with ``task=None`` selects ``"jsonl"``).
    **kwargs
        The task's own keyword arguments (difficulty knobs, ``seed``, ``num_test``,
        ``format_weight``, ...). Not allowed with a task object.

    Returns
    -------
    Task
    """
    if isinstance(task, Task):
        if kwargs or data_path is not None:
            given = sorted(kwargs) + (["data_path"] if data_path is not None else [])
            raise ValueError(
                f"task is already a Task object; configure it directly instead of passing {given}"
            )
        return task
    if task is None and data_path is not None:
        task = "jsonl"
    if not isinstance(task, str) or task.lower() not in TASKS:
        raise ValueError(f"task must be one of {tuple(TASKS)} or a Task object, got {task!r}")
    cls = TASKS[task.lower()]
    if cls is JSONLTask:
        return JSONLTask(data_path, **kwargs)
    if data_path is not None:
        raise ValueError(f"data_path is only used by task='jsonl', not task={task!r}")
    try:
        return cls(**kwargs)
    except TypeError as exc:
        allowed = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
        raise ValueError(f"unknown keyword argument for task {task!r} ({exc}); allowed: {allowed}") from None
