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

from egsw_gym.common.distributed import is_main_process

__all__ = ["save_atomic", "AtomicCheckpointCallback"]


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
    """

    def _on_step(self) -> bool:
        if self.n_calls % self.save_freq == 0:
            model_path = self._checkpoint_path(extension="zip")
            save_atomic(self.model, model_path)
            if self.verbose >= 2:
                print(f"Saving model checkpoint to {model_path}")
            if self.save_replay_buffer and hasattr(self.model, "replay_buffer") and self.model.replay_buffer is not None:
                self.model.save_replay_buffer(self._checkpoint_path("replay_buffer_", extension="pkl"))
            if self.save_vecnormalize and self.model.get_vec_normalize_env() is not None:
                vec_normalize_path = self._checkpoint_path("vecnormalize_", extension="pkl")
                self.model.get_vec_normalize_env().save(vec_normalize_path)
        return True
