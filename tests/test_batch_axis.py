"""Seq-first models (x[T, batch, C] -> y[batch, K], torch's LSTM and Transformer layers by default): data holds
samples on axis 0 ([N, T, C]) as for any model, and onnxkd moves them to the model's batch axis as they enter it
(onnxruntime sessions, the torch bridge, calibration). Before, such a model was refused: fed as it is, time steps
would have been read as samples. The oracle is onnxruntime fed the transposed data by the test itself."""

from __future__ import annotations

import json
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from cli_runner import cli
from torch import nn

import onnxkd
from onnxkd.data import input_specs, random_inputs
from onnxkd.data.batch_axes import input_batch_axes
from onnxkd.data.dataset import Dataset
from onnxkd.quantize.calibration import DataReader
from onnxkd.torch_bridge.gradients import initializer_gradients
from onnxkd.validate.sessions import SessionConfig, create_session

T, C, CLASSES = 12, 8, 4


class _SeqFirst(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj, self.head = nn.Linear(C, 48), nn.Linear(48, CLASSES)

    def forward(self, x):  # x: [T, N, C]
        return self.head(torch.relu(self.proj(x)).mean(0))


def _task(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """[N, T, C] samples (samples on axis 0, as data files hold them); the label is the channel among the first four
    whose mean over time is largest, read through a noisy mix of the others."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, T, C)).astype(np.float32)
    return x, (x[:, :, :CLASSES].mean(1) + 0.3 * x[:, :, CLASSES:].mean(1)).argmax(1)


def _trained() -> nn.Module:
    torch.manual_seed(0)
    model = _SeqFirst()
    x, y = _task(512, 1)
    inputs, labels = torch.from_numpy(x).transpose(0, 1), torch.from_numpy(y)
    optimizer = torch.optim.Adam(model.parameters(), 1e-2)
    for _ in range(150):
        loss = nn.functional.cross_entropy(model(inputs), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def _export(path, axes: dict, output_axes: dict | None = None) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(_trained(), (torch.randn(T, 2, C),), str(path), dynamo=False, input_names=["x"],
                          output_names=["y"], dynamic_axes={"x": axes, "y": output_axes or {0: "batch"}})
    return str(path)


class _BatchFirst(nn.Module):
    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x):  # x: [N, T, C]
        return self.inner(x.transpose(0, 1))


def _export_twin(path) -> str:
    """The same trained weights, exported batch-first: x[batch, T, C], the transpose inside the graph."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(_BatchFirst(_trained()), (torch.randn(2, T, C),), str(path), dynamo=False,
                          input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}})
    return str(path)


def _ort_scores(path: str, x: np.ndarray) -> np.ndarray:
    """The model's scores for samples-first ``x``, fed seq-first by hand."""
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return session.run(None, {"x": np.ascontiguousarray(x.transpose(1, 0, 2))})[0]


@pytest.mark.parametrize("inputs, outputs, expected", [
    ({"x": ["time", "batch", 8]}, ["batch"], {"x": 1}),
    ({"x": [12, "batch", 8]}, ["batch"], {"x": 1}),
    ({"x": ["time", "batch", 8], "mask": ["batch", "time"]}, ["batch", "batch"], {"x": 1}),
    ({"x": ["batch", "time", 8]}, ["batch"], {}),
    ({"x": [1, "seq", 8]}, ["seq"], {}),  # a fixed batch of one, squeezed away: read as it is
    ({"x": ["time", "batch", 8]}, ["time"], {"x": 1}),  # seq-first outputs too: the batch is told by its name
    ({"x": ["T", "batch_size", 8]}, ["T"], {"x": 1}),
    ({"x": ["time", "n", 8]}, ["time"], {}),  # nothing tells the batch apart: axis 0 is read as it
    ({"x": ["batch", "time", 8]}, ["batch"], {}),
    ({"x": ["time", "batch", 8]}, ["batch", None], {"x": 1}),
])
def test_which_inputs_are_seq_first(inputs, outputs, expected):
    assert input_batch_axes(inputs, outputs) == expected


def test_validate_feeds_the_batch_on_axis_1_and_its_accuracy_is_onnxruntimes(tmp_path, capsys):
    model = _export(tmp_path / "seq_first.onnx", {0: "time", 1: "batch"})
    x, y = _task(200, 2)
    np.savez(tmp_path / "data.npz", x=x, labels=y)
    expected = float((_ort_scores(model, x).argmax(1) == y).mean())
    assert 0.75 < expected < 1.0  # a trained model that is not perfect: a wrong feed would not match it
    code, _, err = cli(capsys, "validate", model, model, "--data", str(tmp_path / "data.npz"), "--runs", "3",
                       "--report", str(tmp_path / "report"))
    assert code == 0, err
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    accuracy = report["accuracy"]
    assert accuracy["teacher"] == pytest.approx(expected) and accuracy["student"] == pytest.approx(expected)
    # MACs of one sample in the model's layout, x[12, 1, 8]: the projection at every step, then the head
    assert report["teacher"]["macs"] == T * C * 48 + 48 * CLASSES
    assert report["teacher"]["inputs"][0]["measured_shape"] == [T, 1, C]


def test_compress_of_a_seq_first_export_equals_compress_of_its_batch_first_twin(tmp_path, capsys):
    """The same weights exported batch-first (the transpose inside the graph) compress to the same student: the
    samples are the same samples at every stage (pruning scores, distillation, validation)."""
    students = {}
    for name, path in (("seq_first", _export(tmp_path / "seq_first.onnx", {1: "batch"})),
                       ("twin", _export_twin(tmp_path / "twin.onnx"))):
        x, y = _task(400, 3)
        np.savez(tmp_path / "train.npz", x=x, labels=y)
        (tmp_path / name).mkdir()
        students[name] = student = str(tmp_path / name / "student.onnx")
        code, _, err = cli(capsys, "compress", path, "--ratio", "0.5", "--data", str(tmp_path / "train.npz"),
                           "--epochs", "3", "-o", student)
        assert code == 0, err
    declared = [[d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
                for v in onnx.load(students["seq_first"]).graph.input]
    assert declared == [[T, "batch", C]]  # seq-first still: the interface is the teacher's
    held_x, _ = _task(300, 4)
    twin_scores = ort.InferenceSession(students["twin"]).run(None, {"x": held_x})[0]
    np.testing.assert_allclose(_ort_scores(students["seq_first"], held_x), twin_scores, rtol=1e-4, atol=1e-5)
    params = [sum(np.prod(t.dims) for t in onnx.load(path).graph.initializer)
              for path in (str(tmp_path / "seq_first.onnx"), students["seq_first"])]
    assert params[1] < 0.7 * params[0], params  # pruned


class _Tagger(_SeqFirst):
    def forward(self, x):  # x: [T, N, C] -> [T, N, classes], one prediction per step
        return self.head(torch.relu(self.proj(x)))


class _TaggerTwin(nn.Module):
    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x):  # x: [N, T, C] -> [N, T, classes]
        return self.inner(x.transpose(0, 1)).transpose(0, 1)


def test_a_seq_first_tagger_is_told_by_its_batch_dims_name(tmp_path, capsys):
    """x[time, batch, C] -> y[time, batch, K]: the outputs do not tell which axis is the batch, the name does. The
    student equals the batch-first twin's (the outputs' samples found on axis 1 by two short runs)."""
    torch.manual_seed(0)
    tagger = _Tagger().eval()
    x, _ = _task(200, 8)
    np.savez(tmp_path / "train.npz", x=x)
    students = {}
    for name, module, example, axes in (("seq_first", tagger, torch.randn(T, 2, C), {0: "time", 1: "batch"}),
                                        ("twin", _TaggerTwin(tagger), torch.randn(2, T, C), {0: "batch", 1: "time"})):
        path = str(tmp_path / f"{name}.onnx")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(module, (example,), path, dynamo=False, input_names=["x"], output_names=["y"],
                              dynamic_axes={"x": axes, "y": axes})
        (tmp_path / name).mkdir()
        students[name] = student = str(tmp_path / name / "student.onnx")
        code, _, err = cli(capsys, "compress", path, "--ratio", "0.5", "--data", str(tmp_path / "train.npz"),
                           "--epochs", "2", "-o", student)
        assert code == 0, err
    held_x, _ = _task(50, 9)
    twin_scores = ort.InferenceSession(students["twin"]).run(None, {"x": held_x})[0]
    seq_scores = _ort_scores(students["seq_first"], held_x)
    assert seq_scores.shape == (T, 50, CLASSES)
    np.testing.assert_allclose(seq_scores.transpose(1, 0, 2), twin_scores, rtol=1e-4, atol=1e-5)


def test_data_given_seq_first_is_refused_with_where_the_samples_go(tmp_path, capsys):
    model = _export(tmp_path / "seq_first.onnx", {1: "batch"})
    np.savez(tmp_path / "data.npz", x=np.zeros((T, 16, C), np.float32))  # [T, N, C]: the model's layout
    code, _, err = cli(capsys, "validate", model, model, "--data", str(tmp_path / "data.npz"))
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "dim 1 is 16" in err and "its batch is axis 1, data gives samples on axis 0: [N,12,8]" in err
    # with a dynamic time dim the shape cannot tell, the labels can
    model = _export(tmp_path / "dynamic_time.onnx", {0: "time", 1: "batch"})
    np.savez(tmp_path / "labelled.npz", x=np.zeros((T, 16, C), np.float32), labels=np.zeros(16, np.int64))
    code, _, err = cli(capsys, "validate", model, model, "--data", str(tmp_path / "labelled.npz"))
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "16 labels for 12 samples (a seq-first model; its batch is axis 1, data gives samples on axis 0: " \
           "[N,time,8])" in err


def test_inspect_notes_how_the_model_is_fed(tmp_path, capsys):
    model = _export(tmp_path / "seq_first.onnx", {0: "time", 1: "batch"})
    code, out, _ = cli(capsys, "inspect", model, "--json")
    assert code == 0 and "moves them to the model's batch axis" in json.loads(out)["note"]
    code, out, _ = cli(capsys, "inspect", model)
    assert code == 0 and "float32[time,batch,8]" in out  # markup-escaped
    code, out, _ = cli(capsys, "inspect", _export(tmp_path / "fixed_time.onnx", {1: "batch"}), "--json")
    assert code == 0 and json.loads(out)["summary"]["macs"] == T * C * 48 + 48 * CLASSES  # at x[12, 1, 8]


def test_sessions_calibration_and_random_inputs_take_samples_on_axis_0(tmp_path):
    model = _export(tmp_path / "seq_first.onnx", {0: "time", 1: "batch"})
    [spec] = input_specs(onnx.load(model))
    assert spec.batch_axis == 1 and spec.sample_dims == ("time", C) and spec.fixed_batch is None
    x, _ = _task(5, 5)
    session, _ = create_session(model, SessionConfig(provider="cpu"), "model")
    np.testing.assert_allclose(session.run(None, {"x": x})[0], _ort_scores(model, x), rtol=1e-6)
    reader = DataReader(Dataset({"x": x}), 2, {"x": 1})
    assert [feed["x"].shape for feed in iter(reader.get_next, None)] == [(T, 2, C), (T, 2, C), (T, 1, C)]
    assert random_inputs([spec], {"x": (7, 1, C)}, batch=3)["x"].shape == (3, 7, C)


def test_distill_and_taylor_scores_move_the_samples_into_the_torch_module(tmp_path):
    """The torch side, through the Python API: distilling the seq-first export and its batch-first twin gives the
    same student (with a feature hint), and so do their Taylor scores (the gradients of every weight)."""
    x, y = _task(300, 6)
    held_x, _ = _task(100, 7)
    models = {"seq_first": _export(tmp_path / "seq_first.onnx", {0: "time", 1: "batch"}),
              "twin": _export_twin(tmp_path / "twin.onnx")}
    scores = {}
    for name, teacher in models.items():
        student = tmp_path / f"{name}-student.onnx"
        # hints on an inner tensor, [T, batch, 48] in both graphs: cached and cut with their samples on axis 0
        result = onnxkd.distill(teacher, onnxkd.prune(teacher, 0.5, round_to=1).model, {"x": x, "labels": y},
                                epochs=2, hints=["auto"], output=student)
        assert result.hints and all(h["removed"] == {"2": 24} for h in result.hints)
        scores[name] = (_ort_scores(str(student), held_x) if name == "seq_first"
                        else ort.InferenceSession(str(student)).run(None, {"x": held_x})[0])
    np.testing.assert_allclose(scores["seq_first"], scores["twin"], rtol=1e-4, atol=1e-5)

    data = Dataset({"x": x[:64]}, y[:64])
    seq_first = initializer_gradients(models["seq_first"], data, batch_size=16)
    twin = initializer_gradients(models["twin"], data, batch_size=16)
    assert len(seq_first) == len(twin) == 4  # the same weights in the same order, under the exporter's names
    for grad, twin_grad in zip(seq_first.values(), twin.values()):
        assert np.abs(grad).max() > 0
        np.testing.assert_allclose(grad, twin_grad, rtol=1e-4, atol=1e-7)


def test_a_fixed_batch_of_one_with_a_squeezed_output_is_read_as_it_is(tmp_path):
    """x[1, seq, 8] -> y[seq, 4]: axis 0 of the output is the input's axis 1, but a batch of one is a batch."""
    class Squeezed(_SeqFirst):
        def forward(self, x):
            return self.head(torch.relu(self.proj(x[0])))

    path = tmp_path / "squeezed.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Squeezed().eval(), (torch.randn(1, 12, 8),), str(path), dynamo=False, input_names=["x"],
                          output_names=["y"], dynamic_axes={"x": {1: "seq"}, "y": {0: "seq"}})
    assert onnxkd.prune(path, 0.5, round_to=1).summary["pruned"] == 1


def test_a_hint_held_samples_first_moves_the_axes_before_the_batch():
    from onnxkd.distill.hints import Hint

    # y[T, directions, batch, H] (ONNX's LSTM output) held as [batch, T, directions, H]
    assert Hint("y", {1: [0], 3: [2, 5]}).samples_first(2).removed == {2: [0], 3: [2, 5]}
