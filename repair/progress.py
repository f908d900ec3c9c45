"""Progress on stderr for long runs: a bar on a terminal, a plain line every few seconds elsewhere (CI logs)."""

from __future__ import annotations

import sys
import time

LINE_INTERVAL_S = 5.0  # not a terminal: one line this often, so a CI log shows the run is alive


def progress_wanted(flag: bool | None) -> bool:
    """``--progress/--no-progress``: on unless switched off (a bar on a terminal, lines in a log)."""
    return True if flag is None else flag


class Progress:
    """``start(total, unit)``, ``advance(n)``, ``update(done, total)``, ``finish()``.

    On a terminal it redraws a bar at most 10 times a second; otherwise (a pipe, a CI log) it writes one
    line every ``LINE_INTERVAL_S`` seconds and one at the end, so long runs are never silent.
    """

    def __init__(self, total: int = 0, enabled: bool = True, label: str = "", stream=None):
        self.total, self.enabled, self.label = total, enabled, label
        self.stream = stream or sys.stderr
        self.is_terminal = bool(getattr(self.stream, "isatty", lambda: False)())
        self.done, self.unit = 0, ""
        self._t0 = self._last = time.monotonic()
        self._drawn = False

    def start(self, total: int, unit: str) -> None:
        self.total, self.unit, self.done = total, unit, 0
        self._t0 = self._last = time.monotonic()
        if self.is_terminal:
            self._draw(force=True)

    def advance(self, n: int) -> None:
        self.done += n
        self._draw()

    def update(self, done: int, total: int) -> None:
        """Set the position outright (for work whose total is known only as it runs)."""
        self.done, self.total = done, total
        self._draw()

    def finish(self) -> None:
        if self.enabled and (self.is_terminal or self._drawn):
            self._draw(force=True)
            if self.is_terminal:
                self.stream.write("\n")
                self.stream.flush()

    def _draw(self, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._last < (0.1 if self.is_terminal else LINE_INTERVAL_S):
            return
        self._last, self._drawn = now, True
        frac = self.done / self.total if self.total else 1.0
        rate = self.done / (now - self._t0) if now > self._t0 else 0.0
        if self.is_terminal:
            width = 30
            filled = int(frac * width)
            self.stream.write(f"\r{self.label}[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} "
                              f"{self.unit} {rate:,.0f}/s ")
        else:
            self.stream.write(f"{self.label.strip()}: {self.done}/{self.total} {self.unit} ({frac:.0%}, "
                              f"{now - self._t0:.0f} s)\n")
        self.stream.flush()
