"""Shape, indexing, resampling and control-flow ops of the torch bridge against onnxruntime.

The ONNX backend node suite (conformance.py) covers each op on its own; these graphs are the
patterns exporters actually write and the suite misses: shapes computed at run time, Resize as
F.interpolate exports it, reversed slices with INT64 sentinels, gradients through Gather, and
If/Loop bodies reading tensors of the enclosing graph.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from onnxkd.torch_bridge import to_torch
from onnxkd.torch_bridge.ops import tensor as tensor_ops
from bridge_oracle import assert_same_as_ort, bridge_feeds, ort_feeds

torch.set_num_threads(1)
INT64_MAX = np.iinfo(np.int64).max
INT64_MIN = np.iinfo(np.int64).min


def _model(nodes, inputs, outputs, initializers=(), opset=17):
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def _input(name, dtype=TensorProto.FLOAT, shape=None):
    return helper.make_tensor_value_info(name, dtype, shape)


def _const(name, values, dtype=np.int64):
    return numpy_helper.from_array(np.asarray(values, dtype=dtype), name)


def _check(model, feeds, rtol=1e-5, atol=1e-6):
    return assert_same_as_ort(model, feeds, rtol, atol)


_ort, _bridge = ort_feeds, bridge_feeds


# ---------------------------------------------------------------- dynamic shapes


@pytest.mark.parametrize("opset", [11, 17])
def test_reshape_with_batch_dim_computed_from_shape_chain(opset):
    # x.view(x.size(0), -1) as the legacy exporter writes it: Shape -> Gather -> Unsqueeze -> Concat -> Reshape.
    if opset < 13:
        unsqueeze = helper.make_node("Unsqueeze", ["batch"], ["batch_1d"], axes=[0])
        extra = []
    else:
        unsqueeze = helper.make_node("Unsqueeze", ["batch", "zero_axis"], ["batch_1d"])
        extra = [_const("zero_axis", [0])]
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Gather", ["shape", "index0"], ["batch"], axis=0),
        unsqueeze,
        helper.make_node("Concat", ["batch_1d", "minus_one"], ["target"], axis=0),
        helper.make_node("Reshape", ["x", "target"], ["flat"]),
        helper.make_node("Transpose", ["flat"], ["y"], perm=[1, 0]),
    ]
    model = _model(nodes, [_input("x", shape=["n", 3, 4, 4])], [_input("y")],
                   [_const("index0", 0), _const("minus_one", [-1])] + extra, opset)
    module = to_torch(model).eval()
    for batch in (2, 5):
        x = np.random.default_rng(batch).standard_normal((batch, 3, 4, 4)).astype(np.float32)
        expected = _ort(model, {"x": x})[0]
        assert expected.shape == (48, batch)
        np.testing.assert_array_equal(module(torch.from_numpy(x))[0].numpy(), expected)


# ---------------------------------------------------------------- Resize as torch exports it


def _resize_model(mode, ctm, nearest_mode="floor", scales=None, sizes=None, opset=13):
    inputs = ["x", "roi", "scales"] if scales is not None else ["x", "roi", "", "sizes"]
    initializers = [_const("roi", [], np.float32)]
    if scales is not None:
        initializers.append(_const("scales", scales, np.float32))
    if sizes is not None:
        initializers.append(_const("sizes", sizes))
    attrs = dict(mode=mode, coordinate_transformation_mode=ctm)
    if mode == "nearest":
        attrs["nearest_mode"] = nearest_mode
    else:
        attrs["cubic_coeff_a"] = -0.75
    node = helper.make_node("Resize", inputs, ["y"], **attrs)
    return _model([node], [_input("x", shape=[2, 3, 5, 7])], [_input("y")], initializers, opset)


RESIZE_CASES = [
    # F.interpolate(scale_factor=2, mode="nearest")
    ("nearest", "asymmetric", "floor", [1, 1, 2, 2], None),
    # F.interpolate(size=..., mode="nearest"), non-integer ratio
    ("nearest", "asymmetric", "floor", None, [2, 3, 8, 12]),
    # F.interpolate(scale_factor=2, mode="bilinear", align_corners=False)
    ("linear", "pytorch_half_pixel", "floor", [1, 1, 2, 2], None),
    ("linear", "half_pixel", "floor", [1, 1, 0.5, 0.5], None),
    # F.interpolate(size=..., mode="bilinear", align_corners=True / False)
    ("linear", "align_corners", "floor", None, [2, 3, 9, 13]),
    ("linear", "pytorch_half_pixel", "floor", None, [2, 3, 3, 11]),
    ("cubic", "half_pixel", "floor", [1, 1, 1.5, 0.75], None),
    ("nearest", "half_pixel", "round_prefer_ceil", [1, 1, 2, 4], None),
    ("nearest", "half_pixel", "round_prefer_floor", [1, 1, 3, 1.5], None),
]


@pytest.mark.parametrize("mode, ctm, nearest_mode, scales, sizes", RESIZE_CASES)
def test_resize_matches_onnxruntime(mode, ctm, nearest_mode, scales, sizes):
    model = _resize_model(mode, ctm, nearest_mode, scales, sizes)
    x = np.random.default_rng(0).standard_normal((2, 3, 5, 7)).astype(np.float32)
    _check(model, {"x": x}, rtol=1e-4, atol=1e-5)


def test_resize_fast_path_agrees_with_general_path():
    x = torch.randn(1, 2, 6, 10, dtype=torch.float64)
    cases = [
        ("linear", "half_pixel", "", [2.0, 0.5]),
        ("linear", "align_corners", "", [1.5, 3.0]),
        ("nearest", "asymmetric", "floor", [2.0, 4.0]),
        ("nearest", "half_pixel", "round_prefer_ceil", [2.0, 2.0]),
    ]
    for mode, ctm, nearest_mode, scales in cases:
        opts = dict(mode=mode, ctm=ctm, nearest_mode=nearest_mode, cubic_a=-0.75, exclude_outside=0,
                    extrapolation_value=0.0, antialias=0)
        sizes = [int(s * n) for s, n in zip(scales, x.shape[2:])]
        fast = tensor_ops._fast_interpolate(x, [1, 2] + sizes, [1.0, 1.0] + scales, opts)
        assert fast is not None
        general = x
        for axis, (size, scale) in enumerate(zip(sizes, scales), start=2):
            general = tensor_ops._resize_axis(general, axis, size, scale, opts, None)
        torch.testing.assert_close(fast, general, rtol=1e-12, atol=1e-12)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_exported_interpolate_runs_like_torch(tmp_path):
    class Up(torch.nn.Module):
        def forward(self, x):
            a = torch.nn.functional.interpolate(x, scale_factor=2.0, mode="nearest")
            b = torch.nn.functional.interpolate(x, size=(7, 9), mode="bilinear", align_corners=False)
            return a, b

    x = torch.randn(1, 2, 4, 5)
    path = tmp_path / "up.onnx"
    torch.onnx.export(Up(), (x,), str(path), opset_version=13, dynamo=False)
    model = onnx.load(str(path))
    assert {n.op_type for n in model.graph.node} >= {"Resize"}
    with torch.no_grad():
        expected = Up()(x)
        actual = to_torch(model).eval()(x)
    for a, e in zip(actual, expected):
        torch.testing.assert_close(a, e, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- Slice, Pad


@pytest.mark.parametrize("starts, ends, axes, steps", [
    ([-1], [INT64_MIN], [1], [-1]),             # x[:, ::-1]
    ([0, INT64_MAX], [INT64_MAX, 0], [0, -1], [2, -2]),
    ([-2, 1], [-INT64_MAX, INT64_MAX], [2, 1], [-1, 1]),
    ([10], [-10], [2], [-3]),                   # start clamped to the last element
])
def test_slice_negative_steps_and_sentinels(starts, ends, axes, steps):
    node = helper.make_node("Slice", ["x", "starts", "ends", "axes", "steps"], ["y"])
    initializers = [_const("starts", starts), _const("ends", ends), _const("axes", axes), _const("steps", steps)]
    model = _model([node], [_input("x", shape=[4, 5, 6])], [_input("y")], initializers)
    x = np.arange(120, dtype=np.float32).reshape(4, 5, 6)
    _check(model, {"x": x})


@pytest.mark.parametrize("mode, pads", [
    ("reflect", [0, 1, 2, 0, 2, 1]),
    ("edge", [1, 0, 3, 2, 1, 0]),
    ("wrap", [0, 2, 1, 0, 1, 3]),
    ("constant", [1, -1, 2, 0, 2, -2]),
])
def test_pad_modes(mode, pads):
    inputs = ["x", "pads"] + (["value"] if mode == "constant" else [])
    node = helper.make_node("Pad", inputs, ["y"], mode=mode)
    initializers = [_const("pads", pads), _const("value", 1.5, np.float32)]
    model = _model([node], [_input("x", shape=[2, 3, 4])], [_input("y")], initializers, opset=19)
    x = np.random.default_rng(1).standard_normal((2, 3, 4)).astype(np.float32)
    _check(model, {"x": x})


def test_pad_opset2_attributes():
    node = helper.make_node("Pad", ["x"], ["y"], mode="reflect", pads=[0, 0, 1, 2, 0, 0, 2, 1])
    model = _model([node], [_input("x", shape=[1, 2, 4, 4])], [_input("y")], opset=9)
    x = np.random.default_rng(2).standard_normal((1, 2, 4, 4)).astype(np.float32)
    _check(model, {"x": x})


# ---------------------------------------------------------------- Gather gradients


def test_gather_gradient_reaches_embedding_weight():
    weight = np.random.default_rng(3).standard_normal((10, 4)).astype(np.float32)
    node = helper.make_node("Gather", ["weight", "ids"], ["y"], axis=0)
    model = _model([node], [_input("ids", TensorProto.INT64, [2, 3])], [_input("y")],
                   [numpy_helper.from_array(weight, "weight")])
    ids = np.array([[1, 3, 3], [-1, 0, 1]], dtype=np.int64)
    _check(model, {"ids": ids})
    module = to_torch(model).train()
    (y,) = module(torch.from_numpy(ids))
    y.sum().backward()
    counts = np.bincount(np.where(ids < 0, ids + 10, ids).reshape(-1), minlength=10).astype(np.float32)
    np.testing.assert_array_equal(module.parameter("weight").grad.numpy(), np.repeat(counts[:, None], 4, 1))


# ---------------------------------------------------------------- control flow reading the outer scope


def test_if_branches_read_outer_scope_tensor():
    then_graph = helper.make_graph([helper.make_node("Concat", ["t", "t"], ["out_then"], axis=0)], "then", [],
                                   [_input("out_then")])
    else_graph = helper.make_graph(
        [helper.make_node("Slice", ["t", "s0", "s1", "ax"], ["out_else"])], "else", [], [_input("out_else")])
    nodes = [
        helper.make_node("Transpose", ["x"], ["t"], perm=[1, 0]),
        # `t`'s last explicit reader comes before the If: it must stay alive for the branches.
        helper.make_node("Flatten", ["t"], ["u"], axis=1),
        helper.make_node("If", ["cond"], ["y"], then_branch=then_graph, else_branch=else_graph),
    ]
    initializers = [_const("s0", [1]), _const("s1", [INT64_MAX]), _const("ax", [0])]
    model = _model(nodes, [_input("cond", TensorProto.BOOL, []), _input("x", shape=[2, 3])],
                   [_input("y"), _input("u")], initializers)
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    for cond in (True, False):
        _check(model, {"cond": np.array(cond), "x": x})


def test_loop_with_outer_scope_tensor_and_scan_output():
    body = helper.make_graph(
        [
            helper.make_node("Reshape", ["cond_in", "scalar_shape"], ["cond_out"]),
            helper.make_node("Concat", ["acc_in", "t"], ["acc_out"], axis=0),
            helper.make_node("Gather", ["t", "i"], ["row"], axis=0),
        ],
        "body",
        [_input("i", TensorProto.INT64, []), _input("cond_in", TensorProto.BOOL, []), _input("acc_in")],
        [_input("cond_out", TensorProto.BOOL, []), _input("acc_out"), _input("row")],
    )
    nodes = [
        helper.make_node("Transpose", ["x"], ["t"], perm=[1, 0]),
        helper.make_node("Flatten", ["t"], ["u"], axis=0),
        helper.make_node("Loop", ["trip", "", "acc0"], ["acc", "rows"], body=body),
    ]
    initializers = [_const("trip", 3), _const("scalar_shape", []), _const("acc0", np.zeros((0, 2)), np.float32)]
    model = _model(nodes, [_input("x", shape=[2, 3])], [_input("acc"), _input("rows"), _input("u")], initializers)
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    acc, rows, _ = _check(model, {"x": x})
    assert acc.shape == (9, 2) and rows.shape == (3, 2)


# ---------------------------------------------------------------- TopK ties, Unique, ScatterND


def test_topk_ties_keep_lower_index_first():
    node = helper.make_node("TopK", ["x", "k"], ["values", "indices"], axis=1, largest=1)
    model = _model([node], [_input("x", shape=[2, 6])], [_input("values"), _input("indices", TensorProto.INT64)],
                   [_const("k", [4])])
    x = np.array([[1, 3, 3, 2, 3, 0], [5, 5, 5, 5, 1, 1]], dtype=np.float32)
    _, indices = _check(model, {"x": x})
    np.testing.assert_array_equal(indices, [[1, 2, 4, 3], [0, 1, 2, 3]])


def test_unique_unsorted_and_scatternd_add():
    nodes = [
        helper.make_node("Unique", ["x"], ["u", "first", "inverse", "counts"], sorted=0),
        helper.make_node("ScatterND", ["data", "idx", "upd"], ["s"], reduction="add"),
    ]
    model = _model(nodes, [_input("x", shape=[7]), _input("data", shape=[4, 2])],
                   [_input("u"), _input("first", TensorProto.INT64), _input("inverse", TensorProto.INT64),
                    _input("counts", TensorProto.INT64), _input("s")],
                   [_const("idx", [[1], [3], [1]]), _const("upd", np.ones((3, 2)), np.float32)], opset=16)
    x = np.array([2, 1, 2, 3, 1, 1, 0], dtype=np.float32)
    _check(model, {"x": x, "data": np.zeros((4, 2), np.float32)})


# ---------------------------------------------------------------- old opsets other exporters still write


def _old(op, inputs, opset, n_out=1, initializers=(), **attrs):
    outputs = [f"y{i}" for i in range(n_out)]
    node = helper.make_node(op, inputs, outputs, **attrs)
    types = [TensorProto.INT64 if op == "TopK" and i == 1 else TensorProto.FLOAT for i in range(n_out)]
    return _model([node], [_input("x", shape=[2, 4, 6, 6])], [_input(o, t) for o, t in zip(outputs, types)],
                  initializers, opset)


OLD_OPSET_CASES = {
    "slice_v1": lambda: _old("Slice", ["x"], 9, starts=[1, -1], ends=[INT64_MAX, 0], axes=[1, 3]),
    "split_v2": lambda: _old("Split", ["x"], 9, n_out=2, axis=1, split=[1, 3]),
    "split_v2_even": lambda: _old("Split", ["x"], 9, n_out=3, axis=2),
    "squeeze_unsqueeze_v11": lambda: _model(
        [helper.make_node("Unsqueeze", ["x"], ["u"], axes=[0, -1]),
         helper.make_node("Squeeze", ["u"], ["y0"], axes=[0])],
        [_input("x", shape=[2, 4, 6, 6])], [_input("y0")], opset=11),
    "topk_v1": lambda: _old("TopK", ["x"], 9, n_out=2, k=3, axis=-1),
    "upsample_v7_nearest": lambda: _old("Upsample", ["x"], 7, scales=[1.0, 1.0, 2.0, 3.0], mode="nearest"),
    "upsample_v9_linear": lambda: _old("Upsample", ["x", "s"], 9, initializers=[_const("s", [1, 1, 2, 2], np.float32)],
                                       mode="linear"),
    "resize_v10_nearest_down": lambda: _old("Resize", ["x", "s"], 10,
                                            initializers=[_const("s", [1, 1, 0.5, 0.5], np.float32)]),
    "resize_v10_linear": lambda: _old("Resize", ["x", "s"], 10, initializers=[_const("s", [1, 1, 1.5, 2], np.float32)],
                                      mode="linear"),
    "flatten_v1": lambda: _old("Flatten", ["x"], 9, axis=2),
    "depth_to_space_v1": lambda: _old("DepthToSpace", ["x"], 9, blocksize=2),
    "reshape_v5_zero": lambda: _old("Reshape", ["x", "s"], 9, initializers=[_const("s", [0, -1, 3])]),
}


@pytest.mark.parametrize("case", sorted(OLD_OPSET_CASES))
def test_old_opsets_match_onnxruntime(case):
    model = OLD_OPSET_CASES[case]()
    x = np.random.default_rng(4).standard_normal((2, 4, 6, 6)).astype(np.float32)
    _check(model, {"x": x}, rtol=1e-5, atol=1e-6)


def test_gather_based_ops_are_differentiable():
    from onnxkd.torch_bridge.ops import shape as shape_ops

    x = torch.randn(1, 2, 4, 5, dtype=torch.float64, requires_grad=True)
    cases = [
        lambda t: tensor_ops._resize(t, None, [1, 1, 1.5, 0.6], None, mode="cubic", exclude_outside=1),
        lambda t: tensor_ops._resize(t, None, [1, 1, 0.5, 0.5], None, mode="linear", antialias=1),
        lambda t: shape_ops._pad(t, [0, 0, 2, 1, 0, 0, 1, 3], "reflect", None),
        lambda t: shape_ops._slice(t, [-1, 4], [INT64_MIN, 0], [3, 2], [-2, -1]),
    ]
    for fn in cases:
        assert torch.autograd.gradcheck(fn, (x,))
