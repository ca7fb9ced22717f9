"""What a side-by-side benchmark of two trainers in one process needs (``grpo_vs_trl.py``).

:class:`RandomStreams` keeps each side's global random states apart, so neither side's samples depend
on the other side's code; :func:`rss_mib` reads the current resident set size (the peak is
:func:`_env_report.peak_rss_mib`).
"""

from __future__ import annotations

import os
import random
from typing import Any

import numpy as np
import torch

__all__ = ["RandomStreams", "rss_mib"]


class RandomStreams:
    """One side's global random states (torch, numpy, ``random``), kept apart from the other side's.

    Both sides sample from the process-wide generators. Shared, each side's samples (hence its
    completion lengths and step times) would depend on how many numbers the other side drew, i.e.
    on the other side's code; kept apart, each side's run is what it would be alone.
    """

    def __init__(self) -> None:
        self.state = self._get()

    @staticmethod
    def _get() -> tuple:
        return torch.get_rng_state(), np.random.get_state(), random.getstate()

    @staticmethod
    def _set(state: tuple) -> None:
        torch.set_rng_state(state[0])
        np.random.set_state(state[1])
        random.setstate(state[2])

    def __enter__(self) -> None:
        self.other = self._get()
        self._set(self.state)

    def __exit__(self, *exc: Any) -> None:
        self.state = self._get()
        self._set(self.other)


def rss_mib() -> float:
    """Current resident set size in MiB (``/proc/self/statm``)."""
    with open("/proc/self/statm", encoding="utf-8") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
