"""optimize's check: two models compute the same function when max|a - b| <= ATOL + RTOL * scale. Hand-built
graphs give the gaps exactly: an output saturated near 0 must not false-alarm on float rounding, and a real
change must be caught, on random inputs and on the user's samples alike."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxkd.data import Dataset
from onnxkd.validate.equivalence import ATOL, RTOL, check_same_function, compare, describe


def _scaled(scale: float, shift: float = 0.0, dims=("N", 4, "H", "W")):
    """y = x * scale + shift, with the input's spatial dims as declared."""
    nodes = [helper.make_node("Mul", ["x", "s"], ["m"]), helper.make_node("Add", ["m", "b"], ["y"])]
    graph = helper.make_graph(
        nodes, "scaled", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(dims))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(dims))],
        [numpy_helper.from_array(np.array(scale, np.float32), "s"),
         numpy_helper.from_array(np.array(shift, np.float32), "b")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


SHAPES = {"x": (1, 4, 6, 5)}


def test_a_rounding_gap_on_a_saturated_output_passes():
    # outputs of scale 1e-6 differing by 1.5e-7: 15% relative, far below the absolute floor
    check = check_same_function(_scaled(1e-6), _scaled(1.15e-6), "rewrite", SHAPES)
    assert 0 < check["max_abs_difference"] < ATOL and check["margin"] <= 1 and check["inputs"] == "random"


def test_a_real_change_is_caught_with_the_figure_and_the_threshold():
    with pytest.raises(RuntimeError, match=r"differs from its input by .* above the tolerance") as caught:
        check_same_function(_scaled(1.0), _scaled(1.0, shift=0.01), "rewrite", SHAPES)
    assert "nothing was written" in str(caught.value)


def test_the_tolerance_follows_the_output_scale():
    x = np.full((3, 4, 2, 2), 1000.0, np.float32)
    check = compare(_scaled(1.0), _scaled(1.0, shift=0.05), samples=Dataset({"x": x}))
    assert check["tolerance"] == pytest.approx(ATOL + RTOL * 1000.0, rel=1e-6)
    assert check["max_abs_difference"] == pytest.approx(0.05, rel=1e-3) and check["margin"] < 1
    # no gap at all: the tolerance printed is still the output's own (it showed the bare floor, 1e-5)
    same = compare(_scaled(1.0), _scaled(1.0), samples=Dataset({"x": x}))
    assert same["max_abs_difference"] == 0 and same["tolerance"] == pytest.approx(ATOL + RTOL * 1000.0, rel=1e-6)


def test_samples_of_the_data_are_used_at_their_own_size():
    x = np.random.default_rng(0).standard_normal((20, 4, 7, 9)).astype(np.float32)
    check = compare(_scaled(2.0), _scaled(2.0), samples=Dataset({"x": x}))  # no --input-shape needed
    assert check["inputs"] == "data" and check["samples"] == 8 and check["max_abs_difference"] == 0
    assert "on 8 samples of the data" in describe(check)
