"""``--data DIR``: an image folder ``DIR/<class>/*.png|jpg``; class id = index of the sorted folder name."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from onnxkd.data.dataset import Dataset
from onnxkd.data.spec import InputSpec
from onnxkd.errors import OnnxkdError

EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp"}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ImageOptions:
    size: tuple[int, int] | None = None  # (height, width); None = the model's fixed spatial dims, else 224
    mean: tuple[float, ...] = IMAGENET_MEAN  # applied to pixels scaled to [0, 1]
    std: tuple[float, ...] = IMAGENET_STD
    channel_order: str = "rgb"  # or "bgr"
    layout: str = "nchw"  # or "nhwc"


def load_image_folder(folder: str | Path, spec: InputSpec, options: ImageOptions = ImageOptions()) -> Dataset:
    folder = Path(folder)
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
    files = [(f, label) for label, name in enumerate(classes) for f in sorted((folder / name).iterdir())
             if f.suffix.lower() in EXTENSIONS]
    if not files:
        raise OnnxkdError(f"{folder}: no images found (expected {folder}/<class>/*.png|jpg)")
    height, width = _target_size(spec, options)
    grey = _channels(spec, options) == 1
    images = np.stack([_load_one(path, height, width, options, grey) for path, _ in files])
    if options.layout == "nchw":
        images = images.transpose(0, 3, 1, 2)
    labels = np.array([label for _, label in files], dtype=np.int64)
    return Dataset({spec.name: np.ascontiguousarray(images)}, labels, str(folder))


def _target_size(spec: InputSpec, options: ImageOptions) -> tuple[int, int]:
    if spec.rank != 4:
        raise OnnxkdError(f"input {spec.name!r}: an image folder needs a rank-4 input, model expects {spec.describe()}")
    if options.size is not None:
        return options.size
    spatial = spec.shape[2:4] if options.layout == "nchw" else spec.shape[1:3]
    if all(isinstance(d, int) for d in spatial):
        return int(spatial[0]), int(spatial[1])
    return 224, 224


def _channels(spec: InputSpec, options: ImageOptions) -> int | None:
    dim = spec.shape[1] if options.layout == "nchw" else spec.shape[3]
    return dim if isinstance(dim, int) else None


def _load_one(path: Path, height: int, width: int, options: ImageOptions, grey: bool) -> np.ndarray:
    """[H, W, C] pixels in [0, 1], normalised; a one-channel model reads grey images (the mean of several
    --mean/--std values is used for its one channel)."""
    from PIL import Image  # pillow ships with matplotlib; imported here so `onnxkd.data` stays light

    try:
        with Image.open(path) as image:
            converted = image.convert("L" if grey else "RGB").resize((width, height), Image.BILINEAR)
            pixels = np.asarray(converted, dtype=np.float32)
    except OSError as exc:
        raise OnnxkdError(f"{path}: cannot read image ({exc})") from None
    mean, std = np.asarray(options.mean, np.float32), np.asarray(options.std, np.float32)
    if grey:
        pixels, mean, std = pixels[..., None], mean.mean(keepdims=True), std.mean(keepdims=True)
    pixels = pixels / 255.0
    pixels = (pixels - mean) / std
    if options.channel_order == "bgr":
        pixels = pixels[..., ::-1]
    return pixels
