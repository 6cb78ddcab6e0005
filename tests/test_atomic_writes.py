"""Writes are atomic per model and per report: a reader sees the old files or the new ones, never a model
paired with another's weights, a half-written file or two of three report files."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

import onnxkd
from onnxkd.errors import OnnxkdError

TEACHER = Path(__file__).resolve().parents[1] / "examples" / "digits" / "teacher.onnx"
X = np.random.default_rng(0).random((2, 1, 8, 8), dtype=np.float32)


def _run(path) -> np.ndarray:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"image": X})[0]


@pytest.fixture
def models():
    old = onnxkd.load(TEACHER)
    new = onnxkd.prune(old, 0.5).model  # another model with the same interface: outputs differ
    return old, new


def test_replacing_a_model_with_external_data_never_pairs_it_with_other_weights(models, tmp_path, monkeypatch):
    old, new = models
    path = tmp_path / "m.onnx"
    onnxkd.save(old, path, external_data=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "m.onnx.data"]
    expected_old = _run(path)

    real_replace = os.replace

    def crash_at_the_model(src, dst):  # the weights are written; the crash comes before the model is swapped
        if Path(dst) == path:
            raise OSError(28, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", crash_at_the_model)
    with pytest.raises(OnnxkdError, match="cannot write"):
        onnxkd.save(new, path, external_data=True)
    monkeypatch.setattr(os, "replace", real_replace)
    np.testing.assert_array_equal(_run(path), expected_old)  # the old model still reads its own weights
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "m.onnx.data"]  # nothing left behind

    onnxkd.save(new, path, external_data=True)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert len(files) == 2 and "m.onnx.data" not in files  # new weights under a new name, the old ones gone
    reference = tmp_path / "reference"
    reference.mkdir()
    onnxkd.save(new, reference / "new.onnx")
    np.testing.assert_array_equal(_run(path), _run(reference / "new.onnx"))


def test_other_writers_files_are_never_touched(models, tmp_path):
    old, _ = models
    path = tmp_path / "m.onnx"
    others = [tmp_path / "m.onnx.data.tmp", tmp_path / ".m.onnx.0123456789ab.tmp"]  # another writer's temp files
    for other in others:
        other.write_bytes(b"someone else's")
    onnxkd.save(old, path, external_data=True)
    onnxkd.save(old, path, external_data=True)
    assert all(other.read_bytes() == b"someone else's" for other in others)


def test_the_process_umask_is_never_changed(models, tmp_path, monkeypatch):
    """Reading the umask by setting it races with other threads creating files; nothing may call os.umask."""
    old, _ = models

    def forbidden(*args):
        raise AssertionError("os.umask called")

    monkeypatch.setattr(os, "umask", forbidden)
    onnxkd.save(old, tmp_path / "a.onnx")
    onnxkd.save(old, tmp_path / "b.onnx", external_data=True)
    mode = (tmp_path / "a.onnx").stat().st_mode & 0o777
    assert mode & 0o400 and not mode & 0o002  # the usual permissions, not mkstemp's 0600 and never world-writable


def test_a_report_is_written_whole_or_not_at_all(tmp_path, monkeypatch):
    from onnxkd.report import markdown, write_report

    result = onnxkd.validate(TEACHER, TEACHER, runs=5, warmup=0, budget_s=0.1)
    monkeypatch.setattr(markdown, "render", lambda r: (_ for _ in ()).throw(RuntimeError("render failed")))
    with pytest.raises(RuntimeError):
        write_report(result, tmp_path / "report")
    assert list(tmp_path.iterdir()) == []

    monkeypatch.undo()
    real_write = Path.write_text
    calls = []

    def disk_full_on_the_last_file(self, text, *args, **kwargs):
        calls.append(self.name)
        if self.name == "report.html":
            raise OSError(28, "No space left on device")
        return real_write(self, text, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", disk_full_on_the_last_file)
    with pytest.raises(OnnxkdError, match="cannot write"):
        write_report(result, tmp_path / "report")
    assert list(tmp_path.iterdir()) == [] and "report.html" in calls
    monkeypatch.undo()
    (tmp_path / "kept").mkdir()
    (tmp_path / "kept" / "notes.txt").write_text("mine")
    write_report(result, tmp_path / "kept")
    assert sorted(p.name for p in (tmp_path / "kept").iterdir()) == ["notes.txt", "report.html", "report.json",
                                                                     "report.md"]
