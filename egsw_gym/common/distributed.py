"""Data-parallel GRPO on ``torch.distributed``: what each rank does and which quantities are global.

Launch any ``model.learn()`` script with ``torchrun --nproc_per_node N script.py`` (or
``--nnodes M`` for several machines, or ``accelerate launch``). :class:`~egsw_gym.algorithms.grpo.GRPO`
then, through the helpers of this module:

- **initialises the process group** from torchrun's variables (``RANK``, ``WORLD_SIZE``,
  ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``) unless one is already initialised: ``nccl`` when
  the model's device is CUDA (each rank on ``cuda:LOCAL_RANK``), ``gloo`` otherwise;
- **broadcasts rank 0's parameters** once after building the policy, so every rank starts equal;
- **shards groups**: ``n_groups`` is the *global* number of groups per update. Every rank draws the
  same global list of group reset seeds (rank 0's draw is broadcast), cut into rounds of
  ``n_envs // group_size`` groups; rank ``r`` plays the ``r``-th contiguous block of rounds. Each group
  therefore lives whole on one rank, and the union over ranks is exactly the set of groups one
  process would collect with the same seed;
- **samples each round from a generator seeded by that round's group seeds** (on by default when
  distributed, see ``GRPO.round_seeded_sampling``), so a round's episodes do not depend on which rank
  plays it: with the same per-rank ``n_envs``, N ranks reproduce one process;
- **sums gradients** with one ``all_reduce`` after every backward pass (see
  :meth:`GlobalBatch.sync_gradients` for why this is not ``DistributedDataParallel``);
- computes every batch-wide normalisation over the **global** batch (list below);
- counts ``num_timesteps`` globally, so every rank runs the same number of updates;
- writes logs, progress bars and checkpoints on rank 0 only.

Quantities computed over the global batch (all ranks together)
-------------------------------------------------------------
- the minibatch partition: one permutation of all ``B_global`` sequences, broadcast from rank 0;
  each rank evaluates the members of every minibatch that it holds;
- the loss denominators: ``"grpo"`` divides by the global number of sequences in the minibatch,
  ``"token"`` by its global number of valid tokens, ``"dr_grpo"`` by ``B_minibatch * max_len`` with the
  global ``B`` and the global padded length (each rank scales its partial loss accordingly, and the
  gradients are summed, which gives the single-process gradient);
- the gradient norm used for clipping (clipping runs after the sum, on identical gradients);
- EGSW's ``standardize_advantages`` mean and std (two all-reduces per update);
- ``num_timesteps``, and the logged ``train/*``, ``egsw/*`` and ``rollout/*`` values.

Per rank (local, never communicated): group-normalised advantages (a group is whole on one rank),
EGSW's softmax within a comparison set (a set is within one group, or one rollout step of one group).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

__all__ = [
    "DistInfo",
    "GlobalBatch",
    "all_reduce",
    "broadcast_module",
    "env_world_size",
    "episode_stats",
    "init_distributed",
    "is_main_process",
    "local_n_groups",
    "round_sampling_rng",
    "shard_group_seeds",
]


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands in a (possibly trivial) data-parallel job.

    Parameters
    ----------
    rank : int
        Global rank, ``0 <= rank < world_size``.
    world_size : int
        Number of processes; ``1`` means no distribution at all (no collective is ever called).
    local_rank : int
        Rank within the node (the CUDA device index under torchrun).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        """``True`` when there is more than one process."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """``True`` on rank 0, the only rank that writes logs and checkpoints."""
        return self.rank == 0


def env_world_size() -> int:
    """World size of the running job: the initialised process group's, else ``$WORLD_SIZE``, else 1."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    """Rank 0 (or no distribution): the process allowed to write files."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return int(os.environ.get("RANK", "0")) == 0


def local_n_groups(n_groups: int, world_size: int | None = None) -> int:
    """Groups one rank collects per update: ``n_groups / world_size``.

    Parameters
    ----------
    n_groups : int
        The global number of groups per update.
    world_size : int or None
        Number of ranks; ``None`` reads it with :func:`env_world_size`.

    Returns
    -------
    int
        The per-rank share.

    Raises
    ------
    ValueError
        When ``n_groups`` is not a multiple of the world size.
    """
    ws = env_world_size() if world_size is None else world_size
    if n_groups % ws:
        raise ValueError(
            f"n_groups={n_groups} is the global number of groups per update and must be a multiple of "
            f"the number of processes ({ws}), so that every rank collects whole groups"
        )
    return n_groups // ws


def init_distributed(device: torch.device | str) -> tuple[DistInfo, torch.device]:
    """Join (or start) the process group described by torchrun's environment variables.

    Nothing happens for a single process (``WORLD_SIZE`` unset or 1 and no group initialised).

    Parameters
    ----------
    device : torch.device or str
        The model's device. On CUDA, each rank is moved to ``cuda:LOCAL_RANK`` and ``nccl`` is used;
        otherwise ``gloo``.

    Returns
    -------
    info : DistInfo
        Rank, world size and local rank.
    device : torch.device
        The device this rank must use.
    """
    device = torch.device(device)
    initialised = dist.is_available() and dist.is_initialized()
    world_size = dist.get_world_size() if initialised else int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistInfo(), device
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed support")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank % max(torch.cuda.device_count(), 1))
        torch.cuda.set_device(device)
    if not initialised:
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank), device


def _comm_device() -> torch.device:
    """Where a collective's tensors must live: the current CUDA device for ``nccl``, else the CPU."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce(tensor: torch.Tensor, info: DistInfo, op: str = "sum") -> torch.Tensor:
    """``all_reduce`` (``"sum"``, ``"max"`` or ``"min"``); the identity for one process.

    The result is written into ``tensor`` when it already lives on the backend's device; the reduced
    tensor is returned in every case (on ``tensor``'s device).
    """
    if info.enabled:
        ops = {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN}
        comm = tensor.to(_comm_device())
        dist.all_reduce(comm, op=ops[op])
        if comm is not tensor:
            tensor.copy_(comm.to(tensor.device))
    return tensor


def _broadcast(tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
    comm = tensor.to(_comm_device())
    dist.broadcast(comm, src=src)
    return comm.to(tensor.device)


def broadcast_module(module: torch.nn.Module, info: DistInfo, src: int = 0) -> None:
    """Copy rank ``src``'s parameters and buffers into every rank's ``module`` (no-op for one process)."""
    if not info.enabled:
        return
    with torch.no_grad():
        for t in [*module.parameters(), *module.buffers()]:
            dist.broadcast(t.data, src=src)


def shard_group_seeds(global_seeds: np.ndarray, groups_per_round: int, info: DistInfo) -> np.ndarray:
    """This rank's rounds of group reset seeds, from the global list every rank agrees on.

    Parameters
    ----------
    global_seeds : numpy.ndarray
        ``(n_groups,)`` reset seeds of one update, in single-process order. Under distribution rank
        0's array is broadcast first, so ranks agree even without a fixed ``seed``.
    groups_per_round : int
        ``n_envs // group_size`` on every rank.
    info : DistInfo
        This rank.

    Returns
    -------
    numpy.ndarray
        ``(n_rounds_local, groups_per_round)``: rank ``r`` gets the ``r``-th contiguous block of rounds.
    """
    seeds = np.asarray(global_seeds, dtype=np.int64)
    if info.enabled:
        seeds = _broadcast(torch.as_tensor(seeds)).numpy()
    rounds = seeds.reshape(-1, groups_per_round)
    per_rank = rounds.shape[0] // info.world_size
    return rounds[info.rank * per_rank : (info.rank + 1) * per_rank]


@contextlib.contextmanager
def round_sampling_rng(group_seeds: np.ndarray, device: torch.device, enabled: bool = True) -> Iterator[None]:
    """Sample a round's actions from torch's default generator seeded by the round's group seeds.

    The outer generator state is saved and restored around the round (``torch.random.fork_rng``), so
    the rollout consumes none of it: the minibatch permutations drawn later are the same whether one
    process or N ranks played the rounds.

    Parameters
    ----------
    group_seeds : numpy.ndarray
        The round's group reset seeds.
    device : torch.device
        The policy's device (its CUDA generator is forked and seeded too).
    enabled : bool
        ``False`` makes this a no-op (the global stream is used, as without distribution).
    """
    if not enabled:
        yield
        return
    seed = int(np.random.SeedSequence([int(s) for s in np.asarray(group_seeds).ravel()]).generate_state(1)[0])
    devices = (
        [device.index if device.index is not None else torch.cuda.current_device()]
        if device.type == "cuda"
        else []
    )
    with torch.random.fork_rng(devices=devices):
        torch.default_generator.manual_seed(seed)
        if devices:
            torch.cuda.manual_seed(seed)
        yield


def episode_stats(ep_info_buffer: Iterable[dict[str, Any]], info: DistInfo) -> tuple[float, float] | None:
    """Mean episode return and length over the recent episodes of every rank (``None`` if none)."""
    eps = list(ep_info_buffer)
    t = torch.tensor(
        [len(eps), float(sum(e["r"] for e in eps)), float(sum(e["l"] for e in eps))], dtype=torch.float64
    )
    all_reduce(t, info)
    if t[0] == 0:
        return None
    return float(t[1] / t[0]), float(t[2] / t[0])


class GlobalBatch:
    """One update's batch seen as the union of every rank's sequences, in single-process order.

    Rank ``r`` holds global rows ``[r * B_local, (r + 1) * B_local)`` (every rank holds the same number
    of sequences). One ``all_gather`` of the sequence lengths at construction lets every rank compute
    any global count locally; after that, training needs one gradient ``all_reduce`` per minibatch.
    For one process every method reduces to the single-process code path, bit for bit.

    Parameters
    ----------
    mask : torch.Tensor
        This rank's ``(B_local, T_local)`` bool mask.
    info : DistInfo
        This rank.
    loss_type : {"grpo", "dr_grpo", "token"}
        The loss aggregation, which decides the global denominator.
    """

    def __init__(self, mask: torch.Tensor, info: DistInfo, loss_type: str) -> None:
        self.info = info
        self.loss_type = loss_type
        self.device = mask.device
        self.n_local = mask.shape[0]
        lengths = mask.sum(dim=1)
        if info.enabled:
            local = lengths.to(_comm_device())
            gathered = [torch.empty_like(local) for _ in range(info.world_size)]
            dist.all_gather(gathered, local)
            lengths = torch.cat(gathered).to(mask.device)
        self.lengths = lengths
        self.n_global = int(lengths.numel())
        self.offset = info.rank * self.n_local
        # The padded length a single process would have: the longest episode of the whole batch.
        self.max_len = int(lengths.max()) if info.enabled else int(mask.shape[1])

    def minibatches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, float]]:
        """One epoch of minibatches: ``(local row indices, loss scale)`` pairs.

        The global permutation comes from rank 0 (from torch's default generator, as without
        distribution). The loss that :func:`~egsw_gym.algorithms.grpo.core.grpo_loss` returns for the
        local rows must be multiplied by the scale: it turns the local denominator into the global one.
        A rank holding none of a minibatch's rows gets one of its rows with scale 0, so that it still
        runs a backward pass and joins the gradient ``all_reduce``.
        """
        perm = torch.randperm(self.n_global if self.info.enabled else self.n_local, device=self.device)
        if not self.info.enabled:
            for idx in perm.split(batch_size):
                yield idx, 1.0
            return
        perm_cpu = _broadcast(perm).cpu()
        lengths = self.lengths.cpu()
        for gidx in perm_cpu.split(batch_size):
            mine = (gidx >= self.offset) & (gidx < self.offset + self.n_local)
            local = gidx[mine] - self.offset
            if local.numel() == 0:
                yield torch.zeros(1, dtype=torch.long, device=self.device), 0.0
                continue
            if self.loss_type == "token":
                scale = float(lengths[local + self.offset].sum()) / float(lengths[gidx].sum())
            elif self.loss_type == "grpo":
                scale = float((lengths[local + self.offset] > 0).sum()) / max(
                    float((lengths[gidx] > 0).sum()), 1.0
                )
            else:  # dr_grpo: B_minibatch * max_len, with the global B (max_len is made global by the caller)
                scale = local.numel() / gidx.numel()
            yield local.to(self.device), scale

    def sync_gradients(self, parameters: Iterable[torch.nn.Parameter]) -> None:
        """Sum the gradients over ranks (one flat ``all_reduce``), before clipping and the step.

        Why not ``DistributedDataParallel``: GRPO calls the policy through ``evaluate_sequences``, not
        ``forward``, and DDP's reducer only arms itself inside ``forward``; wrapping would also hide
        ``act``/``evaluate_sequences`` behind ``.module``. DDP also *averages* gradients, which equals
        the single-process gradient only when every rank holds the same share of the loss's
        denominator -- not true for per-minibatch random partitions and token means. Summing
        gradients of losses already divided by the global denominator is exact in every case.
        Parameters with no gradient on every rank keep ``grad=None`` (Adam then skips them, as a
        single process would).
        """
        if not self.info.enabled:
            return
        params = [p for p in parameters if p.requires_grad]
        if not params:
            return
        flat = torch.cat(
            [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).float() for p in params]
            + [
                torch.tensor(
                    [p.grad is not None for p in params], dtype=torch.float32, device=params[0].device
                )
            ]
        )
        flat = all_reduce(flat, self.info)
        offset = 0
        has_grad = flat[-len(params) :]
        for i, p in enumerate(params):
            n = p.numel()
            if has_grad[i] > 0:
                g = flat[offset : offset + n].view_as(p).to(p.dtype)
                if p.grad is None:
                    p.grad = g.clone()
                else:
                    p.grad.copy_(g)
            offset += n

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum a tensor over ranks (returns a new tensor; the input is untouched)."""
        out = tensor.clone()
        return all_reduce(out, self.info)

    def reduce_scalars(self, values: dict[str, float], op: str = "mean") -> dict[str, float]:
        """Mean (or ``"sum"``, ``"max"``, ``"min"``) of per-rank scalars, in one collective."""
        if not self.info.enabled or not values:
            return {k: float(v) for k, v in values.items()}  # floats, as the collective returns
        keys = list(values)
        t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
        all_reduce(t, self.info, "sum" if op == "mean" else op)
        if op == "mean":
            t /= self.info.world_size
        return {k: float(v) for k, v in zip(keys, t.tolist(), strict=True)}

    def egsw_reduce(self) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """The ``all_reduce`` EGSW needs for a global ``standardize_advantages`` (``None`` for one process)."""
        return self.all_reduce_sum if self.info.enabled else None
