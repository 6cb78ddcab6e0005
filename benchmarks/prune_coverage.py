"""Pruning coverage: MACs ratio after ``onnxkd prune --ratio 0.5`` and the time of the whole command.

For every test architecture (the zoo, both exporters, and the ONNX-zoo light models) this runs the
prune command in-process (load, analyse, rewrite, save; median of --repeats runs), checks the output
with the ONNX checker and onnxruntime (same output shapes as the teacher), and compares with the
baseline in the same run: onnxsim's ``apply_structured_pruning_cpp`` at sparsity 0.5.

Goals: median MACs ratio <= 0.35 on CNNs, <= 0.6 on transformers, every model valid, a
ResNet-50-sized graph (light_resnet50: 25.6M parameters) pruned in under 2 s.

    python benchmarks/prune_coverage.py [--repeats 3] [--ratio 0.5] [--only NAME]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from onnxkd.cli import main  # noqa: E402
from onnxkd.graph_passes.metrics import count_macs  # noqa: E402

LIGHT = ["bvlc_alexnet", "densenet121", "inception_v1", "inception_v2", "resnet50", "shufflenet", "squeezenet",
         "vgg19", "zfnet512"]


def models(folder: Path) -> list[tuple[str, str, Path]]:
    import torch

    torch.set_num_threads(1)
    import models as zoo
    from light_models import light_model_path

    rows = []
    for name, arch in zoo.ZOO.items():
        for exporter in zoo.EXPORTERS:
            rows.append((f"{name}-{exporter}", arch.family, zoo.export(name, folder, exporter)))
    rows.append(("resnet-dynamo-ext", "cnn", zoo.export("resnet", folder, "dynamo", external_data=True)))
    # as users' files often are: token models with a dynamic sequence length too, CNNs moved to channels_last
    # (the legacy export of nn.MultiheadAttention bakes the length in: onnxruntime rejects it at other lengths)
    for name, arch in zoo.ZOO.items():
        if arch.family == "transformer" and name != "vit":
            rows += [(f"{name}-{exporter}-seq", arch.family, zoo.export(name, folder, exporter, dynamic_seq=True))
                     for exporter in zoo.EXPORTERS if (name, exporter) != ("mha", "legacy")]
    rows += [(f"{name}-dynamo-cl", "cnn", zoo.export(name, folder, "dynamo", channels_last=True))
             for name in ("resnet", "mobilenetv2", "densenet")]
    rows += [(f"light_{n}", "cnn", light_model_path(n)) for n in LIGHT]
    return rows


def shapes_for(path: Path) -> dict[str, list[int]]:
    proto = onnx.load(str(path), load_external_data=False)
    inits = {i.name for i in proto.graph.initializer}
    out = {}
    for value in proto.graph.input:
        if value.name not in inits:
            # a free batch counts 1, a free sequence length the zoo's 12 tokens
            out[value.name] = [d.dim_value if d.HasField("dim_value") else (12 if axis == 1 else 1)
                               for axis, d in enumerate(value.type.tensor_type.shape.dim)]
    return out


def feeds(path: Path, shapes: dict[str, list[int]]) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    proto = onnx.load(str(path), load_external_data=False)
    types = {v.name: v.type.tensor_type.elem_type for v in proto.graph.input}
    return {n: (rng.integers(0, 10, s).astype(np.int64) if types[n] == 7 else rng.standard_normal(s).astype(np.float32))
            for n, s in shapes.items()}


def output_shapes(model, inputs) -> list[tuple] | None:
    try:
        source = str(model) if isinstance(model, Path) else model.SerializeToString()
        session = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
        return [o.shape for o in session.run(None, inputs)]
    except Exception:
        return None


def total_macs(model, shapes) -> int:
    # count_macs re-infers shapes at the fixed input shapes (stale value_info and shape arithmetic included)
    return sum(count_macs(model, shapes).values())


def run_onnxkd(path: Path, out: Path, ratio: float, repeats: int) -> tuple[float, dict]:
    times, summary = [], {}
    for _ in range(repeats):
        buffer = io.StringIO()
        start = time.perf_counter()
        with contextlib.redirect_stdout(buffer):
            # round-to 1: the reach of the analysis, not the rounding (the default 16 leaves narrow groups whole)
            main(["prune", str(path), "--ratio", str(ratio), "--round-to", "1", "-o", str(out), "--json"])
        times.append(time.perf_counter() - start)
        summary = json.loads(buffer.getvalue())["summary"]
    return statistics.median(times), summary


def run_onnxsim(path: Path, ratio: float):
    import onnxsim

    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            return onnxsim.apply_structured_pruning_cpp(onnx.load(str(path)), sparsity=ratio)
    except Exception:
        return None


def main_(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ratio", type=float, default=0.5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", help="substring of the model names to run")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="prune_coverage_"))
    rows = []
    for name, family, path in models(work / "zoo"):
        if args.only and args.only not in name:
            continue
        shapes = shapes_for(path)
        inputs = feeds(path, shapes)
        teacher_shapes = output_shapes(path, inputs)
        before = total_macs(str(path), shapes)
        out = work / f"{name}-pruned.onnx"
        seconds, summary = run_onnxkd(path, out, args.ratio, args.repeats)
        after = total_macs(str(out), shapes)
        valid = output_shapes(out, inputs) == teacher_shapes
        try:
            onnx.checker.check_model(str(out), full_check=True)
        except Exception:
            valid = False
        baseline = run_onnxsim(path, args.ratio)
        base_ratio, base_valid = None, False
        if baseline is not None:
            base_valid = output_shapes(baseline, inputs) == teacher_shapes
            try:
                base_ratio = total_macs(baseline, shapes) / before if before else None
            except Exception:
                base_ratio = None
        rows.append((name, family, summary["pruned"], summary["groups"], after / before if before else None, valid,
                     seconds, base_ratio, base_valid))
    _print(rows, args)
    shutil.rmtree(work, ignore_errors=True)


def _print(rows, args) -> None:
    print(f"{'model':26s} {'family':11s} {'groups':>9s} {'MACs':>6s} {'valid':>5s} {'time s':>7s} "
          f"{'onnxsim MACs':>12s} {'valid':>5s}")
    for name, family, pruned, groups, ratio, valid, seconds, base, base_valid in rows:
        base_text = f"{base:.3f}" if base is not None else "-"
        ratio_text = f"{ratio:.3f}" if ratio is not None else "-"
        print(f"{name:26s} {family:11s} {pruned:>4d}/{groups:<4d} {ratio_text:>6s} {'yes' if valid else 'NO':>5s} "
              f"{seconds:7.2f} {base_text:>12s} {'yes' if base_valid else 'no':>5s}")
    for family in ("cnn", "transformer"):
        ratios = [r[4] for r in rows if r[1] == family and r[4] is not None]
        bases = [r[7] for r in rows if r[1] == family and r[7] is not None and r[8]]
        if ratios:
            print(f"median MACs ratio, {family}: onnxkd {statistics.median(ratios):.3f} "
                  f"(onnxsim, valid outputs only: {statistics.median(bases) if bases else float('nan'):.3f})")
    valid = sum(r[5] for r in rows)
    print(f"valid models: onnxkd {valid}/{len(rows)}, onnxsim {sum(r[8] for r in rows)}/{len(rows)}")
    print(f"command: python benchmarks/prune_coverage.py --ratio {args.ratio} --repeats {args.repeats}"
          + (f" --only {args.only}" if args.only else ""))


if __name__ == "__main__":
    main_()
