"""Neural-network ops of the torch bridge: conv, pool, normalization, activation, linalg, rnn.

The ONNX backend node suite (conformance.py) checks each op on its own examples; these small graphs
check what it misses against onnxruntime (or hand-computed values): asymmetric pads with groups and
dilations, MaxPool indices in ONNX layout, old-opset attribute forms (Softmax-11 flattening, Clip-6,
Gemm-6 broadcast, BatchNormalization-7), recurrent layers with sequence lengths, gradients through the
trainable ops, BatchNormalization's running-statistics update in train mode, and Dropout train/eval.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from onnx import TensorProto, ValueInfoProto, helper, numpy_helper

from onnxkd.torch_bridge import to_torch
from bridge_oracle import assert_same_as_ort, bridge_feeds, ort_feeds

torch.set_num_threads(1)
RNG = np.random.default_rng(0)
F32 = TensorProto.FLOAT


def _rand(*shape, dtype=np.float32):
    return RNG.standard_normal(shape).astype(dtype)


def _model(nodes, inputs, outputs, initializers=(), opset=17):
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def _vi(name, dtype=F32, shape=None):
    return helper.make_tensor_value_info(name, dtype, shape)


def _init(name, array):
    return numpy_helper.from_array(np.asarray(array), name)


def _same_as_ort(model, feeds, rtol=1e-4, atol=1e-5):
    assert_same_as_ort(model, feeds, rtol, atol)


_ort, _bridge = ort_feeds, bridge_feeds


def _single(op, feeds, opset, n_outputs=1, initializers=(), **attrs):
    """A one-node model whose inputs are the feeds (in order) and the initializers."""
    names = list(feeds) + [t.name for t in initializers]
    outputs = [f"y{i}" for i in range(n_outputs)]
    node = helper.make_node(op, names, outputs, **attrs)
    inputs = [_vi(k, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape) for k, v in feeds.items()]
    return _model([node], inputs, [ValueInfoProto(name=o) for o in outputs], initializers, opset)


# ----------------------------------------------------------------------------- against onnxruntime

CASES = {
    "conv_asym_pads_group_dilation": (
        "Conv", {"x": _rand(2, 4, 9, 8)}, 11, 1, [_init("w", _rand(6, 2, 3, 2)), _init("b", _rand(6))],
        dict(group=2, pads=[1, 0, 2, 1], dilations=[2, 1], strides=[2, 1]),
    ),
    "conv1d_same_lower": (
        "Conv", {"x": _rand(1, 3, 10)}, 11, 1, [_init("w", _rand(5, 3, 4))],
        dict(auto_pad="SAME_LOWER", strides=[3]),
    ),
    "conv3d": (
        "Conv", {"x": _rand(1, 2, 5, 4, 6)}, 11, 1, [_init("w", _rand(3, 2, 2, 3, 2))],
        dict(pads=[1, 1, 0, 0, 1, 1]),
    ),
    "conv_transpose_asym_output_padding_group": (
        "ConvTranspose", {"x": _rand(1, 4, 5, 4)}, 11, 1, [_init("w", _rand(4, 3, 3, 3)), _init("b", _rand(6))],
        dict(group=2, strides=[2, 3], pads=[1, 0, 0, 2], output_padding=[1, 2]),
    ),
    "conv_transpose_output_shape": (
        "ConvTranspose", {"x": _rand(1, 2, 4, 4)}, 11, 1, [_init("w", _rand(2, 3, 3, 3))],
        dict(strides=[2, 2], output_shape=[10, 9]),
    ),
    "maxpool_asym_dilated_ceil_indices": (
        "MaxPool", {"x": _rand(2, 3, 9, 10)}, 12, 2, [],
        dict(kernel_shape=[3, 2], pads=[1, 0, 0, 1], dilations=[2, 1], strides=[2, 3], ceil_mode=1),
    ),
    "maxpool_storage_order_indices": (
        "MaxPool", {"x": _rand(1, 2, 6, 5)}, 8, 2, [], dict(kernel_shape=[2, 2], strides=[2, 2], storage_order=1),
    ),
    "maxpool_native_indices": (
        "MaxPool", {"x": _rand(2, 3, 7, 7)}, 12, 2, [], dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
    ),
    "maxpool_int8": (
        "MaxPool", {"x": RNG.integers(-128, 127, (1, 2, 5, 5)).astype(np.int8)}, 12, 1, [],
        dict(kernel_shape=[2, 2], pads=[0, 0, 1, 1]),
    ),
    "avgpool_ceil_count_include_pad": (
        "AveragePool", {"x": _rand(1, 2, 7, 8)}, 11, 1, [],
        dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1, count_include_pad=1),
    ),
    "avgpool_asym_exclude_pad": (
        "AveragePool", {"x": _rand(1, 2, 6, 7)}, 11, 1, [], dict(kernel_shape=[3, 2], pads=[2, 0, 0, 1]),
    ),
    "avgpool_dilated": (
        "AveragePool", {"x": _rand(1, 2, 8, 8)}, 19, 1, [],
        dict(kernel_shape=[2, 2], dilations=[2, 2], pads=[1, 0, 1, 0], count_include_pad=1),
    ),
    "max_roi_pool": (
        "MaxRoiPool", {"x": _rand(2, 3, 8, 9)}, 1, 1,
        [_init("rois", np.array([[0, 1.2, 0.5, 6.7, 5.1], [1, 0, 0, 8, 7], [0, 3, 3, 3.4, 3.2]], np.float32))],
        dict(pooled_shape=[2, 3], spatial_scale=0.9),
    ),
    "roi_align_v10_max_adaptive": (
        "RoiAlign", {"x": _rand(2, 3, 8, 9)}, 10, 1,
        [_init("rois", np.array([[1.2, 0.5, 6.7, 5.1], [0, 0, 8, 7], [3, 3, 3.4, 3.2]], np.float32)),
         _init("batch", np.array([0, 1, 1], np.int64))],
        dict(mode="max", output_height=2, output_width=3, spatial_scale=0.8),
    ),
    "lppool_pads": ("LpPool", {"x": _rand(1, 2, 6, 6)}, 18, 1, [], dict(kernel_shape=[3, 3], p=3, pads=[1, 1, 1, 1])),
    "global_lppool": ("GlobalLpPool", {"x": _rand(2, 3, 4, 5)}, 2, 1, [], dict(p=3)),
    "batchnorm_v7_eval": (
        "BatchNormalization", {"x": _rand(2, 3, 4, 4)}, 7, 1,
        [_init("s", _rand(3)), _init("b", _rand(3)), _init("m", _rand(3)), _init("v", np.abs(_rand(3)) + 0.5)],
        dict(epsilon=1e-3),
    ),
    "instance_norm": (
        "InstanceNormalization", {"x": _rand(2, 3, 5, 4)}, 6, 1, [_init("s", _rand(3)), _init("b", _rand(3))], {},
    ),
    "layer_norm_stats_axis1": (
        "LayerNormalization", {"x": _rand(2, 3, 4)}, 17, 3, [_init("s", _rand(3, 4)), _init("b", _rand(3, 4))],
        dict(axis=1),
    ),
    "lrn": ("LRN", {"x": _rand(1, 5, 3, 3)}, 13, 1, [], dict(size=3, alpha=0.01, beta=0.6, bias=2.0)),
    "softmax_v11_flattens": ("Softmax", {"x": _rand(2, 3, 4)}, 11, 1, [], dict(axis=1)),
    "logsoftmax_v11_flattens": ("LogSoftmax", {"x": _rand(2, 3, 4)}, 11, 1, [], dict(axis=1)),
    "hardmax_v11_flattens": ("Hardmax", {"x": _rand(2, 3, 4)}, 11, 1, [], dict(axis=1)),
    "clip_v6_attrs": ("Clip", {"x": _rand(3, 4)}, 6, 1, [], dict(min=-0.5, max=0.3)),
    "clip_v12_int32": (
        "Clip", {"x": RNG.integers(-20, 20, (3, 4)).astype(np.int32)}, 12, 1,
        [_init("lo", np.array(-3, np.int32)), _init("hi", np.array(5, np.int32))], {},
    ),
    "gemm_no_c_transa": ("Gemm", {"a": _rand(3, 4)}, 13, 1, [_init("b", _rand(3, 5))], dict(transA=1, alpha=1.5)),
    "prelu_broadcast": ("PRelu", {"x": _rand(2, 3, 4, 4)}, 16, 1, [_init("slope", _rand(3, 1, 1))], {}),
    "dropout_v7_eval": ("Dropout", {"x": _rand(3, 4)}, 7, 1, [], dict(ratio=0.3)),
    "einsum_bilinear": ("Einsum", {"a": _rand(2, 3), "b": _rand(3, 4, 5), "c": _rand(2, 5)}, 12, 1, [],
                        dict(equation="ij,jkl,il->ik")),
    "lstm_bidirectional_seq_lens_peepholes": (
        "LSTM", {"x": _rand(5, 3, 4)}, 14, 3,
        [_init("w", _rand(2, 12, 4) * 0.5), _init("r", _rand(2, 12, 3) * 0.5), _init("b", _rand(2, 24) * 0.5),
         _init("lens", np.array([5, 2, 4], np.int32)), _init("h0", _rand(2, 3, 3)), _init("c0", _rand(2, 3, 3)),
         _init("p", _rand(2, 9) * 0.5)],
        dict(direction="bidirectional", hidden_size=3),
    ),
    "gru_reverse_seq_lens": (
        "GRU", {"x": _rand(4, 2, 3)}, 14, 2,
        [_init("w", _rand(1, 15, 3) * 0.5), _init("r", _rand(1, 15, 5) * 0.5), _init("b", _rand(1, 30) * 0.5),
         _init("lens", np.array([3, 4], np.int32))],
        dict(direction="reverse", hidden_size=5),
    ),
    "rnn_relu_clip": (
        "RNN", {"x": _rand(3, 2, 3)}, 14, 2, [_init("w", _rand(1, 4, 3)), _init("r", _rand(1, 4, 4))],
        dict(hidden_size=4, activations=["Relu"], clip=1.5),
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_onnxruntime(case):
    op, feeds, opset, n_outputs, initializers, attrs = CASES[case]
    _same_as_ort(_single(op, feeds, opset, n_outputs, initializers, **attrs), feeds)


def test_gemm_v6_broadcast_attr():
    a, b, c = _rand(4, 3), _rand(5, 3), _rand(5)
    model = _single("Gemm", {"a": a}, 6, 1, [_init("b", b), _init("c", c)], broadcast=1, transB=1, alpha=0.5, beta=2.0)
    (y,) = _bridge(model, {"a": a})
    np.testing.assert_allclose(y, 0.5 * a @ b.T + 2.0 * c, rtol=1e-5, atol=1e-6)


def test_lrn_even_size_window():
    # ONNX sums channels [c - floor((size-1)/2), c + ceil((size-1)/2)]: for size 2, c and c+1.
    # (onnxruntime only accepts odd sizes; the onnx reference evaluator loops over the batch, not channels.)
    x = _rand(2, 5, 3, 3)
    (y,) = _bridge(_single("LRN", {"x": x}, 13, 1, size=2, alpha=0.01, beta=0.6, bias=2.0), {"x": x})
    square = np.concatenate([x**2, np.zeros_like(x[:, :1])], axis=1)
    window = square[:, :-1] + square[:, 1:]
    np.testing.assert_allclose(y, x / (2.0 + 0.01 / 2 * window) ** 0.6, rtol=1e-5, atol=1e-6)


def test_prelu_v6_per_channel_slope():
    # Before opset 7 a 1-D slope of size C applies per channel (onnxruntime has no PRelu-6 kernel).
    x, slope = _rand(2, 3, 2, 2), np.array([0.1, 0.2, 0.3], np.float32)
    (y,) = _bridge(_single("PRelu", {"x": x}, 6, 1, [_init("s", slope)]), {"x": x})
    np.testing.assert_allclose(y, np.where(x < 0, x * slope.reshape(3, 1, 1), x), rtol=1e-6)


# ----------------------------------------------------------------------------- gradients


def _trainable_net():
    """Conv -> BatchNormalization -> Relu -> GlobalAveragePool -> LayerNormalization -> Einsum (flatten) -> Gemm."""
    nodes = [
        helper.make_node("Conv", ["x", "cw", "cb"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c", "bs", "bb", "bm", "bv"], ["n"]),
        helper.make_node("Relu", ["n"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["p"]),
        helper.make_node("LayerNormalization", ["p", "ls", "lb"], ["l"], axis=1),
        helper.make_node("Einsum", ["l"], ["g_in"], equation="nchw->nc"),
        helper.make_node("Gemm", ["g_in", "gw", "gb"], ["y"], transB=1),
    ]
    inits = [
        _init("cw", _rand(4, 3, 3, 3) * 0.3), _init("cb", _rand(4) * 0.1),
        _init("bs", np.ones(4, np.float32)), _init("bb", np.zeros(4, np.float32)),
        _init("bm", np.zeros(4, np.float32)), _init("bv", np.ones(4, np.float32)),
        _init("ls", np.ones((4, 1, 1), np.float32)), _init("lb", np.zeros((4, 1, 1), np.float32)),
        _init("gw", _rand(2, 4) * 0.5), _init("gb", np.zeros(2, np.float32)),
    ]
    return _model(nodes, [_vi("x", F32, [2, 3, 6, 6])], [_vi("y", F32, [2, 2])], inits, 17)


def test_gradients_reach_every_weight():
    module = to_torch(_trainable_net()).train()
    x = torch.from_numpy(_rand(2, 3, 6, 6))
    (y,) = module(x)
    target = torch.tensor([[1.0, -1.0], [-0.5, 2.0]])
    ((y - target) ** 2).mean().backward()
    for name in ["cw", "cb", "bs", "bb", "ls", "lb", "gw", "gb"]:
        grad = module.parameter(name).grad
        assert grad is not None, name
        assert torch.isfinite(grad).all(), name
        assert grad.abs().sum() > 0, name
    # running statistics are buffers, never trained
    assert "bm" not in dict(module.onnx_parameters()) and "bv" not in dict(module.onnx_parameters())


@pytest.mark.parametrize("op,opset,extra", [
    ("Conv", 11, {}),
    ("ConvTranspose", 11, {"output_padding": [1, 1], "strides": [2, 2]}),
])
def test_conv_gradients_match_torch(op, opset, extra):
    x = _rand(1, 2, 5, 5)
    w = _rand(2, 2, 3, 3)
    module = to_torch(_single(op, {"x": x}, opset, 1, [_init("w", w)], pads=[1, 0, 2, 1], **extra))
    xt = torch.from_numpy(x).requires_grad_()
    (y,) = module(xt)
    y.square().sum().backward()
    assert module.parameter("w").grad.abs().sum() > 0
    assert torch.isfinite(xt.grad).all() and xt.grad.abs().sum() > 0


def test_rnn_gradients_flow():
    model = _single("LSTM", {"x": _rand(4, 2, 3)}, 14, 3,
                    [_init("w", _rand(1, 8, 3)), _init("r", _rand(1, 8, 2))], hidden_size=2)
    module = to_torch(model)
    (y, h, c) = module(torch.from_numpy(_rand(4, 2, 3)))
    (y.sum() + c.sum()).backward()
    for name in ["w", "r"]:
        grad = module.parameter(name).grad
        assert torch.isfinite(grad).all() and grad.abs().sum() > 0


# ----------------------------------------------------------------------------- BatchNormalization training


def _bn_model(opset=15, momentum=0.8, training_mode=None, n_outputs=1):
    attrs = {"momentum": momentum, "epsilon": 1e-5}
    if training_mode is not None:
        attrs["training_mode"] = training_mode
    inits = [_init("s", np.array([1.0, 2.0], np.float32)), _init("b", np.array([0.0, 0.5], np.float32)),
             _init("m", np.array([0.5, -1.0], np.float32)), _init("v", np.array([2.0, 0.5], np.float32))]
    outputs = [f"y{i}" for i in range(n_outputs)]
    node = helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], outputs, **attrs)
    return _model([node], [_vi("x", F32, [4, 2, 3])], [_vi(o, F32) for o in outputs], inits, opset)


def test_batchnorm_train_updates_running_stats_with_onnx_momentum():
    x = _rand(4, 2, 3)
    module = to_torch(_bn_model(momentum=0.8)).train()
    (y,) = module(torch.from_numpy(x))
    batch_mean = x.mean(axis=(0, 2))
    batch_var_biased = x.var(axis=(0, 2))
    batch_var_unbiased = x.var(axis=(0, 2), ddof=1)
    # ONNX momentum weighs the old value; the variance update is unbiased, as in PyTorch.
    np.testing.assert_allclose(module.consts["m"].numpy(), np.array([0.5, -1.0]) * 0.8 + batch_mean * 0.2, rtol=1e-5)
    np.testing.assert_allclose(module.consts["v"].numpy(), np.array([2.0, 0.5]) * 0.8 + batch_var_unbiased * 0.2,
                               rtol=1e-5)
    expected = (x - batch_mean[None, :, None]) / np.sqrt(batch_var_biased[None, :, None] + 1e-5)
    expected = expected * np.array([1.0, 2.0])[None, :, None] + np.array([0.0, 0.5])[None, :, None]
    np.testing.assert_allclose(y.detach().numpy(), expected, rtol=1e-4, atol=1e-5)
    # eval mode: running statistics, no update
    module.eval()
    before = module.consts["m"].clone()
    with torch.no_grad():
        module(torch.from_numpy(x))
    assert torch.equal(module.consts["m"], before)


def test_batchnorm_training_mode_outputs_follow_the_spec_without_touching_buffers():
    x = _rand(4, 2, 3)
    module = to_torch(_bn_model(training_mode=1, n_outputs=3)).eval()
    with torch.no_grad():
        y, running_mean, running_var = module(torch.from_numpy(x))
    np.testing.assert_allclose(running_mean.numpy(), np.array([0.5, -1.0]) * 0.8 + x.mean(axis=(0, 2)) * 0.2, rtol=1e-5)
    np.testing.assert_allclose(running_var.numpy(), np.array([2.0, 0.5]) * 0.8 + x.var(axis=(0, 2)) * 0.2, rtol=1e-5)
    assert module.consts["m"].tolist() == [0.5, -1.0]


# ----------------------------------------------------------------------------- Dropout


@pytest.mark.parametrize("opset", [7, 10, 13])
def test_dropout_drops_in_train_and_is_identity_in_eval(opset):
    ratio = 0.25
    node = helper.make_node("Dropout", ["x"], ["y"], ratio=ratio) if opset < 12 else \
        helper.make_node("Dropout", ["x", "ratio"], ["y"])
    inits = [] if opset < 12 else [_init("ratio", np.array(ratio, np.float32))]
    model = _model([node], [_vi("x", F32, [200, 50])], [_vi("y", F32)], inits, opset)
    x = np.abs(_rand(200, 50)) + 0.1
    module = to_torch(model)
    (y_eval,) = _bridge(model, {"x": x})
    np.testing.assert_array_equal(y_eval, x)
    module.train()
    with torch.no_grad():
        (y_train,) = module(torch.from_numpy(x))
    y_train = y_train.numpy()
    dropped = y_train == 0
    assert 0.2 < dropped.mean() < 0.3
    np.testing.assert_allclose(y_train[~dropped], x[~dropped] / (1 - ratio), rtol=1e-6)


def test_dropout_training_mode_input_and_mask():
    node = helper.make_node("Dropout", ["x", "ratio", "training_mode"], ["y", "mask"])
    inits = [_init("ratio", np.array(0.5, np.float32)), _init("training_mode", np.array(True))]
    model = _model([node], [_vi("x", F32, [100, 40])], [_vi("y", F32), _vi("mask", TensorProto.BOOL)], inits, 13)
    x = np.ones((100, 40), np.float32)
    y, mask = _bridge(model, {"x": x})
    assert mask.dtype == np.bool_ and 0.4 < mask.mean() < 0.6
    np.testing.assert_array_equal(y, np.where(mask, 2.0, 0.0))


def test_ops_keep_float64():
    x = _rand(1, 2, 5, 5, dtype=np.float64)
    model = _single("Conv", {"x": x}, 11, 1, [_init("w", _rand(3, 2, 3, 3, dtype=np.float64))], pads=[0, 1, 1, 0])
    (y,) = _bridge(model, {"x": x})
    assert y.dtype == np.float64


# ----------------------------------------------------------------------------- old opsets


def test_batchnorm_v6_is_test_and_spatial0():
    x = _rand(3, 2, 4)
    s, b, m, v = _rand(2), _rand(2), _rand(2), np.abs(_rand(2)) + 0.5
    inits = [_init("s", s), _init("b", b), _init("m", m), _init("v", v)]
    (y,) = _bridge(_single("BatchNormalization", {"x": x}, 6, 1, inits, is_test=1, epsilon=1e-3), {"x": x})
    view = lambda t: t.reshape(1, 2, 1)  # noqa: E731
    np.testing.assert_allclose(y, (x - view(m)) / np.sqrt(view(v) + 1e-3) * view(s) + view(b), rtol=1e-5, atol=1e-6)
    # spatial=0: statistics per activation, parameters shaped like one sample
    ps, pb, pm, pv = _rand(2, 4), _rand(2, 4), _rand(2, 4), np.abs(_rand(2, 4)) + 0.5
    inits = [_init("s", ps), _init("b", pb), _init("m", pm), _init("v", pv)]
    (y,) = _bridge(_single("BatchNormalization", {"x": x}, 7, 1, inits, spatial=0), {"x": x})
    np.testing.assert_allclose(y, (x - pm) / np.sqrt(pv + 1e-5) * ps + pb, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("op,opset,attrs", [
    ("Relu", 1, {"consumed_inputs": [0]}),
    ("Softmax", 1, {"axis": 2}),
    ("Clip", 1, {"min": -0.1, "max": 0.2, "consumed_inputs": [0]}),
    ("Dropout", 6, {"is_test": 1, "ratio": 0.7}),
    ("LeakyRelu", 1, {"alpha": 0.2, "consumed_inputs": [0]}),
])
def test_opset1_attribute_forms_convert(op, opset, attrs):
    x = _rand(2, 3, 4)
    (y,) = _bridge(_single(op, {"x": x}, opset, **attrs), {"x": x})
    expected = {
        "Relu": lambda: np.maximum(x, 0),
        "Softmax": lambda: np.exp(x) / np.exp(x).sum(2, keepdims=True),
        "Clip": lambda: np.clip(x, -0.1, 0.2),
        "Dropout": lambda: x,
        "LeakyRelu": lambda: np.where(x < 0, 0.2 * x, x),
    }[op]()
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-6)


def test_batchnorm_autocast_bf16_train_keeps_buffers_float32():
    module = to_torch(_bn_model()).train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        (y,) = module(torch.from_numpy(_rand(4, 2, 3)).bfloat16())
    assert y.dtype == torch.bfloat16 and torch.isfinite(y.float()).all()
    assert module.consts["m"].dtype == torch.float32
