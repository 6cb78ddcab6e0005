"""float16 teachers (a model exported for a GPU): pruned, scored and distilled in float32, written back as
float16; checked with onnxruntime against the float32 teacher with its weights rounded to float16."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper

import onnxkd
from onnxkd.torch_bridge import to_torch
from onnxkd.torch_bridge.half import HALF, has_half, in_float32


def _half(source, keep_io_types: bool) -> onnx.ModelProto:
    from onnxruntime.transformers.float16 import convert_float_to_float16

    return convert_float_to_float16(onnx.load(str(source)), keep_io_types=keep_io_types)


def _rounded_through_float16(source) -> onnx.ModelProto:
    """The float32 model with every weight rounded to float16 and back: what the float32 copy computes."""
    model = onnx.load(str(source))
    for tensor in model.graph.initializer:
        if tensor.data_type == onnx.TensorProto.FLOAT:
            tensor.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(tensor).astype(np.float16).astype(np.float32),
                                                    tensor.name))
    return model


@pytest.mark.parametrize("keep_io_types", [False, True])
def test_the_float32_copy_computes_the_rounded_weights_exactly(digits, keep_io_types):
    half = _half(digits["teacher"], keep_io_types)
    model = onnxkd.load(half)
    copy = in_float32(model)
    assert has_half(model) and not any(v.dtype in HALF for v in copy.graph.initializers.values())
    assert [v.dtype for v in copy.graph.inputs] == [v.dtype for v in model.graph.inputs]  # the data stay as they are
    images = np.load(digits["val"])["image"][:16]
    module = to_torch(half, half_as_float32=True).eval()
    with torch.no_grad():
        out = module(torch.from_numpy(images.astype(np.float16 if not keep_io_types else np.float32)))[0]
    assert out.dtype == torch.float32
    rounded = ort.InferenceSession(_rounded_through_float16(digits["teacher"]).SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    expected = rounded.run(None, {"image": images})[0]
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("keep_io_types", [False, True])
def test_a_float16_teacher_is_compressed_into_a_float16_student(digits, tmp_path, keep_io_types):
    """Trained in float16 as it is, the digits student's loss was NaN within 20 steps (and its kd scores took
    ~25x longer on a CPU); onnxruntime's converter with keep_io_types also writes its input Casts after the
    nodes that read them, which onnx-ir could not clone."""
    teacher = tmp_path / "teacher16.onnx"
    half = _half(digits["teacher"], keep_io_types)
    onnx.save(half, teacher)
    if keep_io_types:  # the file as the converter writes it: a node before its input's producer
        producers = {o: i for i, node in enumerate(half.graph.node) for o in node.output}
        assert any(producers.get(x, -1) > i for i, node in enumerate(half.graph.node) for x in node.input)
    result = onnxkd.compress(teacher, 0.5, digits["train"], val_data=digits["val"], epochs=8, report=False,
                             output=tmp_path / "student16.onnx")
    r = result.to_dict()
    assert r["accuracy"]["student"] >= 0.97 and r["accuracy"]["drop"] <= 0.02, r["accuracy"]
    student = onnx.load(str(tmp_path / "student16.onnx"))
    assert {t.data_type for t in student.graph.initializer} == {onnx.TensorProto.FLOAT16}
    dtypes = lambda m: [v.type.tensor_type.elem_type for v in [*m.graph.input, *m.graph.output]]  # noqa: E731
    assert dtypes(student) == dtypes(half)
