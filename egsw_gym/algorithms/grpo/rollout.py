"""GRPO's rollout side: :class:`GroupBatch` and the collection of groups (plain and dynamic sampling).

A *group* is ``group_size`` episodes that start from the same reset seed. One update collects
``n_groups`` groups (``n_groups / world_size`` on each rank under torchrun). Their episodes are laid
out in a row, group after group, and played in *rounds* of ``n_envs`` episodes, one per environment
of the ``VecEnv``::

    episode e = g * group_size + j   (member j of group g)   reset seed = seed of group g
    round r   = episodes [r * n_envs, (r + 1) * n_envs)

With ``n_envs`` a multiple of ``group_size`` a round holds ``n_envs // group_size`` whole groups; with
fewer (or unaligned) environments a group spans several rounds, each of its members still reset with
the group's seed. Either way, for an environment that is deterministic given its reset seed, the
collected groups do not depend on ``n_envs``, only the order in which the policy samples actions does.

Every environment steps until its first episode ends; later steps (SB3 auto-resets the env) are
masked out. Rounds are padded to the longest one and concatenated (:meth:`GroupBatch.concat`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.type_aliases import PyTorchObs
from stable_baselines3.common.utils import obs_as_tensor
from stable_baselines3.common.vec_env import VecEnv

from egsw_gym.algorithms.grpo.advantages import discounted_returns, group_normalize
from egsw_gym.common import distributed as dist_utils
from egsw_gym.common.finite import check_step_finite
from egsw_gym.envs.vector import hold_finished_episodes

__all__ = ["GroupBatch", "GroupRolloutMixin", "RoundPlan"]


def _index_obs(obs: PyTorchObs | None, idx: Any) -> PyTorchObs | None:
    """``obs[idx]`` for a tensor or a dict of tensors."""
    if obs is None:
        return None
    if isinstance(obs, dict):
        return {k: v[idx] for k, v in obs.items()}
    return obs[idx]


def _stack_steps(steps: list[Any]) -> Any:
    """Per-step ``(n_envs, ...)`` tensors (or dicts of them) -> one ``(n_envs, T, ...)`` tensor (or dict)."""
    if isinstance(steps[0], dict):
        return {k: torch.stack([s[k] for s in steps], dim=1) for k in steps[0]}
    return torch.stack(steps, dim=1)


def _pad_cat(chunks: list[Any], length: int) -> Any:
    """Concatenate ``(n, T_r, ...)`` chunks along dim 0 after zero-padding dim 1 to ``length``."""
    if isinstance(chunks[0], dict):
        return {k: _pad_cat([c[k] for c in chunks], length) for k in chunks[0]}
    padded = []
    for c in chunks:
        if c.shape[1] < length:
            pad = c.new_zeros((c.shape[0], length - c.shape[1], *c.shape[2:]))
            c = torch.cat([c, pad], dim=1)
        padded.append(c)
    return torch.cat(padded, dim=0)


def _cat_rows(chunks: list[Any]) -> Any:
    """Concatenate tensors (or dicts of tensors) along dim 0."""
    if isinstance(chunks[0], dict):
        return {k: torch.cat([c[k] for c in chunks]) for k in chunks[0]}
    return torch.cat(chunks)


def _clone_obs(obs: PyTorchObs) -> PyTorchObs:
    # obs_as_tensor shares memory with the VecEnv's numpy buffers on CPU; copy before storing.
    if isinstance(obs, dict):
        return {k: v.clone() for k, v in obs.items()}
    return obs.clone()


def _obs_equal(a: Any, b: Any) -> bool:
    if isinstance(a, dict):
        return all(np.array_equal(np.asarray(a[k]), np.asarray(b[k])) for k in a)
    return bool(np.array_equal(np.asarray(a), np.asarray(b)))


#: Fields of :class:`GroupBatch` indexed ``(B, T, ...)`` (padded along steps); the others are ``(B, ...)``.
_STEP_FIELDS = ("step_obs", "actions", "old_log_probs", "entropies", "rewards", "mask")


@dataclass
class GroupBatch:
    """One update's worth of sequences, padded to ``(B, T)``; ``B = n_groups * group_size``.

    ``first_obs`` and ``step_obs`` are tensors or dicts of tensors (``Dict`` observation spaces).
    Rows of a group are adjacent, ``group_ids`` numbers them.
    """

    first_obs: PyTorchObs
    step_obs: PyTorchObs | None
    actions: torch.Tensor
    old_log_probs: torch.Tensor
    entropies: torch.Tensor
    rewards: torch.Tensor
    mask: torch.Tensor
    group_ids: torch.Tensor

    @classmethod
    def concat(cls, batches: Sequence[GroupBatch]) -> GroupBatch:
        """Rows of every batch in order, steps zero-padded to the longest batch's ``T``.

        ``group_ids`` are concatenated as they are (give the parts distinct ids).
        """
        length = max(b.mask.shape[1] for b in batches)
        parts: dict[str, Any] = {}
        for f in fields(cls):
            chunks = [getattr(b, f.name) for b in batches]
            if chunks[0] is None:
                parts[f.name] = None
            elif f.name in _STEP_FIELDS:
                parts[f.name] = _pad_cat(chunks, length)
            else:
                parts[f.name] = _cat_rows(chunks)
        return cls(**parts)

    def select(self, rows: torch.Tensor | slice, length: int | None = None) -> GroupBatch:
        """The given rows, and only the first ``length`` steps (``None``: all ``T``)."""
        steps = slice(None) if length is None else slice(0, length)
        parts = {
            f.name: _index_obs(getattr(self, f.name), (rows, steps) if f.name in _STEP_FIELDS else rows)
            for f in fields(self)
        }
        return GroupBatch(**parts)

    def last_step(self) -> int:
        """``1 +`` the last step index that is valid in any row (the length ``select`` may trim to)."""
        return int(self.mask.any(dim=0).nonzero().max()) + 1


@dataclass(frozen=True)
class RoundPlan:
    """How one update's episodes map to rounds of ``n_envs`` environments.

    Parameters
    ----------
    n_envs : int
        Environments of the ``VecEnv``.
    group_size : int
        Episodes per group.
    """

    n_envs: int
    group_size: int

    @property
    def groups_per_block(self) -> int:
        """The fewest groups whose episodes fill whole rounds: ``lcm(n_envs, group_size) / group_size``."""
        return math.lcm(self.n_envs, self.group_size) // self.group_size

    @property
    def rounds_per_block(self) -> int:
        """Rounds that :attr:`groups_per_block` groups take."""
        return math.lcm(self.n_envs, self.group_size) // self.n_envs

    @property
    def aligned(self) -> bool:
        """Whether every round holds whole groups (``n_envs`` a multiple of ``group_size``)."""
        return self.n_envs % self.group_size == 0

    def rounds(self, group_seeds: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """``(episode reset seeds, episode group index)`` of each round, for groups with these seeds.

        ``len(group_seeds)`` must be a multiple of :attr:`groups_per_block`.
        """
        seeds = np.repeat(np.asarray(group_seeds, dtype=np.int64), self.group_size)
        groups = np.repeat(np.arange(len(group_seeds)), self.group_size)
        return [
            (seeds[i : i + self.n_envs], groups[i : i + self.n_envs])
            for i in range(0, len(seeds), self.n_envs)
        ]

    def sampling_key(self, episode_seeds: np.ndarray, first_episode: int) -> np.ndarray:
        """The key :func:`~egsw_gym.common.distributed.round_sampling_rng` seeds a round's sampling from.

        Aligned rounds: the round's group seeds (a round is whole groups). Otherwise the episode
        seeds and the position of the round in its groups, so that two rounds of one group differ.
        """
        if self.aligned:
            return episode_seeds[:: self.group_size]
        members = (first_episode + np.arange(len(episode_seeds))) % self.group_size
        return np.concatenate([episode_seeds, members])


class GroupRolloutMixin:
    """Collection of groups for :class:`~egsw_gym.algorithms.grpo.GRPO` (the ``collect_rollouts`` side).

    Reads the algorithm's ``group_size``, ``n_groups``, ``policy``, ``device``, ``gamma``,
    ``dynamic_sampling`` settings and ``_dist``, and advances ``num_timesteps``.
    """

    #: Keys of a finished episode's ``info`` averaged over each update's episodes and logged as
    #: ``rollout/<key>`` (e.g. a verifier's ``correct``: the batch's fraction of right answers on the
    #: text environments; SB3's ``is_success``). Keys an env does not report, and non-numeric values,
    #: are skipped. Set it on a model (``model.info_keywords = ("my_key",)``) to log other keys.
    info_keywords: tuple[str, ...] = ("correct", "format_ok", "is_success")

    #: Sample each round's actions from a generator seeded by the round's group seeds (see
    #: :func:`~egsw_gym.common.distributed.round_sampling_rng`), so that a round does not depend on
    #: which process plays it. ``None`` (default): on under torch.distributed, off for one process;
    #: set ``True`` on a single-process run to reproduce an N-rank run with the same per-rank n_envs.
    round_seeded_sampling: bool | None = None

    #: Complete every update even when ``learn``'s budget is reached in its middle. ``None``
    #: (default): off for one process (the update stops at the round that reaches the budget), on
    #: under torch.distributed (whose ranks play different rounds); set ``True`` on a
    #: single-process run to reproduce an N-rank run.
    whole_updates: bool | None = None

    @staticmethod
    def _set_reset_seeds(env: VecEnv, seeds: Sequence[int]) -> None:
        """Make the next ``env.reset()`` reset env ``i`` with ``seed=seeds[i]``.

        SB3 VecEnvs pass ``_seeds[i]`` to env ``i``'s ``reset(seed=...)`` on their next ``reset()``
        and then clear the list. ``VecEnv.seed(s)`` can only give ``s, s+1, ...``, but a group needs
        the *same* seed on several envs, so we set the list on the innermost VecEnv (``unwrapped``);
        VecEnvWrappers (VecNormalize, VecMonitor, ...) forward ``reset()`` to it.
        """
        base = env.unwrapped
        if len(seeds) != base.num_envs:
            raise ValueError(f"need one seed per env ({base.num_envs}), got {len(seeds)}")
        base._seeds = [int(s) for s in seeds]

    def _check_env(self, env: VecEnv) -> None:
        """Rounds fit the update (see :class:`RoundPlan`), and ``reset(seed=s)`` fixes the start state."""
        local_groups = dist_utils.local_n_groups(self.n_groups, self._dist.world_size)
        episodes = local_groups * self.group_size
        if episodes % env.num_envs:
            raise ValueError(
                f"n_groups * group_size = {episodes} (the episodes of one update"
                f"{' on each rank' if self._dist.enabled else ''}) must be a multiple of the env's "
                f"n_envs = {env.num_envs}, which plays them in rounds; change n_envs or n_groups "
                f"(n_envs may be smaller than group_size: a group then spans several rounds)"
            )
        if self.dynamic_sampling:
            if self._dist.enabled:
                raise ValueError(
                    "dynamic_sampling is not supported under torch.distributed (single process only)"
                )
            plain_rounds = episodes // env.num_envs
            cap = self.dynamic_sampling_max_rounds
            if cap is not None and cap < plain_rounds:
                raise ValueError(
                    f"dynamic_sampling_max_rounds must be >= n_groups * group_size // n_envs = {plain_rounds} "
                    f"(the rounds of a plain update), got {cap}"
                )
        self._check_seedable(env)

    def _check_seedable(self, env: VecEnv) -> None:
        """Reset twice with one seed on every env: the start observations must all be equal."""
        # Probe on the innermost VecEnv so wrappers with running statistics (VecNormalize) are untouched.
        base = env.unwrapped
        probe_seed = 20250328
        self._set_reset_seeds(base, [probe_seed] * base.num_envs)
        first = base.reset()
        self._set_reset_seeds(base, [probe_seed] * base.num_envs)
        second = base.reset()

        def row(obs: Any, i: int) -> Any:
            return {k: v[i] for k, v in obs.items()} if isinstance(obs, dict) else obs[i]

        same_twice = _obs_equal(first, second)
        same_across = all(_obs_equal(row(first, 0), row(first, i)) for i in range(base.num_envs))
        if not (same_twice and same_across):
            raise ValueError(
                "env is not seedable: resetting with the same seed gave different observations "
                f"({'across two resets' if not same_twice else 'across environments'}). GRPO groups need "
                "reset(seed=s) to determine the start state; use a deterministic, seedable env."
            )
        # Force a fresh reset before the next learn() (our probe left the envs mid-nothing).
        self._last_obs = None

    # ------------------------------------------------------------------------------------------
    # One round, one block of groups
    # ------------------------------------------------------------------------------------------

    def _collect_round(
        self, env: VecEnv, callback: BaseCallback, episode_seeds: np.ndarray, group_ids: np.ndarray
    ) -> GroupBatch | None:
        """Every env plays one episode from its reset seed. ``None`` if a callback stops the run."""
        n_envs = env.num_envs
        self._set_reset_seeds(env, episode_seeds)
        # A round uses each env's first episode only: batched text envs then skip the later ones.
        hold_finished_episodes(env)
        obs = env.reset()
        check_step_finite("GRPO", None, obs, "at the reset that starts a round (the start observation)")
        first_obs = _clone_obs(obs_as_tensor(obs, self.device))

        state: Any | None = None
        active = np.ones(n_envs, dtype=bool)
        step_obs, actions_l, logp_l, ent_l, rew_l, mask_l = [], [], [], [], [], []
        while active.any():
            obs_t = obs_as_tensor(obs, self.device)
            with torch.no_grad():
                actions, log_probs, entropies, state = self.policy.act(obs_t, state)
            env_actions = actions.cpu().numpy()
            if isinstance(self.action_space, spaces.Box):
                # Gaussian samples are unbounded: the env gets the clipped action, the loss the sampled one.
                env_actions = np.clip(env_actions, self.action_space.low, self.action_space.high)
            new_obs, rewards, dones, infos = env.step(env_actions)
            check_step_finite(
                "GRPO",
                rewards,
                new_obs,
                lambda: f"at step {len(actions_l)} of a round (num_timesteps={self.num_timesteps})",
            )
            self.num_timesteps += n_envs

            if self.policy.uses_step_observations:
                step_obs.append(_clone_obs(obs_t))
            actions_l.append(actions.detach())
            logp_l.append(log_probs.detach().float())
            ent_l.append(entropies.detach().float())
            rew_l.append(torch.as_tensor(rewards, dtype=torch.float32, device=self.device))
            mask_l.append(torch.as_tensor(active.copy(), device=self.device))
            # Only first episodes count (later ones are auto-reset data we throw away).
            self._update_info_buffer(
                [info for info, a in zip(infos, active, strict=True) if a], dones[active]
            )
            self._collect_episode_infos(infos, np.asarray(dones, dtype=bool) & active)
            active &= ~np.asarray(dones, dtype=bool)

            callback.update_locals(locals())
            if not callback.on_step():
                return None
            obs = new_obs

        return GroupBatch(
            first_obs=first_obs,
            step_obs=_stack_steps(step_obs) if step_obs else None,
            actions=_stack_steps(actions_l),
            old_log_probs=_stack_steps(logp_l),
            entropies=_stack_steps(ent_l),
            rewards=_stack_steps(rew_l),
            mask=_stack_steps(mask_l),
            group_ids=torch.as_tensor(group_ids, dtype=torch.long, device=self.device),
        )

    def _collect_block(
        self, env: VecEnv, callback: BaseCallback, group_seeds: np.ndarray, stop_at: int | None = None
    ) -> tuple[GroupBatch | None, int]:
        """Play the groups with these reset seeds, in rounds of ``n_envs`` episodes.

        With ``stop_at``, stop early at the first round that ends with ``num_timesteps >= stop_at``
        and completes a block of whole groups (:attr:`RoundPlan.rounds_per_block`; every round
        when ``n_envs`` is a multiple of ``group_size``): the groups played so far form the batch.

        Returns the batch (rows in group order, ``group_ids`` ``0 .. n - 1`` for the ``n`` groups
        played), or ``None`` when a callback stopped the run, and the number of rounds played.
        """
        plan = RoundPlan(env.num_envs, self.group_size)
        info = self._dist
        seeded = self.round_seeded_sampling if self.round_seeded_sampling is not None else info.enabled
        rounds = []
        for r, (seeds, groups) in enumerate(plan.rounds(group_seeds)):
            key = plan.sampling_key(seeds, r * env.num_envs)
            with dist_utils.round_sampling_rng(key, self.device, enabled=seeded):
                batch = self._collect_round(env, callback, seeds, groups)
            if batch is None:
                return None, r + 1
            rounds.append(batch)
            whole_groups = (r + 1) % plan.rounds_per_block == 0
            if stop_at is not None and self.num_timesteps >= stop_at and whole_groups:
                break  # the budget is spent: train on the whole groups played so far
        return GroupBatch.concat(rounds), len(rounds)

    # ------------------------------------------------------------------------------------------
    # One update's batch
    # ------------------------------------------------------------------------------------------

    def collect_groups(
        self, env: VecEnv, callback: BaseCallback, max_timesteps: int | None = None
    ) -> GroupBatch | None:
        """Collect this update's groups (``n_groups`` in all ranks together), padded to one batch.

        Parameters
        ----------
        env : VecEnv
            The environments that play the rounds.
        callback : BaseCallback
            SB3 callback; ``on_step`` returning ``False`` stops the run.
        max_timesteps : int or None
            The training budget (``learn``'s ``total_timesteps``). Once ``num_timesteps`` reaches
            it, collection stops at the end of the round (block of rounds holding whole groups),
            and the update trains on the groups played so far, so ``learn`` stops within one round
            of its budget. ``None``, or :attr:`whole_updates` (on under torch.distributed):
            all ``n_groups`` groups.

        Returns
        -------
        GroupBatch or None
            The batch, or ``None`` when a callback stopped the run (on any rank).
        """
        self.policy.set_training_mode(False)
        callback.on_rollout_start()
        whole = self.whole_updates if self.whole_updates is not None else self._dist.enabled
        stop_at = None if whole else max_timesteps
        if self.dynamic_sampling:
            batch = self._collect_groups_dynamic(env, callback, stop_at)
        else:
            # All of the update's (global) group seeds in one draw; this rank plays its contiguous
            # block of groups (all of them for one process).
            seeds = np.random.randint(0, 2**31 - 1, size=self.n_groups)
            local_seeds = dist_utils.shard_group_seeds(seeds, 1, self._dist).ravel()
            steps_before = self.num_timesteps
            batch, _ = self._collect_block(env, callback, local_seeds, stop_at)
            # Global step count (every rank runs the same number of updates) and a global stop.
            sync = torch.tensor(
                [float(self.num_timesteps - steps_before), float(batch is None)], dtype=torch.float64
            )
            dist_utils.all_reduce(sync, self._dist)
            self.num_timesteps = steps_before + int(sync[0])
            if sync[1] > 0:
                batch = None
        if batch is None:
            return None
        self._record_episode_infos()
        merged = batch  # noqa: F841  (callbacks read the update's batch as locals["merged"])
        callback.update_locals(locals())
        callback.on_rollout_end()
        return batch

    def _collect_groups_dynamic(
        self, env: VecEnv, callback: BaseCallback, stop_at: int | None = None
    ) -> GroupBatch | None:
        """Dynamic sampling (``dynamic_sampling=True``): blocks until ``n_groups`` groups have reward spread.

        A block is the fewest groups that fill whole rounds (:attr:`RoundPlan.groups_per_block`; one
        round when ``n_envs`` is a multiple of ``group_size``). Sampling also ends after the block
        that brings ``num_timesteps`` to ``stop_at`` (the batch may then hold fewer than
        ``n_groups`` groups). Zero spread is judged exactly as
        :func:`~egsw_gym.algorithms.grpo.advantages.group_advantages` does (discounted episode returns,
        ``group_normalize``'s tolerance), so a kept group never ends up with all-zero advantages.
        """
        plan = RoundPlan(env.num_envs, self.group_size)
        cap = self.dynamic_sampling_max_rounds or 4 * (self.n_groups * self.group_size // env.num_envs)
        kept: list[tuple[GroupBatch, torch.Tensor]] = []  # (block, row index of its kept group)
        spare: list[tuple[GroupBatch, torch.Tensor]] = []  # zero-spread groups, to top up at the cap
        n_sampled = n_zero = rounds = 0
        while len(kept) < self.n_groups and rounds < cap:
            if rounds > 0 and stop_at is not None and self.num_timesteps >= stop_at:
                break
            seeds = np.random.randint(0, 2**31 - 1, size=plan.groups_per_block)
            batch, played = self._collect_block(env, callback, seeds)
            rounds += played
            if batch is None:
                return None
            returns = discounted_returns(batch.rewards, batch.mask, self.gamma)
            _, zero_std = group_normalize(returns, batch.group_ids)
            for k in range(plan.groups_per_block):
                rows = torch.arange(k * self.group_size, (k + 1) * self.group_size, device=batch.mask.device)
                n_sampled += 1
                if bool(zero_std[rows[0]]):
                    n_zero += 1
                    spare.append((batch, rows))
                elif len(kept) < self.n_groups:
                    kept.append((batch, rows))
        kept += spare[: self.n_groups - len(kept)]
        self.logger.record("rollout/sampling_rounds", rounds)
        self.logger.record("rollout/frac_reward_zero_std", n_zero / max(n_sampled, 1))
        # Kept groups of every block, trimmed to the longest kept episode and padded to one batch.
        parts = [b.select(rows) for b, rows in kept]
        length = max(p.last_step() for p in parts)
        batch = GroupBatch.concat([p.select(slice(None), length) for p in parts])
        batch.group_ids = torch.arange(len(kept), device=batch.mask.device).repeat_interleave(self.group_size)
        return batch

    # ------------------------------------------------------------------------------------------
    # Episode infos
    # ------------------------------------------------------------------------------------------

    def _collect_episode_infos(self, infos: list[dict[str, Any]], finished: np.ndarray) -> None:
        """Keep the :attr:`info_keywords` values of the episodes that end now (first episodes only)."""
        values = self.__dict__.setdefault("_episode_info_values", {})
        for i in np.flatnonzero(finished).tolist():
            for key in self.info_keywords:
                value = infos[i].get(key)
                if isinstance(value, (bool, int, float, np.bool_, np.number)):
                    values.setdefault(key, []).append(float(value))

    def _record_episode_infos(self) -> None:
        """Log the means of what :meth:`_collect_episode_infos` kept for this update, then forget it."""
        values = self.__dict__.pop("_episode_info_values", {})
        for key, vals in values.items():
            self.logger.record(f"rollout/{key}", float(np.mean(vals)))
