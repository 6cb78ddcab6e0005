"""Progress where no bar can be drawn (output piped to a log file or a CI job): a line every half minute.

A rich bar on a terminal is redrawn in place; written to a file it would be nothing at all, and a long stage
(kd importance on a large model, validation) left the log silent for minutes.
"""

from __future__ import annotations

import time
from typing import Callable

EVERY_S = 30.0


class LogLines:
    def __init__(self, console, stage: str, total: int | None, unit: str, every: float | None = None,
                 clock: Callable[[], float] = time.perf_counter):
        self.console, self.stage, self.total, self.unit, self.clock = console, stage, total, unit, clock
        self.every = EVERY_S if every is None else every
        self.started = self.last = clock()

    def update(self, done: int) -> None:
        now = self.clock()
        if now - self.last < self.every:
            return
        self.last = now
        rate = done / max(now - self.started, 1e-9)
        of = f"/{self.total:,}" if self.total else ""
        eta = f", about {(self.total - done) / rate:,.0f} s left" if self.total and rate > 0 else ""
        self.console.print(f"      {self.stage}: {done:,}{of} {self.unit} ({rate:,.1f} {self.unit}/s{eta})",
                           highlight=False, soft_wrap=True)
