"""``--data PATH.npz``: arrays keyed by graph-input name, plus optional ``labels``; or one ``.npy`` array, or a
folder of ``.npy`` files named after the inputs (+ ``labels.npy``). Arrays are read lazily where they lie
uncompressed on disk (``np.save``, ``np.savez``): see ``lazy.py``."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from onnxkd.data.dataset import Dataset
from onnxkd.data.lazy import open_npy, open_npz
from onnxkd.errors import OnnxkdError

LABELS_KEY = "labels"


def load_npz(path: str | Path) -> Dataset:
    path = Path(path)
    try:
        if path.is_dir():
            arrays = {file.stem: open_npy(file) for file in sorted(path.glob("*.npy"))}
        elif path.suffix == ".npy":  # one unnamed array, like np.savez(path, array)
            arrays = {"arr_0": open_npy(path)}
        else:
            arrays = open_npz(path)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        # allow_pickle=False makes object arrays fail here instead of executing pickled code
        reason = "non-numeric (object) array" if "pickle" in str(exc) else str(exc).splitlines()[0][:120]
        raise OnnxkdError(f"{path}: cannot read as .npz ({reason})") from None
    labels = arrays.pop(LABELS_KEY, None)
    if labels is not None and labels.ndim == 0:  # labels=np.int64(3): one value, no sample axis
        raise OnnxkdError(f"{path}: labels: expected a 1-D array of class ids, got shape []")
    labels = None if labels is None else np.asarray(labels[:])  # one int per sample: in memory
    if not arrays:
        held = f"only {LABELS_KEY!r}" if labels is not None else "nothing"
        raise OnnxkdError(f"{path}: holds {held}, no input arrays (one per model input, keyed by the input's name)")
    return Dataset(arrays, labels, str(path))
