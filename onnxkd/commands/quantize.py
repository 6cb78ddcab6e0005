"""``onnxkd quantize``: static int8 (QDQ) where it is measured faster and within an accuracy budget."""

from __future__ import annotations

import json
from pathlib import Path

import click

from onnxkd.commands.options import image_folder_options, image_options, input_shape_option, session_options
from onnxkd.errors import OnnxkdError
from onnxkd.qat import QAT_LR


@click.command(name="quantize", short_help="int8 (QDQ) where it is measured faster, within an accuracy budget.")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(), help="Where to write the int8 (or float) model.")
@click.option("--data", type=click.Path(), help="Calibration and evaluation samples: .npz/.npy, an image folder, a "
              "Hugging Face folder or .parquet (+ labels for the accuracy budget).")
@click.option("--random-data", is_flag=True, help="Calibrate on random inputs when there is no data (poor ranges).")
@click.option("--activation-type", type=click.Choice(["auto", "uint8", "int8"]), default="auto", show_default=True,
              help="auto: uint8 (U8S8) on x86 CPUs, int8 (S8S8) on CUDA, TensorRT and ARM.")
@click.option("--calibration", type=click.Choice(["minmax", "percentile", "entropy"]), default="percentile",
              show_default=True, help="How activation ranges are chosen from the calibration samples (percentile: "
              "the 99.999th, measured best of the three; see the README).")
@click.option("--calibration-samples", type=click.IntRange(min=1), default=128, show_default=True)
@click.option("--eval-samples", type=click.IntRange(min=1), default=500, show_default=True,
              help="Samples (not used for calibration) on which the accuracy drop is measured.")
@click.option("--scope", type=click.Choice(["auto", "all", "weighted"]), default="auto", show_default=True,
              help="What is quantized: all (every op onnxruntime can: CNNs run int8 through Adds and pools), "
              "weighted (only Conv, Gemm, MatMul: a transformer's residual stream stays float), or auto: all, "
              "else weighted where all does not pay or loses more than the budget.")
@click.option("--per-tensor", is_flag=True, help="One scale per weight tensor instead of one per output channel.")
@click.option("--max-accuracy-drop", type=click.FloatRange(0, 1), default=0.01, show_default=True,
              help="Budget: top-1 accuracy lost with labels, else 1 - agreement with the float model (or the "
                   "relative output error); the most sensitive nodes go back to float until it holds.")
@click.option("--min-int8-speedup", type=click.FloatRange(min=0), metavar="X",
              help="Gate: exit 1 unless the model written is int8 and at least X times faster than float.")
@click.option("--qat", is_flag=True, help="Where PTQ loses more than --max-accuracy-drop, distil the int8 model from the "
              "float one with fake-quant in place (quantization-aware distillation) before returning nodes to float.")
@click.option("--teacher", type=click.Path(dir_okay=False), help="--qat: the float teacher (default: MODEL itself).")
@click.option("--epochs", type=click.IntRange(min=1), help="--qat: training epochs (default: chosen from the data size).")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=QAT_LR, show_default=True,
              help="--qat: peak learning rate.")
@click.option("--freeze-scales", is_flag=True, help="--qat: keep the calibrated scales (default: learn them, LSQ).")
@click.option("--device", default="auto", show_default=True, help="--qat: where to train (auto, cpu, cuda, cuda:N).")
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True,
              help="Batch of the second timing (the first is batch 1) and of calibration runs.")
@session_options("")
@input_shape_option("Sizes of an input's dynamic dims for --random-data (repeatable).")
@image_folder_options
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("--seed", type=int, default=0, show_default=True)
def command(model, output, data, random_data, activation_type, calibration, calibration_samples, eval_samples,
            scope, per_tensor, max_accuracy_drop, min_int8_speedup, qat, teacher, epochs, lr, freeze_scales, device,
            batch_size, provider, threads, input_shapes, as_json, seed, **image_flags) -> None:
    """Quantize MODEL to int8 (QDQ, per-channel int8 weights) with onnxruntime, calibrated on --data, and keep
    only what pays: int8 is timed against float (batch 1 and --batch-size); nodes the profiler shows slower in
    int8 stay float, and if the model is still slower the float model is written, with a note. Nodes whose
    quantization costs accuracy beyond --max-accuracy-drop go back to float, most sensitive first.

    \b
    Example:
      onnxkd quantize student.onnx --data calib.npz -o student-int8.onnx
      onnxkd quantize model.onnx --data images/ -o model-int8.onnx --min-int8-speedup 1.5
      onnxkd quantize student.onnx --data train.npz --qat --teacher teacher.onnx -o student-int8.onnx
    """
    from onnxkd.commands.console import make_console
    from onnxkd.data import parse_input_shapes
    from onnxkd.model import check_output_path, has_external_data, save
    from onnxkd.quantize.api import quantize
    from onnxkd.quantize.result import written_text
    from onnxkd.validate.gates import GateFailed

    target = check_output_path(output, {"input model": model, "teacher": teacher}, data={"calibration data": data})
    if teacher is not None and not Path(teacher).is_file():  # refused now, not after calibration and timing
        raise OnnxkdError(f"--teacher {teacher}: no such file")
    status = make_console(stderr=True)
    refine = None
    if qat:
        from onnxkd.qat import qad_refiner

        refine = qad_refiner(teacher or model, learn_scales=not freeze_scales, epochs=epochs, lr=lr, device=device,
                             seed=seed, progress=status)
    from onnxkd.report.progress import StageBars

    with StageBars(make_console(stderr=True)) as progress:
        result = quantize(
            model, data, refine=refine, progress=progress, activation_type=activation_type, calibration=calibration,
            per_channel=not per_tensor, scope=scope, calibration_samples=calibration_samples, eval_samples=eval_samples,
            max_accuracy_drop=max_accuracy_drop, min_int8_speedup=min_int8_speedup, batch_size=batch_size,
            provider=provider, threads=threads, seed=seed, random_data=random_data,
            image_options=image_options(image_flags), columns=image_flags.pop("columns"),
            input_shapes=parse_input_shapes(list(input_shapes)) if input_shapes else None,
            log=lambda message: status.print(f"[dim]{message}[/]", highlight=False))
    try:
        save(result.model, target, external_data=True if has_external_data(model) else None)
    except OSError as exc:
        raise OnnxkdError(f"{output}: cannot write ({exc.strerror or exc})") from None
    summary = dict(result.to_dict(), output=str(target))
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    else:
        console = make_console()
        render_quantize(summary, console)
        console.print(f"Wrote {target} ({written_text(summary)})", highlight=False, soft_wrap=True)
    if result.gate is not None and not result.gate["passed"]:
        raise GateFailed([{"name": "int8 speed-up", "value": result.gate["speedup"] if result.int8 else 1.0,
                           "op": ">=", "threshold": result.gate["min"]}])


def render_quantize(summary: dict, console) -> None:
    from rich import box
    from rich.table import Table

    from onnxkd.quantize.result import SCOPE_TEXT
    from onnxkd.report import fmt

    table = Table(title="Quantize", title_justify="left", title_style="bold", box=box.SIMPLE, pad_edge=False,
                  show_header=False)
    table.add_column("")
    table.add_column("")
    target, calib = summary["target"], summary["calibration"]
    table.add_row("target", f"{target['device']}: {target['activation']} activations, int8 weights"
                  + (" (7-bit)" if target["reduce_range"] else ""))
    table.add_row("calibration", f"{calib['method']} on {calib['samples']} samples, "
                  f"{'per-channel' if calib['per_channel'] else 'per-tensor'} weights")
    table.add_row("int8 compute nodes", f"{summary['quantized_nodes']} of {summary['compute_nodes']}")
    if summary.get("scope"):
        table.add_row("scope", SCOPE_TEXT[summary["scope"]])
    if summary.get("padded_inputs"):
        table.add_row("inputs padded", f"{', '.join(summary['padded_inputs'])} (to a multiple of 4 channels: "
                      "onnxruntime's fast int8 convolution, measured faster)")
    for batch, value in summary["speedups"].items():
        table.add_row(f"speed-up at batch {batch}", f"{value:.2f}x" + ("" if summary["int8"] else " (not kept)"))
    if summary["quality"]:
        q = summary["quality"]
        shown = f"{q['drop']:.2%} {q['metric']} drop (budget {summary['max_accuracy_drop']:.2%})"
        if q["float"] is not None:
            shown += f": {q['float']:.2%} -> {q['int8']:.2%}"
        if q.get("outputs"):  # several outputs: the worst counts; say which, and the others' drops
            others = [f"{o['output']} {o['drop']:.2%} ({o['metric']})" for o in q["outputs"] if o["output"] != q["output"]]
            shown += f", on {q['output']} (the worst output; {', '.join(others)})"
        table.add_row("accuracy", shown)
    size = summary["size_bytes"]
    table.add_row("weights", f"{fmt.size(size['float'])} -> {fmt.size(size['int8'])}")
    console.print(table)
    if summary["float_nodes"]:
        nodes = Table(title="Nodes kept in float", title_justify="left", box=box.SIMPLE, pad_edge=False)
        nodes.add_column("node")
        nodes.add_column("why")
        for name, why in summary["float_nodes"].items():
            nodes.add_row(name, why)
        console.print(nodes)
    if summary.get("qat"):
        q = summary["qat"]
        console.print(f"quantization-aware distillation: {q['ptq']['metric']} drop {q['ptq']['drop']:.2%} (PTQ) -> "
                      f"{q['qat']['drop']:.2%} ({'kept' if q['kept'] else 'over budget, not kept'})", highlight=False)
    for note in summary["notes"]:
        console.print(f"[yellow]note[/]: {note}", highlight=False)
