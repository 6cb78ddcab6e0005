"""graph_passes.optimize: each fusion on what torch's exporter writes and on hand-built forms it does not
write, near misses left alone, and the architecture zoo and ONNX-zoo light models unchanged in function.

Oracle, every case (``_check``): onnxruntime on the optimized model == onnxruntime on the input
(max|diff| <= 1e-5 max|input's output|), onnx's full checker, the interface kept (input and output names,
dims and dim_param names), and the torch bridge on the optimized model == onnxruntime (1e-4, as in
tests/torch_bridge).
"""

from __future__ import annotations

import io
import math
import warnings
from collections import Counter

import models
import numpy as np
import onnx
import onnx_ir as ir
import pytest
import torch
import torch.nn.functional as F
from light_models import light_model_path
from onnx import TensorProto, helper, numpy_helper
from prune_oracle import random_inputs, run
from torch import nn

import onnxkd
from onnxkd.graph_passes.api import prune
from onnxkd.graph_passes.optimize import optimize
from onnxkd.graph_passes.optimize.api import STATIC_RESHAPE, WEIGHT_INPUTS
from onnxkd.graph_passes.optimize.matmul_bias import MATMUL_BIAS
from onnxkd.model import to_proto

TOL = 1e-5  # optimized vs input, both on onnxruntime
BRIDGE_TOL = 1e-4  # torch bridge vs onnxruntime
HARD, GELU, MISH, LN, GEMM = "HardSigmoid/HardSwish", "Gelu", "Mish", "LayerNormalization", "Gemm (MatMul + bias)"
torch.set_num_threads(1)


# --------------------------------------------------------------------------- helpers


def _rel_err(actual: np.ndarray, expected: np.ndarray) -> float:
    assert actual.shape == expected.shape
    scale = max(float(np.abs(expected).max(initial=0.0)), 1e-12)
    return float(np.abs(actual.astype(np.float64) - expected).max(initial=0.0)) / scale


def _interface(proto: onnx.ModelProto) -> list:
    initializers = {t.name for t in proto.graph.initializer}

    def describe(value):
        dims = [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]
        return value.name, value.type.tensor_type.elem_type, dims

    inputs = [describe(v) for v in proto.graph.input if v.name not in initializers]
    return inputs + [describe(v) for v in proto.graph.output]


def _ops(model) -> Counter:
    return Counter(node.op_type for node in to_proto(model).graph.node)


def _check(source, result, feeds=None, *, bridge: bool = True, batch: int = 2) -> list[np.ndarray]:
    """The oracle of the module docstring; the optimized model's outputs."""
    source = to_proto(source)
    optimized = to_proto(result.model)
    onnx.checker.check_model(optimized, full_check=True)
    assert _interface(optimized) == _interface(source)
    feeds = feeds if feeds is not None else random_inputs(source, batch)
    expected, actual = run(source, feeds), run(optimized, feeds)
    for index, (a, e) in enumerate(zip(actual, expected, strict=True)):
        assert _rel_err(a, e) <= TOL, f"output {index}: rel err {_rel_err(a, e):.1e}"
    if bridge:
        module = onnxkd.to_torch(optimized).eval()
        with torch.no_grad():
            outputs = module(*(torch.from_numpy(v) for v in feeds.values()))
        for index, (t, a) in enumerate(zip(outputs, actual, strict=True)):
            assert _rel_err(t.numpy(), a) <= BRIDGE_TOL, f"bridge output {index}: rel err {_rel_err(t.numpy(), a):.1e}"
    return actual


def _feeds(proto: onnx.ModelProto, batch: int = 3, scale: float = 4.0, seed: int = 0) -> dict[str, np.ndarray]:
    """Wide inputs (std 4): every branch of clip and every regime of the activations is reached. Batch 3: not
    the export's 2, so a batch baked in by a rewrite shows."""
    return {name: (value * scale).astype(np.float32) for name, value in random_inputs(proto, batch, seed).items()}


class _Fn(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


def _export(module: nn.Module, opset: int, shape=(2, 4, 8)) -> onnx.ModelProto:
    """torch's legacy exporter, batch dynamic ("batch")."""
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), (torch.randn(*shape),), buffer, dynamo=False, opset_version=opset,
                          input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}})
    return onnx.load_from_string(buffer.getvalue())


def _layer_norm(width: int = 8) -> nn.LayerNorm:
    norm = nn.LayerNorm(width)
    with torch.no_grad():  # not ones and zeros: the scale and bias must reach the fused op
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-0.5, 0.5)
    return norm


class _Graph:
    """A graph written node by node for the forms torch does not write: ``g.op("Mul", a, b)`` -> output name."""

    def __init__(self):
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.inputs = ["x"]

    def const(self, value, shape=()) -> str:
        name = f"c{len(self.initializers)}"
        array = np.asarray(value, np.float32)
        self.initializers.append(numpy_helper.from_array(array if array.shape else np.full(shape, value, np.float32), name))
        return name

    def op(self, op_type: str, *inputs: str, output: str | None = None, **attributes) -> str:
        output = output or f"t{len(self.nodes)}"
        self.nodes.append(helper.make_node(op_type, list(inputs), [output], **attributes))
        return output

    def mul(self, a: str, b: str, swap: bool = False) -> str:
        return self.op("Mul", *((b, a) if swap else (a, b)))

    def add(self, a: str, b: str, swap: bool = False) -> str:
        return self.op("Add", *((b, a) if swap else (a, b)))

    def model(self, outputs: list[str], opset: int, shape=("batch", 4, 8), out_shape=None) -> onnx.ModelProto:
        """Every graph here is elementwise: outputs shaped as x unless ``out_shape`` says otherwise."""
        inputs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape)) for name in self.inputs]
        out_shape = list(shape if out_shape is None else out_shape)
        graph = helper.make_graph(self.nodes, "g", inputs,
                                  [helper.make_tensor_value_info(o, TensorProto.FLOAT, out_shape) for o in outputs],
                                  self.initializers)
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _fused(result) -> dict[str, int]:
    """The fusions that found something (folded Reshape targets are tested in test_static_shapes.py, weights
    listed as inputs below)."""
    return {name: count for name, count in result.fused.items()
            if count and name not in (STATIC_RESHAPE, WEIGHT_INPUTS)}


# --------------------------------------------------------------------------- torch-written patterns

# (id, module, opset, fusion, fused op, ops that must be gone, opset after)
TORCH_WRITTEN = [
    ("hardswish_div", _Fn(lambda x: x * F.relu6(x + 3) / 6), 17, HARD, "HardSwish", {"Clip", "Div", "Mul"}, 17),
    ("hardswish_times_sixth", _Fn(lambda x: x * F.relu6(x + 3) * (1 / 6)), 17, HARD, "HardSwish", {"Clip", "Mul"}, 17),
    ("hardswish_gate_first", _Fn(lambda x: x * (F.relu6(x + 3) / 6)), 17, HARD, "HardSwish", {"Clip", "Div"}, 17),
    ("hardsigmoid_div", _Fn(lambda x: F.relu6(x + 3) / 6), 17, HARD, "HardSigmoid", {"Clip", "Div"}, 17),
    ("hardsigmoid_keras", _Fn(lambda x: torch.clamp(0.2 * x + 0.5, 0, 1)), 17, HARD, "HardSigmoid", {"Clip", "Mul"}, 17),
    ("hardswish_opset14", _Fn(lambda x: x * F.relu6(x + 3) / 6), 14, HARD, "HardSwish", {"Clip", "Div"}, 14),
    ("gelu_erf", nn.GELU(), 17, GELU, "Gelu", {"Erf", "Div"}, 20),
    ("gelu_tanh", nn.GELU(approximate="tanh"), 17, GELU, "Gelu", {"Tanh", "Mul"}, 20),
    # Hugging Face's Python GELUs: (x * 0.5) * gate, and NewGELU's 0.5 * x * (1 + tanh(... pow(x, 3))).
    ("gelu_hf_erf", _Fn(lambda x: x * 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))), 17, GELU, "Gelu", {"Erf"}, 20),
    ("gelu_hf_new", _Fn(lambda x: 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))),
     17, GELU, "Gelu", {"Tanh", "Pow"}, 20),
    ("gelu_halved_by_div", _Fn(lambda x: x * (1.0 + torch.erf(x / math.sqrt(2.0))) / 2), 17, GELU, "Gelu", {"Erf", "Div"}, 20),
    ("mish", nn.Mish(), 17, MISH, "Mish", {"Softplus", "Tanh"}, 18),
    ("layernorm_opset14", _layer_norm(), 14, LN, "LayerNormalization", {"ReduceMean", "Pow", "Sqrt"}, 17),
    ("layernorm_opset16", _layer_norm(), 16, LN, "LayerNormalization", {"ReduceMean", "Pow", "Sqrt"}, 17),
]


@pytest.mark.parametrize("module, opset, fusion, fused_op, gone, opset_after",
                         [case[1:] for case in TORCH_WRITTEN], ids=[case[0] for case in TORCH_WRITTEN])
def test_torch_written_activation_fuses(module, opset, fusion, fused_op, gone, opset_after):
    source = _export(module, opset)
    assert not _ops(source)[fused_op]  # torch wrote it out at this opset
    result = optimize(source)
    assert _fused(result) == {fusion: 1}
    ops = _ops(result.model)
    assert ops == Counter({fused_op: 1}), ops  # the written ops and their constants are gone
    assert not gone & set(ops)
    assert (result.opset_before, result.opset_after) == (opset, opset_after)
    assert result.nodes_after == 1 < result.nodes_before
    _check(source, result, _feeds(source))


def test_layer_norm_of_an_intermediate_tensor_upgrades_the_opset_and_fuses():
    """The LayerNorm's input has no recorded shape (a Linear's output): the rules see onnx's inferred shapes, and
    so does the decision to upgrade the opset for them, else a note would say it needs opset 17 and stay."""
    torch.manual_seed(0)
    source = _export(nn.Sequential(nn.Linear(8, 8), _layer_norm(), nn.Linear(8, 4)), 14)
    result = optimize(source)
    assert _fused(result)[LN] == 1 and not result.notes
    assert (result.opset_before, result.opset_after) == (14, 17)
    _check(source, result, _feeds(source))


def test_gelu_tanh_and_keras_attributes():
    result = optimize(_export(nn.GELU(approximate="tanh"), 17))
    assert result.model.graph.node(0).attributes.get_string("approximate") == "tanh"
    result = optimize(_export(nn.GELU(), 17))
    assert result.model.graph.node(0).attributes.get_string("approximate", "none") == "none"
    node = optimize(_export(_Fn(lambda x: torch.clamp(0.2 * x + 0.5, 0, 1)), 17)).model.graph.node(0)
    assert node.attributes.get_float("alpha") == pytest.approx(0.2) and node.attributes.get_float("beta") == pytest.approx(0.5)


def test_several_activations_counted_each():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2, self.norm = nn.Linear(8, 16), nn.Linear(16, 8), _layer_norm()

        def forward(self, x):
            h = self.fc1(self.norm(x))
            h = h * F.relu6(h + 3) / 6
            h = F.gelu(self.fc2(h))
            return F.mish(h) + F.relu6(h + 3) / 6

    source = _export(Block(), 16)
    result = optimize(source)
    assert _fused(result) == {HARD: 2, GELU: 1, MISH: 1, LN: 1, GEMM: 1}  # fc1 on [batch, 4, 8] (fc2 feeds the GELU)
    assert result.opset_after == 20 and not result.notes
    ops = _ops(result.model)
    assert {op: ops[op] for op in ("HardSwish", "HardSigmoid", "Gelu", "Mish", "LayerNormalization")} == \
        {"HardSwish": 1, "HardSigmoid": 1, "Gelu": 1, "Mish": 1, "LayerNormalization": 1}
    assert not {"Clip", "Erf", "Softplus", "ReduceMean", "Div"} & set(ops)
    _check(source, result, _feeds(source))


# --------------------------------------------------------------------------- hand-built forms


HALVINGS = ["product", "product_div", "x", "x_swapped", "gate", "gate_swapped"]


def _halve(g: _Graph, x: str, gate: str, halving: str, const_first: bool) -> str:
    if halving == "product":
        return g.mul(g.mul(x, gate, swap=const_first), g.const(0.5), swap=const_first)
    if halving == "product_div":
        return g.op("Div", g.mul(x, gate, swap=const_first), g.const(2.0))
    if halving in ("x", "x_swapped"):
        return g.mul(g.mul(x, g.const(0.5), swap=const_first), gate, swap=halving == "x_swapped")
    return g.mul(x, g.mul(gate, g.const(0.5), swap=const_first), swap=halving == "gate_swapped")


@pytest.mark.parametrize("const_first", [False, True])
@pytest.mark.parametrize("halving", HALVINGS)
@pytest.mark.parametrize("scale", ["div_sqrt2", "mul_inv_sqrt2"])
def test_gelu_erf_hand_built(scale, halving, const_first):
    g = _Graph()
    scaled = g.op("Div", "x", g.const(math.sqrt(2))) if scale == "div_sqrt2" else \
        g.mul("x", g.const(1 / math.sqrt(2)), swap=const_first)
    gate = g.add(g.op("Erf", scaled), g.const(1.0), swap=const_first)
    source = g.model([_halve(g, "x", gate, halving, const_first)], 17)
    result = optimize(source)
    assert _fused(result) == {GELU: 1} and _ops(result.model) == Counter({"Gelu": 1})
    _check(source, result, _feeds(source), bridge=halving == "product")  # the bridge's Gelu: once is enough


@pytest.mark.parametrize("halving", HALVINGS)
@pytest.mark.parametrize("cube", ["pow", "x_times_xx", "xx_times_x"])
def test_gelu_tanh_hand_built(cube, halving):
    g = _Graph()
    swap = halving.endswith("swapped")  # the constants and the Add's operands in the other order too
    if cube == "pow":
        cubed = g.op("Pow", "x", g.const(3.0))
    elif cube == "x_times_xx":
        cubed = g.mul("x", g.mul("x", "x"))
    else:
        cubed = g.mul(g.mul("x", "x"), "x")
    inner = g.add("x", g.mul(cubed, g.const(0.044715), swap=swap), swap=swap)
    gate = g.add(g.op("Tanh", g.mul(inner, g.const(math.sqrt(2 / math.pi)), swap=swap)), g.const(1.0), swap=swap)
    source = g.model([_halve(g, "x", gate, halving, swap)], 17)
    result = optimize(source)
    assert _fused(result) == {GELU: 1} and _ops(result.model) == Counter({"Gelu": 1})
    assert result.model.graph.node(0).attributes.get_string("approximate") == "tanh"
    _check(source, result, _feeds(source), bridge=halving == "product")


@pytest.mark.parametrize("shape", [(), (1,)])
def test_keras_hard_sigmoid_hand_built(shape):
    g = _Graph()
    y = g.op("Clip", g.add(g.mul("x", g.const(0.2, shape)), g.const(0.5, shape)), g.const(0.0), g.const(1.0))
    source = g.model([y], 13)
    result = optimize(source)
    assert _fused(result) == {HARD: 1} and _ops(result.model) == Counter({"HardSigmoid": 1})
    assert result.opset_after == 14  # the hard-activation fusions' floor (HardSwish)
    _check(source, result, _feeds(source))


def test_hard_swish_from_a_hard_sigmoid_op():
    g = _Graph()
    source = g.model([g.mul("x", g.op("HardSigmoid", "x", alpha=1 / 6, beta=0.5))], 17)
    result = optimize(source)
    assert _fused(result) == {HARD: 1} and _ops(result.model) == Counter({"HardSwish": 1})
    _check(source, result, _feeds(source))


def _layer_norm_graph(opset: int, axis: int = -1, eps=(1e-5,), width: int = 8, rank: int = 3,
                      scale_as_input: bool = False, out_shape=None) -> onnx.ModelProto:
    g = _Graph()
    rng = np.random.default_rng(1)

    def mean(value):
        if opset >= 18:
            axes = g.op("Constant", value=numpy_helper.from_array(np.array([axis], np.int64)))
            return g.op("ReduceMean", value, axes)
        return g.op("ReduceMean", value, axes=[axis])

    deviation = g.op("Sub", "x", mean("x"))
    variance = mean(g.op("Pow", deviation, g.const(2.0)))
    normalised = g.op("Div", deviation, g.op("Sqrt", g.add(variance, g.const(np.array(eps, np.float32)))))
    if scale_as_input:
        g.inputs.append("scale")
        scale = "scale"
    else:
        scale = g.const(rng.uniform(0.5, 1.5, width))
    y = g.add(g.mul(normalised, scale), g.const(rng.uniform(-0.5, 0.5, width)))
    shape = ("batch", 4, width)[3 - rank:] if rank <= 3 else ("batch", 2, 4, width)
    model = g.model([y], opset, shape, out_shape)
    if scale_as_input:
        model.graph.input[1].type.tensor_type.shape.Clear()
        model.graph.input[1].type.tensor_type.shape.dim.add().dim_value = width
    return model


@pytest.mark.parametrize("opset, axis, rank", [(18, -1, 3), (18, 2, 3), (13, 2, 3), (13, -1, 2), (18, 3, 4)])
def test_layer_norm_hand_built(opset, axis, rank):
    """opset 18: axes as an input; the last axis named as -1 or by number."""
    source = _layer_norm_graph(opset, axis, rank=rank)
    result = optimize(source)
    assert _fused(result) == {LN: 1} and _ops(result.model) == Counter({"LayerNormalization": 1})
    assert result.opset_after == max(opset, 17)
    _check(source, result, _feeds(source))


# --------------------------------------------------------------------------- near misses


def _hard_swish_graph(bias=3.0, low=0.0, high=6.0, six=6.0) -> onnx.ModelProto:
    g = _Graph()
    clip = g.op("Clip", g.add("x", g.const(bias)), g.const(low), g.const(high))
    return g.model([g.op("Div", g.mul("x", clip), g.const(six))], 17)


def _mish_of_other() -> onnx.ModelProto:
    g = _Graph()
    g.inputs.append("y")
    return g.model([g.mul("x", g.op("Tanh", g.op("Softplus", "y")))], 17)


SQRT2 = math.sqrt(2)


def _gelu_graph(root=SQRT2, one=1.0, half=0.5, other_x: bool = False) -> onnx.ModelProto:
    g = _Graph()
    if other_x:
        g.inputs.append("y")
    gate = g.add(g.op("Erf", g.op("Div", "y" if other_x else "x", g.const(root))), g.const(one))
    return g.model([g.mul(g.mul("x", gate), g.const(half))], 17)


def _gelu_tanh_graph(coeff=0.044715, three=3.0) -> onnx.ModelProto:
    g = _Graph()
    inner = g.add("x", g.mul(g.op("Pow", "x", g.const(three)), g.const(coeff)))
    gate = g.add(g.op("Tanh", g.mul(inner, g.const(math.sqrt(2 / math.pi)))), g.const(1.0))
    return g.model([g.mul(g.mul("x", gate), g.const(0.5))], 17)


def _keras_graph(high=1.0, alpha=(0.2,)) -> onnx.ModelProto:
    g = _Graph()
    y = g.op("Clip", g.add(g.mul("x", g.const(np.array(alpha, np.float32))), g.const(0.5)), g.const(0.0), g.const(high))
    return g.model([y], 17)


def _hard_sigmoid_op_times_x(alpha: float) -> onnx.ModelProto:
    g = _Graph()
    return g.model([g.mul("x", g.op("HardSigmoid", "x", alpha=alpha, beta=0.5))], 17)


NEAR_MISSES = {
    "hardswish_clip_max_5": lambda: _hard_swish_graph(high=5.0),
    "hardswish_bias_2": lambda: _hard_swish_graph(bias=2.0),
    "hardswish_clip_min_-1": lambda: _hard_swish_graph(low=-1.0),
    "hardswish_divide_by_5": lambda: _hard_swish_graph(six=5.0),
    "keras_clip_max_2": lambda: _keras_graph(high=2.0),
    "keras_alpha_per_channel": lambda: _keras_graph(alpha=np.linspace(0.1, 0.3, 8)),
    "hard_sigmoid_op_not_hardswish_alpha": lambda: _hard_sigmoid_op_times_x(alpha=0.2),
    "gelu_divide_by_2_not_sqrt2": lambda: _gelu_graph(root=2.0),
    "gelu_plus_2": lambda: _gelu_graph(one=2.0),
    "gelu_times_0.4": lambda: _gelu_graph(half=0.4),
    "gelu_erf_of_other_tensor": lambda: _gelu_graph(other_x=True),
    "gelu_tanh_coefficient": lambda: _gelu_tanh_graph(coeff=0.05),
    "gelu_tanh_square_not_cube": lambda: _gelu_tanh_graph(three=2.0),
    "mish_of_other_tensor": _mish_of_other,
    "layernorm_eps_not_scalar": lambda: _layer_norm_graph(18, eps=np.full(8, 1e-5)),
    "layernorm_axis_1_not_last": lambda: _layer_norm_graph(18, axis=1, width=4),
    "layernorm_axis_1_not_last_opset13": lambda: _layer_norm_graph(13, axis=1, width=4),
    "layernorm_scale_not_constant": lambda: _layer_norm_graph(18, scale_as_input=True),
}


@pytest.mark.parametrize("build", list(NEAR_MISSES.values()), ids=list(NEAR_MISSES))
def test_near_miss_does_not_fuse(build):
    source = build()
    result = optimize(source)
    assert not _fused(result), result.fused
    assert result.opset_after == result.opset_before  # no upgrade for a fusion that did not happen
    assert _ops(result.model) == _ops(source)  # nothing to fold: the graph is the input's
    for index, (a, e) in enumerate(zip(*(run(m, _feeds(source)) for m in (result.model, source)), strict=True)):
        np.testing.assert_array_equal(a, e, err_msg=f"output {index}")
    _check(source, result, _feeds(source), bridge=False)


# --------------------------------------------------------------------------- spatial means -> GlobalAveragePool

POOL = "GlobalAveragePool (spatial ReduceMean)"


@pytest.mark.parametrize("keepdim", [False, True])
@pytest.mark.parametrize("opset, dims", [(13, (2, 3)), (18, (2, 3)), (18, (-1, -2))])
def test_torch_spatial_mean_becomes_global_average_pool(opset, dims, keepdim):
    """``x.mean((2, 3))`` as torch writes it (axes an attribute before opset 18, an input from 18)."""
    source = _export(_Fn(lambda x: x.mean(dims, keepdim=keepdim)), opset, shape=(2, 4, 6, 5))
    assert _ops(source)["ReduceMean"] == 1
    result = optimize(source)
    assert _fused(result) == {POOL: 1}
    assert _ops(result.model) == Counter({"GlobalAveragePool": 1, **({} if keepdim else {"Flatten": 1})})
    assert result.opset_after == opset  # every opset has GlobalAveragePool
    _check(source, result, _feeds(source))


def _mean_graph(axes: list[int], shape, keepdims: int = 0) -> onnx.ModelProto:
    g = _Graph()
    out_shape = [d for i, d in enumerate(shape) if i not in {a % len(shape) for a in axes}] if not keepdims else \
        [1 if i in {a % len(shape) for a in axes} else d for i, d in enumerate(shape)]
    return g.model([g.op("ReduceMean", "x", axes=axes, keepdims=keepdims)], 13, shape, out_shape)


@pytest.mark.parametrize("axes, shape", [
    ([1, 2], ("batch", 4, 6, 5)),  # channels and height: not every spatial axis
    ([3], ("batch", 4, 6, 5)),  # width only
    ([2, 3], ("batch", 4, 6, 5, 3)),  # rank 5: depth is left
    ([2], ("batch", 4, 8)),  # rank 3: a transformer's mean over its features, not a pool
], ids=["channels_and_height", "width_only", "rank5_two_of_three", "rank3_last_axis"])
def test_mean_over_other_axes_is_left_alone(axes, shape):
    source = _mean_graph(axes, shape)
    result = optimize(source)
    assert not _fused(result) and _ops(result.model) == Counter({"ReduceMean": 1})


def test_mean_over_every_spatial_axis_of_a_volume_pools():
    source = _mean_graph([2, 3, 4], ("batch", 4, 6, 5, 3), keepdims=1)
    result = optimize(source)
    assert _fused(result) == {POOL: 1} and _ops(result.model) == Counter({"GlobalAveragePool": 1})
    _check(source, result, _feeds(source), bridge=False)


def _rank_2_x(build_output, const_shape) -> onnx.ModelProto:
    g = _Graph()
    return g.model([build_output(g, lambda value: g.const(value, const_shape))], 17, ("batch", 8), (1, "batch", 8))


# x of rank 2, a constant of rank 3 (Clip's bounds are scalars): the written output has rank 3, a fused op's 2
BROADCASTING = {
    "hardswish": lambda g, c: g.op("Div", g.mul("x", g.op("Clip", g.add("x", c(3.0)), g.const(0.0), g.const(6.0))), c(6.0)),
    "hardsigmoid_keras": lambda g, c: g.op("Clip", g.add(g.mul("x", c(0.2)), c(0.5)), g.const(0.0), g.const(1.0)),
    "gelu": lambda g, c: g.mul(g.mul("x", g.add(g.op("Erf", g.op("Div", "x", c(math.sqrt(2)))), c(1.0))), c(0.5)),
    "gelu_tanh_exponent": lambda g, c: g.mul(g.mul("x", g.add(g.op("Tanh", g.mul(g.add("x", g.mul(
        g.op("Pow", "x", c(3.0)), g.const(0.044715))), g.const(math.sqrt(2 / math.pi)))), g.const(1.0))), g.const(0.5)),
}


@pytest.mark.parametrize("build", list(BROADCASTING.values()), ids=list(BROADCASTING))
def test_constant_that_broadcasts_x_up_does_not_fuse(build):
    source = _rank_2_x(build, (1, 1, 1))
    result = optimize(source)
    assert not _fused(result)
    _check(source, result, _feeds(source), bridge=False)
    source = _rank_2_x(build, (1,))  # the same constants at rank 1: nothing broadcast, fused
    assert _fused(optimize(source))


def test_layer_norm_eps_that_broadcasts_x_up_does_not_fuse():
    source = _layer_norm_graph(18, eps=np.full((1, 1, 1, 1), 1e-5), out_shape=(1, "batch", 4, 8))
    result = optimize(source)
    assert not _fused(result)
    _check(source, result, _feeds(source), bridge=False)


def test_scalar_x_with_one_element_constants_does_not_fuse():
    g = _Graph()
    clip = g.op("Clip", g.add("x", g.const(3.0, (1,))), g.const(0.0), g.const(6.0))
    source = g.model([g.op("Div", g.mul("x", clip), g.const(6.0))], 17, (), (1,))
    result = optimize(source)
    assert not _fused(result)
    _check(source, result, {"x": np.array(-1.5, np.float32)}, bridge=False)


def test_integer_clip_divided_by_6_does_not_fuse():
    """clip(x + 3, 0, 6) / 6 on integers truncates (0 or 1); HardSigmoid has no integer form."""
    nodes = [helper.make_node("Add", ["x", "three"], ["a"]), helper.make_node("Clip", ["a", "zero", "six"], ["c"]),
             helper.make_node("Div", ["c", "six"], ["y"])]
    constants = [numpy_helper.from_array(np.array(v, np.int32), n) for n, v in [("three", 3), ("zero", 0), ("six", 6)]]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.INT32, ["n"])],
                              [helper.make_tensor_value_info("y", TensorProto.INT32, ["n"])], constants)
    source = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    result = optimize(source)
    assert not _fused(result)
    outputs = _check(source, result, {"x": np.array([-5, 0, 1, 3, 9], np.int32)}, bridge=False)
    np.testing.assert_array_equal(outputs[0], [0, 0, 0, 1, 1])


def test_intermediate_used_elsewhere_is_kept():
    """The Clip of a written hard-swish is also a graph output: its value must stay computed."""
    g = _Graph()
    clip = g.op("Clip", g.add("x", g.const(3.0)), g.const(0.0), g.const(6.0), output="clipped")
    source = g.model([g.op("Div", g.mul("x", clip), g.const(6.0)), "clipped"], 17)
    result = optimize(source)
    assert _ops(result.model)["Clip"] == 1  # (onnxscript leaves a match alone when an inner value is read elsewhere)
    assert [v.name for v in result.model.graph.outputs] == [v.name for v in source.graph.output]
    _check(source, result, _feeds(source))


# --------------------------------------------------------------------------- linear layers on batches


def _linear(x_shape, bias_shape=(16,), *, weight_input: bool = False, product_out: bool = False,
            gelu: str | None = None) -> onnx.ModelProto:
    """y = x @ W + b, W [8, 16]: ``weight_input`` makes W a graph input, ``product_out`` x @ W an output too;
    ``gelu``: y goes through a GELU, as one op ("op") or written out with Erf ("erf")."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(size=bias_shape).astype(np.float32), "b")]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))]
    if weight_input:
        inputs.append(helper.make_tensor_value_info("w", TensorProto.FLOAT, [8, 16]))
    else:
        inits.append(numpy_helper.from_array(rng.normal(size=(8, 16)).astype(np.float32), "w"))
    nodes = [helper.make_node("MatMul", ["x", "w"], ["xw"]), helper.make_node("Add", ["xw", "b"], ["y"])]
    out = "y"
    if gelu == "op":
        nodes.append(helper.make_node("Gelu", ["y"], ["gelu"]))
        out = "gelu"
    elif gelu == "erf":  # y * 0.5 * (1 + erf(y / sqrt(2))), as torch's legacy exporter writes it
        inits += [numpy_helper.from_array(np.array(v, np.float32), n) for n, v in
                  (("sqrt2", 2 ** 0.5), ("one", 1.0), ("half", 0.5))]
        nodes += [helper.make_node("Div", ["y", "sqrt2"], ["scaled"]), helper.make_node("Erf", ["scaled"], ["erf"]),
                  helper.make_node("Add", ["erf", "one"], ["shifted"]), helper.make_node("Mul", ["y", "shifted"], ["m"]),
                  helper.make_node("Mul", ["m", "half"], ["gelu"])]
        out = "gelu"
    out_shape = [*x_shape[:-1], 16]
    outputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, out_shape) for n in [out] + ["xw"] * product_out]
    graph = helper.make_graph(nodes, "g", inputs, outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20 if gelu == "op" else 17)])


@pytest.mark.parametrize("x_shape", [("batch", 4, 8), (2, 4, 8), (2, "tokens", 8), ("batch", 2, 3, 8)])
def test_linear_on_batches_becomes_a_gemm_between_reshapes(x_shape):
    source = _linear(x_shape)
    result = optimize(source)
    assert _fused(result) == {GEMM: 1}
    assert _ops(result.model) == Counter({"Reshape": 2, "Gemm": 1})
    assert result.model.graph.outputs[0].name == "y" and result.model.graph.outputs[0].producer().op_type == "Reshape"
    sizes = [3 if d == "batch" else 5 if isinstance(d, str) else d for d in x_shape]  # not the dims written
    feeds = {"x": np.random.default_rng(1).normal(size=sizes).astype(np.float32)}
    _check(source, result, feeds)


LINEAR_MISSES = {
    "rank_2": lambda: _linear(("batch", 8)),  # onnxruntime's own fusion makes it a Gemm
    "two_unknown_dims": lambda: _linear(("batch", "tokens", 8)),  # the output shape needs a run-time Shape
    "bias_per_row": lambda: _linear(("batch", 4, 8), bias_shape=(4, 16)),
    "weight_not_constant": lambda: _linear(("batch", 4, 8), weight_input=True),
    "product_read_elsewhere": lambda: _linear(("batch", 4, 8), product_out=True),
    # onnxruntime fuses the bias Add into the GELU (BiasGelu): a ConvNeXt-like model ran 0.86-0.98x rewritten
    "feeds_gelu": lambda: _linear(("batch", 4, 8), gelu="op"),
}


@pytest.mark.parametrize("build", list(LINEAR_MISSES.values()), ids=list(LINEAR_MISSES))
def test_linear_near_miss_is_left_alone(build):
    source = build()
    result = optimize(source)
    assert not _fused(result) and _ops(result.model)["MatMul"] == 1
    feeds = random_inputs(source, 3)
    _check(source, result, feeds)


def test_linear_into_written_out_gelu_is_left_alone():
    """Where the GELU stays written out (the GELU fusion off, or the opset upgrade failed), onnxruntime still fuses
    the chain and its bias Add: the sum reaching Erf through a Div counts as feeding a GELU."""
    source = _linear(("batch", 4, 8), gelu="erf")
    result = optimize(source, fusions=(MATMUL_BIAS,))
    assert not _fused(result) and _ops(result.model)["MatMul"] == 1 and _ops(result.model)["Erf"] == 1
    _check(source, result, random_inputs(source, 3))


# --------------------------------------------------------------------------- graph outputs


@pytest.mark.parametrize("consumed", [False, True])
def test_activation_output_is_a_graph_output(consumed):
    """The fused op writes the graph output under its name (and the consumers still read it)."""
    g = _Graph()
    act = g.op("Div", g.mul("x", g.op("Clip", g.add("x", g.const(3.0)), g.const(0.0), g.const(6.0))), g.const(6.0),
               output="activation")
    outputs = [act, g.op("Relu", act, output="after")] if consumed else [act]
    g.op("Gelu", "x")  # nothing reads it: removed
    source = g.model(outputs, 20)
    result = optimize(source)
    assert _fused(result) == {HARD: 1}
    assert [v.name for v in result.model.graph.outputs] == outputs
    assert result.model.graph.outputs[0].producer().op_type == "HardSwish"
    assert "Gelu" not in _ops(result.model)
    _check(source, result, _feeds(source))


def test_graph_input_straight_to_output_and_identity_chain():
    g = _Graph()
    source = g.model([g.op("Identity", g.op("Identity", g.op("Relu", "x"))), "x"], 17)
    result = optimize(source)
    assert _ops(result.model) == Counter({"Relu": 1})
    _check(source, result, _feeds(source))


# --------------------------------------------------------------------------- the caller's model, idempotence


def _hard_swish_export() -> onnx.ModelProto:
    return _export(_Fn(lambda x: x * F.relu6(x + 3) / 6 + F.gelu(x)), 17)


def test_caller_proto_and_ir_model_untouched():
    proto = _hard_swish_export()
    before = proto.SerializeToString()
    result = optimize(proto)
    assert _fused(result) == {HARD: 1, GELU: 1} and result.opset_after == 20
    assert proto.SerializeToString() == before
    model = ir.from_proto(proto)
    before = ir.to_proto(model).SerializeToString()
    optimized = optimize(model)
    assert ir.to_proto(model).SerializeToString() == before
    assert optimized.model is not model and _fused(optimized) == _fused(result)
    # the two results share no node with the caller's model
    assert not {id(n) for n in model.graph} & {id(n) for n in optimized.model.graph}


def test_caller_file_untouched(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(_hard_swish_export(), path)
    before = path.read_bytes()
    result = optimize(path)
    assert path.read_bytes() == before
    _check(path, result, _feeds(onnx.load(path)))


def test_idempotent():
    source = _export(_Fn(lambda x: F.mish(x * F.relu6(x + 3) / 6) + F.gelu(x)), 16)
    once = optimize(source)
    twice = optimize(once.model)
    assert sum(once.fused.values()) == 3 and not _fused(twice) and not twice.notes
    assert twice.nodes_before == twice.nodes_after == once.nodes_after
    assert twice.opset_before == twice.opset_after == 20
    assert to_proto(twice.model).graph == to_proto(once.model).graph
    _check(source, twice, _feeds(source))


def test_gelu_model_at_opset_17_upgraded_to_20():
    source = _export(nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 8)), 17)
    result = optimize(source)
    # the second Linear only: the first feeds the GELU, which takes its bias in onnxruntime
    assert (result.opset_before, result.opset_after) == (17, 20) and _fused(result) == {GELU: 1, GEMM: 1}
    assert result.model.opset_imports[""] == 20
    _check(source, result, _feeds(source))


def test_float16_constants_are_matched_to_their_precision():
    """float16's sqrt(2), 0.044715 and 1/6 are 1e-4 to 2.4e-4 off the float64 values."""

    class Activations(nn.Module):
        def forward(self, x):
            return F.gelu(x, approximate="tanh") + F.gelu(x) + x * F.relu6(x + 3) * (1 / 6) + F.mish(x)

    module = Activations().half()
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.randn(2, 8, dtype=torch.float16),), buffer, dynamo=False, opset_version=17,
                          input_names=["x"], dynamic_axes={"x": {0: "batch"}})
    source = onnx.load_from_string(buffer.getvalue())
    result = optimize(source)
    assert _fused(result) == {HARD: 1, GELU: 2, MISH: 1}
    onnx.checker.check_model(to_proto(result.model), full_check=True)
    x = (np.random.default_rng(0).standard_normal((64, 8)) * 4).astype(np.float16)
    reference = module(torch.from_numpy(x).double()).numpy()
    for model in (source, result.model):  # both within float16 precision of the float64 function
        assert _rel_err(run(model, {"x": x})[0].astype(np.float64), reference) <= 1e-3


def test_version_converter_failure_leaves_the_fusion_out(monkeypatch):
    from onnxkd.graph_passes.optimize import api

    class FailingUpgrade:
        def __init__(self, target):
            self.note = "kept opset 17: version converter failed (simulated)"

        def __call__(self, model):
            return ir.passes.PassResult(model, False)

    monkeypatch.setattr(api, "UpgradeOpsetPass", FailingUpgrade)
    source = _hard_swish_export()  # hard-swish (opset 14) and GELU (opset 20)
    result = optimize(source)
    assert _fused(result) == {HARD: 1} and result.opset_after == 17
    assert result.notes == ["kept opset 17: version converter failed (simulated)",
                            "Gelu: not fused, needs opset 20 (model has 17)"]
    assert _ops(result.model)["Erf"] == 1
    _check(source, result, _feeds(source))


def test_nothing_to_fuse_keeps_the_opset():
    source = _export(nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 8)), 14, shape=(2, 8))
    result = optimize(source)
    assert not _fused(result) and not result.notes and result.opset_after == 14
    _check(source, result, _feeds(source))


# --------------------------------------------------------------------------- the zoo


HARD_ACTIVATIONS_IN_MOBILENETV3W = 12  # 8 hard-swish (stem, 2 per block in 3 blocks, the head) + 4 SE gates


@pytest.mark.parametrize("exporter", models.EXPORTERS)
def test_written_mobilenetv3_fuses_every_hard_activation(zoo_model, exporter):
    path = zoo_model("mobilenetv3w", exporter)
    result = optimize(path)
    # the dynamo exporter writes adaptive_avg_pool2d(x, 1) (4 squeeze-excitations and the head) as a ReduceMean
    pools = 5 if exporter == "dynamo" else 0
    assert _fused(result) == {HARD: HARD_ACTIVATIONS_IN_MOBILENETV3W, **({POOL: pools} if pools else {})}
    ops = _ops(result.model)
    assert ops["HardSwish"] == 8 and ops["HardSigmoid"] == 4
    assert ops["GlobalAveragePool"] == 5 and not ops["ReduceMean"]
    assert not {"Clip", "Div"} & set(ops)
    # 3 nodes per hard-swish and 2 per hard-sigmoid; the legacy export also loses its Constant nodes
    assert result.nodes_before - result.nodes_after == 8 * 3 + 4 * 2 if exporter == "dynamo" else \
        result.nodes_after <= result.nodes_before / 2
    _check(path, result, batch=3)


def test_pruned_written_mobilenetv3_optimizes(zoo_model):
    student = prune(zoo_model("mobilenetv3w", "legacy"), 0.5).model
    source = to_proto(student)
    result = optimize(student)
    assert _fused(result) == {HARD: HARD_ACTIVATIONS_IN_MOBILENETV3W}
    assert to_proto(student) == source  # the pruned model is the caller's too
    _check(source, result, batch=3)


# linear layers on 3-D/4-D inputs (MatMul + bias): the second of each MLP (the first feeds its GELU, into which
# onnxruntime fuses the bias itself), and the attention projections the exporter writes as MatMul + Add (GPT-2's
# are Gemms on 2-D views already; dynamo writes ViT's q/k/v projection as one)
LINEARS = {"bert": 10, "convnext": 4, "gpt": 10, "gpt2": 2, "mha": 4, "sdpa": 10, "transformer": 10, "fusedqkv": 6,
           "einsum": 2,
           ("vit", "legacy"): 8, ("vit", "dynamo"): 2}


@pytest.mark.parametrize("exporter", models.EXPORTERS)
@pytest.mark.parametrize("name", sorted(models.ZOO))
def test_zoo_model_unchanged_in_function(zoo_model, name, exporter):
    path = zoo_model(name, exporter)
    result = optimize(path)
    # torch's legacy export writes GELU out at opset 17 (both transformer MLPs, ConvNeXt's four blocks; llama's
    # MLP is SwiGLU); dynamo writes Gelu at opset 20
    gelus = 4 if name == "convnext" else 2 if models.ZOO[name].family == "transformer" and name != "llama" else 0
    expected = {HARD: 12} if name == "mobilenetv3w" else {GELU: gelus} if gelus and exporter == "legacy" else {}
    linears = LINEARS.get(name, LINEARS.get((name, exporter), 0))
    # every mean in the zoo's CNNs pools a feature map (x.mean((2, 3)); dynamo also writes adaptive_avg_pool2d
    # so); the transformers' average tokens, and stay
    means = _ops(onnx.load(str(path), load_external_data=False))["ReduceMean"]
    pools = means if models.ZOO[name].family != "transformer" else 0
    assert _fused(result) == dict(expected, **({GEMM: linears} if linears else {}), **({POOL: pools} if pools else {}))
    assert _ops(result.model)["ReduceMean"] == means - pools
    # each linear rewrite adds one node (two Reshapes and a Gemm for MatMul and Add), each pool at most one (a
    # Flatten where the mean dropped the axes); the rest only removes
    assert result.nodes_after <= result.nodes_before + linears + pools and not result.notes
    _check(path, result, bridge=False, batch=1)


LIGHT = ["squeezenet", "shufflenet", "densenet121", "inception_v1", "resnet50"]  # the others: slow onnxruntime runs


@pytest.mark.parametrize("name", LIGHT)
def test_light_model_unchanged_in_function(name):
    path = light_model_path(name)
    result = optimize(path)
    assert not _fused(result) and result.opset_after == result.opset_before == 9
    assert result.fused[WEIGHT_INPUTS] == len(onnx.load(str(path)).graph.initializer)  # IR 3: all listed
    _check(path, result, bridge=False, batch=1)


@pytest.mark.parametrize("ir_version", [3, 8])  # IR 3 files list every initializer as an input
def test_weights_listed_as_inputs_become_constants(ir_version):
    """torch's keep_initializers_as_inputs=True (and every IR 3 file) lists the weights as graph inputs, which
    may be fed at run time, so onnxruntime folds no BatchNorm into its Conv; compress's student dropped them,
    the 'teacher optimized' timing kept them, and the report credited the difference to pruning."""
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.LazyLinear(4))
    net(torch.randn(1, 3, 6, 6))
    models.randomise_batchnorm(net)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net.eval(), (torch.randn(2, 3, 6, 6),), buffer, dynamo=False, opset_version=13,
                          keep_initializers_as_inputs=True, do_constant_folding=False,
                          input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}})
    source = onnx.load_from_string(buffer.getvalue())
    source.ir_version = ir_version
    weights = {t.name for t in source.graph.initializer}
    assert weights and weights <= {v.name for v in source.graph.input}
    result = optimize(source)
    _check(source, result)
    assert [v.name for v in result.model.graph.inputs] == ["x"]
    assert result.fused[WEIGHT_INPUTS] == len(weights)


def test_a_folded_weight_keeps_its_own_shape_not_the_one_declared_for_its_node():
    """nn.MultiheadAttention's legacy export slices and transposes its in_proj weight in the graph, and declares
    the Transpose's output [unk__23, unk__22]; folded into an initializer it kept that declaration, which onnx's
    shape inference trusts, and every MatMul reading it went uncounted (a 2.87x 'fewer MACs' that was 1.63x).
    Oracle: x [N, 5, 8] @ W^T [8, 6] is N * 5 * 8 * 6 MACs."""
    from onnxkd.graph_passes.metrics import mac_summary

    weight = np.random.default_rng(0).standard_normal((6, 8)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Transpose", ["w"], ["wt"], perm=[1, 0]), helper.make_node("MatMul", ["x", "wt"], ["y"])],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 5, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5, 6])], [numpy_helper.from_array(weight, "w")],
        value_info=[helper.make_tensor_value_info("wt", TensorProto.FLOAT, ["unk__23", "unk__22"])])
    source = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    result = optimize(source)
    _check(source, result)
    assert "wt" in result.model.graph.initializers  # folded
    summary = mac_summary(result.model, {"x": [2, 5, 8]})
    assert summary["total"] == 2 * 5 * 8 * 6 and not summary["unknown_nodes"]
