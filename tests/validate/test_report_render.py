"""The report layer renders a plain dict (e.g. a report.json read back) without onnxruntime or torch."""

from __future__ import annotations

import json
import subprocess
import sys

from rich.console import Console

from onnxkd.report import plots, write_report
from onnxkd.report.terminal import render
from onnxkd.validate.api import validate


def test_rerender_from_json_and_plots(models, labelled, tmp_path):
    r = validate(models["teacher"], models["student"], labelled["path"], runs=5, warmup=1, budget_s=0.2).to_dict()
    r = json.loads(json.dumps(r))  # exactly what a report.json reader sees
    pngs = plots.render_all(r)
    assert set(pngs) == {"latency", "quality", "channels"} and all(p.startswith(b"\x89PNG") for p in pngs.values())
    write_report(r, tmp_path / "again")
    assert (tmp_path / "again" / "report.html").stat().st_size > 10_000
    console = Console(record=True, width=100)
    render(r, console)
    text = console.export_text()
    assert "Teacher vs student" in text and "75.0%" in text


def test_report_and_validate_import_neither_torch_nor_report_onnxruntime():
    code = ("import sys, onnxkd.report, onnxkd.report.html, onnxkd.report.markdown, onnxkd.report.plots, "
            "onnxkd.report.terminal; assert 'onnxruntime' not in sys.modules; "
            "import onnxkd.validate.api, onnxkd.commands.validate; assert 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
