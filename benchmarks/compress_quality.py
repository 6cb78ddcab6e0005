"""`onnxkd compress` on the example tasks: what the student keeps, what it costs, how long each stage takes.

For each task the teacher is built (or taken from examples/), compressed with the default options at the
given ratio, and measured: teacher and student accuracy on the held-out set (onnxruntime, through the
report), or for a map output the relative squared error sum((s - t)^2) / sum(t^2) of student vs teacher
computed here with onnxruntime; the MACs ratio (student / teacher); the p50 speed-up at batch 1 and 32
(interleaved, the validate protocol); and the wall time of each stage.

    python benchmarks/compress_quality.py [--tasks digits,digits-0.7,digits-0.7-steps3,transformer,segmentation,sequence]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))
import segmentation  # noqa: E402  (the examples build their teachers)
import sequence  # noqa: E402
import transformer  # noqa: E402

import onnxkd  # noqa: E402

DIGITS = ROOT / "examples" / "digits"


def tasks(folder: Path) -> dict:
    """name -> (builder returning {teacher, train, val}, ratio, extra compress options)."""
    digits = lambda: {"teacher": DIGITS / "teacher.onnx", "train": DIGITS / "train.npz", "val": DIGITS / "val.npz"}  # noqa: E731
    return {
        "digits": (digits, 0.5, {}),
        "digits-0.7": (digits, 0.7, {}),
        "digits-0.7-steps3": (digits, 0.7, {"steps": 3}),
        "digits-0.7-l1": (digits, 0.7, {"criterion": "l1"}),
        "transformer": (lambda: transformer.build(folder / "transformer"), 0.5, {}),
        "segmentation": (lambda: segmentation.build(folder / "segmentation"), 0.5, {}),
        "sequence": (lambda: sequence.build(folder / "sequence"), 0.5, {}),
    }


def relative_error(teacher: Path, student: str, val: Path) -> float:
    feeds = dict(np.load(val))
    feeds.pop("labels", None)
    run = lambda path: ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)[0]  # noqa: E731
    t, s = run(teacher), run(student)
    return float(((s - t) ** 2).sum() / (t ** 2).sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="digits,digits-0.7,digits-0.7-steps3,digits-0.7-l1,transformer,segmentation,"
                                             "sequence")
    args = parser.parse_args()
    from rich.console import Console
    from rich.table import Table

    console = Console(width=200)
    table = Table(title="onnxkd compress on the example tasks (default options; 2-core CPU, onnxruntime CPU)")
    for header in ("task", "ratio", "criterion", "teacher", "student", "MACs ratio", "speed-up b1", "speed-up b32",
                   "prune s", "distill s", "validate s", "epochs"):
        table.add_column(header, justify="left" if header in ("task", "criterion") else "right")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for name in args.tasks.split(","):
            build, ratio, options = tasks(folder)[name]
            paths = build()
            out = folder / f"{name}.student.onnx"
            result = onnxkd.compress(paths["teacher"], ratio, paths["train"], val_data=paths["val"], output=out,
                                     report=False, **options)
            r = result.to_dict()
            if r.get("accuracy"):
                teacher, student = f"{r['accuracy']['teacher']:.1%}", f"{r['accuracy']['student']:.1%}"
            else:
                teacher, student = "error 0", f"error {relative_error(paths['teacher'], result.student, paths['val']):.4f}"
            seconds = {s["name"]: s["seconds"] for s in r["compress"]["stages"]}
            speed = r["speedup"]
            table.add_row(name, f"{ratio:g}", r["compress"]["prune"]["criterion"]
                          + (f" x{options['steps']}" if "steps" in options else ""), teacher, student,
                          f"{1 / speed['macs_reduction']:.3f}", f"{speed['p50']:.2f}x", f"{speed['batched']['p50']:.2f}x",
                          f"{seconds['prune']:.1f}", f"{seconds['distill']:.1f}", f"{seconds['validate']:.1f}",
                          str(r["compress"]["distill"]["epochs"]))
    console.print(table)
    console.print("command: python " + " ".join([f"benchmarks/{Path(sys.argv[0]).name}"] + sys.argv[1:]), highlight=False)


if __name__ == "__main__":
    main()
