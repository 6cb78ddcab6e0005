"""graph_passes.optimize.static_shapes: Reshape targets and static dims computed from Shape become constants.

Oracle: onnxruntime on the rewritten graph == onnxruntime on the original at batch sizes other than the
one in any example (1, 3, 5), onnx's full checker, and the torch bridge == onnxruntime on the result.
"""

from __future__ import annotations

import models
import numpy as np
import onnx
import onnx_ir as ir
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from prune_oracle import random_inputs, run

import onnxkd
from onnxkd.graph_passes.optimize import optimize
from onnxkd.graph_passes.optimize.api import STATIC_RESHAPE
from onnxkd.graph_passes.optimize.cleanup import clean_up
from onnxkd.graph_passes.optimize.static_shapes import fold_static_shapes
from onnxkd.model import to_proto


def _int(name: str, values) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(values, np.int64), name)


def _graph(nodes, initializers, x_shape=("batch", 6, 8), y_shape=None, opset=18, inputs=None) -> onnx.ModelProto:
    inputs = inputs or [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)]
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _heads_view(target_parts: list[str], extra_nodes=(), extra_inits=()) -> onnx.ModelProto:
    """y = Reshape(x @ W, Concat(parts)): x [batch, 6, 8] -> [batch, 6, 2, 4] when the parts say so."""
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((8, 8)).astype(np.float32), "w")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["q"]),
             helper.make_node("Shape", ["x"], ["shape_x"]), helper.make_node("Shape", ["q"], ["shape_q"]),
             helper.make_node("Gather", ["shape_x", "i0"], ["batch_x"], axis=0),
             helper.make_node("Gather", ["shape_q", "i0"], ["batch_q"], axis=0),
             helper.make_node("Gather", ["shape_q", "i2"], ["width"], axis=0),
             helper.make_node("Div", ["width", "two"], ["head_dim"]),
             *[helper.make_node("Unsqueeze", [s, "axes0"], [f"{s}_1d"]) for s in ("batch_x", "batch_q", "head_dim")],
             *extra_nodes,
             helper.make_node("Concat", target_parts, ["target"], axis=0),
             helper.make_node("Reshape", ["q", "target"], ["y"])]
    inits = [w, _int("i0", 0), _int("i2", 2), _int("two", 2), _int("axes0", [0]), _int("six", [6]), _int("heads", [2]),
             _int("minus", [-1]), *extra_inits]
    return _graph(nodes, inits, y_shape=[None] * len(target_parts))


def _fold(proto: onnx.ModelProto) -> tuple[ir.Model, int]:
    model = ir.from_proto(proto)
    count = fold_static_shapes(model)
    clean_up(model)
    return model, count


def _same_function(source: onnx.ModelProto, model: ir.Model, batches=(1, 3, 5)) -> None:
    optimized = to_proto(model)
    onnx.checker.check_model(optimized, full_check=True)
    for batch in batches:
        feeds = random_inputs(source, batch, seed=batch)
        expected, actual = run(source, feeds), run(optimized, feeds)
        for e, a in zip(expected, actual, strict=True):
            # 1e-5 of the output's scale, as tests/graph_passes/test_optimize.py: optimize also fuses GELU
            assert a.shape == e.shape and np.abs(a - e).max(initial=0) <= 1e-5 * max(np.abs(e).max(initial=0), 1e-12)
        module = onnxkd.to_torch(optimized).eval()
        with torch.no_grad():
            bridged = module(*(torch.from_numpy(v) for v in feeds.values()))
        bridged = bridged if isinstance(bridged, (tuple, list)) else (bridged,)
        for t, a in zip(bridged, actual, strict=True):
            assert np.abs(t.numpy() - a).max(initial=0) <= 1e-4 * max(np.abs(a).max(initial=0), 1e-12)


def _target(model: ir.Model) -> list[int] | None:
    reshape = next(n for n in model.graph if n.op_type == "Reshape")
    const = ir.convenience.get_const_tensor(reshape.inputs[1])
    return None if const is None else const.numpy().tolist()


@pytest.mark.parametrize("parts,expected", [
    (["batch_q_1d", "six", "heads", "head_dim_1d"], [0, 6, 2, 4]),  # the Reshape's own batch dim: copied (0)
    (["batch_x_1d", "six", "heads", "head_dim_1d"], [0, 6, 2, 4]),  # another tensor's dim of the same name
    (["batch_x_1d", "minus", "head_dim_1d"], [0, -1, 4]),  # an exporter's -1 kept
])
def test_computed_target_becomes_a_constant_and_the_arithmetic_goes(parts, expected):
    source = _heads_view(parts)
    model, count = _fold(source)
    assert count == 1 and _target(model) == expected
    assert not {"Shape", "Gather", "Concat", "Div", "Unsqueeze"} & {n.op_type for n in model.graph}
    _same_function(source, model)


def test_one_unknown_entry_becomes_minus_one():
    """A batch computed by arithmetic (batch * 6) is no dim of anything: the one unknown entry is inferred."""
    extra = [helper.make_node("Mul", ["batch_q", "six_s"], ["rows"]), helper.make_node("Unsqueeze", ["rows", "axes0"],
                                                                                    ["rows_1d"])]
    source = _heads_view(["rows_1d", "heads", "head_dim_1d"], extra, [_int("six_s", 6)])
    model, count = _fold(source)
    assert count == 1 and _target(model) == [-1, 2, 4]
    _same_function(source, model)


def test_two_unknown_entries_are_left_alone():
    extra = [helper.make_node("Mul", ["batch_q", "six_s"], ["rows"]),
             helper.make_node("Unsqueeze", ["rows", "axes0"], ["rows_1d"])]
    source = _heads_view(["rows_1d", "minus", "head_dim_1d"], extra, [_int("six_s", 6)])  # rows and an exporter -1
    model, count = _fold(source)
    assert count == 0 and _target(model) is None
    _same_function(source, model)


def test_allowzero_reshape_is_left_alone():
    source = _heads_view(["batch_q_1d", "six", "heads", "head_dim_1d"])
    reshape = source.graph.node[-1]
    reshape.attribute.append(helper.make_attribute("allowzero", 1))
    model, count = _fold(source)
    assert count == 0 and _target(model) is None


def test_a_dim_of_another_size_is_not_copied():
    """x2's leading dim is named differently from q's: it is no proof that they are equal, so it stays
    unknown; with the exporter's -1 that makes two unknowns and nothing is folded."""
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 6, 8]),
              helper.make_tensor_value_info("x2", TensorProto.FLOAT, ["other", 3])]
    nodes = [helper.make_node("Shape", ["x2"], ["s2"]), helper.make_node("Gather", ["s2", "i0"], ["b2"], axis=0),
             helper.make_node("Unsqueeze", ["b2", "axes0"], ["b2_1d"]),
             helper.make_node("Concat", ["b2_1d", "minus", "eight"], ["target"], axis=0),
             helper.make_node("Reshape", ["x", "target"], ["y"])]
    source = _graph(nodes, [_int("i0", 0), _int("axes0", [0]), _int("minus", [-1]), _int("eight", [8])],
                    y_shape=[None] * 3, inputs=inputs)
    model, count = _fold(source)
    assert count == 0 and _target(model) is None


@pytest.mark.parametrize("exporter", models.EXPORTERS)
@pytest.mark.parametrize("name", ["bert", "vit", "gpt2", "mha"])
def test_zoo_transformers_lose_their_shape_arithmetic(zoo_model, name, exporter):
    path = zoo_model(name, exporter)
    result = optimize(path)
    source = onnx.load(str(path))
    before = sum(n.op_type in ("Shape", "Gather", "Unsqueeze", "Concat") for n in source.graph.node)
    after = sum(n.op_type in ("Shape", "Gather", "Unsqueeze", "Concat") for n in to_proto(result.model).graph.node)
    assert after <= before
    if exporter == "legacy":  # the legacy exporter computes every view's target; dynamo writes most as constants
        assert result.fused[STATIC_RESHAPE] >= 2 and after < before / 2, (before, after)
    _same_function(source, result.model, batches=(1, 3))


def test_a_read_of_a_static_dim_becomes_a_constant_and_what_follows_folds():
    """Attention's scale written out: x * 1/sqrt(x.size(-1)), from Shape -> Slice -> Cast -> Sqrt -> Div."""
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Slice", ["s", "minus", "big"], ["last"]),
             helper.make_node("Cast", ["last"], ["last_f"], to=TensorProto.FLOAT),
             helper.make_node("Sqrt", ["last_f"], ["root"]),
             helper.make_node("Div", ["one", "root"], ["scale"]),
             helper.make_node("Mul", ["x", "scale"], ["y"])]
    inits = [_int("minus", [-1]), _int("big", [2**62]), numpy_helper.from_array(np.ones(1, np.float32), "one")]
    source = _graph(nodes, inits, y_shape=["batch", 6, 8])
    model, count = _fold(source)
    assert count == 0 and [n.op_type for n in model.graph] == ["Mul"]  # the scale is now a constant: 1/sqrt(8)
    scale = ir.convenience.get_const_tensor(next(iter(model.graph)).inputs[1]).numpy()
    assert np.allclose(scale, 1 / np.sqrt(8))
    _same_function(source, model)


def test_a_read_of_the_dynamic_batch_stays():
    nodes = [helper.make_node("Shape", ["x"], ["s"]), helper.make_node("Gather", ["s", "i0"], ["b"], axis=0),
             helper.make_node("Cast", ["b"], ["b_f"], to=TensorProto.FLOAT),
             helper.make_node("Div", ["x", "b_f"], ["y"])]
    source = _graph(nodes, [_int("i0", 0)], y_shape=["batch", 6, 8])
    model, _ = _fold(source)
    assert "Shape" in {n.op_type for n in model.graph}
    _same_function(source, model)


def test_opset_11_unsqueeze_attributes_are_read():
    """Below opset 13, Unsqueeze takes its axes as an attribute: still one element, still folded."""
    nodes = [helper.make_node("Shape", ["x"], ["s"]), helper.make_node("Gather", ["s", "i0"], ["b"], axis=0),
             helper.make_node("Unsqueeze", ["b"], ["b_1d"], axes=[0]),
             helper.make_node("Concat", ["b_1d", "minus"], ["target"], axis=0),
             helper.make_node("Reshape", ["x", "target"], ["y"])]
    source = _graph(nodes, [_int("i0", 0), _int("minus", [-1])], y_shape=[None, None], opset=11)
    model, count = _fold(source)
    assert count == 1 and _target(model) == [0, -1]
    _same_function(source, model)


def test_a_slice_with_computed_bounds_is_left_alone():
    """A Slice whose end is computed by an op the evaluator does not know (Max of the batch and 1): not a
    constant slice, nothing folded (this used to raise inside optimize)."""
    nodes = [helper.make_node("Shape", ["x"], ["s"]), helper.make_node("Gather", ["s", "i0"], ["b"], axis=0),
             helper.make_node("Unsqueeze", ["b", "axes0"], ["b_1d"]),
             helper.make_node("Max", ["b_1d", "one"], ["end"]),
             helper.make_node("Slice", ["s", "zero", "end"], ["head"]),
             helper.make_node("Concat", ["head", "minus"], ["target"], axis=0),
             helper.make_node("Reshape", ["x", "target"], ["y"])]
    inits = [_int("i0", 0), _int("axes0", [0]), _int("one", [1]), _int("zero", [0]), _int("minus", [-1])]
    source = _graph(nodes, inits, y_shape=[None] * 2)
    model, count = _fold(source)
    assert count == 0 and _target(model) is None
    _same_function(source, model)
