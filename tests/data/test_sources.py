"""onnxkd.data.as_dataset with Python sources (map-style, iterable, DataLoader, generator, list) and Hugging Face
data sets: each gives, bit for bit, what the same values give as an in-memory numpy Dataset (the oracle)."""

from __future__ import annotations

import pickle
import sys
import tracemalloc

import numpy as np
import pytest
import torch

from onnxkd.data import Dataset, InputSpec, as_dataset, fit_to_model, load_data
from onnxkd.data.lazy import LazyArray
from onnxkd.errors import OnnxkdError

X = InputSpec("x", np.dtype(np.float32), ("N", 3, 4, 4))
M = InputSpec("m", np.dtype(np.int64), ("N", 5))
N = 30  # not a multiple of the loader's batch of 8: the last batch is short

rng = np.random.default_rng(0)
XS = rng.standard_normal((N, 3, 4, 4)).astype(np.float32)
MS = rng.integers(0, 1000, (N, 5))
YS = rng.integers(0, 10, N)
INDICES = [np.arange(N), rng.permutation(N)[:11], np.array([5]), np.array([29, 0, 29])]


def oracle(specs, arrays, labels=None) -> Dataset:
    return fit_to_model(Dataset(dict(arrays), labels, "oracle"), specs)


def assert_same(data: Dataset, expected: Dataset) -> None:
    assert list(data.arrays) == list(expected.arrays) and len(data) == len(expected)
    for name, array in data.arrays.items():
        assert isinstance(array, LazyArray)  # read per batch, not loaded
        assert array.dtype == expected.arrays[name].dtype and array.shape == expected.arrays[name].shape
        for index in INDICES:
            got = array[index]
            assert got.dtype == expected.arrays[name].dtype
            np.testing.assert_array_equal(got, expected.arrays[name][index], strict=True)
        np.testing.assert_array_equal(array[3:9], expected.arrays[name][3:9], strict=True)
    if expected.labels is None:
        assert data.labels is None
    else:
        np.testing.assert_array_equal(data.labels, expected.labels, strict=True)


# --------------------------------------------------------------------------- sources (module level: picklable)


class Pairs(torch.utils.data.Dataset):
    """(x tensor, int label) samples; counts reads."""

    def __init__(self, targets: bool = False):
        self.reads = 0
        if targets:
            self.targets = list(YS)

    def __len__(self):
        return N

    def __getitem__(self, i):
        self.reads += 1
        return torch.from_numpy(XS[i]), int(YS[i])


class Dicts(torch.utils.data.Dataset):
    """Dict samples of two inputs and a label; counts reads."""

    def __init__(self):
        self.reads = 0

    def __len__(self):
        return N

    def __getitem__(self, i):
        self.reads += 1
        return {"x": XS[i].astype(np.float64), "m": torch.tensor(MS[i]), "labels": np.int64(YS[i])}


class Stream(torch.utils.data.IterableDataset):
    def __iter__(self):
        for i in range(N):
            yield {"x": torch.from_numpy(XS[i]), "labels": torch.tensor(YS[i])}


def double(sample):
    x, label = sample
    return x * 2, label


def test_map_style_dataset_with_a_transform_is_read_lazily():
    source = Pairs()
    data = as_dataset(source, [X], transform=double)
    assert data.source == "Pairs (map-style, 30 samples)"
    assert source.reads == N  # sample 0, then one pass for the labels (no targets attribute)
    assert_same(data, oracle([X], {"x": XS * 2}, YS))


def test_map_style_labels_come_from_targets_without_a_pass():
    source = Pairs(targets=True)
    data = as_dataset(source, [X])
    assert source.reads == 1  # sample 0 only
    assert_same(data, oracle([X], {"x": XS}, YS))
    subset = torch.utils.data.Subset(Pairs(targets=True), [4, 2, 7])
    data = as_dataset(subset, [X])
    np.testing.assert_array_equal(data.labels, YS[[4, 2, 7]])
    np.testing.assert_array_equal(data.arrays["x"][np.arange(3)], XS[[4, 2, 7]])


def test_dict_samples_of_two_inputs_read_each_sample_once_per_batch():
    source = Dicts()
    data = as_dataset(source, [X, M])
    expected = oracle([X, M], {"x": XS, "m": MS}, YS)
    assert_same(data, expected)
    source.reads = 0
    index = np.array([3, 1, 4])
    batch = {name: data.arrays[name][index] for name in ("x", "m")}  # what a loader does for one batch
    assert source.reads == 3
    np.testing.assert_array_equal(batch["m"], MS[index])


def test_iterable_dataset_is_read_once_into_files():
    data = as_dataset(Stream(), [X])
    assert "iterable" in data.source and "temporary folder" in data.source
    assert_same(data, oracle([X], {"x": XS}, YS))


def test_data_loader_batches_are_split_back_into_samples():
    loader = torch.utils.data.DataLoader(Pairs(), batch_size=8)
    data = as_dataset(loader, [X])
    assert_same(data, oracle([X], {"x": XS}, YS))


def test_generator_of_dicts_and_list_of_arrays():
    generator = ({"x": XS[i], "m": MS[i].tolist(), "label": int(YS[i])} for i in range(N))
    assert_same(as_dataset(generator, [X, M]), oracle([X, M], {"x": XS, "m": MS}, YS))
    assert_same(as_dataset(list(XS), [X]), oracle([X], {"x": XS}))
    pairs = [(XS[i], MS[i]) for i in range(N)]  # a tuple of the model's inputs, no label
    assert_same(as_dataset(pairs, [X, M]), oracle([X, M], {"x": XS, "m": MS}))


def test_readers_pickle_for_loader_workers():
    for source in (Dicts(), iter([{"x": XS[i], "m": MS[i]} for i in range(N)])):
        data = as_dataset(source, [X, M])
        copy = pickle.loads(pickle.dumps(data.arrays))  # the arrays together, as a worker gets them
        index = np.array([7, 2, 9])
        for name, expected in (("x", XS), ("m", MS)):
            reader = pickle.loads(pickle.dumps(data.arrays[name]._read))
            np.testing.assert_array_equal(reader(index), expected[index], strict=True)
            np.testing.assert_array_equal(copy[name][index], expected[index], strict=True)


def test_memory_of_an_iterable_source_does_not_grow_with_its_samples():
    count, spec = 20_000, InputSpec("v", np.dtype(np.float32), ("N", 1024))  # 4 KB a sample, 80 MB in all

    def samples():
        for i in range(count):
            yield np.full(1024, i, np.float32), i % 7

    tracemalloc.start()
    try:
        data = as_dataset(samples(), [spec])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 20 << 20, f"peak {peak / 2**20:.1f} MiB"
    assert len(data) == count
    index = np.array([0, 12_345, count - 1])
    np.testing.assert_array_equal(data.arrays["v"][index], np.repeat(index[:, None], 1024, 1).astype(np.float32))
    np.testing.assert_array_equal(data.labels, np.arange(count) % 7)


class Ragged(torch.utils.data.Dataset):
    def __len__(self):
        return 6

    def __getitem__(self, i):
        return np.zeros((3, 4, 5 if i == 4 else 4), np.float32)


@pytest.mark.parametrize("source, specs, message", [
    ([(XS[0], MS[0], 1, 2)], [X, M], "data sample 0: tuple of 4 items, the model has 2 inputs (give inputs, or inputs + label)"),
    ([XS[0]] * 3 + [XS[0, :2]], [X], "data sample 3: input 'x' has shape [2, 4, 4], sample 0 has [3, 4, 4]"),
    ([(XS[0], 1), (XS[1], 1.5)], [X], "data sample 1: label 1.5 is not an integer class id"),
    ([(XS[0], 1), XS[1]], [X], "data sample 1: has no label, sample 0 has one"),
    ([XS[0], np.full((3, 4, 4), np.nan)], [X], "data sample 1: input 'x': NaN/Inf values"),
    ([{"x": XS[0], "y": 1}], [X], "data sample 0: key 'y' is not an input of the model"),
    ([XS[0]], [X, M], "data sample 0: one array, the model has 2 inputs"),
    ([], [X], "data: no samples"),
    (iter(()), [X], "data: no samples"),
    (torch.utils.data.TensorDataset(torch.zeros(0, 3, 4, 4)), [X], "data: no samples"),
    ([np.zeros((3, 4, 4), np.float32), np.ones((3, 4, 4), np.float32) / 2], [InputSpec("x", np.dtype(np.int64), X.shape)],
     "data sample 1: input 'x': non-integer values for a int64 input"),
    (42, [X], "data: cannot read a int"),
])
def test_bad_samples_give_one_line_naming_the_sample(source, specs, message):
    with pytest.raises(OnnxkdError) as info:
        as_dataset(source, specs)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_map_style_problems_are_named_when_their_rows_are_read():
    data = as_dataset(Ragged(), [X])  # sample 0 fits; sample 4 is read only with its batch
    np.testing.assert_array_equal(data.arrays["x"][np.arange(4)], np.zeros((4, 3, 4, 4), np.float32))
    with pytest.raises(OnnxkdError, match=r"data sample 4: input 'x' has shape \[3, 4, 5\], sample 0 has \[3, 4, 4\]"):
        data.arrays["x"][np.arange(6)]

    def fails(sample):
        raise KeyError("boom")

    with pytest.raises(OnnxkdError, match="data sample 0: transform: KeyError: 'boom'"):
        as_dataset(Pairs(), [X], transform=fails)
    with pytest.raises(OnnxkdError, match="transform: applies to Python data sources"):
        as_dataset({"x": XS}, [X], transform=double)


def test_one_array_or_tensor_feeds_a_one_input_model():
    assert_array = as_dataset(torch.from_numpy(XS), [X]).arrays["x"]
    np.testing.assert_array_equal(assert_array, XS, strict=True)
    with pytest.raises(OnnxkdError, match="one array, the model has 2 inputs"):
        as_dataset(XS, [X, M])


@pytest.mark.parametrize("as_given", [lambda a: a, torch.from_numpy], ids=["numpy", "torch"])
def test_inputs_and_labels_as_a_pair_are_read_as_x_and_y(as_given):
    """(x, y) as scikit-learn and Keras take them: it was read as two samples and refused (sample 1's shape)."""
    data = as_dataset((as_given(XS), as_given(YS)), [X])
    np.testing.assert_array_equal(data.arrays["x"][np.arange(N)], XS, strict=True)
    np.testing.assert_array_equal(data.labels, YS)
    # two samples of the model's input (no batch axis) stay two samples
    two = as_dataset((XS[0], XS[1]), [X])
    assert len(two) == 2 and two.labels is None
    # labels as a column [N, 1], as an .npz may hold them: read so too (they were taken for a second sample)
    np.testing.assert_array_equal(as_dataset((as_given(XS), as_given(YS[:, None])), [X]).labels, YS)
    with pytest.raises(OnnxkdError, match="data: labels: 10 labels for 30 samples"):  # named, not "sample 1"
        as_dataset((as_given(XS), as_given(YS[:10])), [X])


def test_float_and_list_labels_in_a_pair_are_class_ids():
    """pandas and scikit-learn often give labels as float64, and users pass lists: the pair was read as two
    samples ("sample 1 has shape [30]"); whole-number floats are class ids, others are refused by name."""
    np.testing.assert_array_equal(as_dataset((XS, YS.astype(np.float64)), [X]).labels, YS, strict=False)
    assert as_dataset((XS, YS.astype(np.float64)), [X]).labels.dtype == np.int64
    np.testing.assert_array_equal(as_dataset((XS, list(YS)), [X]).labels, YS)
    with pytest.raises(OnnxkdError, match="labels: float values that are not class ids"):
        as_dataset((XS, YS + 0.5), [X])


def test_labels_of_one_value_in_an_npz_are_refused_in_one_line(tmp_path):
    np.savez(tmp_path / "d.npz", x=XS, labels=np.int64(3))  # an internal error (IndexError) before
    with pytest.raises(OnnxkdError, match=r"d.npz: labels: expected a 1-D array of class ids, got shape \[\]"):
        load_data(tmp_path / "d.npz", [X])


# --------------------------------------------------------------------------- Hugging Face datasets


@pytest.fixture
def hf(tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")  # parquet's conversion
    datasets.disable_progress_bars()
    yield datasets
    datasets.enable_progress_bars()


def test_hugging_face_folders_and_parquet_files_read_like_the_oracle(hf, tmp_path):
    columns = {"x": XS.tolist(), "m": MS.tolist(), "label": YS.tolist()}
    renamed = {"pixels": columns["x"], "mask": columns["m"], "target": columns["label"], "text": ["a"] * N}
    expected = oracle([X, M], {"x": XS, "m": MS}, YS)
    hf.Dataset.from_dict(columns).save_to_disk(tmp_path / "saved")
    hf.Dataset.from_dict(columns).to_parquet(tmp_path / "d.parquet")
    hf.Dataset.from_dict(renamed).save_to_disk(tmp_path / "renamed")
    hf.Dataset.from_dict(renamed).to_parquet(tmp_path / "renamed.parquet")
    for path in ("saved", "d.parquet"):
        assert_same(load_data(tmp_path / path, [X, M]), expected)
        assert_same(as_dataset(str(tmp_path / path), [X, M], columns="x,m,labels=label"), expected)
    for path in ("renamed", "renamed.parquet"):
        assert_same(as_dataset(tmp_path / path, [X, M], columns="x=pixels,m=mask,labels=target"), expected)
        no_labels = load_data(tmp_path / path, [X, M], columns={"x": "pixels", "m": "mask"})
        assert no_labels.labels is None
    # the object itself, and its readers in a loader worker
    data = as_dataset(hf.load_from_disk(str(tmp_path / "saved")), [X, M])
    assert_same(data, expected)
    index = np.array([8, 1])
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(data.arrays["x"]._read))(index), XS[index], strict=True)


def test_hugging_face_refusals_are_one_line(hf, tmp_path):
    ds = hf.Dataset.from_dict({"x": XS.tolist(), "label": YS.tolist()})
    hf.DatasetDict({"train": ds, "test": ds}).save_to_disk(tmp_path / "dd")
    with pytest.raises(OnnxkdError, match="a DatasetDict with splits 'train', 'test'; give one split's folder"):
        load_data(tmp_path / "dd", [X])
    with pytest.raises(OnnxkdError, match=r"no column for input 'm' \(its columns are 'x', 'label'\); map one with "
                                          r"columns='m=COLUMN'"):
        as_dataset(ds, [X, M])
    with pytest.raises(OnnxkdError, match="no column 'pixels'"):
        as_dataset(ds, [X], columns="x=pixels")
    with pytest.raises(OnnxkdError, match="'y' is neither an input of the model"):
        as_dataset(ds, [X], columns="y=x")
    ragged = hf.Dataset.from_dict({"m": [[1] * 5, [2] * 5, [3] * 4]})
    with pytest.raises(OnnxkdError, match=r"row 2: column 'm' has shape \[4\], row 0 has \[5\]"):
        as_dataset(ragged, [M])  # numeric columns are read whole at open time: ragged rows fail there
    with pytest.raises(OnnxkdError, match="columns apply to Hugging Face"):
        load_data(tmp_path / "dd" / "train" / "state.json", [X], columns="x")


def test_hugging_face_rows_through_a_transform_or_a_stream(hf):
    ds = hf.Dataset.from_dict({"x": XS.tolist(), "label": YS.tolist()})

    def doubled(batch):  # ds.with_transform: the rows as this makes them
        return {"x": [np.asarray(row, np.float32) * 2 for row in batch["x"]], "label": batch["label"]}

    assert_same(as_dataset(ds.with_transform(doubled), [X]), oracle([X], {"x": XS * 2}, YS))
    assert_same(as_dataset(ds.to_iterable_dataset(), [X]), oracle([X], {"x": XS}, YS))
    with pytest.raises(OnnxkdError, match="give columns or a transform, not both"):
        as_dataset(ds, [X], transform=double, columns="x")


def test_without_the_datasets_package_the_message_says_what_to_install(tmp_path, monkeypatch):
    (tmp_path / "saved").mkdir()
    (tmp_path / "saved" / "state.json").write_text("{}")
    monkeypatch.setitem(sys.modules, "datasets", None)  # import datasets raises ImportError
    with pytest.raises(OnnxkdError, match=r"needs the datasets package: pip install datasets"):
        load_data(tmp_path / "saved", [X])


class _Digits(torch.utils.data.Dataset):
    """A user's torch Dataset over the digits arrays (module level: loader workers may need to pickle it)."""

    def __init__(self, path):
        data = np.load(path)
        self.images, self.labels = data["image"], data["labels"]

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return torch.from_numpy(self.images[i]), int(self.labels[i])


def test_distilling_from_python_sources_trains_the_student_of_the_npz(digits, digits_student, small_digits,
                                                                      one_thread):
    """A torch Dataset read by 2 loader workers and a DataLoader read once into files train the same student as
    the .npz they were made from, bit for bit."""
    import onnxkd

    common = dict(val_data=small_digits["val"], epochs=1, batch_size=32, seed=2)
    reference = onnxkd.distill(digits["teacher"], digits_student, small_digits["train"], **common).model
    torch_dataset = _Digits(small_digits["train"])
    loader = torch.utils.data.DataLoader(torch_dataset, batch_size=50)
    for data, extra in ((torch_dataset, dict(workers=2)), (loader, {})):
        model = onnxkd.distill(digits["teacher"], digits_student, data, **common, **extra).model
        for name, value in reference.graph.initializers.items():
            np.testing.assert_array_equal(model.graph.initializers[name].const_value.numpy(),
                                          value.const_value.numpy(), err_msg=name)


def test_inputs_that_share_a_named_dim_must_get_the_same_size():
    """input_ids and attention_mask of one 'seq' with 12 and 16 tokens: an internal error inside the first run
    (exit 3) before; refused with both sizes. Markers such as '?' tie nothing."""
    ids, mask = InputSpec("ids", np.dtype(np.int64), ("N", "seq")), InputSpec("mask", np.dtype(np.int64), ("N", "seq"))
    fits = as_dataset({"ids": np.zeros((4, 12), np.int64), "mask": np.ones((4, 12), np.int64)}, [ids, mask])
    assert len(fits) == 4
    with pytest.raises(OnnxkdError, match="input 'mask' dim 1 is 16, input 'ids' dim 1 is 12: the model declares "
                                          "both as 'seq'"):
        as_dataset({"ids": np.zeros((4, 12), np.int64), "mask": np.ones((4, 16), np.int64)}, [ids, mask])
    a, b = InputSpec("a", np.dtype(np.float32), ("N", "?")), InputSpec("b", np.dtype(np.float32), ("N", "?"))
    assert len(as_dataset({"a": np.zeros((4, 3), np.float32), "b": np.zeros((4, 5), np.float32)}, [a, b])) == 4


def test_data_for_a_fixed_batch_seq_first_model_says_how_to_name_its_batch():
    """x[T=16, N=4, C=8] with fixed numbers reads as batch-first; data [N, T, C] is refused, with the way out."""
    seq_first = InputSpec("x", np.dtype(np.float32), (16, 4, 8))
    with pytest.raises(OnnxkdError, match=r"dim 1 is 16, .*if the model is seq-first, x\[T=16, N=4, \.\.\.\].*"
                                          r"dynamic_axes=\{'x': \{1: 'batch'\}\}"):
        as_dataset({"x": np.zeros((4, 16, 8), np.float32)}, [seq_first])
