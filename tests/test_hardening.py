"""Defects found in a review of the landed code, each pinned by a test that failed before its fix."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
from pathlib import Path

import pytest

import onnxkd

ROOT = Path(__file__).resolve().parents[1]
TEACHER = ROOT / "examples" / "digits" / "teacher.onnx"


def test_an_internal_error_exits_3_not_1_like_a_failed_gate(monkeypatch, capsys, tmp_path):
    from onnxkd.cli import main
    from onnxkd.graph_passes import api

    def bug(*args, **kwargs):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(api, "prune", bug)
    with pytest.raises(SystemExit) as exit_info:
        main(["prune", str(TEACHER), "--ratio", "0.5", "-o", str(tmp_path / "s.onnx")])
    assert exit_info.value.code == 3
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == ["Error: internal error: ZeroDivisionError: division by zero (add --debug for the traceback)"]
    # --debug where users add it, after the command, gives the traceback
    with pytest.raises(ZeroDivisionError):
        main(["prune", str(TEACHER), "--ratio", "0.5", "-o", str(tmp_path / "s.onnx"), "--debug"])


@pytest.mark.parametrize("rank, said", [(None, "Interrupted.\n"), ("0", "Interrupted.\n"), ("1", "")])
def test_ctrl_c_exits_130_and_one_torchrun_rank_says_so(monkeypatch, capsys, tmp_path, rank, said):
    """torchrun interrupts every rank: each printed the line."""
    from onnxkd.cli import main
    from onnxkd.graph_passes import api

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(api, "prune", interrupted)
    if rank is not None:
        monkeypatch.setenv("RANK", rank)
    with pytest.raises(SystemExit) as exit_info:
        main(["prune", str(TEACHER), "--ratio", "0.5", "-o", str(tmp_path / "s.onnx")])
    assert exit_info.value.code == 130 and capsys.readouterr().err.strip() == said.strip()


@pytest.mark.parametrize("args, message", [
    (["--criterion", "foo"], "Invalid value for '--criterion': 'foo' is not one of"),
    (["--batch-size", "0"], "Invalid value for '--batch-size': 0 is not in the range"),
    (["--no-such-flag"], "No such option '--no-such-flag'"),
])
def test_a_bad_flag_or_value_is_one_line_exit_2(capsys, tmp_path, args, message):
    from onnxkd.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["prune", str(TEACHER), "-o", str(tmp_path / "s.onnx"), *args])
    lines = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(lines) == 1, lines
    assert lines[0].startswith("Error: ") and message in lines[0] and lines[0].endswith("(see onnxkd prune --help)")


def test_validate_and_metrics_leave_the_callers_models_unchanged():
    import onnx_ir as ir

    teacher = onnxkd.load(TEACHER)
    student = onnxkd.prune(teacher, 0.5).model
    before = [ir.to_proto(m).SerializeToString() for m in (teacher, student)]
    onnxkd.validate(teacher, student, runs=5, warmup=0, budget_s=0.1)
    assert [ir.to_proto(m).SerializeToString() for m in (teacher, student)] == before


def test_writing_a_report_leaves_matplotlib_state_alone(tmp_path):
    """A notebook's backend and open figures stay as they were (plots draw on their own Agg canvas)."""
    import matplotlib

    matplotlib.use("svg")
    import matplotlib.pyplot as plt

    figure = plt.figure()
    from onnxkd.report import write_report

    write_report(onnxkd.validate(TEACHER, TEACHER, runs=5, warmup=0, budget_s=0.1), tmp_path / "r")
    assert matplotlib.get_backend() == "svg" and plt.get_fignums() == [figure.number]
    plt.close(figure)


def test_onnxscript_is_a_runtime_dependency():
    """Normalisation folds constants with onnxscript when onnxsim is not used: an install without the test
    extra must have it (it was only in the test extra, and folding was skipped silently)."""
    requires = importlib.metadata.requires("onnxkd") or []
    runtime = [r for r in requires if "extra ==" not in r]
    assert any(r.startswith("onnxscript") for r in runtime), requires


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="CUDA is here: the check runs for real")
def test_gpu_check_fails_loudly_without_cuda():
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_check.py")], capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 1 and "CUDA is not available" in run.stdout


def test_prune_runs_the_full_onnx_checker_and_a_failure_is_an_internal_error(monkeypatch, capsys, tmp_path):
    from onnxkd.cli import main
    from onnxkd.graph_passes import api

    real = api.apply_plan

    def broken_rewrite(model, groups, plan):
        real(model, groups, plan)
        next(iter(model.graph)).op_type = "NoSuchOp"  # not an ONNX operator: the checker must refuse it

    monkeypatch.setattr(api, "apply_plan", broken_rewrite)
    with pytest.raises(SystemExit) as exit_info:
        main(["prune", str(TEACHER), "--ratio", "0.5", "-o", str(tmp_path / "s.onnx")])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 3 and len(err) == 1, err
    assert "InvalidPrunedModel" in err[0] and "ONNX checker rejects" in err[0] and "NoSuchOp" in err[0] and "teacher.onnx" in err[0]
    assert not (tmp_path / "s.onnx").exists()


def test_a_missing_validation_file_is_named_as_itself(capsys, tmp_path):
    """It was reported as '--data missing_val.npz', the flag the user had given right."""
    from onnxkd.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["compress", str(TEACHER), "--data", str(ROOT / "examples" / "digits" / "train.npz"),
              "--val-data", str(tmp_path / "missing_val.npz"), "-o", str(tmp_path / "s.onnx")])
    lines = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and lines == [f"Error: {tmp_path / 'missing_val.npz'}: no such file or folder"]
