"""``"LMPolicy"``: any ``transformers`` causal language model as a GRPO policy.

The text environment's action is the next token, so a causal LM *is* a policy over it. The policy
keeps the model's KV cache as its recurrent state across the steps of a round: the first
:meth:`LMPolicy.act` call of a round (``state is None``) prefills the prompt read from the
observation, every later call feeds back only the token chosen at the previous step.

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

Reading order (the plain path first):

- :mod:`~egsw_gym.policies.lm.policy`: :class:`LMPolicy` (``act``, ``evaluate_sequences``) and its
  round state :class:`LMState`;
- :mod:`~egsw_gym.policies.lm.forward`: the token statistics and the teacher-forced pass;
- :mod:`~egsw_gym.policies.lm.inputs`: prompt packing and positions;
- :mod:`~egsw_gym.policies.lm.build`: validation of the spaces and construction of the model;
- :mod:`~egsw_gym.policies.lm.compat`: the ``transformers`` / ``peft`` version shims;
- :mod:`~egsw_gym.policies.lm.accel`: the accelerations ``LMPolicy(accel=...)`` switches on, each
  exact to float rounding against the plain path.
"""

from egsw_gym.policies.lm.accel import ACCEL_OPTIONS, DEFAULT_ACCEL
from egsw_gym.policies.lm.forward import sequence_log_probs
from egsw_gym.policies.lm.inputs import position_ids_from_mask, prepare_prompt
from egsw_gym.policies.lm.policy import LMPolicy, LMState
from egsw_gym.policies.tiny_lm import build_tiny_lm

__all__ = [
    "ACCEL_OPTIONS",
    "DEFAULT_ACCEL",
    "LMPolicy",
    "LMState",
    "build_tiny_lm",
    "position_ids_from_mask",
    "prepare_prompt",
    "sequence_log_probs",
]

# Checkpoints name the policy class by module + qualname, and loading accepts a class only under the
# name it reports: the public path keeps files written by egsw-gym 0.1.0 loading.
LMPolicy.__module__ = LMState.__module__ = __name__
