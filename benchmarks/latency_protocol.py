"""Which interleaving of two models gives the speed-up each model has in a process of its own?

A deployed model runs alone in its process, again and again: its speed-up over the model it replaces is the
ratio of the two latencies measured that way (the oracle here: each model timed in a fresh process, 10 warm-up
and 40 timed runs with onnxruntime's default settings, the processes alternated, medians). That is slow and
drifts with the machine, so onnxkd times both models in one process, interleaved. This benchmark compares,
for fp32 -> int8 and teacher -> pruned student pairs, the oracle with:

- single runs alternated (ABBA): how onnxkd timed until now;
- onnxkd's protocol, ``onnxkd.validate.latency.time_interleaved``: turns of about 250 ms per model, the
  first run of each turn untimed.

Both interleaved protocols use onnxkd's session options (2 intra-op threads, spinning stopped after each run).
Models, built here with random weights (speed does not depend on the values): a VGG-like stack at 64x64, the
zoo's ResNet at 128x128 and MobileNetV2 at 224x224 (tests/models.py), each against its int8 version made by
onnxruntime's ``quantize_static`` (U8S8, per-channel; not by onnxkd), and the zoo ResNet against itself pruned
at 0.5 by ``onnxkd prune``. The error column is protocol / oracle - 1.

    python benchmarks/latency_protocol.py [--processes 4] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

THREADS = 2

# one model alone in its process: onnxruntime's defaults but the thread count, warm-up, then the median run
ALONE = """
import sys, time, numpy as np, onnxruntime as ort
options = ort.SessionOptions(); options.intra_op_num_threads = {threads}; options.inter_op_num_threads = 1
session = ort.InferenceSession(sys.argv[1], options, providers=["CPUExecutionProvider"])
feed = {{session.get_inputs()[0].name: np.load(sys.argv[2])}}
for _ in range(10): session.run(None, feed)
times = []
for _ in range(40):
    start = time.perf_counter(); session.run(None, feed); times.append(time.perf_counter() - start)
print(float(np.median(times)) * 1000)
"""


def export(net, shape: tuple[int, ...], path: Path) -> Path:
    import torch

    net.eval()
    torch.onnx.export(net, torch.randn(*shape), str(path), input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, opset_version=17, dynamo=False)
    return path


def int8_of(path: Path, shape: tuple[int, ...], out: Path) -> Path:
    from onnxruntime.quantization import CalibrationDataReader, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = out.with_suffix(".pre.onnx")
    quant_pre_process(str(path), str(pre))
    batches = iter([{"input": np.random.default_rng(i).standard_normal((8, *shape[1:])).astype(np.float32)}
                    for i in range(4)])

    class Reader(CalibrationDataReader):
        def get_next(self):
            return next(batches, None)

    quantize_static(str(pre), str(out), Reader(), per_channel=True, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8, extra_options={"WeightSymmetric": True})
    return out


def pruned_of(path: Path, out: Path) -> Path:
    subprocess.run([sys.executable, "-m", "onnxkd", "prune", str(path), "--ratio", "0.5", "-o", str(out)],
                   check=True, capture_output=True)
    return out


def pairs(folder: Path) -> list[tuple[str, Path, Path, tuple[int, ...]]]:
    import torch

    from int8_models import VGGTiny
    from tests.models import MobileNetV2Tiny, ResNetTiny

    torch.manual_seed(0)
    vgg = export(VGGTiny(), (1, 3, 64, 64), folder / "vgg.onnx")
    resnet = export(ResNetTiny(), (1, 3, 128, 128), folder / "resnet.onnx")
    mobilenet = export(MobileNetV2Tiny(), (1, 3, 224, 224), folder / "mobilenetv2.onnx")
    return [
        ("VGG-like 64x64, fp32 -> int8", vgg, int8_of(vgg, (1, 3, 64, 64), folder / "vgg-int8.onnx"), (3, 64, 64)),
        ("zoo ResNet 128x128, fp32 -> int8", resnet, int8_of(resnet, (1, 3, 128, 128), folder / "resnet-int8.onnx"),
         (3, 128, 128)),
        ("zoo MobileNetV2 224x224, fp32 -> int8", mobilenet,
         int8_of(mobilenet, (1, 3, 224, 224), folder / "mobilenetv2-int8.onnx"), (3, 224, 224)),
        ("zoo ResNet 128x128, pruned 0.5", resnet, pruned_of(resnet, folder / "resnet-pruned.onnx"), (3, 128, 128)),
    ]


def oracle(slow: Path, fast: Path, feed: Path, processes: int) -> float:
    """Speed-up with each model timed in processes of its own, alternated: ratio of the median latencies."""
    script = ALONE.format(threads=THREADS)
    times: dict[Path, list[float]] = {slow: [], fast: []}
    for _ in range(processes):
        for model in (slow, fast):
            done = subprocess.run([sys.executable, "-c", script, str(model), str(feed)], check=True,
                                  capture_output=True, text=True)
            times[model].append(float(done.stdout.split()[-1]))
    return statistics.median(times[slow]) / statistics.median(times[fast])


def sessions(slow: Path, fast: Path):
    from onnxkd.validate.sessions import SessionConfig, create_session

    config = SessionConfig(provider="cpu", threads=THREADS)
    return create_session(str(slow), config, "a")[0], create_session(str(fast), config, "b")[0]


def single_runs(slow: Path, fast: Path, x: np.ndarray, runs: int = 50) -> float:
    """Speed-up with single runs alternated in ABBA order: onnxkd's protocol before turns."""
    a, b = sessions(slow, fast)
    feed = {"input": x}
    for _ in range(5):
        a.run(None, feed)
        b.run(None, feed)
    times: dict[int, list[float]] = {0: [], 1: []}
    for i in range(runs):
        for which in ((0, 1) if i % 2 == 0 else (1, 0)):
            start = time.perf_counter()
            (a, b)[which].run(None, feed)
            times[which].append(time.perf_counter() - start)
    return statistics.median(times[0]) / statistics.median(times[1])


def turns(slow: Path, fast: Path, x: np.ndarray) -> float:
    from onnxkd.validate.latency import LatencyProtocol, time_interleaved

    a, b = sessions(slow, fast)
    feed = {"input": x}
    t, s = time_interleaved(lambda: a.run(None, feed), lambda: b.run(None, feed), LatencyProtocol())
    return statistics.median(t) / statistics.median(s)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=4, help="processes per model for the oracle")
    parser.add_argument("--repeats", type=int, default=3, help="timings per interleaved protocol (median)")
    args = parser.parse_args()
    from rich.console import Console
    from rich.table import Table

    started = time.perf_counter()
    table = Table(title=f"speed-up: each model in its own process (oracle) vs interleaved in one, {THREADS} threads, "
                        f"medians of {args.repeats} timings")
    for column in ("pair", "batch", "own processes", "single runs ABBA", "error", "turns (onnxkd)", "error"):
        table.add_column(column, justify="left" if column == "pair" else "right")
    errors: dict[str, list[float]] = {"single": [], "turns": []}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for label, slow, fast, shape in pairs(folder):
            for batch in (1, 8):
                x = np.random.default_rng(0).standard_normal((batch, *shape)).astype(np.float32)
                feed = folder / "feed.npy"
                np.save(feed, x)
                truth = oracle(slow, fast, feed, args.processes)
                single = statistics.median(single_runs(slow, fast, x) for _ in range(args.repeats))
                turn = statistics.median(turns(slow, fast, x) for _ in range(args.repeats))
                errors["single"].append(single / truth - 1)
                errors["turns"].append(turn / truth - 1)
                table.add_row(label, str(batch), f"{truth:.2f}x", f"{single:.2f}x", f"{single / truth - 1:+.0%}",
                              f"{turn:.2f}x", f"{turn / truth - 1:+.0%}")
                print(f"{label} batch {batch}: own {truth:.2f}x, single runs {single:.2f}x, turns {turn:.2f}x",
                      file=sys.stderr)
    table.add_row("median |error|", "", "", "", f"{np.median(np.abs(errors['single'])):.0%}", "",
                  f"{np.median(np.abs(errors['turns'])):.0%}")
    table.add_row("largest |error|", "", "", "", f"{np.max(np.abs(errors['single'])):.0%}", "",
                  f"{np.max(np.abs(errors['turns'])):.0%}")
    Console(width=160).print(table)
    print(f"python benchmarks/latency_protocol.py --processes {args.processes} --repeats {args.repeats}  "
          f"({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
