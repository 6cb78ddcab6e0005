"""The bridge's Slice clamps its bounds as ONNX does, which is what Python's ``slice.indices`` computes (the
oracle here); written out so that torch.compile traces it (before torch 2.13 it could not trace ``slice.indices``)."""

from hypothesis import given
from hypothesis import strategies as st

from onnxkd.torch_bridge.ops.shape import _clamped

INT64_MAX = 2**63 - 1
BOUNDS = st.one_of(st.integers(-20, 20), st.sampled_from([INT64_MAX, -INT64_MAX - 1, INT64_MAX - 1]))


@given(BOUNDS, BOUNDS, st.integers(-5, 5).filter(bool), st.integers(0, 12))
def test_bounds_are_clamped_as_python_slices_are(start, end, step, size):
    assert _clamped(start, end, step, size) == slice(start, end, step).indices(size)
