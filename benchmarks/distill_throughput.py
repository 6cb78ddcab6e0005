"""Distillation throughput of `onnxkd distill` against a hand-written PyTorch KD loop, and the accuracy
each pruning criterion leaves to recover on digits.

Table 1, throughput. For each architecture the teacher is exported with BatchNorm kept as nodes
(``do_constant_folding=False``: otherwise the bridge would train a BN-free graph against a native module
with BN) and pruned at 0.5; the native student is the same class at half width, which is exactly the
pruned architecture. The plain loop is what a user writes by hand: teacher forward under no_grad,
student forward, KD loss (KL at T=4), backward, clip, AdamW step. `onnxkd distill` runs the same number
of epochs on the same data and batch size, once with the teacher computed on every step (like the plain
loop) and once with its default cached teacher outputs. Runs are interleaved (rotating order) and each
figure is the median of the rounds' training samples/s (validation and set-up excluded on both sides).

Table 2, criteria. The digits teacher pruned by l1, taylor and kd at each ratio, distilled for the same
epochs, with the validation accuracy measured by onnxruntime (mean and spread over seeds).

    python benchmarks/distill_throughput.py [--rounds 5] [--epochs 3] [--device cpu] [--seeds 3] [--models lstm]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "examples" / "digits"))
import make_teacher  # noqa: E402  (the digits example's network and data split)
import models  # noqa: E402  (the architecture zoo lives with the tests)

import onnxkd  # noqa: E402
from onnxkd.distill import losses  # noqa: E402

TEMPERATURE, LR, CLIP = 4.0, 1e-3, 5.0


class SequenceReader(torch.nn.Module):
    """A 2-layer LSTM over [batch, 50 steps, 40 features] (speech-feature sized), classifying its last step."""

    def __init__(self, hidden: int):
        super().__init__()
        self.lstm = torch.nn.LSTM(40, hidden, num_layers=2, batch_first=True)
        self.head = torch.nn.Linear(hidden, 10)

    def forward(self, x):
        return self.head(self.lstm(x)[0][:, -1])


def architectures(batch: int, names: list[str] | None = None):
    """name -> (native teacher, native student at half width, data array, batch size)."""
    digits = make_teacher.digits_split()[0]
    rng = np.random.default_rng(0)
    images = rng.standard_normal((1024, 3, 32, 32)).astype(np.float32)
    sequences = rng.standard_normal((1024, 50, 40)).astype(np.float32)
    torch.manual_seed(0)
    found = {
        "digits_cnn": lambda: (make_teacher.DigitsCNN(32), make_teacher.DigitsCNN(16), digits, batch),
        "resnet": lambda: (models.ResNetTiny(width=16), models.ResNetTiny(width=8), images, batch),
        "lstm": lambda: (SequenceReader(128), SequenceReader(64), sequences, batch),
    }
    return {name: build() for name, build in found.items() if names is None or name in names}


def export_teacher(native: torch.nn.Module, x: np.ndarray, path: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(native.eval(), (torch.from_numpy(x[:2]),), str(path), dynamo=False, opset_version=17,
                          do_constant_folding=False, input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    return path


def plain_loop(teacher, student, data: np.ndarray, epochs: int, batch: int, device: torch.device) -> float:
    """A hand-written KD loop over native modules: training samples per second."""
    teacher, student = teacher.to(device).eval(), student.to(device).train()
    optimizer = torch.optim.AdamW(student.parameters(), lr=LR)
    x_all = torch.from_numpy(data).to(device)
    steps = -(-len(data) // batch)
    samples, started = 0, time.perf_counter()
    for epoch in range(epochs):
        order = torch.from_numpy(np.random.default_rng([0, epoch]).permutation(len(data))).to(device)
        for step in range(steps):
            x = x_all[order[torch.arange(step * batch, (step + 1) * batch, device=device) % len(data)]]
            with torch.no_grad():
                t = teacher(x)
            loss = losses.kd_kl(student(x), t, TEMPERATURE)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(student.parameters(), CLIP)
            optimizer.step()
            samples += len(x)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return samples / (time.perf_counter() - started)


def onnxkd_loop(teacher: Path, student: Path, data: np.ndarray, epochs: int, batch: int, device: str,
                cache: bool) -> float:
    result = onnxkd.distill(teacher, student, {"input": data}, None, val_data={"input": data[:64]}, epochs=epochs,
                            batch_size=batch, lr=LR, clip_grad=CLIP, temperature=TEMPERATURE, device=device,
                            recalibrate_bn=False, cache_mb=2048 if cache else 0)
    return result.samples_per_s


def throughput_table(args, console) -> None:
    from rich.table import Table

    device = torch.device(args.device)
    table = Table(title=f"Distillation throughput, training samples/s (median of {args.rounds} interleaved rounds, "
                        f"{args.epochs} epochs each, {device}, {torch.get_num_threads()} threads)")
    for header in ("model", "batch", "plain PyTorch", "onnxkd, teacher per step", "ratio", "onnxkd, cached teacher",
                   "ratio"):
        table.add_column(header, justify="left" if header == "model" else "right")
    with tempfile.TemporaryDirectory() as tmp:
        for name, (teacher, student, data, batch) in architectures(args.batch, args.models).items():
            teacher_path = export_teacher(teacher, data, Path(tmp) / f"{name}.onnx")
            pruned = Path(tmp) / f"{name}-pruned.onnx"
            result = onnxkd.prune(teacher_path, 0.5, round_to=1)  # exactly the hand-written student's widths
            onnxkd.save(result.model, pruned)
            assert _weight_shapes(student) == sorted(_onnx_shape(v.const_value.shape) for v in
                                                     result.model.graph.initializers.values()
                                                     if len(_onnx_shape(v.const_value.shape)) >= 2), name  # same net
            runs = {"plain": lambda: plain_loop(teacher, student, data, args.epochs, batch, device),
                    "bridge": lambda: onnxkd_loop(teacher_path, pruned, data, args.epochs, batch, args.device, False),
                    "cached": lambda: onnxkd_loop(teacher_path, pruned, data, args.epochs, batch, args.device, True)}
            for run in runs.values():  # warm-up
                run()
            rates: dict[str, list[float]] = {k: [] for k in runs}
            order = list(runs)
            for index in range(args.rounds):
                for kind in order[index % 3:] + order[:index % 3]:
                    rates[kind].append(runs[kind]())
            median = {k: statistics.median(v) for k, v in rates.items()}
            ratio = {k: median[k] / median["plain"] for k in ("bridge", "cached")}
            colour = {k: "green" if ratio[k] >= 0.9 else "red" for k in ratio}
            table.add_row(name, str(batch), f"{median['plain']:,.0f}", f"{median['bridge']:,.0f}",
                          f"[{colour['bridge']}]{ratio['bridge']:.2f}x[/]", f"{median['cached']:,.0f}",
                          f"[{colour['cached']}]{ratio['cached']:.2f}x[/]")
    console.print(table)


def criteria_table(args, console) -> None:
    from rich.table import Table

    digits = ROOT / "examples" / "digits"
    teacher, train, val = digits / "teacher.onnx", digits / "train.npz", digits / "val.npz"
    held = np.load(val)
    session = ort.InferenceSession(str(teacher), providers=["CPUExecutionProvider"])
    teacher_accuracy = (session.run(None, {"image": held["image"]})[0].argmax(1) == held["labels"]).mean()
    table = Table(title=f"Accuracy recovered on digits by criterion (onnxruntime, validation; teacher "
                        f"{teacher_accuracy:.1%}; mean ± std over {args.seeds} seeds)")
    epochs_list = [int(e) for e in args.criteria_epochs.split(",")]
    for header in ["criterion", "ratio", "pruned"] + [f"{e} epochs" for e in epochs_list]:
        table.add_column(header, justify="left" if header == "criterion" else "right")
    with tempfile.TemporaryDirectory() as tmp:
        for ratio in [float(r) for r in args.ratios.split(",")]:
            for criterion in ("l1", "taylor", "kd"):
                pruned = Path(tmp) / f"{criterion}-{ratio}.onnx"
                _prune_cli(teacher, ratio, criterion, train, pruned)
                cells = [f"{_accuracy(pruned, held):.1%}"]
                for epochs in epochs_list:
                    scores = []
                    for seed in range(args.seeds):
                        out = Path(tmp) / "student.onnx"
                        onnxkd.distill(teacher, pruned, train, out, val_data=val, epochs=epochs, seed=seed)
                        scores.append(_accuracy(out, held))
                    cells.append(f"{np.mean(scores):.1%} ± {np.std(scores):.1%}")
                table.add_row(criterion, f"{ratio:g}", *cells)
    console.print(table)


def _prune_cli(teacher: Path, ratio: float, criterion: str, train: Path, out: Path) -> None:
    """`onnxkd prune` as a user runs it (kd and taylor measure on --data), its printout swallowed."""
    import contextlib
    import io

    from onnxkd.cli import main

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            main(["prune", str(teacher), "--ratio", str(ratio), "--criterion", criterion, "--data", str(train),
                  "-o", str(out)])
        except SystemExit as exit_info:
            assert exit_info.code in (0, None), exit_info.code


def _weight_shapes(module: torch.nn.Module) -> list[tuple]:
    return sorted(tuple(p.shape) for p in module.parameters() if p.dim() >= 2)


def _onnx_shape(shape) -> tuple:
    """An initializer's shape as the native parameter's: ONNX's recurrent weights and biases have a leading
    directions axis (none of these networks has another tensor whose first dim is 1)."""
    return tuple(shape[1:]) if len(shape) >= 2 and shape[0] == 1 else tuple(shape)


def _accuracy(path: Path, held) -> float:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return float((session.run(None, {"image": held["image"]})[0].argmax(1) == held["labels"]).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--ratios", default="0.5,0.7")
    parser.add_argument("--criteria-epochs", default="2,10")
    parser.add_argument("--skip-criteria", action="store_true", help="only the throughput table (GPU check)")
    parser.add_argument("--models", type=lambda text: text.split(","), default=None,
                        help="throughput table rows, e.g. lstm (default: digits_cnn, resnet, lstm)")
    args = parser.parse_args()
    from rich.console import Console

    console = Console(width=160)
    throughput_table(args, console)
    if not args.skip_criteria:
        criteria_table(args, console)
    console.print("command: python " + " ".join([f"benchmarks/{Path(sys.argv[0]).name}"] + sys.argv[1:]),
                  highlight=False)


if __name__ == "__main__":
    main()
