"""Model sizes, FLOP counts and the matmul peak for the size sweep of ``grpo_vs_trl.py``.

Sizes (random weights built from a config; every one uses the built-in character tokenizer's
vocabulary, so the parameters sit in the transformer blocks):

``tiny``
    ``LMPolicy``'s default GPT-2 (2 layers, width 128, ~0.44M parameters).
``small``
    A Qwen2-shaped model: 4 layers, width 256, 4 query / 2 key-value heads, MLP 768 (~3.4M).
``30m``
    A Qwen2-shaped model: 10 layers, width 512, 8 query / 2 key-value heads, MLP 1536 (~30.3M).

Achieved FLOP/s of an update pass (loss forward + backward + optimizer step) counts the model
FLOPs of a plain teacher-forced pass over each sequence's own tokens (no padding; the prompt once
per sequence, so a side that shares prompt work gets no credit for skipping it), as in PaLM's
appendix B::

    FLOPs = sum_i  6 * N * T_i  +  12 * L * d_attn * T_i**2

with ``T_i`` = prompt + completion tokens of sequence ``i``, ``N`` the parameters that enter
matrix products (every ``nn.Linear`` / GPT-2 ``Conv1D`` weight, the output head included; the
input embeddings are lookups), ``L`` the layers and ``d_attn`` = heads x head size (the ``QK^T``
and ``AV`` products over the full ``T x T`` square, forward 4 L d T^2, backward twice that).
The optimizer step is counted as zero. A side that skips work (our prefix-tree pass computes each
group's prompt once) can exceed the matmul peak on this count; :func:`executed_flops` estimates
what each side's layout computes (ours: each group's prompt once; TRL: the padded batch). The
physical limit is :func:`matmul_peak`: a large ``torch.mm`` in float32 at the same thread count.
On a shared machine, rates are given per second of this process's CPU time as well as per wall
second: the CPU-time pair is what the code achieves while it runs, nearly independent of other
processes' load.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterable
from typing import Any

import torch

__all__ = [
    "SIZES",
    "FlopCounter",
    "executed_flops",
    "matmul_peak",
    "model_config",
    "print_sweep_table",
    "print_update_summary",
    "start_on_grad_forward",
    "update_flops",
    "update_summary",
]

#: ``--sizes`` names -> ``LMPolicy(model_config=...)`` fields (vocabulary and special ids added).
SIZES: dict[str, dict[str, Any]] = {
    "tiny": {},  # LMPolicy's default GPT-2
    "small": dict(
        model_type="qwen2",
        hidden_size=256,
        intermediate_size=768,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
    ),
    "30m": dict(
        model_type="qwen2",
        hidden_size=512,
        intermediate_size=1536,
        num_hidden_layers=10,
        num_attention_heads=8,
        num_key_value_heads=2,
    ),
}


def model_config(size: str, tokenizer: Any, seed: int, max_positions: int = 512) -> dict[str, Any]:
    """``model_config`` for ``LMPolicy``: the size's fields with the tokenizer's vocabulary and ids.

    Parameters
    ----------
    size : str
        A key of :data:`SIZES`.
    tokenizer : transformers.PreTrainedTokenizerBase
        The environment's tokenizer (vocabulary size, bos/eos/pad ids).
    seed : int
        Initialisation seed of the default GPT-2 (Qwen2 follows the torch RNG, seeded by ``GRPO``).
    max_positions : int
        Longest prompt + completion the model must read.
    """
    if size not in SIZES:
        raise ValueError(f"size must be one of {sorted(SIZES)}, got {size!r}")
    fields = dict(SIZES[size])
    if not fields:
        return {"seed": seed}
    fields.update(
        vocab_size=len(tokenizer),
        max_position_embeddings=max_positions,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    return fields


def _shape(model: torch.nn.Module) -> tuple[int, int, int]:
    """``(N, L, d_attn)`` of the module docstring's formula."""
    from transformers.pytorch_utils import Conv1D

    n = sum(m.weight.numel() for m in model.modules() if isinstance(m, (torch.nn.Linear, Conv1D)))
    cfg = model.config
    layers = getattr(cfg, "num_hidden_layers", None) or cfg.n_layer
    heads = getattr(cfg, "num_attention_heads", None) or cfg.n_head
    hidden = getattr(cfg, "hidden_size", None) or cfg.n_embd
    head_dim = getattr(cfg, "head_dim", None) or hidden // heads
    return n, int(layers), int(heads * head_dim)


def update_flops(model: torch.nn.Module, lengths: Iterable[int]) -> float:
    """FLOPs of one forward + backward pass over sequences of ``lengths`` tokens (module docstring)."""
    n, layers, d_attn = _shape(model)
    return float(sum(6 * n * t + 12 * layers * d_attn * t * t for t in lengths))


def executed_flops(
    model: torch.nn.Module, prompt_mask: torch.Tensor, completion_mask: torch.Tensor, groups: Any = None
) -> float:
    """The same count over the tokens a side's layout computes (an estimate of hardware FLOPs).

    ``groups`` (group id per row, rows of a group adjacent): each group's prompt once, then each
    row's completion (the prefix-tree layout; attention as if each row read its own prompt).
    ``None``: the padded batch, every row ``prompt width + completion width`` tokens (TRL's layout).
    """
    n, layers, d_attn = _shape(model)
    if groups is None:
        rows, width = prompt_mask.shape[0], prompt_mask.shape[1] + completion_mask.shape[1]
        return float(rows * (6 * n * width + 12 * layers * d_attn * width * width))
    prompts = prompt_mask.sum(1)
    completions = completion_mask.sum(1)
    first = torch.ones_like(groups, dtype=torch.bool)
    first[1:] = groups[1:] != groups[:-1]
    tokens = float(prompts[first].sum() + completions.sum())
    attention = sum(12 * layers * d_attn * t * t for t in (prompts + completions).tolist())
    return 6 * n * tokens + attention


class FlopCounter:
    """One side's update passes: wall seconds and FLOPs per step.

    The side's hooks call :meth:`start` when its update pass begins (only the first call of a step
    counts) and :meth:`stop` when its optimizer step is done.
    """

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self.seconds: list[float] = []
        self.cpu_seconds: list[float] = []
        self.flops: list[float] = []
        self.executed: list[float] = []
        self._t0: float | None = None
        self._c0 = 0.0

    def start(self) -> None:
        """Mark the start of this step's update pass (later calls in the same step change nothing)."""
        if self._t0 is None:
            self._t0, self._c0 = time.perf_counter(), time.process_time()

    def stop(self, prompt_mask: torch.Tensor, completion_mask: torch.Tensor, groups: Any = None) -> None:
        """End the update pass over rows with these 0/1 prompt and completion masks.

        ``groups``: see :func:`executed_flops`.
        """
        if self._t0 is None:
            raise RuntimeError("FlopCounter.stop without start: the update-pass hook did not run")
        self.seconds.append(time.perf_counter() - self._t0)
        self.cpu_seconds.append(time.process_time() - self._c0)
        self._t0 = None
        lengths = (prompt_mask.sum(1) + completion_mask.sum(1)).tolist()
        self.flops.append(update_flops(self.model, lengths))
        self.executed.append(executed_flops(self.model, prompt_mask, completion_mask, groups))

    def flops_per_s(self, skip: int, cpu: bool = False) -> float:
        """Total FLOPs / total wall (``cpu``: process CPU) seconds over the steps after the first ``skip``."""
        seconds = self.cpu_seconds if cpu else self.seconds
        return sum(self.flops[skip:]) / max(sum(seconds[skip:]), 1e-12)


def matmul_peak(threads: int, n: int = 2048, reps: int = 15) -> dict[str, float]:
    """FLOP/s of an ``n x n`` float32 ``torch.mm`` at ``threads`` torch threads.

    ``best`` / ``median`` over ``reps`` by wall time, ``best_cpu`` by process CPU time. The best
    is the figure to compare with (the machine's reachable peak): on a shared machine other
    processes' load lowers wall-clock rates, CPU-time rates much less. The caller's thread count
    is restored.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a, b = torch.randn(n, n), torch.randn(n, n)
        out = torch.empty(n, n)
        torch.mm(a, b, out=out)  # warm-up (packing buffers, thread pool)
        rates, cpu_rates = [], []
        for _ in range(reps):
            t0, c0 = time.perf_counter(), time.process_time()
            torch.mm(a, b, out=out)
            rates.append(2 * n**3 / (time.perf_counter() - t0))
            cpu_rates.append(2 * n**3 / max(time.process_time() - c0, 1e-9))
    finally:
        torch.set_num_threads(before)
    return {
        "best": max(rates),
        "median": statistics.median(rates),
        "best_cpu": max(cpu_rates),
        "n": n,
        "threads": threads,
    }


def start_on_grad_forward(model: torch.nn.Module, counter: Any) -> None:
    """Call ``counter.start()`` at the model's first forward with gradients on (the update pass).

    The hook sits on the input embeddings, which every forward route reads; sampling and the
    reference pass run without gradients and leave it alone.
    """

    def hook(module: torch.nn.Module, inputs: Any) -> None:
        if torch.is_grad_enabled():
            counter.start()

    model.get_input_embeddings().register_forward_pre_hook(hook)


def update_summary(res: dict[str, Any], skip: int, peak: dict[str, float] | None = None) -> dict[str, Any]:
    """Each side's update pass after the first ``skip`` steps: median seconds, FLOP/s, share of ``peak``.

    Rates by wall time and by CPU time; ``of_peak`` is CPU-time rate over the mm's CPU-time peak
    (both nearly free of other processes' load), ``of_peak_wall`` the wall-clock pair.
    """
    out: dict[str, Any] = {}
    for side, counter in res["flops"].items():
        rate, cpu_rate = counter.flops_per_s(skip), counter.flops_per_s(skip, cpu=True)
        out[side] = {
            "update_s": statistics.median(counter.seconds[skip:]),
            "gflop_per_step": statistics.median(counter.flops[skip:]) / 1e9,
            "gflop_per_s": rate / 1e9,
            "gflop_per_cpu_s": cpu_rate / 1e9,
            "of_peak": cpu_rate / peak["best_cpu"] if peak else None,
            "of_peak_wall": rate / peak["best"] if peak else None,
            "executed_of_useful": sum(counter.executed[skip:]) / sum(counter.flops[skip:]),
        }
    return out


def print_update_summary(updates: dict[str, Any]) -> None:
    """One line per side: update-pass seconds, GFLOP, GFLOP/s and share of the mm peak."""
    for side, u in updates.items():
        share = ""
        if u["of_peak"] is not None:
            share = f" ({100 * u['of_peak']:.1f}% / {100 * u['of_peak_wall']:.1f}% of the fp32 mm peak)"
        print(
            f"update pass {side:4s}: {u['update_s']:.3f} s, {u['gflop_per_step']:.2f} GFLOP "
            f"(6NT + 12 L d T^2), {u['gflop_per_cpu_s']:.2f} GFLOP per CPU s / {u['gflop_per_s']:.2f} "
            f"GFLOP/s wall{share}; its layout computes ~{u['executed_of_useful']:.2f}x these FLOPs"
        )


def print_sweep_table(rows: list[dict[str, Any]]) -> None:
    """The sweep's rows (``RESULT`` dicts of ``grpo_vs_trl.py --sizes``) as one Markdown table."""
    print(
        "| size | params | ours s/step | TRL s/step | ratio (95% CI) | peak RSS ours / TRL MiB "
        "| update GFLOP per CPU s ours / TRL | % of mm peak ours / TRL | executed / counted FLOPs ours / TRL "
        "| mm peak GFLOP per CPU s (wall) |"
    )
    print("|---" * 10 + "|")
    for r in rows:
        u, rss = r["update"], r["peak_rss_mib"]
        print(
            f"| {r['size']} | {r['params'] / 1e6:.2f}M "
            f"| {r['ours_s_per_step']:.3f} | {r['trl_s_per_step']:.3f} "
            f"| {r['ratio']:.3f}x ({r['ratio_95ci'][0]:.3f}-{r['ratio_95ci'][1]:.3f}) "
            f"| {rss.get('ours', float('nan')):.0f} / {rss.get('trl', float('nan')):.0f} "
            f"| {u['ours']['gflop_per_cpu_s']:.1f} / {u['trl']['gflop_per_cpu_s']:.1f} "
            f"| {100 * u['ours']['of_peak']:.1f} / {100 * u['trl']['of_peak']:.1f} "
            f"| {u['ours']['executed_of_useful']:.2f} / {u['trl']['executed_of_useful']:.2f} "
            f"| {max(r['matmul_peak_gflops']['best_cpu']):.1f} ({max(r['matmul_peak_gflops']['best']):.1f}) |"
        )
