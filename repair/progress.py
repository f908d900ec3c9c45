"""A dependency-free progress bar on stderr for long runs (only when enabled)."""

from __future__ import annotations

import sys
import time


class Progress:
    """``start(total, unit)``, ``advance(n)``, ``finish()``; redraws at most 10 times a second."""

    def __init__(self, total: int = 0, enabled: bool = True, label: str = "", stream=None):
        self.total, self.enabled, self.label = total, enabled, label
        self.stream = stream or sys.stderr
        self.done, self.unit = 0, ""
        self._t0 = self._last = 0.0

    def start(self, total: int, unit: str) -> None:
        self.total, self.unit, self.done = total, unit, 0
        self._t0 = self._last = time.monotonic()
        self._draw(force=True)

    def advance(self, n: int) -> None:
        self.done += n
        self._draw()

    def update(self, done: int, total: int) -> None:
        """Set the position outright (for work whose total is known only as it runs)."""
        self.done, self.total = done, total
        self._draw()

    def finish(self) -> None:
        self._draw(force=True)
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()

    def _draw(self, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._last < 0.1:
            return
        self._last = now
        frac = self.done / self.total if self.total else 1.0
        width = 30
        filled = int(frac * width)
        rate = self.done / (now - self._t0) if now > self._t0 else 0.0
        self.stream.write(f"\r{self.label}[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} "
                          f"{self.unit} {rate:,.0f}/s ")
        self.stream.flush()
