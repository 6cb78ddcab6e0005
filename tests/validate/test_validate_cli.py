"""`onnxkd validate` end to end: report files, plots, exit codes, one-line errors."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from onnxkd.cli import cli

FAST = ["--runs", "5", "--warmup", "1", "--time-budget", "0.2"]


@pytest.fixture(scope="module")
def report(models, labelled, tmp_path_factory):
    folder = tmp_path_factory.mktemp("report") / "out"
    result = CliRunner().invoke(cli, ["validate", str(models["teacher"]), str(models["student"]), "--data",
                                      str(labelled["path"]), "--report", str(folder), "--min-agreement", "0", *FAST])
    assert result.exit_code == 0, result.output
    return folder, result.output


def test_terminal_shows_the_summary(report):
    _, output = report
    assert "Teacher vs student" in output and "MACs" in output and "fewer" in output and "Gates" in output


def test_report_json_parses_with_the_schema(report, labelled):
    r = json.loads((report[0] / "report.json").read_text())
    assert r["schema_version"] == "1.3" and r["passed"] is True
    assert r["teacher"]["accuracy"] == 0.75
    assert r["agreement"]["top1"] == pytest.approx(np.mean(labelled["t_pred"] == labelled["s_pred"]))
    assert len(r["student"]["latency_ms"]["samples"]) == r["student"]["latency_ms"]["n"]
    assert r["gates"][0]["name"] == "top-1 agreement"


def test_markdown_and_html_reports(report):
    md = (report[0] / "report.md").read_text()
    assert md.startswith("# onnxkd validate") and "| accuracy | 75.0% |" in md and "## Channels kept per layer" in md
    html = (report[0] / "report.html").read_text()
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(images) == 3  # accuracy/agreement, latency, channels
    import base64
    assert all(base64.b64decode(i).startswith(b"\x89PNG") for i in images)
    assert "<script" not in html and "http" not in html.split("<main>")[1]  # self-contained
    assert sorted(p.name for p in report[0].iterdir()) == ["report.html", "report.json", "report.md"]


def test_json_prints_the_report_json_alone_on_stdout(models, labelled, tmp_path):
    """As compress --json does (the README says: as for validate); the tables go to stderr."""
    ran = CliRunner().invoke(cli, ["validate", str(models["teacher"]), str(models["student"]), "--data",
                                   str(labelled["path"]), "--json", "--report", str(tmp_path / "r"), *FAST])
    assert ran.exit_code == 0, ran.output
    printed = json.loads(ran.stdout)
    written = json.loads((tmp_path / "r" / "report.json").read_text())
    assert printed["accuracy"] == written["accuracy"] and printed["teacher"]["sha256"] == written["teacher"]["sha256"]
    assert printed["teacher"]["accuracy"] == 0.75


def _run(*args):
    return subprocess.run([sys.executable, "-m", "onnxkd", "validate", *map(str, args), *FAST],
                          capture_output=True, text=True, timeout=120)


def test_exit_codes_for_gates(models, labelled, tmp_path):
    passing = _run(models["teacher"], models["student"], "--data", labelled["path"], "--max-accuracy-drop", "1",
                   "--min-speedup", "0")
    assert passing.returncode == 0, passing.stderr
    failing = _run(models["teacher"], models["student"], "--min-speedup", "1000", "--report", tmp_path / "r")
    assert failing.returncode == 1
    assert failing.stderr.strip().splitlines() == [failing.stderr.strip()]  # one line
    assert "speed-up p50" in failing.stderr and "FAIL" in failing.stdout
    assert (tmp_path / "r" / "report.json").exists()  # the report is still written for the pipeline to read


def test_a_student_that_outputs_nan_scores_zero_and_fails_any_gate(models, labelled, tmp_path):
    """numpy's argmax reads a NaN row as class 0: a NaN student was scored as right on every sample of class 0,
    and a loose gate passed it with exit 0."""
    import onnx
    from onnx import numpy_helper

    student = onnx.load(str(models["student"]))
    for init in student.graph.initializer:
        if init.name == "bf":
            init.CopyFrom(numpy_helper.from_array(np.full(numpy_helper.to_array(init).shape, np.nan, np.float32), "bf"))
    broken = tmp_path / "nan.onnx"
    onnx.save(student, broken)
    proc = _run(models["teacher"], broken, "--data", labelled["path"], "--max-accuracy-drop", "1",
                "--min-agreement", "0", "--json")
    assert proc.returncode == 1, proc.stderr
    r = json.loads(proc.stdout)
    assert r["student"]["accuracy"] == 0 and r["agreement"]["top1"] == 0
    assert {g["name"]: g["passed"] for g in r["gates"]} == {
        "accuracy drop": True, "top-1 agreement": True, "finite outputs": False}
    assert "finite outputs" in proc.stderr
    assert "Warning: student output 'logits' has" in proc.stderr  # --json still tells the log why


def test_a_failing_gate_shows_the_digits_that_tell_it_from_its_limit():
    from onnxkd.report.tables import gates

    rows = gates({"gates": [
        {"name": "top-1 agreement", "op": ">=", "threshold": 0.8313, "value": 0.83123, "passed": False},
        {"name": "speed-up p50", "op": ">=", "threshold": 2.4, "value": 2.3981, "passed": False},
        {"name": "accuracy drop", "op": "<=", "threshold": 0.01, "value": 0.005, "passed": True}]}).rows
    assert [row[1:3] for row in rows] == [[">= 83.13%", "83.12%"], [">= 2.400x", "2.398x"], ["<= 1.0%", "0.5%"]]


def test_bad_inputs_exit_2_with_one_line_and_no_report(models, tmp_path):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"this is not onnx")
    bad_data = tmp_path / "bad.npz"
    np.savez(bad_data, x=np.zeros((4, 3, 5, 5), np.float32))
    for args, needle in [
        ((models["teacher"], junk), "student"),
        ((models["teacher"], models["student"], "--data", bad_data), "input 'x'"),
    ]:
        proc = _run(*args, "--report", tmp_path / "out")
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: ") and needle in lines[0], proc.stderr
        assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()


def test_help_has_an_example():
    result = CliRunner().invoke(cli, ["validate", "--help"])
    assert result.exit_code == 0 and "Example:" in result.output and "--max-accuracy-drop" in result.output


def test_readme_documents_every_report_json_field(report):
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    schema = readme.split("### report.json schema", 1)[1].split("```")[1]
    r = json.loads((report[0] / "report.json").read_text())
    documented = re.findall(r"^(\w+(?:, \w+)*)\s", schema, flags=re.M)
    top = {name.strip() for line in documented for name in line.split(",")}
    assert set(r) <= top, set(r) - top
    for field in r["teacher"]:
        assert field in schema, field
