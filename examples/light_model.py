"""Prune and validate a model from another framework's exporter, without any data.

    python examples/light_model.py [--model resnet50] [--out examples_out/light]

The ONNX model zoo's "light" models ship inside the onnx package (real architectures exported by
Caffe2/other converters years ago, with small random weights). Without data nothing can be distilled
or scored for accuracy, but pruning and the onnxruntime measurements work on random inputs: how many
channels could be cut (and which groups the analysis froze, and why), MACs, parameters, size and the
measured latency speed-up. ``onnxkd compress`` without ``--data`` goes one step further and distils on
random inputs (data-free), which is weak; this example stops at prune + validate.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import onnx

LIGHT = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet50", help=f"one of: {', '.join(sorted(p.stem[6:] for p in LIGHT.glob('light_*.onnx')))}")
    parser.add_argument("--ratio", type=float, default=0.5)
    parser.add_argument("--out", type=Path, default=Path("examples_out/light"))
    args = parser.parse_args()
    from rich.console import Console

    import onnxkd
    from onnxkd.commands.prune import render_summary
    from onnxkd.report import write_report
    from onnxkd.report.terminal import render

    console = Console()
    teacher = LIGHT / f"light_{args.model}.onnx"
    args.out.mkdir(parents=True, exist_ok=True)
    student = args.out / f"{args.model}.pruned.onnx"
    result = onnxkd.prune(teacher, args.ratio)
    onnxkd.save(result.model, student)
    render_summary(result.summary, console)
    frozen = [g for g in result.groups if g.frozen]
    for group in frozen[:5]:
        console.print(f"  frozen: group {group.id} ({group.size} channels): {group.frozen}", highlight=False)
    if len(frozen) > 5:
        console.print(f"  ... and {len(frozen) - 5} more frozen groups (onnxkd inspect lists them all)")
    validation = onnxkd.validate(teacher, student, batch_size=8, budget_s=1.0)
    render(validation.to_dict(), console)
    write_report(validation, args.out / f"{args.model}.report")
    console.print(f"Wrote {student} and {args.out / (args.model + '.report')}/report.html")


if __name__ == "__main__":
    main()
