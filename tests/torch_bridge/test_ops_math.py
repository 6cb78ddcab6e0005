"""Elementwise, logical, reduction and misc (loss, quantization) ops of the torch bridge.

The ONNX backend node suite (conformance.py) checks each op on its own examples; these small graphs
check what it misses against onnxruntime (or hand-computed values where onnxruntime has no kernel):
broadcasting across ranks, integer Div/Mod on negative numbers, opset < 7 broadcast attributes,
Reduce* axes in every form, gradients through arithmetic, and dtypes kept under bf16 autocast.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper

from onnxkd.torch_bridge import to_torch
from onnxkd.torch_bridge.registry import lookup
from bridge_oracle import assert_same_as_ort, bridge_feeds, ort_feeds

torch.set_num_threads(1)
RNG = np.random.default_rng(0)


def _model(nodes, inputs, outputs, initializers=(), opset=17):
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def _vi(name, dtype=TensorProto.FLOAT, shape=None):
    return helper.make_tensor_value_info(name, dtype, shape)


def _same_as_ort(model, feeds, rtol=1e-5, atol=1e-6):
    return assert_same_as_ort(model, feeds, rtol, atol)


_ort, _bridge = ort_feeds, bridge_feeds


# ---------------------------------------------------------------- broadcasting


@pytest.mark.parametrize("op", ["Add", "Mul", "Sub", "Div", "Pow", "Max", "Min"])
def test_binary_broadcast_across_ranks(op):
    a = RNG.uniform(0.5, 2.0, (2, 3, 4, 5)).astype(np.float32)
    b = RNG.uniform(0.5, 2.0, (4, 1)).astype(np.float32)
    model = _model([helper.make_node(op, ["a", "b"], ["y"])], [_vi("a"), _vi("b")], [_vi("y")])
    (y,) = _same_as_ort(model, {"a": a, "b": b})
    assert y.shape == (2, 3, 4, 5)


def test_where_broadcasts_three_ranks():
    cond = RNG.random((3, 1, 5)) > 0.5
    x = RNG.standard_normal((4, 1)).astype(np.float32)
    y = RNG.standard_normal((2, 1, 1, 1)).astype(np.float32)
    model = _model([helper.make_node("Where", ["c", "x", "y"], ["z"])],
                   [_vi("c", TensorProto.BOOL), _vi("x"), _vi("y")], [_vi("z")])
    (z,) = _same_as_ort(model, {"c": cond, "x": x, "y": y})
    assert z.shape == (2, 3, 4, 5)


def test_comparisons_broadcast_and_return_bool():
    a = RNG.integers(-3, 3, (2, 3, 4)).astype(np.int64)
    b = RNG.integers(-3, 3, (4,)).astype(np.int64)
    ops = ["Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual"]
    nodes = [helper.make_node(op, ["a", "b"], [op]) for op in ops]
    model = _model(nodes, [_vi("a", TensorProto.INT64), _vi("b", TensorProto.INT64)],
                   [_vi(op, TensorProto.BOOL) for op in ops])
    for y in _same_as_ort(model, {"a": a, "b": b}):
        assert y.dtype == np.bool_ and y.shape == (2, 3, 4)


# ---------------------------------------------------------------- integer semantics


@pytest.mark.parametrize("dtype,proto", [(np.int32, TensorProto.INT32), (np.int64, TensorProto.INT64)])
def test_integer_div_truncates_and_mod_follows_divisor_sign(dtype, proto):
    a = np.array([7, -7, 7, -7, 6, -1, 0], dtype=dtype)
    b = np.array([2, 2, -2, -2, -4, 3, -5], dtype=dtype)
    nodes = [
        helper.make_node("Div", ["a", "b"], ["div"]),
        helper.make_node("Mod", ["a", "b"], ["mod"]),
        helper.make_node("Mod", ["a", "b"], ["fmod"], fmod=1),
    ]
    model = _model(nodes, [_vi("a", proto), _vi("b", proto)], [_vi(n, proto) for n in ("div", "mod", "fmod")])
    div, mod, fmod = _same_as_ort(model, {"a": a, "b": b})
    np.testing.assert_array_equal(div, [3, -3, -3, 3, -1, 0, 0])  # C truncation, not floor
    np.testing.assert_array_equal(mod, [1, 1, -1, -1, -2, 2, 0])  # sign of the divisor (Python %)
    np.testing.assert_array_equal(fmod, [1, -1, 1, -1, 2, -1, 0])  # sign of the dividend (C fmod)
    assert div.dtype == dtype


def test_pow_keeps_base_dtype_for_mixed_types():
    base = np.array([1, 2, 3, -2], dtype=np.int64)
    exponent = np.array([2.0, 0.5, 3.0, 2.0], dtype=np.float32)
    model = _model([helper.make_node("Pow", ["x", "e"], ["y"])],
                   [_vi("x", TensorProto.INT64), _vi("e")], [_vi("y", TensorProto.INT64)])
    (y,) = _bridge(model, {"x": base, "e": exponent})
    assert y.dtype == np.int64
    np.testing.assert_array_equal(y, [1, 1, 27, 4])  # 2 ** 0.5 truncates to 1, like numpy's astype


def test_unsigned_ops_keep_unsigned_order():
    # uint32 values above 2**31 must not turn negative on the way through torch's int kernels.
    a = np.array([0, 3_000_000_000, 7, 4_294_967_295], dtype=np.uint32)
    b = np.array([1, 5, 3_000_000_001, 1], dtype=np.uint32)
    nodes = [helper.make_node("Max", ["a", "b"], ["max"]), helper.make_node("Less", ["a", "b"], ["lt"]),
             helper.make_node("ArgMax", ["a"], ["arg"], axis=0, keepdims=0)]
    model = _model(nodes, [_vi("a", TensorProto.UINT32), _vi("b", TensorProto.UINT32)],
                   [_vi("max", TensorProto.UINT32), _vi("lt", TensorProto.BOOL), _vi("arg", TensorProto.INT64)])
    top, lt, arg = _bridge(model, {"a": a, "b": b})
    np.testing.assert_array_equal(top, np.maximum(a, b))
    np.testing.assert_array_equal(lt, a < b)
    assert top.dtype == np.uint32 and arg.dtype == np.int64 and int(arg) == 3


def test_uint64_right_shift_is_logical():
    x = np.array([2**63 + 8, 2**64 - 1, 16], dtype=np.uint64)
    s = np.array([3, 60, 0], dtype=np.uint64)
    model = _model([helper.make_node("BitShift", ["x", "s"], ["y"], direction="RIGHT")],
                   [_vi("x", TensorProto.UINT64), _vi("s", TensorProto.UINT64)], [_vi("y", TensorProto.UINT64)])
    (y,) = _bridge(model, {"x": x, "s": s})
    np.testing.assert_array_equal(y, x >> s)


# ---------------------------------------------------------------- old opsets


@pytest.mark.parametrize("axis,b_shape", [(None, (4, 5)), (1, (3,)), (0, (2, 3)), (-3, (3, 4))])
def test_opset6_add_with_broadcast_axis(axis, b_shape):
    a = RNG.standard_normal((2, 3, 4, 5)).astype(np.float32)
    b = RNG.standard_normal(b_shape).astype(np.float32)
    attrs = {"broadcast": 1} if axis is None else {"broadcast": 1, "axis": axis}
    nodes = [helper.make_node("Add", ["a", "b"], ["sum"], **attrs), helper.make_node("Mul", ["a", "b"], ["prod"], **attrs)]
    model = _model(nodes, [_vi("a"), _vi("b")], [_vi("sum"), _vi("prod")], opset=6)
    start = 4 - len(b_shape) if axis is None else axis % 4
    aligned = b.reshape((1,) * start + b_shape + (1,) * (4 - start - len(b_shape)))
    total, product = _bridge(model, {"a": a, "b": b})
    np.testing.assert_allclose(total, a + aligned, rtol=1e-6)
    np.testing.assert_allclose(product, a * aligned, rtol=1e-6)


def test_opset1_unary_with_consumed_inputs_and_scalar_broadcast():
    x = RNG.standard_normal((2, 3)).astype(np.float32)
    nodes = [helper.make_node("Abs", ["x"], ["a"], consumed_inputs=[0]),
             helper.make_node("Sub", ["a", "c"], ["y"], broadcast=1),
             helper.make_node("Cast", ["y"], ["z"], to="DOUBLE")]
    c = numpy_helper.from_array(np.array(1.5, dtype=np.float32), "c")
    model = _model(nodes, [_vi("x")], [_vi("z", TensorProto.DOUBLE)], [c], opset=1)
    (z,) = _bridge(model, {"x": x})
    assert z.dtype == np.float64
    np.testing.assert_allclose(z, np.abs(x) - 1.5, rtol=1e-6)


# ---------------------------------------------------------------- reductions

REDUCE_OPS = ["ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
              "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare"]


@pytest.mark.parametrize("op", REDUCE_OPS)
@pytest.mark.parametrize("keepdims", [0, 1])
def test_reduce_negative_axes_as_input(op, keepdims):
    x = RNG.uniform(0.5, 1.5, (2, 3, 4)).astype(np.float32)
    axes = numpy_helper.from_array(np.array([-1, 0], dtype=np.int64), "axes")
    model = _model([helper.make_node(op, ["x", "axes"], ["y"], keepdims=keepdims)], [_vi("x")], [_vi("y")], [axes], opset=18)
    _same_as_ort(model, {"x": x}, rtol=1e-5)


@pytest.mark.parametrize("op", REDUCE_OPS)
def test_reduce_axes_attribute_in_old_opset(op):
    x = RNG.uniform(0.5, 1.5, (2, 3, 4)).astype(np.float32)
    model = _model([helper.make_node(op, ["x"], ["y"], axes=[-2], keepdims=0)], [_vi("x")], [_vi("y")], opset=11)
    (y,) = _same_as_ort(model, {"x": x}, rtol=1e-5)
    assert y.shape == (2, 4)


def test_reduce_empty_axes_input_reduces_all_or_nothing():
    x = RNG.standard_normal((2, 3)).astype(np.float32)
    empty = numpy_helper.from_array(np.array([], dtype=np.int64), "axes")
    nodes = [helper.make_node("ReduceSum", ["x", "axes"], ["all"], keepdims=0),
             helper.make_node("ReduceSum", ["x", "axes"], ["none"], noop_with_empty_axes=1),
             helper.make_node("ReduceMax", ["x"], ["max"], keepdims=1)]
    model = _model(nodes, [_vi("x")], [_vi("all"), _vi("none"), _vi("max")], [empty], opset=18)
    total, same, top = _same_as_ort(model, {"x": x})
    assert total.shape == () and top.shape == (1, 1)
    np.testing.assert_array_equal(same, x)


def test_argmax_select_last_index_and_cumsum_reverse_exclusive():
    x = np.array([[1, 3, 3, 0], [2, 2, 1, 2]], dtype=np.float32)
    axis = numpy_helper.from_array(np.array(1, dtype=np.int64), "axis")
    nodes = [helper.make_node("ArgMax", ["x"], ["last"], axis=1, select_last_index=1),
             helper.make_node("ArgMin", ["x"], ["first"], axis=-1, keepdims=0),
             helper.make_node("CumSum", ["x", "axis"], ["cs"], exclusive=1, reverse=1)]
    model = _model(nodes, [_vi("x")], [_vi("last", TensorProto.INT64), _vi("first", TensorProto.INT64), _vi("cs")], [axis])
    last, first, cs = _same_as_ort(model, {"x": x})
    np.testing.assert_array_equal(last, [[2], [3]])
    np.testing.assert_array_equal(cs, [[6, 3, 0, 0], [5, 3, 2, 0]])


# ---------------------------------------------------------------- losses and quantization


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
def test_softmax_cross_entropy_with_weights_and_ignore_index(reduction):
    scores = RNG.standard_normal((3, 5, 2)).astype(np.float32)
    labels = np.array([[0, 4], [2, -1], [1, 3]], dtype=np.int64)
    weights = RNG.uniform(0.5, 1.5, 5).astype(np.float32)
    node = helper.make_node("SoftmaxCrossEntropyLoss", ["s", "l", "w"], ["loss", "logp"],
                            reduction=reduction, ignore_index=-1)
    model = _model([node], [_vi("s"), _vi("l", TensorProto.INT64), _vi("w")], [_vi("loss"), _vi("logp")], opset=13)
    _same_as_ort(model, {"s": scores, "l": labels, "w": weights}, rtol=1e-5)


def test_quantize_dequantize_per_axis_round_trip():
    x = RNG.uniform(-3, 3, (2, 3, 4)).astype(np.float32)
    scale = numpy_helper.from_array(np.array([0.02, 0.05, 0.1], dtype=np.float32), "scale")
    zero = numpy_helper.from_array(np.array([-3, 0, 7], dtype=np.int8), "zero")
    nodes = [helper.make_node("QuantizeLinear", ["x", "scale", "zero"], ["q"], axis=1),
             helper.make_node("DequantizeLinear", ["q", "scale", "zero"], ["y"], axis=1)]
    model = _model(nodes, [_vi("x")], [_vi("q", TensorProto.INT8), _vi("y")], [scale, zero], opset=13)
    q, y = _same_as_ort(model, {"x": x})
    assert q.dtype == np.int8 and q.min() >= -128


def test_qlinear_conv_with_padding_and_per_channel_weights():
    x = RNG.integers(0, 255, (1, 2, 5, 5)).astype(np.uint8)
    w = RNG.integers(-20, 20, (3, 2, 3, 3)).astype(np.int8)
    inits = [numpy_helper.from_array(np.array(v, dtype=t), n) for n, v, t in [
        ("xs", 0.02, np.float32), ("xz", 128, np.uint8), ("w", w, np.int8), ("ws", [0.01, 0.02, 0.03], np.float32),
        ("wz", [0, 0, 0], np.int8), ("ys", 0.05, np.float32), ("yz", 100, np.uint8), ("b", [10, -20, 30], np.int32)]]
    node = helper.make_node("QLinearConv", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz", "b"], ["y"],
                            pads=[1, 0, 1, 2], strides=[1, 2])
    model = _model([node], [_vi("x", TensorProto.UINT8)], [_vi("y", TensorProto.UINT8)], inits, opset=13)
    expected = _ort(model, {"x": x})[0]
    (actual,) = _bridge(model, {"x": x})
    assert actual.shape == expected.shape and actual.dtype == np.uint8
    assert np.abs(actual.astype(int) - expected.astype(int)).max() <= 1  # onnxruntime rounds its fixed-point requantization


# ---------------------------------------------------------------- gradients


def test_gradients_through_arithmetic_match_autograd():
    x = torch.randn(4, 3, dtype=torch.float64)
    w = np.array([0.5, -1.0, 2.0])
    v = np.array([1.5, 2.0, 3.0])
    nodes = [helper.make_node("Add", ["x", "w"], ["a"]), helper.make_node("Mul", ["a", "x"], ["m"]),
             helper.make_node("Div", ["m", "v"], ["d"]), helper.make_node("Pow", ["d", "two"], ["p"]),
             helper.make_node("Sub", ["p", "w"], ["s"]),
             helper.make_node("ReduceMean", ["s"], ["y"], axes=[0, 1], keepdims=0)]
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(v, "v"), numpy_helper.from_array(np.array(2.0), "two")]
    model = _model(nodes, [_vi("x", TensorProto.DOUBLE)], [_vi("y", TensorProto.DOUBLE)], inits, opset=13)
    module = to_torch(model)
    xb = x.clone().requires_grad_(True)
    (y,) = module(xb)
    y.backward()

    xr = x.clone().requires_grad_(True)
    wr = torch.tensor(w, requires_grad=True)
    vr = torch.tensor(v, requires_grad=True)
    ref = ((((xr + wr) * xr) / vr) ** 2 - wr).mean()
    ref.backward()
    torch.testing.assert_close(y.detach(), ref.detach())
    torch.testing.assert_close(xb.grad, xr.grad)
    torch.testing.assert_close(module.parameter("w").grad, wr.grad)
    torch.testing.assert_close(module.parameter("v").grad, vr.grad)


def test_loss_gradients_match_torch_cross_entropy_with_trainable_weights():
    scores = torch.randn(5, 4, dtype=torch.float64)
    labels = torch.tensor([1, 0, -1, 3, 1])
    w = np.array([0.5, 2.0, 1.0, 1.5])
    node = helper.make_node("SoftmaxCrossEntropyLoss", ["s", "l", "w"], ["loss"], reduction="mean", ignore_index=-1)
    model = _model([node], [_vi("s", TensorProto.DOUBLE), _vi("l", TensorProto.INT64)], [_vi("loss", TensorProto.DOUBLE)],
                   [numpy_helper.from_array(w, "w")], opset=13)
    module = to_torch(model)
    s1 = scores.clone().requires_grad_(True)
    (loss,) = module(s1, labels)
    loss.backward()  # the class weights are a parameter too: F.nll_loss would refuse them
    s2 = scores.clone().requires_grad_(True)
    ref = F.cross_entropy(s2, labels, weight=torch.tensor(w), ignore_index=-1)
    ref.backward()
    torch.testing.assert_close(loss.detach(), ref.detach())
    torch.testing.assert_close(s1.grad, s2.grad)
    # d loss / d w_c = sum over samples of class c of (l_i - loss) / sum of the used weights.
    per_sample = -torch.log_softmax(scores, 1)[torch.arange(5), labels.clamp(min=0)].numpy()
    used = labels.numpy() >= 0
    total_weight = w[labels.numpy()[used]].sum()
    expected = [((per_sample - ref.item()) * (labels.numpy() == c)).sum() / total_weight for c in range(4)]
    np.testing.assert_allclose(module.parameter("w").grad.numpy(), expected, rtol=1e-10)


# ---------------------------------------------------------------- autocast


def test_bf16_autocast_keeps_onnx_output_dtypes():
    x = RNG.standard_normal((3, 4)).astype(np.float32)
    w = numpy_helper.from_array(RNG.standard_normal((4, 4)).astype(np.float32), "w")
    zero = numpy_helper.from_array(np.array(0.0, dtype=np.float32), "zero")
    axes = numpy_helper.from_array(np.array([1], dtype=np.int64), "axes")
    # MatMul is what autocast actually lowers to bf16; fall back to Mul if the linalg family is absent.
    has_matmul = lookup("MatMul", "", 17) is not None
    first = [helper.make_node("MatMul", ["x", "w"], ["h"]) if has_matmul else helper.make_node("Mul", ["x", "x"], ["h"])]
    nodes = first + [
        helper.make_node("Add", ["h", "x"], ["a"]),
        helper.make_node("Less", ["a", "zero"], ["neg"]),
        helper.make_node("Where", ["neg", "zero", "a"], ["relu"]),
        helper.make_node("ArgMax", ["relu"], ["idx"], axis=1),
        helper.make_node("ReduceSum", ["relu", "axes"], ["total"]),
        helper.make_node("Cast", ["total"], ["as_int"], to=TensorProto.INT32),
        helper.make_node("Equal", ["idx", "idx"], ["eq"]),
        helper.make_node("Not", ["neg"], ["pos"]),
    ]
    outputs = [_vi("neg", TensorProto.BOOL), _vi("idx", TensorProto.INT64), _vi("total"),
               _vi("as_int", TensorProto.INT32), _vi("eq", TensorProto.BOOL), _vi("pos", TensorProto.BOOL)]
    model = _model(nodes, [_vi("x")], outputs, [w, zero, axes], opset=18)
    module = to_torch(model)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        neg, idx, total, as_int, eq, pos = module(torch.from_numpy(x))
    assert neg.dtype == torch.bool and pos.dtype == torch.bool and eq.dtype == torch.bool
    assert idx.dtype == torch.int64 and as_int.dtype == torch.int32
    assert total.dtype in (torch.float32, torch.bfloat16) and torch.isfinite(total.float()).all()
    expected = _ort(model, {"x": x})
    np.testing.assert_allclose(total.float().detach().numpy(), expected[2], rtol=0.05, atol=0.1)


def test_cast_string_to_float_goes_through_numpy():
    text = np.array([["1.5", "-2", "1e3"], ["NaN", "INF", "0.25"]], dtype=object)
    model = _model([helper.make_node("Cast", ["s"], ["y"], to=TensorProto.FLOAT)],
                   [_vi("s", TensorProto.STRING)], [_vi("y")], opset=13)
    (expected,) = _ort(model, {"s": text})
    (actual,) = to_torch(model)(text)
    assert actual.dtype == torch.float32
    np.testing.assert_array_equal(actual.numpy(), expected)


def test_random_ops_shapes_dtypes_ranges_and_seeds():
    x = np.zeros((3, 4), dtype=np.float32)
    nodes = [
        helper.make_node("RandomNormal", [], ["n"], shape=[2, 5], dtype=TensorProto.DOUBLE, seed=3.0),
        helper.make_node("RandomUniformLike", ["x"], ["u"], low=2.0, high=3.0),
        helper.make_node("Multinomial", ["x"], ["m"], sample_size=7),
        helper.make_node("Bernoulli", ["p"], ["b"], dtype=TensorProto.INT32),
    ]
    p = numpy_helper.from_array(np.array([0.0, 1.0, 1.0], dtype=np.float32), "p")
    outputs = [_vi("n", TensorProto.DOUBLE), _vi("u"), _vi("m", TensorProto.INT32), _vi("b", TensorProto.INT32)]
    module = to_torch(_model(nodes, [_vi("x")], outputs, [p], opset=17))
    n1, u, m, b = module(torch.from_numpy(x))
    n2 = module(torch.from_numpy(x))[0]
    assert n1.shape == (2, 5) and n1.dtype == torch.float64 and torch.equal(n1, n2)  # seeded: reproducible
    assert u.shape == (3, 4) and u.dtype == torch.float32 and (u >= 2).all() and (u <= 3).all()
    assert m.shape == (3, 7) and m.dtype == torch.int32 and m.min() >= 0 and m.max() <= 3
    assert b.dtype == torch.int32 and b.tolist() == [0, 1, 1]
