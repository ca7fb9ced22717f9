"""EGSW-PPO: Stable-Baselines3's PPO with entropy-guided sample weights on the clipped surrogate.

The subclass changes three things and nothing else (see ``shared/EGSW.md``):

1. The rollout buffer (:class:`EGSWRolloutBuffer`, or :class:`EGSWDictRolloutBuffer` for ``Dict``
   observations) also stores the policy entropy at every rollout step, taken from the same
   distribution the action was sampled from, and one EGSW weight per sample.
2. After GAE, once per rollout, the weights are computed by :meth:`egsw_gym.egsw.EGSW.sample_weights`:

   - ``mode="step"``: the comparison set at rollout step ``t`` is the ``n_envs`` environments
     (``step_ids`` = rollout step, one group);
   - ``mode="trajectory"``: the sets' members are the episode segments of the rollout (split at
     episode starts and at the rollout boundaries), one group for the whole rollout.

3. In :meth:`PPO.train` the weight multiplies each sample's clipped surrogate term only; the value
   loss and the entropy bonus are unchanged. Weights are constants (no gradient).

``egsw=None`` runs exactly SB3's PPO (same seed, bit-identical parameters), and uniform weights
(``alpha=0`` with a huge temperature) match it to float precision. No extra random numbers are drawn.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any, NamedTuple

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3 import PPO as SB3PPO
from stable_baselines3.common.buffers import DictRolloutBuffer, RolloutBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.type_aliases import GymEnv, Schedule, TensorDict
from stable_baselines3.common.utils import explained_variance, obs_as_tensor
from stable_baselines3.common.vec_env import VecEnv, VecNormalize
from torch.nn import functional as F

from egsw_gym.algorithms.egsw_config import EGSWConfigMixin, as_egsw
from egsw_gym.common.finite import check_loss_finite, check_step_finite
from egsw_gym.common.serialization import SafeSerializationMixin
from egsw_gym.egsw import EGSW, egsw_statistics

__all__ = ["PPO", "EGSWRolloutBuffer", "EGSWDictRolloutBuffer", "EGSWRolloutBufferSamples"]


class EGSWRolloutBufferSamples(NamedTuple):
    """A PPO minibatch (SB3's ``RolloutBufferSamples`` fields) plus the EGSW weight of each sample."""

    observations: th.Tensor | TensorDict
    actions: th.Tensor
    old_values: th.Tensor
    old_log_prob: th.Tensor
    advantages: th.Tensor
    returns: th.Tensor
    weights: th.Tensor


class _EGSWBufferMixin:
    """Per-step entropy and EGSW weight storage, shared by the flat and the ``Dict`` rollout buffer.

    Both arrays have SB3's rollout layout ``(n_steps, n_envs)`` until the first :meth:`get`, which
    flattens them together with SB3's own arrays, so minibatch indices line up.
    """

    # Provided by SB3's RolloutBuffer / DictRolloutBuffer.
    buffer_size: int
    n_envs: int
    pos: int
    advantages: np.ndarray
    episode_starts: np.ndarray
    generator_ready: bool

    entropies: np.ndarray
    weights: np.ndarray

    def reset(self) -> None:
        """Clear the buffer; weights start at 1 (plain PPO) until :meth:`compute_egsw_weights`."""
        self.entropies = np.zeros((self.buffer_size, self.n_envs), dtype=np.float32)
        self.weights = np.ones((self.buffer_size, self.n_envs), dtype=np.float32)
        super().reset()  # type: ignore[misc]

    def add(self, *args: Any, entropy: th.Tensor | None = None, **kwargs: Any) -> None:
        """Add one rollout step: SB3's ``add`` arguments, plus the policy entropy per environment.

        Parameters
        ----------
        *args : Any
            Positional arguments of SB3's ``RolloutBuffer.add`` (obs, action, reward, episode_start,
            value, log_prob).
        entropy : torch.Tensor or None
            Policy entropy at this step, one value per environment. ``None`` stores zeros.
        **kwargs : Any
            Keyword arguments of SB3's ``RolloutBuffer.add``.
        """
        if entropy is not None:
            # Stored before super().add(), which advances self.pos.
            self.entropies[self.pos] = entropy.detach().cpu().numpy().reshape(self.n_envs)
        super().add(*args, **kwargs)  # type: ignore[misc]

    def compute_egsw_weights(self, egsw: EGSW) -> th.Tensor:
        """Fill ``self.weights`` from the GAE advantages and stored entropies (call after GAE).

        Parameters
        ----------
        egsw : EGSW
            The weighting configuration; its ``mode`` decides the comparison sets.

        Returns
        -------
        torch.Tensor
            The flat weights, ``n_steps * n_envs`` entries in ``(step, env)`` order.
        """
        n_steps, n_envs = self.buffer_size, self.n_envs
        advantages = th.from_numpy(self.advantages.reshape(-1).copy())
        entropies = th.from_numpy(self.entropies.reshape(-1).copy())
        # Rollout step t of every sample: the step-wise set is the n_envs samples sharing t.
        step_ids = th.arange(n_steps).repeat_interleave(n_envs)
        # Episode segments: a new one at every episode start and at the start of the rollout, per env.
        # Segment k of env e gets id e * n_steps + k (k < n_steps), unique across environments.
        starts = self.episode_starts.astype(bool)
        starts[0] = True
        segment = np.cumsum(starts, axis=0) - 1 + np.arange(n_envs) * n_steps
        trajectory_ids = th.from_numpy(segment.reshape(-1).astype(np.int64))
        group_ids = th.zeros_like(step_ids)  # one group: the whole rollout
        weights = egsw.sample_weights(
            advantages, entropies, trajectory_ids=trajectory_ids, step_ids=step_ids, group_ids=group_ids
        )
        self.weights = weights.to(th.float32).numpy().reshape(n_steps, n_envs)
        return weights

    def get(self, batch_size: int | None = None) -> Generator[EGSWRolloutBufferSamples, None, None]:
        """Yield shuffled minibatches with their weights (same RNG use as SB3: one permutation).

        Parameters
        ----------
        batch_size : int or None
            Minibatch size; ``None`` yields the whole rollout at once.

        Yields
        ------
        EGSWRolloutBufferSamples
            SB3's minibatch fields plus ``weights``.
        """
        if not self.generator_ready:
            # Flatten our arrays exactly when SB3 flattens its own (inside super().get).
            self.entropies = self.swap_and_flatten(self.entropies)  # type: ignore[attr-defined]
            self.weights = self.swap_and_flatten(self.weights)  # type: ignore[attr-defined]
        yield from super().get(batch_size)  # type: ignore[misc]

    def _get_samples(
        self, batch_inds: np.ndarray, env: VecNormalize | None = None
    ) -> EGSWRolloutBufferSamples:
        """SB3's minibatch at ``batch_inds`` with the matching EGSW weights appended."""
        samples = super()._get_samples(batch_inds, env=env)  # type: ignore[misc]
        weights = self.to_torch(self.weights[batch_inds].flatten())  # type: ignore[attr-defined]
        return EGSWRolloutBufferSamples(*samples, weights=weights)


class EGSWRolloutBuffer(_EGSWBufferMixin, RolloutBuffer):
    """SB3's :class:`~stable_baselines3.common.buffers.RolloutBuffer` that also stores per-step entropy and EGSW weights.

    Same constructor arguments as SB3's buffer (``buffer_size``, ``observation_space``,
    ``action_space``, ``device``, ``gae_lambda``, ``gamma``, ``n_envs``).
    """


class EGSWDictRolloutBuffer(_EGSWBufferMixin, DictRolloutBuffer):
    """SB3's :class:`~stable_baselines3.common.buffers.DictRolloutBuffer` (``Dict`` observations) with entropy and EGSW weights.

    Same constructor arguments as SB3's buffer.
    """


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
        ``mode="step"`` needs ``n_envs >= 2`` (the set at a rollout step is the ``n_envs``
        environments). Saved with the model as plain data (``egsw_config``) and rebuilt on
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
    observation or loss raises :class:`~egsw_gym.common.finite.NonFiniteError` naming the env and step.
    Resuming (``load(..., restore_rng=True)`` then ``learn(n, reset_num_timesteps=False)``) restores
    the RNG states, so it is bit-exact when the environment's state is restored too; otherwise it is statistically
    equivalent (see ``docs/RESUME.md``).
    """

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
        _check_ppo_settings(
            n_steps=n_steps,
            batch_size=batch_size,
            n_epochs=n_epochs,
            gamma=gamma,
            gae_lambda=gae_lambda,
            clip_range=clip_range,
            clip_range_vf=clip_range_vf,
            ent_coef=ent_coef,
            vf_coef=vf_coef,
            max_grad_norm=max_grad_norm,
            target_kl=target_kl,
            normalize_advantage=normalize_advantage,
        )
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
        self._check_egsw_env(self.n_envs)

        if self.rollout_buffer_class is None:
            is_dict = isinstance(self.observation_space, spaces.Dict)
            self.rollout_buffer_class = EGSWDictRolloutBuffer if is_dict else EGSWRolloutBuffer
        elif self.egsw is not None and not issubclass(self.rollout_buffer_class, _EGSWBufferMixin):
            raise ValueError(
                f"rollout_buffer_class={self.rollout_buffer_class.__name__} cannot store entropies and EGSW "
                "weights; with egsw set, use None (default) or a subclass of EGSWRolloutBuffer / EGSWDictRolloutBuffer"
            )
        super()._setup_model()

    def _check_egsw_env(self, n_envs: int | None) -> None:
        """Reject a step-wise EGSW with a single environment (every set would have size 1)."""
        if self.egsw is not None and self.egsw.mode == "step" and n_envs == 1:
            raise ValueError(
                "EGSW mode='step' compares the n_envs environments at each rollout step, but n_envs=1: "
                "every set has size 1, so all weights would be 1 (plain PPO). Use EGSW(mode='trajectory') "
                "(episode segments of the rollout compete) or a vectorised env with n_envs >= 2."
            )

    def set_env(self, env: GymEnv, force_reset: bool = True) -> None:
        """Set the training environment (SB3 behaviour; also re-checks the EGSW mode against ``n_envs``).

        Parameters
        ----------
        env : GymEnv
            The new environment (same spaces and number of environments as the model's).
        force_reset : bool
            Reset the environment before the next ``learn`` call.
        """
        super().set_env(env, force_reset=force_reset)
        self._check_egsw_env(self.n_envs)

    # ------------------------------------------------------------------ rollout

    def _policy_step(
        self, obs_tensor: th.Tensor | TensorDict
    ) -> tuple[th.Tensor, th.Tensor, th.Tensor, th.Tensor | None]:
        """Actions, values, log-probs (as ``policy(obs)``) and the entropy of the same distribution.

        For SB3's ``ActorCriticPolicy.forward`` (all built-in policies) this replays its exact
        operations and keeps the distribution, so the actions, values and random draws are the same
        as SB3's and the entropy costs no second forward pass. A policy with its own ``forward`` is
        called as is, then asked for its distribution (a second pass, only when EGSW is on).
        """
        policy = self.policy
        if type(policy).forward is not ActorCriticPolicy.forward:
            actions, values, log_probs = policy(obs_tensor)
            entropy = policy.get_distribution(obs_tensor).entropy() if self.egsw is not None else None
            return actions, values, log_probs, entropy
        # Mirror of ActorCriticPolicy.forward(obs, deterministic=False) (SB3 2.x).
        features = policy.extract_features(obs_tensor)
        if policy.share_features_extractor:
            latent_pi, latent_vf = policy.mlp_extractor(features)
        else:
            pi_features, vf_features = features
            latent_pi = policy.mlp_extractor.forward_actor(pi_features)
            latent_vf = policy.mlp_extractor.forward_critic(vf_features)
        values = policy.value_net(latent_vf)
        distribution = policy._get_action_dist_from_latent(latent_pi)
        actions = distribution.get_actions(deterministic=False)
        log_probs = distribution.log_prob(actions)
        actions = actions.reshape((-1, *self.action_space.shape))  # type: ignore[misc]
        entropy = distribution.entropy() if self.egsw is not None else None
        if entropy is None and self.egsw is not None:
            # No closed form (squashed gSDE): one-sample estimate H ~ -log pi(a|s).
            entropy = -log_probs
        return actions, values, log_probs, entropy

    def collect_rollouts(
        self,
        env: VecEnv,
        callback: BaseCallback,
        rollout_buffer: RolloutBuffer,
        n_rollout_steps: int,
    ) -> bool:
        """Collect a rollout (SB3's loop), store per-step entropies, then compute the EGSW weights.

        Copied from ``OnPolicyAlgorithm.collect_rollouts`` (SB3 2.x). Differences: the policy step
        also returns the entropy (:meth:`_policy_step`), ``rollout_buffer.add`` receives it, and after
        GAE the weights are computed once for the whole rollout and logged.

        Parameters
        ----------
        env : VecEnv
            The training environment.
        callback : BaseCallback
            Callback called at every step (and at the rollout start and end).
        rollout_buffer : RolloutBuffer
            Buffer to fill.
        n_rollout_steps : int
            Steps per environment to collect.

        Returns
        -------
        bool
            ``True`` if ``n_rollout_steps`` were collected, ``False`` if a callback stopped training.
        """
        assert self._last_obs is not None, "No previous observation was provided"
        egsw_buffer = isinstance(rollout_buffer, _EGSWBufferMixin)
        if self.egsw is not None:
            # model.egsw may have been set after construction (e.g. on a model loaded from a plain SB3 zip).
            self.egsw = as_egsw(self.egsw)
            self._check_egsw_env(env.num_envs)
            if not egsw_buffer:
                raise ValueError(
                    f"egsw is set but the rollout buffer ({type(rollout_buffer).__name__}) cannot store entropies "
                    "and weights; rebuild the model with rollout_buffer_class=None (EGSWRolloutBuffer)"
                )
        # Switch to eval mode (this affects batch norm / dropout)
        self.policy.set_training_mode(False)

        n_steps = 0
        rollout_buffer.reset()
        # Sample new weights for the state dependent exploration
        if self.use_sde:
            self.policy.reset_noise(env.num_envs)

        callback.on_rollout_start()
        check_step_finite("PPO", None, self._last_obs, "at the start of a rollout (the reset observation)")

        while n_steps < n_rollout_steps:
            if self.use_sde and self.sde_sample_freq > 0 and n_steps % self.sde_sample_freq == 0:
                # Sample a new noise matrix
                self.policy.reset_noise(env.num_envs)

            with th.no_grad():
                obs_tensor = obs_as_tensor(self._last_obs, self.device)  # type: ignore[arg-type]
                actions, values, log_probs, entropy = self._policy_step(obs_tensor)
            actions = actions.cpu().numpy()

            # Rescale and perform action
            clipped_actions = actions
            if isinstance(self.action_space, spaces.Box):
                if self.policy.squash_output:
                    # Unscale the actions to match env bounds if they were squashed (scaled in [-1, 1])
                    clipped_actions = self.policy.unscale_action(clipped_actions)
                else:
                    # Clip the actions to avoid out of bound error (unbounded Gaussian)
                    clipped_actions = np.clip(actions, self.action_space.low, self.action_space.high)

            new_obs, rewards, dones, infos = env.step(clipped_actions)
            check_step_finite(
                "PPO",
                rewards,
                new_obs,
                lambda t=n_steps: f"at rollout step {t} (num_timesteps={self.num_timesteps})",
            )

            self.num_timesteps += env.num_envs

            # Give access to local variables
            callback.update_locals(locals())
            if not callback.on_step():
                return False

            self._update_info_buffer(infos, dones)
            n_steps += 1

            if isinstance(self.action_space, spaces.Discrete):
                # Reshape in case of discrete action
                actions = actions.reshape(-1, 1)

            # Handle timeout by bootstrapping with value function (SB3 issue #633)
            for idx, done in enumerate(dones):
                if (
                    done
                    and infos[idx].get("terminal_observation") is not None
                    and infos[idx].get("TimeLimit.truncated", False)
                ):
                    terminal_obs = self.policy.obs_to_tensor(infos[idx]["terminal_observation"])[0]
                    with th.no_grad():
                        terminal_value = self.policy.predict_values(terminal_obs)[0]  # type: ignore[arg-type]
                    rewards[idx] += self.gamma * terminal_value

            add_args = (self._last_obs, actions, rewards, self._last_episode_starts, values, log_probs)
            if egsw_buffer:
                rollout_buffer.add(*add_args, entropy=entropy)  # type: ignore[arg-type]
            else:
                rollout_buffer.add(*add_args)  # type: ignore[arg-type]
            self._last_obs = new_obs  # type: ignore[assignment]
            self._last_episode_starts = dones

        with th.no_grad():
            # Compute value for the last timestep
            values = self.policy.predict_values(obs_as_tensor(new_obs, self.device))  # type: ignore[arg-type]

        rollout_buffer.compute_returns_and_advantage(last_values=values, dones=dones)

        if self.egsw is not None:
            # Once per rollout, after GAE: the weights need the final advantages.
            weights = rollout_buffer.compute_egsw_weights(self.egsw)  # type: ignore[attr-defined]
            stats = egsw_statistics(weights, rollout_buffer.entropies)  # type: ignore[attr-defined]
            for key, value in stats.items():
                self.logger.record(key, value)

        callback.update_locals(locals())

        callback.on_rollout_end()

        return True

    # ------------------------------------------------------------------ update

    def train(self) -> None:
        """Update the policy on the current rollout: SB3's PPO update with EGSW-weighted surrogate.

        Copied from ``stable_baselines3.PPO.train`` (SB3 2.x); the only change is that, with
        ``egsw`` set, each sample's clipped surrogate ``min(r A, clip(r) A)`` is multiplied by its
        (constant) EGSW weight before the mean. Value and entropy losses are untouched.
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
                surrogate = th.min(policy_loss_1, policy_loss_2)
                if self.egsw is not None:
                    # EGSW: per-sample weight on the clipped surrogate only (weights carry no gradient).
                    surrogate = rollout_data.weights.detach() * surrogate
                policy_loss = -surrogate.mean()

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
                # see SB3 issue #417, PR #419 and http://joschu.net/blog/kl-approx.html
                with th.no_grad():
                    log_ratio = log_prob - rollout_data.old_log_prob
                    approx_kl_div = th.mean((th.exp(log_ratio) - 1) - log_ratio).cpu().numpy()
                    approx_kl_divs.append(approx_kl_div)

                if self.target_kl is not None and approx_kl_div > 1.5 * self.target_kl:
                    continue_training = False
                    if self.verbose >= 1:
                        print(f"Early stopping at step {epoch} due to reaching max kl: {approx_kl_div:.2f}")
                    break

                # The three terms were read as floats above: checking them costs no extra sync.
                check_loss_finite(
                    "PPO",
                    {
                        "policy loss": pg_losses[-1],
                        "value loss": value_losses[-1],
                        "entropy loss": entropy_losses[-1],
                    },
                    f"in epoch {epoch} of the update at num_timesteps={self.num_timesteps}",
                )

                # Optimization step
                self.policy.optimizer.zero_grad()
                loss.backward()
                # Clip grad norm
                grad_norm = th.nn.utils.clip_grad_norm_(self.policy.parameters(), self.max_grad_norm)
                check_loss_finite(
                    "PPO",
                    {"gradient norm": float(grad_norm)},
                    f"in epoch {epoch} of the update at num_timesteps={self.num_timesteps}",
                )
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


def _check_ppo_settings(**hp: Any) -> None:
    """ValueError naming the argument and what is allowed (SB3 asserts some of these, ignores the rest)."""

    def is_int(x: Any) -> bool:
        return isinstance(x, (int, np.integer)) and not isinstance(x, bool)

    def is_num(x: Any) -> bool:
        return (
            isinstance(x, (int, float, np.floating, np.integer))
            and not isinstance(x, bool)
            and np.isfinite(x)
        )

    if not is_int(hp["n_steps"]) or hp["n_steps"] < 1:
        raise ValueError(
            f"n_steps must be an integer >= 1 (steps per env per rollout), got {hp['n_steps']!r}"
        )
    min_batch = 2 if hp["normalize_advantage"] else 1
    if not is_int(hp["batch_size"]) or hp["batch_size"] < min_batch:
        raise ValueError(
            f"batch_size must be an integer >= {min_batch}"
            + (" (advantages are normalised per minibatch)" if min_batch == 2 else "")
            + f", got {hp['batch_size']!r}"
        )
    if not is_int(hp["n_epochs"]) or hp["n_epochs"] < 1:
        raise ValueError(f"n_epochs must be an integer >= 1, got {hp['n_epochs']!r}")
    for name in ("gamma", "gae_lambda"):
        if not (is_num(hp[name]) and 0 <= hp[name] <= 1):
            raise ValueError(f"{name} must be a number in [0, 1], got {hp[name]!r}")
    if not callable(hp["clip_range"]) and not (is_num(hp["clip_range"]) and hp["clip_range"] > 0):
        raise ValueError(
            f"clip_range must be a number > 0 or a schedule (callable), got {hp['clip_range']!r}"
        )
    vf = hp["clip_range_vf"]
    if vf is not None and not callable(vf) and not (is_num(vf) and vf > 0):
        raise ValueError(
            f"clip_range_vf must be None (no value clipping), a number > 0 or a schedule, got {vf!r}"
        )
    if not is_num(hp["ent_coef"]):
        raise ValueError(f"ent_coef must be a finite number, got {hp['ent_coef']!r}")
    if not (is_num(hp["vf_coef"]) and hp["vf_coef"] >= 0):
        raise ValueError(f"vf_coef must be a number >= 0, got {hp['vf_coef']!r}")
    if not (is_num(hp["max_grad_norm"]) and hp["max_grad_norm"] > 0):
        raise ValueError(f"max_grad_norm must be a number > 0, got {hp['max_grad_norm']!r}")
    if hp["target_kl"] is not None and not (is_num(hp["target_kl"]) and hp["target_kl"] > 0):
        raise ValueError(
            f"target_kl must be None (no early stopping) or a number > 0, got {hp['target_kl']!r}"
        )
