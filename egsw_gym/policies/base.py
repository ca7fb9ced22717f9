"""The interface GRPO needs from a policy: :class:`GRPOPolicy`.

GRPO never looks inside a policy. It calls

- :meth:`GRPOPolicy.act` once per vectorised environment step while collecting a round of episodes
  (under ``torch.no_grad()``), threading an opaque ``state`` through the round; and
- :meth:`GRPOPolicy.evaluate_sequences` on padded ``(B, T)`` batches of whole sequences while
  optimising (with gradients).

That is what lets one ``GRPO`` class train an MLP on CartPole (``state`` unused, every step's
observation stored) and a causal language model on a text environment (``state`` = KV cache, only
the first observation, the prompt, stored; the completion is the action sequence).
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

import torch
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import PyTorchObs

__all__ = ["GRPOPolicy"]


class GRPOPolicy(BasePolicy):
    """Abstract critic-free policy for :class:`egsw_gym.GRPO` (an SB3 ``BasePolicy``).

    Subclasses build their networks and ``self.optimizer`` in ``__init__`` (GRPO steps
    ``policy.optimizer``), set :attr:`uses_step_observations`, and implement :meth:`act` and
    :meth:`evaluate_sequences`. SB3's ``predict`` works through :meth:`_predict`, which calls
    :meth:`act` with a fresh state (override it for stateful policies that need more).

    Observations reach both methods as SB3's ``obs_as_tensor`` makes them: a tensor, or a dict of
    tensors for ``Dict`` spaces, un-preprocessed (the policy does its own preprocessing).
    """

    uses_step_observations: bool = True
    """Whether :meth:`evaluate_sequences` reads ``step_obs``. When ``False`` GRPO stores only the
    first observation of each episode (e.g. a language model re-reads its own actions)."""

    @abstractmethod
    def act(
        self, obs: PyTorchObs, state: Any | None, deterministic: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, Any | None]:
        """Choose actions for one vectorised step.

        Parameters
        ----------
        obs : torch.Tensor or dict of torch.Tensor
            Batch of current observations, leading dimension ``n_envs``.
        state : Any or None
            ``None`` on the first step of a round, afterwards whatever the previous call returned
            (a KV cache, an RNN state, ...). Environments that finished their episode keep
            stepping (SB3 auto-resets them); the policy may act arbitrarily for them, as that data
            is masked out.
        deterministic : bool
            Greedy / mean action instead of a sample.

        Returns
        -------
        actions : torch.Tensor
            ``(n_envs, *action_shape)``, what is stored and later passed to
            :meth:`evaluate_sequences` (before any clipping to the action space).
        log_probs : torch.Tensor
            ``(n_envs,)`` log-probability of ``actions``.
        entropies : torch.Tensor
            ``(n_envs,)`` entropy of the action distribution (differential for continuous actions).
        new_state : Any or None
            State for the next call.
        """

    @abstractmethod
    def evaluate_sequences(
        self,
        first_obs: PyTorchObs,
        step_obs: PyTorchObs | None,
        actions: torch.Tensor,
        mask: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-probs and entropies of whole stored sequences, with gradients.

        Parameters
        ----------
        first_obs : torch.Tensor or dict of torch.Tensor
            ``(B, *obs_shape)`` the observation at the start of each sequence.
        step_obs : torch.Tensor or dict of torch.Tensor or None
            ``(B, T, *obs_shape)`` the observation before every step, or ``None`` when
            :attr:`uses_step_observations` is ``False``.
        actions : torch.Tensor
            ``(B, T, *action_shape)`` the actions :meth:`act` returned, zero-padded.
        mask : torch.Tensor
            ``(B, T)`` bool, ``True`` on real steps; padded positions may hold anything in the
            outputs (GRPO masks them).

        Returns
        -------
        log_probs : torch.Tensor
            ``(B, T)``.
        entropies : torch.Tensor
            ``(B, T)``.
        """

    def _predict(self, observation: PyTorchObs, deterministic: bool = False) -> torch.Tensor:
        """SB3 ``predict`` hook: one stateless :meth:`act` call."""
        return self.act(observation, None, deterministic)[0]

    def forward(self, obs: PyTorchObs, deterministic: bool = False) -> torch.Tensor:  # noqa: D401
        """Actions for ``obs`` (``nn.Module`` entry point), same as :meth:`_predict`."""
        return self._predict(obs, deterministic)
