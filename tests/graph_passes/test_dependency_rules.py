"""Hand-built graphs, one op family each: the groups found, the reasons frozen, and the oracle."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from prune_oracle import assert_close, random_inputs, random_plan, run, zeroed_original

from onnxkd.graph_passes.api import channel_groups, prune, prune_with_plan
from onnxkd.model import to_proto

RNG = np.random.default_rng(0)


def build(nodes, inits: dict[str, np.ndarray], inputs, outputs, opset=17, domains=(), out_shapes=None):
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, (out_shapes or {}).get(n)) for n in outputs],
        [numpy_helper.from_array(v.astype(np.float32) if v.dtype.kind == "f" else v, k) for k, v in inits.items()],
    )
    imports = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, 1) for d in domains]
    model = helper.make_model(graph, opset_imports=imports)
    model.ir_version = 10 if opset >= 21 else 8
    return model


def w(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def conv(x, out, weight, bias=None, **attrs):
    return helper.make_node("Conv", [x, weight] + ([bias] if bias else []), [out], name=out, pads=[1, 1, 1, 1], **attrs)


def check_random_plans(model, seeds=range(3)):
    _, groups = channel_groups(model)
    feeds = random_inputs(model)
    for seed in seeds:
        plan = random_plan(groups, np.random.default_rng(seed))
        result = prune_with_plan(model, plan)
        onnx.checker.check_model(to_proto(result.model), full_check=True)
        prepared, fresh = channel_groups(model)
        assert_close(run(result.model, feeds), run(zeroed_original(prepared, fresh, plan), feeds))
    return groups


def test_conv_chain_input_and_output_never_pruned():
    model = build([conv("x", "a", "w1", "b1"), helper.make_node("Relu", ["a"], ["r"]), conv("r", "y", "w2", "b2")],
                  {"w1": w(8, 3, 3, 3), "b1": w(8), "w2": w(4, 8, 3, 3), "b2": w(4)}, [("x", [1, 3, 8, 8])], ["y"])
    groups = check_random_plans(model)
    assert [(g.size, g.prunable) for g in groups] == [(8, True), (4, False)]
    assert "graph output" in groups[1].frozen
    roles = {(s.name, s.axis): s.role for s in groups[0].slices}
    assert roles == {("w1", 0): "out", ("b1", 0): "out", ("w2", 1): "in"}


def test_grouped_conv_keeps_its_conv_groups_equally_wide():
    """A grouped conv (4 conv groups of 4 channels) keeps `group`: every conv group keeps as many inputs as the
    others, and as many outputs; inputs and outputs are cut independently."""
    nodes = [conv("x", "a", "w1"), conv("a", "b", "w2", group=4), helper.make_node("Relu", ["b"], ["r"]),
             conv("r", "y", "w3")]
    model = build(nodes, {"w1": w(16, 3, 3, 3), "w2": w(16, 4, 3, 3), "w3": w(5, 16, 3, 3)}, [("x", [1, 3, 8, 8])], ["y"])
    groups = check_random_plans(model, seeds=range(5))
    inputs, outputs = (next(g for g in groups if any(s.name == "w2" and s.role == role for s in g.slices))
                       for role in ("in", "out"))
    assert inputs.id != outputs.id and inputs.size == outputs.size == 4  # channel i of every conv group
    assert sorted(s.offset for s in inputs.slices if s.name == "w1") == [0, 4, 8, 12]
    result = prune(model, 0.5, round_to=1)
    node = next(n for n in result.model.graph if n.name == "b")
    assert node.attributes["group"].value == 4 and list(node.inputs[1].shape) == [8, 2, 3, 3]


def test_depthwise_conv_keeps_group_equal_to_channels():
    nodes = [conv("x", "a", "w1"), conv("a", "b", "w2", group=8), conv("b", "y", "w3")]
    model = build(nodes, {"w1": w(8, 3, 3, 3), "w2": w(8, 1, 3, 3), "w3": w(5, 8, 3, 3)}, [("x", [1, 3, 8, 8])], ["y"])
    check_random_plans(model)
    result = prune(model, 0.5, round_to=1)
    node = next(n for n in result.model.graph if n.name == "b")
    assert node.attributes["group"].value == 4


def test_concat_split_and_slice_map_offsets():
    nodes = [conv("x", "a", "w1"), conv("x", "b", "w2"), helper.make_node("Concat", ["a", "b"], ["c"], axis=1),
             helper.make_node("Split", ["c", "sizes"], ["s1", "s2"], axis=1),
             helper.make_node("Slice", ["c", "st", "en", "ax"], ["sl"]),
             conv("s1", "y1", "w3"), conv("s2", "y2", "w4"), conv("sl", "y3", "w5")]
    inits = {"w1": w(6, 3, 3, 3), "w2": w(4, 3, 3, 3), "w3": w(2, 6, 3, 3), "w4": w(2, 4, 3, 3),
             "w5": w(2, 4, 3, 3), "sizes": np.array([6, 4], np.int64), "st": np.array([6], np.int64),
             "en": np.array([100], np.int64), "ax": np.array([1], np.int64)}
    model = build(nodes, inits, [("x", [1, 3, 8, 8])], ["y1", "y2", "y3"])
    groups = check_random_plans(model)
    assert [g.size for g in groups if g.prunable] == [6, 4]
    edits = {(e.target, e.index) for g in groups for e in g.edits}
    assert ("sizes", 0) in edits and ("sizes", 1) in edits and ("st", 0) in edits


def test_split_inside_a_conv_group_balances_the_conv_groups_instead():
    """Whole conv groups (4 channels each) cannot be cut when a Split cuts at channel 3. The conv is then
    balanced: both conv groups keep equally many inputs and outputs, `group` stays 2, Split sizes shrink."""
    nodes = [conv("x", "a", "w1"), conv("a", "g", "wg", group=2), helper.make_node("Split", ["g", "sizes"], ["s1", "s2"], axis=1),
             conv("s1", "y1", "w2"), conv("s2", "y2", "w3")]
    inits = {"w1": w(8, 3, 3, 3), "wg": w(8, 4, 3, 3), "w2": w(2, 3, 3, 3), "w3": w(2, 5, 3, 3),
             "sizes": np.array([3, 5], np.int64)}
    model = build(nodes, inits, [("x", [1, 3, 8, 8])], ["y1", "y2"])
    groups = check_random_plans(model, seeds=range(6))
    assert sorted(g.size for g in groups if g.prunable) == [3, 4]  # wg's outputs 3 (+ 1, too small); w1's positions
    result = prune(model, 0.5, round_to=1)
    node = next(n for n in result.model.graph if n.name == "g")
    assert node.attributes["group"].value == 2


def test_per_channel_constants_prelu_instance_norm_and_residual():
    nodes = [conv("x", "a", "w1"), helper.make_node("Mul", ["a", "scale"], ["m"]),
             helper.make_node("Sub", ["shift", "m"], ["s"]), helper.make_node("PRelu", ["s", "slope"], ["p"]),
             helper.make_node("InstanceNormalization", ["p", "g", "b"], ["n"]), conv("x", "a2", "w2"),
             helper.make_node("Add", ["n", "a2"], ["r"]), helper.make_node("Div", ["r", "div"], ["d"]),
             helper.make_node("GlobalAveragePool", ["d"], ["gap"]), helper.make_node("Flatten", ["gap"], ["f"]),
             helper.make_node("Gemm", ["f", "fc", "fcb"], ["y"], transB=1)]
    inits = {"w1": w(8, 3, 3, 3), "w2": w(8, 3, 3, 3), "scale": w(1, 8, 1, 1), "shift": w(8, 1, 1),
             "slope": np.abs(w(8, 1, 1)), "g": w(8), "b": w(8), "div": np.full((1, 1, 1, 1), 2.0, np.float32),
             "fc": w(5, 8), "fcb": w(5)}
    groups = check_random_plans(build(nodes, inits, [("x", [2, 3, 8, 8])], ["y"]))
    coupled = groups[0]
    assert coupled.prunable and {s.name for s in coupled.slices} >= {"w1", "w2", "scale", "shift", "slope", "g", "b", "fc"}


def test_flatten_with_spatial_maps_blocks_into_gemm():
    nodes = [conv("x", "a", "w1"), helper.make_node("Reshape", ["a", "shape"], ["f"]),
             helper.make_node("Gemm", ["f", "fc"], ["y"])]
    inits = {"w1": w(4, 3, 3, 3), "shape": np.array([0, 4 * 8 * 8], np.int64), "fc": w(4 * 64, 3)}
    model = build(nodes, inits, [("x", [2, 3, 8, 8])], ["y"])
    groups = check_random_plans(model)
    assert any(s.name == "fc" and s.block == 64 for s in groups[0].slices)
    assert any(e.target == "shape" and e.mult == 64 for e in groups[0].edits)


def test_transpose_and_matmul_weight():
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("Transpose", ["r"], ["t"], perm=[0, 2, 1]),
             helper.make_node("Transpose", ["t"], ["t2"], perm=[0, 2, 1]),
             helper.make_node("MatMul", ["t2", "w2"], ["y"])]
    model = build(nodes, {"w1": w(6, 10), "w2": w(10, 4)}, [("x", [2, 5, 6])], ["y"])
    groups = check_random_plans(model)
    assert groups[0].prunable and groups[0].size == 10


@pytest.mark.parametrize("op,attrs,reason", [
    ("LayerNormalization", {"axis": 1}, "LayerNormalization"),
    ("Softmax", {"axis": 1}, "normalised over the channel axis"),
    ("LRN", {"size": 3}, "LRN mixes channels"),
    ("ReduceMean", {"axes": [1]}, "reduced over the channel axis"),
])
def test_channel_mixing_ops_freeze_with_reason(op, attrs, reason):
    inputs = ["a", "lnw", "lnb"] if op == "LayerNormalization" else ["a"]
    nodes = [conv("x", "a", "w1"), helper.make_node(op, inputs, ["m"], **attrs), conv("m", "y", "w2")]
    if op == "ReduceMean":
        nodes[-1] = helper.make_node("Identity", ["m"], ["y"])
    inits = {"w1": w(4, 3, 3, 3), "w2": w(2, 4, 3, 3), "lnw": w(4, 8, 8), "lnb": w(4, 8, 8)}
    if op != "LayerNormalization":
        inits = {k: v for k, v in inits.items() if not k.startswith("ln")}
    model = build(nodes, inits, [("x", [1, 3, 8, 8])], ["y"], opset=17 if op != "ReduceMean" else 17)
    groups = channel_groups(model)[1]
    assert reason in groups[0].frozen


def test_unknown_op_freezes_instead_of_guessing():
    nodes = [conv("x", "a", "w1"), helper.make_node("Mystery", ["a"], ["m"], domain="custom.x"),
             conv("x", "b", "w2"), helper.make_node("Relu", ["b"], ["y2"])]
    model = build(nodes, {"w1": w(4, 3, 3, 3), "w2": w(4, 3, 3, 3)}, [("x", [1, 3, 8, 8])], ["m", "y2"],
                  domains=["custom.x"])
    groups = channel_groups(model)[1]
    assert "consumed by Mystery" in groups[0].frozen


def test_shared_initializer_behind_identity_is_untied():
    """The legacy exporter's dedup: one zero bias feeding two convs through Identity."""
    nodes = [helper.make_node("Identity", ["zero"], ["zero_copy"]), conv("x", "a", "w1", "zero"),
             conv("a", "b", "w2", "zero_copy"), helper.make_node("Relu", ["b"], ["r"]), conv("r", "y", "w3")]
    inits = {"w1": w(8, 3, 3, 3), "w2": w(8, 8, 3, 3), "w3": w(2, 8, 3, 3), "zero": np.zeros(8, np.float32)}
    model = build(nodes, inits, [("x", [1, 3, 8, 8])], ["y"])
    groups = check_random_plans(model)
    assert sum(g.prunable for g in groups) == 2  # each conv's bias is its own after untying


def test_conv_transpose_resize_pad_pool_chain():
    nodes = [conv("x", "a", "w1", "b1"), helper.make_node("ConvTranspose", ["a", "wt", "bt"], ["u"], strides=[2, 2]),
             helper.make_node("Clip", ["u", "lo", "hi"], ["c"]), helper.make_node("HardSwish", ["c"], ["h"]),
             helper.make_node("Resize", ["h", "", "scales"], ["r"], mode="nearest"),
             helper.make_node("Pad", ["r", "pads"], ["p"]),
             helper.make_node("MaxPool", ["p"], ["m"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Dropout", ["m"], ["d"]), helper.make_node("Cast", ["d"], ["k"], to=TensorProto.FLOAT),
             conv("k", "y", "w2")]
    inits = {"w1": w(6, 3, 3, 3), "b1": w(6), "wt": w(6, 5, 2, 2), "bt": w(5), "lo": np.array(-1.0, np.float32),
             "hi": np.array(2.0, np.float32), "scales": np.array([1, 1, 2, 2], np.float32),
             "pads": np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64), "w2": w(2, 5, 3, 3)}
    groups = check_random_plans(build(nodes, inits, [("x", [1, 3, 8, 8])], ["y"]))
    assert [(g.size, g.prunable) for g in groups] == [(6, True), (5, True), (2, False)]
    assert {(s.name, s.axis, s.role) for s in groups[1].slices} == {("wt", 1, "out"), ("bt", 0, "out"), ("w2", 1, "in")}


def test_gemm_trans_a_and_trans_b():
    nodes = [helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], transB=1), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("Transpose", ["r"], ["t"], perm=[1, 0]),
             helper.make_node("Gemm", ["t", "w2", "b2"], ["y"], transA=1)]
    inits = {"w1": w(7, 4), "b1": w(7), "w2": w(7, 3), "b2": w(3)}
    groups = check_random_plans(build(nodes, inits, [("x", [2, 4])], ["y"]))
    assert {(s.name, s.axis, s.role) for s in groups[0].slices} == {("w1", 0, "out"), ("b1", 0, "out"), ("w2", 0, "in")}


def test_reshape_entry_read_from_shape_follows_the_cut():
    """x.view(b, c, -1) as the legacy exporter writes it: c = Shape(x)[1] needs no rewrite."""
    nodes = [conv("x", "a", "w1"), helper.make_node("Shape", ["a"], ["s"]),
             helper.make_node("Gather", ["s", "one"], ["c"], axis=0),
             helper.make_node("Unsqueeze", ["c", "zero_axis"], ["cu"]),
             helper.make_node("Concat", ["zero", "cu", "minus"], ["shape"], axis=0),
             helper.make_node("Reshape", ["a", "shape"], ["r"]),
             helper.make_node("ReduceMean", ["r"], ["m"], axes=[-1], keepdims=0),
             helper.make_node("Gemm", ["m", "fc"], ["y"])]
    inits = {"w1": w(6, 3, 3, 3), "one": np.array(1, np.int64), "zero_axis": np.array([0], np.int64),
             "zero": np.array([0], np.int64), "minus": np.array([-1], np.int64),
             "fc": w(6, 2)}
    groups = check_random_plans(build(nodes, inits, [("x", ["batch", 3, 8, 8])], ["y"]))
    assert groups[0].prunable  # with a constant entry (if normalisation folds Shape) or the Shape read as is


@pytest.mark.parametrize("style", ["split_equal", "slices"])
def test_chunk_through_one_conv_makes_two_groups(style):
    """torch.chunk of one conv's output (GLU, YOLO's C2f): each half becomes its own group."""
    if style == "split_equal":
        cut = [helper.make_node("Split", ["a"], ["h1", "h2"], axis=1)]
    else:
        cut = [helper.make_node("Slice", ["a", "s0", "e0", "ax"], ["h1"]),
               helper.make_node("Slice", ["a", "e0", "e1", "ax"], ["h2"])]
    nodes = [conv("x", "a", "w1", "b1")] + cut + [conv("h1", "y1", "w2"), conv("h2", "y2", "w3")]
    inits = {"w1": w(10, 3, 3, 3), "b1": w(10), "w2": w(2, 6, 3, 3), "w3": w(2, 4, 3, 3),
             "s0": np.array([0], np.int64), "e0": np.array([6], np.int64), "e1": np.array([10], np.int64),
             "ax": np.array([1], np.int64)}
    if style == "split_equal":
        inits["w2"], inits["w3"] = w(2, 5, 3, 3), w(2, 5, 3, 3)
    groups = check_random_plans(build(nodes, inits, [("x", [1, 3, 8, 8])], ["y1", "y2"]))
    halves = sorted(g.size for g in groups if g.prunable)
    assert halves == ([5, 5] if style == "split_equal" else [4, 6])
    for g in groups:
        if g.prunable:
            assert {s.name for s in g.slices} >= {"w1", "b1"}


def test_resize_to_sizes_read_from_the_input_shape():
    """F.interpolate(size=...) in legacy exports: sizes = Concat(Slice(Shape(x), 0, 2), [16, 16])."""
    nodes = [conv("x", "a", "w1"), helper.make_node("Shape", ["a"], ["s"]),
             helper.make_node("Slice", ["s", "zero", "two"], ["nc"]),
             helper.make_node("Concat", ["nc", "hw"], ["sizes"], axis=0),
             helper.make_node("Resize", ["a", "", "", "sizes"], ["r"], mode="nearest"), conv("r", "y", "w2")]
    inits = {"w1": w(6, 3, 3, 3), "w2": w(2, 6, 3, 3), "zero": np.array([0], np.int64), "two": np.array([2], np.int64),
             "hw": np.array([16, 16], np.int64)}
    groups = check_random_plans(build(nodes, inits, [("x", ["batch", 3, 8, 8])], ["y"]))
    assert groups[0].prunable, groups[0].frozen


def test_weight_behind_a_reshape_is_folded_and_sliced():
    """Caffe2 exports: Gemm(x, Reshape(W4d)). The view is folded so the classifier rows can be cut."""
    nodes = [conv("x", "a", "w1"), helper.make_node("GlobalAveragePool", ["a"], ["g"]),
             helper.make_node("Flatten", ["g"], ["f"]), helper.make_node("Reshape", ["w4", "shape"], ["fcw"]),
             helper.make_node("Gemm", ["f", "fcw"], ["y"], transB=1)]
    inits = {"w1": w(6, 3, 3, 3), "w4": w(1, 1, 4, 6), "shape": np.array([4, 6], np.int64)}
    groups = check_random_plans(build(nodes, inits, [("x", [1, 3, 8, 8])], ["y"]))
    assert groups[0].prunable and any(s.role == "in" and s.axis == 1 for s in groups[0].slices)


def test_fold_constant_views_pass_is_exact():
    import onnx_ir as ir

    from onnxkd.graph_passes.normalize.fold_views import FoldConstantViewsPass

    weight = w(1, 2, 3, 4)
    nodes = [helper.make_node("Transpose", ["w4"], ["t"], perm=[0, 3, 1, 2]),
             helper.make_node("Reshape", ["t", "shape"], ["v"]), helper.make_node("MatMul", ["x", "v"], ["y"])]
    model = ir.from_proto(build(nodes, {"w4": weight, "shape": np.array([4, 6], np.int64)}, [("x", [2, 4])], ["y"]))
    FoldConstantViewsPass()(model)
    assert [n.op_type for n in model.graph] == ["MatMul"]
    folded = model.graph.node(0).inputs[1].const_value.numpy()
    np.testing.assert_array_equal(folded, np.transpose(weight, (0, 3, 1, 2)).reshape(4, 6))
    assert "w4" not in model.graph.initializers


def test_group_normalization_prunes_whole_norm_groups():
    opset, params = 21, 12  # (GroupNormalization-18, per-group scale, is deprecated: the checker rejects it)
    nodes = [conv("x", "a", "w1"), helper.make_node("GroupNormalization", ["a", "s", "b"], ["n"], num_groups=4),
             helper.make_node("Relu", ["n"], ["r"]), conv("r", "y", "w2")]
    inits = {"w1": w(12, 3, 3, 3), "s": w(params), "b": w(params), "w2": w(2, 12, 3, 3)}
    model = build(nodes, inits, [("x", [1, 3, 8, 8])], ["y"], opset=opset, out_shapes={"y": [1, 2, 8, 8]})
    groups = check_random_plans(model)  # (onnx shape inference does not see through GroupNormalization)
    assert groups[0].prunable and groups[0].size == 4 and groups[0].channel_block == 3
    assert any(e.attr == "num_groups" for e in groups[0].edits)
