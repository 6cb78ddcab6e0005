"""The torch bridge round trip: an ONNX model into PyTorch, trained, and back to ONNX.

    python examples/bridge_roundtrip.py

1. ``onnxkd.to_torch`` turns examples/models/tiny_cnn.onnx into an nn.Module whose parameters are the
   model's initializers; its eval output is checked against onnxruntime on the same batch.
2. A few SGD steps train it (train mode: BatchNormalization uses batch statistics).
3. ``onnxkd.write_back`` puts the trained weights and running statistics into a copy of the graph
   (demo_out/tiny_cnn_trained.onnx), which onnxruntime runs to the bridge's eval output again.
Exit code 0 when every check passes.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from rich.console import Console
from rich.table import Table

import onnxkd

HERE = Path(__file__).parent
MODEL = HERE / "models" / "tiny_cnn.onnx"
OUT_DIR = Path("demo_out")
FIDELITY = 1e-4  # max|bridge - onnxruntime| / max|onnxruntime|, eval, fp32
WRITE_BACK = 1e-5


def onnxruntime_outputs(path: Path, x: torch.Tensor) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]


def compare(bridge: torch.Tensor, reference: np.ndarray) -> tuple[float, float]:
    diff = float(np.abs(bridge.detach().numpy() - reference).max())
    return diff, diff / max(float(np.abs(reference).max()), 1e-12)


def main() -> int:
    torch.manual_seed(0)
    torch.set_num_threads(2)
    console = Console()
    proto = onnx.load(str(MODEL))
    op_types = sorted({n.op_type for n in proto.graph.node})

    module = onnxkd.to_torch(MODEL).eval()
    params = sum(p.numel() for p in module.parameters())
    x = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        imported = module(x)[0]
    import_err = compare(imported, onnxruntime_outputs(MODEL, x))

    # Train: fit random labels for a few steps (the loss must go down).
    labels = torch.randint(0, 10, (8,), generator=torch.Generator().manual_seed(2))
    optimizer = torch.optim.SGD(module.parameters(), lr=0.1, momentum=0.9)
    module.train()
    losses = []
    for _ in range(8):
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(module(x)[0], labels)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())

    OUT_DIR.mkdir(exist_ok=True)
    trained_path = OUT_DIR / "tiny_cnn_trained.onnx"
    onnxkd.write_back(module, MODEL, trained_path)
    module.eval()
    with torch.no_grad():
        trained = module(x)[0]
    written_err = compare(trained, onnxruntime_outputs(trained_path, x))

    rows = [
        ("imported", MODEL, import_err, FIDELITY),
        ("trained", trained_path, written_err, WRITE_BACK),
    ]
    table = Table(title="ONNX -> torch -> ONNX, each checked with onnxruntime", title_justify="left")
    for header in ("model", "ops", "params", "max abs err", "rel err", "verdict"):
        table.add_column(header, justify="right" if header in ("params", "max abs err", "rel err") else "left")
    ok = True
    for step, path, (abs_err, rel_err), bound in rows:
        passed = rel_err <= bound
        ok &= passed
        verdict = f"[green]PASS[/] <={bound:g}" if passed else f"[bold red]FAIL[/] >{bound:g}"
        table.add_row(f"{path.name} ({step})", str(len(proto.graph.node)), f"{params:,}", f"{abs_err:.1e}", f"{rel_err:.1e}", verdict)
    console.print(f"[bold]{os.path.relpath(MODEL)}[/]: ops {', '.join(op_types)}", highlight=False)
    console.print(table)
    loss_ok = losses[-1] < losses[0]
    ok &= loss_ok
    console.print(f"SGD on 8 images: loss {losses[0]:.3f} -> {losses[-1]:.3f} "
                  f"({'[green]lower[/]' if loss_ok else '[bold red]not lower[/]'}); trained model: {trained_path}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
