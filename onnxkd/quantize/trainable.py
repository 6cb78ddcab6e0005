"""A QDQ model as a graph the torch bridge can train (quantization-aware distillation), and back.

``to_trainable`` rewrites what onnxruntime's QDQ format keeps as integers into float tensors the bridge makes
parameters, keeping every quantization step where it is:

* a weight ``DequantizeLinear(w_int8, scale, zp)`` becomes ``DequantizeLinear(QuantizeLinear(w, scale, zp))``
  with ``w`` the dequantized float weight: the bridge fake-quantizes it (round half to even, saturate, a
  straight-through gradient), so training sees exactly the values onnxruntime will compute with;
* an int32 bias ``DequantizeLinear(b_int32, x_scale * w_scale)`` becomes the float bias (int32 steps are far
  below anything int8 activations resolve), re-quantized on the way back with the scales as trained;
* with ``learn_scales``, every scale becomes ``Exp(log_scale)``: LSQ's step-size gradient on a log scale, so an
  optimizer step changes a scale by a fraction of itself rather than by an absolute amount (Adam's 1e-3 steps
  would wipe out a scale of 0.004). Frozen scales stay initializers, which the bridge never trains.

``to_qdq`` undoes all of it from the trained float tensors: the result is the same QDQ graph, with new weights,
biases and (learned) scales, for onnxruntime to fuse into its int8 kernels again.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

_INT8 = (TensorProto.INT8, TensorProto.UINT8)
_RANGE = {TensorProto.INT8: (-128, 127), TensorProto.UINT8: (0, 255)}


@dataclass
class Record:
    """How ``to_trainable`` changed the graph, for ``to_qdq``."""

    weights: dict[str, dict] = field(default_factory=dict)  # float weight -> int name, scale, zp, axis, dtype
    biases: dict[str, dict] = field(default_factory=dict)  # float bias -> int32 name, bias-scale name, consumer
    log_scales: dict[str, dict] = field(default_factory=dict)  # log-scale name -> scale name, shape

    def to_dict(self) -> dict:
        return {"weights": len(self.weights), "biases": len(self.biases), "learned_scales": len(self.log_scales)}


def to_trainable(qdq: onnx.ModelProto, learn_scales: bool = True) -> tuple[onnx.ModelProto, Record]:
    model = onnx.ModelProto()
    model.CopyFrom(qdq)
    graph = model.graph
    tensors = {t.name: t for t in graph.initializer}
    record = Record()
    new_nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        source = tensors.get(node.input[0]) if node.op_type == "DequantizeLinear" else None
        if source is None:
            new_nodes.append(node)
            continue
        if source.data_type in _INT8:
            new_nodes += _float_weight(node, source, tensors, record)
        elif source.data_type == TensorProto.INT32:
            _float_bias(node, source, tensors, record)  # the node goes: its output is now an initializer
        else:
            new_nodes.append(node)
    if learn_scales:
        new_nodes = _log_scales(new_nodes, tensors, record) + new_nodes
    _replace(graph, new_nodes, tensors)
    return model, record


def _replace(graph: onnx.GraphProto, nodes: list, tensors: dict) -> None:
    """Set the graph's nodes and initializers, dropping initializers no node reads any more (bias zero points)."""
    read = {name for node in nodes for name in node.input} | {o.name for o in graph.output}
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.initializer[:]
    graph.initializer.extend(t for name, t in tensors.items() if name in read)


def _float_weight(dq: onnx.NodeProto, source: onnx.TensorProto, tensors: dict, record: Record) -> list:
    scale, zero = numpy_helper.to_array(tensors[dq.input[1]]), _zero_point(dq, tensors)
    axis = _axis(dq)
    q = numpy_helper.to_array(source).astype(np.float32)
    weight = (q - _along(zero, axis, q.ndim)) * _along(scale, axis, q.ndim)
    name = f"{source.name}_qat_float"
    tensors[name] = numpy_helper.from_array(weight.astype(np.float32), name)
    del tensors[source.name]
    record.weights[name] = {"int": source.name, "scale": dq.input[1], "zero": dq.input[2] if len(dq.input) > 2 else "",
                            "axis": axis, "dtype": source.data_type}
    fake = f"{source.name}_qat_quantized"
    quantize = helper.make_node("QuantizeLinear", [name, *dq.input[1:]], [fake], name=f"{source.name}_qat_quantize",
                                **({"axis": axis} if _has_axis(dq) else {}))
    dq.input[0] = fake
    return [quantize, dq]


def _float_bias(dq: onnx.NodeProto, source: onnx.TensorProto, tensors: dict, record: Record) -> None:
    scale = numpy_helper.to_array(tensors[dq.input[1]])
    bias = numpy_helper.to_array(source).astype(np.float64) * scale.astype(np.float64)
    name = dq.output[0]
    tensors[name] = numpy_helper.from_array(bias.astype(np.float32), name)
    zero = dq.input[2] if len(dq.input) > 2 and dq.input[2] else ""
    record.biases[name] = {"int": source.name, "scale": dq.input[1], "node": dq.name, "zero": zero,
                           "zero_tensor": tensors.get(zero), "attributes": list(dq.attribute)}
    del tensors[source.name]


def _log_scales(nodes: list, tensors: dict, record: Record) -> list:
    """Every scale read by a QuantizeLinear/DequantizeLinear becomes Exp(log_scale) (1-D: the bridge trains it)."""
    scales = {node.input[1] for node in nodes if node.op_type in ("QuantizeLinear", "DequantizeLinear")}
    exps = []
    for name in sorted(scales):
        if name not in tensors:
            continue
        value = numpy_helper.to_array(tensors.pop(name)).astype(np.float32)
        log_name = f"{name}_qat_log"
        tensors[log_name] = numpy_helper.from_array(np.log(value).reshape(-1), log_name)
        record.log_scales[log_name] = {"scale": name, "shape": list(value.shape)}
        exps.append(helper.make_node("Exp", [log_name], [name], name=f"{name}_qat_exp"))
    return exps


def to_qdq(trained: onnx.ModelProto, record: Record) -> onnx.ModelProto:
    model = onnx.ModelProto()
    model.CopyFrom(trained)
    graph = model.graph
    tensors = {t.name: t for t in graph.initializer}
    for log_name, info in record.log_scales.items():
        scale = np.exp(numpy_helper.to_array(tensors.pop(log_name))).reshape(info["shape"]).astype(np.float32)
        tensors[info["scale"]] = numpy_helper.from_array(scale, info["scale"])
    dropped = {f"{info['scale']}_qat_exp" for info in record.log_scales.values()}
    nodes = []
    quantize_of = {}
    for node in graph.node:
        if node.name in dropped:
            continue
        if node.op_type == "QuantizeLinear" and node.input[0] in record.weights:
            quantize_of[node.output[0]] = node.input[0]
            continue
        if node.op_type == "DequantizeLinear" and node.input[0] in quantize_of:
            weight = quantize_of[node.input[0]]
            info = record.weights[weight]
            tensors[info["int"]] = _quantized_weight(tensors.pop(weight), info, tensors)
            node.input[0] = info["int"]
        nodes.append(node)
    producer = {out: node for node in nodes for out in node.output}
    consumers = {}
    for node in nodes:
        for index, name in enumerate(node.input):
            consumers.setdefault(name, []).append((node, index))
    for bias, info in record.biases.items():
        bias_scale = _bias_scale(consumers[bias][0][0], producer, tensors)
        value = numpy_helper.to_array(tensors.pop(bias)).astype(np.float64)
        quantized = np.clip(np.round(value / bias_scale.astype(np.float64)), -2**31, 2**31 - 1).astype(np.int32)
        tensors[info["int"]] = numpy_helper.from_array(quantized, info["int"])
        tensors[info["scale"]] = numpy_helper.from_array(bias_scale.astype(np.float32), info["scale"])
        inputs = [info["int"], info["scale"]]
        if info["zero"]:
            tensors[info["zero"]] = info["zero_tensor"]
            inputs.append(info["zero"])
        dq = helper.make_node("DequantizeLinear", inputs, [bias], name=info["node"])
        dq.attribute.extend(info["attributes"])
        nodes.insert(0, dq)
    _replace(graph, nodes, tensors)
    return model


def _quantized_weight(weight: onnx.TensorProto, info: dict, tensors: dict) -> onnx.TensorProto:
    w = numpy_helper.to_array(weight).astype(np.float32)
    scale = numpy_helper.to_array(tensors[info["scale"]]).astype(np.float32)
    zero = numpy_helper.to_array(tensors[info["zero"]]) if info["zero"] else np.zeros((), np.int8)
    low, high = _RANGE[info["dtype"]]
    q = np.rint(w / _along(scale, info["axis"], w.ndim)) + _along(zero, info["axis"], w.ndim).astype(np.float32)
    dtype = np.int8 if info["dtype"] == TensorProto.INT8 else np.uint8
    return numpy_helper.from_array(np.clip(q, low, high).astype(dtype), info["int"])


def _bias_scale(consumer: onnx.NodeProto, producer: dict, tensors: dict) -> np.ndarray:
    """onnxruntime's bias scale: the input activation's scale times the weight's (per channel)."""
    scales = []
    for name in consumer.input[:2]:
        dq = producer[name]
        scales.append(numpy_helper.to_array(tensors[dq.input[1]]).astype(np.float32))
    return (scales[0] * scales[1]).reshape(-1).astype(np.float32)


def _zero_point(dq: onnx.NodeProto, tensors: dict) -> np.ndarray:
    return numpy_helper.to_array(tensors[dq.input[2]]) if len(dq.input) > 2 and dq.input[2] else np.zeros((), np.int8)


def _has_axis(node: onnx.NodeProto) -> bool:
    return any(a.name == "axis" for a in node.attribute)


def _axis(node: onnx.NodeProto) -> int:
    return next((a.i for a in node.attribute if a.name == "axis"), 1)


def _along(values: np.ndarray, axis: int, rank: int) -> np.ndarray:
    """Per-axis values shaped to broadcast along ``axis`` of a rank-``rank`` tensor (scalars stay scalars)."""
    values = np.asarray(values)
    if values.size == 1:
        return values.reshape(())
    shape = [1] * rank
    shape[axis % rank] = values.size
    return values.reshape(shape)
