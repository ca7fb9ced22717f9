"""Accelerated decode ``"shared_decode"``: GRPO's runs of one prompt with one KV-cache sequence per run.

A GRPO round holds every prompt ``group_size`` times in a row. The plain decode prefills and keeps
one copy of each prompt's KV cache per row, and every decode step reads all of them. Here each run
of ``R`` rows is instead *one* sequence of the model's batch::

    [ prompt (P) | step 0: rows 0..R-1 | step 1: rows 0..R-1 | ... ]

The prompt is prefilled once per run. A decode step feeds the run's ``R`` new tokens side by side
(input ``(G, R)``, each at its own row's position id) and appends them to the run's cache; a
``(G, 1, R, K)`` mask (:func:`run_decode_mask`) lets row ``r`` attend to the prompt and to its own
earlier tokens only (key ``P + s * R + r``). The numbers are those of one cache row per sequence, up
to float rounding. The cache grows in place (:mod:`~egsw_gym.policies.lm.accel.cache`).

Used where every run has the same length and the model takes a custom 4D mask
(:func:`~egsw_gym.policies.lm.accel.runs.custom_mask_attention`); other rounds decode plainly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from egsw_gym.policies.lm.accel.cache import decode_room, reserve_cache
from egsw_gym.policies.lm.accel.run_attention import attending_by_runs
from egsw_gym.policies.lm.accel.runs import (
    custom_mask_attention,
    distinct_prompts,
    uniform_runs,
)
from egsw_gym.policies.lm.compat import forward_kwargs, output_cache

__all__ = ["RunDecode", "RunRound", "run_decode_mask", "start_run_decode"]


def run_decode_mask(prompt_mask: torch.Tensor, size: int, steps: int) -> torch.Tensor:
    """``(G, 1, R, P + steps * R)`` boolean mask of the runs' decode steps (True: attend).

    Row ``r`` of run ``g`` sees the real tokens of its run's prompt (``prompt_mask[g]``) and the
    keys ``P + s * R + r`` (its own token of step ``s``), for ``steps`` steps; a step's view is the
    first ``P + (s + 1) * R`` keys.

    Parameters
    ----------
    prompt_mask : torch.Tensor
        ``(G, P)`` 1 for the real tokens of each run's (packed) prompt.
    size : int
        ``R``, rows per run.
    steps : int
        Decode steps the mask covers.
    """
    runs, prompt_len = prompt_mask.shape
    prompt = prompt_mask.bool()[:, None, None, :].expand(runs, 1, size, prompt_len)
    own = torch.eye(size, dtype=torch.bool, device=prompt_mask.device).repeat(1, steps)  # (R, steps * R)
    return torch.cat([prompt, own.expand(runs, 1, size, steps * size)], dim=-1)


@dataclass
class RunDecode:
    """The layout of a round decoded as runs, and its mask buffer.

    Attributes
    ----------
    size : int
        ``R``, rows per run (the ``B = G * R`` rows of the round, run after run).
    prompt_mask : torch.Tensor
        ``(G, P)`` the runs' prompt masks.
    mask : torch.Tensor
        :func:`run_decode_mask` for as many steps as the round has had room for so far (boolean:
        the steps attend through :func:`~egsw_gym.policies.lm.accel.run_attention.run_attention`,
        SDPA whatever the model's own attention).
    """

    size: int
    prompt_mask: torch.Tensor
    mask: torch.Tensor

    @classmethod
    def start(cls, prompt_mask: torch.Tensor, size: int, steps: int) -> RunDecode:
        """The layout of runs with these prompts, its mask allocated for ``steps`` decode steps."""
        return cls(size, prompt_mask, run_decode_mask(prompt_mask, size, steps))

    @property
    def prompt_length(self) -> int:
        """``P``, the packed prompt's columns."""
        return self.prompt_mask.shape[1]

    def step_mask(self, tokens: int) -> torch.Tensor:
        """The mask of the step that brings each row to ``tokens`` generated tokens (room doubles)."""
        keys = self.prompt_length + tokens * self.size
        if keys > self.mask.shape[-1]:
            steps = max(tokens, 2 * (self.mask.shape[-1] - self.prompt_length) // self.size)
            self.mask = run_decode_mask(self.prompt_mask, self.size, steps)
        return self.mask[..., :keys]

    def cache_length(self, tokens: int) -> int:
        """Keys in a run's cache when each row has ``tokens`` generated tokens."""
        return self.prompt_length + tokens * self.size


@dataclass
class RunRound:
    """A round decoded as runs: the model, its cache (one sequence per run), the layout, tokens fed."""

    model: torch.nn.Module
    cache: Any
    runs: RunDecode
    next_token: Callable[[torch.Tensor, bool], tuple[torch.Tensor, ...]]
    fed: int = 0

    def step(
        self, tokens: torch.Tensor, positions: torch.Tensor, deterministic: bool
    ) -> tuple[torch.Tensor, ...]:
        """Feed ``tokens`` ``(B, 1)`` at ``positions`` ``(B, 1)`` as ``(G, R)``; choose the next tokens."""
        self.fed += 1
        size = self.runs.size
        cache_kw, _ = forward_kwargs(self.model)
        with attending_by_runs(self.model):  # the step's 4D mask, key-value heads read as they are
            output = self.model(
                input_ids=tokens.view(-1, size),
                attention_mask=self.runs.step_mask(self.fed),
                position_ids=positions.view(-1, size),
                use_cache=True,
                **{cache_kw: self.cache},
            )
        self.cache = output_cache(output)
        return self.next_token(output.logits.reshape(-1, output.logits.shape[-1]), deterministic)


def start_run_decode(
    model: torch.nn.Module,
    ids: torch.Tensor,
    mask: torch.Tensor,
    position_ids: torch.Tensor,
    obs_len: int,
    next_token: Callable[[torch.Tensor, bool], tuple[torch.Tensor, ...]],
) -> tuple[RunRound, torch.Tensor] | None:
    """Prefill each run's prompt once and lay the round out as runs; ``None`` where it does not apply.

    Parameters
    ----------
    model : torch.nn.Module
        The causal LM.
    ids, mask, position_ids : torch.Tensor
        ``(B, P)`` the round's packed prompts, their mask and positions.
    obs_len : int
        The observation window: the most tokens a round generates per row.
    next_token : callable
        ``next_token(logits, deterministic)``: the policy's token choice (the plain path's).

    Returns
    -------
    tuple or None
        The round and the ``(B, V)`` logits of every row's first token; ``None`` when the rows do
        not come in runs of one length or the model cannot take the layout's mask.
    """
    shared = distinct_prompts(ids, mask)
    size = None if shared is None else uniform_runs(shared[0], ids.shape[0])
    if size is None:
        return None
    first_rows, inverse = shared
    prompt_len = ids.shape[1]
    # The runs' sequences grow by `size` keys a step: the model must honour the custom mask (no
    # sliding window shorter than they may grow) for the whole round.
    if custom_mask_attention(model, prompt_len + size * obs_len) is None:
        return None
    cache_kw, has_keep = forward_kwargs(model)
    output = model(
        input_ids=ids[first_rows],
        attention_mask=mask[first_rows],
        position_ids=position_ids[first_rows],
        use_cache=True,
        **{cache_kw: None},
        **({"logits_to_keep": 1} if has_keep else {}),
    )
    steps = decode_room(prompt_len, obs_len)
    runs = RunDecode.start(mask[first_rows], size, steps)
    cache = output_cache(output)
    reserve_cache(cache, runs.cache_length(steps))
    return RunRound(model, cache, runs, next_token), output.logits[:, -1][inverse]
