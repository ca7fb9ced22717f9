"""How PPO and GRPO hold, save and restore their EGSW configuration (one mixin for both).

The live :class:`~egsw_gym.egsw.EGSW` object is ``model.egsw``. A checkpoint stores only its plain
dict, ``model.egsw_config``: SB3 pickles every attribute it is not told to exclude, and our loading
never unpickles (``egsw_gym.common.serialization``). SB3's ``load`` builds the model with
``egsw=None``, copies the saved attributes (``egsw_config``) and any ``load(..., egsw=...)``
keyword onto it, then calls ``_setup_model``, where :meth:`EGSWConfigMixin._restore_egsw` rebuilds
the object: an explicit ``egsw`` wins over the saved config.
"""

from __future__ import annotations

from typing import Any

from egsw_gym.egsw import EGSW

__all__ = ["EGSWConfigMixin", "as_egsw"]


def as_egsw(egsw: EGSW | dict[str, Any] | None) -> EGSW | None:
    """``egsw`` as an :class:`EGSW` (a dict from :meth:`EGSW.to_dict` or a YAML block is validated).

    Parameters
    ----------
    egsw : EGSW, dict or None
        The configuration; ``None`` means no EGSW (the plain algorithm).

    Returns
    -------
    EGSW or None

    Raises
    ------
    ValueError
        For any other type, or a dict with unknown fields or invalid values (naming the field).
    """
    if egsw is None or isinstance(egsw, EGSW):
        return egsw
    if isinstance(egsw, dict):
        return EGSW.from_dict(egsw)
    raise ValueError(
        f"egsw must be an egsw_gym.EGSW instance, a dict from EGSW.to_dict(), or None; got {type(egsw).__name__}"
    )


class EGSWConfigMixin:
    """``egsw`` / ``egsw_config`` handling shared by :class:`~egsw_gym.PPO` and :class:`~egsw_gym.GRPO`.

    Put it before the SB3 base class. Call :meth:`_init_egsw` in ``__init__`` before the base
    class's (which may run ``_setup_model``) and :meth:`_restore_egsw` first thing in
    ``_setup_model``.
    """

    egsw: EGSW | None
    egsw_config: dict[str, Any] | None

    def _init_egsw(self, egsw: EGSW | dict[str, Any] | None) -> None:
        """Validate the constructor's ``egsw`` and keep its plain-data copy for checkpoints."""
        self.egsw = as_egsw(egsw)
        self.egsw_config = None if self.egsw is None else self.egsw.to_dict()

    def _restore_egsw(self) -> None:
        """After ``load``: an explicit ``load(..., egsw=...)`` if given, else the saved ``egsw_config``."""
        if self.egsw is None and self.egsw_config is not None:
            self.egsw = EGSW.from_dict(self.egsw_config)
        self._init_egsw(self.egsw)

    def _excluded_save_params(self) -> list[str]:
        # The EGSW object is never pickled into the zip; egsw_config (a plain dict) is saved instead.
        return [*super()._excluded_save_params(), "egsw"]  # type: ignore[misc]

    def save(self, path: Any, exclude: Any = None, include: Any = None) -> None:
        """SB3's ``save``, with ``egsw_config`` synced from ``egsw`` (it may have been replaced since)."""
        self._init_egsw(self.egsw)
        super().save(path, exclude=exclude, include=include)  # type: ignore[misc]
