"""The body of scripts/gpu_check.sh: fidelity, bf16 distillation steps and throughput on one device."""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
import torch.nn.functional as F
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import models  # noqa: E402  (the architecture zoo lives with the tests)

import onnxkd  # noqa: E402

ZOO = ["resnet", "mobilenetv3", "unet", "transformer", "gpt"]


def fidelity(path: Path, name: str, device: torch.device) -> float:
    module = onnxkd.to_torch(path).to(device).eval()
    x = models.ZOO[name].example_input(4)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    expected = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        got = module(x.to(device))[0].float().cpu().numpy()
    return float(np.abs(got - expected).max() / max(np.abs(expected).max(), 1e-12))


def kd_loss(student_logits, teacher_logits, temperature: float = 4.0):
    return F.kl_div(
        F.log_softmax(student_logits / temperature, -1), F.softmax(teacher_logits / temperature, -1), reduction="batchmean"
    ) * temperature**2


def distill_steps(path: Path, name: str, device: torch.device, steps: int = 5) -> tuple[float, float]:
    teacher = onnxkd.to_torch(path).to(device).eval()
    student = onnxkd.to_torch(path).to(device).train()
    with torch.no_grad():
        for p in student.parameters():
            p.add_(0.05 * torch.randn_like(p))
    optimizer = torch.optim.SGD(student.parameters(), lr=0.01, momentum=0.9)
    x = models.ZOO[name].example_input(16).to(device)
    losses = []
    for _ in range(steps):
        with torch.autocast(device.type, dtype=torch.bfloat16):
            with torch.no_grad():
                t = teacher(x)[0]
            loss = kd_loss(student(x)[0].float(), t.float())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss))
    return losses[0], losses[-1]


def step_time(module: torch.nn.Module, x: torch.Tensor, device: torch.device) -> float:
    optimizer = torch.optim.SGD(module.parameters(), lr=1e-3)
    module.train()
    out = module(x)
    out = out[0] if isinstance(out, tuple) else out
    out.float().square().mean().backward()
    optimizer.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = module(x)
    out = out[0] if isinstance(out, tuple) else out
    optimizer.zero_grad()
    out.float().square().mean().backward()
    optimizer.step()
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    console = Console()
    console.print(f"device: {torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'}, torch {torch.__version__}")
    table = Table(title="onnxkd GPU check")
    for column in ("model", "fidelity rel err", "bf16 KD loss first -> last", "native samples/s", "bridge / native step time"):
        table.add_column(column, justify="right")
    with tempfile.TemporaryDirectory() as folder:
        for name in ZOO:
            path = models.export(name, folder, "legacy")
            error = fidelity(path, name, device)
            first, last = distill_steps(path, name, device)
            rate, ratio = throughput(path, name, device, args.batch, args.rounds)
            table.add_row(name, f"{error:.1e}", f"{first:.4f} -> {last:.4f}", f"{rate:,.0f}", f"{ratio:.2f}x")
    console.print(table)
    console.print("command: bash scripts/gpu_check.sh " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
