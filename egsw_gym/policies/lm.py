"""``"LMPolicy"``: any ``transformers`` causal language model as a GRPO policy.

The text environment's action is the next token, so a causal LM *is* a policy over it. The policy
keeps the model's KV cache as its recurrent state across the steps of a round: the first
:meth:`LMPolicy.act` call of a round (``state is None``) prefills the prompt read from the
observation, every later call feeds back only the token chosen at the previous step. Stepping the
environment token by token therefore costs what ``model.generate`` costs.

:meth:`LMPolicy.evaluate_sequences` recomputes the same log-probs with gradients in one
teacher-forced forward pass over prompt plus completion. Both paths build their inputs the same way
(:func:`prepare_prompt`, :func:`position_ids_from_mask`), which is what makes them agree: prompts are
left-padded, so positions must come from the attention mask, as ``generate`` does, or every padded
prompt would be read at shifted positions.

Observations (see ``egsw_gym.envs.text_generation``)::

    Dict(input_ids=Box(int64, (P + N,)), attention_mask=Box(0, 1, (P + N,)))

with the prompt left-padded into the first ``P`` slots and generated tokens from slot ``P`` on.
The policy never needs ``P``: it packs whatever tokens the mask marks as real to the right
(:func:`prepare_prompt`), which also makes ``predict`` work on an observation taken mid-episode.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.type_aliases import PyTorchObs, Schedule

from egsw_gym.policies.base import GRPOPolicy
from egsw_gym.policies.lm_decode import StaticDecoder, StaticRound, choose_tokens, compile_available
from egsw_gym.policies.tiny_lm import build_tiny_lm

__all__ = [
    "LMPolicy",
    "LMState",
    "build_tiny_lm",
    "distinct_prompts",
    "prepare_prompt",
    "position_ids_from_mask",
    "sequence_log_probs",
]


# --------------------------------------------------------------------------- input preparation
def prepare_prompt(
    input_ids: torch.Tensor, attention_mask: torch.Tensor, fill_token_id: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pack the real tokens of each row and drop the columns that are padding in every row.

    The environment's observation holds a left-padded prompt followed by right-padded generated
    tokens. Moving each row's real tokens to the right end (keeping their order) turns it into the
    left-padded batch a KV-cached decoder wants: the next-token logits of every row are then in the
    last column. Positions come from the mask (:func:`position_ids_from_mask`), so packing does not
    change what the model computes. A row without any real token gets ``fill_token_id`` in its last
    slot, because a query that may attend to nothing gives undefined attention.

    Parameters
    ----------
    input_ids : torch.Tensor
        ``(B, L)`` token ids.
    attention_mask : torch.Tensor
        ``(B, L)`` 1 for real tokens, 0 for padding.
    fill_token_id : int
        Token placed in rows that have no real token (the BOS or EOS token is a good choice).

    Returns
    -------
    input_ids : torch.Tensor
        ``(B, L')`` int64, left-padded, ``L' = max(1, longest row)``.
    attention_mask : torch.Tensor
        ``(B, L')`` int64.
    """
    ids = input_ids.long()
    mask = attention_mask.long()
    # Drop the trailing columns no row uses (the empty completion slots of a first observation),
    # which makes a first observation a plain left-padded batch.
    used = mask.any(0).nonzero()
    if len(used) and int(used[-1]) + 1 < mask.shape[1]:
        ids, mask = ids[:, : int(used[-1]) + 1], mask[:, : int(used[-1]) + 1]
    # Fast path (the normal first observation): the mask never goes 1 -> 0 along a row, i.e. the
    # batch is already left-padded. Otherwise sort pads to the front; a stable sort keeps token order.
    if bool((mask[:, 1:] < mask[:, :-1]).any()):
        order = torch.argsort(mask, dim=1, stable=True)
        ids = ids.gather(1, order)
        mask = mask.gather(1, order)
    lengths = mask.sum(1)
    if bool((lengths == 0).any()):
        empty = lengths == 0
        ids = ids.clone()
        mask = mask.clone()
        ids[empty, -1] = fill_token_id
        mask[empty, -1] = 1
        lengths = mask.sum(1)
    keep = max(int(lengths.max()), 1)
    return ids[:, -keep:], mask[:, -keep:]


def position_ids_from_mask(attention_mask: torch.Tensor, max_position: int | None = None) -> torch.Tensor:
    """Position ids that count only real tokens, as ``GenerationMixin.generate`` builds them.

    Parameters
    ----------
    attention_mask : torch.Tensor
        ``(B, L)`` 1 for real tokens, 0 for padding.
    max_position : int or None
        Clamp positions to this value (the model's last position embedding). Only tokens fed after
        an episode has used all its slots can reach it, and their outputs are masked anyway.

    Returns
    -------
    torch.Tensor
        ``(B, L)`` int64; 0 on padding (never attended to, so the value does not matter).
    """
    positions = attention_mask.long().cumsum(-1) - 1
    positions = positions.clamp_(min=0)
    if max_position is not None:
        positions = positions.clamp_(max=max_position)
    return positions


def _forward_kwargs(model: torch.nn.Module) -> tuple[str, bool]:
    """Name of the KV-cache keyword (``cache`` in transformers >= 5.2x, else ``past_key_values``) and
    whether ``logits_to_keep`` is accepted, read from the signature of the underlying model."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # peft wrapper
    params = inspect.signature(base.forward).parameters
    cache_kw = "cache" if "cache" in params else "past_key_values"
    return cache_kw, "logits_to_keep" in params


def _output_cache(output: Any) -> Any:
    """The KV cache of a model output, whichever name this transformers version uses."""
    cache = getattr(output, "cache", None)
    return cache if cache is not None else getattr(output, "past_key_values", None)


def _max_position(config: Any) -> int | None:
    """Last usable position of models with a fixed position table (GPT-2), else ``None``."""
    for name in ("n_positions", "max_position_embeddings"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value - 1
    return None


def distinct_prompts(ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Rows that start each run of repeated prompts, and every row's run, when some prompts repeat.

    GRPO samples ``group_size`` completions of every prompt, and lays a group's rows out next to
    each other, so a batch usually holds each prompt ``group_size`` times in a row. A causal LM's
    states over a prompt do not depend on what follows it, so such a run needs one forward pass;
    its KV cache is then gathered for every row of the run (:func:`_gather_cache`), which is exact
    (also for gradients, which the gather sums back). Only *adjacent* equal rows are merged: that
    is one comparison per row (a sort-based ``torch.unique`` costs more than the pass it saves on
    small batches), and equal prompts further apart are simply run again.

    Parameters
    ----------
    ids, mask : torch.Tensor
        ``(B, L)`` packed prompts (:func:`prepare_prompt`).

    Returns
    -------
    tuple of torch.Tensor or None
        ``(first_rows, inverse)``: ``first_rows`` ``(U,)`` the first row of each run, increasing;
        ``inverse`` ``(B,)`` the index into ``first_rows`` of every row's run; ``None`` when no two
        adjacent rows hold the same prompt (nothing to share).
    """
    batch = ids.shape[0]
    if batch < 2:
        return None
    # Padding ids may differ between equal prompts: compare ids only where the mask is real (token
    # ids are >= 0, so -1 also encodes the mask itself).
    key = torch.where(mask.bool(), ids, -1)
    starts = torch.ones(batch, dtype=torch.bool, device=ids.device)
    starts[1:] = (key[1:] != key[:-1]).any(1)
    first_rows = starts.nonzero().squeeze(1)
    if len(first_rows) == batch:
        return None
    return first_rows, starts.cumsum(0) - 1


def _checkpoints_activations(model: torch.nn.Module) -> bool:
    """Whether activation (gradient) checkpointing is on: ``transformers`` then refuses ``use_cache``."""
    name = "is_activation_checkpointing" if hasattr(model, "is_activation_checkpointing") else None
    return bool(getattr(model, name or "is_gradient_checkpointing", False))


def _gather_cache(cache: Any, index: torch.Tensor) -> bool:
    """Gather the batch rows ``index`` of a ``transformers`` KV cache in place; ``False`` if unsupported."""
    layers = getattr(cache, "layers", None)
    if layers is None or not hasattr(cache, "reorder_cache"):
        return False
    # Only plain key/value layers (DynamicLayer and friends): sliding-window or recurrent layers keep
    # other state that a row gather would have to follow.
    if not all(hasattr(layer, "keys") and hasattr(layer, "values") for layer in layers):
        return False
    cache.reorder_cache(index)  # index_select per layer: differentiable, not in place on the tensors
    return True


def _shared_prefill(
    model: torch.nn.Module, inputs: dict[str, Any], first_rows: torch.Tensor, inverse: torch.Tensor
) -> tuple[Any, torch.Tensor] | None:
    """Run a batch of prompts for the rows ``first_rows`` only, then give every row its prompt's state.

    ``inputs`` are the model's keyword arguments for the whole batch (tensors with the batch first;
    other values are passed as they are). Returns the KV cache gathered back to every row
    (``inverse``, see :func:`distinct_prompts`) and the ``(B, V)`` logits at the last prompt
    position; ``None`` when the model's cache cannot be gathered by rows (the caller then runs the
    whole batch).
    """
    distinct = {k: v[first_rows] if torch.is_tensor(v) else v for k, v in inputs.items()}
    output = model(**distinct, use_cache=True)
    cache = _output_cache(output)
    if cache is None or not _gather_cache(cache, inverse):
        return None
    return cache, output.logits[:, -1][inverse]


def _shared_prompt_logits(
    model: torch.nn.Module,
    ids: torch.Tensor,
    mask: torch.Tensor,
    actions: torch.Tensor,
    full_mask: torch.Tensor,
    positions: torch.Tensor,
    first_rows: torch.Tensor,
    inverse: torch.Tensor,
) -> torch.Tensor | None:
    """``(B, T, V)`` next-token logits before each action, with one pass per run of repeated prompts.

    Two passes: the prompts (:func:`_shared_prefill`: their KV cache, and the logits at their last
    token, which predict the first action), then every row's actions but the last, attending to its
    prompt's cache. ``None`` when the model's cache cannot be gathered (the caller then runs the
    single teacher-forced pass).
    """
    cache_kw, has_keep = _forward_kwargs(model)
    prompt_len = ids.shape[1]
    inputs: dict[str, Any] = {
        "input_ids": ids,
        "attention_mask": mask,
        "position_ids": positions[:, :prompt_len],
    }
    if has_keep:
        inputs["logits_to_keep"] = 1
    prefilled = _shared_prefill(model, inputs, first_rows, inverse)
    if prefilled is None:
        return None
    cache, first_logits = prefilled
    first_logits = first_logits.unsqueeze(1)  # (B, 1, V): the distribution of the first action
    if actions.shape[1] == 1:
        return first_logits
    rest = model(
        input_ids=actions[:, :-1],
        attention_mask=full_mask[:, :-1],
        position_ids=positions[:, prompt_len:-1],
        use_cache=True,
        **{cache_kw: cache},
    ).logits
    return torch.cat([first_logits, rest], dim=1)


def sequence_log_probs(
    model: torch.nn.Module,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    actions: torch.Tensor,
    n_actions: int | None = None,
    temperature: float = 1.0,
    fill_token_id: int = 0,
    share_prompts: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher-forced log-probs and entropies of ``actions`` after each prompt, with gradients.

    Parameters
    ----------
    model : torch.nn.Module
        A ``transformers`` causal LM (possibly wrapped by peft).
    prompt_ids : torch.Tensor
        ``(B, L)`` prompt token ids, any padding (packed with :func:`prepare_prompt`).
    prompt_mask : torch.Tensor
        ``(B, L)`` 1 for real prompt tokens.
    actions : torch.Tensor
        ``(B, T)`` completion token ids; entries after a sequence's end may be anything in
        ``[0, n_actions)`` (causality keeps them out of the earlier positions).
    n_actions : int or None
        Restrict the distribution to the first ``n_actions`` tokens (the environment's action
        space, when the model's vocabulary is padded larger); ``None`` keeps the whole vocabulary.
    temperature : float
        Sampling temperature; log-probs and entropies are those of ``softmax(logits / temperature)``.
    fill_token_id : int
        See :func:`prepare_prompt`.
    share_prompts : bool
        Run each run of adjacent repeated prompts through the model once and reuse its KV cache for
        every row of the run (:func:`distinct_prompts`), instead of one teacher-forced pass over
        every row's prompt plus completion. Same log-probs and gradients up to float rounding;
        GRPO's groups repeat every prompt ``group_size`` times in a row, so this saves most of the
        prompt compute. Models whose cache cannot be gathered by rows fall back to the single pass.

    Returns
    -------
    log_probs : torch.Tensor
        ``(B, T)`` float32 log-probability of each action.
    entropies : torch.Tensor
        ``(B, T)`` float32 Shannon entropy (nats) of each step's next-token distribution.
    """
    ids, mask = prepare_prompt(prompt_ids, prompt_mask, fill_token_id)
    actions = actions.long().to(ids.device)
    batch, steps = actions.shape
    if steps == 0:
        empty = torch.zeros(batch, 0, device=ids.device)
        return empty, empty.clone()
    full_mask = torch.cat([mask, torch.ones_like(actions)], dim=1)
    positions = position_ids_from_mask(full_mask, _max_position(getattr(model, "config", None)))
    shared = distinct_prompts(ids, mask) if share_prompts else None
    logits = None
    if shared is not None and not _checkpoints_activations(model):
        logits = _shared_prompt_logits(model, ids, mask, actions, full_mask, positions, *shared)
    if logits is None:
        cache_kw, has_keep = _forward_kwargs(model)
        kwargs: dict[str, Any] = {
            "input_ids": torch.cat([ids, actions], dim=1),
            "attention_mask": full_mask,
            "position_ids": positions,
            "use_cache": False,
        }
        # Logits at the last prompt token and at every action but the last: steps + 1 columns from
        # the end, minus the final one. Skipping the prompt columns saves the output projection.
        if has_keep:
            kwargs["logits_to_keep"] = steps + 1
        logits = model(**kwargs).logits[:, -(steps + 1) : -1]
    if n_actions is not None:
        logits = logits[..., :n_actions]
    logits = logits.float()
    if temperature != 1.0:
        logits = logits / temperature
    log_p = torch.log_softmax(logits, dim=-1)
    log_probs = log_p.gather(-1, actions.unsqueeze(-1)).squeeze(-1)
    entropies = -(log_p.exp() * log_p).sum(-1)
    return log_probs, entropies


def _fused_if_unset(optimizer_class: type, optimizer_kwargs: dict[str, Any]) -> dict[str, Any]:
    """``optimizer_kwargs`` plus ``fused=True`` for torch's Adam/AdamW when no implementation is chosen.

    The fused kernel updates every parameter in one call instead of a dozen small ops per tensor:
    the same update (same math, float rounding aside), about 3x faster for small models, where the
    optimizer step is a visible share of a GRPO update. An explicit ``fused``/``foreach`` wins.
    """
    if optimizer_class not in (torch.optim.Adam, torch.optim.AdamW) or {"fused", "foreach"} & set(
        optimizer_kwargs
    ):
        return optimizer_kwargs
    return {**optimizer_kwargs, "fused": True}


# --------------------------------------------------------------------------- the policy
@dataclass
class LMState:
    """Recurrent state of :class:`LMPolicy` within one round of episodes.

    Attributes
    ----------
    cache : Any
        The model's KV cache (a ``transformers`` ``Cache``).
    mask_buffer : torch.Tensor
        ``(B, capacity)`` attention mask, allocated once per round: the packed prompt mask followed
        by ones, so a step passes the view ``mask_buffer[:, :length]`` instead of concatenating.
    length : int
        Tokens in the cache.
    next_positions : torch.Tensor
        ``(B, 1)`` position id of the next token fed (real tokens so far per row).
    last_actions : torch.Tensor
        ``(B, 1)`` the tokens chosen at the previous step, fed at the next one.
    static : StaticRound or None
        Set when the round decodes on a static cache with a compiled step
        (:mod:`egsw_gym.policies.lm_decode`); ``cache`` is then ``None``.
    """

    cache: Any
    mask_buffer: torch.Tensor
    length: int
    next_positions: torch.Tensor
    last_actions: torch.Tensor
    static: StaticRound | None = None


#: ``compile_decode="auto"`` compiles once this many seconds of CPU time (``time.process_time``,
#: which other processes' load does not inflate) have gone into eager decode steps: a compilation
#: costs 10-50 s on a CPU (3-5 s with inductor's on-disk cache warm) and about halves a tiny model's
#: step, so paying for it after about twice its cost in eager steps bounds the waste (ski rental),
#: and short runs (the demo's arithmetic GRPO: ~25 s of decoding per run) never compile.
AUTO_COMPILE_AFTER_S = 120.0


def _resolve_dtype(torch_dtype: Any) -> torch.dtype | None:
    """``None``/``"auto"`` -> ``None``; a name such as ``"bfloat16"`` or a ``torch.dtype`` -> the dtype."""
    if torch_dtype is None or torch_dtype == "auto":
        return None
    if isinstance(torch_dtype, torch.dtype):
        return torch_dtype
    if isinstance(torch_dtype, str) and isinstance(getattr(torch, torch_dtype, None), torch.dtype):
        return getattr(torch, torch_dtype)
    raise ValueError(f"torch_dtype must be None, 'auto', a torch.dtype or its name, got {torch_dtype!r}")


def _check_spaces(observation_space: spaces.Space, action_space: spaces.Space) -> int:
    """Validate the text-environment spaces; return the observation length ``P + N``."""
    expected = (
        "LMPolicy needs a text-generation environment (e.g. 'egsw/Arithmetic-v0') with "
        "Dict(input_ids=Box(int64, (L,)), attention_mask=Box(0, 1, (L,))) observations and a "
        "Discrete(vocab_size) next-token action"
    )
    if not isinstance(observation_space, spaces.Dict) or not {"input_ids", "attention_mask"} <= set(
        observation_space.spaces
    ):
        raise ValueError(f"{expected}; got observation space {observation_space}")
    ids_space = observation_space["input_ids"]
    mask_space = observation_space["attention_mask"]
    for name, space in (("input_ids", ids_space), ("attention_mask", mask_space)):
        if not isinstance(space, spaces.Box) or len(space.shape) != 1:
            raise ValueError(f"{expected}; got {name} space {space}")
    if ids_space.shape != mask_space.shape:
        raise ValueError(
            f"{expected}; input_ids {ids_space.shape} and attention_mask {mask_space.shape} differ in shape"
        )
    if not isinstance(action_space, spaces.Discrete):
        raise ValueError(f"{expected}; got action space {action_space}")
    if int(action_space.start) != 0:
        raise ValueError(
            f"{expected}; the Discrete action space must start at 0 (token ids), got {action_space}"
        )
    return int(ids_space.shape[0])


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
        single-token step (:mod:`egsw_gym.policies.lm_decode`): about 2x faster steps for small
        models once compiled, same tokens, log-probs and entropies (to float rounding), but the
        compilation costs 15-50 s per shape bucket on a CPU. ``True`` compiles at the first round;
        ``False`` never; ``"auto"`` (default) compiles once :data:`AUTO_COMPILE_AFTER_S` CPU seconds
        have gone into eager decode steps, so short runs do not pay for it. Where compilation is
        unavailable or fails the policy warns and decodes eagerly.
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
        compile_decode: bool | str = "auto",
    ) -> None:
        obs_len = _check_spaces(observation_space, action_space)
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
        dtype = _resolve_dtype(torch_dtype)

        self.tokenizer = self._resolve_tokenizer(tokenizer, model)
        self.model = self._resolve_model(model, model_config, dtype, obs_len)
        self._check_model(obs_len)
        if lora_config is not None:
            self.model = self._apply_lora(self.model, lora_config)
        if disable_dropout:  # after LoRA, which brings its own dropout modules
            self._disable_dropout()
        self._cache_kw, self._has_logits_to_keep = _forward_kwargs(self.model)
        self._max_position = _max_position(self.base_model.config)
        self._fill_token_id = self._special_id("bos_token_id", "eos_token_id", "pad_token_id")
        self.compile_decode = compile_decode
        self._decoder: StaticDecoder | None = None
        self._eager_decode_seconds = 0.0

        trainable = [p for p in self.parameters() if p.requires_grad]
        self.optimizer = self.optimizer_class(
            trainable, lr=lr_schedule(1), **_fused_if_unset(self.optimizer_class, self.optimizer_kwargs)
        )

    # ----------------------------------------------------------------------- construction helpers
    @staticmethod
    def _resolve_tokenizer(tokenizer: Any, model: Any) -> Any:
        """The tokenizer argument, else the checkpoint's own tokenizer, else the built-in one."""
        from egsw_gym.envs.tokenizer import load_tokenizer

        if tokenizer is None and isinstance(model, (str, os.PathLike)):
            path = os.fspath(model)
            names = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")
            if any(os.path.exists(os.path.join(path, n)) for n in names):
                return load_tokenizer(path)
        return load_tokenizer(tokenizer)

    def _resolve_model(self, model: Any, model_config: Any, dtype: torch.dtype | None, obs_len: int) -> Any:
        """Build, load or adopt the language model (see the ``model`` parameter)."""
        from transformers import AutoConfig, AutoModelForCausalLM, PretrainedConfig, PreTrainedModel

        if model is None:
            if model_config is None or (isinstance(model_config, dict) and "model_type" not in model_config):
                kwargs = dict(model_config or {})
                kwargs.setdefault("n_positions", max(256, obs_len))
                # The initial weights follow the caller's torch RNG (which an algorithm's `seed`
                # sets before building its policy), as SB3's own networks do: runs with different
                # seeds start from different models. model_config={"seed": s} pins them.
                kwargs.setdefault("seed", int(torch.randint(0, 2**31 - 1, ()).item()))
                vocab_size = kwargs.pop("vocab_size", self.n_actions)
                return build_tiny_lm(vocab_size, tokenizer=self.tokenizer, dtype=dtype, **kwargs)
            if isinstance(model_config, dict):
                fields = dict(model_config)
                model_config = AutoConfig.for_model(fields.pop("model_type"), **fields)
            if not isinstance(model_config, PretrainedConfig):
                raise TypeError(
                    f"model_config must be None, a dict or a PretrainedConfig, got {type(model_config).__name__}"
                )
            built = AutoModelForCausalLM.from_config(model_config)
            return built.to(dtype) if dtype is not None else built
        if isinstance(model, (str, os.PathLike)):
            path = os.fspath(model)
            if not os.path.isdir(path):
                raise ValueError(
                    f"model={path!r} is not a local directory; pass a checkpoint directory written by "
                    "save_pretrained (models are never fetched from the hub), a PreTrainedModel, or None "
                    "for the tiny default model"
                )
            return AutoModelForCausalLM.from_pretrained(
                path, local_files_only=True, dtype=dtype or torch.float32
            )
        if isinstance(model, PreTrainedModel) or hasattr(model, "get_base_model"):
            return model if dtype is None else model.to(dtype)
        raise TypeError(
            f"model must be None, a local checkpoint directory or a transformers PreTrainedModel, got "
            f"{type(model).__name__}"
        )

    @property
    def base_model(self) -> Any:
        """The ``transformers`` model without a peft wrapper (its ``config``, ``save_pretrained``...)."""
        return self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model

    def _check_model(self, obs_len: int) -> None:
        """Clear errors for a model that cannot serve the environment's spaces."""
        out = self.base_model.get_output_embeddings()
        vocab = int(out.weight.shape[0]) if out is not None else int(self.base_model.config.vocab_size)
        if vocab < self.n_actions:
            raise ValueError(
                f"the model's vocabulary ({vocab} tokens) is smaller than the environment's action space "
                f"(Discrete({self.n_actions})): the environment and the model must share a tokenizer. "
                "Build the environment with the model's tokenizer (tokenizer=<checkpoint dir>) or pass a "
                "model whose vocabulary covers it"
            )
        max_pos = _max_position(self.base_model.config)
        if max_pos is not None and max_pos + 1 < obs_len:
            raise ValueError(
                f"the model reads at most {max_pos + 1} positions but observations hold {obs_len} tokens "
                "(max_prompt_tokens + max_new_tokens); shorten the environment or use a model with more "
                "positions (e.g. model_config={'n_positions': ...})"
            )

    def _disable_dropout(self) -> None:
        """Zero every dropout probability (modules and the config fields attention reads at call time)."""
        for module in self.model.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
        config = self.base_model.config
        for name in ("attn_pdrop", "attention_dropout", "resid_pdrop", "embd_pdrop", "hidden_dropout"):
            if isinstance(getattr(config, name, None), float):
                setattr(config, name, 0.0)

    @staticmethod
    def _apply_lora(model: Any, lora_config: Any) -> Any:
        """Wrap ``model`` with a LoRA adapter; only the adapter's parameters stay trainable."""
        try:
            import peft
        except ImportError as err:  # pragma: no cover - depends on the environment
            raise ImportError("lora_config needs peft: pip install 'egsw-gym[lora]'") from err
        if isinstance(lora_config, dict):
            lora_config = peft.LoraConfig(**{"task_type": "CAUSAL_LM", **lora_config})
        return peft.get_peft_model(model, lora_config)

    def _special_id(self, *names: str) -> int:
        """First defined special-token id among ``names`` (tokenizer first, then model config), else 0."""
        for source in (self.tokenizer, self.base_model.config):
            for name in names:
                value = getattr(source, name, None)
                if isinstance(value, int) and 0 <= value < self.n_actions:
                    return value
        return 0

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
        from transformers import PretrainedConfig

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
        """First step of a round: run the prompts, choose the first tokens, maybe go static."""
        ids, mask = self._obs_tensors(obs)
        ids, mask = prepare_prompt(ids, mask, self._fill_token_id)
        batch, length = ids.shape
        # One allocation for the whole round: the prompt mask then ones for every token fed
        # later (a round takes at most obs_len steps; _eager_step grows it beyond).
        mask_buffer = torch.cat([mask, mask.new_ones(batch, self.obs_len)], dim=1)
        inputs = {
            "input_ids": ids,
            "attention_mask": mask,
            "position_ids": position_ids_from_mask(mask, self._max_position),
            self._cache_kw: None,
        }
        if self._has_logits_to_keep:
            inputs["logits_to_keep"] = 1
        with self._autocast():
            cache, logits = self._forward_step(inputs, prefill=True)
        state = LMState(cache, mask_buffer, length, mask.sum(1, keepdim=True), ids[:, -1:])
        decoder = self._static_decoder()
        if decoder is not None:
            state.static = decoder.begin(cache, mask, self.obs_len)
            if state.static is not None:
                state.cache = None
        return state, self._next_token(logits, deterministic)

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
        position table (``_check_model``), so the clamp only runs for steps beyond it.
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
        if length > state.mask_buffer.shape[1]:
            state.mask_buffer = torch.cat([state.mask_buffer, torch.ones_like(state.mask_buffer)], dim=1)
        inputs = {
            "input_ids": state.last_actions,
            "attention_mask": state.mask_buffer[:, :length],
            "position_ids": self._positions(state),
            self._cache_kw: state.cache,
        }
        if self._has_logits_to_keep:
            inputs["logits_to_keep"] = 1
        with self._autocast():
            state.cache, logits = self._forward_step(inputs, prefill=False)
        chosen = self._next_token(logits, deterministic)
        self._eager_decode_seconds += time.process_time() - t0
        return chosen

    def _forward_step(self, inputs: dict[str, Any], prefill: bool) -> tuple[Any, torch.Tensor]:
        """One cached forward pass of :meth:`act`: the new KV cache and the ``(B, V)`` next-token logits.

        A prefill whose batch repeats prompts (a GRPO round: ``group_size`` rows per prompt) runs each
        run of repeated prompts once (:func:`distinct_prompts`, :func:`_shared_prefill`); the rows'
        caches and logits are the same as a full prefill's.
        """
        shared = distinct_prompts(inputs["input_ids"], inputs["attention_mask"]) if prefill else None
        if shared is not None:
            prefilled = _shared_prefill(self.model, inputs, *shared)
            if prefilled is not None:
                return prefilled
        output = self.model(**inputs, use_cache=True)
        return _output_cache(output), output.logits[:, -1]

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
            import copy

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
