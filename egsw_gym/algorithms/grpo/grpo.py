"""GRPO: critic-free, group-relative policy optimisation over groups of episodes that share a start state.

One class for control and language models: it only talks to a :class:`~egsw_gym.policies.GRPOPolicy`
(``act`` while collecting, ``evaluate_sequences`` while optimising) and to an SB3 ``VecEnv``.
This module holds construction, set-up, :meth:`GRPO.learn`, :meth:`GRPO.train` and the logging of an
update; collection lives in :mod:`~egsw_gym.algorithms.grpo.rollout`, the loss math in
:mod:`~egsw_gym.algorithms.grpo.core`. One update, top to bottom::

    batch   = collect_groups(env)                               # rollout.py: rounds of n_envs episodes
    A       = group_advantages(rewards, mask, group)            # core.py: outcome or process
    w       = EGSW.sample_weights(A, H_rollout, ...) or 1        # constant for the gradient
    repeat n_epochs, minibatches of whole sequences:
        logp, H = policy.evaluate_sequences(first_obs, step_obs, actions, mask)
        loss    = aggregate(w * clip_surrogate(logp, logp_old, A) + beta * k3(logp, logp_ref) - ent_coef * H)
        backward, sum gradients over ranks, clip the norm, optimizer.step()
    _log_update(...)                                             # every statistic reduced over ranks
"""

from __future__ import annotations

import copy
import sys
import time
from typing import Any, ClassVar, Literal, TypeVar

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, Schedule
from stable_baselines3.common.vec_env import VecEnv

from egsw_gym.algorithms.egsw_config import EGSWConfigMixin
from egsw_gym.algorithms.grpo.core import GRPOLossOutput, group_advantages, grpo_loss
from egsw_gym.algorithms.grpo.rollout import GroupBatch, GroupRolloutMixin, _index_obs
from egsw_gym.algorithms.grpo.settings import (
    CHECKPOINT_HYPERPARAMETERS,
    HYPERPARAMETER_CHECKS,
    POLICY_ALIASES,
    check_policy_fits_env,
)
from egsw_gym.common import distributed as dist_utils
from egsw_gym.common.checks import apply_rules, check_schedule_value, check_total_timesteps
from egsw_gym.common.env_util import build_vec_env
from egsw_gym.common.finite import check_loss_finite
from egsw_gym.common.serialization import SafeSerializationMixin
from egsw_gym.egsw import EGSW
from egsw_gym.policies.base import GRPOPolicy

__all__ = ["GRPO", "GroupBatch"]

SelfGRPO = TypeVar("SelfGRPO", bound="GRPO")


class GRPO(GroupRolloutMixin, SafeSerializationMixin, EGSWConfigMixin, BaseAlgorithm):
    """Group Relative Policy Optimization with optional EGSW weighting, SB3-style.

    Parameters
    ----------
    policy : str or type of GRPOPolicy
        ``"MlpPolicy"``, ``"CnnPolicy"``, ``"MultiInputPolicy"`` (``Dict`` observations),
        ``"LMPolicy"`` (language models), or a :class:`~egsw_gym.policies.GRPOPolicy` subclass.
    env : gymnasium.Env, str or VecEnv
        An id string or a single env (replicated to ``n_envs`` copies by
        :func:`~egsw_gym.common.env_util.build_vec_env`), or a VecEnv. ``reset(seed=s)`` must
        determine the start state.
    group_size : int
        Episodes per group (same reset seed, so same start state / prompt); ``>= 2``.
    n_groups : int
        Groups per update (over all processes under torchrun). Their ``n_groups * group_size``
        episodes are played in rounds of ``n_envs``, so that number must be a multiple of ``n_envs``.
    n_envs : int or None
        Environments when ``env`` is a string or a single env; default ``group_size * n_groups``
        (one round per update). Fewer than ``group_size`` works: a group then spans rounds.
    env_kwargs : dict or None
        Keyword arguments of ``gym.make`` when ``env`` is an id string (e.g. a text task's knobs).
    learning_rate : float or Callable[[float], float]
        Learning rate or schedule of remaining progress (1 -> 0).
    n_epochs : int
        Passes over each batch.
    batch_size : int or None
        Sequences (episodes) per minibatch; ``None`` = the whole batch (one step per epoch).
    clip_range : float
        PPO clip ``eps_low`` (and ``eps_high`` unless ``clip_range_high`` is set).
    clip_range_high : float or None
        Clip-higher upper bound (DAPO); ``None`` means symmetric.
    beta : float
        Coefficient of the k3 KL penalty to a frozen copy of the initial policy; ``0`` (default)
        creates no reference copy.
    loss_type : {"grpo", "dr_grpo", "token"}
        Loss aggregation over steps, see :func:`~egsw_gym.algorithms.grpo.core.aggregate_loss`.
    advantage : {"outcome", "process", "sr_grpo"}
        Episode return normalised in the group, reward-to-go normalised per step across the
        group's running members, or SR-GRPO's soft-reward group advantage (see
        :func:`~egsw_gym.algorithms.grpo.advantages.group_advantages`).
    sr_temperature : float
        SR-GRPO's softmax temperature ``tau > 0`` (default 0.5, the reference code's); used only
        with ``advantage="sr_grpo"``.
    gamma : float
        Discount in ``(0, 1]`` for the return / reward-to-go. Default 1 (plain sum, as GRPO).
    scale_rewards : bool
        Divide group-centred returns by the group std (GRPO, default) or not (Dr. GRPO).
    ent_coef : float
        Entropy bonus coefficient.
    positive_weight : float
        Factor on the surrogate of steps with a positive advantage (1: plain GRPO), see
        :func:`~egsw_gym.algorithms.grpo.core.grpo_loss`.
    top_entropy_quantile : float
        Train only on the steps whose entropy is in this top fraction of the minibatch (1: all;
        0.2: Wang et al. 2025), see :func:`~egsw_gym.algorithms.grpo.core.grpo_loss`.
    max_grad_norm : float
        Gradient-norm clip.
    dr_grpo_max_len : int or None
        The constant ``max_len`` of ``"dr_grpo"``; ``None`` uses the padded length of each batch.
    dynamic_sampling : bool
        DAPO's dynamic sampling: keep collecting until ``n_groups`` groups have a non-zero return
        spread (or the round cap), then top up with zero-spread groups; single process only (see
        :meth:`~egsw_gym.algorithms.grpo.rollout.GroupRolloutMixin._collect_groups_dynamic`).
    dynamic_sampling_max_rounds : int or None
        Cap on the rounds one update may collect with ``dynamic_sampling``, at least the rounds of
        a plain update; ``None``: 4 times those (``4 * n_groups * group_size // n_envs``).
    egsw : EGSW, dict or None
        EGSW configuration; ``None`` is plain GRPO. Stored as plain data (``egsw_config``) and
        rebuilt as ``self.egsw``.
    stats_window_size : int
        Episodes averaged in ``rollout/ep_rew_mean``.
    tensorboard_log : str or None
        TensorBoard log directory.
    policy_kwargs : dict or None
        Keyword arguments of the policy class.
    verbose : int
        0 silent, 1 training logs.
    seed : int or None
        Seed of Python, NumPy, torch, the action space and the group reset seeds.
    device : torch.device or str
        ``"auto"``, ``"cpu"``, ``"cuda"``.
    _init_setup_model : bool
        Build the networks now (``False`` is used by ``load``).
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = POLICY_ALIASES
    policy: GRPOPolicy

    def __init__(
        self,
        policy: str | type[GRPOPolicy],
        env: GymEnv | str | None,
        group_size: int = 8,
        n_groups: int = 4,
        n_envs: int | None = None,
        env_kwargs: dict[str, Any] | None = None,
        learning_rate: float | Schedule = 3e-4,
        n_epochs: int = 4,
        batch_size: int | None = None,
        clip_range: float = 0.2,
        clip_range_high: float | None = None,
        beta: float = 0.0,
        loss_type: Literal["grpo", "dr_grpo", "token"] = "grpo",
        advantage: Literal["outcome", "process", "sr_grpo"] = "outcome",
        sr_temperature: float = 0.5,
        gamma: float = 1.0,
        scale_rewards: bool = True,
        ent_coef: float = 0.0,
        positive_weight: float = 1.0,
        top_entropy_quantile: float = 1.0,
        max_grad_norm: float = 0.5,
        dr_grpo_max_len: int | None = None,
        dynamic_sampling: bool = False,
        dynamic_sampling_max_rounds: int | None = None,
        egsw: EGSW | dict[str, Any] | None = None,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: torch.device | str = "auto",
        _init_setup_model: bool = True,
    ) -> None:
        # The constructor arguments the shared checks validate (all of them but env, policy and egsw).
        hyperparameters = {k: v for k, v in locals().items() if k in HYPERPARAMETER_CHECKS}
        self._check_hyperparameters(**hyperparameters)
        # This process's rank and world size: one process until _setup_model joins torchrun's group.
        self._dist = dist_utils.DistInfo()
        if env is not None and not isinstance(env, VecEnv):
            # Under torchrun n_groups is global: each rank runs its n_groups / world_size share.
            default_n_envs = group_size * dist_utils.local_n_groups(n_groups)
            env = build_vec_env(env, n_envs if n_envs is not None else default_n_envs, env_kwargs=env_kwargs)
        check_policy_fits_env(policy, env)

        super().__init__(
            policy=policy,
            env=env,
            learning_rate=learning_rate,
            policy_kwargs=policy_kwargs,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            verbose=verbose,
            device=device,
            support_multi_env=True,
            seed=seed,
            supported_action_spaces=(spaces.Discrete, spaces.Box, spaces.MultiDiscrete, spaces.MultiBinary),
        )
        for name in ("learning_rate", "n_envs", "stats_window_size", "env_kwargs"):
            hyperparameters.pop(name)  # SB3 keeps these (or does not need them) itself
        self.__dict__.update(hyperparameters)
        self.dynamic_sampling = bool(dynamic_sampling)
        self._init_egsw(egsw)  # the live EGSW object and the plain dict checkpoints store
        self.ref_policy: GRPOPolicy | None = None

        if _init_setup_model:
            self._setup_model()

    # ------------------------------------------------------------------------------------------
    # Set-up, validation, environments, saving
    # ------------------------------------------------------------------------------------------

    @classmethod
    def _check_hyperparameters(cls, **hp: Any) -> None:
        """Check each keyword that has a rule in :data:`~egsw_gym.algorithms.grpo.settings.HYPERPARAMETER_CHECKS`."""
        apply_rules(HYPERPARAMETER_CHECKS, hp)

    @classmethod
    def _validate_loaded_params(cls, data: dict[str, Any]) -> None:
        """The constructor's checks, applied to a checkpoint's values (see SafeSerializationMixin)."""
        super()._validate_loaded_params(data)
        cls._check_hyperparameters(**cls._loaded_settings(data, CHECKPOINT_HYPERPARAMETERS))

    def _setup_model(self) -> None:
        self._restore_egsw()  # after load(): load(..., egsw=EGSW(...)) if given, else the saved config
        # torchrun / accelerate: join the process group (nccl on CUDA, each rank on cuda:LOCAL_RANK).
        self._dist, self.device = dist_utils.init_distributed(self.device)
        self._setup_lr_schedule()
        self.set_random_seed(self.seed)
        if self.env is not None:
            self._check_env(self.env)
        self.policy = self.policy_class(
            self.observation_space, self.action_space, self.lr_schedule, **self.policy_kwargs
        )
        if not isinstance(self.policy, GRPOPolicy):
            raise ValueError(
                f"policy must be a GRPOPolicy subclass (act / evaluate_sequences), got {type(self.policy).__name__}"
            )
        self.policy = self.policy.to(self.device)
        dist_utils.broadcast_module(self.policy, self._dist)  # every rank starts from rank 0's weights
        self.ref_policy = None
        if self.beta > 0:
            # Frozen copy of the initial policy for the KL penalty; it never trains.
            self.ref_policy = copy.deepcopy(self.policy)
            self.ref_policy.optimizer = None
            self.ref_policy.set_training_mode(False)
            self.ref_policy.requires_grad_(False)

    def sync_reference_policy(self) -> None:
        """Make the KL reference (``beta > 0``) a copy of the current policy; no-op when ``beta == 0``.

        The reference is copied from the policy when the model is built. Call this after changing the
        policy outside :meth:`learn` (a supervised warm start, loading other weights), so that the KL
        penalty anchors to the model RL actually starts from, as the reference model of RLHF/RLVR is.
        """
        if self.ref_policy is not None:
            self.ref_policy.load_state_dict(self.policy.state_dict())

    def set_env(self, env: GymEnv | str, force_reset: bool = True) -> None:
        """SB3's ``set_env`` plus GRPO's checks (rounds fit the update, seedability).

        A single ``gymnasium.Env`` (or an id string) is replicated to the model's ``n_envs`` copies,
        as the constructor does (:func:`~egsw_gym.common.env_util.build_vec_env`).
        """
        if not isinstance(env, VecEnv):
            env = build_vec_env(env, self.n_envs)
        super().set_env(env, force_reset)
        self._check_env(self.env)

    @classmethod
    def load(cls, path: Any, env: GymEnv | str | None = None, *args: Any, **kwargs: Any) -> GRPO:
        """The serialization mixin's safe ``load``; a single ``gymnasium.Env`` is replicated as in :meth:`set_env`.

        A ``VecEnv`` (or ``None``) goes to the mixin's ``load`` unchanged; anything else is loaded
        without an env first (to learn the saved ``n_envs``), then attached with :meth:`set_env`.
        """
        if env is None or isinstance(env, VecEnv):
            return super().load(path, env, *args, **kwargs)
        model = super().load(path, None, *args, **kwargs)
        model.set_env(env, force_reset=kwargs.get("force_reset", True))
        return model

    def _excluded_save_params(self) -> list[str]:
        # The reference policy is saved as a state dict (EGSWConfigMixin excludes the EGSW object).
        return [*super()._excluded_save_params(), "ref_policy", "_dist"]

    def save(self, path: Any, exclude: Any = None, include: Any = None) -> None:
        """SB3's ``save``; under torch.distributed only rank 0 writes (the ranks hold equal weights)."""
        if not self._dist.is_main:
            return
        # policy_kwargs as plain data (an LM object or a tokenizer object -> its config / directory).
        original = self.policy_kwargs
        if hasattr(self.policy, "checkpoint_kwargs"):
            self.policy_kwargs = self.policy.checkpoint_kwargs(original)
        try:
            super().save(path, exclude=exclude, include=include)
        finally:
            self.policy_kwargs = original

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        state_dicts = ["policy", "policy.optimizer"]
        if self.ref_policy is not None:
            state_dicts.append("ref_policy")
        return state_dicts, []

    # ------------------------------------------------------------------------------------------
    # Update
    # ------------------------------------------------------------------------------------------

    def _egsw_weights(
        self, advantages: torch.Tensor, batch: GroupBatch, plan: dist_utils.GlobalBatch
    ) -> torch.Tensor:
        """EGSW weights on the padded batch (1 on padding), from the one core implementation.

        Advantage standardisation and the logged statistics span the global batch (``plan``; the
        reductions are the identity for one process).
        """
        assert self.egsw is not None
        mask = batch.mask
        B, T = mask.shape
        # Flat per-step ids: trajectory = episode, step = t in the episode, group = start-state group.
        # In "step" mode EGSW's sets are (group, t): exactly the group's members still running at t.
        traj_ids = torch.arange(B, device=mask.device)[:, None].expand(B, T)[mask]
        step_ids = torch.arange(T, device=mask.device)[None, :].expand(B, T)[mask]
        group_ids = batch.group_ids[:, None].expand(B, T)[mask]
        w = self.egsw.sample_weights(
            advantages[mask],
            batch.entropies[mask],
            trajectory_ids=traj_ids,
            step_ids=step_ids,
            group_ids=group_ids,
            all_reduce=plan.egsw_reduce(),
        )
        weights = torch.ones_like(advantages)
        weights[mask] = w.to(weights.dtype)
        wd, ent = w.double(), batch.entropies[mask].double()
        sums = plan.reduce_scalars(
            {"n": wd.numel(), "w": wd.sum(), "w2": (wd * wd).sum(), "h": ent.sum()}, op="sum"
        )
        self.logger.record("egsw/weight_max", plan.reduce_scalars({"x": float(w.max())}, op="max")["x"])
        self.logger.record("egsw/weight_min", plan.reduce_scalars({"x": float(w.min())}, op="min")["x"])
        self.logger.record("egsw/weight_ess", sums["w"] ** 2 / max(sums["n"] * sums["w2"], 1e-300))
        self.logger.record("egsw/entropy_mean", sums["h"] / max(sums["n"], 1.0))
        return weights

    def _update_current_progress_remaining(self, num_timesteps: int, total_timesteps: int) -> None:
        """SB3's ``1 - num_timesteps / total_timesteps``, floored at 0.

        The last update may overshoot ``total_timesteps`` (whole rounds); without the floor a
        schedule such as ``lambda p: p * lr`` would give it a negative learning rate.
        """
        super()._update_current_progress_remaining(num_timesteps, total_timesteps)
        self._current_progress_remaining = max(0.0, self._current_progress_remaining)

    def _update_learning_rate(self, optimizers: Any) -> None:
        """SB3's, after checking the schedule's value now (a schedule may turn NaN, inf or < 0 midway)."""
        progress = self._current_progress_remaining
        check_schedule_value("learning_rate", self.lr_schedule(progress), progress, low=0)
        super()._update_learning_rate(optimizers)

    def train(self, batch: GroupBatch) -> None:
        """``n_epochs`` of minibatch updates on one batch of groups, then :meth:`_log_update`."""
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)
        mask = batch.mask
        adv = group_advantages(
            batch.rewards,
            mask,
            batch.group_ids,
            advantage=self.advantage,
            gamma=self.gamma,
            scale_by_std=self.scale_rewards,
            sr_temperature=self.sr_temperature,
        )
        # The update batch as the union of every rank's sequences (trivial for one process).
        plan = dist_utils.GlobalBatch(mask, self._dist, self.loss_type)
        weights = self._egsw_weights(adv.advantages, batch, plan) if self.egsw is not None else None
        ref_log_probs = None
        if self.beta > 0:
            assert self.ref_policy is not None
            # The reference never changes within an update: evaluate it once, not per epoch
            # (inference mode: no autograd bookkeeping at all; cloned into an ordinary tensor).
            with torch.inference_mode():
                ref_log_probs, _ = self.ref_policy.evaluate_sequences(
                    batch.first_obs, batch.step_obs, batch.actions, mask
                )
            ref_log_probs = ref_log_probs.clone()
        max_len = self.dr_grpo_max_len if self.dr_grpo_max_len is not None else plan.max_len
        steps: list[tuple[GRPOLossOutput, float]] = []
        for _ in range(self.n_epochs):
            # Local rows of each global minibatch; loss_scale turns local loss denominators into global ones.
            for idx, loss_scale in plan.minibatches(self.batch_size or plan.n_global):
                out = self._train_minibatch(
                    batch, idx, adv.advantages, weights, ref_log_probs, max_len, loss_scale, plan
                )
                steps.append((out, loss_scale))
        self._n_updates += self.n_epochs
        self._log_update(batch, adv, steps, plan)

    def _train_minibatch(
        self,
        batch: GroupBatch,
        idx: torch.Tensor,
        advantages: torch.Tensor,
        weights: torch.Tensor | None,
        ref_log_probs: torch.Tensor | None,
        max_len: int,
        loss_scale: float,
        plan: dist_utils.GlobalBatch,
    ) -> GRPOLossOutput:
        """One gradient step on the rows ``idx``: loss, backward, sum over ranks, clip, ``optimizer.step()``."""
        # Rows in batch order (the loss does not depend on it): a group's rows stay adjacent,
        # which lets a language-model policy run each shared prompt once.
        idx = idx.sort().values
        m = batch.mask[idx]
        # Trim trailing all-padding steps: cheaper for sequence models, same loss.
        t_max = int(m.any(dim=0).nonzero().max()) + 1
        m = m[:, :t_max]
        steps = (idx, slice(0, t_max))
        log_probs, entropies = self.policy.evaluate_sequences(
            _index_obs(batch.first_obs, idx), _index_obs(batch.step_obs, steps), batch.actions[steps], m
        )
        out = grpo_loss(
            log_probs,
            batch.old_log_probs[steps],
            advantages[steps],
            m,
            clip_range=self.clip_range,
            clip_range_high=self.clip_range_high,
            loss_type=self.loss_type,
            max_len=max_len,
            weights=None if weights is None else weights[steps],
            ref_log_probs=None if ref_log_probs is None else ref_log_probs[steps],
            beta=self.beta,
            entropies=entropies,
            ent_coef=self.ent_coef,
            positive_weight=self.positive_weight,
            top_entropy_quantile=self.top_entropy_quantile,
        )
        # A NaN/inf loss or gradient raises before the step: parameters never become NaN.
        where = f"in update {self._n_updates // self.n_epochs + 1} (num_timesteps={self.num_timesteps})"
        check_loss_finite("GRPO", {"loss": float(out.loss.detach())}, where)
        self.policy.optimizer.zero_grad()
        (out.loss * loss_scale).backward()
        params = list(self.policy.parameters())
        plan.sync_gradients(params)  # sum over ranks (no-op for one process)
        grad_norm = torch.nn.utils.clip_grad_norm_(params, self.max_grad_norm)
        check_loss_finite("GRPO", {"gradient norm": float(grad_norm)}, where)
        self.policy.optimizer.step()
        return out

    def _log_update(
        self,
        batch: GroupBatch,
        adv: Any,
        steps: list[tuple[GRPOLossOutput, float]],
        plan: dist_utils.GlobalBatch,
    ) -> None:
        """Record the update's ``train/*`` values, reduced over ranks (the identity for one process).

        A minibatch statistic times the rank's share (``loss_scale``) sums over ranks to the global
        minibatch's value; the values are then averaged over the update's minibatches.
        """

        def mean(field: str) -> float:
            return float(np.mean([getattr(out, field) * scale for out, scale in steps]))

        returns = (batch.rewards * batch.mask).sum(dim=1)
        keys = ("clip_fraction", "clip_fraction_low", "clip_fraction_high", "approx_kl", "entropy", "kl")
        g = plan.reduce_scalars(
            {
                "loss": float(np.mean([float(out.loss.detach()) * scale for out, scale in steps])),
                **{key: mean(key) for key in keys},
                "zero_std": adv.n_zero_std_groups,
                "groups": adv.n_groups,
                "return_sum": float(returns.sum()),
                "length_sum": float(batch.mask.sum()),
                "n": batch.mask.shape[0],
            },
            op="sum",
        )
        for key in ("loss", *keys[:-1]):
            self.logger.record(f"train/{key}", g[key])
        if self.beta > 0:
            self.logger.record("train/kl", g["kl"])
        self.logger.record("train/frac_reward_zero_std", g["zero_std"] / max(g["groups"], 1))
        self.logger.record("train/group_return_mean", g["return_sum"] / g["n"])
        self.logger.record("train/episode_len_mean", g["length_sum"] / g["n"])
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/learning_rate", self.lr_schedule(self._current_progress_remaining))

    # ------------------------------------------------------------------------------------------
    # Main loop
    # ------------------------------------------------------------------------------------------

    def _record_throughput(self, batch: GroupBatch, rollout_s: float, train_s: float) -> None:
        """Log this update's wall times and its episode steps per second (tokens/s on text envs).

        Unlike ``time/fps`` (every vectorised step), ``time/valid_steps_per_s`` (rollout + update) and
        ``time/rollout_steps_per_s`` count only the steps inside an episode (generated tokens).
        """
        valid = float(batch.mask.sum())
        self.logger.record("time/rollout_s", rollout_s)
        self.logger.record("time/train_s", train_s)
        self.logger.record("time/valid_steps_per_s", valid / max(rollout_s + train_s, 1e-9))
        self.logger.record("time/rollout_steps_per_s", valid / max(rollout_s, 1e-9))

    def dump_logs(self, iteration: int = 0) -> None:
        """Write the SB3 time/rollout entries (fps included) and everything recorded by ``train``."""
        assert self.ep_info_buffer is not None
        time_elapsed = max((time.time_ns() - self.start_time) / 1e9, sys.float_info.epsilon)
        fps = int((self.num_timesteps - self._num_timesteps_at_start) / time_elapsed)
        if iteration > 0:
            self.logger.record("time/iterations", iteration, exclude="tensorboard")
        ep_stats = dist_utils.episode_stats(self.ep_info_buffer, self._dist)  # recent episodes, all ranks
        if ep_stats is not None:
            self.logger.record("rollout/ep_rew_mean", ep_stats[0])
            self.logger.record("rollout/ep_len_mean", ep_stats[1])
        if self.ep_success_buffer:
            self.logger.record("rollout/success_rate", float(np.mean(self.ep_success_buffer)))
        self.logger.record("time/fps", fps)
        self.logger.record("time/time_elapsed", int(time_elapsed), exclude="tensorboard")
        self.logger.record("time/total_timesteps", self.num_timesteps, exclude="tensorboard")
        self.logger.dump(step=self.num_timesteps)

    def learn(
        self: SelfGRPO,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 1,
        tb_log_name: str = "GRPO",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfGRPO:
        """Train for ``total_timesteps`` environment steps (every stepped env counts), within one round.

        The update that reaches the budget stops at the end of that round (of the block of rounds
        holding whole groups) and trains on the groups played, as SB3's PPO stops after the rollout
        that crosses it (:meth:`collect_groups`; :attr:`whole_updates` turns this off).

        Parameters
        ----------
        total_timesteps : int
            Environment steps to run, ``>= 0`` (``0`` is a no-op; a float such as ``1e5`` works, as in
            SB3). The count ends at most one round (``n_envs`` times its longest episode) above it.
        callback : callable, BaseCallback, list or None
            SB3 callback(s); ``on_step`` after every vectorised step, returning ``False`` stops.
        log_interval : int
            Updates between log dumps.
        tb_log_name : str
            TensorBoard run name.
        reset_num_timesteps : bool
            Restart the step counter (``False`` continues a previous ``learn``).
        progress_bar : bool
            Show a tqdm/rich progress bar.

        Returns
        -------
        GRPO
            ``self``.

        Raises
        ------
        ValueError
            For a negative, NaN, infinite or non-numeric ``total_timesteps``.
        """
        check_total_timesteps(total_timesteps)
        if not self._dist.is_main:
            # Only rank 0 writes logs and shows a progress bar (train still joins every reduction).
            self.set_logger(Logger(folder=None, output_formats=[]))
            progress_bar = False
        total_timesteps, callback = self._setup_learn(
            total_timesteps, callback, reset_num_timesteps, tb_log_name, progress_bar
        )
        callback.on_training_start(locals(), globals())
        assert self.env is not None
        iteration = 0
        while self.num_timesteps < total_timesteps:
            t_start = time.perf_counter()
            batch = self.collect_groups(self.env, callback, max_timesteps=total_timesteps)
            if batch is None:
                break
            t_collected = time.perf_counter()
            iteration += 1
            self._update_current_progress_remaining(self.num_timesteps, total_timesteps)
            self.train(batch)
            self._record_throughput(batch, t_collected - t_start, time.perf_counter() - t_collected)
            if log_interval is not None and iteration % log_interval == 0:
                self.dump_logs(iteration)
        callback.on_training_end()
        return self
