"""Construction of an :class:`~egsw_gym.policies.lm.LMPolicy`: spaces, dtype, tokenizer, model, LoRA.

Module functions, not policy methods, because none of them needs a built policy: they take what
the constructor was given and return what it keeps. ``transformers`` and ``peft`` are imported
inside the functions that need them (both are optional extras and slow to import).
"""

from __future__ import annotations

import os
from typing import Any

import torch
from gymnasium import spaces

from egsw_gym.common.lm_checkpoint import check_lora_rank, check_model_size
from egsw_gym.common.local_pretrained import from_local_directory
from egsw_gym.common.tokenizer import load_tokenizer
from egsw_gym.policies.lm.compat import unwrap_peft
from egsw_gym.policies.lm.inputs import last_position
from egsw_gym.policies.tiny_lm import build_tiny_lm

__all__ = [
    "apply_lora",
    "build_model",
    "check_model",
    "check_spaces",
    "fused_if_unset",
    "resolve_dtype",
    "resolve_tokenizer",
    "zero_dropout",
]


def fused_if_unset(optimizer_class: type, optimizer_kwargs: dict[str, Any]) -> dict[str, Any]:
    """``optimizer_kwargs`` plus ``fused=True`` for torch's Adam/AdamW when no implementation is chosen.

    The fused kernel updates every parameter in one call instead of a dozen small ops per tensor:
    the same update (same math, float rounding aside), faster for small models, where the
    optimizer step is a visible share of a GRPO update. An explicit ``fused``/``foreach`` wins.
    """
    if optimizer_class not in (torch.optim.Adam, torch.optim.AdamW) or {"fused", "foreach"} & set(
        optimizer_kwargs
    ):
        return optimizer_kwargs
    return {**optimizer_kwargs, "fused": True}


def resolve_dtype(torch_dtype: Any) -> torch.dtype | None:
    """``None``/``"auto"`` -> ``None``; a name such as ``"bfloat16"`` or a ``torch.dtype`` -> the dtype."""
    if torch_dtype is None or torch_dtype == "auto":
        return None
    if isinstance(torch_dtype, torch.dtype):
        return torch_dtype
    if isinstance(torch_dtype, str) and isinstance(getattr(torch, torch_dtype, None), torch.dtype):
        return getattr(torch, torch_dtype)
    raise ValueError(f"torch_dtype must be None, 'auto', a torch.dtype or its name, got {torch_dtype!r}")


def check_spaces(observation_space: spaces.Space, action_space: spaces.Space) -> int:
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


def resolve_tokenizer(tokenizer: Any, model: Any) -> Any:
    """The tokenizer argument, else the checkpoint's own tokenizer, else the built-in one."""
    if tokenizer is None and isinstance(model, (str, os.PathLike)):
        path = os.fspath(model)
        names = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")
        if any(os.path.exists(os.path.join(path, n)) for n in names):
            return load_tokenizer(path)
    return load_tokenizer(tokenizer)


def build_model(
    model: Any, model_config: Any, dtype: torch.dtype | None, obs_len: int, n_actions: int, tokenizer: Any
) -> Any:
    """Build, load or adopt the language model (see :class:`~egsw_gym.policies.lm.LMPolicy`'s ``model``)."""
    # lazy: transformers is the optional [llm] extra
    from transformers import AutoConfig, AutoModelForCausalLM, PretrainedConfig, PreTrainedModel

    check_model_size(model, model_config, dtype, obs_len, n_actions)
    if model is None:
        if model_config is None or (isinstance(model_config, dict) and "model_type" not in model_config):
            kwargs = dict(model_config or {})
            kwargs.setdefault("n_positions", max(256, obs_len))
            # The initial weights follow the caller's torch RNG (which an algorithm's `seed`
            # sets before building its policy), as SB3's own networks do: runs with different
            # seeds start from different models. model_config={"seed": s} pins them.
            kwargs.setdefault("seed", int(torch.randint(0, 2**31 - 1, ()).item()))
            vocab_size = kwargs.pop("vocab_size", n_actions)
            return build_tiny_lm(vocab_size, tokenizer=tokenizer, dtype=dtype, **kwargs)
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
        return from_local_directory(
            AutoModelForCausalLM,
            model,
            "model",
            "causal-LM checkpoint (config.json and the weights)",
            "a PreTrainedModel, or None for the tiny default model",
            dtype=dtype or torch.float32,
        )
    if isinstance(model, PreTrainedModel) or hasattr(model, "get_base_model"):
        return model if dtype is None else model.to(dtype)
    raise TypeError(
        f"model must be None, a local checkpoint directory or a transformers PreTrainedModel, got "
        f"{type(model).__name__}"
    )


def check_model(model: Any, n_actions: int, obs_len: int) -> None:
    """Clear errors for a model that cannot serve the environment's spaces (vocabulary, positions)."""
    base = unwrap_peft(model)
    out = base.get_output_embeddings()
    vocab = int(out.weight.shape[0]) if out is not None else int(base.config.vocab_size)
    if vocab < n_actions:
        raise ValueError(
            f"the model's vocabulary ({vocab} tokens) is smaller than the environment's action space "
            f"(Discrete({n_actions})): the environment and the model must share a tokenizer. "
            "Build the environment with the model's tokenizer (tokenizer=<checkpoint dir>) or pass a "
            "model whose vocabulary covers it"
        )
    max_pos = last_position(base.config)
    if max_pos is not None and max_pos + 1 < obs_len:
        raise ValueError(
            f"the model reads at most {max_pos + 1} positions but observations hold {obs_len} tokens "
            "(max_prompt_tokens + max_new_tokens); shorten the environment or use a model with more "
            "positions (e.g. model_config={'n_positions': ...})"
        )


def zero_dropout(model: torch.nn.Module) -> None:
    """Zero every dropout probability (modules and the config fields attention reads at call time)."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    config = unwrap_peft(model).config
    for name in ("attn_pdrop", "attention_dropout", "resid_pdrop", "embd_pdrop", "hidden_dropout"):
        if isinstance(getattr(config, name, None), float):
            setattr(config, name, 0.0)


def apply_lora(model: Any, lora_config: Any) -> Any:
    """Wrap ``model`` with a LoRA adapter; only the adapter's parameters stay trainable."""
    try:
        import peft  # lazy: the optional [lora] extra
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("lora_config needs peft: pip install 'egsw-gym[lora]'") from err
    check_lora_rank(model, lora_config)
    if isinstance(lora_config, dict):
        lora_config = peft.LoraConfig(**{"task_type": "CAUSAL_LM", **lora_config})
    return peft.get_peft_model(model, lora_config)
