"""Checks that size a language model before anything is allocated (hostile checkpoints and configs).

A config, a ``save_pretrained`` directory or a saved :class:`~egsw_gym.policies.lm.LMPolicy`'s
``policy_kwargs`` could describe a model far larger than the machine, or one that does not match
the weights it ships. :func:`meta_model` builds what :func:`~egsw_gym.policies.lm.build.build_model`
would build on the ``meta`` device (nothing allocated, the caller's RNG untouched), so its size
follows from every size field of any architecture; the checks below compare it with this machine's
memory and with the stored tensor shapes (:mod:`egsw_gym.common.model_size`) and raise a
``ValueError`` naming the argument. ``transformers``, ``peft`` and the policy's builders are
imported inside the functions (optional extras; the builders import this module).
"""

from __future__ import annotations

import os
import re
from types import SimpleNamespace
from typing import Any

import torch

from egsw_gym.common.local_pretrained import from_local_directory
from egsw_gym.common.model_size import (
    check_matches_stored,
    directory_weight_shapes,
    module_bytes,
    physical_memory_bytes,
)

__all__ = [
    "MAX_LAYERS",
    "check_checkpoint_policy",
    "check_layer_counts",
    "check_lora_rank",
    "check_model_size",
    "meta_model",
]

#: most layers a config may declare before anything is built (the largest public models have
#: about 130); building even an empty (meta) model takes time in proportion to its layers
MAX_LAYERS = 1024


def _config_fields(config: Any) -> dict[str, Any]:
    return config.to_dict() if hasattr(config, "to_dict") else dict(config or {})


# Fields that count layers (n_layer, num_hidden_layers, num_decoder_layers, decoder_layers ...), and not
# fields that merely mention layers, such as Qwen2's max_window_layers (a threshold, not a count).
_LAYER_COUNT_KEY = re.compile(r"^(?:n|num)_(?:\w+_)?layers?$|^(?:encoder|decoder)_layers$")


def check_layer_counts(config: Any, what: str, limit: int) -> None:
    """Refuse a config declaring more than ``limit`` layers in any layer-count field (before building)."""
    for key, value in _config_fields(config).items():
        if (
            _LAYER_COUNT_KEY.match(key.lower())
            and isinstance(value, (int, float))
            and not isinstance(value, bool)
        ):
            if not value <= limit:
                why = (
                    f"MAX_LAYERS={MAX_LAYERS}"
                    if limit == MAX_LAYERS
                    else f"the stored weights hold {limit} tensors"
                )
                raise ValueError(f"{what}: {key}={value!r} declares more than {limit} layers ({why})")


def _local_config(path: str | os.PathLike) -> Any:
    """A ``save_pretrained`` directory's config, read locally (``config.json`` size-capped)."""
    from transformers import AutoConfig  # lazy: the optional [llm] extra

    return from_local_directory(
        AutoConfig, path, "model", "causal-LM checkpoint (config.json and the weights)", "a PreTrainedModel"
    )


def meta_model(
    model: Any,
    model_config: Any,
    lora_config: Any,
    obs_len: int,
    n_actions: int,
    max_layers: int = MAX_LAYERS,
) -> torch.nn.Module | None:
    """The model :func:`~egsw_gym.policies.lm.build.build_model` (plus ``apply_lora``) would build, on the ``meta`` device.

    Nothing is allocated and the caller's RNG is untouched: the architecture's own constructor runs
    with every tensor on ``meta``, so its parameter and buffer counts follow from every size field
    of any architecture. ``None`` for a live ``PreTrainedModel`` (already built).

    Raises
    ------
    ValueError
        For a config that declares more than ``max_layers`` layers or cannot be built.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, PretrainedConfig  # lazy: optional extra

    from egsw_gym.policies.lm.build import apply_lora  # lazy: build imports this module
    from egsw_gym.policies.tiny_lm import build_tiny_lm

    what = "model_config"
    tiny = model is None and (
        model_config is None or (isinstance(model_config, dict) and "model_type" not in model_config)
    )
    if isinstance(model, (str, os.PathLike)):
        what, config = f"model={os.fspath(model)!r} (its config.json)", _local_config(model)
    elif model is not None:
        return None
    elif tiny:
        config = dict(model_config or {})
    elif isinstance(model_config, dict):
        check_layer_counts(model_config, what, max_layers)
        fields = dict(model_config)
        try:
            config = AutoConfig.for_model(fields.pop("model_type"), **fields)
        except Exception as err:  # noqa: BLE001 - transformers' strict field validation, unknown types
            raise ValueError(f"model_config: {type(err).__name__}: {err}"[:500]) from err
    elif isinstance(model_config, PretrainedConfig):
        config = model_config
    else:
        return None  # build_model names the bad type
    check_layer_counts(config, what, max_layers)
    try:
        with torch.random.fork_rng(devices=[]), torch.device("meta"):
            if tiny:
                kwargs = {"n_positions": max(256, obs_len), **config, "seed": 0}
                vocab_size = kwargs.pop("vocab_size", n_actions)
                stub = SimpleNamespace(pad_token_id=None, eos_token_id=None, bos_token_id=None)
                built = build_tiny_lm(vocab_size, tokenizer=stub, **kwargs)
            else:
                built = AutoModelForCausalLM.from_config(config)
    except Exception as err:  # noqa: BLE001 - any failure of a config's own checks: one named error
        raise ValueError(f"{what} cannot be built: {type(err).__name__}: {err}"[:500]) from err
    if lora_config is not None:
        check_lora_rank(built, lora_config)
        try:
            with torch.random.fork_rng(devices=[]), torch.device("meta"):
                built = apply_lora(built, lora_config)
        except Exception as err:  # noqa: BLE001 - peft's own checks of the config
            raise ValueError(f"lora_config cannot be applied: {type(err).__name__}: {err}"[:500]) from err
    return built


def check_model_size(
    model: Any, model_config: Any, dtype: torch.dtype | None, obs_len: int, n_actions: int
) -> None:
    """Refuse, before allocating, a model larger than this machine's memory, and a ``model`` directory
    whose config does not match the weights it stores (``ValueError`` naming the argument)."""
    meta = meta_model(model, model_config, None, obs_len, n_actions)
    if meta is None:
        return
    what = f"model={os.fspath(model)!r}" if isinstance(model, (str, os.PathLike)) else "model_config"
    if isinstance(model, (str, os.PathLike)):
        try:
            stored = directory_weight_shapes(os.fspath(model))
        except (OSError, ValueError, RuntimeError) as err:
            raise ValueError(f"{what}: its weight files cannot be described: {err}") from err
        if stored is not None:
            check_matches_stored(meta, stored, "", f"{what} (its config.json)")
    params, buffers, size = module_bytes(meta, dtype or torch.float32)
    memory = physical_memory_bytes()
    if memory is not None and size > memory:
        raise ValueError(
            f"{what} describes a model of {params} parameters and {buffers} buffer elements "
            f"({size / 2**30:.1f} GiB), more than this machine's memory ({memory / 2**30:.1f} GiB)"
        )


def check_lora_rank(model: Any, lora_config: Any) -> None:
    """A LoRA rank ``r`` must be an integer in [1, hidden size]: a larger rank adds parameters but no rank."""
    from egsw_gym.policies.lm.compat import unwrap_peft  # lazy: the policy package imports this module

    r = lora_config.get("r", 8) if isinstance(lora_config, dict) else getattr(lora_config, "r", 8)
    fields = _config_fields(getattr(unwrap_peft(model), "config", None))
    hidden = next(
        (fields[k] for k in ("n_embd", "hidden_size", "d_model") if isinstance(fields.get(k), int)), None
    )
    if isinstance(r, bool) or not isinstance(r, int) or r < 1 or (hidden is not None and r > hidden):
        raise ValueError(
            f"lora_config.r must be an integer in [1, {hidden or 'the hidden size'}] (the rank of a LoRA "
            f"update cannot exceed the hidden size), got {r!r}"
        )


def check_checkpoint_policy(policy_kwargs: dict[str, Any], observation_space: Any, action_space: Any,
                            stored: dict[str, Any]) -> None:  # fmt: skip
    """Refuse LMPolicy ``policy_kwargs`` of a checkpoint that would build a model other than the stored one.

    ``stored``: the shapes of ``policy.pth`` (``model.``-prefixed). The model is built on ``meta``
    first without, then with ``lora_config``, so the error names the entry that does not match.
    """
    from egsw_gym.policies.lm.build import check_spaces  # lazy: build imports this module

    obs_len = check_spaces(observation_space, action_space)
    n_actions = int(action_space.n)
    model, config, lora = (policy_kwargs.get(k) for k in ("model", "model_config", "lora_config"))
    entry = "policy_kwargs.model" if isinstance(model, (str, os.PathLike)) else "policy_kwargs.model_config"
    # each layer stores at least one tensor: a config declaring more layers than stored tensors is refused
    # before the (layer-proportional) meta build
    limit = min(MAX_LAYERS, len(stored))
    passes = [(entry, None)] + ([("policy_kwargs.lora_config", lora)] if lora is not None else [])
    for name, lora_config in passes:
        try:
            meta = meta_model(model, config, lora_config, obs_len, n_actions, max_layers=limit)
        except (ValueError, TypeError) as err:
            raise ValueError(f"entry {name!r}: {err}") from err
        if meta is None:
            return
        # policy.pth holds "model." + the policy's model; under a LoRA wrapper the base model's
        # tensors sit under "model.base_model.model."
        partial = lora is not None and lora_config is None  # the base model alone, under a LoRA wrapper
        prefix = "model.base_model.model." if partial else "model."
        check_matches_stored(meta, stored, prefix, f"entry {name!r}", exact_keys=not partial)
