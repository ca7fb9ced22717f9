"""Supervised warm start and held-out evaluation for language-model policies.

RLVR starts from a base model that already answers in the right format now and then; GRPO cannot
learn from groups whose rewards are all zero. A randomly initialised tiny model never answers, so
:func:`warm_start` gives it a short supervised fine-tune on the task's format (prompt, reference
completion, EOS; loss on the completion tokens only). A few hundred steps give a policy that is
right on some of the held-out problems and wrong on most: the place RL starts from.

:func:`evaluate_accuracy` measures greedy accuracy and pass@k on the held-out split with the
policy's batched, KV-cached :meth:`~egsw_gym.policies.lm.LMPolicy.act` loop (the rollout path).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from egsw_gym.common.tokenizer import build_char_tokenizer
from egsw_gym.policies.lm import sequence_log_probs

__all__ = ["warm_start", "evaluate_accuracy", "generate_completions", "encode_prompts"]


# --------------------------------------------------------------------------- shared helpers
def _unwrap_model(policy_or_model: Any) -> tuple[torch.nn.Module, int | None, float, Any]:
    """``(model, n_actions, temperature, tokenizer)`` of an ``LMPolicy`` or a bare causal LM."""
    if hasattr(policy_or_model, "evaluate_sequences") and hasattr(policy_or_model, "model"):
        policy = policy_or_model
        return policy.model, policy.n_actions, policy.temperature, getattr(policy, "tokenizer", None)
    return policy_or_model, None, 1.0, None


def _env_core(env: Any) -> Any:
    """The environment's ``TextGenerationCore`` (prompt encoding and scoring), if it has one."""
    unwrapped = getattr(env, "unwrapped", env)
    return getattr(unwrapped, "core", None)


def encode_prompts(tokenizer: Any, problems: Sequence[Any], env: Any = None) -> list[list[int]]:
    """Prompt token ids of each problem, exactly as the environment encodes them.

    Parameters
    ----------
    tokenizer : transformers.PreTrainedTokenizerBase
        The environment's tokenizer.
    problems : sequence of Problem
        Problems of the task (their ``prompt`` is encoded).
    env : gymnasium.Env, gymnasium.vector.VectorEnv or None
        When given, its ``core.encode`` is used, so special tokens and prompt truncation are the ones
        the policy sees during RL. Otherwise ``tokenizer.encode(prompt)``, which is what the
        environment calls.

    Returns
    -------
    list of list of int
    """
    core = _env_core(env)
    if core is not None and callable(getattr(core, "encode", None)):
        rows = []
        for problem in problems:
            row, mask = core.encode(problem)
            rows.append([int(t) for t, m in zip(row, mask, strict=True) if m])
        return rows
    return [list(map(int, tokenizer.encode(p.prompt))) for p in problems]


def _left_pad(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ids, mask)`` of shape ``(len(rows), longest)``, rows right-aligned (left padding)."""
    width = max(1, max(len(r) for r in rows))
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        if row:
            ids[i, width - len(row) :] = torch.tensor(row, dtype=torch.long)
            mask[i, width - len(row) :] = 1
    return ids, mask


def _right_pad(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ids, mask)`` of shape ``(len(rows), longest)``, rows left-aligned (right padding)."""
    width = max(1, max(len(r) for r in rows))
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.bool)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, : len(row)] = True
    return ids, mask


# --------------------------------------------------------------------------- warm start
def _check_accuracy_target(policy_or_model: Any, env: Any, target_accuracy: float, eval_every: Any) -> None:
    """Clear errors for a ``target_accuracy`` warm start that cannot run (see :func:`warm_start`)."""
    if not 0.0 < float(target_accuracy) <= 1.0:
        raise ValueError(f"target_accuracy must be in (0, 1] or None, got {target_accuracy!r}")
    if env is None or not hasattr(policy_or_model, "act"):
        raise ValueError(
            "target_accuracy needs the LMPolicy (not a bare model) and env=<the text environment>, "
            "which provide the sampling and the verifier of the accuracy checks"
        )
    if not (isinstance(eval_every, int) and eval_every > 0):
        raise ValueError(f"eval_every must be a positive int, got {eval_every!r}")


def _warm_start_tokenizer(tokenizer: Any) -> Any:
    """``tokenizer``, or the built-in one for ``None``; it must have an EOS (completions learn to stop)."""
    if tokenizer is None:
        tokenizer = build_char_tokenizer()
    if tokenizer.eos_token_id is None:
        raise ValueError(
            "warm_start needs a tokenizer with an eos_token_id (the completion must learn to stop)"
        )
    return tokenizer


def _completion_nll(
    model: torch.nn.Module,
    task: Any,
    problems: list[Any],
    tokenizer: Any,
    env: Any,
    n_actions: int | None,
    temperature: float,
    device: torch.device,
) -> torch.Tensor:
    """Mean negative log-likelihood of the reference completions (plus EOS) of ``problems``, with gradients.

    The prompt is context only; the pass is :meth:`~egsw_gym.policies.lm.LMPolicy.evaluate_sequences`'s
    (:func:`~egsw_gym.policies.lm.sequence_log_probs`).
    """
    eos_id = tokenizer.eos_token_id
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_id
    fill_id = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else eos_id
    prompts = encode_prompts(tokenizer, problems, env)
    completions = tokenizer([task.reference_completion(p) for p in problems], add_special_tokens=False)[
        "input_ids"
    ]
    prompt_ids, prompt_mask = _left_pad(prompts, pad_id)
    actions, mask = _right_pad([list(c) + [eos_id] for c in completions], pad_id)
    log_probs, _ = sequence_log_probs(
        model,
        prompt_ids.to(device),
        prompt_mask.to(device),
        actions.to(device),
        n_actions=n_actions,
        temperature=temperature,
        fill_token_id=fill_id,
    )
    mask = mask.to(device)
    return -(log_probs * mask).sum() / mask.sum()


def _fit_temperature(policy_temperature: float, temperature: float | None) -> float:
    """Temperature of the fitted likelihood: ``temperature``, or the policy's sampling one for ``None``.

    A value other than the policy's fits the raw model at another temperature, e.g. fit at 1.0 and let
    RL sample sharper (0.7).
    """
    temperature = policy_temperature if temperature is None else float(temperature)
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0 or None (the policy's), got {temperature!r}")
    return temperature


def _warmup_linear_decay(
    optimizer: torch.optim.Optimizer, steps: int, schedule_steps: int | None
) -> torch.optim.lr_scheduler.LambdaLR:
    """Warmup over the first 5% of ``schedule_steps`` (default ``steps``), then linear decay to 0.

    A few hundred steps at a constant high rate end noisy; annealing them buys most of the accuracy
    for free.
    """
    if schedule_steps is not None and not (isinstance(schedule_steps, int) and schedule_steps >= 1):
        raise ValueError(f"schedule_steps must be a positive int or None, got {schedule_steps!r}")
    horizon = max(1, steps) if schedule_steps is None else schedule_steps
    warmup = max(1, horizon // 20)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * max(0.0, 1.0 - s / horizon)
    )


@dataclass
class _SupervisedFit:
    """One warm start's model, optimizer and schedule, and the batch loss it minimises."""

    model: torch.nn.Module
    params: list[torch.nn.Parameter]
    optimizer: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LambdaLR
    loss: Callable[[list[Any]], torch.Tensor]

    def step(self, problems: list[Any]) -> float:
        """One clipped AdamW step on the completion loss of ``problems``; returns the loss."""
        loss = self.loss(problems)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.optimizer.step()
        self.schedule.step()
        return float(loss.detach())


def _supervised_fit(
    model: torch.nn.Module,
    task: Any,
    tokenizer: Any,
    env: Any,
    n_actions: int | None,
    temperature: float,
    lr: float,
    steps: int,
    schedule_steps: int | None,
) -> _SupervisedFit:
    """A fresh AdamW (the policy's own optimizer state is untouched) and its learning-rate schedule."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr)
    schedule = _warmup_linear_decay(optimizer, steps, schedule_steps)
    device = next(model.parameters()).device
    loss = functools.partial(
        _completion_nll,
        model,
        task,
        tokenizer=tokenizer,
        env=env,
        n_actions=n_actions,
        temperature=temperature,
        device=device,
    )
    return _SupervisedFit(model, params, optimizer, schedule, loss)


def _draw_batch(task: Any, rng: np.random.Generator, split: str, batch_size: int) -> list[Any]:
    """``batch_size`` problems of ``split`` drawn by ``task.sample`` from ``rng``."""
    return [task.sample(rng, split) for _ in range(batch_size)]


def _sampled_accuracy(
    policy: Any, env: Any, eval_problems: int, seed: int, verbose: bool, taken: int
) -> float:
    """A ``target_accuracy`` check: sampled pass@1 on the first ``eval_problems`` train problems."""
    check = evaluate_accuracy(policy, env, n=eval_problems, greedy=False, k=1, split="train", seed=seed)
    accuracy = check["pass@1"]
    policy.model.train()  # evaluate_accuracy restores the policy's mode; training continues
    if verbose:
        print(f"warm_start step {taken:4d} sampled train accuracy {accuracy:.3f}")
    return accuracy


def _fit_loop(
    fit: _SupervisedFit,
    draw: Callable[[], list[Any]],
    check: Callable[[int], float],
    steps: int,
    verbose: bool,
    target_accuracy: float | None,
    eval_every: int,
) -> dict[str, Any]:
    """Up to ``steps`` steps on ``draw()`` batches, the model in train mode (its mode restored after).

    Every ``eval_every`` steps with a ``target_accuracy``, ``check(steps taken)`` measures the
    accuracy and the loop stops once it reaches the target. Returns :func:`warm_start`'s dict.
    """
    model = fit.model
    was_training = model.training
    model.train()
    first_loss = last_loss = float("nan")
    accuracy, taken = None, 0
    start = time.perf_counter()
    try:
        for step in range(steps):
            last_loss = fit.step(draw())
            taken = step + 1
            if step == 0:
                first_loss = last_loss
            if verbose and (step % 50 == 0 or step == steps - 1):
                print(f"warm_start step {step:4d} loss {last_loss:.4f}")
            if target_accuracy is not None and taken % eval_every == 0:
                accuracy = check(taken)
                if accuracy >= target_accuracy:
                    break
    finally:
        model.train(was_training)
    result: dict[str, Any] = {
        "loss": last_loss,
        "first_loss": first_loss,
        "steps": taken,
        "seconds": time.perf_counter() - start,
    }
    if target_accuracy is not None:
        result["accuracy"] = accuracy
        result["reached"] = accuracy is not None and accuracy >= target_accuracy
    return result


def warm_start(
    policy_or_model: Any,
    task: Any,
    tokenizer: Any = None,
    steps: int = 300,
    batch_size: int = 64,
    lr: float = 3e-3,
    seed: int = 0,
    split: str = "train",
    env: Any = None,
    verbose: bool = False,
    temperature: float | None = None,
    target_accuracy: float | None = None,
    eval_every: int = 25,
    eval_problems: int = 200,
    schedule_steps: int | None = None,
) -> dict[str, Any]:
    """Short supervised fine-tune on the task's answer format (prompt + reference completion + EOS).

    The loss is the mean negative log-likelihood of the completion tokens and EOS (the prompt is context
    only) by :meth:`~egsw_gym.policies.lm.LMPolicy.evaluate_sequences`'s teacher-forced pass (same packing,
    positions and temperature): what is learnt is exactly what RL later samples from. A fresh AdamW leaves
    the policy's own optimizer state untouched. The defaults suit ``egsw/Arithmetic-v0`` with the tiny
    default model: a few seconds on one or two CPU threads leave clearly non-zero but far from perfect
    held-out accuracy, the regime RLVR starts from.

    Parameters
    ----------
    policy_or_model : LMPolicy or transformers.PreTrainedModel
        Trained in place.
    task : egsw_gym.envs.tasks.base.Task
        Source of problems (``sample``) and of the reference completions (``reference_completion``).
    tokenizer : transformers.PreTrainedTokenizerBase or None
        The environment's tokenizer; ``None`` takes the policy's (or the built-in one).
    steps : int
        Optimizer steps.
    batch_size : int
        Problems per step.
    lr : float
        AdamW learning rate.
    seed : int
        Seed of the problem sampling.
    split : str
        Split to draw problems from (keep ``"train"``: the test split is for evaluation).
    env : gymnasium.Env or None
        The environment, if at hand: it encodes the prompts (see :func:`encode_prompts`).
    verbose : bool
        Print the loss every 50 steps.
    temperature : float or None
        Temperature of the fitted likelihood; ``None`` (default) uses the policy's sampling one.
    target_accuracy : float or None
        Stop once the *sampled* accuracy (one completion per problem at the policy's temperature, as GRPO's
        rewards see it) reaches it; needs an ``LMPolicy`` and ``env``. ``None`` (default) runs exactly
        ``steps``, as the presets do (float noise would decide the crossing step between machines).
    eval_every : int
        Steps between two checks of ``target_accuracy``.
    eval_problems : int
        Problems per check (the first ones of the train split; the test split stays held out).
    schedule_steps : int or None
        Length of the learning-rate schedule (warmup over its first 5%, then linear decay to 0);
        ``None`` (default) is ``steps``. A larger value stops part-way down the decay.

    Returns
    -------
    dict
        ``loss`` (last step), ``first_loss``, ``steps`` (taken), ``seconds``, and with ``target_accuracy``
        also ``accuracy`` (the last check's sampled accuracy) and ``reached`` (whether it met the target).
    """
    model, n_actions, policy_temperature, policy_tokenizer = _unwrap_model(policy_or_model)
    temperature = _fit_temperature(policy_temperature, temperature)
    if target_accuracy is not None:
        _check_accuracy_target(policy_or_model, env, target_accuracy, eval_every)
    tokenizer = _warm_start_tokenizer(tokenizer if tokenizer is not None else policy_tokenizer)
    rng = np.random.default_rng(seed)
    fit = _supervised_fit(model, task, tokenizer, env, n_actions, temperature, lr, steps, schedule_steps)
    draw = functools.partial(_draw_batch, task, rng, split, batch_size)
    check = functools.partial(_sampled_accuracy, policy_or_model, env, eval_problems, seed, verbose)
    return _fit_loop(fit, draw, check, steps, verbose, target_accuracy, eval_every)


# --------------------------------------------------------------------------- rollouts & evaluation
def generate_completions(
    policy: Any,
    prompt_ids: Sequence[Sequence[int]],
    max_new_tokens: int,
    deterministic: bool = True,
    batch_size: int = 256,
) -> list[list[int]]:
    """Complete prompts with the policy's batched, KV-cached :meth:`act` loop (the rollout path).

    Parameters
    ----------
    policy : LMPolicy
        The policy (its ``tokenizer`` gives the EOS and padding ids).
    prompt_ids : sequence of sequence of int
        Encoded prompts.
    max_new_tokens : int
        Completion budget, EOS included (the environment's ``max_new_tokens``).
    deterministic : bool
        Greedy decoding instead of sampling.
    batch_size : int
        Prompts decoded together.

    Returns
    -------
    list of list of int
        Each completion's tokens, up to and including its first EOS (none if it was truncated):
        what the environment would have received as actions.
    """
    tokenizer = policy.tokenizer
    eos_id = tokenizer.eos_token_id
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_id
    was_training = policy.training
    policy.set_training_mode(False)
    results: list[list[int]] = []
    try:
        for start in range(0, len(prompt_ids), batch_size):
            ids, mask = _left_pad(prompt_ids[start : start + batch_size], pad_id)
            obs = {"input_ids": ids.to(policy.device), "attention_mask": mask.to(policy.device)}
            state = None
            tokens = []
            done = torch.zeros(ids.shape[0], dtype=torch.bool, device=policy.device)
            for _ in range(max_new_tokens):
                actions, _, _, state = policy.act(obs, state, deterministic=deterministic)
                tokens.append(actions)
                done |= actions == eos_id
                if bool(done.all()):  # every row has stopped: no need to run the model further
                    break
            for row in torch.stack(tokens, 1).tolist():
                results.append(row[: row.index(eos_id) + 1] if eos_id in row else row)
    finally:
        policy.set_training_mode(was_training)
    return results


def _is_correct(core: Any, task: Any, tokenizer: Any, problem: Any, tokens: list[int]) -> bool:
    """Whether ``tokens`` solve ``problem``: by the environment core's ``finish``, else the task's score."""
    if core is not None:
        return bool(core.finish(problem, np.asarray(tokens, dtype=np.int64))[1]["correct"])
    eos_id = tokenizer.eos_token_id
    text = tokenizer.decode([t for t in tokens if t != eos_id], skip_special_tokens=True)
    return task.score(text, problem).correct


def _score_completions(
    policy: Any,
    prompts: list[list[int]],
    problems: list[Any],
    judge: Callable[[Any, list[int]], bool],
    eos_id: int,
    max_new: int,
    batch_size: int,
    deterministic: bool,
    repeats: int,
) -> tuple[np.ndarray, float]:
    """``repeats`` completions of each prompt: correctness, shape ``(len(problems), repeats)``, and the
    mean completion length (tokens without the EOS ``eos_id``)."""
    repeated = [p for p in prompts for _ in range(repeats)]
    completions = generate_completions(policy, repeated, max_new, deterministic, batch_size)
    correct = [judge(problems[i // repeats], c) for i, c in enumerate(completions)]
    lengths = [len(c) - (1 if c and c[-1] == eos_id else 0) for c in completions]
    return np.asarray(correct, dtype=bool).reshape(len(problems), repeats), float(np.mean(lengths))


def evaluate_accuracy(
    policy: Any,
    env_id_or_env: Any = "egsw/Arithmetic-v0",
    n: int = 200,
    greedy: bool = True,
    k: int = 1,
    split: str = "test",
    batch_size: int = 256,
    seed: int = 0,
    env_kwargs: dict[str, Any] | None = None,
) -> dict[str, float]:
    """Held-out accuracy of an ``LMPolicy``: greedy accuracy and pass@k over the first ``n`` problems.

    Completions come from :func:`generate_completions` (the policy's batched KV-cached ``act``) and
    are scored by the environment's own ``core.finish`` (its decoding and verifier), so a problem
    counts as solved exactly when an RL episode on it would be rewarded as correct.

    Parameters
    ----------
    policy : LMPolicy
        The policy to evaluate (put in eval mode for the call, then restored).
    env_id_or_env : str, gymnasium.Env or gymnasium.vector.VectorEnv
        A registered id (made with ``gym.make(id, **env_kwargs)``) or an environment; it provides
        the task, the tokenizer, the prompt encoding, ``max_new_tokens`` and the scoring.
    n : int
        Number of problems, the first ``n`` of ``split`` (capped at the split size).
    greedy : bool
        Report greedy (argmax) accuracy as ``accuracy``.
    k : int
        ``pass@k``: ``k`` sampled completions per problem (with the policy's temperature); a
        problem passes if any is correct. ``k=0`` skips it.
    split : str
        ``"test"`` (held out, never trained on) or ``"train"``.
    batch_size : int
        Sequences decoded together.
    seed : int
        Torch seed of the sampling for pass@k (the global torch RNG is forked, not disturbed).
    env_kwargs : dict or None
        Keyword arguments of ``gym.make`` when an id is given.

    Returns
    -------
    dict
        ``accuracy`` (if ``greedy``), ``pass@k`` (if ``k > 0``), ``mean_length`` (completion tokens
        without EOS, of the greedy completions if any) and ``n``.
    """
    env = gym.make(env_id_or_env, **(env_kwargs or {})) if isinstance(env_id_or_env, str) else env_id_or_env
    unwrapped = getattr(env, "unwrapped", env)
    task, tokenizer = unwrapped.task, unwrapped.tokenizer
    judge = functools.partial(_is_correct, _env_core(env), task, tokenizer)
    max_new = int(getattr(unwrapped, "max_new_tokens", None) or task.suggested_max_new_tokens)
    n = min(int(n), task.num_problems(split))
    problems = [task.problem(i, split) for i in range(n)]
    prompts = encode_prompts(tokenizer, problems, env)
    run = functools.partial(
        _score_completions, policy, prompts, problems, judge, tokenizer.eos_token_id, max_new, batch_size
    )

    result: dict[str, float] = {"n": float(n)}
    if greedy:
        correct, mean_len = run(True, 1)
        result["accuracy"] = float(correct.mean())
        result["mean_length"] = mean_len
    if k > 0:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            correct, mean_len = run(False, k)
        result[f"pass@{k}"] = float(correct.any(axis=1).mean())
        result.setdefault("mean_length", mean_len)
    return result
