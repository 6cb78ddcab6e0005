"""int8 post-training quantization: `onnxkd.quantize` against onnxruntime's own `quantize_static` with its
default settings (the peer), timed and scored by this benchmark, not by onnxkd.

Models (each row one float ONNX file):

- TRAINED CNNs (benchmarks/int8_models.py): the zoo's ResNet and MobileNetV2 (tests/models.py, 10 classes as
  built there: narrow test stand-ins of 16-64 channels), a VGG-like conv stack, and ResNet-18 and MobileNetV2
  at their published widths (64-512 and 32-1,280 channels) defined there, each trained with plain torch on a synthetic 10-class
  image task (oriented stripes under colour/contrast jitter, a distractor grating, clutter, occlusion and pixel
  noise: 94-97% held-out accuracy at 64x64, not 100%) at 64x64, exported with the legacy exporter (BatchNorm
  folded) at 64x64 and, the same weights (global average pooling), at 128x128 or 224x224. Training is cached
  (--cache).
- a TRAINED transformer (benchmarks/int8_text.py): BERT-small's widths (4 layers, 512 wide, 8 heads) on 64 tokens,
  trained on a synthetic 5-class token task (find and count the class's signal ids through a padding mask) and
  measured on 1,000 held-out sequences;
- the zoo's BERT and GPT on 12 tokens (random weights, as before);
- the digits example (examples/digits), and the same CNN with one channel of its first convolution scaled x200
  and the next convolution scaled back (tests/quantize/outliers.py: the function is unchanged, the activation
  range is not): the model plain PTQ loses points on, kept as the reference QAD row;
- ONNX-zoo architectures from the onnx package's "light" test models (onnx/backend/test/data/light). These
  ship with every weight a ConstantOfShape filled with 0.02 (all logits equal, nothing to agree on) at opset 9,
  which onnxkd refuses. This benchmark turns each ConstantOfShape into a seeded random initializer (He-normal
  conv/Gemm weights, BatchNorm statistics around 1 and 0), drops a trailing Softmax and upgrades the model to
  opset 13 with onnx's version converter: the architecture and graph as the zoo wrote them, random weights.
  Their batch is fixed at 1 (Reshape to [1, C]), so they have no batch-8 figure. By default four rows that take
  over about a minute here are left out (resnet-224, vgg-224, light-resnet50, light-densenet121: pass them to
  --models); the standard-width ResNet-18 and MobileNetV2 rows take 2-5 minutes each and stay in: the speed
  goal is about such models.

Data, labelled rows: onnxkd is given a dict with "labels" (its accuracy budget is then in accuracy points): the
trained rows their task's calibration pool (628 samples: it calibrates on 128 and checks its budget on the other 500),
the digits rows examples/digits/train.npz (128 + 500); the peer calibrates on 128 of the same samples. Every
accuracy figure is measured by this benchmark with onnxruntime on held-out data neither saw: the task's test split
(1,000 images at the row's size) or val.npz (360 digits).

Data, random-weight rows (transformers, light models): 256 random inputs of the input shape (token ids uniform
over the vocabulary; images: a smooth random field with a per-sample colour offset and contrast plus pixel
noise): onnxkd calibrates on 128 and checks its budget on the other 128, the peer calibrates on the first 128
(light models: 64 + 100 and 64); quality is top-1 agreement with the fp32 model on other random inputs (128, or
64 at 224x224). For the light models the classifier's bias is lowered by its mean logit over 32 calibration
inputs (a constant per class: graph and cost unchanged), so that the top-1 of a random network depends on its
input; agreement on these rows is a harsher test than a trained model's accuracy: read them as a stress test.

onnxkd: `onnxkd.quantize(model, data, threads=2, provider="cpu")` with default settings (auto activation type:
uint8 on x86, per-channel int8 weights, its default calibration method, accuracy budget 1 point, keeps int8
only where it measured it faster, else returns the float model); where that raises, the row is retried with
calibration="minmax" and says so. The peer: `quant_pre_process` then `quantize_static(pre, out, reader)` with
nothing else set: QDQ, int8 activations and weights, per-tensor, MinMax.

Where onnxkd found int8 faster but over its accuracy budget (it then returns the float model, or int8 with nodes
back in float), it is run once more with max_accuracy_drop=1.0 and that int8 model is measured too ("without the
budget", plain PTQ: nothing goes back to float for accuracy): the speed onnxkd's int8 gives, and what the budget
saved. On labelled rows "PTQ loss" is this plain-PTQ model's held-out loss (the onnxkd model itself where nothing
went back to float for accuracy).

QAD (quantization-aware distillation) runs on every labelled row whose plain PTQ loses >= 1 point on the held-out
data, and on the digits outlier row: `onnxkd.quantize(model, data, refine=qad_refiner(model, epochs=15,
device="cpu"))` (default budget 1 point) with the training data added to the data (trained CNNs: the calibration
pool plus --qad-images training images, 1,000 by default at 64x64 and as many pixels at larger sizes, since one
QAD epoch over all 4,000 took 54 s on the ResNet here; BERT-small: the pool plus --qad-images training sequences;
digits: train.npz; onnxkd trains on all but its 500 budget samples), next to
plain PTQ (max_accuracy_drop=1.0) on the same data; the column gives both held-out losses. onnxkd calls the
refiner only when PTQ is over its budget on its own 500 samples, and keeps the QAD model only when it is within
the budget there (else the accuracy control runs on the PTQ model): the column says which.

The machine may be shared: before each row's timing the benchmark waits (up to --quiet seconds) until other
processes use under 15% of the CPUs, measures the share they took while it timed (others' CPU column), and
times the row once more when that was over 15%, keeping the quieter of the two.

Speed: fp32, onnxkd's result and the peer's model, each in its own onnxruntime CPU session (2 intra-op threads,
1 inter-op, all graph optimisations, thread-pool spinning stopped after each run so that one session's
spinning workers do not steal the cores of the next one), run on the same input batch, interleaved in rotating
order after warm-up, in turns of about 250 ms per model (the first run of each untimed); each figure is median(fp32) / median(model) over >= --runs timed runs per model (more, up
to 5x, while the per-batch time budget lasts). When onnxkd kept the float model its speed-up is 1.00x by
construction and not timed. Quality lost: held-out accuracy points (labelled rows), else 100 x (1 - top-1
agreement with fp32, over the last axis: per token for GPT), else the relative L2 error of the outputs in percent.
The summary checks the goals: median batch-8 speed-up of what onnxkd wrote over the trained CNN rows >= 2.0x
(also given apart for the standard-width and the zoo's narrow rows),
never slower (>= 1.00x on every row and batch), what onnxkd wrote loses <= 1 held-out point on the trained rows,
and QAD loses <= 0.3 points on every row whose plain PTQ loses >= 1.

    python benchmarks/int8.py [--models resnet-64,gpt,...] [--quick] [--runs 20] [--markdown FILE] [--cache DIR]

Prints one table, a summary and the command that made it (progress goes to stderr).
"""

from __future__ import annotations

import argparse
import logging
import os
import resource
import statistics
import sys
import tempfile
import time
import warnings
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import numpy_helper
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
import models  # noqa: E402  (the architecture zoo lives with the tests)
from light_models import light_model_path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import int8_models  # noqa: E402  (the trained CNNs and their task)
import int8_text  # noqa: E402  (the trained transformer and its task)

import onnxkd  # noqa: E402
from onnxkd.model import save as save_model  # noqa: E402
from onnxkd.validate.environment import cpu_model  # noqa: E402

DIGITS = ROOT / "examples" / "digits"
THREADS = 2
CALIBRATION, ONNXKD_EVAL = 128, 128  # random-input rows: samples onnxkd calibrates on / checks its budget on
QAD_EPOCHS, QAD_IMAGES = 15, 1000
DEFAULT_CACHE = Path(tempfile.gettempdir()) / "onnxkd-int8-cache"
LIGHT_CALIBRATION, LIGHT_EVAL = 64, 100


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- the models


def light_model(name: str, folder: Path, seed: int = 0) -> Path:
    """The ONNX-zoo light model with its ConstantOfShape weights made seeded random initializers, at opset 13."""
    from onnx import version_converter

    model = onnx.load(str(light_model_path(name)))
    graph = model.graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    for node in graph.node:
        for index, name_in in enumerate(node.input):
            consumers[name_in].append((node, index))
    rng = np.random.default_rng(seed)

    def role(tensor: str) -> tuple[str, int, onnx.NodeProto | None]:
        users = consumers.get(tensor, [])
        if len(users) != 1:
            return "", -1, None
        node, index = users[0]
        if node.op_type == "Unsqueeze":  # densenet: BN scale/shift as Unsqueeze -> Mul / Add
            return role(node.output[0])
        return node.op_type, index, node

    def weight(shape: tuple[int, ...], fill: float, tensor: str) -> np.ndarray:
        op, index, node = role(tensor)
        if op in ("Conv", "Gemm") and index == 1:
            trans_b = any(a.name == "transB" and a.i for a in node.attribute) if op == "Gemm" else True
            fan_in = int(np.prod(shape[1:])) if trans_b else shape[0]
            return rng.normal(0, np.sqrt(2.0 / fan_in), shape)
        if op in ("Conv", "Gemm") and index == 2:
            return rng.uniform(-0.1, 0.1, shape)
        if op == "BatchNormalization":
            low, high = {1: (0.5, 1.5), 2: (-0.2, 0.2), 3: (-0.5, 0.5), 4: (0.5, 1.5)}[index]
            return rng.uniform(low, high, shape)
        if op == "Mul":
            return rng.uniform(0.5, 1.5, shape)
        if op == "Add":
            return rng.uniform(-0.2, 0.2, shape)
        return np.full(shape, fill)

    kept, shape_inputs = [], set()
    for node in graph.node:
        if node.op_type == "ConstantOfShape" and node.input[0] in inits:
            value = numpy_helper.to_array(next(a.t for a in node.attribute if a.name == "value"))
            shape = tuple(int(d) for d in inits[node.input[0]])
            array = weight(shape, float(value.ravel()[0]), node.output[0]).astype(value.dtype)
            graph.initializer.append(numpy_helper.from_array(array, node.output[0]))
            shape_inputs.add(node.input[0])
        else:
            kept.append(node)
    del graph.node[:]
    graph.node.extend(kept)
    still_used = {i for node in graph.node for i in node.input}
    for init in [i for i in graph.initializer if i.name not in still_used]:
        graph.initializer.remove(init)
    # a trailing Softmax goes: with random weights its 1,000 probabilities are all near 1/1000, which a uint8
    # output (step 1/256) rounds to 0 however well the logits are kept
    last = next((n for n in graph.node if graph.output[0].name in n.output), None)
    if last is not None and last.op_type == "Softmax":
        graph.output[0].name = last.input[0]
        graph.node.remove(last)
    # IR 3 (these files) lists every initializer as a graph input too: IR 7 (opset 13's) lets weights be weights
    weights = {i.name for i in graph.initializer}
    for value in [i for i in graph.input if i.name in weights or i.name in shape_inputs]:
        graph.input.remove(value)
    model.ir_version = 7
    model = version_converter.convert_version(model, 13)
    onnx.checker.check_model(model)
    path = folder / f"light-{name}.onnx"
    onnx.save(model, str(path))
    return path


PASS_THROUGH = ("Softmax", "Reshape", "Flatten", "Identity", "GlobalAveragePool", "AveragePool", "Relu", "Squeeze",
                "Dropout")


def centre_classifier(path: Path, input_name: str, samples: np.ndarray, out: Path) -> Path:
    """The model with its classifier's bias lowered by its mean logit over ``samples`` (per class).

    A CNN with random weights gives random inputs all the same top-1 class (post-ReLU features share a large
    mean that the classifier maps to one class), so top-1 agreement with fp32 would be 100% whatever int8
    does. Subtracting each class's mean logit (a constant per class) leaves the input-dependent part to decide
    the top-1, as in a trained classifier; the graph and its cost are unchanged."""
    model = onnx.load(str(path))
    graph = model.graph
    producers = {o: n for n in graph.node for o in n.output}
    inits = {i.name: i for i in graph.initializer}
    tensor = graph.output[0].name
    while True:
        node = producers[tensor]
        if node.op_type in ("Gemm", "Conv") and len(node.input) > 2 and node.input[2] in inits:
            bias, axis = node.input[2], (1 if node.op_type == "Conv" else -1)
            break
        if node.op_type == "Add" and any(i in inits for i in node.input):
            bias, axis = next(i for i in node.input if i in inits), -1
            break
        if node.op_type not in PASS_THROUGH:
            raise ValueError(f"{path.name}: no classifier bias found before the output ({node.op_type})")
        tensor = node.input[0]
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    del probe.graph.output[:]
    probe.graph.output.append(onnx.helper.make_tensor_value_info(node.output[0], onnx.TensorProto.FLOAT, None))
    options = ort.SessionOptions()
    options.log_severity_level = 3
    sess = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
    fixed = sess.get_inputs()[0].shape[0] == 1
    logits = np.concatenate([sess.run(None, {input_name: samples[i:i + 1 if fixed else i + 8]})[0]
                             for i in range(0, len(samples), 1 if fixed else 8)])
    logits = np.moveaxis(logits, axis, -1).reshape(-1, logits.shape[axis])
    value = numpy_helper.to_array(inits[bias])
    centred = (value - logits.mean(0).reshape(value.shape)).astype(value.dtype)
    inits[bias].CopyFrom(numpy_helper.from_array(centred, bias))
    onnx.save(model, str(out))
    return out


@dataclass
class Prepared:
    path: Path
    input_name: str
    onnxkd_data: object  # what onnxkd.quantize is given
    peer_calibration: np.ndarray  # samples the peer calibrates on
    eval_inputs: np.ndarray  # the samples every quality figure is measured on
    labels: np.ndarray | None = None
    batches: tuple[int, ...] = (1, 8)
    options: dict = field(default_factory=dict)  # onnxkd.quantize options beyond the defaults
    qad_data: Callable[[], object] | None = None  # the data QAD is given (with training samples); None: onnxkd_data
    force_qad: bool = False  # QAD whatever plain PTQ loses (the digits outlier row)
    trained: dict | None = None  # the training record of a trained CNN


def random_rows(kind: str, shape: tuple[int, ...], count: int, seed: int) -> np.ndarray:
    """Token ids uniform over the zoo's vocabulary of 50, or random images: a smooth field (4x4 Gaussian
    noise, bicubic-upsampled) with a per-sample offset per channel and contrast, plus pixel noise. White noise
    alone averages out in global pooling: every sample then gives nearly the same logits."""
    rng = np.random.default_rng(seed)
    if kind == "tokens":
        return rng.integers(0, 50, (count, *shape)).astype(np.int64)
    channels, height, width = shape
    coarse = torch.from_numpy(rng.standard_normal((count, channels, 4, 4)).astype(np.float32))
    smooth = nn.functional.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=False).numpy()
    offset = rng.normal(0, 0.5, (count, channels, 1, 1))
    contrast = rng.uniform(0.5, 1.5, (count, 1, 1, 1))
    return (offset + contrast * smooth + 0.3 * rng.standard_normal((count, *shape))).astype(np.float32)


def random_case(path: Path, input_name: str, kind: str, shape: tuple[int, ...], eval_count: int) -> Prepared:
    data = random_rows(kind, shape, CALIBRATION + ONNXKD_EVAL, seed=0)
    if kind == "image":
        path = centre_classifier(path, input_name, data[:32], path.with_name(path.stem + "-centred.onnx"))
    return Prepared(path, input_name, {input_name: data}, data[:CALIBRATION],
                    random_rows(kind, shape, eval_count, seed=1))


def zoo_case(name: str) -> Callable[[Path, argparse.Namespace], Prepared]:
    """A zoo transformer with random weights, on random token ids."""
    def build(folder: Path, args: argparse.Namespace) -> Prepared:
        path = models.export(name, folder, "legacy")
        length = models.ZOO[name].example_input(1).shape[1]
        return random_case(path, "input_ids", "tokens", (length,), 128)

    return build


def trained_case(arch: str, size: int) -> Callable[[Path, argparse.Namespace], Prepared]:
    """A CNN trained on the stripes task (int8_models.py), at ``size``: onnxkd gets the calibration pool with its
    labels, the peer its first 128 images, every accuracy is measured on the test split; QAD adds --qad-images
    training images at 64x64 (at larger sizes as many as hold the same number of pixels, to bound its time)."""
    def build(folder: Path, args: argparse.Namespace) -> Prepared:
        path, info = int8_models.trained_onnx(arch, size, args.cache)
        pool_x, pool_y = int8_models.split("pool", size, args.cache, normalised=True)
        test_x, test_y = int8_models.split("test", size, args.cache, normalised=True)

        def qad_data() -> dict:
            count = min(int8_models.TRAIN, max(1, args.qad_images * 64 * 64 // (size * size)))
            train_x, train_y = int8_models.split("train", size, args.cache, normalised=True, count=count)
            return {"input": np.concatenate([pool_x, train_x]), "labels": np.concatenate([pool_y, train_y])}

        return Prepared(path, "input", {"input": pool_x, "labels": pool_y}, pool_x[:CALIBRATION], test_x, test_y,
                        qad_data=qad_data, trained=info)

    return build


def text_case(folder: Path, args: argparse.Namespace) -> Prepared:
    """BERT-small trained on the token task (int8_text.py): onnxkd gets the calibration pool with its labels, the
    peer its first 128 sequences, every accuracy is measured on the test split; QAD adds --qad-images training
    sequences."""
    path, info = int8_text.trained_onnx(args.cache)
    pool_x, pool_y = int8_text.split("pool")
    test_x, test_y = int8_text.split("test")

    def qad_data() -> dict:
        train_x, train_y = int8_text.split("train")
        return {"input_ids": np.concatenate([pool_x, train_x[:args.qad_images]]),
                "labels": np.concatenate([pool_y, train_y[:args.qad_images]])}

    return Prepared(path, "input_ids", {"input_ids": pool_x, "labels": pool_y}, pool_x[:CALIBRATION], test_x, test_y,
                    qad_data=qad_data, trained=info)


def digits_case(folder: Path, args: argparse.Namespace) -> Prepared:
    train, val = np.load(DIGITS / "train.npz"), np.load(DIGITS / "val.npz")
    pick = np.sort(np.random.default_rng(0).permutation(len(train["labels"]))[:CALIBRATION])
    return Prepared(DIGITS / "teacher.onnx", "image", str(DIGITS / "train.npz"), train["image"][pick],
                    val["image"], val["labels"])


def digits_outlier_case(folder: Path, args: argparse.Namespace) -> Prepared:
    """The digits CNN with one channel x200 (tests/quantize/outliers.py): plain PTQ loses points, QAD always runs."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("outliers", ROOT / "tests" / "quantize" / "outliers.py")
    outliers = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(outliers)
    case = digits_case(folder, args)
    case.path = outliers.outlier_digits(DIGITS / "teacher.onnx", folder / "digits-outlier200.onnx", 200.0)
    case.force_qad = True
    return case


def light_case(name: str) -> Callable[[Path, argparse.Namespace], Prepared]:
    def build(folder: Path, args: argparse.Namespace) -> Prepared:
        path = light_model(name, folder)
        graph = onnx.load(str(path), load_external_data=False).graph
        weights = {i.name for i in graph.initializer}
        input_name = next(i.name for i in graph.input if i.name not in weights)
        data = random_rows("image", (3, 224, 224), LIGHT_CALIBRATION + LIGHT_EVAL, seed=0)
        path = centre_classifier(path, input_name, data[:32], path.with_name(path.stem + "-centred.onnx"))
        return Prepared(path, input_name, {input_name: data}, data[:LIGHT_CALIBRATION],
                        random_rows("image", (3, 224, 224), 64, seed=1), batches=(1,),
                        options={"calibration_samples": LIGHT_CALIBRATION, "eval_samples": LIGHT_EVAL})

    return build


# name -> (what the row shows, family: "cnn" rows (trained) make the ResNet/VGG/MobileNetV2 median, builder)
CASES: dict[str, tuple[str, str, Callable[[Path, argparse.Namespace], Prepared]]] = {
    "resnet-64": ("zoo ResNet, 64x64, trained", "cnn", trained_case("resnet", 64)),
    "resnet-128": ("zoo ResNet, 128x128, trained", "cnn", trained_case("resnet", 128)),
    "resnet-224": ("zoo ResNet, 224x224, trained", "cnn", trained_case("resnet", 224)),
    "mobilenetv2-64": ("zoo MobileNetV2, 64x64, trained", "cnn", trained_case("mobilenetv2", 64)),
    "mobilenetv2-224": ("zoo MobileNetV2, 224x224, trained", "cnn", trained_case("mobilenetv2", 224)),
    "vgg-64": ("VGG-like, 64x64, trained", "cnn", trained_case("vgg", 64)),
    "vgg-224": ("VGG-like, 224x224, trained", "cnn", trained_case("vgg", 224)),
    "resnet18-112": ("ResNet-18 (64-512 ch), 112x112, trained", "cnn", trained_case("resnet18", 112)),
    "resnet18-224": ("ResNet-18 (64-512 ch), 224x224, trained", "cnn", trained_case("resnet18", 224)),
    "mobilenetv2-1.0-224": ("MobileNetV2 1.0 (32-1280 ch), 224x224, trained", "cnn",
                            trained_case("mobilenetv2-1.0", 224)),
    "bert": ("zoo BERT, 12 tokens (random weights)", "transformer", zoo_case("bert")),
    "bert-small": ("BERT-small (4x512), 64 tokens, trained", "transformer", text_case),
    "gpt": ("zoo GPT, 12 tokens (random weights)", "transformer", zoo_case("gpt")),
    "digits": ("digits CNN (real data)", "digits", digits_case),
    "digits-outlier": ("digits CNN, one channel x200", "digits", digits_outlier_case),
    "light-resnet50": ("ONNX-zoo ResNet-50, 224, b1", "light", light_case("resnet50")),
    "light-squeezenet": ("ONNX-zoo SqueezeNet, 224, b1", "light", light_case("squeezenet")),
    "light-shufflenet": ("ONNX-zoo ShuffleNet, 224, b1", "light", light_case("shufflenet")),
    "light-densenet121": ("ONNX-zoo DenseNet-121, 224, b1", "light", light_case("densenet121")),
}
# the architectures at their published widths (and VGG's 32-128 channels); the zoo's ResNet and MobileNetV2 are
# narrow test stand-ins, on which int8 convolutions gain less
STANDARD_WIDTH = ("vgg-64", "vgg-224", "resnet18-112", "resnet18-224", "mobilenetv2-1.0-224")
SLOW = ("resnet-224", "vgg-224", "light-resnet50", "light-densenet121")  # over ~1 minute each on the 2-core CPU
QUICK = ("resnet-64", "mobilenetv2-64", "vgg-64", "gpt", "digits", "digits-outlier")


# --------------------------------------------------------------------------- quantizing


class Reader:
    """onnxruntime CalibrationDataReader over an array, ``batch`` samples per feed."""

    def __init__(self, input_name: str, samples: np.ndarray, batch: int):
        self.input_name, self.samples, self.batch = input_name, samples, batch
        self.rewind()

    def get_next(self):
        return next(self._feeds, None)

    def rewind(self):
        self._feeds = iter([{self.input_name: self.samples[i:i + self.batch]}
                            for i in range(0, len(self.samples), self.batch)])


def peer_quantize(case: Prepared, folder: Path) -> Path:
    """onnxruntime's documented recipe with its defaults: quant_pre_process, then quantize_static."""
    from onnxruntime.quantization import CalibrationDataReader, quant_pre_process, quantize_static

    class PeerReader(Reader, CalibrationDataReader):
        pass

    pre, out = folder / "peer-pre.onnx", folder / "peer-int8.onnx"
    logging.getLogger("root").setLevel(logging.ERROR)
    quant_pre_process(str(case.path), str(pre))
    quantize_static(str(pre), str(out), PeerReader(case.input_name, case.peer_calibration, max(case.batches)))
    return out


def compute_counts(path: Path) -> tuple[int, int]:
    """(compute nodes reading a dequantized weight, compute nodes) of a QDQ or float model."""
    graph = onnx.load(str(path), load_external_data=False).graph
    dequantized = {o for n in graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    compute = [n for n in graph.node if n.op_type in ("Conv", "ConvTranspose", "Gemm", "MatMul")]
    return sum(len(n.input) > 1 and n.input[1] in dequantized for n in compute), len(compute)


# --------------------------------------------------------------------------- measuring


def busy_cpu_seconds() -> float:
    """CPU time the whole machine has spent busy since boot (all cores, from /proc/stat)."""
    with open("/proc/stat") as handle:
        fields = [int(v) for v in handle.readline().split()[1:9]]  # user nice system idle iowait irq softirq steal
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def wait_quiet(limit_s: float, idle: float = 0.15) -> float:
    """Wait (at most ``limit_s``) until other processes use less than ``idle`` of the CPUs over one second: the
    machine may be shared, and timing that competes for the cores measures the competition."""
    started = time.perf_counter()
    while time.perf_counter() - started < limit_s:
        busy, own, clock = busy_cpu_seconds(), own_cpu_seconds(), time.perf_counter()
        time.sleep(1.0)
        others = (busy_cpu_seconds() - busy) - (own_cpu_seconds() - own)
        if others / ((time.perf_counter() - clock) * (os.cpu_count() or 1)) < idle:
            break
    return time.perf_counter() - started


def session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = THREADS
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    options.add_session_config_entry("session.force_spinning_stop", "1")
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


# Each model runs about this long in a row, its first run untimed, before the next one's turn: alternating
# single runs timed each model right after another had filled the caches, which put int8 models 10-15% off
# their speed in a process of their own, either way (benchmarks/latency_protocol.py).
TURN_MS = 250.0


def interleaved_medians(sessions: dict[str, ort.InferenceSession], feed: dict, runs: int, warmup: int,
                        budget_s: float) -> tuple[dict[str, float], int]:
    """Median ms per session: warm-up, then rounds in rotating order in which each session runs a turn of about
    TURN_MS (as many runs for all, set by the fastest; the first untimed); at least ``runs`` timed runs each,
    more (up to 5x) while the time budget lasts. Returns the medians and the number of timed runs each."""
    names = list(sessions)
    for _ in range(1 + warmup):  # the first run allocates
        for name in names:
            sessions[name].run(None, feed)
    fastest = min(timed_run(sessions[name], feed) for name in names)
    per_turn = max(1, min(int(TURN_MS // max(fastest, 1e-3)), 5 * runs // 4))
    samples: dict[str, list[float]] = {name: [] for name in names}
    started, rounds = time.perf_counter(), 0
    while len(samples[names[0]]) < 5 * runs and (len(samples[names[0]]) < runs
                                                 or time.perf_counter() - started < budget_s):
        shift = rounds % len(names)
        for name in names[shift:] + names[:shift]:
            if per_turn > 1:
                sessions[name].run(None, feed)
            samples[name].extend(timed_run(sessions[name], feed) for _ in range(per_turn))
        rounds += 1
    return {name: statistics.median(values) for name, values in samples.items()}, len(samples[names[0]])


def timed_run(session_: ort.InferenceSession, feed: dict) -> float:
    clock = time.perf_counter_ns()
    session_.run(None, feed)
    return (time.perf_counter_ns() - clock) / 1e6


def first_outputs(session_: ort.InferenceSession, input_name: str, inputs: np.ndarray, batch: int) -> np.ndarray:
    return np.concatenate([session_.run(None, {input_name: inputs[i:i + batch]})[0]
                           for i in range(0, len(inputs), batch)])


def quality_lost(reference: np.ndarray, got: np.ndarray, labels: np.ndarray | None) -> tuple[float, str]:
    """(points lost, metric): accuracy with labels, else top-1 disagreement with fp32 over the last axis where
    fp32 has a clear top-1, else the relative L2 error (both in percent)."""
    reference, got = reference.astype(np.float64), got.astype(np.float64)
    if reference.ndim > 2 and all(d == 1 for d in reference.shape[2:]):  # [N, C, 1, 1] class scores
        reference, got = reference.reshape(len(reference), -1), got.reshape(len(got), -1)
    if labels is not None:
        return 100 * float(np.mean(reference.argmax(1) == labels) - np.mean(got.argmax(1) == labels)), "acc"
    if reference.ndim >= 2 and reference.shape[-1] > 1:
        top2 = np.sort(reference, axis=-1)[..., -2:]
        clear = np.mean(top2[..., 1] - top2[..., 0] > 1e-6 * max(np.abs(reference).max(), 1e-12))
        if clear >= 0.99:
            return 100 * float(1 - np.mean(reference.argmax(-1) == got.argmax(-1))), "disagree"
    error = np.linalg.norm((got - reference).ravel()) / max(np.linalg.norm(reference.ravel()), 1e-12)
    return 100 * float(error), "rel. err"


# --------------------------------------------------------------------------- one row


def labelled_loss(session_: ort.InferenceSession, case: Prepared, reference: np.ndarray) -> tuple[float, str]:
    return quality_lost(reference, first_outputs(session_, case.input_name, case.eval_inputs, max(case.batches)),
                        case.labels)


def accuracy_float_nodes(result: dict) -> int:
    return sum(why.startswith("accuracy") for why in result["float_nodes"].values())


def run_qad(case: Prepared, folder: Path, args, row: dict, reference: np.ndarray) -> dict:
    """Plain PTQ (max_accuracy_drop=1.0) and QAD (default budget) on the same data, with training samples;
    both int8 models' held-out losses measured here."""
    from onnxkd.qat import qad_refiner

    data = case.onnxkd_data if case.qad_data is None else case.qad_data()
    out: dict = {"samples": len(data["labels"]) if isinstance(data, dict) else None}
    clock = time.perf_counter()
    if case.qad_data is None and "ptq_loss" in row:  # same data as the row's own runs: its plain PTQ is this one
        out["ptq_loss"] = row["ptq_loss"]
    else:
        plain = onnxkd.quantize(str(case.path), data, threads=THREADS, provider="cpu", max_accuracy_drop=1.0,
                                **case.options)
        out["ptq_loss"] = (labelled_loss(session(save_model(plain.model, folder / "qad-ptq.onnx")), case,
                                         reference)[0] if plain.int8 else None)
        out["ptq_s"] = time.perf_counter() - clock
    clock = time.perf_counter()
    refiner = qad_refiner(str(case.path), epochs=args.qad_epochs, device="cpu")
    result = onnxkd.quantize(str(case.path), data, threads=THREADS, provider="cpu", refine=refiner, **case.options)
    out["s"] = time.perf_counter() - clock
    out.update(qat=result.qat, int8=result.int8, quantized_nodes=result.quantized_nodes,
               compute_nodes=result.compute_nodes, accuracy_float=accuracy_float_nodes(result.to_dict()),
               speedups=result.speedups, history=len(refiner.history))
    if result.int8:
        out["loss"] = labelled_loss(session(save_model(result.model, folder / "qad.onnx")), case, reference)[0]
    log(f"  QAD: plain PTQ {out['ptq_loss']} -> {out.get('loss')} points held out; onnxkd's qat record "
        f"{result.qat}; {out['s']:.0f} s")
    return out


def measure(key: str, args, work: Path) -> dict:
    label, family, build = CASES[key]
    folder = work / key
    folder.mkdir()
    clock = time.perf_counter()
    case = build(folder, args)
    row: dict = {"key": key, "label": label, "family": family, "batches": case.batches,
                 "fp32_mb": case.path.stat().st_size / 1e6, "prepare_s": time.perf_counter() - clock,
                 "trained": case.trained}

    clock = time.perf_counter()
    onnxkd_path = None
    for options in ({}, {"calibration": "minmax"}):  # the second only when the default calibration fails
        try:
            result = onnxkd.quantize(str(case.path), case.onnxkd_data, threads=THREADS, provider="cpu",
                                     **case.options, **options)
        except Exception as exc:  # a row that fails says so; the benchmark goes on
            row.setdefault("onnxkd_errors", []).append(f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}")
            log(f"  onnxkd.quantize{options or ''} failed: {row['onnxkd_errors'][-1]}")
            continue
        onnxkd_path = save_model(result.model, folder / "onnxkd.onnx")
        row.update(onnxkd=result.to_dict(), onnxkd_int8=result.int8, onnxkd_mb=onnxkd_path.stat().st_size / 1e6,
                   onnxkd_options=options)
        break
    if onnxkd_path is None:
        row["onnxkd_error"] = row["onnxkd_errors"][0]
    row["onnxkd_s"] = time.perf_counter() - clock
    # int8 paid in speed but lost more than the budget (float written, or int8 with nodes back in float for
    # accuracy): what onnxkd's int8 gives without the budget (plain PTQ)
    unbudgeted_path = None
    if onnxkd_path is not None and "accuracy" in row["onnxkd"]["trials"] and (
            not row["onnxkd_int8"] or accuracy_float_nodes(row["onnxkd"])):
        clock = time.perf_counter()
        result = onnxkd.quantize(str(case.path), case.onnxkd_data, threads=THREADS, provider="cpu",
                                 max_accuracy_drop=1.0, **case.options, **row["onnxkd_options"])
        if result.int8:
            unbudgeted_path = save_model(result.model, folder / "onnxkd-unbudgeted.onnx")
            row["unbudgeted"] = result.to_dict()
        else:
            own = "/".join(f"{v:.2f}" for v in result.speedups.values())
            row["unbudgeted_float"] = f"float: slower in its own timing ({own})"
        row["unbudgeted_s"] = time.perf_counter() - clock
    clock = time.perf_counter()
    try:
        peer_path = peer_quantize(case, folder)
        row["peer_mb"] = peer_path.stat().st_size / 1e6
        row["peer_counts"] = compute_counts(peer_path)
    except Exception as exc:
        peer_path, row["peer_error"] = None, f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
    row["peer_s"] = time.perf_counter() - clock

    sessions = {"fp32": session(case.path)}
    if onnxkd_path is not None and row["onnxkd_int8"]:
        sessions["onnxkd"] = session(onnxkd_path)
    if unbudgeted_path is not None:
        sessions["unbudgeted"] = session(unbudgeted_path)
    if peer_path is not None:
        sessions["peer"] = session(peer_path)
    timings = []
    for attempt in range(2):  # timed again once when other processes took over 15% of the CPUs meanwhile
        timing = {"speedups": {}, "runs": {}, "fp32_ms": {}, "waited_s": wait_quiet(args.quiet)}
        before = (busy_cpu_seconds(), own_cpu_seconds(), time.perf_counter())
        for batch in case.batches:
            feed = {case.input_name: case.eval_inputs[:batch]}
            medians, timed = interleaved_medians(sessions, feed, args.runs, args.warmup, args.budget)
            timing["runs"][batch] = timed
            timing["speedups"][batch] = {n: medians["fp32"] / ms for n, ms in medians.items() if n != "fp32"}
            timing["fp32_ms"][batch] = medians["fp32"]
        others = (busy_cpu_seconds() - before[0]) - (own_cpu_seconds() - before[1])
        timing["others_cpu"] = max(0.0, others / ((time.perf_counter() - before[2]) * (os.cpu_count() or 1)))
        timings.append(timing)
        if timing["others_cpu"] < 0.15:
            break
        log(f"  other processes took {timing['others_cpu']:.0%} of the CPUs while timing: timing again")
    row.update(min(timings, key=lambda t: t["others_cpu"]), timings=len(timings))
    batch = max(case.batches)
    reference = first_outputs(sessions["fp32"], case.input_name, case.eval_inputs, batch)
    row["loss"] = {name: quality_lost(reference, first_outputs(s, case.input_name, case.eval_inputs, batch),
                                      case.labels)
                   for name, s in sessions.items() if name != "fp32"}
    row["eval_samples"] = len(case.eval_inputs)
    if case.labels is not None:
        row["fp32_accuracy"] = float(np.mean(reference.reshape(len(reference), -1).argmax(1) == case.labels))
        # plain PTQ's held-out loss: onnxkd's own int8 where nothing went back to float for accuracy
        if row.get("onnxkd_int8") and not accuracy_float_nodes(row["onnxkd"]):
            row["ptq_loss"] = row["loss"]["onnxkd"][0]
        elif "unbudgeted" in row["loss"]:
            row["ptq_loss"] = row["loss"]["unbudgeted"][0]
        if case.force_qad or row.get("ptq_loss", 0.0) >= 1.0:
            row["qad"] = run_qad(case, folder, args, row, reference)
    return row


# --------------------------------------------------------------------------- the table


def ratio(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}x"


def loss_text(loss: tuple[float, str] | None) -> str:
    if loss is None:
        return "—"
    value, metric = loss
    return {"acc": f"{value:.1f} pt acc", "disagree": f"{value:.1f}% disagree",
            "rel. err": f"{value:.2f}% rel. err"}[metric]


def megabytes(mb: float) -> str:
    return f"{mb:.3g}"


def cells(row: dict) -> list[str]:
    batches = row["batches"]
    speed = row["speedups"]

    def speedup(who: str, batch: int) -> str:
        if batch not in batches:
            return "— (batch 1 only)" if who == "onnxkd" else "—"
        if who == "onnxkd" and "onnxkd_error" not in row and not row["onnxkd_int8"]:
            return "1.00x (float)"
        return ratio(speed[batch].get(who))

    if "onnxkd_error" in row:
        kept, own, onnxkd_loss, size = f"error: {row['onnxkd_error']}", "—", "—", megabytes(row["fp32_mb"])
    else:
        r = row["onnxkd"]
        kept = f"{'int8' if r['int8'] else 'float'} {r['quantized_nodes']}/{r['compute_nodes']}" + (
            f", {len(r['padded_inputs'])} input padded" if r.get("padded_inputs") else "")
        own = "/".join(f"{r['speedups'][str(b)]:.2f}" for b in batches if str(b) in r["speedups"])
        onnxkd_loss = loss_text(row["loss"].get("onnxkd")) if r["int8"] else "0 (float)"
        size = f"{megabytes(row['fp32_mb'])} → {megabytes(row['onnxkd_mb'])}"
    peer_size = (f"{megabytes(row['peer_mb'])} ({row['peer_counts'][0]}/{row['peer_counts'][1]} int8)"
                 if "peer_mb" in row else "—")
    if "peer_error" in row:
        peer = [f"error: {row['peer_error']}", "—", "—"]
    else:
        peer = [speedup("peer", 1), speedup("peer", 8), loss_text(row["loss"].get("peer"))]
    if "unbudgeted" in row:
        r = row["unbudgeted"]
        unbudgeted = (f"{' / '.join(speedup('unbudgeted', b) for b in batches)}, "
                      f"{r['quantized_nodes']}/{r['compute_nodes']}, {loss_text(row['loss'].get('unbudgeted'))}")
    else:
        unbudgeted = row.get("unbudgeted_float", "—")
    label = row["label"] + (f" [{row['onnxkd']['calibration']['method']}, default failed]"
                            if row.get("onnxkd_options") else "")
    fp32 = f"{row['fp32_accuracy']:.1%}" if "fp32_accuracy" in row else "— (random)"
    return [label, fp32, speedup("onnxkd", 1), speedup("onnxkd", 8), own, kept, onnxkd_loss, unbudgeted, size,
            *peer, peer_size, qad_text(row), f"{row['onnxkd_s']:.1f} / {row['peer_s']:.1f}",
            f"{row['others_cpu']:.0%}"]


def qad_text(row: dict) -> str:
    """Plain PTQ vs QAD, held-out points lost; what onnxkd did with the QAD model."""
    if "qad" not in row:
        return f"— (PTQ {row['ptq_loss']:.1f} pt < 1)" if row.get("ptq_loss") is not None else "—"
    q = row["qad"]
    ptq = "—" if q["ptq_loss"] is None else f"{q['ptq_loss']:.2f}"
    data = f", {q['samples']} samples" if q.get("samples") else ""
    if q["qat"] is None:
        return (f"PTQ {ptq} pt; QAD not run: PTQ within budget on onnxkd's samples "
                f"({'int8' if q['int8'] else 'float'}, {q['s']:.0f} s{data})")
    own = "/".join(f"{v:.2f}" for v in q["speedups"].values())
    if q["qat"]["kept"]:
        qad = f"{q['loss']:.2f} pt" if q["int8"] else "float (QAD model slower)"
        return f"PTQ {ptq} → QAD {qad} (kept, {q['quantized_nodes']}/{q['compute_nodes']} int8, own {own}, " \
               f"{q['s']:.0f} s{data})"
    written = (f"{q['loss']:.1f} pt, {q['accuracy_float']} nodes float" if q["int8"] else "float")
    return f"PTQ {ptq} → QAD over budget on onnxkd's samples; written: accuracy control, {written} ({q['s']:.0f} s)"


HEADERS = ("model", "fp32 top-1 (held-out)", "onnxkd b1", "onnxkd b8", "onnxkd's own b1/b8",
           "kept (int8 / compute nodes)", "onnxkd loss", "onnxkd int8 without the budget: b1 / b8, nodes, loss",
           "size MB fp32 → onnxkd", "peer b1", "peer b8", "peer loss", "peer MB (int8 nodes)",
           "QAD: held-out pt lost, plain PTQ → QAD", "quantize s onnxkd / peer", "others' CPU")
LEFT = ("model", "kept (int8 / compute nodes)", "QAD: held-out pt lost, plain PTQ → QAD")


def summary(rows: list[dict]) -> list[str]:
    ok = [r for r in rows if "onnxkd_error" not in r]

    def onnxkd_speedups(row: dict) -> dict[int, float]:
        return {b: (row["speedups"][b]["onnxkd"] if row["onnxkd_int8"] else 1.0) for b in row["batches"]}

    def verdict(passed: bool) -> str:
        return "pass" if passed else "FAIL"

    lines = []
    cnn = [r for r in ok if r["family"] == "cnn" and 8 in r["batches"]]
    cnn8 = [onnxkd_speedups(r)[8] for r in cnn]
    peer8 = [r["speedups"][8]["peer"] for r in rows if r["family"] == "cnn" and 8 in r["batches"]
             and "peer" in r["speedups"][8]]
    if cnn8:
        median = statistics.median(cnn8)
        peer = f"; the peer: {statistics.median(peer8):.2f}x" if peer8 else ""
        lines.append(f"- median batch-8 int8 speed-up of what onnxkd wrote, trained ResNet/VGG/MobileNetV2 rows "
                     f"(goal ≥ 2.0x): {verdict(median >= 2.0)}, {median:.2f}x over {len(cnn8)} rows "
                     f"({', '.join(f'{x:.2f}x' for x in cnn8)}; kept-float rows count 1.00x{peer})")
    for title, group in (("standard-width rows (ResNet-18, MobileNetV2 1.0, VGG)", True),
                         ("the zoo's narrow rows (ResNet 16-32 ch, MobileNetV2 16-64 ch)", False)):
        picked = [onnxkd_speedups(r)[8] for r in cnn if (r["key"] in STANDARD_WIDTH) == group]
        if picked and len(picked) < len(cnn8):
            lines.append(f"  - of which {title}: {statistics.median(picked):.2f}x over {len(picked)} rows "
                         f"({', '.join(f'{x:.2f}x' for x in picked)})")
    int8_8 = [r["speedups"][8][who] for r in cnn for who in ("onnxkd", "unbudgeted") if who in r["speedups"][8]]
    if int8_8:
        lines.append(f"- median batch-8 speed-up of the int8 models onnxkd wrote, with or without the accuracy budget, "
                     f"over the same rows: {statistics.median(int8_8):.2f}x ({len(int8_8)} models)")
    every = [(s, r["label"], b) for r in ok for b, s in onnxkd_speedups(r).items()]
    if every:
        worst = min(every)
        timed = [(s, r["label"], b) for r in ok if r["onnxkd_int8"] for b, s in onnxkd_speedups(r).items()]
        lines.append(f"- never slower (onnxkd ≥ 1.00x at every batch, every row): {verdict(worst[0] >= 1.0)} "
                     f"(minimum {worst[0]:.2f}x: {worst[1]}, batch {worst[2]}; kept-float rows count 1.00x; "
                     f"slowest kept int8: " + (f"{min(timed)[0]:.2f}x, {min(timed)[1]}, batch {min(timed)[2]})"
                                              if timed else "none kept)"))
    unbudgeted = [(s, r["label"], b) for r in ok for b, x in r["speedups"].items()
                  for who, s in x.items() if who == "unbudgeted"]
    if unbudgeted:
        slowest = min(unbudgeted)
        lines.append(f"- never slower, int8 written without the accuracy budget: "
                     f"{verdict(slowest[0] >= 1.0)} (minimum {slowest[0]:.2f}x: {slowest[1]}, batch {slowest[2]})")
    trained = [r for r in ok if r["trained"]]  # the trained CNNs and the trained transformer
    if trained:
        written = [(r["loss"]["onnxkd"][0] if r["onnxkd_int8"] else 0.0, r["label"]) for r in trained]
        plain = [(r["ptq_loss"], r["label"]) for r in trained if r.get("ptq_loss") is not None]
        worst = max(written)
        line = (f"- PTQ loss ≤ 1 point, held-out accuracy of what onnxkd wrote (budget 1 point), trained rows: "
                f"{verdict(worst[0] <= 1.0)} (largest {worst[0]:.1f} points, {worst[1]}; "
                f"{', '.join(f'{v:.1f}' for v, _ in written)})")
        if plain:
            line += (f"; plain PTQ (nothing back to float): largest {max(plain)[0]:.1f} points ({max(plain)[1]}), "
                     f"{', '.join(f'{v:.1f}' for v, _ in plain)}")
        lines.append(line)
    real = [r for r in ok if r["family"] == "digits" and r["onnxkd_int8"]]
    if real:
        lines.append("- digits rows, held-out points lost by what onnxkd wrote: " + "; ".join(
            f"{r['label']} {r['loss']['onnxkd'][0]:.1f} ({r['onnxkd']['quantized_nodes']}/"
            f"{r['onnxkd']['compute_nodes']} int8, fp32 {r['fp32_accuracy']:.1%} on {r['eval_samples']})"
            for r in real))
    needing = [r for r in ok if r.get("ptq_loss") is not None and r["ptq_loss"] >= 1.0]
    qad_rows = [r for r in ok if "qad" in r and r.get("ptq_loss") is not None and r["ptq_loss"] >= 1.0]
    if needing:
        losses = [(r["qad"].get("loss") if r["qad"]["qat"] and r["qad"]["qat"]["kept"] else None, r)
                  for r in qad_rows]
        passed = all(loss is not None and loss <= 0.3 for loss, _ in losses) and len(qad_rows) == len(needing)
        lines.append(f"- QAD loss ≤ 0.3 points where plain PTQ loses ≥ 1: {verdict(passed)} (" + "; ".join(
            f"{r['label']}: plain PTQ {r['qad']['ptq_loss']:.2f} → QAD "
            + (f"{loss:.2f}" if loss is not None else "not kept" if r["qad"]["qat"] else "not run")
            for loss, r in losses) + "; held-out points)")
    else:
        lines.append("- QAD: no row's plain PTQ lost ≥ 1 held-out point")
    points = [(r["loss"]["onnxkd"][0], r["label"]) for r in ok
              if r["onnxkd_int8"] and r["loss"]["onnxkd"][1] == "disagree"]
    if points:
        lines.append(f"- random-weight rows kept int8: largest top-1 disagreement with fp32 {max(points)[0]:.1f}% "
                     f"({max(points)[1]})")
    errors = [(r["loss"]["onnxkd"][0], r["label"]) for r in ok
              if r["onnxkd_int8"] and r["loss"]["onnxkd"][1] == "rel. err"]
    if errors:
        lines.append(f"- relative-error rows: largest {max(errors)[0]:.2f}% ({max(errors)[1]})")
    lost = [(r["loss"]["unbudgeted"][0], r["label"]) for r in ok if "unbudgeted" in r["loss"]
            and r["loss"]["unbudgeted"][1] == "disagree"]
    if lost:
        span = (f"{min(lost)[0]:.1f}" if min(lost)[0] == max(lost)[0] else f"{min(lost)[0]:.1f}-{max(lost)[0]:.1f}")
        lines.append(f"- random-weight rows onnxkd kept (partly) float for accuracy: {len(lost)} "
                     f"({', '.join(label for _, label in lost)}); without the budget they lose {span}% top-1 "
                     f"agreement with fp32 on random inputs")
    for r in rows:
        if r.get("onnxkd_errors"):
            retried = ("; with --calibration minmax it ran" if "onnxkd_error" not in r else "; minmax failed too")
            lines.append(f"- onnxkd.quantize with its defaults failed on {r['label']}: "
                         f"{r['onnxkd_errors'][0]}{retried}")
    methods = defaultdict(list)
    for r in ok:
        if not r.get("onnxkd_options"):
            methods[r["onnxkd"]["calibration"]["method"]].append(r["label"])
    if methods:
        common = max(methods, key=lambda m: len(methods[m]))
        lines.append(f"- onnxkd's calibration with its defaults in this run: {common}" + "".join(
            f"; {m} on {', '.join(labels)}" for m, labels in methods.items() if m != common) + "; the peer's: minmax")
    records: dict[str, dict] = {}
    for r in rows:  # one record per architecture; "cached" only when no row of this run trained it
        if r.get("trained") and records.get(r["trained"]["arch"], {}).get("cached", True):
            records[r["trained"]["arch"]] = r["trained"]
    cnns = {arch: t for arch, t in records.items() if "epochs" in t}
    if cnns:
        lines.append("- trained at 64x64 on 4,000 stripes images (Adam, one-cycle, CPU, 2 threads): " + "; ".join(
            f"{arch} {t['epochs']} epochs, {t['train_s']:.0f} s{' (cached)' if t.get('cached') else ''}"
            for arch, t in cnns.items()) + "; fp32 held-out accuracy in the table (1,000 test images per size)")
    for arch, t in records.items():
        if "steps" in t:
            lines.append(f"- {arch} trained on {int8_text.SPLITS['train'][0]:,} token sequences (AdamW, one-cycle, "
                         f"CPU, 2 threads): {t['steps']} steps of {int8_text.BATCH}, {t['train_s']:.0f} s"
                         f"{' (cached)' if t.get('cached') else ''}; fp32 held-out accuracy in the table "
                         f"(1,000 test sequences)")
    return [line for line in lines if line]


def cpu_text() -> str:
    """The CPU the speed-ups were timed on, as exactly as /proc/cpuinfo says: int8's gain over float differs
    between CPUs that share a model name (the zoo ResNet at 64x64, batch 8: 1.70x and 2.17x on two "AMD EPYC"
    hosts), so the family, model and int8 instructions go with every table."""
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    except OSError:
        return cpu_model()
    int8 = sorted(set(fields.get("flags", "").split()) & {"avx512_vnni", "avx_vnni", "amx_int8"})
    return (f"{cpu_model()} (family {fields.get('cpu family', '?')}, model {fields.get('model', '?')}; "
            f"{', '.join(int8) or 'no VNNI'})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", help=f"comma-separated subset of {','.join(CASES)}")
    parser.add_argument("--quick", action="store_true", help=f"smoke run: {','.join(QUICK)}, 5 runs")
    parser.add_argument("--runs", type=int, help="timed runs per model and batch, at least (default 20; quick 5)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--budget", type=float, default=2.0,
                        help="seconds of timing per batch after which no runs beyond --runs start")
    parser.add_argument("--quiet", type=float, default=15.0,
                        help="seconds to wait at most, before each row's timing, for other processes to use < 15%% "
                             "of the CPUs")
    parser.add_argument("--markdown", type=Path, help="also write the table as markdown to this file")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE,
                        help=f"folder for the trained models and the task's data (default {DEFAULT_CACHE})")
    parser.add_argument("--qad-epochs", type=int, default=QAD_EPOCHS, help="QAD epochs (default %(default)s)")
    parser.add_argument("--qad-images", type=int, default=QAD_IMAGES,
                        help="training images QAD adds on a trained-CNN row, at 64x64 (fewer at larger sizes: the "
                             "same pixels); default %(default)s: one QAD epoch over 4,000 took 54 s on the ResNet here")
    args = parser.parse_args()
    args.runs = args.runs or (5 if args.quick else 20)
    keys = args.models.split(",") if args.models else [k for k in (QUICK if args.quick else CASES) if k not in SLOW]
    unknown = [k for k in keys if k not in CASES]
    if unknown:
        parser.error(f"--models: unknown {', '.join(unknown)} (choose from {', '.join(CASES)})")
    warnings.filterwarnings("ignore")
    torch.set_num_threads(THREADS)  # training and QAD: the same two cores the timed sessions use
    started = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory(prefix="onnxkd-int8-") as tmp:
        for key in keys:
            clock = time.perf_counter()
            log(f"{key} ...")
            row = measure(key, args, Path(tmp))
            rows.append(row)
            log(f"  {' | '.join(cells(row))} ({time.perf_counter() - clock:.0f} s, runs {row['runs']}, waited "
                f"{row['waited_s']:.0f} s for a quiet machine, others' CPU while timing {row['others_cpu']:.0%})")
    command = " ".join(["python", "benchmarks/int8.py", *sys.argv[1:]])
    elapsed = time.perf_counter() - started
    title = (f"int8 PTQ: onnxkd.quantize vs onnxruntime quantize_static defaults (peer); speed-ups fp32 p50 / int8 "
             f"p50, onnxruntime CPU, {THREADS} intra-op threads, interleaved in turns of {TURN_MS:.0f} ms, "
             f">= {args.runs} runs each after {args.warmup} warm-up")
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for header in HEADERS:
        table.add_column(header, justify="left" if header in LEFT else "right")
    for row in rows:
        table.add_row(*cells(row))
    console = Console(width=260)
    console.print(table)
    notes = summary(rows)
    for line in notes:
        console.print(line, highlight=False)
    where = f"{ort.get_device()} onnxruntime {ort.__version__} on {cpu_text()}"
    console.print(f"command: {command} ({elapsed:.0f} s, {where})", highlight=False)
    if args.markdown:
        lines = [title, "", "| " + " | ".join(HEADERS) + " |",
                 "|" + "|".join("---" if h in LEFT else "---:" for h in HEADERS) + "|"]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in cells(row)) + " |" for row in rows]
        lines += ["", *notes, "", f"`{command}` ({elapsed:.0f} s, {where})", ""]
        args.markdown.write_text("\n".join(lines))


if __name__ == "__main__":
    main()
