"""Data read lazily from .npy files, stored .npz members and folders of .npy files: the same samples, batches and
splits as numpy's own np.load (the oracle), with memory bounded by what is in flight, not by the file."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import torch

from onnxkd.data import InputSpec, load_data
from onnxkd.data.lazy import LazyArray
from onnxkd.distill.batches import Batches, split_holdout
from onnxkd.distill.loader import Loader
from onnxkd.errors import OnnxkdError

SPEC = InputSpec("x", np.dtype(np.float32), ("N", 3, 4, 5))
RNG = np.random.default_rng(0)
X = RNG.standard_normal((37, 3, 4, 5))  # float64 on disk: the model's float32 is cast as rows are read
LABELS = RNG.integers(0, 10, 37)


def _same_as_in_memory(lazy, oracle_x, oracle_labels):
    x = lazy.arrays["x"]
    assert isinstance(x, LazyArray) and x.dtype == np.float32 and x.shape == oracle_x.shape
    np.testing.assert_array_equal(x[:], oracle_x.astype(np.float32))
    np.testing.assert_array_equal(lazy.labels, oracle_labels)
    index = np.array([5, 3, 3, 36, 0])  # unsorted, repeated
    np.testing.assert_array_equal(x[index], oracle_x[index].astype(np.float32))
    np.testing.assert_array_equal(x[-1], oracle_x[-1].astype(np.float32))
    batches = list(lazy.batches(8))
    assert [len(b[0]["x"]) for b in batches] == [8, 8, 8, 8, 5]
    np.testing.assert_array_equal(np.concatenate([b[0]["x"] for b in batches]), oracle_x.astype(np.float32))


def test_npz_members_stored_by_savez_are_read_lazily(tmp_path):
    np.savez(tmp_path / "d.npz", x=X, labels=LABELS)
    _same_as_in_memory(load_data(tmp_path / "d.npz", [SPEC]), X, LABELS)


def test_a_npy_file_and_a_folder_of_npy_files(tmp_path):
    np.save(tmp_path / "x.npy", X)
    single = load_data(tmp_path / "x.npy", [SPEC])
    np.testing.assert_array_equal(single.arrays["x"][:], X.astype(np.float32))
    np.save(tmp_path / "labels.npy", LABELS)
    _same_as_in_memory(load_data(tmp_path, [SPEC]), X, LABELS)


def test_compressed_members_are_read_whole_with_the_same_values(tmp_path):
    np.savez_compressed(tmp_path / "c.npz", x=X, labels=LABELS)
    data = load_data(tmp_path / "c.npz", [SPEC])
    assert isinstance(data.arrays["x"], np.ndarray)
    np.testing.assert_array_equal(data.arrays["x"], X.astype(np.float32))


def test_a_split_stays_lazy_and_trains_on_the_same_batches(tmp_path):
    np.savez(tmp_path / "d.npz", x=X, labels=LABELS)
    lazy = load_data(tmp_path / "d.npz", [SPEC])
    np.savez_compressed(tmp_path / "c.npz", x=X, labels=LABELS)
    eager = load_data(tmp_path / "c.npz", [SPEC])
    (lazy_train, lazy_val), (eager_train, eager_val) = split_holdout(lazy, 0.2, 3), split_holdout(eager, 0.2, 3)
    assert isinstance(lazy_train.arrays["x"], LazyArray) and isinstance(lazy_val.arrays["x"], LazyArray)
    np.testing.assert_array_equal(lazy_val.arrays["x"][:], eager_val.arrays["x"])
    cpu = torch.device("cpu")
    for a, b in zip(Batches(Loader(lazy_train, ["x"], cpu), 8, 1).epoch(2),
                    Batches(Loader(eager_train, ["x"], cpu), 8, 1).epoch(2)):
        assert torch.equal(a.inputs[0], b.inputs[0]) and torch.equal(a.labels, b.labels)


@pytest.mark.parametrize("name", ["x.npy", "d.npz"])
def test_a_truncated_file_is_one_line_naming_it(tmp_path, name):
    path = tmp_path / name
    np.save(path, X) if name.endswith(".npy") else np.savez(path, x=X)
    path.write_bytes(path.read_bytes()[: path.stat().st_size - 200])
    with pytest.raises(OnnxkdError, match=f"{name}.*(truncated|cannot read)") as caught:
        load_data(path, [SPEC])
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("rows", [2048, 4096])  # 96 and 192 MiB: the same peak
def test_memory_holds_a_batch_not_the_file(tmp_path, rows):
    big = np.zeros((rows, 3, 64, 64), np.float32)
    big[:, 0, 0, 0] = np.arange(rows)
    np.save(tmp_path / "x.npy", big)
    np.save(tmp_path / "labels.npy", np.zeros(rows, np.int64))
    spec = InputSpec("x", np.dtype(np.float32), ("N", 3, 64, 64))
    del big
    tracemalloc.start()
    data = load_data(tmp_path, [spec])  # every value checked for NaN/Inf on the way
    seen = 0.0
    for arrays, _ in data.batches(64):
        seen += float(arrays["x"][:, 0, 0, 0].sum())
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert seen == (rows - 1) * rows / 2
    assert peak < 48 << 20, f"peak {peak / 2**20:.0f} MiB for a {rows * 48 // 1024} MiB file"  # 32: 16 MiB blocks
