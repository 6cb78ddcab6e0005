"""``quantize`` on files as exporters write them, used as users use them: torch's default export (dynamo, weights in
``m.onnx.data``) and a PaddlePaddle-style export with dynamic batch, height and width, given as relative paths
from another folder, the output moved afterwards. The RGB stem is padded (channel_pad.py) in both. Oracles:
onnxruntime on the original files (agreement of the int8 model's classes), the files' bytes (unchanged)."""

from __future__ import annotations

import hashlib
import shutil
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

import onnxkd
from onnxkd.quantize.channel_pad import padded_convolutions


class SmallNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.body = nn.Sequential(nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
                                  nn.Conv2d(32, 32, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(32, 10)

    def forward(self, x):
        return self.head(self.body(self.stem(x)).mean((2, 3)))


def _digest(folder) -> str:
    return hashlib.sha256(b"".join(p.read_bytes() for p in sorted(folder.iterdir()))).hexdigest()


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    folder = tmp_path_factory.mktemp("exports")
    (folder / "models").mkdir()
    torch.manual_seed(0)
    net = SmallNet().eval()
    x = torch.randn(2, 3, 32, 32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (x,), str(folder / "models" / "default.onnx"))  # the default: dynamo + .data
        torch.onnx.export(net, (x,), str(folder / "models" / "dynamic.onnx"), dynamo=False, input_names=["x"],
                          dynamic_axes={"x": {0: "p2o.DynamicDimension.0", 2: "p2o.DynamicDimension.2",
                                              3: "p2o.DynamicDimension.3"}})
    images = torch.randn(320, 3, 32, 32)
    labels = net(images).argmax(1).numpy()
    for name in ("default", "dynamic"):
        model = onnx.load(str(folder / "models" / f"{name}.onnx"), load_external_data=False)
        np.savez(folder / f"{name}.npz", labels=labels, **{model.graph.input[0].name: images.numpy()})
    return folder


@pytest.mark.parametrize("name", ["default", "dynamic"])
def test_an_export_is_quantized_from_another_folder_and_its_output_moves(exports, tmp_path, monkeypatch, capfd, name):
    assert name != "default" or (exports / "models" / "default.onnx.data").exists()
    before = _digest(exports / "models")
    run = tmp_path / "run"
    run.mkdir()
    monkeypatch.chdir(run)

    def times_of(path):  # the padded stem profiles faster; every other node as fast in both
        graph = onnx.load(str(path), load_external_data=False).graph
        return {n.name: 50.0 if padded_convolutions(graph.node) else 100.0 for n in graph.node if n.op_type == "Conv"}

    result = onnxkd.quantize(f"../../{exports.name}/models/{name}.onnx", f"../../{exports.name}/{name}.npz",
                             times_of=times_of,
                             speedups_of=lambda *a, **k: lambda candidate: {1: 2.0, 8: 2.0}, max_accuracy_drop=0.05)
    # onnxruntime's own warnings (initializers the normalised graph no longer uses) stay off the user's terminal
    assert "onnxruntime" not in capfd.readouterr().err
    stem = result.padded_inputs
    assert result.int8 and len(stem) == 1 and result.quantized_nodes == result.compute_nodes == 4
    (tmp_path / "out").mkdir()
    onnxkd.save(result.model, tmp_path / "out" / "int8.onnx")
    shutil.move(str(tmp_path / "out"), str(tmp_path / "moved"))
    moved = tmp_path / "moved" / "int8.onnx"
    assert padded_convolutions(onnx.load(str(moved), load_external_data=False).graph.node) == stem
    data = np.load(exports / f"{name}.npz")
    input_name = [k for k in data.files if k != "labels"][0]
    batches = np.split(data[input_name][:64], 32)  # torch's default export keeps the batch of 2 it was given

    def classes(path):
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return np.concatenate([session.run(None, {input_name: x})[0].argmax(1) for x in batches])

    assert np.mean(classes(moved) == classes(exports / "models" / f"{name}.onnx")) >= 0.9
    if name == "dynamic":  # height and width stay free: another image size runs
        wide = np.random.default_rng(0).standard_normal((3, 3, 40, 56)).astype(np.float32)
        assert ort.InferenceSession(str(moved), providers=["CPUExecutionProvider"]).run(None, {"x": wide})[0].shape \
            == (3, 10)
    assert _digest(exports / "models") == before
