"""onnxkd.data: npz and image folders fitted to a model's inputs; every refusal names the input."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from onnxkd.data import (ImageOptions, InputSpec, concrete_shape, fit_to_model, load_data, load_npz,
                         parse_input_shapes, random_inputs)
from onnxkd.data.dataset import Dataset
from onnxkd.errors import OnnxkdError

X = InputSpec("x", np.dtype(np.float32), ("N", 3, 8, 8))


def test_named_npz_is_cast_to_the_input_dtype(tmp_path):
    x = np.random.default_rng(0).standard_normal((6, 3, 8, 8)).astype(np.float16)
    np.savez(tmp_path / "d.npz", x=x, labels=np.arange(6))
    data = load_data(tmp_path / "d.npz", [X])
    assert data.arrays["x"].dtype == np.float32 and len(data) == 6
    np.testing.assert_array_equal(data.arrays["x"], x.astype(np.float32))
    np.testing.assert_array_equal(data.labels, np.arange(6))


def test_single_input_model_accepts_one_unnamed_array(tmp_path):
    x = np.zeros((2, 3, 8, 8), np.float64)
    np.savez(tmp_path / "d.npz", x)  # stored as arr_0
    assert list(load_data(tmp_path / "d.npz", [X]).arrays) == ["x"]
    np.save(tmp_path / "d.npy", x)
    assert load_data(tmp_path / "d.npy", [X]).arrays["x"].shape == (2, 3, 8, 8)
    np.savez(tmp_path / "named.npz", images=x, labels=np.arange(2))  # one array under any name: the input
    data = load_data(tmp_path / "named.npz", [X])
    assert list(data.arrays) == ["x"] and list(data.labels) == [0, 1]


@pytest.mark.parametrize("arrays, message", [
    ({"x": np.zeros((2, 3, 8, 8), np.float32), "mask": np.zeros((2, 3, 8, 8), np.float32)},
     "unknown input name 'mask'"),
    ({"x": np.zeros((2, 3, 8, 8), np.float32), "y": np.arange(2)}, "(labels go under the key 'labels', not 'y')"),
    ({"pixels": np.zeros((2, 3, 8), np.float32)}, "input 'x (array pixels)': array of shape [2, 3, 8] has rank 3"),
    ({"x": np.zeros((2, 3, 8), np.float32)}, "input 'x': array of shape [2, 3, 8] has rank 3"),
    ({"x": np.zeros((2, 3, 9, 8), np.float32)}, "input 'x': dim 2 is 9"),
    ({"x": np.full((2, 3, 8, 8), np.nan, np.float32)}, "input 'x': 384 NaN/Inf"),
    ({"x": np.array([["a"]] * 2)}, "input 'x': non-numeric array"),
    ({"x": np.zeros((2, 3, 8, 8), np.float32), "labels": np.arange(3)}, "labels: 3 labels for 2 samples"),
    ({"x": np.zeros((2, 3, 8, 8), np.float32), "labels": np.array([0.5, 1.0])}, "labels: expected integer"),
    ({"x": np.full((2, 3, 8, 8), 1e6)}, "input 'x': values overflow"),
])
def test_data_that_does_not_fit_gives_one_line_naming_the_input(tmp_path, arrays, message):
    spec = InputSpec("x", np.dtype(np.float16), X.shape) if "overflow" in message else X
    np.savez(tmp_path / "d.npz", **arrays)
    with pytest.raises(OnnxkdError) as info:
        load_data(tmp_path / "d.npz", [spec])
    assert message in str(info.value) and "\n" not in str(info.value)


def test_missing_input_and_sample_count_mismatch_are_named():
    specs = [X, InputSpec("m", np.dtype(np.int64), ("N", 4))]
    with pytest.raises(OnnxkdError, match="no array for input 'm'"):
        fit_to_model(Dataset({"x": np.zeros((2, 3, 8, 8))}), specs)
    with pytest.raises(OnnxkdError, match="input 'm' has 3 samples"):
        fit_to_model(Dataset({"x": np.zeros((2, 3, 8, 8)), "m": np.zeros((3, 4))}), specs)


def test_object_arrays_and_junk_files_are_refused(tmp_path):
    np.savez(tmp_path / "o.npz", x=np.array([{"a": 1}, None], dtype=object))
    with pytest.raises(OnnxkdError, match="non-numeric"):
        load_npz(tmp_path / "o.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(OnnxkdError, match="cannot read"):
        load_npz(tmp_path / "junk.npz")
    np.savez(tmp_path / "labels.npz", labels=np.arange(4))
    with pytest.raises(OnnxkdError, match="holds only 'labels', no input arrays"):
        load_npz(tmp_path / "labels.npz")


def test_image_folder_is_preprocessed_like_an_independent_computation(tmp_path):
    rng = np.random.default_rng(0)
    pixels = {}
    for cls in ("cat", "ant"):  # sorted: ant = 0, cat = 1
        (tmp_path / cls).mkdir()
        for i in range(2):
            image = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
            Image.fromarray(image).save(tmp_path / cls / f"{i}.png")
            pixels[(cls, i)] = image
    options = ImageOptions(mean=(0.5, 0.5, 0.5), std=(0.25, 0.5, 1.0), channel_order="bgr")
    data = load_data(tmp_path, [X], options)
    np.testing.assert_array_equal(data.labels, [0, 0, 1, 1])
    assert data.arrays["x"].shape == (4, 3, 8, 8)
    expected = (pixels[("cat", 1)] / 255.0 - 0.5) / np.array([0.25, 0.5, 1.0])
    expected = expected[..., ::-1].transpose(2, 0, 1)  # bgr, then HWC -> CHW
    np.testing.assert_allclose(data.arrays["x"][3], expected, rtol=1e-5, atol=1e-6)


def test_a_channels_last_model_read_as_nchw_is_told_the_layout_flag(tmp_path):
    (tmp_path / "a").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "a" / "0.png")
    nhwc = InputSpec("x", np.dtype(np.float32), ("N", "h", "w", 3))  # a tf2onnx export: dynamic H and W
    with pytest.raises(OnnxkdError, match=r"input 'x' is float32\[N,h,w,3\]: .*; give --layout nhwc$"):
        load_data(tmp_path, [nhwc], ImageOptions())
    assert load_data(tmp_path, [nhwc], ImageOptions(layout="nhwc", size=(8, 8))).arrays["x"].shape == (1, 8, 8, 3)


def test_a_mean_or_std_of_another_channel_count_is_bad_input(tmp_path):
    """It was an internal error (numpy's broadcast error, exit 3)."""
    (tmp_path / "a").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "a" / "0.png")
    with pytest.raises(OnnxkdError, match=r"^--mean 0.5,0.5: 2 values for 3 colour channels; give 1 or 3$"):
        load_data(tmp_path, [X], ImageOptions(mean=(0.5, 0.5)))
    with pytest.raises(OnnxkdError, match=r"^--std 1,1,1,1: 4 values"):
        load_data(tmp_path, [X], ImageOptions(std=(1, 1, 1, 1)))
    assert load_data(tmp_path, [X], ImageOptions(mean=(0.5,), std=(0.5,))).arrays["x"][0].max() == -1.0


@pytest.mark.parametrize("layout, order", [("nchw", "rgb"), ("nhwc", "bgr")])
def test_an_integer_image_input_gets_the_pixels_themselves(tmp_path, layout, order):
    """A uint8 input (TensorFlow exports; models that scale inside) takes 0-255 pixels: normalised floats cast
    to uint8 would be 0, 1 or 2."""
    (tmp_path / "a").mkdir()
    image = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "a" / "0.png")
    shape = (None, 3, 8, 8) if layout == "nchw" else (None, 8, 8, 3)
    spec = InputSpec("x", np.dtype(np.uint8), shape)
    got = load_data(tmp_path, [spec], ImageOptions(layout=layout, channel_order=order)).arrays["x"][0]
    expected = image[..., ::-1] if order == "bgr" else image
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, expected.transpose(2, 0, 1) if layout == "nchw" else expected)
    with pytest.raises(OnnxkdError, match="takes uint8: images are fed as their 0-255 pixels, and --mean/--std"):
        load_data(tmp_path, [spec], ImageOptions(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), layout=layout))


def test_list_files_take_a_header_and_name_the_files_lines(tmp_path):
    for i in range(2):
        Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(tmp_path / f"{i}.png")
    (tmp_path / "paths.txt").write_text("path\n0.png\n\n1.png\n")  # a header above paths only, a blank line
    data = load_data(tmp_path / "paths.txt", [X])
    assert data.arrays["x"].shape == (2, 3, 8, 8) and data.labels is None
    (tmp_path / "labels.csv").write_text("path,label\n0.png,0\n\n1.png,cat\n")
    with pytest.raises(OnnxkdError, match="line 4: label 'cat' is not an integer class id"):
        load_data(tmp_path / "labels.csv", [X])


def test_image_folder_resizes_to_the_model_and_supports_nhwc(tmp_path):
    (tmp_path / "a").mkdir()
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(tmp_path / "a" / "0.jpg")
    nhwc = InputSpec("img", np.dtype(np.float32), (1, 16, 12, 3))
    data = load_data(tmp_path, [nhwc], ImageOptions(layout="nhwc"))
    assert data.arrays["img"].shape == (1, 16, 12, 3)
    (tmp_path / "empty").mkdir()
    with pytest.raises(OnnxkdError, match="no images"):
        load_data(tmp_path / "empty", [X])


def test_random_inputs_and_input_shapes():
    dyn = InputSpec("x", np.dtype(np.float32), ("N", 3, "H", "W"))
    with pytest.raises(OnnxkdError, match=r"input 'x' has dynamic dims 2, 3 .*--input-shape x=1,3,224,224"):
        random_inputs([dyn])
    shapes = parse_input_shapes(["x=1,3,32,48"])
    feeds = random_inputs([dyn], shapes, batch=4)
    assert feeds["x"].shape == (4, 3, 32, 48) and feeds["x"].dtype == np.float32
    assert concrete_shape(InputSpec("y", np.dtype(np.int64), (1, 5)), batch=8) == (1, 5)  # fixed batch stays
    with pytest.raises(OnnxkdError, match="dim 1 is 4, the model fixes it to 3"):
        concrete_shape(dyn, {"x": (1, 4, 2, 2)})
    with pytest.raises(OnnxkdError, match="--input-shape"):
        parse_input_shapes(["x=1,a"])
