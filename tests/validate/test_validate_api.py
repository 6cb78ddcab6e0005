"""validate(): every figure against the numpy oracle of the tiny classifier."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from tiny_onnx import classifier, forward

import onnxkd
from onnxkd.errors import OnnxkdError
from onnxkd.validate.api import validate

FAST = {"runs": 5, "warmup": 1, "budget_s": 0.2}


@pytest.fixture(scope="module")
def result(models, labelled):
    return validate(models["teacher"], models["student"], labelled["path"], batch_size=8, **FAST)


def test_accuracy_and_agreement_match_independent_argmaxes(result, labelled):
    labels, t_pred, s_pred = labelled["labels"], labelled["t_pred"], labelled["s_pred"]
    assert result.teacher.accuracy == 0.75  # by construction of the labels
    assert result.student.accuracy == pytest.approx(np.mean(s_pred == labels))
    assert result.accuracy["drop"] == pytest.approx(0.75 - np.mean(s_pred == labels))
    lo, hi = result.accuracy["drop_ci95"]
    assert lo <= result.accuracy["drop"] <= hi
    assert result.agreement["top1"] == pytest.approx(np.mean(t_pred == s_pred))
    assert result.data == {"source": str(labelled["path"]), "n": 40, "labels": True}


def test_output_errors_match_the_numpy_forward_pass(result, models, labelled):
    t = forward(models["tw"], labelled["x"].astype(np.float64))
    s = forward(models["sw"], labelled["x"].astype(np.float64))
    q = result.quality[0]
    assert q["name"] == "logits" and q["shape"] == [40, 10]
    assert q["max_abs_error"] == pytest.approx(np.abs(t - s).max(), rel=1e-4)
    assert q["mean_abs_error"] == pytest.approx(np.abs(t - s).mean(), rel=1e-4)


def test_static_figures(result, models):
    assert result.teacher.params == 1562 and result.student.params == 4 * 27 + 4 + 8 * 36 + 8 + 80 + 10
    assert result.teacher.macs == 8 * 64 * 27 + 16 * 16 * 72 + 160  # at the measured shape 1x3x8x8
    assert result.student.macs == 4 * 64 * 27 + 8 * 16 * 36 + 80
    assert result.speedup["macs_reduction"] == pytest.approx(result.teacher.macs / result.student.macs)
    assert result.teacher.size_bytes == models["teacher"].stat().st_size
    assert [c["kept"] for c in result.channels] == [0.5, 0.5, 1.0]
    assert result.teacher.inputs == [{"name": "x", "dtype": "float32", "shape": ["N", 3, 8, 8],
                                      "measured_shape": [1, 3, 8, 8]}]


def test_latency_and_environment(result):
    for model in (result.teacher, result.student):
        lat = model.latency_ms
        assert lat["batch_size"] == 1 and lat["n"] == len(lat["samples"]) >= 5
        assert lat["p50"] == pytest.approx(np.median(lat["samples"]))
        assert model.latency_ms_batched["batch_size"] == 8
        assert model.session_create_ms > 0 and model.first_run_ms > 0
    t, s = result.teacher.latency_ms["samples"], result.student.latency_ms["samples"]
    assert result.speedup["p50"] == pytest.approx(np.median(t) / np.median(s))
    lo, hi = result.speedup["ci95"]
    assert lo <= result.speedup["p50"] <= hi
    env = result.environment
    assert env["onnxruntime_version"] and env["providers"] == ["CPUExecutionProvider"] and env["cpu_model"]
    assert len(result.teacher.sha256) == 64


def test_to_dict_is_the_report_schema(result):
    d = result.to_dict()
    assert d["schema_version"] == "1.3"
    for who in ("teacher", "student"):
        assert {"params", "macs", "macs_int8", "size_bytes", "accuracy", "latency_ms"} <= set(d[who])
        assert d[who]["macs_int8"] == 0  # float models
        assert {"p50", "p90", "p95", "p99", "mean", "std", "samples"} <= set(d[who]["latency_ms"])
    assert "top1" in d["agreement"] and "p50" in d["speedup"] and "onnxruntime_version" in d["environment"]


def test_without_data_quality_is_omitted(models):
    r = validate(models["teacher"], models["student"], **FAST)
    assert r.accuracy is None and r.agreement is None and r.quality == [] and r.teacher.accuracy is None
    assert r.teacher.latency_ms["n"] >= 5
    with pytest.raises(OnnxkdError, match="--min-agreement needs --data"):
        validate(models["teacher"], models["student"], min_agreement=0.9, **FAST)


def test_in_memory_models_a_fixed_batch_and_dict_data(tmp_path):
    teacher, tw = classifier(8, 16, batch=1)
    student, sw = classifier(4, 8, batch=1)
    x = np.random.default_rng(3).standard_normal((5, 3, 8, 8)).astype(np.float32)
    r = onnxkd.validate(teacher, student, {"x": x}, batch_size=4, **FAST)
    assert r.teacher.latency_ms_batched is None and r.speedup["batched"] is None  # the model fixes batch 1
    expected = np.mean(forward(tw, x).argmax(1) == forward(sw, x).argmax(1))
    assert r.agreement["top1"] == pytest.approx(expected) and r.agreement["n"] == 5


def test_gates(models, labelled):
    r = validate(models["teacher"], models["student"], labelled["path"], max_accuracy_drop=1.0, min_agreement=0.0,
                 min_speedup=1e6, **FAST)
    assert [(g["name"], g["passed"]) for g in r.gates] == [
        ("accuracy drop", True), ("top-1 agreement", True), ("speed-up p50", False), ("finite outputs", True)]
    assert not r.passed and r.to_dict()["passed"] is False


def test_a_gate_at_its_threshold_passes_despite_floating_point_rounding():
    from onnxkd.validate.gates import Gates, evaluate

    drop, agreement = 0.5 - 0.49, 0.99 - 1e-15  # 0.010000000000000009, and 0.99 off by a rounding
    results = evaluate(Gates(max_accuracy_drop=0.01, min_agreement=0.99), drop, agreement, None)
    assert drop > 0.01 and agreement < 0.99 and all(g["passed"] for g in results)
    failing = evaluate(Gates(max_accuracy_drop=0.0099, min_agreement=0.9901), drop, agreement, None)
    assert [g["passed"] for g in failing] == [False, False, True]  # the third: finite outputs


def test_models_that_cannot_be_compared(tmp_path, models):
    other, _ = classifier(4, 8)
    other.graph.input[0].name = "image"
    other.graph.node[0].input[0] = "image"
    # another name alone is paired by position (a student exported by another tool), and said so
    result = validate(models["teacher"], other, **FAST)
    assert any("paired by position" in w for w in result.warnings)
    # each model is described under its own names (the teacher's were reported as the student's)
    figures = result.to_dict()
    assert [i["name"] for i in figures["teacher"]["inputs"]] == ["x"]
    assert [i["name"] for i in figures["student"]["inputs"]] == ["image"]
    other.graph.input.append(onnx.helper.make_tensor_value_info("extra", onnx.TensorProto.FLOAT, [1]))
    with pytest.raises(OnnxkdError, match="inputs .* differ"):
        validate(models["teacher"], other, **FAST)
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(OnnxkdError, match="student .*junk.onnx: not a valid ONNX model"):
        validate(models["teacher"], junk, **FAST)
    with pytest.raises(OnnxkdError, match="--provider cuda"):
        validate(models["teacher"], models["student"], provider="cuda", **FAST)
    labels_too_big = tmp_path / "big.npz"
    np.savez(labels_too_big, x=np.zeros((2, 3, 8, 8), np.float32), labels=np.array([0, 10]))
    with pytest.raises(OnnxkdError, match="class id 10 >= the 10 scores of output 'logits'"):
        validate(models["teacher"], models["student"], labels_too_big, **FAST)
    onnx.save(onnx.ModelProto(), tmp_path / "empty.onnx")
    with pytest.raises(OnnxkdError):
        validate(tmp_path / "empty.onnx", models["student"], **FAST)


def _with_feature_output(model):
    from onnx import TensorProto, helper

    model = onnx.ModelProto.FromString(model.SerializeToString())
    model.graph.output.append(helper.make_tensor_value_info("r2", TensorProto.FLOAT, ["N", None, 4, 4]))
    return model


def test_every_output_is_compared_and_shapes_must_match(labelled):
    teacher, tw = classifier(8, 16, seed=0)
    student, sw = classifier(8, 16, seed=1)
    r = validate(_with_feature_output(teacher), _with_feature_output(student), labelled["path"], **FAST)
    assert [q["name"] for q in r.quality] == ["logits", "r2"]
    assert r.quality[1]["shape"] == [40, 16, 4, 4] and r.quality[1]["kl"] is None
    assert r.agreement["output"] == "logits"
    x = labelled["x"].astype(np.float64)
    assert r.agreement["top1"] == pytest.approx(np.mean(forward(tw, x).argmax(1) == forward(sw, x).argmax(1)))
    small, _ = classifier(4, 8)
    with pytest.raises(OnnxkdError, match=r"output 1: teacher shape \[1, 16, 4, 4\], student shape \[1, 8, 4, 4\]"):
        validate(_with_feature_output(teacher), _with_feature_output(small), **FAST)


def test_a_student_that_is_not_faster_is_warned_about_with_the_macs_reduction(result):
    from onnxkd.validate.api import _speed_warnings

    slow = {"p50": 0.9, "ci95": [0.85, 0.95], "batch_size": 1, "macs_reduction": 2.79, "batched": None}
    (warning,) = _speed_warnings(slow, result.teacher, result.student)
    assert "not faster" in warning and "0.90x" in warning and "MACs reduction 2.79x" in warning
    noisy = dict(slow, p50=1.1, ci95=[0.98, 1.2])
    assert "not significant" in _speed_warnings(noisy, result.teacher, result.student)[0]
    assert _speed_warnings(dict(slow, p50=2.0, ci95=[1.9, 2.1]), result.teacher, result.student) == []
