"""Rollout buffers of EGSW-PPO: SB3's buffers plus per-step policy entropy and one EGSW weight per sample.

Both buffers are SB3's (:class:`~stable_baselines3.common.buffers.RolloutBuffer` and
:class:`~stable_baselines3.common.buffers.DictRolloutBuffer`) with the same constructor and the
same ``add``; nothing changes while the rollout is collected. When PPO has set the buffer's
``egsw`` and ``entropy_policy`` (before each rollout), ``compute_returns_and_advantage`` runs
SB3's GAE and then :meth:`_EGSWBufferMixin.compute_entropies` (the policy's entropy at every
stored observation, in batched no-grad passes) and :meth:`_EGSWBufferMixin.compute_egsw_weights`
(advantages and entropies into weights), so the weights are ready when SB3's ``collect_rollouts``
calls the callbacks' ``on_rollout_end``. :meth:`get` yields SB3's minibatches with the weights
appended.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any, NamedTuple

import numpy as np
import torch as th
from stable_baselines3.common.buffers import DictRolloutBuffer, RolloutBuffer
from stable_baselines3.common.type_aliases import TensorDict
from stable_baselines3.common.vec_env import VecNormalize

from egsw_gym.egsw import EGSW

__all__ = ["EGSWRolloutBuffer", "EGSWDictRolloutBuffer", "EGSWRolloutBufferSamples"]


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
    advantages: np.ndarray
    episode_starts: np.ndarray
    log_probs: np.ndarray
    observations: np.ndarray | dict[str, np.ndarray]
    generator_ready: bool

    entropies: np.ndarray
    weights: np.ndarray
    #: Set by PPO before each rollout; ``None`` keeps every weight at 1 (plain PPO).
    egsw: EGSW | None = None
    #: The policy collecting the rollout, whose entropies the weights use (set with ``egsw``).
    entropy_policy: Any = None

    def compute_returns_and_advantage(self, last_values: th.Tensor, dones: np.ndarray) -> None:
        """SB3's GAE; then, with ``egsw`` set, the rollout's entropies and EGSW weights.

        Parameters
        ----------
        last_values : torch.Tensor
            Value estimate of the observation after the last step, per environment.
        dones : numpy.ndarray
            Whether the last step ended an episode, per environment.
        """
        super().compute_returns_and_advantage(last_values, dones)  # type: ignore[misc]
        if self.egsw is not None:
            self.compute_entropies(self.entropy_policy)
            self.compute_egsw_weights(self.egsw)

    def reset(self) -> None:
        """Clear the buffer; weights start at 1 (plain PPO) until :meth:`compute_egsw_weights`."""
        self.entropies = np.zeros((self.buffer_size, self.n_envs), dtype=np.float32)
        self.weights = np.ones((self.buffer_size, self.n_envs), dtype=np.float32)
        super().reset()  # type: ignore[misc]

    @th.no_grad()
    def compute_entropies(self, policy: Any, chunk_size: int = 4096) -> np.ndarray:
        """Fill ``self.entropies`` with the policy's entropy at every stored observation (call after the rollout).

        The rollout policy has not changed since the actions were sampled (same parameters, still
        in eval mode), so this is the entropy of the distribution each action was drawn from, up to
        float rounding of the batched pass. No random numbers are drawn. Distributions without a
        closed-form entropy (gSDE with ``squash_output=True``) use the one-sample estimate
        ``H ~ -log pi(a|s)`` from the stored log-probabilities.

        Parameters
        ----------
        policy : ActorCriticPolicy
            The policy that collected the rollout (``get_distribution(obs)`` is called on it).
        chunk_size : int
            Observations per forward pass (bounds the memory of the pass for image observations).

        Returns
        -------
        numpy.ndarray
            ``(n_steps, n_envs)`` entropies, also stored in ``self.entropies``.
        """
        if self.generator_ready:
            raise RuntimeError("compute_entropies must run before get() flattens the buffer")
        n = self.buffer_size * self.n_envs
        obs = self.observations
        flat = (
            {k: v.reshape(n, *v.shape[2:]) for k, v in obs.items()}
            if isinstance(obs, dict)
            else obs.reshape(n, *obs.shape[2:])
        )
        out = np.empty(n, dtype=np.float32)
        for start in range(0, n, chunk_size):
            sl = slice(start, start + chunk_size)
            chunk = (
                {k: self.to_torch(v[sl]) for k, v in flat.items()}
                if isinstance(flat, dict)
                else self.to_torch(flat[sl])
            )  # type: ignore[attr-defined]
            entropy = policy.get_distribution(chunk).entropy()
            if entropy is None:  # no closed form: one-sample estimate from the rollout's log-probs
                out[sl] = -self.log_probs.reshape(n)[sl]
            else:
                out[sl] = entropy.reshape(-1).float().cpu().numpy()
        self.entropies = out.reshape(self.buffer_size, self.n_envs)
        return self.entropies

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
