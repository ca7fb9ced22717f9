"""Checkpoints that a crash or a kill can never leave half-written.

Every write goes to a temporary file in the same directory, is flushed to disk, and then replaces
the target with ``os.replace`` (atomic on POSIX and Windows): at any moment the target path holds
either the previous complete checkpoint or the new complete one.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from stable_baselines3.common.callbacks import CheckpointCallback

from egsw_gym.common.checks import check_int
from egsw_gym.common.distributed import is_main_process

__all__ = ["save_atomic", "AtomicCheckpointCallback", "latest_checkpoint"]


def save_atomic(model, path: str | os.PathLike, **save_kwargs) -> Path:
    """``model.save(path)``, atomically.

    Parameters
    ----------
    model : stable_baselines3.common.base_class.BaseAlgorithm
        Anything with SB3's ``save(path)``.
    path : str or os.PathLike
        Target file; ``.zip`` is appended when missing, as SB3 does.
    **save_kwargs
        Forwarded to ``model.save`` (``exclude``, ``include``).

    Returns
    -------
    pathlib.Path
        The path written.
    """
    path = Path(path)
    if path.suffix != ".zip":
        path = path.with_name(path.name + ".zip")
    if not is_main_process():
        # torch.distributed: rank 0 writes; the other ranks hold the same weights and must not race it.
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".zip.tmp", dir=path.parent)
    os.close(fd)
    try:
        model.save(tmp, **save_kwargs)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


class AtomicCheckpointCallback(CheckpointCallback):
    """SB3's :class:`~stable_baselines3.common.callbacks.CheckpointCallback` with atomic writes.

    Same arguments and file names as SB3's callback; the model zip is written through
    :func:`save_atomic`, so a kill during a save leaves every earlier checkpoint intact and never a
    truncated zip under a checkpoint name.

    Parameters
    ----------
    save_freq : int
        Save every ``save_freq`` calls of ``on_step`` (SB3's meaning), or every ``save_freq``
        updates with ``at_update_boundary=True``.
    save_path, name_prefix, save_replay_buffer, save_vecnormalize, verbose
        As in SB3's ``CheckpointCallback``.
    at_update_boundary : bool
        Save at the start of a rollout instead of in the middle of one: after the previous update,
        before any random number of the next one is drawn. A checkpoint taken there holds the complete
        training state (weights, optimizer, step counter, RNG states), so for GRPO
        ``GRPO.load(ckpt, env=env, restore_rng=True).learn(total - model.num_timesteps,
        reset_num_timesteps=False)``
        gives exactly the parameters of the uninterrupted run (see ``docs/RESUME.md``).
    """

    def __init__(
        self,
        save_freq: int,
        save_path: str,
        name_prefix: str = "rl_model",
        save_replay_buffer: bool = False,
        save_vecnormalize: bool = False,
        verbose: int = 0,
        at_update_boundary: bool = False,
    ) -> None:
        check_int("save_freq", save_freq, low=1)
        super().__init__(save_freq, save_path, name_prefix, save_replay_buffer, save_vecnormalize, verbose)
        self.at_update_boundary = at_update_boundary
        self.n_rollouts = 0

    def _on_rollout_start(self) -> None:
        if self.at_update_boundary:
            # The first rollout start is before any update; save after every save_freq completed ones.
            if self.n_rollouts > 0 and self.n_rollouts % self.save_freq == 0:
                self._save()
            self.n_rollouts += 1

    def _on_step(self) -> bool:
        if not self.at_update_boundary and self.n_calls % self.save_freq == 0:
            self._save()
        return True

    def _save(self) -> None:
        model_path = self._checkpoint_path(extension="zip")
        save_atomic(self.model, model_path)
        if self.verbose >= 2:
            print(f"Saving model checkpoint to {model_path}")
        if (
            self.save_replay_buffer
            and hasattr(self.model, "replay_buffer")
            and self.model.replay_buffer is not None
        ):
            self.model.save_replay_buffer(self._checkpoint_path("replay_buffer_", extension="pkl"))
        if self.save_vecnormalize and self.model.get_vec_normalize_env() is not None:
            vec_normalize_path = self._checkpoint_path("vecnormalize_", extension="pkl")
            self.model.get_vec_normalize_env().save(vec_normalize_path)


def latest_checkpoint(save_path: str | os.PathLike, name_prefix: str = "rl_model") -> Path | None:
    """The checkpoint with the most steps that :class:`AtomicCheckpointCallback` wrote, or ``None``.

    Temporary files of an interrupted save (``.<name>.*.zip.tmp``) are never returned.
    """
    best: tuple[int, Path] | None = None
    for candidate in Path(save_path).glob(f"{name_prefix}_*_steps.zip"):
        middle = candidate.name[len(name_prefix) + 1 : -len("_steps.zip")]
        if middle.isdigit() and (best is None or int(middle) > best[0]):
            best = (int(middle), candidate)
    return None if best is None else best[1]
