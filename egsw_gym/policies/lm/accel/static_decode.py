"""Accelerated decode ``"compile"``: a static KV cache and a ``torch.compile`` d single-token step.

A small model's decode step is mostly per-call Python and module dispatch, not arithmetic.
Compiling the step (``torch.compile``, inductor) fuses it into a few kernels, which needs shapes
that do not change from step to step, hence a preallocated cache:

- the prompt is prefilled by the plain path, and its KV cache is copied into a
  ``transformers.StaticCache`` of a *shape bucket*: the batch rounded up to a power of two, the
  length (prompt + the round's steps) rounded up to a multiple of :data:`LENGTH_BUCKET`; rows added
  by the rounding are ignored;
- each later token runs one compiled function: the model's single-token forward on the static
  cache (attention mask of the bucket's full length; causality hides the slots not written yet)
  and the token choice (:func:`~egsw_gym.policies.lm.forward.choose_tokens`, the plain path's
  code), with the uniform numbers drawn outside from the same torch generator as the plain path.
  Same tokens, and the same log-probs and entropies up to float rounding (the static step's
  attention reduces over more, masked, slots);
- a bucket is compiled once (its first step) and kept (at most :data:`MAX_BUCKETS`, least recently
  used first out); the compile time is added to :attr:`StaticDecoder.compile_seconds`.

Anything that fails (no C++ compiler for inductor, a model or ``transformers`` version whose cache
does not fit, a compile error) turns the decoder off with a warning, and the round continues on the
plain path with the same cache contents (:meth:`StaticRound.to_plain`).
"""

from __future__ import annotations

import contextlib
import shutil
import time
import types
import warnings
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from egsw_gym.policies.lm.compat import forward_kwargs, unwrap_peft
from egsw_gym.policies.lm.forward import choose_tokens, token_log_softmax

__all__ = [
    "LENGTH_BUCKET",
    "MATH_ATTENTION_MAX_LENGTH",
    "MAX_BUCKETS",
    "StaticDecoder",
    "StaticRound",
    "compile_available",
]

#: Static cache lengths are multiples of this: fewer shapes (hence fewer compilations) against
#: attention over fewer unused slots per step; a round whose length crosses a multiple compiles a
#: second bucket.
LENGTH_BUCKET = 16
#: On CPU, buckets up to this many cache slots run the compiled step with the model's ``eager``
#: attention, longer ones with ``sdpa`` (see :meth:`StaticDecoder._decode_attention`).
MATH_ATTENTION_MAX_LENGTH = 64
#: Compiled shape buckets kept per policy (each holds a KV cache of its shape).
MAX_BUCKETS = 4


def compile_available(device: torch.device) -> str | None:
    """``None`` when ``torch.compile`` can run on ``device``, else the reason it cannot."""
    if not hasattr(torch, "compile"):
        return "this torch has no torch.compile"
    try:
        import torch._dynamo as dynamo  # lazy: loading dynamo costs about a second, only for compiling

        if not dynamo.is_dynamo_supported():
            return "torch.compile does not support this Python version"
    except Exception as err:  # pragma: no cover - depends on the installation
        return f"torch._dynamo is unavailable ({err})"
    if device.type == "cpu" and not any(shutil.which(c) for c in ("g++", "c++", "clang++", "cl")):
        return "no C++ compiler found (inductor compiles CPU kernels with one)"
    return None


def _skip_guards_context() -> Callable[[], contextlib.AbstractContextManager] | None:
    """``torch.compiler.set_stance(skip_guard_eval_unsafe=True)`` where this torch has it."""
    set_stance = getattr(getattr(torch, "compiler", None), "set_stance", None)
    if set_stance is None:  # pragma: no cover - torch < 2.6
        return None
    return lambda: set_stance("default", skip_guard_eval_unsafe=True)


_SKIP_GUARDS = _skip_guards_context()


def _compile(fn: Callable, device: torch.device) -> Callable:
    """``torch.compile`` the decode step: fixed shapes; CUDA graphs on GPUs ("reduce-overhead")."""
    mode = "reduce-overhead" if device.type == "cuda" else None
    return torch.compile(fn, dynamic=False, fullgraph=False, mode=mode)


@dataclass
class _Bucket:
    """One shape bucket: its static cache, per-row input buffers and compiled steps."""

    cache: Any
    tokens: torch.Tensor  # (Bb, 1)
    positions: torch.Tensor  # (Bb, 1)
    mask: torch.Tensor  # (Bb, Lb)
    uniform: torch.Tensor  # (Bb, 1)
    steps: dict[bool, Callable]  # deterministic -> compiled step
    checked: dict[bool, tuple]  # deterministic -> the conditions its guards last passed under


@dataclass
class StaticRound:
    """A round decoded on a static cache: its decoder, bucket, real batch size and cache length."""

    decoder: StaticDecoder
    bucket: _Bucket
    batch: int
    length: int

    def step(
        self, tokens: torch.Tensor, positions: torch.Tensor, deterministic: bool
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        """A compiled decode step (:meth:`StaticDecoder.step`); ``None`` when the bucket is full or failed."""
        return self.decoder.step(self, tokens, positions, deterministic)

    def to_plain(self) -> tuple[Any, torch.Tensor]:
        """The round so far as the plain path holds it: a ``DynamicCache`` and the ``(B, L)`` mask."""
        from transformers import DynamicCache  # lazy: the optional [llm] extra

        dynamic = DynamicCache()
        for index, layer in enumerate(self.bucket.cache.layers):
            dynamic.update(
                layer.keys[: self.batch, :, : self.length].clone(),
                layer.values[: self.batch, :, : self.length].clone(),
                index,
            )
        return dynamic, self.bucket.mask[: self.batch, : self.length].clone()


class StaticDecoder:
    """Static-cache, compiled single-token decoding for one model (see the module docstring).

    Parameters
    ----------
    model : torch.nn.Module
        The ``transformers`` causal LM (possibly peft-wrapped).
    n_actions : int
        Tokens the distribution covers (the environment's action space).
    temperature : float
        Sampling temperature.
    compile_fn : bool
        ``False`` runs the static step eagerly (tests of the static path without compilation).

    Attributes
    ----------
    compile_seconds : float
        Time spent in first (compiling) calls of buckets.
    compiled_buckets : int
        Buckets compiled so far.
    failure : str or None
        Why the decoder turned itself off, if it did.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        n_actions: int,
        temperature: float,
        compile_fn: bool = True,
    ) -> None:
        self.model = model
        self.n_actions = n_actions
        self.temperature = temperature
        self.cache_kw, self.has_logits_to_keep = forward_kwargs(model)
        self.compile_fn = compile_fn
        self.buckets: OrderedDict[tuple[int, int], _Bucket] = OrderedDict()
        self.compile_seconds = 0.0
        self.compiled_buckets = 0
        self.failure: str | None = None
        reason = compile_available(next(model.parameters()).device) if compile_fn else None
        if reason is not None:
            self._fail(reason)

    def _fail(self, reason: str) -> None:
        self.failure = reason
        self.buckets.clear()
        warnings.warn(f"LMPolicy: compiled decoding is off, decoding eagerly ({reason})", stacklevel=3)

    # ------------------------------------------------------------------ buckets
    def _bucket(self, batch: int, length: int, like: torch.Tensor) -> _Bucket:
        """The bucket for ``(batch, length)`` (created on first use; least recently used dropped)."""
        key = (1 << max(batch - 1, 0).bit_length(), -(-length // LENGTH_BUCKET) * LENGTH_BUCKET)
        bucket = self.buckets.get(key)
        if bucket is not None:
            self.buckets.move_to_end(key)
            return bucket
        from transformers import StaticCache  # lazy: the optional [llm] extra

        rows, cache_len = key
        config = getattr(self.model, "config", None) or unwrap_peft(self.model).config
        cache = StaticCache(config=config, max_cache_len=cache_len)
        device = like.device
        bucket = _Bucket(
            cache=cache,
            tokens=torch.zeros(rows, 1, dtype=torch.long, device=device),
            positions=torch.zeros(rows, 1, dtype=torch.long, device=device),
            mask=torch.ones(rows, cache_len, dtype=torch.long, device=device),
            uniform=torch.zeros(rows, 1, dtype=torch.float32, device=device),
            steps={},
            checked={},
        )
        self.buckets[key] = bucket
        while len(self.buckets) > MAX_BUCKETS:
            self.buckets.popitem(last=False)
        return bucket

    def _step_fn(self, bucket: _Bucket, deterministic: bool) -> Callable:
        """The bucket's (compiled) step: single-token forward on its cache, then :func:`choose_tokens`."""
        model, cache, n_actions, temperature = self.model, bucket.cache, self.n_actions, self.temperature
        extra: dict[str, Any] = {self.cache_kw: cache, "use_cache": True}
        if self.has_logits_to_keep:
            extra["logits_to_keep"] = 1

        def step(tokens, positions, mask, uniform):
            logits = model(input_ids=tokens, attention_mask=mask, position_ids=positions, **extra).logits
            log_p = token_log_softmax(logits[:, -1], n_actions, temperature)
            return choose_tokens(log_p, None if deterministic else uniform)

        if not self.compile_fn:
            return step
        # A code object of its own per bucket and mode: dynamo keeps its compiled entries on the code
        # object, so each then holds exactly one, which lets calls skip guard evaluation (_call).
        code = step.__code__.replace(co_name=f"egsw_decode_step_{len(self.buckets)}_{int(deterministic)}")
        own = types.FunctionType(code, step.__globals__, code.co_name, step.__defaults__, step.__closure__)
        return _compile(own, tokens_device(bucket))

    # ------------------------------------------------------------------ a round
    def begin(self, cache: Any, mask: torch.Tensor, steps: int) -> StaticRound | None:
        """Copy a prefilled dynamic cache into a bucket's static cache; ``None`` if it does not fit.

        Parameters
        ----------
        cache : transformers.Cache
            The prefill's cache, ``(B, heads, P, head_dim)`` per layer.
        mask : torch.Tensor
            ``(B, P)`` the packed prompt mask.
        steps : int
            Tokens the round may still feed (the static length covers ``P + steps``).
        """
        if self.failure is not None:
            return None
        batch, prompt_len = mask.shape
        try:
            layers = cache.layers
            bucket = self._bucket(batch, prompt_len + steps, mask)
            static_layers = bucket.cache.layers
            if len(static_layers) != len(layers) or not all(
                hasattr(s, "cumulative_length") and hasattr(d, "keys")
                for s, d in zip(static_layers, layers, strict=True)
            ):
                raise TypeError(f"unsupported cache layers ({type(layers[0]).__name__})")
            rows = bucket.tokens.shape[0]
            for static, dynamic in zip(static_layers, layers, strict=True):
                keys, values = dynamic.keys, dynamic.values
                if not static.is_initialized:
                    shape = (rows, *keys.shape[1:2], 1, keys.shape[-1])
                    static.lazy_initialization(keys.new_zeros(shape), values.new_zeros(shape))
                static.keys[:batch, :, :prompt_len].copy_(keys)
                static.values[:batch, :, :prompt_len].copy_(values)
                static.cumulative_length.fill_(prompt_len)
            bucket.mask[:batch, :prompt_len].copy_(mask)
            bucket.mask[:batch, prompt_len:].fill_(1)
            bucket.mask[batch:].fill_(1)  # rounding rows: any finite attention will do
        except Exception as err:  # a transformers version or model whose cache does not fit
            self._fail(f"{type(err).__name__}: {err}")
            return None
        return StaticRound(self, bucket, batch, prompt_len)

    def step(
        self, state: StaticRound, tokens: torch.Tensor, positions: torch.Tensor, deterministic: bool
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        """Feed ``tokens`` ``(B, 1)`` at ``positions`` ``(B, 1)``; ``None`` when the bucket is full or failed."""
        bucket, batch = state.bucket, state.batch
        if self.failure is not None or state.length >= bucket.mask.shape[1]:
            return None
        fn = bucket.steps.get(deterministic)
        first = fn is None
        if first:
            fn = bucket.steps[deterministic] = self._step_fn(bucket, deterministic)
            rng = _rng_state(tokens.device)  # a failing first call gives its random numbers back
        bucket.tokens[:batch].copy_(tokens)
        bucket.positions[:batch].copy_(positions)
        if not deterministic:
            # Drawn as the eager path draws them (same generator, shape and dtype): same samples.
            bucket.uniform[:batch].copy_(torch.rand(batch, 1, device=tokens.device))
        t0 = time.perf_counter()
        try:
            actions, log_probs, entropies = self._call(bucket, deterministic, fn)
        except Exception as err:
            if not first:
                raise
            # The failed call may or may not have written this step's keys: restore the length.
            for layer in bucket.cache.layers:
                layer.cumulative_length.fill_(state.length)
            _set_rng_state(tokens.device, rng)
            self._fail(f"{type(err).__name__}: {err}")
            return None
        if first and self.compile_fn:
            self.compile_seconds += time.perf_counter() - t0
            self.compiled_buckets += 1
        state.length += 1
        return actions[:batch], log_probs[:batch], entropies[:batch]

    def _conditions(self) -> tuple:
        """What a compiled step's guards depend on that can change between calls of one bucket."""
        first = next(self.model.parameters())
        return (
            self.model.training,
            torch.is_grad_enabled(),
            torch.is_inference_mode_enabled(),
            torch.is_autocast_enabled(first.device.type),
            torch.get_default_dtype(),
            first.data_ptr(),
            first.dtype,
        )

    def _call(self, bucket: _Bucket, deterministic: bool, fn: Callable) -> tuple[torch.Tensor, ...]:
        """Run a bucket's step; skip dynamo's guard evaluation when nothing it guards can have changed.

        Guard evaluation costs about as much as the compiled step itself for a tiny model.
        Each compiled step has its own code object and a single entry, its inputs are always the
        bucket's own buffers (same shapes, dtypes, devices), so the guards can only fail when the
        model, its mode or torch's global state change: those are compared first (``_conditions``),
        and any difference runs the guarded call (which recompiles if needed).
        """
        args = (bucket.tokens, bucket.positions, bucket.mask, bucket.uniform)
        conditions = self._conditions() if self.compile_fn else None
        with self._decode_attention(bucket):
            if conditions is None or bucket.checked.get(deterministic) != conditions or _SKIP_GUARDS is None:
                out = fn(*args)
                if conditions is not None:
                    bucket.checked[deterministic] = conditions
                return out
            with _SKIP_GUARDS():
                return fn(*args)

    @contextlib.contextmanager
    def _decode_attention(self, bucket: _Bucket):
        """On CPU, run a short bucket's step with the model's ``eager`` (matmul-softmax) attention.

        A decode step has one query per row against the bucket's whole static cache. Inside the
        compiled graph, which attention is faster depends on the cache length: on CPU the math path
        was faster for short caches and SDPA for long ones (``benchmarks/lm_rollout_throughput.py``
        compares them), hence the math path up to :data:`MATH_ATTENTION_MAX_LENGTH` slots, SDPA
        beyond. The prefill and the training passes keep the model's own attention; the two compute
        the same attention up to float rounding. CUDA keeps ``sdpa``.
        """
        config = getattr(self.model, "config", None)
        if (
            config is None
            or getattr(config, "_attn_implementation", None) != "sdpa"
            or tokens_device(bucket).type != "cpu"
            or bucket.mask.shape[1] > MATH_ATTENTION_MAX_LENGTH
        ):
            yield
            return
        config._attn_implementation = "eager"
        try:
            yield
        finally:
            config._attn_implementation = "sdpa"


def _rng_state(device: torch.device) -> torch.Tensor:
    """The state of the generator ``torch.rand`` uses on ``device``."""
    return torch.cuda.get_rng_state(device) if device.type == "cuda" else torch.get_rng_state()


def _set_rng_state(device: torch.device, state: torch.Tensor) -> None:
    if device.type == "cuda":
        torch.cuda.set_rng_state(state, device)
    else:
        torch.set_rng_state(state)


def tokens_device(bucket: _Bucket) -> torch.device:
    """The device of a bucket's buffers."""
    return bucket.tokens.device
