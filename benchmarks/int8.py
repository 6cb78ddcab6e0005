"""int8 post-training quantization: `onnxkd.quantize` against onnxruntime's own `quantize_static` with its
default settings (the peer), timed and scored by this benchmark, not by onnxkd.

Models (each row one float ONNX file):

- the architecture zoo of the tests (tests/models.py, legacy exporter, BatchNorm folded, random weights): the
  ResNet and MobileNetV2 of the zoo at 64x64 and 224x224 inputs, a VGG-like conv stack defined here (the zoo
  has none) at 64x64, and the zoo's BERT and GPT on 12 tokens;
- the digits example (examples/digits): the only model with real data and labels;
- ONNX-zoo architectures from the onnx package's "light" test models (onnx/backend/test/data/light). These
  ship with every weight a ConstantOfShape filled with 0.02 (all logits equal, nothing to agree on) at opset 9,
  which onnxkd refuses. This benchmark turns each ConstantOfShape into a seeded random initializer (He-normal
  conv/Gemm weights, BatchNorm statistics around 1 and 0), drops a trailing Softmax and upgrades the model to
  opset 13 with onnx's version converter: the architecture and graph as the zoo wrote them, random weights like
  the zoo rows. Their batch is fixed at 1 (Reshape to [1, C]), so they have no batch-8 figure. By default the
  rows that take over about a minute here are left out (resnet-224, light-resnet50, light-densenet121: pass
  them to --models).

Data: the digits teacher is given examples/digits/train.npz (onnxkd calibrates on 128 samples and checks its
accuracy budget on 500 others; the peer calibrates on 128 seeded-random training samples), and every quality
figure is measured on val.npz (360 held-out digits, labels). Every other model is given 256 random inputs of
its input shape (token ids uniform over the vocabulary; images: a smooth random field with a per-sample colour
offset and contrast plus pixel noise, since white noise averages out in global pooling): onnxkd calibrates on
128 of them and checks its budget on the other 128, the peer calibrates on the first 128 (light models: 64 +
100 and 64, to keep the run short); quality is measured on other random inputs (128, or 64 at 224x224) as
top-1 agreement with the fp32 model.

Random-weight CNNs give random inputs all the same top-1 class, which would make top-1 agreement 100% whatever
int8 does (and onnxkd's own accuracy check vacuous): for every random-input CNN row the classifier's bias is
lowered by its mean logit over 32 calibration inputs (a constant per class: graph and cost unchanged), so that
the top-1 depends on the input. The input-dependent part of a random network's logits is still small (a few
percent of their size), so agreement on these rows is a harsher test than on a trained model: read their
losses as a stress test, and the digits row as the real one.

onnxkd: `onnxkd.quantize(model, data, threads=2, provider="cpu")` with default settings (auto activation type:
uint8 on x86, per-channel int8 weights, its default calibration method, accuracy budget 1 point, keeps int8
only where it measured it faster, else returns the float model); where that raises, the row is retried with
calibration="minmax" and says so. The peer: `quant_pre_process` then `quantize_static(pre, out, reader)` with
nothing else set: QDQ, int8 activations and weights, per-tensor, MinMax.

Where onnxkd found int8 faster but over its accuracy budget (it then returns the float model), it is run once
more with max_accuracy_drop=1.0 and that int8 model is measured too ("without the budget"): the speed onnxkd's
int8 gives, and what the budget saved.

The machine may be shared: before each row's timing the benchmark waits (up to --quiet seconds) until other
processes use under 15% of the CPUs, measures the share they took while it timed (others' CPU column), and
times the row once more when that was over 15%, keeping the quieter of the two.

Speed: fp32, onnxkd's result and the peer's model, each in its own onnxruntime CPU session (2 intra-op threads,
1 inter-op, all graph optimisations, thread-pool spinning stopped after each run so that one session's
spinning workers do not steal the cores of the next one), run on the same input batch, interleaved in rotating
order after warm-up; each figure is median(fp32) / median(model) over >= --runs timed runs per model (more, up
to 5x, while the per-batch time budget lasts). When onnxkd kept the float model its speed-up is 1.00x by
construction and not timed. Quality lost: accuracy points (digits), else 100 x (1 - top-1 agreement with fp32,
over the last axis: per token for GPT), else the relative L2 error of the outputs in percent.

    python benchmarks/int8.py [--models resnet-64,gpt,...] [--quick] [--runs 20] [--markdown FILE]

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

import onnxkd  # noqa: E402
from onnxkd.model import save as save_model  # noqa: E402

DIGITS = ROOT / "examples" / "digits"
THREADS = 2
CALIBRATION, ONNXKD_EVAL = 128, 128  # random-input rows: samples onnxkd calibrates on / checks its budget on
LIGHT_CALIBRATION, LIGHT_EVAL = 64, 100


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- the models


class VGGTiny(nn.Module):
    """VGG-like: three stages of two conv3x3-BN-ReLU and a 2x2 max-pool (32 -> 64 -> 128 channels), then
    global average pooling and one Linear (about 155 MMACs at 64x64)."""

    def __init__(self, num_classes: int = 10, widths: tuple[int, ...] = (32, 64, 128)):
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for width in widths:
            layers += [models.conv_bn_act(cin, width), models.conv_bn_act(width, width), nn.MaxPool2d(2)]
            cin = width
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(self.features(x), 1), 1))


def export_vgg(folder: Path, size: int) -> Path:
    path = folder / f"vgg-{size}.onnx"
    torch.manual_seed(0)
    net = models.randomise_batchnorm(VGGTiny())
    example = torch.randn(2, 3, size, size)
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (example,), str(path), dynamo=False, opset_version=17, input_names=["input"],
                          output_names=["output"], dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}})
    return path


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


def zoo_case(name: str, size: int | None) -> Callable[[Path], Prepared]:
    def build(folder: Path) -> Prepared:
        path = models.export(name, folder, "legacy", image_size=size)
        if models.ZOO[name].family == "cnn":
            return random_case(path, "input", "image", (3, size, size), 64 if size >= 224 else 128)
        length = models.ZOO[name].example_input(1).shape[1]
        return random_case(path, "input_ids", "tokens", (length,), 128)

    return build


def vgg_case(size: int) -> Callable[[Path], Prepared]:
    return lambda folder: random_case(export_vgg(folder, size), "input", "image", (3, size, size),
                                      64 if size >= 224 else 128)


def digits_case(folder: Path) -> Prepared:
    train, val = np.load(DIGITS / "train.npz"), np.load(DIGITS / "val.npz")
    pick = np.sort(np.random.default_rng(0).permutation(len(train["labels"]))[:CALIBRATION])
    return Prepared(DIGITS / "teacher.onnx", "image", str(DIGITS / "train.npz"), train["image"][pick],
                    val["image"], val["labels"])


def light_case(name: str) -> Callable[[Path], Prepared]:
    def build(folder: Path) -> Prepared:
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


# name -> (what the row shows, family: "cnn" rows make the ResNet/VGG/MobileNetV2 median, builder)
CASES: dict[str, tuple[str, str, Callable[[Path], Prepared]]] = {
    "resnet-64": ("zoo ResNet, 64x64", "cnn", zoo_case("resnet", 64)),
    "resnet-224": ("zoo ResNet, 224x224", "cnn", zoo_case("resnet", 224)),
    "mobilenetv2-64": ("zoo MobileNetV2, 64x64", "cnn", zoo_case("mobilenetv2", 64)),
    "mobilenetv2-224": ("zoo MobileNetV2, 224x224", "cnn", zoo_case("mobilenetv2", 224)),
    "vgg-64": ("VGG-like (here), 64x64", "cnn", vgg_case(64)),
    "bert": ("zoo BERT, 12 tokens", "transformer", zoo_case("bert", None)),
    "gpt": ("zoo GPT, 12 tokens", "transformer", zoo_case("gpt", None)),
    "digits": ("digits CNN (real data)", "digits", digits_case),
    "light-resnet50": ("ONNX-zoo ResNet-50, 224, b1", "light", light_case("resnet50")),
    "light-squeezenet": ("ONNX-zoo SqueezeNet, 224, b1", "light", light_case("squeezenet")),
    "light-shufflenet": ("ONNX-zoo ShuffleNet, 224, b1", "light", light_case("shufflenet")),
    "light-densenet121": ("ONNX-zoo DenseNet-121, 224, b1", "light", light_case("densenet121")),
}
SLOW = ("resnet-224", "light-resnet50", "light-densenet121")  # over ~1 minute each on the 2-core CPU
QUICK = ("resnet-64", "mobilenetv2-64", "vgg-64", "gpt", "digits", "light-squeezenet")


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


def interleaved_medians(sessions: dict[str, ort.InferenceSession], feed: dict, runs: int, warmup: int,
                        budget_s: float) -> tuple[dict[str, float], int]:
    """Median ms per session: warm-up, then rounds in rotating order; at least ``runs`` rounds, more (up to
    5x) while the time budget lasts. Returns the medians and the number of rounds."""
    names = list(sessions)
    for _ in range(1 + warmup):  # the first run allocates
        for name in names:
            sessions[name].run(None, feed)
    samples: dict[str, list[float]] = {name: [] for name in names}
    started, rounds = time.perf_counter(), 0
    while rounds < 5 * runs and (rounds < runs or time.perf_counter() - started < budget_s):
        shift = rounds % len(names)
        for name in names[shift:] + names[:shift]:
            clock = time.perf_counter_ns()
            sessions[name].run(None, feed)
            samples[name].append((time.perf_counter_ns() - clock) / 1e6)
        rounds += 1
    return {name: statistics.median(values) for name, values in samples.items()}, rounds


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


def measure(key: str, args, work: Path) -> dict:
    label, family, build = CASES[key]
    folder = work / key
    folder.mkdir()
    case = build(folder)
    row: dict = {"key": key, "label": label, "family": family, "batches": case.batches,
                 "fp32_mb": case.path.stat().st_size / 1e6}

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
    # int8 paid in speed but lost more than the budget: what onnxkd's int8 would have given without the budget
    unbudgeted_path = None
    if onnxkd_path is not None and not row["onnxkd_int8"] and "accuracy" in row["onnxkd"]["trials"]:
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
        timing = {"speedups": {}, "rounds": {}, "fp32_ms": {}, "waited_s": wait_quiet(args.quiet)}
        before = (busy_cpu_seconds(), own_cpu_seconds(), time.perf_counter())
        for batch in case.batches:
            feed = {case.input_name: case.eval_inputs[:batch]}
            medians, rounds = interleaved_medians(sessions, feed, args.runs, args.warmup, args.budget)
            timing["rounds"][batch] = rounds
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
    if case.labels is not None:
        row["fp32_accuracy"] = float(np.mean(reference.argmax(1) == case.labels))
    row["eval_samples"] = len(case.eval_inputs)
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
        kept = f"{'int8' if r['int8'] else 'float'} {r['quantized_nodes']}/{r['compute_nodes']}"
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
    return [label, speedup("onnxkd", 1), speedup("onnxkd", 8), own, kept, onnxkd_loss, unbudgeted, size,
            *peer, peer_size, "—", f"{row['onnxkd_s']:.1f} / {row['peer_s']:.1f}", f"{row['others_cpu']:.0%}"]


HEADERS = ("model", "onnxkd b1", "onnxkd b8", "onnxkd's own b1/b8", "kept (int8 / compute nodes)",
           "onnxkd loss", "onnxkd int8 without the budget: b1 / b8, nodes, loss", "size MB fp32 → onnxkd",
           "peer b1", "peer b8", "peer loss", "peer MB (int8 nodes)", "QAD",
           "quantize s onnxkd / peer", "others' CPU")
LEFT = ("model", "kept (int8 / compute nodes)")


def summary(rows: list[dict]) -> list[str]:
    ok = [r for r in rows if "onnxkd_error" not in r]

    def onnxkd_speedups(row: dict) -> dict[int, float]:
        return {b: (row["speedups"][b]["onnxkd"] if row["onnxkd_int8"] else 1.0) for b in row["batches"]}

    lines = []
    cnn8 = [onnxkd_speedups(r)[8] for r in ok if r["family"] == "cnn" and 8 in r["batches"]]
    peer8 = [r["speedups"][8]["peer"] for r in rows if r["family"] == "cnn" and 8 in r["batches"]
             and "peer" in r["speedups"][8]]
    if cnn8:
        peer = f"; the peer: {statistics.median(peer8):.2f}x" if peer8 else ""
        lines.append(f"- median batch-8 speed-up of onnxkd's result over the ResNet/VGG/MobileNetV2-like rows: "
                     f"{statistics.median(cnn8):.2f}x ({len(cnn8)} rows, kept-float rows count 1.00x{peer})")
    int8_8 = [r["speedups"][8][who] for r in ok if r["family"] == "cnn" and 8 in r["batches"]
              for who in ("onnxkd", "unbudgeted") if who in r["speedups"][8]]
    if int8_8:
        lines.append(f"- median batch-8 speed-up of the int8 models onnxkd wrote, with or without the accuracy budget, "
                     f"over the same rows: {statistics.median(int8_8):.2f}x ({len(int8_8)} of {len(cnn8)} rows)")
    every = [(s, r["label"], b) for r in ok for b, s in onnxkd_speedups(r).items()]
    if every:
        worst = min(every)
        timed = [(s, r["label"], b) for r in ok if r["onnxkd_int8"] for b, s in onnxkd_speedups(r).items()]
        lines.append(f"- never slower (onnxkd ≥ 1.00x at every batch): {'pass' if worst[0] >= 1.0 else 'FAIL'} "
                     f"(minimum {worst[0]:.2f}x: {worst[1]}, batch {worst[2]}; kept-float rows count 1.00x; "
                     f"slowest kept int8: " + (f"{min(timed)[0]:.2f}x, {min(timed)[1]}, batch {min(timed)[2]})"
                                              if timed else "none kept)"))
    unbudgeted = [(s, r["label"], b) for r in ok for b, x in r["speedups"].items()
                  for who, s in x.items() if who == "unbudgeted"]
    if unbudgeted:
        slowest = min(unbudgeted)
        lines.append(f"- never slower, int8 written without the accuracy budget: "
                     f"{'pass' if slowest[0] >= 1.0 else 'FAIL'} (minimum {slowest[0]:.2f}x: {slowest[1]}, batch "
                     f"{slowest[2]})")
    points = [(r["loss"]["onnxkd"][0], r["label"], r["loss"]["onnxkd"][1]) for r in ok
              if r["onnxkd_int8"] and r["loss"]["onnxkd"][1] in ("acc", "disagree")]
    if points:
        worst = max(points)
        lines.append(f"- PTQ loss ≤ 1 point: {'pass' if worst[0] <= 1.0 else 'FAIL'} (largest over the {len(points)} "
                     f"int8 rows with a top-1 metric: {worst[0]:.1f} "
                     f"({'accuracy points' if worst[2] == 'acc' else '% disagreement with fp32'}), {worst[1]})")
    errors = [(r["loss"]["onnxkd"][0], r["label"]) for r in ok
              if r["onnxkd_int8"] and r["loss"]["onnxkd"][1] == "rel. err"]
    if errors:
        lines.append(f"- relative-error rows: largest {max(errors)[0]:.2f}% ({max(errors)[1]})")
    lost = [(r["loss"]["unbudgeted"][0], r["label"]) for r in ok if "unbudgeted" in r["loss"]
            and r["loss"]["unbudgeted"][1] in ("acc", "disagree")]
    if lost:
        lines.append(f"- int8 kept in float for accuracy on {len(lost)} rows: without the budget they lose "
                     f"{min(lost)[0]:.1f}-{max(lost)[0]:.1f} points (top-1 disagreement with fp32 on random inputs)")
    for r in rows:
        if r.get("onnxkd_errors"):
            retried = ("; with --calibration minmax it ran" if "onnxkd_error" not in r else "; minmax failed too")
            lines.append(f"- onnxkd.quantize with its defaults failed on {r['label']}: "
                         f"{r['onnxkd_errors'][0]}{retried}")
    methods = sorted({r["onnxkd"]["calibration"]["method"] for r in ok if not r.get("onnxkd_options")})
    if methods:
        lines.append(f"- onnxkd's default calibration in this run: {', '.join(methods)}; the peer's: minmax")
    digits = [r for r in rows if r["key"] == "digits"]
    if digits:
        lines.append(f"- digits fp32 accuracy on val: {digits[0]['fp32_accuracy']:.1%} "
                     f"({digits[0]['eval_samples']} samples)")
    return [line for line in lines if line]


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
    args = parser.parse_args()
    args.runs = args.runs or (5 if args.quick else 20)
    keys = args.models.split(",") if args.models else [k for k in (QUICK if args.quick else CASES) if k not in SLOW]
    unknown = [k for k in keys if k not in CASES]
    if unknown:
        parser.error(f"--models: unknown {', '.join(unknown)} (choose from {', '.join(CASES)})")
    warnings.filterwarnings("ignore")
    started = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory(prefix="onnxkd-int8-") as tmp:
        for key in keys:
            clock = time.perf_counter()
            log(f"{key} ...")
            row = measure(key, args, Path(tmp))
            rows.append(row)
            log(f"  {' | '.join(cells(row))} ({time.perf_counter() - clock:.0f} s, rounds {row['rounds']}, waited "
                f"{row['waited_s']:.0f} s for a quiet machine, others' CPU while timing {row['others_cpu']:.0%})")
    command = " ".join(["python", "benchmarks/int8.py", *sys.argv[1:]])
    elapsed = time.perf_counter() - started
    title = (f"int8 PTQ: onnxkd.quantize vs onnxruntime quantize_static defaults (peer); speed-ups fp32 p50 / int8 "
             f"p50, onnxruntime CPU, {THREADS} intra-op threads, interleaved, >= {args.runs} runs each after "
             f"{args.warmup} warm-up")
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
    console.print(f"command: {command} ({elapsed:.0f} s, {ort.get_device()} onnxruntime {ort.__version__})",
                  highlight=False)
    if args.markdown:
        lines = [title, "", "| " + " | ".join(HEADERS) + " |",
                 "|" + "|".join("---" if h in LEFT else "---:" for h in HEADERS) + "|"]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in cells(row)) + " |" for row in rows]
        lines += ["", *notes, "", f"`{command}` ({elapsed:.0f} s, onnxruntime {ort.__version__})", ""]
        args.markdown.write_text("\n".join(lines))


if __name__ == "__main__":
    main()
