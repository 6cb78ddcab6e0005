"""Calibration one batch at a time (``CalibStridedMinMax``) against onnxruntime calibrating all batches at once.

Oracle: onnxruntime's own ``quantize_static`` with its calibration cache, given every batch in one pass (how it
calibrates unless told otherwise). MinMax ranges must be equal; the percentile calibrator extends its histogram
batch by batch instead of building it once, so its thresholds may move by a few of its 2,048 bins.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantType, quantize_static
from onnxruntime.quantization.calibrate import load_tensors_data

import onnxkd
from onnxkd.data import Dataset
from onnxkd.quantize.calibration import DataReader
from onnxkd.quantize.prepare import prepare_float
from onnxkd.quantize.ptq import Quantizer, Settings
from onnxkd.quantize.target import Target


def test_the_reader_gives_each_range_of_batches_and_counts_them():
    dataset = Dataset({"x": np.arange(10, dtype=np.float32)[:, None]}, None, "test")
    reader = DataReader(dataset, batch=4)
    assert len(reader) == 3
    reader.set_range(1, 3)
    assert [b["x"][:, 0].tolist() for b in iter(reader.get_next, None)] == [[4, 5, 6, 7], [8, 9]]
    reader.rewind()
    assert sum(len(b["x"]) for b in iter(reader.get_next, None)) == 10


def _floats(range_value) -> tuple[float, float]:
    return tuple(float(np.asarray(v).reshape(-1)[0]) for v in range_value)


class _AllAtOnce(CalibrationDataReader):
    def __init__(self, batches: list[dict]):
        self.batches = iter(batches)

    def get_next(self):
        return next(self.batches, None)


@pytest.mark.parametrize("method", ["minmax", "percentile"])
def test_ranges_match_onnxruntime_calibrating_every_batch_at_once(digits, tmp_path, method):
    images = np.load(digits["val"])["image"][:96]
    dataset = Dataset({"image": images}, None, "test")
    float_path, _ = prepare_float(onnxkd.load(digits["teacher"]), tmp_path)
    settings = Settings(Target("cpu-x86", "uint8", False, "test"), method)
    quantizer = Quantizer(float_path, None, tmp_path, dataset, settings, batch=16)
    quantizer._quantize(tmp_path / "ours.onnx", (), method)
    ours = load_tensors_data(quantizer.cache).data

    oracle = tmp_path / "oracle.json"
    calibration = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile}[method]
    quantize_static(str(float_path), str(tmp_path / "oracle.onnx"),
                    _AllAtOnce([{"image": images[i:i + 16]} for i in range(0, 96, 16)]),
                    per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=calibration, calibration_cache_path=str(oracle),
                    extra_options={"WeightSymmetric": True, "CalibPercentile": settings.percentile})
    expected = load_tensors_data(oracle).data
    assert set(ours) == set(expected) and len(ours) > 10
    for name, data in expected.items():
        low, high = _floats(data.range_value)
        got = _floats(ours[name].range_value)
        if method == "minmax":
            assert got == pytest.approx((low, high), rel=1e-6, abs=1e-7), name
        else:
            tolerance = 0.01 * max(abs(low), abs(high), 1e-6)  # ~20 of the histogram's 2,048 bins
            assert got == pytest.approx((low, high), abs=tolerance), name


def test_a_large_models_preparation_keeps_one_copy_of_its_weights_on_disk(digits, tmp_path, monkeypatch):
    """Above LARGE_BYTES the prepared model's weights are external; the upgraded copy it was prepared from was
    kept for the whole run (4.3x a 2.4 GB model's size in the temp folder with the int8 candidates)."""
    import onnxruntime as ort

    from onnxkd.quantize import prepare

    monkeypatch.setattr(prepare, "LARGE_BYTES", 0)  # this small model takes the large models' path
    path, _ = prepare.prepare_float(onnxkd.load(digits["teacher"]), tmp_path)
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith("float-upgraded")]
    x = np.load(digits["val"])["image"][:8]

    def run(model):
        return ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, {"image": x})[0]

    np.testing.assert_allclose(run(path), run(digits["teacher"]), rtol=1e-4, atol=1e-5)
