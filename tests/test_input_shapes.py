"""Where the sizes of dynamic dims come from: --input-shape, then the user's samples, then the model's fixed dims
with a free batch of 1; anything else is a one-line input error that names the dims and shows the flag."""

from __future__ import annotations

import numpy as np
import pytest

from onnxkd.data import InputSpec, check_input_shapes, reference_shapes
from onnxkd.errors import OnnxkdError

F32 = np.dtype(np.float32)
PADDLE = InputSpec("x", F32, ("p2o.DynamicDimension.0", 3, "p2o.DynamicDimension.1", None))
TOKENS = InputSpec("ids", np.dtype(np.int64), ("batch", 12))


def test_the_flag_wins_then_the_data_then_the_fixed_dims():
    assert reference_shapes([PADDLE, TOKENS], {"x": (1, 3, 48, 192)}, {"x": (3, 32, 32), "ids": (12,)}) == \
        {"x": (1, 3, 48, 192), "ids": (1, 12)}
    assert reference_shapes([PADDLE, TOKENS], None, {"x": (3, 32, 40)}) == {"x": (1, 3, 32, 40), "ids": (1, 12)}


def test_a_fixed_batch_stays_whatever_the_data():
    fixed = InputSpec("x", F32, (4, 3, "H", "W"))
    assert reference_shapes([fixed], None, {"x": (3, 10, 11)}) == {"x": (4, 3, 10, 11)}


def test_unsized_dynamic_dims_name_the_dims_and_show_the_flag():
    with pytest.raises(OnnxkdError) as caught:
        reference_shapes([PADDLE])
    message = str(caught.value)
    assert "input 'x' has dynamic dims 2, 3" in message and "--input-shape x=1,3,224,224" in message
    assert "p2o.DynamicDimension.1" in message and "\n" not in message


@pytest.mark.parametrize("given, match", [
    ({"y": (1, 3, 8, 8)}, r"the model has no input 'y'; its inputs are 'x'"),
    ({"x": (1, 3, 8)}, r"rank 3, the model's input is .* \(rank 4\)"),
    ({"x": (1, 4, 8, 8)}, r"dim 1 is 4, the model fixes it to 3"),
])
def test_a_bad_input_shape_is_refused(given, match):
    with pytest.raises(OnnxkdError, match=match):
        check_input_shapes(given, [PADDLE])
