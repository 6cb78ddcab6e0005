"""ONNX <-> torch dtypes, including the ones numpy lacks (bfloat16, float8), which travel as raw bits."""

from __future__ import annotations

import warnings

import numpy as np
import onnx_ir as ir
import torch

_IR_TO_TORCH = {
    ir.DataType.FLOAT: torch.float32,
    ir.DataType.DOUBLE: torch.float64,
    ir.DataType.FLOAT16: torch.float16,
    ir.DataType.BFLOAT16: torch.bfloat16,
    ir.DataType.INT8: torch.int8,
    ir.DataType.INT16: torch.int16,
    ir.DataType.INT32: torch.int32,
    ir.DataType.INT64: torch.int64,
    ir.DataType.UINT8: torch.uint8,
    ir.DataType.UINT16: torch.uint16,
    ir.DataType.UINT32: torch.uint32,
    ir.DataType.UINT64: torch.uint64,
    ir.DataType.BOOL: torch.bool,
    ir.DataType.COMPLEX64: torch.complex64,
    ir.DataType.COMPLEX128: torch.complex128,
    ir.DataType.FLOAT8E4M3FN: torch.float8_e4m3fn,
    ir.DataType.FLOAT8E4M3FNUZ: torch.float8_e4m3fnuz,
    ir.DataType.FLOAT8E5M2: torch.float8_e5m2,
    ir.DataType.FLOAT8E5M2FNUZ: torch.float8_e5m2fnuz,
}
_TORCH_TO_IR = {t: d for d, t in _IR_TO_TORCH.items()}

# Same-width integer views used to move bit patterns between numpy (ml_dtypes) and torch.
_BITS = {1: (np.uint8, torch.uint8), 2: (np.uint16, torch.int16)}

FLOAT_TYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def to_torch_dtype(onnx_type: int | ir.DataType) -> torch.dtype:
    """torch dtype of an ONNX TensorProto data type (int code or ir.DataType)."""
    data_type = ir.DataType(onnx_type)
    if data_type not in _IR_TO_TORCH:
        from onnxkd.errors import OnnxkdError

        raise OnnxkdError(f"ONNX data type {data_type.name} has no torch equivalent")
    return _IR_TO_TORCH[data_type]


def to_ir_dtype(dtype: torch.dtype) -> ir.DataType:
    return _TORCH_TO_IR[dtype]


def array_to_torch(array: np.ndarray, data_type: ir.DataType, copy: bool = True) -> torch.Tensor:
    """A torch tensor with exactly the array's values (copied, contiguous, writable; ``copy=False``: the array's
    own memory where torch can read it as it is, which may be a read-only mapping of a weights file)."""
    target = to_torch_dtype(data_type)
    if array.dtype.kind == "V" or target in (torch.bfloat16,) or target.is_floating_point and target.itemsize == 1:
        np_bits, torch_bits = _BITS[target.itemsize]
        bits = torch.from_numpy(np.ascontiguousarray(array).view(np_bits).copy())
        return bits.view(torch_bits).view(target)
    if array.dtype == object:  # strings have no torch form; ops that need them get numpy arrays
        return array
    if not copy and array.flags.c_contiguous and array.dtype.isnative:
        with warnings.catch_warnings():  # a read-only mapping: the caller never writes to it
            warnings.simplefilter("ignore", UserWarning)
            return torch.from_numpy(array)
    return torch.from_numpy(np.array(array, copy=True, order="C"))


def torch_to_array(tensor: torch.Tensor, data_type: ir.DataType) -> np.ndarray:
    """The inverse of array_to_torch: numpy (ml_dtypes for bfloat16/float8) with the same bits, in memory of its
    own (a view would follow the tensor: a model written back would change as training goes on)."""
    tensor = tensor.detach().cpu().contiguous()
    if tensor.dtype == torch.bfloat16 or (tensor.dtype.is_floating_point and tensor.dtype.itemsize == 1):
        np_bits, torch_bits = _BITS[tensor.dtype.itemsize]
        bits = tensor.view(torch_bits).numpy().view(np_bits)
        return bits.view(ir.DataType(data_type).numpy()).copy()
    return tensor.numpy().copy()
