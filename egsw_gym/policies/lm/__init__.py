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

The package is split by what each part depends on:

- :mod:`~egsw_gym.policies.lm.inputs`: pure prompt packing, positions and repeated-prompt detection;
- :mod:`~egsw_gym.policies.lm.forward`: pure forward passes (shared prefill, :func:`sequence_log_probs`);
- :mod:`~egsw_gym.policies.lm.compat`: the ``transformers`` / ``peft`` version shims;
- :mod:`~egsw_gym.policies.lm.build`: validation of the spaces and construction of the model;
- :mod:`~egsw_gym.policies.lm.decode`: the static-cache, compiled decode path;
- :mod:`~egsw_gym.policies.lm.shared_decode`: eager decoding of GRPO's runs of one prompt with one
  KV-cache sequence per run (no copy of each prompt's cache per row);
- :mod:`~egsw_gym.policies.lm.policy`: :class:`LMPolicy` and its round state :class:`LMState`.

Everything public is re-exported here (``from egsw_gym.policies.lm import LMPolicy, ...``), which is
also the path older checkpoints name for the policy class.
"""

from egsw_gym.policies.lm.forward import sequence_log_probs
from egsw_gym.policies.lm.inputs import distinct_prompts, position_ids_from_mask, prepare_prompt
from egsw_gym.policies.lm.policy import AUTO_COMPILE_AFTER_S, LMPolicy, LMState
from egsw_gym.policies.tiny_lm import build_tiny_lm

__all__ = [
    "AUTO_COMPILE_AFTER_S",
    "LMPolicy",
    "LMState",
    "build_tiny_lm",
    "distinct_prompts",
    "prepare_prompt",
    "position_ids_from_mask",
    "sequence_log_probs",
]

# Checkpoints name the policy class by module + qualname, and loading accepts a class only under the
# name it reports: the public path keeps files written before the split (egsw-gym 0.1.0) loading.
LMPolicy.__module__ = LMState.__module__ = __name__
