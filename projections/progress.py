"""Progress of a long replay: a bar with rate and ETA on a TTY, plain log lines otherwise."""

from __future__ import annotations

import sys
import time
from typing import TextIO

import structlog

log = structlog.get_logger("progress")


class Progress:
    """Call with the number of events just done; `close()` at the end."""

    def __init__(
        self,
        total: int | None,
        label: str = "replay",
        stream: TextIO | None = None,
        log_every: float = 5.0,
    ) -> None:
        self.total = total
        self.label = label
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.done = 0
        self.started = time.monotonic()
        self._last = 0.0
        self._every = 0.2 if self.tty else log_every

    def __call__(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if now - self._last >= self._every:
            self._last = now
            self._show(now)

    def _show(self, now: float) -> None:
        elapsed = max(now - self.started, 1e-9)
        rate = self.done / elapsed
        eta = None
        if self.total and rate > 0 and self.total > self.done:
            eta = (self.total - self.done) / rate
        if not self.tty:
            log.info(
                f"{self.label}_progress",
                events=self.done,
                total=self.total,
                rate=round(rate),
                eta_s=None if eta is None else round(eta),
            )
            return
        if self.total:
            frac = min(self.done / self.total, 1.0)
            bar = "#" * int(frac * 30)
            head = f"[{bar:<30}] {frac * 100:5.1f}%"
        else:
            head = f"{self.done:,} events"
        tail = f" {rate:,.0f} ev/s" + (f" ETA {eta:,.0f}s" if eta is not None else "")
        self.stream.write(f"\r{self.label} {head} {self.done:,}{tail}   ")
        self.stream.flush()

    def close(self) -> None:
        """Print the final state (and end the TTY line)."""
        self._show(time.monotonic())
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()
