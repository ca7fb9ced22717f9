"""Decoding a round whose rows come in runs of one prompt with one copy of each prompt's KV cache.

A GRPO round holds every prompt ``group_size`` times in a row. The plain eager decode gathers each
prompt's KV cache to all of its rows after the shared prefill, and every decode step then reads
``group_size`` copies of it: at batch 64 with ~100-token GSM8K-style prompts, most of the bytes a
step's attention reads. Here each run of ``R`` rows is instead *one* sequence of the model's batch::

    [ prompt (P) | step 0: rows 0..R-1 | step 1: rows 0..R-1 | ... ]

A decode step feeds the run's ``R`` new tokens side by side (input ``(G, R)``, each at its own row's
position id) and appends them to the run's cache; a ``(G, 1, R, K)`` mask (:func:`run_decode_mask`)
lets row ``r`` attend to the prompt and to its own earlier tokens only (key ``P + s * R + r``). It
is the decode-time counterpart of the prefix-tree training pass (:mod:`~egsw_gym.policies.lm.tree`):
the same numbers as one cache per row, up to float rounding, from one attention call over ``G``
sequences of ``R`` queries instead of ``G * R`` single-query calls over copies of the prompt.

Measured on the tiny GPT-2 (1 CPU thread, batch 64 in runs of 8), a decode step's attention
(``torch`` SDPA, per layer): 6-token prompts 106 -> 89 us at the first step, 124 -> 63 us at the
fourth; 100-token prompts 417 -> 122 us at the first, 627 -> 495 us at the 64th.

Used by :class:`~egsw_gym.policies.lm.LMPolicy`'s eager decode when every run has the same length,
the model takes a custom 4D mask (:func:`~egsw_gym.policies.lm.compat.custom_mask_attention`) and
the round is not on the compiled static-cache path (which keeps one cache row per sequence).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["RunDecode", "additive_mask", "run_decode_mask", "uniform_runs"]


def uniform_runs(first_rows: torch.Tensor, batch: int) -> int | None:
    """Rows per run when the ``batch`` rows form runs of one length ``R >= 2`` (``first_rows`` from
    :func:`~egsw_gym.policies.lm.inputs.distinct_prompts`), else ``None``."""
    runs = len(first_rows)
    if runs == 0 or batch % runs:
        return None
    size = batch // runs
    if size < 2 or not torch.equal(first_rows, torch.arange(0, batch, size, device=first_rows.device)):
        return None
    return size


def additive_mask(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The additive form (0 where allowed, the dtype's minimum elsewhere) that eager attention adds
    to its scores, of a boolean mask (``True``: attend), which SDPA takes as it is."""
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill_(
        ~allowed, torch.finfo(dtype).min
    )


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
    """A round decoded as runs (see the module docstring): its layout and its mask buffer.

    Attributes
    ----------
    size : int
        ``R``, rows per run (the ``B = G * R`` rows of the round, run after run).
    prompt_mask : torch.Tensor
        ``(G, P)`` the runs' prompt masks.
    dtype : torch.dtype or None
        ``None`` for a boolean mask (SDPA), else the dtype of an additive one (eager attention).
    mask : torch.Tensor
        :func:`run_decode_mask` for as many steps as the round has had room for so far.
    """

    size: int
    prompt_mask: torch.Tensor
    dtype: torch.dtype | None
    mask: torch.Tensor

    @classmethod
    def start(cls, prompt_mask: torch.Tensor, size: int, steps: int, dtype: torch.dtype | None) -> RunDecode:
        """The layout of runs with these prompts, its mask allocated for ``steps`` decode steps."""
        run = cls(size, prompt_mask, dtype, prompt_mask.new_empty(0))
        run.mask = run._build(steps)
        return run

    @property
    def prompt_length(self) -> int:
        """``P``, the packed prompt's columns."""
        return self.prompt_mask.shape[1]

    def _build(self, steps: int) -> torch.Tensor:
        allowed = run_decode_mask(self.prompt_mask, self.size, steps)
        return allowed if self.dtype is None else additive_mask(allowed, self.dtype)

    def step_mask(self, tokens: int) -> torch.Tensor:
        """The mask of the step that brings each row to ``tokens`` generated tokens (room doubles)."""
        keys = self.prompt_length + tokens * self.size
        if keys > self.mask.shape[-1]:
            self.mask = self._build(max(tokens, 2 * (self.mask.shape[-1] - self.prompt_length) // self.size))
        return self.mask[..., :keys]

    def cache_length(self, tokens: int) -> int:
        """Keys in a run's cache when each row has ``tokens`` generated tokens."""
        return self.prompt_length + tokens * self.size
