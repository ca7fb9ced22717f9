"""EGSW on TRL's ``GRPOTrainer``: the weighting of :mod:`egsw_gym.egsw` on TRL's engine.

``pip install "egsw-gym[trl]"``; then::

    from egsw_gym.integrations.trl import EGSWGRPOConfig, EGSWGRPOTrainer, task_dataset, task_reward_func

    config = EGSWGRPOConfig(output_dir="out", egsw_alpha=0.1, egsw_temperature=1.0, loss_type="grpo")
    trainer = EGSWGRPOTrainer(
        model="path/to/causal-lm",
        reward_funcs=task_reward_func("gsm8k"),
        args=config,
        train_dataset=task_dataset("gsm8k", "train", n=4096, chat=True),
    )
    trainer.train()

How the weight enters TRL's loss. After TRL has generated a batch, scored it and computed its group
advantages ``A``, :class:`EGSWGRPOTrainer` takes the per-token entropies ``H`` of the sampling
policy at rollout time (from TRL's own no-grad pass for the old log-probabilities when TRL runs
one, else from one extra no-grad pass through TRL's ``_get_per_token_logps_and_entropies``),
computes the EGSW weights ``w`` per group exactly as :meth:`egsw_gym.EGSW.sample_weights` /
:func:`egsw_gym.egsw_weights` define them, and hands TRL the advantages ``w * A``. Because ``w >= 0``
is a constant for the gradient, ``-min(r w A, clip(r) w A) = -w min(r A, clip(r) A)``: the clipped
surrogate of every sequence (trajectory mode) or token (step mode) is multiplied by its weight,
while TRL's KL penalty (``beta``), entropy bonus and loss normalisers, none of which reads the
advantages, are untouched. :data:`EGSW_LOSS_TYPES` records why this holds for each ``loss_type``;
a loss type not listed there is refused by name.

Groups across processes. TRL gathers every process's rewards, normalises them per group (a group's
completions may sit on two processes) and keeps each process's slice. The weights are computed the
same way: advantages, entropies and loss masks are gathered (padded to one width), the weights of
the global batch are computed on every process, and each keeps its slice, so N processes give the
weights one process would.

The sampling policy's entropy. With vLLM generation, the entropies come from the training model
at generation time (the policy vLLM samples from, up to vLLM's numerics), at the sampling
temperature, as TRL's own log-probabilities do. With vLLM's importance-sampling correction (TRL's
default) or misaligned generation and optimizer steps, TRL already runs a no-grad pass for the old
log-probabilities and EGSW asks it for the entropies as well; otherwise EGSW adds one no-grad
forward over the batch per generation round (generation itself usually dominates).

Logged in TRL's metrics, per generation round, over the whole (global) batch: ``egsw/weight_max``,
``egsw/weight_min``, ``egsw/weight_ess`` (Kish effective sample size as a fraction of the samples)
and ``egsw/entropy_mean`` (mean rollout entropy of the weighted samples), the same statistics
:func:`egsw_gym.egsw_statistics` gives our own algorithms.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import torch

try:
    from trl import GRPOConfig, GRPOTrainer
    from trl.models.utils import disable_gradient_checkpointing
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "egsw_gym.integrations.trl needs TRL; install the extra: pip install 'egsw-gym[trl]'"
    ) from exc

from egsw_gym.egsw import EGSW, egsw_statistics
from egsw_gym.integrations.trl_tasks import completion_text, greedy_accuracy, task_dataset, task_reward_func

__all__ = [
    "EGSWGRPOConfig",
    "EGSWGRPOTrainer",
    "EGSW_LOSS_TYPES",
    "task_dataset",
    "task_reward_func",
    "completion_text",
    "greedy_accuracy",
]

#: TRL's ``loss_type`` values that EGSW supports, each with the reason that scaling the advantage by
#: ``w >= 0`` multiplies that loss's policy term by ``w`` and nothing else. In all of them the
#: advantage enters the policy term linearly (through a ``min`` of two terms linear in it, which a
#: non-negative factor passes through) or only by its sign (kept by ``w > 0``; ``w = 0`` zeroes the
#: term either way), and no normaliser reads it. Any other loss type is refused by name.
EGSW_LOSS_TYPES: dict[str, str] = {
    "grpo": "-min(r A, clip(r) A), mean over each sequence's tokens, then over sequences",
    "bnpo": "-min(r A, clip(r) A), mean over the local batch's tokens",
    "dr_grpo": "-min(r A, clip(r) A), sum over tokens / (batch size * max_completion_length)",
    "dapo": "-min(r A, clip(r) A), sum over tokens / the global batch's token count",
    "luspo": "-min(r A, clip(r) A) at sequence level, summed over each sequence's tokens",
    "cispo": "-clip(r).detach() * A * log p: linear in A",
    "sapo": "-gate(r; tau chosen by the sign of A) * A: linear in A, the sign is kept",
    "vespo": "-phi(r; k, lambda chosen by the sign of A) * A * log p: linear in A, the sign is kept",
}

#: The EGSW fields of :class:`EGSWGRPOConfig`, each mapped to the :class:`EGSW` field it sets.
_EGSW_FIELDS = {
    "egsw_alpha": "alpha",
    "egsw_temperature": "temperature",
    "egsw_mode": "mode",
    "egsw_weight_sum": "weight_sum",
    "egsw_standardize_advantages": "standardize_advantages",
    "egsw_max_weight": "max_weight",
    "egsw_entropy_reduction": "entropy_reduction",
    "egsw_advantage_coef": "advantage_coef",
}

#: The multimodal / token-type inputs TRL's ``_compute_loss`` forwards to the model; the entropy pass
#: forwards the same ones.
_FORWARD_KEYS = (
    "pixel_values",
    "image_grid_thw",
    "num_images",
    "pixel_attention_mask",
    "spatial_shapes",
    "num_tiles",
    "image_sizes",
    "token_type_ids",
    "mm_token_type_ids",
    "image_position_ids",
)


@dataclass
class EGSWGRPOConfig(GRPOConfig):
    """TRL's ``GRPOConfig`` plus the EGSW fields (validated by :class:`egsw_gym.EGSW`'s rules).

    Every ``GRPOConfig`` argument is accepted as is. The EGSW fields mirror :class:`egsw_gym.EGSW`
    (same defaults, same checks; the errors name the ``egsw_*`` field):

    Parameters
    ----------
    egsw_alpha : float or None
        Entropy coefficient of the score ``(A + alpha * H) / P``, in ``[0, 1e6]``; default ``0.1``.
        ``None`` turns EGSW off: the trainer is then TRL's ``GRPOTrainer``, number for number.
    egsw_temperature : float
        Softmax temperature ``P``, ``>= 1e-6``; default ``1.0``.
    egsw_mode : {"trajectory", "step"}
        One weight per completion within its group (default), or one per (completion, token
        position) within the group's completions still running at that position (the advantages
        TRL sees are then ``(B, T)``).
    egsw_weight_sum : {"set_size", "one"}
        Weights of a set sum to its size (default; mean weight 1) or to 1 (the paper's summary).
    egsw_standardize_advantages : bool
        Standardise the advantages over the global batch before scoring (default ``True``); only
        the scores see it, the loss keeps TRL's advantages.
    egsw_max_weight : float or None
        Optional cap on a single weight (``>= 1``); ``None`` (default) is no cap.
    egsw_entropy_reduction : {"mean", "sum"}
        Trajectory mode's ``H``: mean (default) or sum of the completion's token entropies.
    egsw_advantage_coef : float
        Factor on the (standardised) advantage in the score, in ``[0, 1e6]``; default ``1.0``
        (``0``: entropy alone, an ablation).

    Raises
    ------
    ValueError
        For a bad EGSW field, or, with EGSW on, a ``loss_type`` outside :data:`EGSW_LOSS_TYPES`.
    """

    egsw_alpha: float | None = field(
        default=0.1,
        metadata={
            "help": "EGSW entropy coefficient alpha in [0, 1e6]; None turns EGSW off (plain GRPOTrainer)."
        },
    )
    egsw_temperature: float = field(default=1.0, metadata={"help": "EGSW softmax temperature P (>= 1e-6)."})
    egsw_mode: str = field(
        default="trajectory",
        metadata={
            "help": "'trajectory': one weight per completion; 'step': one per (completion, token position)."
        },
    )
    egsw_weight_sum: str = field(
        default="set_size",
        metadata={"help": "'set_size' (mean weight 1) or 'one' (weights sum to 1 in a set)."},
    )
    egsw_standardize_advantages: bool = field(
        default=True, metadata={"help": "Standardise advantages over the global batch before scoring."}
    )
    egsw_max_weight: float | None = field(
        default=None, metadata={"help": "Optional cap on a single EGSW weight (>= 1); None is no cap."}
    )
    egsw_entropy_reduction: str = field(
        default="mean", metadata={"help": "Trajectory mode: mean or sum of a completion's token entropies."}
    )
    egsw_advantage_coef: float = field(
        default=1.0,
        metadata={"help": "Factor on the standardised advantage in the EGSW score (0: entropy alone)."},
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.egsw_alpha is None:
            return
        self.egsw  # noqa: B018  (builds the EGSW config: its checks run now, naming the egsw_* field)
        if self.loss_type not in EGSW_LOSS_TYPES:
            raise ValueError(
                f"loss_type={self.loss_type!r} is not supported with EGSW: scaling its advantages by the "
                f"weights is not known to weight its policy term alone. Use one of {sorted(EGSW_LOSS_TYPES)}, "
                "or set egsw_alpha=None for plain GRPO"
            )

    @property
    def egsw(self) -> EGSW | None:
        """The :class:`egsw_gym.EGSW` these fields describe (``None`` when ``egsw_alpha`` is ``None``)."""
        if self.egsw_alpha is None:
            return None
        try:
            return EGSW(**{name: getattr(self, key) for key, name in _EGSW_FIELDS.items()})
        except (TypeError, ValueError) as exc:
            # EGSW names its fields "EGSW.<name>"; here they are the config's "egsw_<name>".
            raise type(exc)(re.sub(r"\bEGSW\.", "egsw_", str(exc))) from None


class EGSWGRPOTrainer(GRPOTrainer):
    """TRL's ``GRPOTrainer`` with EGSW weights on the clipped surrogate (see the module docstring).

    Parameters
    ----------
    model : str or transformers.PreTrainedModel
        As for ``GRPOTrainer`` (a model id / local directory, or a model object).
    reward_funcs : callable, str, model or list of them
        As for ``GRPOTrainer``; :func:`task_reward_func` makes one from a task.
    args : EGSWGRPOConfig or None
        The configuration; ``None`` uses the defaults (EGSW on, ``alpha=0.1``). A plain
        ``GRPOConfig`` is refused (it has no EGSW fields).
    *rest, **kwargs
        Passed to ``GRPOTrainer`` (``train_dataset``, ``processing_class``, ``callbacks``, ...).

    Attributes
    ----------
    egsw : EGSW or None
        The weighting, or ``None`` when EGSW is off.
    egsw_last : dict or None
        The last generation round's local tensors: ``advantages`` (TRL's, unweighted),
        ``entropies`` (rollout, per token), ``mask`` (loss mask) and ``weights`` (``(B,)`` or
        ``(B, T)``), for inspection and tests.
    """

    def __init__(self, model: Any, reward_funcs: Any, args: EGSWGRPOConfig | None = None, *rest, **kwargs):
        if args is None:
            name = model if isinstance(model, str) else model.config._name_or_path
            args = EGSWGRPOConfig(f"{str(name).rstrip('/').split('/')[-1]}-EGSW-GRPO")
        if not isinstance(args, EGSWGRPOConfig):
            raise TypeError(
                f"args must be an EGSWGRPOConfig, got {type(args).__name__}; build it with "
                "EGSWGRPOConfig(**the same arguments, egsw_alpha=...)"
            )
        super().__init__(model, reward_funcs, args, *rest, **kwargs)
        self.egsw: EGSW | None = args.egsw
        self.egsw_last: dict[str, torch.Tensor] | None = None
        self._egsw_capture: dict[str, torch.Tensor] | None = None

    def _computes_old_logps(self) -> bool:
        """Whether TRL's generation step runs its own no-grad pass of the policy (old log-probs).

        TRL's rule: when generation and optimizer steps are misaligned, or with vLLM's importance
        sampling correction. That pass is then the first policy call of the step, and EGSW asks it
        for the entropies too instead of running a pass of its own.
        """
        generate_every = self.args.steps_per_generation * self.num_iterations
        misaligned = self.args.gradient_accumulation_steps % generate_every != 0
        return misaligned or bool(self.use_vllm and self.vllm_importance_sampling_correction)

    def _get_per_token_logps_and_entropies(self, model: Any, *args: Any, **kwargs: Any) -> tuple:
        capture = self._egsw_capture
        if capture is None or model is not self.model or kwargs.get("compute_entropy", False):
            return super()._get_per_token_logps_and_entropies(model, *args, **kwargs)
        self._egsw_capture = None  # only TRL's old-log-prob pass, the first policy call
        logps, entropies, aux_loss = super()._get_per_token_logps_and_entropies(
            model, *args, **{**kwargs, "compute_entropy": True}
        )
        capture["entropies"] = entropies
        return logps, None, aux_loss

    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        capture: dict[str, torch.Tensor] = {}
        self._egsw_capture = capture if self.egsw is not None and self._computes_old_logps() else None
        try:
            output = super()._generate_and_score_completions(inputs)
        finally:
            self._egsw_capture = None
        if self.egsw is None:
            return output
        train = self.model.training
        group_size = self.num_generations if train else self.num_generations_eval
        batch_size = self.args.per_device_train_batch_size if train else self.args.per_device_eval_batch_size
        mask = output["completion_mask"]
        if "tool_mask" in output:
            mask = mask * output["tool_mask"]
        entropies = capture.get("entropies")
        if entropies is None:
            entropies = self._rollout_entropies(output, batch_size)
        advantages = output["advantages"]
        weights, stats = self.compute_egsw_weights(advantages, entropies, mask.bool(), group_size)
        output["advantages"] = (
            advantages.unsqueeze(1) * weights if weights.dim() == 2 else advantages * weights
        )
        self.egsw_last = {"advantages": advantages, "entropies": entropies, "mask": mask, "weights": weights}
        metrics = self._metrics["train" if train else "eval"]
        for key, value in stats.items():
            metrics[key].append(value)
        return output

    @torch.no_grad()
    def _rollout_entropies(self, output: dict[str, Any], batch_size: int) -> torch.Tensor:
        """Per-token entropies ``(B, T)`` of the current (sampling) policy on the generated batch."""
        prompt_completion_ids = torch.cat([output["prompt_ids"], output["completion_ids"]], dim=1)
        attention_mask = torch.cat([output["prompt_mask"], output["completion_mask"]], dim=1)
        forward_kwargs = {key: output[key] for key in _FORWARD_KEYS if key in output}
        with disable_gradient_checkpointing(self.model, self.args.gradient_checkpointing_kwargs):
            _, entropies, _ = self._get_per_token_logps_and_entropies(
                self.model,
                prompt_completion_ids,
                attention_mask,
                output["completion_ids"].size(1),
                batch_size=batch_size,
                compute_entropy=True,
                **forward_kwargs,
            )
        return entropies

    @torch.no_grad()
    def compute_egsw_weights(
        self, advantages: torch.Tensor, entropies: torch.Tensor, mask: torch.Tensor, group_size: int
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """This process's EGSW weights, computed over the global batch (every process's completions).

        Parameters
        ----------
        advantages : torch.Tensor
            ``(B,)`` TRL's advantages of this process's completions.
        entropies : torch.Tensor
            ``(B, T)`` rollout entropies of their tokens.
        mask : torch.Tensor
            ``(B, T)`` bool loss mask (completion tokens the loss sees).
        group_size : int
            Completions per prompt; in TRL's global order a group is ``group_size`` consecutive rows.

        Returns
        -------
        weights : torch.Tensor
            ``(B,)`` in trajectory mode, ``(B, T)`` in step mode (1 where the mask is off, and for
            completions with no loss token, which take no part in their group's softmax).
        stats : dict
            :func:`egsw_gym.egsw_statistics` of the global batch's weighted samples.
        """
        acc = self.accelerator
        n_local, width = entropies.shape
        # One width on every process, then the global batch in process order (TRL's own order).
        all_adv = acc.gather(advantages.float().contiguous())
        all_ent = acc.gather(acc.pad_across_processes(entropies.float().contiguous(), dim=1, pad_index=0))
        all_mask = acc.gather(acc.pad_across_processes(mask.long().contiguous(), dim=1, pad_index=0)).bool()
        rows, cols = all_mask.nonzero(as_tuple=True)
        weights = self.egsw.sample_weights(
            all_adv[rows],
            all_ent[rows, cols],
            trajectory_ids=rows,
            step_ids=cols,
            group_ids=torch.div(rows, group_size, rounding_mode="floor"),
        )
        start = acc.process_index * n_local
        if self.egsw.mode == "step":
            full = torch.ones_like(all_ent)
            full[rows, cols] = weights
            stats = egsw_statistics(weights, all_ent[rows, cols]) if rows.numel() else {}
            return full[start : start + n_local, :width].to(advantages.dtype), stats
        full = torch.ones_like(all_adv)
        full[rows] = weights
        lengths = all_mask.sum(1)
        has_tokens = lengths > 0
        traj_entropy = (all_ent * all_mask).sum(1)
        if self.egsw.entropy_reduction == "mean":
            traj_entropy = traj_entropy / lengths.clamp_min(1)
        stats = egsw_statistics(full[has_tokens], traj_entropy[has_tokens]) if bool(has_tokens.any()) else {}
        return full[start : start + n_local].to(advantages.dtype), stats
