"""Progress bars for measurements that report ``progress(stage, done, total)`` (validation, latency)."""

from __future__ import annotations


class StageBars:
    """A rich progress bar (stage, it/s, ETA) on a terminal; nothing when output is piped or tested."""

    def __init__(self, console):
        self.console, self.bar, self.tasks = console, None, {}

    def __enter__(self):
        if not self.console.is_terminal:
            return None
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

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.__exit__(*exc)
        return False
