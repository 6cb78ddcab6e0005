"""Normalisation: every zoo export and ONNX-zoo light model comes out valid, canonical and equal.

Oracles: onnx.checker (full check), onnxruntime on the original file vs the normalised model, the input
file's bytes (sha256) before and after.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
from light_models import LIGHT_MODELS, light_model_path
from onnx import helper

from onnxkd.graph_passes.normalize.canonical import normalize, normalize_with_report
from onnxkd.graph_passes.normalize import FoldConstantOfShapePass, LiftWeightConstantsPass, SimplifyPass, simplify
from onnxkd.model import save

ZOO = ["resnet", "mobilenetv2", "mobilenetv3", "densenet", "unet", "resnext", "transformer", "gpt"]
ZOO_CASES = [(name, exporter, False) for name in ZOO for exporter in ("legacy", "dynamo")]
ZOO_CASES.append(("resnet", "dynamo", True))  # weights in an external .data file

# Inputs that hold learned tensors, written out here independently of the pass's own table.
WEIGHT_SLOTS = {"Conv": (1, 2), "ConvTranspose": (1, 2), "Gemm": (1, 2), "MatMul": (1,),
                "BatchNormalization": (1, 2, 3, 4), "LayerNormalization": (1, 2), "Gather": (0,)}

_CACHE: dict = {}


def _sha(path: Path) -> str:
    files = [path] + sorted(path.parent.glob(path.name + ".data"))
    return "".join(hashlib.sha256(f.read_bytes()).hexdigest() for f in files)


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("normalized")


def _normalized(path: Path, out_dir: Path):
    """(normalised model, report, saved path, input hash before, after), once per file per module."""
    if path not in _CACHE:
        before = _sha(path)
        model, report = normalize_with_report(path)
        after = _sha(path)
        saved = save(model, out_dir / f"{path.stem}-norm.onnx")
        _CACHE[path] = (model, report, saved, before, after)
    return _CACHE[path]


def _feeds(session: ort.InferenceSession, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feeds = {}
    for arg in session.get_inputs():
        shape = [batch if not isinstance(d, int) else d for d in arg.shape]
        if arg.type == "tensor(int64)":
            feeds[arg.name] = rng.integers(0, 50, shape, dtype=np.int64)
        else:
            feeds[arg.name] = rng.standard_normal(shape).astype(np.float32)
    return feeds


def _session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _assert_same_outputs(original: Path, normalized: Path, batches: tuple[int, ...]) -> None:
    before, after = _session(original), _session(normalized)
    real_inputs = [a.name for a in after.get_inputs()]
    for batch in batches:
        feeds = _feeds(after, batch)
        expected = before.run(None, {k: v for k, v in feeds.items() if k in real_inputs})
        got = after.run(None, feeds)
        assert len(got) == len(expected)
        for e, g in zip(expected, got):
            np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-5)


def _check_canonical(model: ir.Model, saved: Path, original: onnx.ModelProto) -> None:
    onnx.checker.check_model(str(saved), full_check=True)
    proto = onnx.load(str(saved), load_external_data=False)
    initializers = {t.name for t in proto.graph.initializer}
    assert not initializers & {i.name for i in proto.graph.input}
    constants = {n.output[0] for n in proto.graph.node if n.op_type == "Constant"}
    for node in proto.graph.node:
        for slot in WEIGHT_SLOTS.get(node.op_type, ()):
            if slot < len(node.input):
                assert node.input[slot] not in constants, f"{node.op_type} {node.name} reads a Constant weight"
    assert not any(n.op_type == "Identity" for n in proto.graph.node)
    # names and dims (symbolic "batch" included) of graph inputs and outputs are kept
    assert _signature(proto.graph.output) == _signature(original.graph.output)
    original_initializers = {t.name for t in original.graph.initializer}
    original_inputs = [i for i in original.graph.input if i.name not in original_initializers]
    assert _signature(proto.graph.input) == _signature(original_inputs)


def _signature(values) -> list:
    return [(v.name, [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]) for v in values]


@pytest.mark.parametrize("name,exporter,external", ZOO_CASES, ids=[f"{n}-{e}{'-ext' if x else ''}" for n, e, x in ZOO_CASES])
def test_zoo_model_normalises_to_equal_canonical_model(zoo_model, out_dir, name, exporter, external):
    path = zoo_model(name, exporter, external_data=external)
    model, report, saved, before, after = _normalized(path, out_dir)
    assert before == after, "the input file was modified"
    original = onnx.load(str(path), load_external_data=False)
    _check_canonical(model, saved, original)
    assert report.simplifier == "onnxsim", report.simplifier_note
    assert report.opset_after >= 13
    assert "batch" in str(_signature(onnx.load(str(saved), load_external_data=False).graph.input))
    _assert_same_outputs(path, saved, batches=(1, 3))


@pytest.mark.parametrize("name", LIGHT_MODELS)
def test_light_model_weights_become_initializers_at_opset_13(out_dir, name):
    path = light_model_path(name)
    model, report, saved, before, after = _normalized(path, out_dir)
    assert before == after
    original = onnx.load(str(path))
    _check_canonical(model, saved, original)
    assert report.opset_before == 9 and report.opset_after == 13, report.opset_note
    assert report.folded_constant_of_shape > 0
    assert not any(node.op_type == "ConstantOfShape" for node in model.graph)
    weights = [n.inputs[1] for n in model.graph if n.op_type == "Conv"]
    assert weights and all(w.is_initializer() for w in weights)
    _assert_same_outputs(path, saved, batches=(1,))


def test_shared_weights_stay_shared(zoo_model, out_dir):
    """The legacy exporter ties identical LayerNorm weights through Identity; normalising keeps the tie."""
    path = zoo_model("transformer", "legacy")
    original = onnx.load(str(path))
    identities = {n.output[0]: n.input[0] for n in original.graph.node if n.op_type == "Identity"}
    assert identities, "the legacy export is expected to tie weights through Identity"
    model, *_ = _normalized(path, out_dir)
    for alias, source in identities.items():
        assert alias not in model.graph.initializers  # not copied apart
        assert source in model.graph.initializers
    shared = model.graph.initializers[next(iter(identities.values()))]
    assert len({id(user) for user, _ in shared.uses()}) >= 2


def test_in_memory_models_are_not_modified(zoo_model):
    path = zoo_model("gpt", "legacy")
    proto = onnx.load(str(path))
    proto_bytes = proto.SerializeToString()
    normalize(proto)
    assert proto.SerializeToString() == proto_bytes
    model = ir.load(path)
    model_bytes = ir.to_proto(model).SerializeToString()
    normalized = normalize(model)
    assert normalized is not model
    assert ir.to_proto(model).SerializeToString() == model_bytes


def _fallback_matches(path: Path, tmp_path: Path, **kwargs):
    model, report = normalize_with_report(path, **kwargs)
    saved = save(model, tmp_path / "fallback.onnx")
    _check_canonical(model, saved, onnx.load(str(path), load_external_data=False))
    _assert_same_outputs(path, saved, batches=(2,))
    return model, report


def test_onnxsim_failure_falls_back_to_onnxscript(zoo_model, tmp_path, monkeypatch):
    def fail(model, timeout_s):
        raise simplify.SimplifyFailed("onnxsim aborted on this graph")

    monkeypatch.setattr(simplify, "run_onnxsim", fail)
    _, report = _fallback_matches(zoo_model("gpt", "legacy"), tmp_path)
    assert report.simplifier == "onnxscript"
    assert report.simplifier_note.startswith("onnxsim failed: onnxsim aborted on this graph")


def _computed_weight_model(path: Path) -> Path:
    """A Conv whose weight is Reshape(flat initializer, Constant shape): folding must make it an initializer."""
    rng = np.random.default_rng(1)
    flat = rng.standard_normal(8 * 3 * 3 * 3).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Constant", [], ["shape"], value=onnx.numpy_helper.from_array(np.array([8, 3, 3, 3]))),
         helper.make_node("Reshape", ["flat", "shape"], ["w"]),
         helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])],
        "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["batch", 3, 8, 8])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["batch", 8, 8, 8])],
        [onnx.numpy_helper.from_array(flat, "flat")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


@pytest.mark.parametrize("use_onnxsim", [True, False])
def test_computed_weights_are_folded_by_either_path(tmp_path, use_onnxsim):
    path = _computed_weight_model(tmp_path / "computed.onnx")
    model, report = _fallback_matches(path, tmp_path, simplify=use_onnxsim)
    assert report.simplifier == ("onnxsim" if use_onnxsim else "onnxscript")
    assert [n.op_type for n in model.graph] == ["Conv"]
    assert list(model.graph)[0].inputs[1].is_initializer()


def test_onnxsim_crash_and_hang_are_caught(zoo_model, tmp_path, monkeypatch):
    path = zoo_model("unet", "legacy")
    _, report = _fallback_matches(path, tmp_path, timeout_s=0.01)
    assert report.simplifier == "onnxscript" and "timed out" in report.simplifier_note

    crashing = tmp_path / "worker.py"
    crashing.write_text("import sys\nsys.exit('onnxsim: bad node at /dec1')\n")
    monkeypatch.setattr(simplify, "_WORKER", crashing)
    _, report = _fallback_matches(path, tmp_path)
    assert report.simplifier == "onnxscript" and "bad node at /dec1" in report.simplifier_note


def test_large_models_skip_onnxsim_with_a_reason(zoo_model):
    model = normalize(zoo_model("mobilenetv2", "dynamo"))
    step = SimplifyPass(size_limit=0)
    result = step(model)
    assert step.used == "onnxscript"
    assert step.note.startswith("onnxsim skipped") and "2 GB" in step.note
    assert result.model is not model


def test_large_weights_bypass_onnxsim_and_come_back(tmp_path, monkeypatch):
    """Weights only read by runtime nodes travel as data-less inputs; a weight-only subgraph still folds."""
    held_names: list[str] = []
    hold_out = simplify._hold_out_weights

    def spy(model, *args):
        held = hold_out(model, *args)
        held_names.extend(held)
        return held

    monkeypatch.setattr(simplify, "_hold_out_weights", spy)
    rng = np.random.default_rng(0)
    big = rng.standard_normal((256, 128)).astype(np.float32)  # 128 KiB, above the hold-out size
    graph = helper.make_graph(
        [helper.make_node("Transpose", ["w_t"], ["w"], perm=[1, 0]),
         helper.make_node("MatMul", ["x", "w"], ["h"]),
         helper.make_node("MatMul", ["h", "v"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["batch", 128])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["batch", 128])],
        [onnx.numpy_helper.from_array(big, "w_t"), onnx.numpy_helper.from_array(big, "v")],
    )
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    model, report = normalize_with_report(path)
    assert report.simplifier == "onnxsim"
    assert set(held_names) == {"v"}  # w_t feeds a foldable Transpose: onnxsim must see its data
    assert [n.op_type for n in model.graph] == ["MatMul", "MatMul"]  # Transpose(w_t) was folded
    np.testing.assert_array_equal(model.graph.initializers["v"].const_value.numpy(), big)
    saved = save(model, tmp_path / "n.onnx")
    _assert_same_outputs(path, saved, batches=(1, 4))


def test_version_converter_failure_keeps_the_opset(tmp_path, monkeypatch):
    from onnxkd.graph_passes.normalize import opset

    def refuse(model, target):
        raise RuntimeError("No Adapter For LRN\nmore")

    monkeypatch.setattr(opset.version_converter, "convert_version", refuse)
    path = light_model_path("squeezenet")
    model, report = normalize_with_report(path)
    assert report.opset_after == report.opset_before == 9
    assert report.opset_note == "kept opset 9: version converter failed (No Adapter For LRN)"
    saved = save(model, tmp_path / "sq.onnx")
    onnx.checker.check_model(str(saved), full_check=True)
    _assert_same_outputs(path, saved, batches=(1,))


def test_small_weights_lift_but_small_hyperparameters_stay_constants():
    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["n", 4])
    y = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["n", 3])
    nodes = [
        helper.make_node("Constant", [], ["w"], value=onnx.numpy_helper.from_array(np.ones((3, 4), np.float32))),
        helper.make_node("Constant", [], ["b"], value=onnx.numpy_helper.from_array(np.zeros(3, np.float32))),
        helper.make_node("Constant", [], ["half"], value=onnx.numpy_helper.from_array(np.array(0.5, np.float32))),
        helper.make_node("Gemm", ["x", "w", "b"], ["g"], transB=1),
        helper.make_node("Mul", ["g", "half"], ["y"]),
    ]
    model = ir.from_proto(helper.make_model(helper.make_graph(nodes, "g", [x], [y])))
    step = LiftWeightConstantsPass()
    assert step(model).modified and step.lifted == 2
    assert set(model.graph.initializers) == {"w", "b"}
    assert [n.op_type for n in model.graph] == ["Constant", "Gemm", "Mul"]


def test_constant_of_shape_fold_is_exact():
    shape = onnx.numpy_helper.from_array(np.array([2, 3], np.int64), "s")
    fill = onnx.numpy_helper.from_array(np.array([0.25], np.float32))
    graph = helper.make_graph(
        [helper.make_node("ConstantOfShape", ["s"], ["c"], value=fill), helper.make_node("Add", ["x", "c"], ["y"])],
        "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2, 3])], [shape])
    model = ir.from_proto(helper.make_model(graph))
    step = FoldConstantOfShapePass()
    assert step(model).modified and step.folded == 1
    np.testing.assert_array_equal(model.graph.initializers["c"].const_value.numpy(), np.full((2, 3), 0.25, np.float32))
    assert [n.op_type for n in model.graph] == ["Add"]


def test_normalising_imports_neither_torch_nor_onnxsim():
    code = (
        "import sys\n"
        "from onnxkd.graph_passes.normalize.canonical import normalize\n"
        "from onnxkd.graph_passes.metrics import model_stats\n"
        f"model_stats(normalize({str(light_model_path('squeezenet'))!r}))\n"
        "assert 'torch' not in sys.modules and 'onnxsim' not in sys.modules, 'torch or onnxsim imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def test_without_onnxsim_constants_fold_with_onnxscript(zoo_model, tmp_path):
    """onnxscript is a runtime dependency (it was a test-only one, and an installed onnxkd skipped folding)."""
    model, report = _fallback_matches(zoo_model("resnet", "legacy"), tmp_path, simplify=False)
    assert report.simplifier == "onnxscript"
    assert report.simplifier_note == "onnxsim not requested; folded with onnxscript.optimizer instead"
