"""100,000 image files are opened and read through loader workers with memory that does not grow with them."""

from __future__ import annotations

import tracemalloc

import numpy as np
import torch
from PIL import Image

from onnxkd.data import InputSpec, load_data
from onnxkd.distill.batches import Batches
from onnxkd.distill.loader import Loader

FILES = 100_000
CLASSES = 10


def test_a_hundred_thousand_tiny_files_are_read_with_bounded_memory(tmp_path):
    """Held in memory, the 100,000 decoded 3x16x16 images would take 293 MiB; opening the folder and reading a
    whole epoch through 2 workers peaks at a few MiB of the training process's Python memory (the file names),
    and every image is read once per epoch."""
    import io

    pixels = np.arange(16 * 16 * 3, dtype=np.uint8).reshape(16, 16, 3)
    encoded = io.BytesIO()
    Image.fromarray(pixels).save(encoded, format="PNG")
    for label in range(CLASSES):
        folder = tmp_path / f"class{label}"
        folder.mkdir()
        for i in range(FILES // CLASSES):
            (folder / f"{i:05d}.png").write_bytes(encoded.getvalue())
    spec = InputSpec("x", np.dtype(np.float32), ("batch", 3, 16, 16))

    tracemalloc.start()
    data = load_data(tmp_path, [spec])
    batches = Batches(Loader(data, ["x"], torch.device("cpu"), workers=2), 500, seed=0)
    seen = np.zeros(FILES, dtype=np.int64)
    first = None
    for batch in batches.epoch(0):
        seen[batch.indices] += 1
        first = batch.inputs[0][0] if first is None else first
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()

    in_memory = FILES * 3 * 16 * 16 * 4
    assert len(data) == FILES and np.bincount(data.labels).tolist() == [FILES // CLASSES] * CLASSES
    assert (seen == 1).all()
    assert peak < 48 * 2**20 < in_memory / 6, f"peak {peak / 2**20:.1f} MiB"
    expected = (pixels / 255.0 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    np.testing.assert_allclose(first.numpy(), expected.transpose(2, 0, 1), rtol=1e-5, atol=1e-5)
