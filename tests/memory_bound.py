"""Resident-memory growth of a block of code, for tests that bound what a hostile input may cost.

Not a test module: imported by the test files (pytest puts ``tests/`` on ``sys.path``).
"""

from __future__ import annotations

import gc
import os
import threading
import time

MB = 2**20
#: the memory a refused or bounded hostile input may cost (issue 25)
RSS_BOUND = 200 * MB


def current_rss() -> int:
    """This process's resident set size in bytes (Linux ``/proc/self/statm``)."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class RssGrowth:
    """Peak growth of the resident set while the block runs (sampled every 2 ms by a thread).

    Attributes, after the block: ``growth`` (bytes) and ``seconds`` (recorded for reports, never
    asserted).
    """

    def __enter__(self) -> RssGrowth:
        gc.collect()
        self.base = self.peak = current_rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self.start = time.perf_counter()
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, current_rss())
            time.sleep(0.002)

    def __exit__(self, *exc: object) -> bool:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, current_rss())
        self.seconds = time.perf_counter() - self.start
        self.growth = self.peak - self.base
        return False
