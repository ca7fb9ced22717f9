"""The :class:`LMPolicy` class: a causal LM as a GRPO policy, and its per-round :class:`LMState`.

The plain path is all in this file and :mod:`~egsw_gym.policies.lm.forward`:

- :meth:`LMPolicy.act` prefills a round's (left-padded) prompts once, then feeds one token a step
  through the model's KV cache, and samples the next token from ``log_softmax(logits / tau)``;
- :meth:`LMPolicy.evaluate_sequences` recomputes the same log-probs and entropies, with gradients, in
  one teacher-forced pass (:func:`~egsw_gym.policies.lm.forward.sequence_log_probs`).

The accelerations named in ``accel`` (:mod:`egsw_gym.policies.lm.accel`) take over parts of those
two methods where they apply, and compute the same numbers up to float rounding.
"""

from __future__ import annotations

import contextlib
import copy
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.type_aliases import PyTorchObs, Schedule

from egsw_gym.policies.base import GRPOPolicy
from egsw_gym.policies.lm import accel as accelerations
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
from egsw_gym.policies.lm.compat import forward_kwargs, output_cache, unwrap_peft
from egsw_gym.policies.lm.forward import choose_tokens, sequence_log_probs, token_log_softmax
from egsw_gym.policies.lm.inputs import last_position, last_true, position_ids_from_mask, prepare_prompt

__all__ = ["LMPolicy", "LMState"]


@dataclass
class LMState:
    """Recurrent state of :class:`LMPolicy` within one round of episodes.

    Attributes
    ----------
    cache : Any
        The model's KV cache (a ``transformers`` ``Cache``) over every token fed so far.
    attention_mask : torch.Tensor
        ``(B, L)`` 1 for the real tokens the cache holds (the packed prompt, then one column per
        token fed).
    positions : torch.Tensor
        ``(B, 1)`` position id of the next token fed (the real tokens so far of each row).
    last_actions : torch.Tensor or None
        ``(B, 1)`` the tokens chosen at the previous step, fed at the next one.
    accel : Any
        ``None`` on the plain path; else the accelerated round (:mod:`egsw_gym.policies.lm.accel`)
        that holds the round's cache instead of ``cache``.
    """

    cache: Any
    attention_mask: torch.Tensor
    positions: torch.Tensor
    last_actions: torch.Tensor | None = None
    accel: Any = None


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
    accel : str or iterable of str
        The accelerations to use (:mod:`egsw_gym.policies.lm.accel`), each computing the same
        tokens, log-probs and entropies as the plain path up to float rounding: ``"shared_decode"``
        (decode GRPO's runs of one prompt with one KV-cache sequence per run), ``"prefix_tree"``
        (the training pass over each run of one prompt as a prefix tree), ``"decode_cache"`` (the
        plain decode writing into reserved cache room, with ready 4D masks), ``"compile"`` (decode
        on a static KV cache with a ``torch.compile`` d step; the first round of each shape
        compiles).
        Default :data:`~egsw_gym.policies.lm.accel.DEFAULT_ACCEL`; ``()`` runs the plain path
        only; ``"all"`` every acceleration.
    """

    uses_step_observations = False

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
        accel: str | tuple[str, ...] | list[str] = accelerations.DEFAULT_ACCEL,
    ) -> None:
        obs_len = check_spaces(observation_space, action_space)
        accel = accelerations.check_accel(accel)
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if not (autocast is None or isinstance(autocast, bool) or autocast in ("bfloat16", "float16")):
            raise ValueError(f"autocast must be None, True, False, 'bfloat16' or 'float16', got {autocast!r}")
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
        self.autocast = autocast
        self.accel = accel

        self.tokenizer = resolve_tokenizer(tokenizer, model)
        self.model = build_model(
            model, model_config, resolve_dtype(torch_dtype), obs_len, self.n_actions, self.tokenizer
        )
        check_model(self.model, self.n_actions, obs_len)
        if lora_config is not None:
            self.model = apply_lora(self.model, lora_config)
        if disable_dropout:  # after LoRA, which brings its own dropout modules
            zero_dropout(self.model)
        self._cache_kw, self._has_logits_to_keep = forward_kwargs(self.model)
        self._max_position = last_position(self.base_model.config)
        self._fill_token_id = self._special_id("bos_token_id", "eos_token_id", "pad_token_id")
        self._decoder: accelerations.StaticDecoder | None = None  # built at the first compiled round

        trainable = [p for p in self.parameters() if p.requires_grad]
        self.optimizer = self.optimizer_class(
            trainable, lr=lr_schedule(1), **fused_if_unset(self.optimizer_class, self.optimizer_kwargs)
        )

    # ----------------------------------------------------------------------- the plain path
    def act(
        self, obs: PyTorchObs, state: LMState | None, deterministic: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, LMState]:
        """Choose the next token of every sequence, reusing the KV cache kept in ``state``.

        Parameters
        ----------
        obs : dict of torch.Tensor
            ``input_ids`` and ``attention_mask``, ``(n_envs, P + N)`` (or one unbatched observation).
            Read only when ``state`` is None; afterwards the previous actions are fed back, so
            environments that auto-reset mid-round do not disturb the others' caches (the rollout
            masks what a finished row generates).
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
                state, logits = self._prefill(obs)
                chosen = self._next_token(logits, deterministic)
            else:
                chosen = self._accelerated_step(state, deterministic) if state.accel is not None else None
                if chosen is None:
                    chosen = self._next_token(self._decode_step(state), deterministic)
                state.positions = state.positions + 1
            actions, log_probs, entropies = chosen
            state.last_actions = actions.unsqueeze(-1)
        return actions.clone(), log_probs.clone(), entropies.clone(), state

    def _prefill(self, obs: PyTorchObs) -> tuple[LMState, torch.Tensor]:
        """First step of a round: run the prompts once; the state and the ``(B, V)`` next-token logits."""
        ids, mask = prepare_prompt(*self._obs_tensors(obs), self._fill_token_id)  # left-padded
        position_ids = position_ids_from_mask(mask, self._max_position)
        state = LMState(cache=None, attention_mask=mask, positions=mask.sum(1, keepdim=True))
        if "shared_decode" in self.accel:  # accel: each run of one prompt decodes as one sequence
            logits = self._start_run_decode(state, ids, mask, position_ids)
            if logits is not None:
                return state, logits
        logits, state.cache = self._forward(ids, mask, position_ids, cache=None)
        if "compile" in self.accel:  # accel: the next steps on a static cache, compiled
            self._start_static_decode(state, mask)
        if state.accel is None and "decode_cache" in self.accel:  # accel: room for the next steps
            accelerations.reserve_decode_room(state.cache, mask.shape[1], self.obs_len)
        return state, logits

    def _decode_step(self, state: LMState) -> torch.Tensor:
        """Feed every row's last token through the KV cache; the ``(B, V)`` logits of the next one."""
        mask = state.attention_mask
        state.attention_mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
        positions = state.positions
        if self._max_position is not None:  # only steps past an episode's end can reach it
            positions = positions.clamp(max=self._max_position)
        step_mask = state.attention_mask
        if "decode_cache" in self.accel:  # accel: the step's 4D mask as the model takes it
            step_mask = accelerations.step_mask(self.model, step_mask)
        logits, state.cache = self._forward(state.last_actions, step_mask, positions, state.cache)
        return logits

    def _next_token(
        self, logits: torch.Tensor, deterministic: bool
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Choose tokens from ``(B, V)`` next-token logits; return actions, log-probs, entropies."""
        log_p = token_log_softmax(logits, self.n_actions, self.temperature)  # log p = log_softmax(z / tau)
        uniform = None if deterministic else torch.rand(log_p.shape[0], 1, device=log_p.device)
        return choose_tokens(log_p, uniform)

    def _forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor, cache: Any
    ) -> tuple[torch.Tensor, Any]:
        """One cached forward pass: the ``(B, V)`` logits after each row's last token, and the new cache."""
        kwargs: dict[str, Any] = {self._cache_kw: cache}
        if self._has_logits_to_keep:
            kwargs["logits_to_keep"] = 1  # only the last column's logits are needed
        with self._autocast():
            output = self.model(
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=position_ids,
                use_cache=True,
                **kwargs,
            )
        return output.logits[:, -1], output_cache(output)

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
        ids, prompt_mask = prepare_prompt(*self._obs_tensors(first_obs), self._fill_token_id)
        actions = torch.as_tensor(actions, device=self.device).long()
        if actions.dim() == 3:
            actions = actions.squeeze(-1)
        mask = torch.as_tensor(mask, device=self.device).bool()
        # Padding may hold anything (GRPO zero-pads); keep it a valid token id for the embedding.
        actions = torch.where(mask, actions, torch.zeros_like(actions)).clamp_(0, self.n_actions - 1)
        with self._autocast():
            out = None
            if "prefix_tree" in self.accel:  # accel: each run of one prompt as one prefix tree
                out = accelerations.prefix_tree_log_probs(
                    self.model, ids, prompt_mask, actions, last_true(mask), self.n_actions, self.temperature
                )
            if out is None:
                out = sequence_log_probs(
                    self.model,
                    ids,
                    prompt_mask,
                    actions,
                    self.n_actions,
                    self.temperature,
                    self._fill_token_id,
                )
        log_probs, entropies = out
        zero = torch.zeros((), device=log_probs.device)
        return torch.where(mask, log_probs, zero), torch.where(mask, entropies, zero)

    # ----------------------------------------------------------------------- accelerations (accel)
    def _start_run_decode(
        self, state: LMState, ids: torch.Tensor, mask: torch.Tensor, position_ids: torch.Tensor
    ) -> torch.Tensor | None:
        """Prefill a round laid out as runs (``"shared_decode"``); its first logits, or ``None``
        where the round does not qualify (it then decodes plainly)."""
        with self._autocast():
            started = accelerations.start_run_decode(
                self.model, ids, mask, position_ids, self.obs_len, self._next_token
            )
        if started is None:
            return None
        state.accel, logits = started
        return logits

    def _start_static_decode(self, state: LMState, mask: torch.Tensor) -> None:
        """Move a prefilled round onto the compiled decoder's static cache (``"compile"``), where it fits."""
        if not isinstance(self._autocast(), contextlib.nullcontext):
            return  # mixed precision rounds differently in a compiled graph: stay plain
        state.accel = self._static_decoder().begin(state.cache, mask, self.obs_len)
        if state.accel is not None:
            state.cache = None  # the static round holds a copy

    def _accelerated_step(self, state: LMState, deterministic: bool) -> tuple[torch.Tensor, ...] | None:
        """A decode step of an accelerated round; ``None`` when the round continues on the plain path."""
        positions = state.positions
        if self._max_position is not None:
            positions = positions.clamp(max=self._max_position)
        with self._autocast():
            chosen = state.accel.step(state.last_actions, positions, deterministic)
        if chosen is None:  # e.g. a compiled round outgrew its static cache: go on plainly from there
            state.cache, state.attention_mask = state.accel.to_plain()
            state.accel = None
        return chosen

    def _static_decoder(self) -> accelerations.StaticDecoder:
        """The policy's compiled decoder (built once; it turns itself off where compiling fails)."""
        if self._decoder is None:
            self._decoder = accelerations.StaticDecoder(self.model, self.n_actions, self.temperature)
        return self._decoder

    # ----------------------------------------------------------------------- helpers
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

    def _obs_tensors(self, obs: PyTorchObs) -> tuple[torch.Tensor, torch.Tensor]:
        """``(input_ids, attention_mask)`` as 2-D tensors on the model's device."""
        if not isinstance(obs, dict) or "input_ids" not in obs or "attention_mask" not in obs:
            raise ValueError("LMPolicy expects dict observations with 'input_ids' and 'attention_mask'")
        ids = torch.as_tensor(obs["input_ids"], device=self.device)
        mask = torch.as_tensor(obs["attention_mask"], device=self.device)
        if ids.dim() == 1:
            ids, mask = ids.unsqueeze(0), mask.unsqueeze(0)
        return ids, mask

    def _autocast(self) -> contextlib.AbstractContextManager:
        """The ``torch.autocast`` context of the model's forward passes (see the ``autocast`` argument)."""
        setting = self.autocast
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
            accel=self.accel,
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
