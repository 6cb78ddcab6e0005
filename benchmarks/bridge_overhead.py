"""Training-step time of the torch bridge vs the native torch module it was exported from.

Same weights, same batch, forward + cross-entropy + backward + SGD step; native and bridge steps are
interleaved and the figure is the median of the per-pair time ratios (bridge / native), eager and under
torch.compile. CNNs are exported with ``do_constant_folding=False`` so BatchNormalization stays a node
(the default legacy export folds it into the convs, which would make the bridge do less work than the
native module). Transformers use the default legacy export.

    python benchmarks/bridge_overhead.py [--models resnet,transformer] [--steps 60] [--compile-backend inductor]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import models  # noqa: E402  (the architecture zoo lives with the tests)

import onnxkd  # noqa: E402

BATCH = {"cnn": 16, "transformer": 16}


def export(name: str, folder: Path) -> Path:
    native = models.build(name)
    path = folder / f"{name}.onnx"
    arch = models.ZOO[name]
    input_name = "input" if arch.family == "cnn" else "input_ids"
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(native, (arch.example_input(2),), str(path), dynamo=False, opset_version=17,
                          do_constant_folding=arch.family != "cnn", input_names=[input_name], output_names=["output"],
                          dynamic_axes={input_name: {0: "batch"}, "output": {0: "batch"}})
    return path


def step_fn(module: torch.nn.Module, forward, x, target):
    optimizer = torch.optim.SGD(module.parameters(), lr=1e-3)

    def step():
        optimizer.zero_grad(set_to_none=True)
        out = forward(x)
        logits = out[0] if isinstance(out, tuple) else out
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), target)
        loss.backward()
        optimizer.step()

    return step


def measure(name: str, folder: Path, steps: int, compile_backend: str | None) -> tuple[float, float, float]:
    """(native ms, bridge ms, median per-pair ratio)."""
    arch = models.ZOO[name]
    native = models.build(name).train()
    bridge = onnxkd.to_torch(export(name, folder)).train()
    x = arch.example_input(BATCH[arch.family])
    with torch.no_grad():
        classes = native(x).shape[-1]
        rows = native(x).reshape(-1, classes).shape[0]
    target = torch.randint(0, classes, (rows,), generator=torch.Generator().manual_seed(0))
    native_forward, bridge_forward = native, bridge
    if compile_backend:
        native_forward = torch.compile(native, backend=compile_backend)
        bridge_forward = torch.compile(bridge, backend=compile_backend)
    steps_by_kind = {"native": step_fn(native, native_forward, x, target), "bridge": step_fn(bridge, bridge_forward, x, target)}
    for step in steps_by_kind.values():  # warm-up (and compilation)
        for _ in range(3):
            step()
    times: dict[str, list[float]] = {"native": [], "bridge": []}
    for index in range(steps):
        order = ("native", "bridge") if index % 2 == 0 else ("bridge", "native")
        for kind in order:
            start = time.perf_counter()
            steps_by_kind[kind]()
            times[kind].append(time.perf_counter() - start)
    ratios = [b / n for b, n in zip(times["bridge"], times["native"])]
    return statistics.median(times["native"]) * 1e3, statistics.median(times["bridge"]) * 1e3, statistics.median(ratios)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet,transformer")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--compile-backend", default="inductor", help="torch.compile backend ('none' to skip)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Training step, bridge vs native: CPU, {args.threads} thread(s), {args.steps} pairs, "
                        f"torch {torch.__version__}, compile backend {args.compile_backend}")
    for header in ("model", "mode", "batch", "native ms", "bridge ms", "median ratio"):
        table.add_column(header, justify="left" if header in ("model", "mode") else "right")
    modes = [("eager", None)] + ([] if args.compile_backend == "none" else [("compile", args.compile_backend)])
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            for label, backend in modes:
                native_ms, bridge_ms, ratio = measure(name, Path(tmp), args.steps, backend)
                colour = "green" if ratio <= 1.10 else "red"
                table.add_row(name, label, str(BATCH[models.ZOO[name].family]), f"{native_ms:.2f}", f"{bridge_ms:.2f}", f"[{colour}]{ratio:.3f}x[/]")
    console = Console()
    console.print(table)
    console.print("command: python " + " ".join([sys.argv[0]] + sys.argv[1:]) if len(sys.argv) > 1 else f"command: python {sys.argv[0]}", highlight=False)


if __name__ == "__main__":
    main()
