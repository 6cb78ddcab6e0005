"""Images as a data set, decoded when a batch asks for them (in loader workers during distillation).

Two layouts:

- a folder ``DIR/<class>/*.png|jpg`` (the ImageNet layout): class id = index of the sorted folder name; a folder
  of images without class folders gives unlabelled samples;
- a list file (``.csv`` or ``.txt``), one image per line: ``path,label`` or ``path label`` or just ``path``,
  paths relative to the list's folder; a first line whose label is not a number is a header.

Only the file names and labels are held in memory (100,000 images: a few MB); pixels are read, resized and
normalised per batch, so memory does not grow with the number of images.
"""

from __future__ import annotations

import csv
import hashlib
import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from onnxkd.data.dataset import Dataset
from onnxkd.data.lazy import LazyArray
from onnxkd.data.spec import InputSpec
from onnxkd.errors import OnnxkdError

EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff"}
LIST_SUFFIXES = {".csv", ".txt"}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_SIZE = 224


@dataclass(frozen=True)
class ImageOptions:
    size: tuple[int, int] | None = None  # (height, width); None = the model's fixed spatial dims, else 224
    mean: tuple[float, ...] = IMAGENET_MEAN  # applied to pixels scaled to [0, 1]
    std: tuple[float, ...] = IMAGENET_STD
    channel_order: str = "rgb"  # or "bgr"
    layout: str = "nchw"  # or "nhwc"


def load_image_folder(folder: str | Path, spec: InputSpec, options: ImageOptions = ImageOptions()) -> Dataset:
    folder = Path(folder)
    classes = sorted(entry.name for entry in os.scandir(folder) if entry.is_dir())
    # names as plain strings from scandir (a million Path objects would cost hundreds of MB)
    files, labels = [], []
    for label, name in enumerate(classes) if classes else [(-1, "")]:  # no class folders: unlabelled images
        found = sorted(_images_under(folder / name) if name else
                       (entry.path for entry in os.scandir(folder) if _is_image(entry.name)))
        files += found
        labels += [label] * len(found)
    if not files:
        raise OnnxkdError(f"{folder}: no images found (expected {folder}/<class>/*.png|jpg, or images in it)")
    dataset = _image_dataset(files, labels, spec, options, str(folder))
    dataset.classes = tuple(classes) if dataset.labels is not None else None
    return dataset


def align_classes(train: Dataset, val: Dataset) -> Dataset:
    """``val`` with the label ids of ``train``'s class names, where both come from class folders: each folder
    numbers its own sorted names, so a validation folder without one class (or with an empty one) would label
    its samples as the next class. A validation class training has not got is refused."""
    if train.classes is None or val.classes is None or train.classes == val.classes:
        return val
    unknown = [name for name in val.classes if name not in train.classes]
    if unknown:
        raise OnnxkdError(f"{val.source}: class folder {unknown[0]!r} is not among the training data's classes "
                          f"({', '.join(train.classes[:8])}{', ...' if len(train.classes) > 8 else ''}): the class "
                          "ids are taken from the training folders' names")
    ids = np.array([train.classes.index(name) for name in val.classes], dtype=np.int64)
    return replace(val, labels=ids[val.labels], classes=train.classes)


def _images_under(folder: Path):
    """A class folder's images, in its subfolders too (as torchvision's ImageFolder reads them)."""
    for root, _, names in os.walk(folder, followlinks=True):
        yield from (os.path.join(root, name) for name in names if _is_image(name))


def _is_image(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in EXTENSIONS


def load_image_list(path: str | Path, spec: InputSpec, options: ImageOptions = ImageOptions()) -> Dataset:
    """A list file of ``path[,label]`` lines; every listed file must exist (checked now, not mid-training)."""
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise OnnxkdError(f"{path}: cannot read the image list ({exc})") from None
    dialect = "excel" if path.suffix.lower() == ".csv" or "," in text.split("\n", 1)[0] else "excel-tab"
    # (line number, fields) of the non-blank lines: errors name the line of the file
    rows = [(line, row) for line, row in enumerate(csv.reader(_split_spaces(text, dialect), dialect), start=1)
            if row and any(field.strip() for field in row)]
    if rows and _is_header(rows[0][1], path.parent):
        rows = rows[1:]  # a header such as "path,label", or "path" above a list of paths only
    files, labels = [], []
    for line, row in rows:
        if len(row) > 1 and not _is_int(row[1]):
            raise OnnxkdError(f"{path}: line {line}: label {row[1].strip()!r} is not an integer class id")
        files.append(os.path.join(path.parent, row[0].strip()))
        labels.append(int(row[1]) if len(row) > 1 else -1)
    if not files:
        raise OnnxkdError(f"{path}: no images listed (expected lines 'path,label' or 'path')")
    missing = [f for f in files if not os.path.isfile(f)]
    if missing:
        raise OnnxkdError(f"{path}: {len(missing):,} listed image(s) do not exist, e.g. {missing[0]}")
    return _image_dataset(files, labels, spec, options, str(path))


def _is_header(row: list[str], folder: Path) -> bool:
    """A first line naming columns: a label that is not a number, or, in a list of paths only, a name that is
    neither an image file nor a file that exists ("path", "filename")."""
    if len(row) > 1:
        return not _is_int(row[1])
    name = row[0].strip()
    return not _is_image(name) and not os.path.isfile(os.path.join(folder, name))


def _split_spaces(text: str, dialect: str) -> list[str]:
    """Lines of a whitespace-separated list as tab-separated ones (``path label``, as in ImageNet's val lists)."""
    lines = text.splitlines()
    return lines if dialect == "excel" else ["\t".join(line.split(None, 1)) for line in lines]


def _is_int(text: str) -> bool:
    try:
        int(text.strip())
        return True
    except ValueError:
        return False


def _image_dataset(files: list[str], labels: list[int], spec: InputSpec, options: ImageOptions,
                   source: str) -> Dataset:
    height, width = _target_size(spec, options)
    raw = spec.dtype if _takes_raw_pixels(spec, options) else None
    reader = ImageReader(files, height, width, options, grey=_channels(spec, options) == 1, raw=raw)
    channels = reader.channels
    shape = (len(files), channels, height, width) if options.layout == "nchw" else (len(files), height, width, channels)
    pixels = LazyArray(shape, np.float32 if raw is None else raw, reader, source, checked=True)
    labels = np.array(labels, dtype=np.int64)
    if (labels < 0).any():
        if not (labels < 0).all():
            raise OnnxkdError(f"{source}: some images have labels and some do not")
        labels = None
    return Dataset({spec.name: pixels}, labels, source, content=_content(reader, labels))


def _content(reader: "ImageReader", labels: np.ndarray | None) -> str:
    """The files, their labels and how they are preprocessed: images moved between class folders, or other
    --mean/--std/--image-size flags, are other data to --resume (a folder's own mtime does not see the first)."""
    digest = hashlib.sha256(reader.files.tobytes())
    digest.update(b"" if labels is None else labels.tobytes())
    digest.update(repr((reader.options, reader.height, reader.width, reader.grey, str(reader.raw))).encode())
    return digest.hexdigest()


def _target_size(spec: InputSpec, options: ImageOptions) -> tuple[int, int]:
    if spec.rank != 4:
        raise OnnxkdError(f"input {spec.name!r}: an image folder needs a rank-4 input, model expects {spec.describe()}")
    channels_at = {layout: spec.shape[axis] for layout, axis in (("nchw", 1), ("nhwc", 3))}
    other = "nhwc" if options.layout == "nchw" else "nchw"
    if channels_at[options.layout] not in (1, 3, 4) and channels_at[other] in (1, 3):  # a fixed dim says so
        raise OnnxkdError(f"input {spec.name!r} is {spec.describe()}: its channels are where --layout {other} puts "
                          f"them (the images are read as --layout {options.layout}); give --layout {other}")
    if options.size is not None:
        return options.size
    spatial = spec.shape[2:4] if options.layout == "nchw" else spec.shape[1:3]
    if all(isinstance(d, int) for d in spatial):
        return int(spatial[0]), int(spatial[1])
    return DEFAULT_SIZE, DEFAULT_SIZE


def _takes_raw_pixels(spec: InputSpec, options: ImageOptions) -> bool:
    """An integer image input (uint8, as TensorFlow exports and models with their scaling inside take) gets the
    0-255 pixels themselves: scaled and normalised floats would be truncated to 0, 1 and 2 on the way in."""
    if not np.issubdtype(spec.dtype, np.integer):
        return False
    if (options.mean, options.std) != (IMAGENET_MEAN, IMAGENET_STD):
        raise OnnxkdError(f"input {spec.name!r} takes {np.dtype(spec.dtype).name}: images are fed as their 0-255 "
                          f"pixels, and --mean/--std (for float inputs) do not apply; leave them out")
    return True


def _channels(spec: InputSpec, options: ImageOptions) -> int | None:
    dim = spec.shape[1] if options.layout == "nchw" else spec.shape[3]
    return dim if isinstance(dim, int) else None


class ImageReader:
    """Row indices -> decoded, resized, normalised images in the model's layout. Holds file names only, so a
    copy of it in every loader worker costs nothing."""

    def __init__(self, files: list[str], height: int, width: int, options: ImageOptions, grey: bool,
                 raw: np.dtype | None = None):
        self.raw = raw  # the integer dtype of an input that takes the pixels as they are (no scaling)
        # one block of fixed-width byte strings (a million names: tens of MB, one object to pickle to a worker)
        self.files = np.array([os.fsencode(f) for f in files], dtype=bytes)
        self.height, self.width, self.options, self.grey = height, width, options, grey
        self.channels = 1 if grey else 3
        self.cache = None  # a DecodedCache (decoded.py) once a run gives it a folder
        mean, std = np.asarray(options.mean, np.float32), np.asarray(options.std, np.float32)
        for flag, values in (("--mean", mean), ("--std", std)):
            if not grey and values.size not in (1, 3):  # (a grey model takes the mean of any number)
                raise OnnxkdError(f"{flag} {','.join(f'{v:g}' for v in values.ravel())}: {values.size} values for "
                                  "3 colour channels; give 1 or 3")
        if grey:  # a one-channel model: the mean of several --mean/--std values is used for its one channel
            mean, std = mean.mean(keepdims=True), std.mean(keepdims=True)
        # (pixel / 255 - mean) / std as one multiply-add per value
        self.scale, self.shift = 1.0 / (255.0 * std), -mean / std

    def __call__(self, index: np.ndarray) -> np.ndarray:
        index = np.asarray(index, dtype=np.int64)
        pixels = np.empty((len(index), self.height, self.width, self.channels), np.uint8)
        cached = self.cache.read(index, pixels) if self.cache is not None else np.zeros(len(index), bool)
        for row in np.flatnonzero(~cached):
            pixels[row] = self._decode(os.fsdecode(self.files[index[row]]))
        if self.cache is not None and not cached.all():
            self.cache.write(index[~cached], pixels[~cached])
        if self.options.channel_order == "bgr":
            pixels = pixels[..., ::-1]
        if self.options.layout == "nchw":
            pixels = pixels.transpose(0, 3, 1, 2)
        if self.raw is not None:
            return np.ascontiguousarray(pixels, dtype=self.raw)
        if self.options.layout == "nchw":
            scale, shift = self.scale[:, None, None], self.shift[:, None, None]
        else:
            scale, shift = self.scale, self.shift
        if self.options.channel_order == "bgr":
            scale, shift = scale[::-1], shift[::-1]
        # one pass from uint8 to the normalised floats, written in the model's layout
        out = np.empty(pixels.shape, np.float32)
        np.multiply(pixels, scale, out=out)
        out += shift
        return out

    def _decode(self, path: str) -> np.ndarray:
        """[H, W, C] pixels, uint8."""
        from PIL import Image  # pillow ships with matplotlib; imported here so `onnxkd.data` stays light

        mode, size = ("L" if self.grey else "RGB"), (self.width, self.height)
        try:
            with Image.open(path) as image:
                image.draft(mode, size)  # JPEG: decode at a reduced scale when the image is much larger
                if image.mode != mode:
                    image = image.convert(mode)
                if image.size != size:  # already the model's size: no resampling pass
                    image = image.resize(size, Image.BILINEAR)
                pixels = np.asarray(image)
        except (OSError, ValueError, SyntaxError) as exc:  # PIL's errors for corrupt, truncated and odd files
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise OnnxkdError(f"{path}: cannot read image ({reason})") from None
        return pixels[..., None] if self.grey else pixels
