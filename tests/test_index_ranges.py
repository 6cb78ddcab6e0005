"""Token ids beyond the table they index are refused with the data's other checks (exit 2, one line), before
pruning or training; random inputs span the table. Oracles: the embedding sizes the zoo models were built
with, and onnxruntime's own refusal of such an id."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from cli_runner import cli

from onnxkd.data import input_specs, random_inputs

VOCAB = {"bert": 50, "gpt": 50, "llama": 50}  # tests/models.py: every token model embeds 50 ids


@pytest.mark.parametrize("name, exporter", [("bert", "legacy"), ("gpt", "dynamo"), ("llama", "dynamo")])
def test_the_table_an_input_indexes_is_read_from_the_graph(zoo_model, name, exporter):
    path = zoo_model(name, exporter)
    [spec] = input_specs(onnx.load(str(path)))
    assert spec.index_range == VOCAB[name]
    ids = random_inputs([spec], batch=64)[spec.name]
    assert ids.min() >= 0 and ids.max() < VOCAB[name] and len(np.unique(ids)) > VOCAB[name] // 2
    # the oracle: onnxruntime runs every id the table has, and refuses the first one past it
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    session.run(None, {spec.name: np.full((1, 12), VOCAB[name] - 1, ids.dtype)})
    with pytest.raises(Exception, match="out of bounds|indices"):
        session.run(None, {spec.name: np.full((1, 12), VOCAB[name], ids.dtype)})


def test_image_inputs_and_masks_index_nothing(zoo_model):
    [spec] = input_specs(onnx.load(str(zoo_model("resnet"))))
    assert spec.index_range is None


@pytest.mark.parametrize("command", ["compress", "validate"])
def test_an_id_past_the_vocabulary_stops_with_one_line(zoo_model, tmp_path, capsys, command):
    path = zoo_model("bert")
    ids = np.random.default_rng(0).integers(0, 50, (40, 12))
    ids[7, 3] = 57
    np.savez(tmp_path / "d.npz", **{input_specs(onnx.load(str(path)))[0].name: ids})
    args = {"compress": ["--ratio", "0.5", "-o", str(tmp_path / "s.onnx")], "validate": [str(path)]}[command]
    code, _, err = cli(capsys, command, str(path), *args, "--data", str(tmp_path / "d.npz"))
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert "id 57 is outside the table of 50 rows it indexes (valid ids: 0 to 49)" in err
    assert not (tmp_path / "s.onnx").exists()
