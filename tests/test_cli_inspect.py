"""`onnxkd inspect`: the op table against the model itself, --json, and one-line errors for bad files."""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
from cli_runner import run_cli as run_in_process
from onnx import TensorProto, helper, numpy_helper

from light_models import light_model_path


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return run_in_process(*args, columns=200)


@pytest.fixture(scope="module")
def small_model(tmp_path_factory) -> Path:
    """Conv -> Relu -> Relu -> FancyOp(com.example): 2 supported op types, 1 unsupported; 3*2*3*3 + 3 params."""
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=[3, 3]),
        helper.make_node("Relu", ["c"], ["r1"]),
        helper.make_node("Relu", ["r1"], ["r2"]),
        helper.make_node("FancyOp", ["r2"], ["y"], domain="com.example"),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, 6, 6])],
        [numpy_helper.from_array(rng.standard_normal((3, 2, 3, 3)).astype(np.float32), "w"),
         numpy_helper.from_array(np.zeros(3, np.float32), "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)])
    path = tmp_path_factory.mktemp("inspect") / "small.onnx"
    onnx.save(model, str(path))
    return path


def test_json_report_counts_ops_and_support(small_model):
    result = run_cli("inspect", str(small_model), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    rows = {(r["domain"], r["op_type"]): r for r in report["ops"]}
    assert rows[("ai.onnx", "Relu")]["count"] == 2 and rows[("ai.onnx", "Relu")]["supported"]
    assert rows[("ai.onnx", "Conv")]["opset"] == 17 and rows[("ai.onnx", "Conv")]["supported"]
    assert rows[("com.example", "FancyOp")] == {"op_type": "FancyOp", "domain": "com.example", "opset": 1, "count": 1,
                                                "supported": False,
                                                "reason": "no implementation of FancyOp at opset 1"}
    summary = report["summary"]
    assert summary["parameters"] == 3 * 2 * 3 * 3 + 3
    assert summary["inputs"] == [{"name": "x", "dtype": "float", "shape": ["N", 2, 8, 8]}]
    assert [o["name"] for o in summary["outputs"]] == ["y"]


def test_table_lists_every_op_of_a_light_model():
    path = light_model_path("squeezenet")
    result = run_cli("inspect", str(path))
    assert result.returncode == 0, result.stderr
    counts = Counter(n.op_type for n in onnx.load(str(path)).graph.node)
    lines = result.stdout.splitlines()
    for op_type, count in counts.items():
        row = next(line for line in lines if line.split()[:1] == [op_type])
        assert row.split()[1:5] == ["ai.onnx", "9", str(count), "yes"], row
    assert f"{len(counts)} of {len(counts)} op types supported" in result.stdout
    assert "parameters" in result.stdout


def test_table_flags_unsupported_ops(small_model):
    result = run_cli("inspect", str(small_model))
    assert result.returncode == 0
    row = next(line for line in result.stdout.splitlines() if line.split()[:1] == ["FancyOp"])
    assert row.split()[1:] == ["com.example", "1", "1", "no"]
    assert "2 of 3 op types supported" in result.stdout


def _bad_files(folder: Path, good: Path) -> dict[str, Path]:
    data = good.read_bytes()
    files = {
        "empty": b"",
        "truncated": data[: len(data) // 2],
        "random": np.random.default_rng(0).bytes(4096),
        "text": b"this is not an onnx model\n" * 20,
    }
    paths = {}
    for name, payload in files.items():
        paths[name] = folder / f"{name}.onnx"
        paths[name].write_bytes(payload)
    paths["missing"] = folder / "does_not_exist.onnx"
    paths["directory"] = folder
    return paths


@pytest.mark.parametrize("case", ["empty", "truncated", "random", "text", "missing", "directory"])
def test_bad_input_is_one_error_line(tmp_path, small_model, case):
    path = _bad_files(tmp_path, small_model)[case]
    result = run_cli("inspect", str(path))
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:"), result.stderr
    assert "Traceback" not in result.stderr + result.stdout


@pytest.mark.parametrize("path", [light_model_path("squeezenet"), Path(__file__).parents[1] / "examples/models/tiny_cnn.onnx"],
                         ids=["light-squeezenet", "example-tiny-cnn"])
def test_parameter_count_matches_the_bridge(path):
    """Counted from the graph (weights behind ConstantOfShape included) without building the module."""
    import onnxkd

    result = run_cli("inspect", str(path), "--json")
    assert result.returncode == 0, result.stderr
    module = onnxkd.to_torch(path)
    assert json.loads(result.stdout)["summary"]["parameters"] == sum(p.numel() for p in module.parameters())


def test_summary_reports_macs_counted_independently(tmp_path):
    """A single 1x1 conv, 4 -> 8 channels on 5x5: 8 * 25 * 4 MACs at batch 1."""
    weight = numpy_helper.from_array(np.ones((8, 4, 1, 1), np.float32), "w")
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], name="conv")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4, 5, 5])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [weight])
    path = tmp_path / "conv.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    out = run_cli("inspect", str(path), "--json").stdout
    summary = json.loads(out)["summary"]
    assert summary["macs"] == 8 * 25 * 4 and summary["macs_by_op"] == {"Conv": 800}
    assert summary["macs_at"] == {"x": [1, 4, 5, 5]}
    # exported with a fixed batch of 4: counted at 4, and said so (it read "at batch 1")
    graph.input[0].type.tensor_type.shape.dim[0].dim_value = 4
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    out = run_cli("inspect", str(path)).stdout
    assert "3,200 (3.2k) at x=4,4,5,5" in out


def test_bridge_support_runs_the_checks_to_torch_makes(tmp_path):
    """An op the bridge implements, but with an attribute its function does not: to_torch refuses the node,
    so inspect must say "no" too (it once answered from the opset alone)."""
    from onnx import TensorProto, helper

    import onnxkd
    from onnxkd.commands.inspect import ops

    node = helper.make_node("Relu", ["x"], ["y"], name="odd_relu")
    node.attribute.append(helper.make_attribute("alpha", 0.5))  # Relu has no such attribute
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(onnxkd.OnnxkdError, match="alpha"):
        onnxkd.to_torch(model)
    [row] = ops(onnxkd.load(model))
    assert row["supported"] is False and "alpha" in row["reason"]
    assert ops(onnxkd.load(light_model_path("squeezenet")))[0]["supported"]


def test_prune_normalized_shows_the_residual_stream_as_prune_would_cut_it(zoo_model):
    """The zoo transformer's residual stream is frozen by default (LayerNorm) and a prunable group with
    --prune-normalized, exactly as the prune analysis makes it."""
    from onnxkd.graph_passes.api import channel_groups

    path = zoo_model("transformer", "dynamo")
    for flag in ([], ["--prune-normalized"]):
        result = run_cli("inspect", str(path), "--json", *flag)
        assert result.returncode == 0, result.stderr
        rows = json.loads(result.stdout)["groups"]
        _, groups = channel_groups(path, prune_normalized=bool(flag))
        assert [(r["size"], r["status"]) for r in rows] == [(g.size, "prunable" if g.prunable else "frozen")
                                                           for g in groups]
    assert sum(r["status"] == "prunable" for r in rows) > sum(g.prunable for g in channel_groups(path)[1])


def test_groups_frozen_at_residual_adds_of_a_layernormed_model_get_a_hint(zoo_model):
    transformer = run_cli("inspect", str(zoo_model("transformer", "dynamo")))
    assert transformer.returncode == 0 and "--prune-normalized cuts it" in transformer.stdout
    opted_in = run_cli("inspect", str(zoo_model("transformer", "dynamo")), "--prune-normalized")
    assert opted_in.returncode == 0 and "--prune-normalized cuts it" not in opted_in.stdout
    resnet = run_cli("inspect", str(zoo_model("resnet", "dynamo")))  # residual Adds, but no LayerNorm
    assert resnet.returncode == 0 and "--prune-normalized" not in resnet.stdout


def test_outputs_say_what_distillation_learns_instead_of_them(digits, tmp_path):
    from classifier_heads import deployed
    from detector import export_detector

    classifier = json.loads(run_cli("inspect", str(deployed(digits["teacher"], tmp_path / "c.onnx")), "--json").stdout)
    assert [(o["name"], o["distilled_on"]) for o in classifier["summary"]["outputs"]] == [("class_id", ["logits"]),
                                                                              ("confidence", ["logits"])]
    detector = run_cli("inspect", str(export_detector(tmp_path / "d.onnx", post_nms_only=True)))
    assert "selected: int64 ['k', 3]  (distilled on boxes, scores: rows follow the data (NonMaxSuppression))" in \
        detector.stdout
    plain = json.loads(run_cli("inspect", str(digits["teacher"]), "--json").stdout)
    assert "distilled_on" not in plain["summary"]["outputs"][0]
