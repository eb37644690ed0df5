"""--max-memory-growth: a process that grows trial after trial restarts between trials, before
the kernel's OOM killer ends it mid-trial."""

from __future__ import annotations

import os
from pathlib import Path

from search.errors import Restart


def resident_mb() -> float | None:
    """This process's resident memory in MiB (Linux), to see whether trials leak."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return round(pages * os.sysconf("SC_PAGE_SIZE") / 2**20, 1)


class MemoryGuard:
    """The process's resident memory after each trial, against `max_growth_mb` (0: off)."""

    def __init__(self, max_growth_mb: float = 0) -> None:
        self.max_growth_mb = max_growth_mb
        self._resident: list[float] = []  # after each trial run in this process

    def after_trial(self) -> float | None:
        """Note the memory a trial left the process at; returns it (None where unknown)."""
        rss = resident_mb()
        if rss is not None:
            self._resident.append(rss)
        return rss

    def expect_growth(self) -> None:
        """Memory the run needs from now on (another image size's arrays), not a leak: growth
        counts from after the next trial."""
        self._resident.clear()

    def check(self) -> None:
        """Raise Restart, between trials, when the next trial would likely take the process
        past `max_growth_mb` above its size after its first trial (the growth so far plus the
        largest growth of one trial)."""
        if not self.max_growth_mb or len(self._resident) < 2:
            return
        grown = self._resident[-1] - self._resident[0]
        step = max(b - a for a, b in zip(self._resident, self._resident[1:], strict=False))
        if grown + max(step, 0) > self.max_growth_mb:
            raise Restart(
                f"the process grew {grown:.0f} MiB over {len(self._resident)} trials "
                f"(--max-memory-growth {self.max_growth_mb:g})"
            )
