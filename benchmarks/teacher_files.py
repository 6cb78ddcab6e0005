"""`onnxkd compress` on one teacher file of each kind exporters write, trained on real data, run as users run it.

The teachers are the export-format matrix's kinds (tests/export_formats.py: torch's default export with a fixed
and a dynamic batch, a legacy export, dynamic batch and spatial dims named as PaddlePaddle and tf2onnx name
them or written as -1, external data per tensor and in a subfolder, a sigmoid map), here with trained weights:
a small residual CNN trained on scikit-learn's digits (8x8 scans upsampled to 3x16x16; the dynamic-spatial
kinds get them placed on a 20x24 canvas, the size an exported 16x16 graph never saw) and a map network trained
to segment the strokes. Each is compressed at --ratio 0.5 from another folder with relative paths, and the
student is then loaded from a moved folder. Figures come from onnxkd's report.json (measured by onnxruntime
against the original teacher file on the 360 held-out digits); one ONNX-zoo light model runs data-free. A last row
is a seq-first LSTM (torch's nn.LSTM default, x[time, batch, C]) reading each digit's 8 rows of 8 pixels as time
steps, written by torch's default export; its data holds samples on axis 0 ([N, 8, 8]) as any data does.

    python benchmarks/teacher_files.py [--epochs 15] [--teacher-epochs 12]

Prints one table and the command that made it.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from sklearn.datasets import load_digits
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from export_formats import KINDS, SigmoidMap, build_teachers  # noqa: E402

ONNXKD = Path(sys.executable).with_name("onnxkd")
TRAIN = 1437  # of scikit-learn's 1,797 digits; the other 360 are held out (the split of examples/digits)


# --------------------------------------------------------------------------- real data


def digits_images(spatial: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """All 1,797 digits as normalised 3-channel images of ``spatial`` size (seeded order) and their labels."""
    digits = load_digits()
    order = np.random.default_rng(0).permutation(len(digits.images))
    scans = digits.images[order].astype(np.float32) / 16.0
    up = np.kron(scans, np.ones((2, 2), np.float32))  # 16x16
    h, w = spatial
    canvas = np.zeros((len(up), h, w), np.float32)
    top, left = (h - 16) // 2, (w - 16) // 2
    canvas[:, top:top + 16, left:left + 16] = up
    rgb = np.stack([canvas, 0.8 * canvas + 0.1, 1.0 - canvas], axis=1)  # ink colours, not three equal planes
    rgb = (rgb - rgb.mean(axis=(0, 2, 3), keepdims=True)) / rgb.std(axis=(0, 2, 3), keepdims=True)
    return rgb.astype(np.float32), digits.target[order].astype(np.int64)


def stroke_masks(images: np.ndarray) -> np.ndarray:
    """The segmentation target: where the ink is (the first channel above its mean)."""
    return (images[:, :1] > 0.5).astype(np.float32)


def save_data(folder: Path, kind: str, model: nn.Module, input_name: str, shape: tuple[int, ...],
              classifier: bool) -> tuple[Path, Path]:
    """``build_teachers``' data hook: real digits at the kind's sample shape, with their true labels."""
    images, labels = digits_images(tuple(shape[1:]))
    arrays = {input_name: images, **({"labels": labels} if classifier else {})}
    train, val = folder / f"{kind}_train.npz", folder / f"{kind}_val.npz"
    np.savez(train, **{k: v[:TRAIN] for k, v in arrays.items()})
    np.savez(val, **{k: v[TRAIN:] for k, v in arrays.items()})
    return train, val


# --------------------------------------------------------------------------- the teachers, trained


class DigitsCNN(nn.Module):
    """Conv-BN-ReLU stem, a max-pool, a residual block at 64 channels, a global mean and a Linear: any input size
    fits, so the same network exports with fixed and with dynamic spatial dims (the matrix's tiny classifier sees
    too little of an image to read a digit)."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
                                  nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU())
        self.block = nn.Sequential(nn.Conv2d(64, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
                                   nn.Conv2d(64, 64, 3, padding=1), nn.BatchNorm2d(64))
        self.head = nn.Linear(64, 10)

    def forward(self, x):
        y = self.stem(x)
        y = torch.relu(y + self.block(y))
        return self.head(y.mean((2, 3)))


def train_classifier(epochs: int) -> nn.Module:
    """The CNN on both image sizes, so the fixed-size and the dynamic-spatial exports are equally good teachers."""
    torch.manual_seed(0)
    net = DigitsCNN()
    sizes = [digits_images((16, 16)), digits_images((20, 24))]
    optimizer = torch.optim.AdamW(net.parameters(), lr=3e-3)
    for _ in range(epochs):
        net.train()
        for x, y in sizes:
            for batch in torch.randperm(TRAIN).split(64):
                loss = nn.functional.cross_entropy(net(torch.from_numpy(x[batch])), torch.from_numpy(y[batch]))
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
    return net.eval()


class DigitsLSTM(nn.Module):
    """Seq-first, as torch's recurrent layers are by default: x[8 rows, batch, 8 pixels] -> scores[batch, 10]."""

    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(8, 128)
        self.head = nn.Sequential(nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 10))

    def forward(self, x):
        steps, _ = self.lstm(x)
        return self.head(steps[-1])


def digit_rows() -> tuple[np.ndarray, np.ndarray]:
    """The 1,797 digits (seeded order, as ``digits_images``) as [N, 8 rows, 8 pixels], normalised."""
    digits = load_digits()
    order = np.random.default_rng(0).permutation(len(digits.images))
    rows = digits.images[order].astype(np.float32) / 16.0
    return (rows - rows.mean()) / rows.std(), digits.target[order].astype(np.int64)


def seq_first_teacher(folder: Path, epochs: int) -> tuple[Path, Path, Path]:
    """The LSTM trained on the digits' rows, written by ``torch.onnx.export(m, (x,), path)`` with a dynamic batch
    (axis 1), and its data with samples on axis 0."""
    torch.manual_seed(0)
    net = DigitsLSTM()
    rows, labels = digit_rows()
    optimizer = torch.optim.AdamW(net.parameters(), lr=3e-3)
    for _ in range(epochs * 2):
        net.train()
        for batch in torch.randperm(TRAIN).split(64):
            scores = net(torch.from_numpy(rows[batch]).transpose(0, 1))
            loss = nn.functional.cross_entropy(scores, torch.from_numpy(labels[batch]))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model = folder / "models" / "seq-first-lstm" / "t.onnx"
    model.parent.mkdir(parents=True)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(net.eval(), (torch.from_numpy(rows[:2]).transpose(0, 1),), str(model),
                          dynamic_shapes=({1: torch.export.Dim("batch")},))
    train, val = folder / "seq_first_train.npz", folder / "seq_first_val.npz"
    np.savez(train, x=rows[:TRAIN], labels=labels[:TRAIN])
    np.savez(val, x=rows[TRAIN:], labels=labels[TRAIN:])
    return model, train, val


def train_segmenter(epochs: int) -> nn.Module:
    torch.manual_seed(0)
    seg = SigmoidMap()
    x, _ = digits_images((16, 16))
    target = stroke_masks(x)
    optimizer = torch.optim.AdamW(seg.parameters(), lr=3e-3)
    for _ in range(epochs):
        seg.train()
        for batch in torch.randperm(TRAIN).split(64):
            out = seg(torch.from_numpy(x[batch]))
            loss = nn.functional.binary_cross_entropy(out, torch.from_numpy(target[batch]))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return seg.eval()


# --------------------------------------------------------------------------- running compress as a user does


def compress(work: Path, kind: str, model: Path, train: Path | None, val: Path | None, epochs: int) -> dict:
    run, out = work / "run", work / "out" / kind
    run.mkdir(exist_ok=True)
    out.mkdir(parents=True)

    def rel(path: Path) -> str:
        return str(Path("..") / path.relative_to(work))

    data = ["--data", rel(train), "--val-data", rel(val)] if train is not None else []
    command = [str(ONNXKD), "compress", rel(model), "--ratio", "0.5", "--epochs", str(epochs), *data,
               "-o", rel(out / "student.onnx"), "--report", rel(out / "report")]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=run, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        return {"kind": kind, "error": f"exit {done.returncode}: {done.stderr.strip().splitlines()[-1][:120]}"}
    report = json.loads((out / "report" / "report.json").read_text())
    files = sorted(p.name for p in out.iterdir() if p.suffix in (".onnx", ".data"))
    moved = shutil.move(str(out), str(work / "moved" / kind))
    result = {"kind": kind, "report": report, "files": files, "wall_s": wall}
    student = ort.InferenceSession(str(Path(moved) / "student.onnx"), providers=["CPUExecutionProvider"])
    if val is not None and not report.get("accuracy"):  # a map: IoU of the student's strokes with the teacher's
        teacher = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
        feeds = {k: v for k, v in np.load(val).items() if k != "labels"}
        t_map, s_map = teacher.run(None, feeds)[0] > 0.5, student.run(None, feeds)[0] > 0.5
        result["map_iou"] = float((t_map & s_map).sum() / max((t_map | s_map).sum(), 1))
    return result


def row(result: dict) -> str:
    if "error" in result:
        return f"| {result['kind']} | {result['error']} |" + " |" * 7
    r = result["report"]
    t, s, speed = r["teacher"], r["student"], r["speedup"]
    if r.get("accuracy"):
        quality = f"{t['accuracy']:.1%} → {s['accuracy']:.1%}"
    elif "map_iou" in result:
        quality = f"map IoU with the teacher {result['map_iou']:.3f} (cosine {r['quality'][0]['cosine']:.4f})"
    else:
        quality = "(no data)"
    agreement = f"{r['agreement']['top1']:.1%}" if r.get("agreement") and r["agreement"].get("top1") is not None else "-"
    batched = f"{speed['batched']['p50']:.2f}x" if speed.get("batched") else "-"
    macs = f"{speed['macs_reduction']:.2f}x" if speed.get("macs_reduction") else "-"
    shape = "x".join(map(str, t["inputs"][0]["measured_shape"]))
    return (f"| {result['kind']} | {shape} | {quality} | {agreement} | {macs} | {speed['p50']:.2f}x | {batched} | "
            f"{' + '.join(result['files'])} | "
            f"{result['wall_s']:.0f} s |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30, help="distillation epochs per compress run")
    parser.add_argument("--teacher-epochs", type=int, default=15)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="onnxkd-formats-"))
    try:
        (work / "moved").mkdir()
        net, seg = train_classifier(args.teacher_epochs), train_segmenter(args.teacher_epochs)
        teachers = build_teachers(work, net=net, seg=seg, save_data=save_data)
        results = [compress(work, kind, teachers[kind].model, teachers[kind].train, teachers[kind].val, args.epochs)
                   for kind in KINDS]
        results.append(compress(work, "light-squeezenet (data-free)", teachers["light-squeezenet"].model, None,
                                None, 1))
        lstm = seq_first_teacher(work, args.teacher_epochs)
        results.append(compress(work, "seq-first LSTM, torch default export", *lstm, args.epochs))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("| teacher file | measured at | accuracy (teacher → student) | agreement | MACs fewer | "
          "speed-up b1 | speed-up b32 | student files | wall |")
    print("|---|---|---|---:|---:|---:|---:|---|---:|")
    for result in results:
        print(row(result))
    print(f"\n`python benchmarks/teacher_files.py --epochs {args.epochs} --teacher-epochs {args.teacher_epochs}`")


if __name__ == "__main__":
    main()
