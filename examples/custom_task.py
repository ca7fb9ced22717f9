"""Your own verifiable task: subclass ``Task``, hand it to the text environment, train with GRPO.

The task here reverses a 3-digit number (``"reverse 123:"`` -> ``"321"``). A task only has to say
how many problems each split has, produce problem ``i`` of a split, give the reference completion
(used by the warm start) and score a completion; :class:`GeneratedTask` adds seeded problem
streams with train and test splits that never share a prompt. The verifier must never raise or
execute anything: here it only compares strings.

The task object is passed straight to the environment (``env_kwargs=dict(task=...)``); no
registration is needed. To give it an id of its own::

    gymnasium.register("my/Reverse-v0", entry_point="egsw_gym.envs.text_generation:TextGenerationEnv",
                       vector_entry_point="egsw_gym.envs.vector:TextGenerationVectorEnv",
                       kwargs={"task": ReverseTask()})

python examples/custom_task.py [--timesteps 30000] [--seed 0]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
import torch

from egsw_gym import EGSW, GRPO
from egsw_gym.envs.tasks import GeneratedTask, Problem
from egsw_gym.envs.vector import find_text_vector_env
from egsw_gym.llm import evaluate_accuracy, warm_start


class ReverseTask(GeneratedTask):
    """Reverse the digits of a 3-digit number: ``"reverse 120:"`` -> ``"021"``.

    Parameters
    ----------
    seed : int
        Base seed of the problem streams.
    num_test : int
        Held-out problems (capped by :class:`GeneratedTask` at a fifth of the 900 numbers).
    """

    name = "reverse"
    #: three digits, EOS and one spare token
    suggested_max_new_tokens = 5

    def __init__(self, *, seed: int = 0, num_test: int = 100):
        super().__init__(seed=seed, num_test=num_test)

    def space_size(self) -> int:
        """The 900 three-digit numbers."""
        return 900

    def max_prompt_chars(self) -> int:
        """``"reverse 123:"`` is always 12 characters."""
        return 12

    def _generate(self, rng: np.random.Generator) -> Problem:
        number = str(int(rng.integers(100, 1000)))
        return Problem(f"reverse {number}:", number[::-1])

    def reference_completion(self, problem: Problem) -> str:
        """The reversed digits (the environment appends EOS)."""
        return problem.answer

    def _score(self, completion: str, problem: Problem) -> dict[str, Any]:
        answer = completion.strip()
        return {
            "correct": answer == problem.answer,
            "format_ok": len(answer) == 3 and answer.isdigit(),
            "parsed": answer[:8],
        }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--timesteps", type=int, default=30_000, help="generated tokens of GRPO training")
    parser.add_argument("--warm-start-steps", type=int, default=45)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)

    task = ReverseTask()
    problem = task.problem(0, "test")
    print(
        f"task: {problem.prompt!r} -> {problem.answer!r}; verifier on the reference: "
        f"{task.score(task.reference_completion(problem), problem).score}"
    )

    env_kwargs = dict(task=task)
    model = GRPO(
        "LMPolicy",
        "egsw/Arithmetic-v0",  # the registered text env; `task=` replaces its task
        env_kwargs=env_kwargs,
        n_envs=64,
        group_size=8,
        n_groups=8,
        n_epochs=1,
        learning_rate=2e-4,
        egsw=EGSW(alpha=0.1),
        seed=args.seed,
        device="cpu",
    )
    venv = find_text_vector_env(model.env)  # the batched text env (its task, tokenizer, prompt encoding)
    t0 = time.perf_counter()
    warm_start(model.policy, task, venv.tokenizer, steps=args.warm_start_steps, seed=args.seed, env=venv)
    before = evaluate_accuracy(model.policy, "egsw/Arithmetic-v0", n=100, k=0, env_kwargs=env_kwargs)
    model.learn(args.timesteps)
    after = evaluate_accuracy(model.policy, "egsw/Arithmetic-v0", n=100, k=0, env_kwargs=env_kwargs)
    print(
        f"held-out greedy accuracy: warm start {before['accuracy']:.1%} -> after GRPO+EGSW "
        f"{after['accuracy']:.1%} ({model.num_timesteps} tokens, {time.perf_counter() - t0:.0f} s)"
    )


if __name__ == "__main__":
    main()
