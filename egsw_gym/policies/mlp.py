"""``"MlpPolicy"``, ``"CnnPolicy"`` and ``"MultiInputPolicy"`` for GRPO: critic-free actors from SB3 blocks.

GRPO replaces the value function with group statistics, so these are SB3's ``ActorCriticPolicy``,
``ActorCriticCnnPolicy`` and ``MultiInputActorCriticPolicy`` without the critic:
``features extractor -> create_mlp -> make_proba_distribution``, with SB3's ``FlattenExtractor``,
``NatureCNN`` (image observations) and ``CombinedExtractor`` (``Dict`` observations) respectively.
Categorical for ``Discrete`` (and SB3's other discrete spaces), diagonal Gaussian with a
state-independent ``log_std`` for ``Box``.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.distributions import (
    DiagGaussianDistribution,
    Distribution,
    make_proba_distribution,
)
from stable_baselines3.common.torch_layers import (
    BaseFeaturesExtractor,
    CombinedExtractor,
    FlattenExtractor,
    NatureCNN,
    create_mlp,
)
from stable_baselines3.common.type_aliases import PyTorchObs, Schedule
from torch import nn

from egsw_gym.policies.base import GRPOPolicy

__all__ = ["CnnPolicy", "MlpPolicy", "MultiInputPolicy"]


class MlpPolicy(GRPOPolicy):
    """Critic-free MLP actor for :class:`egsw_gym.GRPO`.

    Parameters
    ----------
    observation_space : gymnasium.spaces.Space
        Observation space.
    action_space : gymnasium.spaces.Space
        ``Discrete``, ``MultiDiscrete``, ``MultiBinary`` or ``Box``.
    lr_schedule : Callable[[float], float]
        Learning-rate schedule; its value at progress 1 is the optimizer's initial learning rate.
    net_arch : list of int or None
        Hidden layer sizes; default ``[64, 64]`` (SB3's PPO default for the actor).
    activation_fn : type of nn.Module
        Activation between hidden layers; default ``nn.Tanh``.
    ortho_init : bool
        Orthogonal initialisation as in SB3/PPO (gain sqrt(2) hidden, 0.01 on the action head,
        which starts the policy near uniform / near zero mean).
    log_std_init : float
        Initial log-std of the Gaussian for ``Box`` actions.
    features_extractor_class : type of BaseFeaturesExtractor or None
        ``None`` uses the class's :attr:`default_features_extractor_class`: ``FlattenExtractor`` here,
        ``NatureCNN`` for :class:`CnnPolicy`, ``CombinedExtractor`` for :class:`MultiInputPolicy`.
    features_extractor_kwargs : dict or None
        Keyword arguments of the extractor.
    normalize_images : bool
        Divide image observations by 255 (SB3 preprocessing).
    optimizer_class : type of torch.optim.Optimizer
        Defaults to Adam.
    optimizer_kwargs : dict or None
        Extra optimizer keyword arguments; Adam gets ``eps=1e-5`` by default as in SB3's PPO.
    """

    uses_step_observations = True
    #: The features extractor used when ``features_extractor_class`` is not given.
    default_features_extractor_class: type[BaseFeaturesExtractor] = FlattenExtractor

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        lr_schedule: Schedule,
        net_arch: list[int] | None = None,
        activation_fn: type[nn.Module] = nn.Tanh,
        ortho_init: bool = True,
        log_std_init: float = 0.0,
        features_extractor_class: type[BaseFeaturesExtractor] | None = None,
        features_extractor_kwargs: dict[str, Any] | None = None,
        normalize_images: bool = True,
        optimizer_class: type[torch.optim.Optimizer] = torch.optim.Adam,
        optimizer_kwargs: dict[str, Any] | None = None,
    ) -> None:
        if features_extractor_class is None:
            features_extractor_class = self.default_features_extractor_class
        if optimizer_kwargs is None:
            optimizer_kwargs = {"eps": 1e-5} if optimizer_class == torch.optim.Adam else {}
        super().__init__(
            observation_space,
            action_space,
            features_extractor_class,
            features_extractor_kwargs,
            normalize_images=normalize_images,
            optimizer_class=optimizer_class,
            optimizer_kwargs=optimizer_kwargs,
        )
        self.net_arch = [64, 64] if net_arch is None else list(net_arch)
        self.activation_fn = activation_fn
        self.ortho_init = ortho_init
        self.log_std_init = log_std_init

        self.features_extractor = self.make_features_extractor()
        self.features_dim = self.features_extractor.features_dim
        # create_mlp with output_dim=-1 builds the hidden layers only; the distribution adds the head.
        self.latent_net = nn.Sequential(*create_mlp(self.features_dim, -1, self.net_arch, activation_fn))
        latent_dim = self.net_arch[-1] if self.net_arch else self.features_dim
        self.action_dist = make_proba_distribution(action_space)
        if isinstance(self.action_dist, DiagGaussianDistribution):
            self.action_net, self.log_std = self.action_dist.proba_distribution_net(latent_dim, log_std_init)
        else:
            self.action_net = self.action_dist.proba_distribution_net(latent_dim)

        if ortho_init:
            for module, gain in (
                (self.features_extractor, np.sqrt(2)),
                (self.latent_net, np.sqrt(2)),
                (self.action_net, 0.01),
            ):
                module.apply(partial(self.init_weights, gain=gain))

        self.optimizer = self.optimizer_class(self.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(
            net_arch=self.net_arch,
            activation_fn=self.activation_fn,
            ortho_init=self.ortho_init,
            log_std_init=self.log_std_init,
            features_extractor_class=self.features_extractor_class,
            features_extractor_kwargs=self.features_extractor_kwargs,
            lr_schedule=self._dummy_schedule,
            optimizer_class=self.optimizer_class,
            optimizer_kwargs=self.optimizer_kwargs,
        )
        return data

    def distribution(self, obs: PyTorchObs) -> Distribution:
        """The action distribution at a batch of (raw, un-preprocessed) observations."""
        latent = self.latent_net(self.extract_features(obs, self.features_extractor))
        mean_or_logits = self.action_net(latent)
        if isinstance(self.action_dist, DiagGaussianDistribution):
            return self.action_dist.proba_distribution(mean_or_logits, self.log_std)
        return self.action_dist.proba_distribution(action_logits=mean_or_logits)

    def act(
        self, obs: PyTorchObs, state: Any | None, deterministic: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, None]:
        """Sample (or pick the mode of) an action per environment; ``state`` is unused."""
        dist = self.distribution(obs)
        actions = dist.get_actions(deterministic=deterministic)
        return actions, dist.log_prob(actions), dist.entropy(), None

    def evaluate_sequences(
        self,
        first_obs: PyTorchObs,
        step_obs: PyTorchObs | None,
        actions: torch.Tensor,
        mask: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Evaluate every valid step independently (a Markov policy needs no sequence context).

        Only the ``mask``-ed positions go through the network, so padding costs nothing; the
        outputs are scattered back into zero ``(B, T)`` tensors.
        """
        if step_obs is None:
            raise ValueError("MlpPolicy.evaluate_sequences needs step_obs (uses_step_observations is True)")
        flat_obs = {k: v[mask] for k, v in step_obs.items()} if isinstance(step_obs, dict) else step_obs[mask]
        dist = self.distribution(flat_obs)
        flat_actions = actions[mask]
        log_probs = torch.zeros(mask.shape, dtype=torch.float32, device=mask.device)
        entropies = torch.zeros(mask.shape, dtype=torch.float32, device=mask.device)
        log_probs = log_probs.masked_scatter(mask, dist.log_prob(flat_actions).float())
        entropies = entropies.masked_scatter(mask, dist.entropy().float())
        return log_probs, entropies


class CnnPolicy(MlpPolicy):
    """:class:`MlpPolicy` on image observations: SB3's ``NatureCNN`` features extractor by default.

    Same parameters as :class:`MlpPolicy`; images are channel-first or channel-last ``uint8`` boxes
    (SB3's ``is_image_space``), divided by 255 when ``normalize_images``. ``GRPO("CnnPolicy", env)``.
    """

    default_features_extractor_class = NatureCNN


class MultiInputPolicy(MlpPolicy):
    """:class:`MlpPolicy` on ``Dict`` observations: SB3's ``CombinedExtractor`` by default.

    Same parameters as :class:`MlpPolicy`; image entries go through a ``NatureCNN``, the others are
    flattened, and the features are concatenated. ``GRPO("MultiInputPolicy", env)``.
    """

    default_features_extractor_class = CombinedExtractor
