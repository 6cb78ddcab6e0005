"""Progress bars for measurements that report ``progress(stage, done, total)`` (validation, latency)."""

from __future__ import annotations

from onnxkd.log_lines import LogLines


class StageBars:
    """A rich progress bar (stage, it/s, ETA) on a terminal; a line every half minute when output is piped."""

    def __init__(self, console):
        self.console, self.bar, self.tasks, self.logs = console, None, {}, {}

    def __enter__(self):
        if not self.console.is_terminal:
            return self.log
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.fields[rate]}"),
                            TimeRemainingColumn(), console=self.console, transient=True)
        self.bar.__enter__()
        return self.update

    def update(self, stage: str, done: int, total: int) -> None:
        if stage not in self.tasks:
            self.tasks[stage] = self.bar.add_task(stage, total=total, rate="")
        task = self.tasks[stage]
        self.bar.update(task, completed=done)
        speed = self.bar.tasks[task].speed
        self.bar.update(task, rate=f"{speed:,.0f} it/s" if speed else "")

    def log(self, stage: str, done: int, total: int) -> None:
        if stage not in self.logs:
            self.logs[stage] = LogLines(self.console, stage, total, "runs")
        self.logs[stage].update(done)

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.__exit__(*exc)
        return False
