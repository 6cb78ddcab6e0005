"""The oracle every bridge test compares against: onnxruntime on the same model and inputs (CPU, fp32).

``rel_err(a, b) = max|a - b| / max|b|`` over the whole tensor (``b`` the onnxruntime value); it is what
the 1e-4 fidelity bound refers to.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import onnx
import onnxruntime as ort


def rel_err(a, b) -> float:
    a = _numpy(a).astype(np.float64)
    b = _numpy(b).astype(np.float64)
    assert a.shape == b.shape, f"shape {a.shape} != onnxruntime's {b.shape}"
    scale = max(float(np.abs(b).max(initial=0.0)), 1e-12)
    return float(np.abs(a - b).max(initial=0.0)) / scale


def _numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):
        return x.detach().float().cpu().numpy() if x.dtype.is_floating_point else x.detach().cpu().numpy()
    return np.asarray(x)


def load_proto(model: str | Path | onnx.ModelProto) -> onnx.ModelProto:
    if isinstance(model, onnx.ModelProto):
        return model
    return onnx.load(str(model))


def with_outputs(model: onnx.ModelProto, names: Sequence[str]) -> onnx.ModelProto:
    """A copy whose graph also outputs the intermediate tensors ``names`` (type left to inference)."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    present = {o.name for o in copy.graph.output}
    for name in names:
        if name not in present:
            copy.graph.output.append(onnx.ValueInfoProto(name=name))
    return copy


def with_symbolic_dims(model: onnx.ModelProto, dims: dict[int, str]) -> onnx.ModelProto:
    """A copy whose first real input has symbolic dims at ``dims`` (axis -> name); recorded shapes are dropped."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    initializers = {t.name for t in copy.graph.initializer}
    first = next(i for i in copy.graph.input if i.name not in initializers)
    for axis, name in dims.items():
        dim = first.type.tensor_type.shape.dim[axis]
        dim.Clear()
        dim.dim_param = name
    del copy.graph.value_info[:]
    for output in copy.graph.output:
        if output.type.HasField("tensor_type"):
            output.type.tensor_type.ClearField("shape")
    return copy


def session(model: str | Path | onnx.ModelProto) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    if isinstance(model, onnx.ModelProto):
        model = model.SerializeToString()
    else:
        model = str(model)
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def run_ort(model: str | Path | onnx.ModelProto, inputs: Sequence, output_names: Sequence[str] | None = None) -> list[np.ndarray]:
    sess = session(model)
    feeds = {i.name: _numpy(x) for i, x in zip(sess.get_inputs(), inputs)}
    return sess.run(list(output_names) if output_names else None, feeds)


# ---------------------------------------------------------------- single-op graphs (the op family tests)


def ort_feeds(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """onnxruntime on a small hand-built model, inputs by name."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    session_ = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session_.run(None, feeds)


def bridge_feeds(model: onnx.ModelProto, feeds: dict[str, np.ndarray], train: bool = False) -> list[np.ndarray]:
    """The bridge on the same model and inputs (by name), outputs as numpy."""
    import torch

    from onnxkd import to_torch

    module = to_torch(model).train(train)
    with torch.no_grad():
        outputs = module(*[torch.from_numpy(np.ascontiguousarray(feeds[name])) for name in module.input_names])
    return [y.numpy() for y in outputs]


def assert_same_as_ort(model: onnx.ModelProto, feeds: dict[str, np.ndarray], rtol: float, atol: float) -> list[np.ndarray]:
    """Bridge outputs equal onnxruntime's in count, dtype, shape and value."""
    expected = ort_feeds(model, feeds)
    actual = bridge_feeds(model, feeds)
    assert len(actual) == len(expected)
    for got, want in zip(actual, expected):
        assert got.dtype == want.dtype and got.shape == want.shape, (got.dtype, got.shape, want.dtype, want.shape)
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)
    return actual
