"""`onnxkd optimize`: fused model written only after onnxruntime agrees with the input; the input stays
untouched; --json; one-line errors; a wrong rewrite is refused (exit 3) and nothing is written."""

from __future__ import annotations

import hashlib
import json
import subprocess

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from cli_runner import run_cli as run_in_process


def run_cli(*args) -> subprocess.CompletedProcess:
    return run_in_process(*args, columns=200)


def _sha(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


@pytest.fixture
def written(zoo_model, tmp_path):
    """A copy of the MobileNetV3 whose hard-swish and hard-sigmoid are written out as Add/Clip/Mul/Div."""
    path = tmp_path / "mbv3.onnx"
    path.write_bytes(zoo_model("mobilenetv3w", "legacy").read_bytes())
    return path


def test_optimize_fuses_and_onnxruntime_agrees(written, tmp_path):
    before = _sha(written)
    out = tmp_path / "opt.onnx"
    run = run_cli("optimize", written, "-o", out, "--json")
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout)
    assert summary["fused"]["HardSigmoid/HardSwish"] == 12  # 8 hard-swish (5 convs, 2 more, the head) + 4 SE gates
    assert summary["nodes_after"] < summary["nodes_before"] / 2
    assert _sha(written) == before  # the user's file is never modified
    onnx.checker.check_model(str(out), full_check=True)
    ops = [n.op_type for n in onnx.load(out).graph.node]
    assert ops.count("HardSwish") + ops.count("HardSigmoid") == 12 and "Div" not in ops
    x = np.random.default_rng(0).standard_normal((3, 3, 32, 32)).astype(np.float32)  # batch 3: dynamic batch kept
    expected, actual = (ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
                        for p in (written, out))
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


def test_human_output_is_a_table(written, tmp_path):
    run = run_cli("optimize", written, "-o", tmp_path / "opt.onnx")
    assert run.returncode == 0, run.stderr
    assert "fused HardSigmoid/HardSwish" in run.stdout and "onnxruntime check" in run.stdout and "Wrote" in run.stdout


@pytest.mark.parametrize("args, message", [
    (["{missing}", "-o", "{out}"], "no such file"),
    (["{model}", "-o", "{model}"], "the output path is the input model"),
    (["{model}", "-o", "{nofolder}"], "does not exist"),
    (["{model}", "-o", "{under_a_file}"], "is a file, not a folder"),
])
def test_bad_input_is_one_line_exit_2(written, tmp_path, args, message):
    names = {"missing": tmp_path / "missing.onnx", "out": tmp_path / "o.onnx", "model": written,
             "nofolder": tmp_path / "no" / "o.onnx", "under_a_file": f"{written}/o.onnx"}
    run = run_cli("optimize", *[a.format(**names) for a in args])
    lines = run.stderr.strip().splitlines()
    assert run.returncode == 2 and len(lines) == 1 and lines[0].startswith("Error:") and message in lines[0], run.stderr
    assert not (tmp_path / "o.onnx").exists()


def test_a_rewrite_that_changes_results_is_refused_and_nothing_is_written(written, tmp_path, monkeypatch):
    """The --check guard: a fusion bug must not ship. Simulated by a 'fusion' that turns every HardSwish into Relu."""
    from click.testing import CliRunner

    from onnxkd.cli import cli
    from onnxkd.graph_passes.optimize import api

    real = api.optimize

    def broken(model, *args, **kwargs):
        result = real(model, *args, **kwargs)
        for node in result.model.graph:
            if node.op_type == "HardSwish":
                node.op_type = "Relu"
        return result

    monkeypatch.setattr(api, "optimize", broken)
    monkeypatch.setattr("onnxkd.graph_passes.optimize.optimize", broken)
    out = tmp_path / "opt.onnx"
    result = CliRunner().invoke(cli, ["optimize", str(written), "-o", str(out)])
    assert isinstance(result.exception, RuntimeError) and "differs from its input" in str(result.exception)
    assert not out.exists()
