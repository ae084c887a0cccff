"""Progress lines (rate and ETA) for long steps; they go to the rule's log through stderr."""
from __future__ import annotations

import logging
import sys
import time


def setup_logging() -> logging.Logger:
    """One format for every entry point; rules redirect stderr into their log file."""
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    return logging.getLogger("pipeline")


def _fmt_seconds(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 3600:d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class Progress:
    """Logs `done/total` with per-second rates of named counters, at most every `interval` seconds."""

    def __init__(self, logger: logging.Logger, what: str, total: float | None = None, interval: float = 10.0):
        self.logger, self.what, self.total, self.interval = logger, what, total, interval
        self.start = self._last = time.monotonic()

    def update(self, done: float, force: bool = False, **counters: float) -> None:
        now = time.monotonic()
        if not force and now - self._last < self.interval:
            return
        self._last = now
        elapsed = max(now - self.start, 1e-9)
        rates = " ".join(f"{name}={value:,.0f} ({value / elapsed:,.0f}/s)" for name, value in counters.items())
        eta = ""
        if self.total and done > 0:
            eta = f" ETA {_fmt_seconds(elapsed * (self.total - done) / done)}"
            pct = f" {100.0 * done / self.total:5.1f}%"
        else:
            pct = ""
        self.logger.info("%s:%s %s elapsed %s%s", self.what, pct, rates, _fmt_seconds(elapsed), eta)
