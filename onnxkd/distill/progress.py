"""What a long run shows: a rich bar per stage (samples/s, loss, ETA) and one line per epoch.

``reporter(progress)`` turns what callers pass as ``progress`` into a Reporter: a rich ``Console``
(bars on a terminal, lines only when piped), a callable receiving event dicts (scripts, notebooks,
tests), or None (silent). Under DDP only rank 0 reports.
"""

from __future__ import annotations

import time
from typing import Any, Callable

from onnxkd.log_lines import LogLines


class Reporter:
    """Silent: the base of the others, and what non-zero ranks use."""

    def start(self, stage: str, total: int | None) -> None: ...

    def update(self, done: int, **fields: Any) -> None: ...

    def stop(self) -> None: ...

    def line(self, text: str, style: str = "") -> None: ...


class CallbackReporter(Reporter):
    """Every event as a dict: {"event": "start"|"update"|"stop"|"line", ...}."""

    def __init__(self, callback: Callable[[dict], None]):
        self.callback, self.stage = callback, None

    def start(self, stage, total):
        self.stage = stage
        self.callback({"event": "start", "stage": stage, "total": total})

    def update(self, done, **fields):
        self.callback({"event": "update", "stage": self.stage, "done": done, **fields})

    def stop(self):
        self.callback({"event": "stop", "stage": self.stage})

    def line(self, text, style=""):
        self.callback({"event": "line", "text": text})


class RichReporter(Reporter):
    """A transient bar per stage on a terminal; the lines stay."""

    def __init__(self, console):
        self.console, self.bar, self.task, self.started, self.log = console, None, None, 0.0, None

    def start(self, stage, total):
        self.stop()
        self.started = time.perf_counter()
        if not self.console.is_terminal:  # a log: a line every half minute instead of a bar
            self.log = LogLines(self.console, stage, total, "samples")
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.fields[info]}"), TimeRemainingColumn(), console=self.console,
                            transient=True)
        self.task = self.bar.add_task(stage, total=total, info="")
        self.bar.start()

    def update(self, done, **fields):
        if self.log is not None:
            self.log.update(done)
        if self.bar is None:
            return
        rate = done / max(time.perf_counter() - self.started, 1e-9)
        info = [f"{rate:,.0f} samples/s"] + [f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                             for k, v in fields.items()]
        self.bar.update(self.task, completed=done, info=" · ".join(info))

    def stop(self):
        if self.bar is not None:
            self.bar.stop()
        self.bar, self.task, self.log = None, None, None

    def line(self, text, style=""):
        self.console.print(f"[{style}]{text}[/]" if style else text, highlight=False)


def reporter(progress: Any, main: bool = True) -> Reporter:
    if progress is None or not main:
        return Reporter()
    if hasattr(progress, "is_terminal"):  # a rich Console
        return RichReporter(progress)
    if callable(progress):
        return CallbackReporter(progress)
    raise TypeError(f"progress must be a rich Console, a callable or None, not {type(progress).__name__}")
