"""Teacher files in the formats users bring (issue 18), built once a session by ``build_teachers``.

Every kind is a real file on disk laid out as its exporter lays it out: torch's default export (dynamo, weights
in ``t.onnx.data``) with a fixed and with a dynamic batch; a legacy (TorchScript) export with a dynamic batch;
dynamic batch and spatial dims named the way PaddlePaddle and tf2onnx name them (``p2o.DynamicDimension.0``,
``unk__12``, ``?``) or written as ``-1``; external data in one file per tensor and in a subfolder; a model whose
output is a saturated sigmoid map; two ONNX-zoo light models (fixed shapes, no data).

Each teacher lives alone in its own folder, so a test can hash every file of it before and after a command.
Classifier data are labelled with the teacher's own argmax, so accuracy figures mean something.
"""

from __future__ import annotations

import contextlib
import io
import logging
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from light_models import light_model_path
from models import randomise_batchnorm

TRAIN, VAL = 64, 32
IMAGE = (16, 16)  # the spatial size of the exports' example input
DATA_IMAGE = (20, 24)  # what dynamic-spatial kinds get as data: not the export's size, and not square
CLASSES = 10


@dataclass(frozen=True)
class Teacher:
    kind: str
    model: Path  # the .onnx file
    input_name: str
    train: Path | None = None  # .npz keyed by input name (+ labels for classifiers); None: no data (light models)
    val: Path | None = None
    sample_shape: tuple[int, ...] = ()  # one sample of the data (or the model's fixed input without the batch)
    fixed_batch: int | None = None  # dim 0 when the model fixes it
    dynamic_spatial: bool = False  # dims other than the batch are dynamic: without data they need --input-shape
    classifier: bool = True
    macs_per_sample: int | None = None  # Conv/Gemm/MatMul multiply-accumulates of one sample of the data, by hand
    export_dims: tuple = ()  # the input dims as the file declares them (inspect must show them so)

    @property
    def folder(self) -> Path:
        return self.model.parent

    def feeds(self) -> list[dict[str, np.ndarray]]:
        """Inputs to run the teacher and its outputs on: a small batch of the data (the declared batch where the
        model fixes it; random inputs for the light models), and where the spatial dims are dynamic, a batch of
        another size than the data's too (an output must keep them dynamic, not bake in the data's)."""
        rng = np.random.default_rng(0)
        if self.val is None:
            batch = self.fixed_batch or 1
            return [{self.input_name: rng.standard_normal((batch, *self.sample_shape)).astype(np.float32)}]
        feeds = [{self.input_name: np.load(self.val)[self.input_name][: self.fixed_batch or 2]}]
        if self.dynamic_spatial:
            feeds.append({self.input_name: rng.standard_normal((3, self.sample_shape[0], 12, 28)).astype(np.float32)})
        return feeds


# --------------------------------------------------------------------------- the networks


class TinyClassifier(nn.Module):
    """Conv 3->32, BN, ReLU, a residual conv block, global pool, Linear to 10. Any spatial size fits (the pool is
    a mean over H and W), so the same network exports with fixed or dynamic spatial dims. 32 channels: round-to
    16 still cuts them in half."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU())
        self.block = nn.Sequential(nn.Conv2d(32, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU())
        self.head = nn.Linear(32, CLASSES)

    def forward(self, x):
        y = self.stem(x)
        y = y + self.block(y)
        return self.head(y.mean((2, 3)))

    @staticmethod
    def macs(h: int, w: int) -> int:
        return 32 * 3 * 9 * h * w + 32 * 32 * 9 * h * w + 32 * CLASSES


class SigmoidMap(nn.Module):
    """A text-detector-like map: conv encoder with a written-out hard-swish (so ``optimize`` has something to
    fuse and its check compares two different graphs), then a 1x1 conv whose bias of -15 saturates the Sigmoid
    near 3e-7 everywhere. onnxruntime's Sigmoid resolves steps of 2^-25 (3e-8) there, so wherever float rounding
    moves a pixel across a step the fused and unfused graphs differ by 3e-8 of 3e-7, a 10% *relative* error:
    the trap for an equivalence check (whether a pixel crosses depends on the weights and the CPU's kernels).
    32 channels, so that round-to 16 still cuts them."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 32, 3, padding=1)
        self.head = nn.Conv2d(32, 1, 1)
        with torch.no_grad():
            self.head.weight.mul_(0.3)
            self.head.bias.fill_(-15.0)

    def forward(self, x):
        y = self.conv1(x)
        y = y * torch.clamp(y + 3, 0, 6) / 6  # hard-swish as older code writes it
        y = torch.relu(self.conv2(y))
        return torch.sigmoid(self.head(y))

    @staticmethod
    def macs(h: int, w: int) -> int:
        return 32 * 3 * 9 * h * w + 32 * 32 * 9 * h * w + 32 * h * w


@contextlib.contextmanager
def _quiet():
    """The exporters print progress ("[torch.onnx] Obtain model graph ...") and warnings: not the tests' output."""
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
            contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def _legacy_export(model: nn.Module, path: Path, axes: dict[int, str]) -> None:
    with _quiet():
        torch.onnx.export(model, (torch.randn(2, 3, *IMAGE),), str(path), dynamo=False, opset_version=17,
                          input_names=["x"], output_names=["y"], dynamic_axes={"x": axes, "y": {0: axes[0]}})


def _rename_dims(path: Path, out: Path, input_dims: dict[int, str | int], output_batch: str | int) -> None:
    """Rewrite the declared dims of input x (and the batch dim of every output) as another exporter writes them:
    a string becomes a dim_param, -1 a dim_value. Intermediate value_info is dropped (it named torch's dims)."""
    model = onnx.load(str(path))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    for axis, new in input_dims.items():
        _set_dim(dims[axis], new)
    for output in model.graph.output:
        _set_dim(output.type.tensor_type.shape.dim[0], output_batch)
    del model.graph.value_info[:]
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(out))


def _declared(path: Path) -> tuple[str, tuple]:
    """The first fed input's name and declared dims (old exporters also list initializers as inputs)."""
    graph = onnx.load(str(path), load_external_data=False).graph
    weights = {init.name for init in graph.initializer}
    value = next(v for v in graph.input if v.name not in weights)
    return value.name, tuple(d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim)


def _external_locations(path: Path) -> set[str]:
    model = onnx.load(str(path), load_external_data=False)
    return {entry.value for tensor in model.graph.initializer for entry in tensor.external_data
            if entry.key == "location"}


def _set_dim(dim, new: str | int) -> None:
    dim.Clear()
    if isinstance(new, str):
        dim.dim_param = new
    else:
        dim.dim_value = new


# --------------------------------------------------------------------------- data


def _save_data(folder: Path, kind: str, model: nn.Module, input_name: str, shape: tuple[int, ...],
               classifier: bool) -> tuple[Path, Path]:
    x = torch.randn(TRAIN + VAL, *shape, generator=torch.Generator().manual_seed(1))
    arrays = {input_name: x.numpy()}
    if classifier:
        with torch.no_grad():
            arrays["labels"] = model(x).argmax(1).numpy().astype(np.int64)
    train, val = folder / f"{kind}_train.npz", folder / f"{kind}_val.npz"
    np.savez(train, **{k: v[:TRAIN] for k, v in arrays.items()})
    np.savez(val, **{k: v[TRAIN:] for k, v in arrays.items()})
    return train, val


# --------------------------------------------------------------------------- the kinds

KINDS = ("torch-default-fixed", "torch-default-dynamic-batch", "torch-legacy-dynamic-batch", "exporter-dim-names",
         "minus-one-dims", "external-per-tensor", "external-subfolder", "sigmoid-map")
LIGHT = ("squeezenet", "shufflenet")  # the smallest of the ONNX-zoo light models that prune and run quickly


def build_teachers(root: Path, net: nn.Module | None = None, seg: nn.Module | None = None,
                   save_data=None) -> dict[str, Teacher]:
    """Every kind of teacher file under ``root/models/<kind>/`` and its data under ``root/data/``.

    By default the networks have random weights and the data are random inputs labelled by the teacher;
    ``benchmarks/export_formats.py`` passes trained ``net`` (a ``TinyClassifier``) and ``seg`` (a ``SigmoidMap``)
    and ``save_data``, which writes real samples with ``_save_data``'s signature."""
    save_data = save_data or _save_data
    models, data = root / "models", root / "data"
    data.mkdir(parents=True)
    for kind in KINDS:
        (models / kind).mkdir(parents=True)
    scratch = root / "scratch"
    scratch.mkdir()
    torch.manual_seed(0)
    net = net.eval() if net is not None else randomise_batchnorm(TinyClassifier())
    example = torch.randn(2, 3, *IMAGE)
    teachers: dict[str, Teacher] = {}

    def classifier(kind: str, path: Path, input_name: str, *, spatial=IMAGE, dynamic_spatial=False,
                   fixed_batch=None) -> None:
        sample = (3, *spatial)
        train, val = save_data(data, kind, net, input_name, sample, classifier=True)
        teachers[kind] = Teacher(kind, path, input_name, train, val, sample, fixed_batch, dynamic_spatial,
                                 macs_per_sample=TinyClassifier.macs(*spatial), export_dims=_declared(path)[1])

    # torch's default export: exactly what `torch.onnx.export(m, (x,), path)` writes (dynamo, t.onnx + t.onnx.data)
    with _quiet():
        torch.onnx.export(net, (example,), str(models / "torch-default-fixed" / "t.onnx"))
        torch.onnx.export(net, (example,), str(models / "torch-default-dynamic-batch" / "t.onnx"),
                          dynamic_shapes={"x": {0: torch.export.Dim("batch")}})
    classifier("torch-default-fixed", models / "torch-default-fixed" / "t.onnx", "x", fixed_batch=2)
    classifier("torch-default-dynamic-batch", models / "torch-default-dynamic-batch" / "t.onnx", "x")

    _legacy_export(net, models / "torch-legacy-dynamic-batch" / "t.onnx", {0: "batch"})
    classifier("torch-legacy-dynamic-batch", models / "torch-legacy-dynamic-batch" / "t.onnx", "x")

    # dynamic batch and spatial dims: a legacy export with all three dynamic, renamed as other exporters name them
    _legacy_export(net, scratch / "nhw.onnx", {0: "N", 2: "H", 3: "W"})
    _rename_dims(scratch / "nhw.onnx", models / "exporter-dim-names" / "t.onnx",
                 {0: "p2o.DynamicDimension.0", 2: "unk__12", 3: "?"}, output_batch="unk__13")
    classifier("exporter-dim-names", models / "exporter-dim-names" / "t.onnx", "x", spatial=DATA_IMAGE,
               dynamic_spatial=True)
    _rename_dims(scratch / "nhw.onnx", models / "minus-one-dims" / "t.onnx", {0: -1, 2: -1, 3: -1}, output_batch=-1)
    classifier("minus-one-dims", models / "minus-one-dims" / "t.onnx", "x", spatial=DATA_IMAGE, dynamic_spatial=True)

    # external data laid out other ways: one file per tensor, and one file in a subfolder. onnx's default
    # size_threshold (1 KB) keeps small tensors inline, as files made this way have them: with 0 the ReduceMean's
    # axes would go out too, and onnxruntime itself refuses such a file (it needs the axes for shape inference).
    default = onnx.load(str(models / "torch-default-dynamic-batch" / "t.onnx"))  # weights read in
    onnx.save_model(default, str(models / "external-per-tensor" / "t.onnx"), save_as_external_data=True,
                    all_tensors_to_one_file=False)
    classifier("external-per-tensor", models / "external-per-tensor" / "t.onnx", "x")
    default = onnx.load(str(models / "torch-default-dynamic-batch" / "t.onnx"))
    (models / "external-subfolder" / "weights").mkdir()
    onnx.save_model(default, str(models / "external-subfolder" / "t.onnx"), save_as_external_data=True,
                    all_tensors_to_one_file=True, location="weights/model.bin")
    classifier("external-subfolder", models / "external-subfolder" / "t.onnx", "x")
    assert len(_external_locations(models / "external-per-tensor" / "t.onnx")) > 1  # laid out as intended
    assert len(_external_locations(models / "external-subfolder" / "t.onnx")) == 1

    # a saturated sigmoid map (no labels: distillation matches the map with MSE)
    torch.manual_seed(0)
    untrained = seg is None
    seg = (SigmoidMap() if untrained else seg).eval()
    _legacy_export(seg, models / "sigmoid-map" / "t.onnx", {0: "batch"})
    train, val = save_data(data, "sigmoid-map", seg, "x", (3, *IMAGE), classifier=False)
    if untrained:
        with torch.no_grad():
            assert seg(torch.from_numpy(np.load(val)["x"])).max() < 1e-5  # saturated: the trap stays set
    teachers["sigmoid-map"] = Teacher("sigmoid-map", models / "sigmoid-map" / "t.onnx", "x", train, val,
                                      (3, *IMAGE), classifier=False, macs_per_sample=SigmoidMap.macs(*IMAGE),
                                      export_dims=_declared(models / "sigmoid-map" / "t.onnx")[1])

    # the ONNX-zoo light models (fixed batch-1 shapes), copied so each sits alone in its folder
    for name in LIGHT:
        kind = f"light-{name}"
        (models / kind).mkdir()
        path = models / kind / "t.onnx"
        shutil.copy(light_model_path(name), path)
        name, dims = _declared(path)
        teachers[kind] = Teacher(kind, path, name, sample_shape=dims[1:], fixed_batch=dims[0], export_dims=dims)

    shutil.rmtree(scratch)
    return teachers
