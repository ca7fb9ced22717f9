"""EGSW-PPO: Stable-Baselines3's PPO with entropy-guided sample weights on the clipped surrogate.

A thin fork of ``stable_baselines3.PPO`` (SB3 2.9.2; ``stable-baselines3>=2.4,<3`` is pinned in
``pyproject.toml`` because :meth:`PPO.train` is a copy). What differs from SB3, all of it here:

1. EGSW (lines marked ``# EGSW:``, as sb3-contrib marks its changes):

   - the rollout buffer (:class:`~egsw_gym.algorithms.ppo.buffers.EGSWRolloutBuffer`, or the
     ``Dict`` variant) also holds one entropy and one EGSW weight per sample;
   - SB3's ``collect_rollouts`` runs unchanged; right after its GAE (in the buffer's
     ``compute_returns_and_advantage``, before the callbacks' ``on_rollout_end``) one batched
     no-grad pass over the buffer evaluates the policy's entropy at every stored observation, and
     the weights are computed once per rollout by :meth:`egsw_gym.egsw.EGSW.sample_weights`
     (``mode="trajectory"``: the episode segments of the rollout compete; ``mode="step"``: the
     ``n_envs`` environments at each rollout step);
   - in :meth:`PPO.train` the weight multiplies each sample's clipped surrogate term only; the value
     loss and the entropy bonus are unchanged, and the weights carry no gradient.

2. Guards that SB3 does not have: arguments checked at construction
   (:mod:`egsw_gym.common.checks`), schedules checked at every update, ``learn`` refuses negative
   or NaN ``total_timesteps``, the rollout's environment wrapped in
   :class:`~egsw_gym.common.finite.VecCheckFinite` (SB3's ``VecCheckNan`` with our error), and
   the optimizer guarded against non-finite gradients
   (:func:`~egsw_gym.common.finite.guard_optimizer_step`). Inside SB3's loops this is two lines of
   :meth:`PPO.train`, marked ``# GUARD:``: the norm ``clip_grad_norm_`` already returns is handed
   to the guard, whose own pass over the gradients it replaces when finite.

3. ``save``/``load`` never unpickle (:class:`~egsw_gym.common.serialization.SafeSerializationMixin`);
   the EGSW configuration is saved as plain data (:class:`~egsw_gym.algorithms.egsw_config.EGSWConfigMixin`).

``egsw=None`` runs exactly SB3's PPO (same seed, bit-identical parameters), and uniform weights
(``alpha=0`` with a huge temperature) match it to float precision. No extra random numbers are drawn.
"""

from __future__ import annotations

import warnings
import weakref
from typing import Any, TypeVar

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3 import PPO as SB3PPO
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, Schedule
from stable_baselines3.common.utils import explained_variance
from stable_baselines3.common.vec_env import VecEnv
from torch.nn import functional as F

from egsw_gym.algorithms.egsw_config import EGSWConfigMixin, as_egsw
from egsw_gym.algorithms.ppo.buffers import EGSWDictRolloutBuffer, EGSWRolloutBuffer, _EGSWBufferMixin
from egsw_gym.common.checks import (
    MAX_COEF,
    MAX_EPOCHS,
    apply_rules,
    check_bool,
    check_int,
    check_learning_rate,
    check_number,
    check_probability,
    check_schedule,
    check_schedule_value,
    check_total_timesteps,
)
from egsw_gym.common.finite import VecCheckFinite, check_step_finite, guard_optimizer_step
from egsw_gym.common.serialization import SafeSerializationMixin
from egsw_gym.egsw import EGSW, egsw_statistics
from egsw_gym.policies.base import GRPOPolicy

__all__ = ["PPO"]

SelfPPO = TypeVar("SelfPPO", bound="PPO")


class PPO(SafeSerializationMixin, EGSWConfigMixin, SB3PPO):
    """Proximal Policy Optimization with entropy-guided sample weighting (EGSW).

    Identical to :class:`stable_baselines3.PPO` (same arguments, same behaviour) plus ``egsw``.
    With ``egsw`` set, every sample's clipped surrogate term is multiplied by its EGSW weight
    ``w = N softmax((A + alpha H) / P)`` within its comparison set (see :class:`egsw_gym.EGSW`);
    value loss and entropy bonus are unweighted. ``egsw=None`` is exactly SB3's PPO.

    Parameters
    ----------
    policy : str or type[ActorCriticPolicy]
        The policy model ("MlpPolicy", "CnnPolicy", "MultiInputPolicy" or a class).
    env : GymEnv or str
        The environment to learn from (an id string is made with ``gym.make``).
    learning_rate : float or Schedule
        Learning rate, constant or a function of the remaining progress (1 to 0).
    n_steps : int
        Steps per environment per rollout (rollout size is ``n_steps * n_envs``).
    batch_size : int
        Minibatch size.
    n_epochs : int
        Passes over the rollout per update.
    gamma : float
        Discount factor.
    gae_lambda : float
        GAE bias/variance trade-off.
    clip_range : float or Schedule
        Clipping parameter of the surrogate.
    clip_range_vf : float, Schedule or None
        Clipping of the value function update; ``None`` disables it.
    normalize_advantage : bool
        Normalise advantages per minibatch (SB3 behaviour).
    ent_coef : float
        Entropy bonus coefficient of the loss (unweighted by EGSW).
    vf_coef : float
        Value loss coefficient (unweighted by EGSW).
    max_grad_norm : float
        Gradient clipping norm.
    use_sde : bool
        Use generalised state-dependent exploration.
    sde_sample_freq : int
        Resample the gSDE noise every this many steps (-1: once per rollout).
    rollout_buffer_class : type[RolloutBuffer] or None
        Rollout buffer class. ``None`` picks :class:`EGSWRolloutBuffer` (or
        :class:`EGSWDictRolloutBuffer` for ``Dict`` observations). With ``egsw`` set, a custom class
        must subclass one of these.
    rollout_buffer_kwargs : dict or None
        Extra keyword arguments of the rollout buffer.
    target_kl : float or None
        Early stopping threshold on the approximate KL per epoch.
    stats_window_size : int
        Episodes averaged in the rollout statistics.
    tensorboard_log : str or None
        TensorBoard log directory.
    policy_kwargs : dict or None
        Extra keyword arguments of the policy.
    verbose : int
        Verbosity (0 none, 1 info, 2 debug).
    seed : int or None
        Seed of the random generators.
    device : torch.device or str
        Device ("cpu", "cuda", "auto").
    _init_setup_model : bool
        Build the networks at construction (``False`` is used by :meth:`load`).
    egsw : EGSW, dict or None
        The EGSW configuration (or a dict from :meth:`EGSW.to_dict`), or ``None`` for plain PPO.
        ``mode="step"`` compares the ``n_envs`` environments at each rollout step; with
        ``n_envs=1`` every set has one sample of weight 1, so it trains plain PPO (a one-time
        warning says so). Saved with the model as plain data (``egsw_config``) and rebuilt on
        :meth:`load`; ``PPO.load(path, egsw=EGSW(...))`` replaces it.

    Notes
    -----
    Entropy at a rollout step is the entropy of the action distribution the action was sampled
    from (differential entropy for Gaussian policies). Where a distribution has no closed form
    (gSDE with ``squash_output=True``) the one-sample estimate ``-log pi(a|s)`` is stored instead.

    Because the weights grow with the advantage, the weighted surrogate no longer has zero mean
    (``sum_i w_i A_i > 0`` even for centred advantages): besides the usual policy gradient it pushes
    up the likelihood of all sampled actions, which lowers the policy entropy. With a small
    temperature this can collapse exploration early (seen on CartPole-v1 with the RL Zoo settings,
    ``EGSW()`` defaults, one seed of three); a larger ``temperature`` or a larger ``alpha`` counters it.

    In ``mode="trajectory"`` every episode segment counts once in its set whatever its length, so a
    short segment (e.g. the tail cut by the rollout boundary) gets the same share as a full episode.

    ``save``/``load`` never unpickle (:class:`~egsw_gym.common.serialization.SafeSerializationMixin`;
    ``load(..., allow_pickle=True)`` is the opt-in for trusted files). A NaN or inf reward,
    observation or action raises :class:`~egsw_gym.common.finite.NonFiniteError` naming the env and
    rollout step (the rollout runs through :class:`~egsw_gym.common.finite.VecCheckFinite`), and an
    optimizer step with a NaN or inf gradient is refused with the same error naming the parameters
    (:func:`~egsw_gym.common.finite.guard_optimizer_step`). Arguments are checked at construction
    with :mod:`egsw_gym.common.checks` (``ValueError`` naming the argument), learning-rate and
    clip-range schedules again at every update, and ``learn`` refuses a negative or NaN
    ``total_timesteps``.
    Resuming (``load`` then ``learn(n, reset_num_timesteps=False)``) restores the RNG states, so it
    is bit-exact when the environment's state is restored too; otherwise it is statistically
    equivalent (see ``docs/RESUME.md``).
    """

    _warned_single_env = False  # set on the instance by _check_egsw_env
    # clip_range is a schedule SB3 pickles; without it the update cannot run
    _safe_required_entries = (*SafeSerializationMixin._safe_required_entries, "clip_range")

    def __init__(
        self,
        policy: str | type[ActorCriticPolicy],
        env: GymEnv | str,
        learning_rate: float | Schedule = 3e-4,
        n_steps: int = 2048,
        batch_size: int = 64,
        n_epochs: int = 10,
        gamma: float = 0.99,
        gae_lambda: float = 0.95,
        clip_range: float | Schedule = 0.2,
        clip_range_vf: float | Schedule | None = None,
        normalize_advantage: bool = True,
        ent_coef: float = 0.0,
        vf_coef: float = 0.5,
        max_grad_norm: float = 0.5,
        use_sde: bool = False,
        sde_sample_freq: int = -1,
        rollout_buffer_class: type[RolloutBuffer] | None = None,
        rollout_buffer_kwargs: dict[str, Any] | None = None,
        target_kl: float | None = None,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: th.device | str = "auto",
        _init_setup_model: bool = True,
        egsw: EGSW | dict[str, Any] | None = None,
    ) -> None:
        _check_not_a_grpo_policy(policy)
        _check_ppo_settings(**{k: v for k, v in locals().items() if k in PPO_SETTING_CHECKS})
        self._init_egsw(egsw)  # the live EGSW object and the plain dict checkpoints store
        super().__init__(
            policy,
            env,
            learning_rate=learning_rate,
            n_steps=n_steps,
            batch_size=batch_size,
            n_epochs=n_epochs,
            gamma=gamma,
            gae_lambda=gae_lambda,
            clip_range=clip_range,
            clip_range_vf=clip_range_vf,
            normalize_advantage=normalize_advantage,
            ent_coef=ent_coef,
            vf_coef=vf_coef,
            max_grad_norm=max_grad_norm,
            use_sde=use_sde,
            sde_sample_freq=sde_sample_freq,
            rollout_buffer_class=rollout_buffer_class,
            rollout_buffer_kwargs=rollout_buffer_kwargs,
            target_kl=target_kl,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            policy_kwargs=policy_kwargs,
            verbose=verbose,
            seed=seed,
            device=device,
            _init_setup_model=_init_setup_model,
        )

    # ------------------------------------------------------------------ setup, save, load

    @classmethod
    def _validate_loaded_params(cls, data: dict[str, Any]) -> None:
        """The constructor's checks, applied to a checkpoint's values (see SafeSerializationMixin)."""
        super()._validate_loaded_params(data)
        names = ("n_steps", "batch_size", "n_epochs", "gamma", "gae_lambda", "clip_range", "clip_range_vf",
                 "ent_coef", "vf_coef", "max_grad_norm", "target_kl", "normalize_advantage")  # fmt: skip
        _check_ppo_settings(**cls._loaded_settings(data, names))

    def _setup_model(self) -> None:
        self._restore_egsw()  # after load(): load(..., egsw=EGSW(...)) if given, else the saved config

        if self.rollout_buffer_class is None:
            is_dict = isinstance(self.observation_space, spaces.Dict)
            self.rollout_buffer_class = EGSWDictRolloutBuffer if is_dict else EGSWRolloutBuffer
        elif self.egsw is not None and not issubclass(self.rollout_buffer_class, _EGSWBufferMixin):
            raise ValueError(
                f"rollout_buffer_class={self.rollout_buffer_class.__name__} cannot store entropies and EGSW "
                "weights; with egsw set, use None (default) or a subclass of EGSWRolloutBuffer / EGSWDictRolloutBuffer"
            )
        super()._setup_model()
        # Refuse any optimizer step with a NaN/inf gradient (covers NaN/inf losses), naming the parameters.
        model = weakref.ref(self)
        self._optimizer_guard = guard_optimizer_step(
            self.policy.optimizer,
            self.policy,
            "PPO",
            lambda: (
                f"in the update at num_timesteps={model().num_timesteps} (n_updates={model()._n_updates})"
            ),
        )

    def _check_egsw_env(self, n_envs: int | None) -> None:
        """Warn (once per model, at its first rollout) that step-wise EGSW with one env trains plain PPO.

        Step mode's set at a rollout step is the ``n_envs`` environments; with ``n_envs=1`` every
        set holds one sample, whose weight is 1. The warning comes when training starts, not at
        construction, so building, saving and loading such a model stays silent.
        """
        if self.egsw is None or self.egsw.mode != "step" or n_envs != 1 or self._warned_single_env:
            return
        self._warned_single_env = True
        warnings.warn(
            "EGSW mode='step' compares the n_envs environments at each rollout step, but n_envs=1: every "
            "set holds one sample, whose weight is 1, so this trains plain PPO. Use EGSW(mode='trajectory') "
            "(the default: episode segments of the rollout compete) or a vectorised env with n_envs >= 2.",
            UserWarning,
            stacklevel=4,
        )

    def _excluded_save_params(self) -> list[str]:
        # The finiteness wrapper holds the training env, which is never saved.
        return [*super()._excluded_save_params(), "_finite_env", "_warned_single_env", "_optimizer_guard"]

    # ------------------------------------------------------------------ learn

    def learn(
        self: SelfPPO,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 1,
        tb_log_name: str = "PPO",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfPPO:
        """SB3's ``learn``; a negative, NaN or infinite ``total_timesteps`` raises ``ValueError`` (``0`` is a no-op)."""
        check_total_timesteps(total_timesteps)
        return super().learn(
            total_timesteps=total_timesteps,
            callback=callback,
            log_interval=log_interval,
            tb_log_name=tb_log_name,
            reset_num_timesteps=reset_num_timesteps,
            progress_bar=progress_bar,
        )

    def _update_current_progress_remaining(self, num_timesteps: int, total_timesteps: int) -> None:
        """SB3's, then every schedule is checked at the new progress (before the update evaluates it)."""
        super()._update_current_progress_remaining(num_timesteps, total_timesteps)
        progress = self._current_progress_remaining
        check_schedule_value("learning_rate", self.lr_schedule(progress), progress, low=0, low_open=True)
        check_schedule_value("clip_range", self.clip_range(progress), progress, low=0, low_open=True)  # type: ignore[operator]
        if self.clip_range_vf is not None:
            check_schedule_value(
                "clip_range_vf", self.clip_range_vf(progress), progress, low=0, low_open=True
            )  # type: ignore[operator]

    # ------------------------------------------------------------------ rollout

    def collect_rollouts(
        self,
        env: VecEnv,
        callback: BaseCallback,
        rollout_buffer: RolloutBuffer,
        n_rollout_steps: int,
    ) -> bool:
        """SB3's ``collect_rollouts`` through :class:`VecCheckFinite`, with (EGSW) entropies and weights after GAE.

        SB3's method runs unchanged. Before it, the rollout's start observation is checked for NaN
        and inf and ``env`` is wrapped so that every step is (SB3's ``VecCheckNan`` with our error
        message), and the buffer is given the EGSW configuration and the policy: its
        ``compute_returns_and_advantage`` then follows SB3's GAE with one batched no-grad pass
        over the buffer for the policy entropy at every sample and the EGSW weights, before the
        callbacks' ``on_rollout_end``. The weights' statistics are logged (``egsw/*``).
        """
        # EGSW: model.egsw may have been set after construction (e.g. on a model loaded from a plain SB3 zip).
        self.egsw = as_egsw(self.egsw)  # EGSW:
        self._check_egsw_env(env.num_envs)  # EGSW: step mode with one env is plain PPO (warns once)
        if isinstance(rollout_buffer, _EGSWBufferMixin):  # EGSW: the buffer weights after GAE
            rollout_buffer.egsw, rollout_buffer.entropy_policy = self.egsw, self.policy
        elif self.egsw is not None:  # EGSW:
            raise ValueError(
                f"egsw is set but the rollout buffer ({type(rollout_buffer).__name__}) cannot store entropies "
                "and weights; rebuild the model with rollout_buffer_class=None (EGSWRolloutBuffer)"
            )
        check_step_finite("PPO", None, self._last_obs, "at the start of a rollout (the reset observation)")
        finite_env = getattr(self, "_finite_env", None)
        if finite_env is None or finite_env.venv is not env:
            finite_env = self._finite_env = VecCheckFinite(env, "PPO", where=lambda: "")
        finite_env.where = lambda: (
            f"at rollout step {rollout_buffer.pos} (num_timesteps={self.num_timesteps})"
        )
        if not super().collect_rollouts(finite_env, callback, rollout_buffer, n_rollout_steps):
            return False
        if self.egsw is not None:  # EGSW: log the weights of this rollout
            stats = egsw_statistics(rollout_buffer.weights, rollout_buffer.entropies)  # type: ignore[attr-defined]
            for key, value in stats.items():
                self.logger.record(key, value)
        return True

    # ------------------------------------------------------------------ update

    def train(self) -> None:
        """Update the policy on the current rollout: SB3's ``PPO.train`` with the EGSW-weighted surrogate.

        Copied from ``stable_baselines3.PPO.train`` (SB3 2.9.2). The change (marked ``# EGSW:``):
        with ``egsw`` set, each sample's clipped surrogate ``min(r A, clip(r) A)`` is multiplied by
        its constant EGSW weight before the mean. Value and entropy losses are untouched. Two lines
        marked ``# GUARD:`` hand the clipped gradient norm to the non-finite-gradient guard.
        """
        # Switch to train mode (this affects batch norm / dropout)
        self.policy.set_training_mode(True)
        # Update optimizer learning rate
        self._update_learning_rate(self.policy.optimizer)
        # Compute current clip range
        clip_range = self.clip_range(self._current_progress_remaining)  # type: ignore[operator]
        # Optional: clip range for the value function
        if self.clip_range_vf is not None:
            clip_range_vf = self.clip_range_vf(self._current_progress_remaining)  # type: ignore[operator]

        entropy_losses = []
        pg_losses, value_losses = [], []
        clip_fractions = []

        continue_training = True
        # train for n_epochs epochs
        for epoch in range(self.n_epochs):
            approx_kl_divs = []
            # Do a complete pass on the rollout buffer
            for rollout_data in self.rollout_buffer.get(self.batch_size):
                actions = rollout_data.actions
                if isinstance(self.action_space, spaces.Discrete):
                    # Convert discrete action from float to long
                    actions = rollout_data.actions.long().flatten()

                values, log_prob, entropy = self.policy.evaluate_actions(rollout_data.observations, actions)
                values = values.flatten()
                # Normalize advantage
                advantages = rollout_data.advantages
                # Normalization does not make sense if mini batchsize == 1, see GH issue #325
                if self.normalize_advantage and len(advantages) > 1:
                    advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)

                # ratio between old and new policy, should be one at the first iteration
                ratio = th.exp(log_prob - rollout_data.old_log_prob)

                # clipped surrogate loss
                policy_loss_1 = advantages * ratio
                policy_loss_2 = advantages * th.clamp(ratio, 1 - clip_range, 1 + clip_range)
                surrogate = th.min(policy_loss_1, policy_loss_2)  # EGSW: named to be weighted
                if self.egsw is not None:  # EGSW: per-sample weight on the clipped surrogate only
                    surrogate = rollout_data.weights * surrogate  # EGSW: weights are constants
                policy_loss = -surrogate.mean()  # EGSW: was -th.min(policy_loss_1, policy_loss_2).mean()

                # Logging
                pg_losses.append(policy_loss.item())
                clip_fraction = th.mean((th.abs(ratio - 1) > clip_range).float()).item()
                clip_fractions.append(clip_fraction)

                if self.clip_range_vf is None:
                    # No clipping
                    values_pred = values
                else:
                    # Clip the difference between old and new value
                    # NOTE: this depends on the reward scaling
                    values_pred = rollout_data.old_values + th.clamp(
                        values - rollout_data.old_values, -clip_range_vf, clip_range_vf
                    )
                # Value loss using the TD(gae_lambda) target
                value_loss = F.mse_loss(rollout_data.returns, values_pred)
                value_losses.append(value_loss.item())

                # Entropy loss favor exploration
                if entropy is None:
                    # Approximate entropy when no analytical form
                    entropy_loss = -th.mean(-log_prob)
                else:
                    entropy_loss = -th.mean(entropy)

                entropy_losses.append(entropy_loss.item())

                loss = policy_loss + self.ent_coef * entropy_loss + self.vf_coef * value_loss

                # Calculate approximate form of reverse KL Divergence for early stopping
                # see issue #417: https://github.com/DLR-RM/stable-baselines3/issues/417
                # and discussion in PR #419: https://github.com/DLR-RM/stable-baselines3/pull/419
                # and Schulman blog: http://joschu.net/blog/kl-approx.html
                with th.no_grad():
                    log_ratio = log_prob - rollout_data.old_log_prob
                    approx_kl_div = th.mean((th.exp(log_ratio) - 1) - log_ratio).cpu().numpy()
                    approx_kl_divs.append(approx_kl_div)

                if self.target_kl is not None and approx_kl_div > 1.5 * self.target_kl:
                    continue_training = False
                    if self.verbose >= 1:
                        print(f"Early stopping at step {epoch} due to reaching max kl: {approx_kl_div:.2f}")
                    break

                # Optimization step
                self.policy.optimizer.zero_grad()
                loss.backward()
                # Clip grad norm
                # GUARD: keep the norm for the guard (SB3 discards it)
                grad_norm = th.nn.utils.clip_grad_norm_(self.policy.parameters(), self.max_grad_norm)
                self._optimizer_guard.norm_checked(grad_norm)  # GUARD: finite norm, no second pass
                self.policy.optimizer.step()

            self._n_updates += 1
            if not continue_training:
                break

        explained_var = explained_variance(
            self.rollout_buffer.values.flatten(), self.rollout_buffer.returns.flatten()
        )

        # Logs
        self.logger.record("train/entropy_loss", np.mean(entropy_losses))
        self.logger.record("train/policy_gradient_loss", np.mean(pg_losses))
        self.logger.record("train/value_loss", np.mean(value_losses))
        self.logger.record("train/approx_kl", np.mean(approx_kl_divs))
        self.logger.record("train/clip_fraction", np.mean(clip_fractions))
        self.logger.record("train/loss", loss.item())
        self.logger.record("train/explained_variance", explained_var)
        if hasattr(self.policy, "log_std"):
            self.logger.record("train/std", th.exp(self.policy.log_std).mean().item())

        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/clip_range", clip_range)
        if self.clip_range_vf is not None:
            self.logger.record("train/clip_range_vf", clip_range_vf)


#: One rule per PPO constructor argument (the shared validators of :mod:`egsw_gym.common.checks`).
PPO_SETTING_CHECKS: dict[str, Any] = {
    "learning_rate": lambda n, v: check_learning_rate(v, n),
    "n_steps": lambda n, v: check_int(n, v, low=1, hint="steps per env per rollout"),
    "batch_size": lambda n, v: check_int(n, v, low=1),
    "n_epochs": lambda n, v: check_int(n, v, low=1, high=MAX_EPOCHS),
    "gamma": check_probability,
    "gae_lambda": check_probability,
    "clip_range": lambda n, v: check_schedule(n, v, low=0, low_open=True),
    "clip_range_vf": lambda n, v: check_schedule(
        n, v, low=0, low_open=True, allow_none=True, hint="None: no value clipping"
    ),
    "ent_coef": lambda n, v: check_number(n, v, low=-MAX_COEF, high=MAX_COEF),
    "vf_coef": lambda n, v: check_number(n, v, low=0, high=MAX_COEF),
    "max_grad_norm": lambda n, v: check_number(n, v, low=0, low_open=True),
    "target_kl": lambda n, v: check_number(
        n, v, low=0, low_open=True, allow_none=True, hint="None: no early stopping"
    ),
    "normalize_advantage": check_bool,
}


def _check_not_a_grpo_policy(policy: Any) -> None:
    """PPO needs an actor-critic policy; a critic-free GRPO policy (``"LMPolicy"``...) gets pointed at GRPO."""
    is_grpo_class = isinstance(policy, type) and issubclass(policy, GRPOPolicy)
    if policy == "LMPolicy" or is_grpo_class:
        name = policy if isinstance(policy, str) else policy.__name__
        raise ValueError(
            f'PPO cannot train policy={name!r}: PPO needs an actor-critic policy ("MlpPolicy", '
            f'"CnnPolicy", "MultiInputPolicy" or an SB3 ActorCriticPolicy). Language models '
            f"train with GRPO, which needs no critic: GRPO({name!r}, env, ...)"
        )


def _check_ppo_settings(**hp: Any) -> None:
    """ValueError naming the argument and what is allowed (SB3 asserts some of these, ignores the rest).

    Each keyword with a rule in :data:`PPO_SETTING_CHECKS` is checked; others are ignored, so the
    same call validates a constructor's arguments and a checkpoint's entries.
    """
    apply_rules(PPO_SETTING_CHECKS, hp)
    if "batch_size" in hp and hp.get("normalize_advantage", True):
        # Advantages are normalised per minibatch: one sample has no spread.
        check_int("batch_size", hp["batch_size"], low=2, hint="advantages are normalised per minibatch")
