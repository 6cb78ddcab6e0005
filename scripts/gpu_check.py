"""The body of scripts/gpu_check.sh: fidelity, bf16 distillation and throughput on one CUDA device.

Fails loudly (exit 1) when a check fails or when CUDA is absent (``--allow-cpu`` runs it on the CPU as a
dry run of the script itself). Checks:
1. bridge fidelity on the device (fp32, TF32 off) vs onnxruntime's CPU provider (relative error <= 1e-4);
2. `onnxkd.distill` for a few bf16-autocast steps on the device: finite losses, a written student;
3. training-step time of the bridge vs the native module (ratio printed), and the distillation
   throughput table of benchmarks/distill_throughput.py (onnxkd vs a hand-written KD loop);
4. the data loader on the device: a folder of JPEGs distilled with 0 and 4 loader workers (pinned memory),
   without and with `--augment light` (augmented on the device): samples/s and the share of time waiting for
   data (printed), and the same student with 0 and 4 workers (bit for bit);
5. (run first) int8 on the GPU's execution providers: `onnxkd.quantize` for CUDA (and TensorRT where it starts):
   the activation type chosen (S8S8), int8 speed-ups at batch 1 and 64 over float, the nodes kept float. Skipped,
   with a line saying so, where onnxruntime has no CUDA provider (the plain `onnxruntime` wheel).
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # onnxkd itself where it is not installed (a prepared machine's own python)
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))
import models  # noqa: E402  (the architecture zoo lives with the tests)

# Deterministic cuBLAS (the loader check compares two students bit for bit) needs this before CUDA starts.
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

import onnxkd  # noqa: E402

ZOO = ["resnet", "mobilenetv3", "unet", "transformer", "gpt"]
FIDELITY = 1e-4


def fidelity(path: Path, name: str, device: torch.device) -> float:
    """The bridge in fp32 on the device against onnxruntime's CPU provider (the exact fp32 reference: the CUDA
    provider, like cuDNN under torch by default, may multiply in TF32, which alone moves outputs by ~1e-3)."""
    module = onnxkd.to_torch(path).to(device).eval()
    x = models.ZOO[name].example_input(4)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    expected = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        with torch.no_grad():
            got = module(x.to(device))[0].float().cpu().numpy()
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
    return float(np.abs(got - expected).max() / max(np.abs(expected).max(), 1e-12))


def bf16_distill(path: Path, name: str, device: torch.device, folder: Path) -> tuple[float, float]:
    """A few bf16 steps of the real engine on a pruned student: (first, last) epoch loss."""
    pruned = folder / f"{name}-pruned.onnx"
    onnxkd.save(onnxkd.prune(path, 0.5).model, pruned)
    x = torch.cat([models.ZOO[name].example_input(16) for _ in range(4)]).numpy()
    feeds = {onnxkd.load(path).graph.inputs[0].name: x}
    result = onnxkd.distill(path, pruned, feeds, folder / f"{name}-student.onnx", val_data=feeds, epochs=3,
                            batch_size=16, device=str(device), bf16=True)
    losses = [r["loss"] for r in result.history]
    return losses[0], losses[-1]


def step_time(module: torch.nn.Module, x: torch.Tensor, device: torch.device) -> float:
    optimizer = torch.optim.SGD(module.parameters(), lr=1e-3)
    module.train()

    def step():
        out = module(x)
        out = out[0] if isinstance(out, tuple) else out
        optimizer.zero_grad()
        out.float().square().mean().backward()
        optimizer.step()

    step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def throughput(path: Path, name: str, device: torch.device, batch: int, rounds: int) -> tuple[float, float]:
    native = models.build(name).to(device)
    bridge = onnxkd.to_torch(path).to(device)
    x = models.ZOO[name].example_input(batch).to(device)
    native_times, bridge_times = [], []
    for _ in range(rounds):  # interleaved so drift hits both alike
        native_times.append(step_time(native, x, device))
        bridge_times.append(step_time(bridge, x, device))
    native_median, bridge_median = statistics.median(native_times), statistics.median(bridge_times)
    return batch / native_median, bridge_median / native_median


def image_folder(folder: Path, count: int = 2048) -> Path:
    """``count`` 64x64 JPEGs in 10 class folders (stripes at a class's angle, noise)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:64, 0:64]
    for i in range(count):
        label = i % 10
        angle = label * np.pi / 10
        stripes = np.sin((xx * np.cos(angle) + yy * np.sin(angle)) / 3 + rng.uniform(0, 6))
        pixels = np.clip(128 + 90 * stripes[..., None] + rng.normal(0, 20, (64, 64, 3)), 0, 255).astype(np.uint8)
        path = folder / "images" / str(label) / f"{i}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(path, quality=90)
    return folder / "images"


def loader_check(device: torch.device, folder: Path, console: Console) -> bool:
    """Distil the resnet zoo model at 64x64 from JPEGs with 0 and 4 workers, plain and augmented."""
    path = models.export("resnet", folder, "legacy", image_size=64)
    pruned = folder / "resnet-loader-pruned.onnx"
    onnxkd.save(onnxkd.prune(path, 0.5).model, pruned)
    images = image_folder(folder)
    table = Table(title="data loader on the device (2,048 JPEGs of 64x64, 2 epochs of 64)")
    for column in ("augment", "workers", "samples/s", "waiting for data"):
        table.add_column(column, justify="right")
    students = {}
    if device.type == "cpu":  # the dry run: distill lowers CPU threads under workers; one thread compares exactly
        torch.set_num_threads(1)
    else:  # cuDNN's fastest convolution backward sums in a varying order: two runs differ even with 0 workers
        torch.use_deterministic_algorithms(True, warn_only=True)
    from onnxkd.data import ImageOptions

    options = ImageOptions(size=(64, 64))
    for augment in ("none", "light"):
        for workers in (0, 4):
            result = onnxkd.distill(path, pruned, images, folder / f"loader-{augment}-{workers}.onnx", epochs=2,
                                    batch_size=64, device=str(device), workers=workers, augment=augment,
                                    image_options=options)
            last = result.history[-1]
            students[augment, workers] = result.model
            table.add_row(augment, str(workers), f"{last['samples_per_s']:,.0f}", f"{last['data_wait']:.0%}")
    torch.use_deterministic_algorithms(False)  # the timings that follow use the fast kernels
    console.print(table)
    same = all(np.array_equal(students[a, 0].graph.initializers[n].const_value.numpy(), v.const_value.numpy())
               for a in ("none", "light") for n, v in students[a, 4].graph.initializers.items())
    console.print(f"same student with 0 and 4 workers: {'[green]yes[/]' if same else '[red]NO[/]'}")
    return same


def int8_check(folder: Path, console: Console) -> None:
    """Quantize the zoo ResNet (at 64x64) for each GPU provider onnxruntime has, and print what paid."""
    from onnxkd.validate.sessions import PROVIDERS, usable_providers

    providers = [p for p in ("cuda", "tensorrt") if PROVIDERS[p] in usable_providers()]
    for p in ("cuda", "tensorrt"):
        if PROVIDERS[p] in ort.get_available_providers() and p not in providers:
            console.print(f"int8 on {p}: skipped, this onnxruntime lists {PROVIDERS[p]} but cannot start it here")
    if not providers:
        console.print("int8 on the GPU: skipped, this onnxruntime has no CUDA execution provider that starts "
                      "(pip uninstall -y onnxruntime && pip install onnxruntime-gpu)")
        return
    path = models.export("resnet", folder, "legacy", image_size=64)
    data = {"input": np.random.default_rng(0).standard_normal((256, 3, 64, 64)).astype(np.float32)}
    table = Table(title="int8 on the GPU (zoo ResNet, 64x64, random calibration data)")
    for column in ("provider", "activations", "int8 kept", "speed-up batch 1", "speed-up batch 64", "float nodes"):
        table.add_column(column, justify="right")
    notes = []
    for provider in providers:
        result = onnxkd.quantize(path, data, provider=provider, batch_size=64, eval_samples=128)
        table.add_row(provider, result.target["activation"], "yes" if result.int8 else "no",
                      *(f"{result.speedups.get(b, float('nan')):.2f}x" for b in ("1", "64")), str(len(result.float_nodes)))
        notes += [f"{provider}: {note}" for note in result.notes]
    console.print(table)
    for note in notes:
        console.print(note, highlight=False)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--allow-cpu", action="store_true", help="dry run on the CPU when CUDA is absent")
    args = parser.parse_args()
    console = Console(width=160)
    if not torch.cuda.is_available() and not args.allow_cpu:
        console.print(f"[red]FAIL[/]: CUDA is not available to torch {torch.__version__} "
                      "(use --allow-cpu for a dry run on the CPU)")
        sys.exit(1)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    from onnxkd.validate.sessions import usable_providers

    console.print(f"device: {torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'}, torch {torch.__version__}, "
                  f"onnxruntime {ort.__version__}: providers that start {list(usable_providers())} "
                  f"(listed {ort.get_available_providers()})")
    table = Table(title="onnxkd GPU check")
    for column in ("model", "fidelity rel err", "bf16 distill loss, epoch 1 -> 3", "native samples/s",
                   "bridge / native step time", "verdict"):
        table.add_column(column, justify="right")
    failures = []
    with tempfile.TemporaryDirectory() as folder:
        int8_check(Path(folder), console)  # first: the one check a CPU dry run cannot reach
        for name in ZOO:
            path = models.export(name, folder, "legacy")
            error = fidelity(path, name, device)
            first, last = bf16_distill(path, name, device, Path(folder))
            rate, ratio = throughput(path, name, device, args.batch, args.rounds)
            ok = error <= FIDELITY and math.isfinite(first) and math.isfinite(last)
            if not ok:
                failures.append(name)
            table.add_row(name, f"{error:.1e}", f"{first:.4f} -> {last:.4f}", f"{rate:,.0f}", f"{ratio:.2f}x",
                          "[green]ok[/]" if ok else "[red]FAIL[/]")
        if not loader_check(device, Path(folder), console):
            failures.append("data loader (0 and 4 workers trained different students)")
    console.print(table)
    from distill_throughput import throughput_table

    throughput_table(argparse.Namespace(rounds=3, epochs=2, batch=args.batch, device=str(device), models=None), console)
    console.print("command: bash scripts/gpu_check.sh " + " ".join(sys.argv[1:]), highlight=False)
    if failures:
        console.print(f"[red]FAIL[/]: {', '.join(failures)} (fidelity above {FIDELITY:g} or a non-finite bf16 loss)")
        sys.exit(1)


if __name__ == "__main__":
    main()
