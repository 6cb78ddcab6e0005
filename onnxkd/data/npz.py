"""``--data PATH.npz``: arrays keyed by graph-input name, plus optional ``labels``."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from onnxkd.data.dataset import Dataset
from onnxkd.errors import OnnxkdError

LABELS_KEY = "labels"


def load_npz(path: str | Path) -> Dataset:
    path = Path(path)
    try:
        if path.suffix == ".npy":  # one unnamed array, like np.savez(path, array)
            arrays = {"arr_0": np.load(path, allow_pickle=False)}
        else:
            with np.load(path, allow_pickle=False) as archive:
                arrays = {key: archive[key] for key in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        # allow_pickle=False makes object arrays fail here instead of executing pickled code
        reason = "non-numeric (object) array" if "pickle" in str(exc) else str(exc).splitlines()[0][:120]
        raise OnnxkdError(f"{path}: cannot read as .npz ({reason})") from None
    labels = arrays.pop(LABELS_KEY, None)
    if not arrays:
        raise OnnxkdError(f"{path}: no input arrays (only {', '.join(sorted(arrays)) or 'nothing'})")
    return Dataset(arrays, labels, str(path))
