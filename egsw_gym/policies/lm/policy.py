"""The :class:`LMPolicy` class: a causal LM as a GRPO policy, and its per-round :class:`LMState`.

The pure pieces it is made of live next to it: :mod:`~egsw_gym.policies.lm.inputs` (prompt packing
and positions), :mod:`~egsw_gym.policies.lm.forward` (prefill and teacher-forced passes),
:mod:`~egsw_gym.policies.lm.compat` (``transformers`` version shims),
:mod:`~egsw_gym.policies.lm.build` (construction) and :mod:`~egsw_gym.policies.lm.decode` (the
compiled decode path). See :mod:`egsw_gym.policies.lm` for the overview.
"""

from __future__ import annotations

import contextlib
import copy
import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.type_aliases import PyTorchObs, Schedule

from egsw_gym.policies.base import GRPOPolicy
from egsw_gym.policies.lm.activations import use_fast_tanh_gelu
from egsw_gym.policies.lm.build import (
    apply_lora,
    build_model,
    check_model,
    check_spaces,
    fused_if_unset,
    resolve_dtype,
    resolve_tokenizer,
    zero_dropout,
)
from egsw_gym.policies.lm.accel.cache import reserve_cache
from egsw_gym.policies.lm.compat import custom_mask_attention, forward_kwargs, output_cache, unwrap_peft
from egsw_gym.policies.lm.accel.static_decode import StaticDecoder, StaticRound, choose_tokens, compile_available
from egsw_gym.policies.lm.forward import sequence_log_probs, shared_prefill
from egsw_gym.policies.lm.inputs import (
    causal_attention_mask,
    distinct_prompts,
    last_position,
    last_true,
    position_ids_from_mask,
    prepare_prompt,
)
from egsw_gym.policies.lm.accel.shared_decode import RunDecode, uniform_runs

__all__ = ["AUTO_COMPILE_AFTER_S", "LMPolicy", "LMState"]


@dataclass
class LMState:
    """Recurrent state of :class:`LMPolicy` within one round of episodes.

    Attributes
    ----------
    cache : Any
        The model's KV cache (a ``transformers`` ``Cache``).
    mask_buffer : torch.Tensor or None
        ``(B, capacity)`` attention mask, allocated once per round: the packed prompt mask followed
        by ones, so a step passes the view ``mask_buffer[:, :length]`` instead of concatenating.
        ``None`` when the round decodes as runs (``runs``).
    length : int
        Tokens of each row so far (its prompt's packed columns and its generated tokens).
    next_positions : torch.Tensor
        ``(B, 1)`` position id of the next token fed (real tokens so far per row).
    last_actions : torch.Tensor
        ``(B, 1)`` the tokens chosen at the previous step, fed at the next one.
    static : StaticRound or None
        Set when the round decodes on a static cache with a compiled step
        (:mod:`egsw_gym.policies.lm.decode`); ``cache`` is then ``None``.
    runs : RunDecode or None
        Set when the round's rows come in runs of one prompt decoded with one cache sequence per
        run (:mod:`egsw_gym.policies.lm.shared_decode`); ``cache`` then has one row per run.
    """

    cache: Any
    mask_buffer: torch.Tensor | None
    length: int
    next_positions: torch.Tensor
    last_actions: torch.Tensor
    static: StaticRound | None = None
    runs: RunDecode | None = None


#: ``compile_decode="auto"`` compiles once this many seconds of CPU time (``time.process_time``,
#: which other processes' load does not inflate) have gone into eager decode steps: a compilation
#: costs 10-50 s on a CPU (3-5 s with inductor's on-disk cache warm) and about halves a tiny model's
#: step, so paying for it after about twice its cost in eager steps bounds the waste (ski rental),
#: and short runs (the demo's arithmetic GRPO: ~25 s of decoding per run) never compile.
AUTO_COMPILE_AFTER_S = 120.0


def _plain_train(module: torch.nn.Module) -> bool:
    """Whether ``module.train(mode)`` only sets ``module.training`` (and its children's)."""
    method = type(module).train
    if method is torch.nn.Module.train:
        return True
    return getattr(method, "__qualname__", "") == "PreTrainedModel.train" and not getattr(
        module, "use_kernels", False
    )


class LMPolicy(GRPOPolicy):
    """A ``transformers`` causal LM as a critic-free GRPO policy over next-token actions.

    Parameters
    ----------
    observation_space : gymnasium.spaces.Dict
        ``Dict(input_ids, attention_mask)`` of the text environment (see the module docstring).
    action_space : gymnasium.spaces.Discrete
        ``Discrete(vocab_size)``, the next token.
    lr_schedule : Callable[[float], float]
        Learning-rate schedule; its value at progress 1 is the optimizer's initial learning rate.
    model : None, str, os.PathLike or transformers.PreTrainedModel
        ``None`` builds the tiny default GPT-2 (:func:`build_tiny_lm`, vocabulary
        ``action_space.n``, or ``model_config``); a path loads that local checkpoint directory with
        ``AutoModelForCausalLM.from_pretrained(path, local_files_only=True)`` (never the hub); a
        model object is used as is (not copied).
    tokenizer : None, str, os.PathLike or transformers.PreTrainedTokenizerBase
        Only needed for special-token ids and :meth:`save_pretrained`. ``None``: the checkpoint
        directory's tokenizer when ``model`` is a path holding one, else the built-in character
        tokenizer. It must be the environment's tokenizer (actions are its ids).
    model_config : None, dict or transformers.PretrainedConfig
        When ``model`` is ``None``: a ``PretrainedConfig`` or a dict with ``model_type`` builds that
        architecture from scratch; a dict without ``model_type`` is keyword arguments of
        :func:`build_tiny_lm` (``n_layer``, ``n_embd``, ``n_head``, ``n_positions``, ``seed``...).
        Without a ``seed`` the tiny model's initial weights come from the torch RNG, which
        ``GRPO(seed=...)`` sets, so different seeds start from different models.
    torch_dtype : None, str or torch.dtype
        Parameter dtype (``"bfloat16"`` halves memory on GPUs); ``None`` keeps float32 for built
        models and loads checkpoints in float32. Log-probs are always computed in float32.
    lora_config : None, dict or peft.LoraConfig
        Train a LoRA adapter instead of all weights (needs ``peft``). A dict is passed to
        ``peft.LoraConfig(task_type="CAUSAL_LM", **lora_config)``.
    temperature : float
        Sampling temperature. Log-probs and entropies (in :meth:`act` and
        :meth:`evaluate_sequences`) are those of the tempered distribution actually sampled from.
    disable_dropout : bool
        Set every dropout probability to 0 (as TRL does): the training pass must give the same
        log-probs as the sampling pass, which dropout would break.
    autocast : None, bool or str
        Mixed precision of the model's forward passes (sampling and training): ``None`` (default)
        runs them under ``torch.autocast`` in bfloat16 when the model is on a CUDA device that
        supports it, and in the parameters' dtype elsewhere; ``False`` never autocasts; ``True`` or
        ``"bfloat16"`` / ``"float16"`` autocasts to that dtype on any device (CPU too). Weights,
        optimizer state and log-probs stay float32; under bf16 the KV-cached sampling pass and the
        teacher-forced training pass round differently, so their log-probs agree only to bf16
        precision (about 1e-2; ``benchmarks/gpu_check.py`` measures it).
    optimizer_class : type of torch.optim.Optimizer
        Optimizer over the trainable parameters (only the adapter's with LoRA).
    optimizer_kwargs : dict or None
        Extra optimizer keyword arguments (not the learning rate). Adam and AdamW get
        ``fused=True`` unless ``fused`` or ``foreach`` is given.
    compile_decode : bool or "auto"
        Decode the tokens after a round's prefill on a static KV cache with a ``torch.compile`` d
        single-token step (:mod:`egsw_gym.policies.lm.decode`): about 2x faster steps for small
        models once compiled, same tokens, log-probs and entropies (to float rounding), but the
        compilation costs 15-50 s per shape bucket on a CPU. ``True`` compiles at the first round;
        ``False`` never; ``"auto"`` (default) compiles once :data:`AUTO_COMPILE_AFTER_S` CPU seconds
        have gone into eager decode steps, so short runs do not pay for it. Where compilation is
        unavailable or fails the policy warns and decodes eagerly.
    """

    uses_step_observations = False

    #: Decode a round whose rows come in runs of one prompt of equal length (GRPO's groups) with one
    #: KV-cache sequence per run (:mod:`~egsw_gym.policies.lm.shared_decode`): the same numbers up
    #: to float rounding, without a copy of each prompt's cache per row. ``False``: one cache row per
    #: sequence, as ``generate`` decodes.
    shared_prompt_decode: bool = True

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        lr_schedule: Schedule,
        model: Any = None,
        tokenizer: Any = None,
        model_config: Any = None,
        torch_dtype: Any = None,
        lora_config: Any = None,
        temperature: float = 1.0,
        disable_dropout: bool = True,
        autocast: bool | str | None = None,
        optimizer_class: type[torch.optim.Optimizer] = torch.optim.AdamW,
        optimizer_kwargs: dict[str, Any] | None = None,
        compile_decode: bool | str = "auto",
    ) -> None:
        obs_len = check_spaces(observation_space, action_space)
        if not (isinstance(compile_decode, bool) or compile_decode == "auto"):
            raise ValueError(f"compile_decode must be True, False or 'auto', got {compile_decode!r}")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        super().__init__(
            observation_space,
            action_space,
            optimizer_class=optimizer_class,
            optimizer_kwargs=optimizer_kwargs,
        )
        self.n_actions = int(action_space.n)
        self.obs_len = obs_len
        self.temperature = float(temperature)
        self.torch_dtype = torch_dtype
        self.lora_config = lora_config
        self.disable_dropout = disable_dropout
        if not (autocast is None or isinstance(autocast, bool) or autocast in ("bfloat16", "float16")):
            raise ValueError(f"autocast must be None, True, False, 'bfloat16' or 'float16', got {autocast!r}")
        self.autocast = autocast
        dtype = resolve_dtype(torch_dtype)

        self.tokenizer = resolve_tokenizer(tokenizer, model)
        self.model = build_model(model, model_config, dtype, obs_len, self.n_actions, self.tokenizer)
        check_model(self.model, self.n_actions, obs_len)
        if lora_config is not None:
            self.model = apply_lora(self.model, lora_config)
        if disable_dropout:  # after LoRA, which brings its own dropout modules
            zero_dropout(self.model)
        use_fast_tanh_gelu(self.model)  # same function; faster on CPU where no gradient is recorded
        self._cache_kw, self._has_logits_to_keep = forward_kwargs(self.model)
        self._max_position = last_position(self.base_model.config)
        self._fill_token_id = self._special_id("bos_token_id", "eos_token_id", "pad_token_id")
        self.compile_decode = compile_decode
        self._decoder: StaticDecoder | None = None
        self._eager_decode_seconds = 0.0

        trainable = [p for p in self.parameters() if p.requires_grad]
        self.optimizer = self.optimizer_class(
            trainable, lr=lr_schedule(1), **fused_if_unset(self.optimizer_class, self.optimizer_kwargs)
        )

    # ----------------------------------------------------------------------- construction helpers
    @property
    def base_model(self) -> Any:
        """The ``transformers`` model without a peft wrapper (its ``config``, ``save_pretrained``...)."""
        return unwrap_peft(self.model)

    def _special_id(self, *names: str) -> int:
        """First defined special-token id among ``names`` (tokenizer first, then model config), else 0."""
        for source in (self.tokenizer, self.base_model.config):
            for name in names:
                value = getattr(source, name, None)
                if isinstance(value, int) and 0 <= value < self.n_actions:
                    return value
        return 0

    def train(self, mode: bool = True) -> LMPolicy:
        """``nn.Module.train``: set ``training`` on the policy and every submodule.

        ``nn.Module.train`` recurses and sets the flag through ``Module.__setattr__``, ~75 us for the
        tiny GPT-2's 35 modules, and GRPO switches modes twice a step. Where no submodule customises
        ``train`` (``transformers``' only does so for hub kernels, ``use_kernels``), the flags are
        set directly: same result. Otherwise (peft layers, kernels...) ``nn.Module.train`` runs.
        """
        modules = list(self.modules())
        if not isinstance(mode, bool) or not all(_plain_train(m) for m in modules[1:]):  # [0] is self
            return super().train(mode)
        for module in modules:
            object.__setattr__(module, "training", mode)
        return self

    def _get_constructor_parameters(self) -> dict[str, Any]:
        """What SB3's ``save``/``load`` need to rebuild this policy without the hub or the original model.

        The model is rebuilt from its config (weights then come from the saved ``state_dict``), so a
        policy created from a checkpoint path loads even if that directory is gone.
        """
        data = super()._get_constructor_parameters()
        data.pop("normalize_images", None)
        data.update(
            lr_schedule=self._dummy_schedule,
            model=None,
            tokenizer=self.tokenizer,
            model_config=self.base_model.config.to_dict(),
            torch_dtype=self.torch_dtype,
            lora_config=self.lora_config,
            temperature=self.temperature,
            disable_dropout=self.disable_dropout,
            autocast=self.autocast,
            optimizer_class=self.optimizer_class,
            optimizer_kwargs=self.optimizer_kwargs,
            compile_decode=self.compile_decode,
        )
        return data

    def __getstate__(self) -> dict[str, Any]:
        """Copies and pickles leave the decoder out: its compiled steps hold this policy's model."""
        state = dict(super().__getstate__())
        state["_decoder"] = None
        return state

    def checkpoint_kwargs(self, policy_kwargs: dict[str, Any] | None) -> dict[str, Any]:
        """``policy_kwargs`` as plain data for a pickle-free checkpoint (GRPO's ``save`` stores this).

        A model object or a checkpoint path becomes ``model=None`` plus the model's config as a dict
        (the weights come back from the saved state dict, so the directory is not needed at load
        time); a ``PretrainedConfig`` becomes its dict; a tokenizer object becomes the local
        directory it was loaded from, or ``None`` (the built-in tokenizer) when it has none; a
        ``torch.dtype`` becomes its name. Everything else is kept as given.
        """
        from transformers import PretrainedConfig  # lazy: the optional [llm] extra

        kwargs = dict(policy_kwargs or {})
        if kwargs.get("model") is not None:
            kwargs["model"] = None
            kwargs["model_config"] = self.base_model.config.to_dict()
        elif isinstance(kwargs.get("model_config"), PretrainedConfig):
            kwargs["model_config"] = kwargs["model_config"].to_dict()
        tokenizer = kwargs.get("tokenizer", None)
        if isinstance(tokenizer, os.PathLike):
            kwargs["tokenizer"] = os.fspath(tokenizer)
        elif tokenizer is not None and not isinstance(tokenizer, str):
            source = getattr(tokenizer, "name_or_path", None)
            kwargs["tokenizer"] = source if isinstance(source, str) and os.path.isdir(source) else None
        if kwargs.get("tokenizer") is None:
            # The tokenizer may have come from a checkpoint directory (model=path): keep pointing at it.
            source = getattr(self.tokenizer, "name_or_path", None)
            if isinstance(source, str) and os.path.isdir(source):
                kwargs["tokenizer"] = source
        if isinstance(kwargs.get("torch_dtype"), torch.dtype):
            kwargs["torch_dtype"] = str(kwargs["torch_dtype"]).removeprefix("torch.")
        return kwargs

    def _autocast(self) -> contextlib.AbstractContextManager:
        """The ``torch.autocast`` context of the model's forward passes (see the ``autocast`` argument)."""
        setting = getattr(self, "autocast", None)  # policies pickled before the option existed
        device = self.device
        if setting is False or (setting is None and device.type != "cuda"):
            return contextlib.nullcontext()
        if setting is None:
            if not torch.cuda.is_bf16_supported():
                return contextlib.nullcontext()
            dtype = torch.bfloat16
        else:
            dtype = torch.bfloat16 if setting is True else getattr(torch, setting)
        return torch.autocast(device_type=device.type, dtype=dtype)

    # ----------------------------------------------------------------------- GRPO interface
    def _obs_tensors(self, obs: PyTorchObs) -> tuple[torch.Tensor, torch.Tensor]:
        """``(input_ids, attention_mask)`` as 2-D tensors on the model's device."""
        if not isinstance(obs, dict) or "input_ids" not in obs or "attention_mask" not in obs:
            raise ValueError("LMPolicy expects dict observations with 'input_ids' and 'attention_mask'")
        ids = torch.as_tensor(obs["input_ids"], device=self.device)
        mask = torch.as_tensor(obs["attention_mask"], device=self.device)
        if ids.dim() == 1:
            ids, mask = ids.unsqueeze(0), mask.unsqueeze(0)
        return ids, mask

    def _next_token(
        self, logits: torch.Tensor, deterministic: bool
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Choose tokens from ``(B, V)`` last-position logits; return actions, log-probs, entropies."""
        logits = logits[:, : self.n_actions].float()
        if self.temperature != 1.0:
            logits = logits / self.temperature
        uniform = None if deterministic else torch.rand(logits.shape[0], 1, device=logits.device)
        return choose_tokens(logits, uniform)

    def act(
        self, obs: PyTorchObs, state: LMState | None, deterministic: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, LMState]:
        """Choose the next token of every sequence, reusing the KV cache kept in ``state``.

        Parameters
        ----------
        obs : dict of torch.Tensor
            ``input_ids`` and ``attention_mask``, ``(n_envs, P + N)`` (or one unbatched observation).
            Read only when ``state`` is None; afterwards the previous actions are fed back, so
            environments that auto-reset mid-round do not disturb the others' caches.
        state : LMState or None
            ``None`` at the first step of a round (prefill the prompt); afterwards the value the
            previous call returned.
        deterministic : bool
            Greedy (argmax) tokens instead of samples.

        Returns
        -------
        actions : torch.Tensor
            ``(n_envs,)`` int64 token ids.
        log_probs : torch.Tensor
            ``(n_envs,)`` float32 log-probability of ``actions`` under the (tempered) distribution.
        entropies : torch.Tensor
            ``(n_envs,)`` float32 entropy of that distribution.
        new_state : LMState
            The state for the next call (the same object, updated in place).
        """
        # inference_mode skips autograd bookkeeping entirely; the outputs are cloned below so the
        # caller gets ordinary tensors it may later combine with tensors that require grad.
        with torch.inference_mode():
            if state is None:
                state, chosen = self._prefill(obs, deterministic)
            else:
                chosen = self._static_step(state, deterministic) if state.static is not None else None
                if chosen is None:
                    chosen = self._eager_step(state, deterministic)
                state.length += 1
                state.next_positions = state.next_positions + 1
            actions, log_probs, entropies = chosen
            state.last_actions = actions.unsqueeze(-1)
        return actions.clone(), log_probs.clone(), entropies.clone(), state

    def _prefill(self, obs: PyTorchObs, deterministic: bool) -> tuple[LMState, tuple[torch.Tensor, ...]]:
        """First step of a round: run the prompts, choose the first tokens, maybe go static or runs."""
        ids, mask = self._obs_tensors(obs)
        ids, mask = prepare_prompt(ids, mask, self._fill_token_id)
        batch, length = ids.shape
        inputs = {
            "input_ids": ids,
            # SDPA models take the 4D mask as it is, so transformers builds none (~0.2 ms a round).
            "attention_mask": causal_attention_mask(mask)
            if custom_mask_attention(self.model, length) == "sdpa"
            else mask,
            "position_ids": position_ids_from_mask(mask, self._max_position),
            self._cache_kw: None,
        }
        if self._has_logits_to_keep:
            inputs["logits_to_keep"] = 1
        # Room for as many new tokens as the prompt has, within the observation window (which
        # every round fits); a longer round doubles it. Reserving the whole window up front
        # would hold a large model's cache for tokens most rounds never generate.
        room = min(self.obs_len, 2 * length) - length
        run_steps = max(room, 1)  # a run's mask and cache hold at least one step
        decoder = self._static_decoder()
        shared = distinct_prompts(ids, mask)
        runs = None if decoder is not None else self._decode_runs(shared, mask, length, run_steps)
        with self._autocast():
            prefilled = None if runs is None else shared_prefill(self.model, inputs, *shared, gather=False)
            if prefilled is None:
                runs, prefilled = None, self._forward_step(inputs, shared)
        cache, logits = prefilled
        state = LMState(cache, None, length, mask.sum(1, keepdim=True), ids[:, -1:], runs=runs)
        if runs is not None:
            reserve_cache(cache, runs.cache_length(run_steps))
            return state, self._next_token(logits, deterministic)
        # One allocation for the whole round: the prompt mask then ones for every token fed
        # later (a round takes at most obs_len steps; _eager_step grows it beyond).
        state.mask_buffer = torch.cat([mask, mask.new_ones(batch, self.obs_len)], dim=1)
        if decoder is not None:
            state.static = decoder.begin(cache, mask, self.obs_len)
            if state.static is not None:
                state.cache = None
        if state.cache is not None:
            reserve_cache(state.cache, length + room)
        return state, self._next_token(logits, deterministic)

    def _decode_runs(
        self, shared: tuple[torch.Tensor, torch.Tensor] | None, mask: torch.Tensor, length: int, steps: int
    ) -> RunDecode | None:
        """The run layout of a round (:mod:`~egsw_gym.policies.lm.shared_decode`), its mask made for
        ``steps`` decode steps, or ``None`` where its rows do not come in runs of one length or the
        model cannot take the layout's mask."""
        if not self.shared_prompt_decode or shared is None:
            return None
        first_rows, _ = shared
        size = uniform_runs(first_rows, mask.shape[0])
        if size is None:
            return None
        # The runs' sequences grow by `size` keys a step: the model must honour the custom mask
        # (no sliding window shorter than they may grow) for the whole round.
        attention = custom_mask_attention(self.model, length + size * self.obs_len)
        if attention is None:
            return None
        dtype = None if attention == "sdpa" else next(self.model.parameters()).dtype
        return RunDecode.start(mask[first_rows], size, steps, dtype)

    def _static_decoder(self) -> StaticDecoder | None:
        """The compiled decoder when this round should use it (see ``compile_decode``), else ``None``."""
        setting = getattr(self, "compile_decode", False)  # policies pickled before the option existed
        if setting is False or (setting == "auto" and self._eager_decode_seconds < AUTO_COMPILE_AFTER_S):
            return None
        if not isinstance(self._autocast(), contextlib.nullcontext):
            return None  # mixed precision rounds differently in a compiled graph: stay eager
        if self._decoder is None:
            reason = compile_available(self.device)
            self._decoder = StaticDecoder(
                self.model, self.n_actions, self.temperature, self._cache_kw, self._has_logits_to_keep
            )
            if reason is not None:
                self._decoder._fail(reason)
        return None if self._decoder.failure is not None else self._decoder

    def _positions(self, state: LMState) -> torch.Tensor:
        """``(B, 1)`` position ids of the tokens fed next, clamped to the model's last position.

        A row's position counts its real tokens, at most ``state.length``; a round stays within the
        position table (:func:`~egsw_gym.policies.lm.build.check_model`), so the clamp only runs for steps beyond it.
        """
        if self._max_position is not None and state.length > self._max_position:
            return state.next_positions.clamp(max=self._max_position)
        return state.next_positions

    def _static_step(self, state: LMState, deterministic: bool) -> tuple[torch.Tensor, ...] | None:
        """A compiled decode step; ``None`` (and the round continues eagerly) when the bucket is full or failed."""
        chosen = self._decoder.step(state.static, state.last_actions, self._positions(state), deterministic)
        if chosen is None:
            state.cache = self._decoder.to_dynamic(state.static)
            state.static = None
        return chosen

    def _eager_step(self, state: LMState, deterministic: bool) -> tuple[torch.Tensor, ...]:
        """A decode step on the model's dynamic KV cache (timed, for ``compile_decode="auto"``)."""
        t0 = time.process_time()
        length = state.length + 1
        if state.runs is not None:
            logits = self._run_step(state, length)
        else:
            if length > state.mask_buffer.shape[1]:
                state.mask_buffer = torch.cat([state.mask_buffer, torch.ones_like(state.mask_buffer)], dim=1)
            mask = state.mask_buffer[:, :length]
            if custom_mask_attention(self.model, length) == "sdpa":
                # The (B, 1, 1, K) mask of one new token as it is: transformers then builds none
                # (~0.15 ms a step on the tiny model), and computes the same attention.
                mask = mask[:, None, None, :].bool()
            inputs = {
                "input_ids": state.last_actions,
                "attention_mask": mask,
                "position_ids": self._positions(state),
                self._cache_kw: state.cache,
            }
            if self._has_logits_to_keep:
                inputs["logits_to_keep"] = 1
            with self._autocast():
                state.cache, logits = self._forward_step(inputs)
        chosen = self._next_token(logits, deterministic)
        self._eager_decode_seconds += time.process_time() - t0
        return chosen

    def _run_step(self, state: LMState, length: int) -> torch.Tensor:
        """A decode step of a round laid out as runs: each run's ``R`` new tokens side by side in one
        sequence of the batch (``(G, R)``), each at its own row's position. ``(B, V)`` logits."""
        runs = state.runs
        inputs = {
            "input_ids": state.last_actions.view(-1, runs.size),
            "attention_mask": runs.step_mask(length - runs.prompt_length),
            "position_ids": self._positions(state).view(-1, runs.size),
            self._cache_kw: state.cache,
        }
        with self._autocast():
            output = self.model(**inputs, use_cache=True)
        state.cache = output_cache(output)
        return output.logits.reshape(-1, output.logits.shape[-1])

    def _forward_step(
        self, inputs: dict[str, Any], shared: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> tuple[Any, torch.Tensor]:
        """One cached forward pass of :meth:`act`: the new KV cache and the ``(B, V)`` next-token logits.

        A prefill whose batch repeats prompts (``shared``, from :func:`distinct_prompts`: a GRPO
        round holds ``group_size`` rows per prompt) runs each run of repeated prompts once
        (:func:`~egsw_gym.policies.lm.forward.shared_prefill`); the rows' caches and logits are the
        same as a full prefill's.
        """
        if shared is not None:
            prefilled = shared_prefill(self.model, inputs, *shared)
            if prefilled is not None:
                return prefilled
        output = self.model(**inputs, use_cache=True)
        return output_cache(output), output.logits[:, -1]

    def evaluate_sequences(
        self,
        first_obs: PyTorchObs,
        step_obs: PyTorchObs | None,
        actions: torch.Tensor,
        mask: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-probs and entropies of whole completions, with gradients, in one forward pass.

        Parameters
        ----------
        first_obs : dict of torch.Tensor
            ``(B, P + N)`` observations at the start of the episodes (the prompts).
        step_obs : None
            Unused (:attr:`uses_step_observations` is ``False``): the completion is ``actions``.
        actions : torch.Tensor
            ``(B, T)`` (or ``(B, T, 1)``) generated token ids, padded after each sequence's end.
        mask : torch.Tensor
            ``(B, T)`` bool, ``True`` on real tokens. Padding must come after the end; the padded
            outputs are set to 0.

        Returns
        -------
        log_probs : torch.Tensor
            ``(B, T)`` float32 log-probabilities of ``actions``.
        entropies : torch.Tensor
            ``(B, T)`` float32 entropies of each step's (tempered) next-token distribution.
        """
        del step_obs
        ids, prompt_mask = self._obs_tensors(first_obs)
        actions = torch.as_tensor(actions, device=self.device).long()
        if actions.dim() == 3:
            actions = actions.squeeze(-1)
        mask = torch.as_tensor(mask, device=self.device).bool()
        # Padding may hold anything (GRPO zero-pads); keep it a valid token id for the embedding.
        actions = torch.where(mask, actions, torch.zeros_like(actions)).clamp_(0, self.n_actions - 1)
        with self._autocast():
            log_probs, entropies = sequence_log_probs(
                self.model,
                ids,
                prompt_mask,
                actions,
                n_actions=self.n_actions,
                temperature=self.temperature,
                fill_token_id=self._fill_token_id,
                lengths=last_true(mask),
            )
        zero = torch.zeros((), device=log_probs.device)
        return torch.where(mask, log_probs, zero), torch.where(mask, entropies, zero)

    # ----------------------------------------------------------------------- saving
    def save_pretrained(self, directory: str | os.PathLike, merge_lora: bool = True) -> str:
        """Write the model (and tokenizer) as a Hugging Face checkpoint directory.

        The directory can be passed back as ``LMPolicy(..., model=directory)`` (or to
        ``AutoModelForCausalLM.from_pretrained``) with no network access.

        Parameters
        ----------
        directory : str or os.PathLike
            Target directory (created if needed).
        merge_lora : bool
            With a LoRA adapter: ``True`` merges it into a copy of the base weights and writes a
            standalone checkpoint; ``False`` writes peft's adapter-only format (loading it then needs
            the base model and ``peft``).

        Returns
        -------
        str
            The directory.
        """
        directory = os.fspath(directory)
        os.makedirs(directory, exist_ok=True)
        model = self.model
        if hasattr(model, "get_base_model") and merge_lora:
            model = copy.deepcopy(model).merge_and_unload()
        model.save_pretrained(directory)
        if self.tokenizer is not None and hasattr(self.tokenizer, "save_pretrained"):
            self.tokenizer.save_pretrained(directory)
        return directory

    def decode(self, token_ids: torch.Tensor | np.ndarray | list[int]) -> str:
        """Decode token ids with the policy's tokenizer (a convenience for logging samples).

        Parameters
        ----------
        token_ids : torch.Tensor, numpy.ndarray or list of int
            One sequence of ids.
        """
        ids = token_ids.tolist() if hasattr(token_ids, "tolist") else list(token_ids)
        return self.tokenizer.decode(ids, skip_special_tokens=False)
