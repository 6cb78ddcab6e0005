"""Progress written to a log (no terminal): a line every half minute, so a long stage is not silent."""

from __future__ import annotations

import io

from rich.console import Console

from onnxkd.distill.progress import reporter
from onnxkd.log_lines import LogLines
from onnxkd.report.progress import StageBars


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_a_line_every_half_minute_with_the_rate_and_what_is_left():
    out, clock = io.StringIO(), Clock()
    log = LogLines(Console(file=out, width=200), "kd importance", 1000, "samples", clock=clock)
    for done, now in ((100, 10.0), (300, 30.0), (400, 45.0), (700, 70.0)):
        clock.now = now
        log.update(done)
    assert out.getvalue().splitlines() == [
        "      kd importance: 300/1,000 samples (10.0 samples/s, about 70 s left)",
        "      kd importance: 700/1,000 samples (10.0 samples/s, about 30 s left)"]


def test_the_reporters_log_where_they_cannot_draw_a_bar(monkeypatch):
    import onnxkd.log_lines as log_lines

    monkeypatch.setattr(log_lines, "EVERY_S", 0.0)
    out = io.StringIO()
    console = Console(file=out, width=200)  # a file: not a terminal
    report = reporter(console)
    report.start("epoch 1/2", 64)
    report.update(32)
    report.stop()
    with StageBars(console) as progress:
        progress("latency, batch 1", 5, 20)
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("      epoch 1/2: 32/64 samples (") and lines[1].startswith("      latency, batch 1: 5/20 runs (")
