"""``onnxkd optimize``: fuse what exporters wrote out back into single ops, drop dead weight."""

from __future__ import annotations

import json
from pathlib import Path

import click

from onnxkd.commands.options import input_shape_option
from onnxkd.errors import OnnxkdError


@click.command(name="optimize", short_help="Fuse written-out activations and drop dead weight (same function, faster).")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(), help="Where to write the optimized model.")
@click.option("--check/--no-check", default=True, show_default=True,
              help="Compare the output with the input on onnxruntime before writing it (on --data, else on "
                   "random inputs).")
@click.option("--data", type=click.Path(exists=True), help="Samples for --check (.npz/.npy keyed by input name).")
@input_shape_option("Sizes of an input's dynamic dims for the random --check inputs (repeatable; a free batch is 1).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def command(model, output, check, data, input_shapes, as_json) -> None:
    """Rewrite MODEL for deployment and write it to OUTPUT: HardSwish/HardSigmoid, GELU, Mish and LayerNorm
    written out as chains of elementwise ops become the single ONNX ops onnxruntime has fast kernels
    for (the opset is upgraded when a fused op needs it); constants are folded, Identity nodes and
    unused initializers removed. Input and output names and dynamic dims are kept.

    \b
    Example:
      onnxkd optimize mobilenetv3.onnx -o mobilenetv3-opt.onnx
      onnxkd optimize paddle_model.onnx --data samples.npz -o paddle_model-opt.onnx
    """
    import onnx_ir as ir

    from onnxkd.data import check_input_shapes, input_specs, load_data, parse_input_shapes, reference_shapes
    from onnxkd.graph_passes.optimize import optimize
    from onnxkd.model import check_output_path, has_external_data, load, save

    source, target = Path(model), check_output_path(output, {"input model": model})
    loaded = load(source)
    specs = input_specs(ir.to_proto(loaded))
    samples = load_data(data, specs) if data is not None else None
    shapes = check_input_shapes(parse_input_shapes(input_shapes), specs)
    if check:  # sizes for the check's inputs, refused before the rewrite rather than after it
        shapes = reference_shapes(specs, shapes, samples.sample_shapes() if samples is not None else None)
    result = optimize(loaded)
    summary = result.summary
    if check:
        from onnxkd.validate.equivalence import check_same_function

        summary["check"] = check_same_function(source, result.model, "the optimized model", shapes, samples)
    try:
        save(result.model, target, external_data=True if has_external_data(source) else None)
    except OSError as exc:
        raise OnnxkdError(f"{output}: cannot write ({exc.strerror or exc})") from None
    if as_json:
        click.echo(json.dumps(dict(summary, output=str(target)), indent=2))
        return
    from onnxkd.commands.console import make_console

    console = make_console()
    render_optimize(summary, console)
    console.print(f"Wrote {target}", highlight=False, soft_wrap=True)


def render_optimize(summary: dict, console) -> None:
    from rich import box
    from rich.table import Table

    table = Table(title="Optimize", title_justify="left", title_style="bold", box=box.SIMPLE, pad_edge=False,
                  show_header=False)
    table.add_column("")
    table.add_column("", justify="right")
    from onnxkd.graph_passes.optimize.api import STATIC_RESHAPE, WEIGHT_INPUTS  # loaded already: optimize ran

    for name, count in summary["fused"].items():
        table.add_row(name if name in (STATIC_RESHAPE, WEIGHT_INPUTS) else f"fused {name}", str(count))
    table.add_row("nodes", f"{summary['nodes_before']:,} -> {summary['nodes_after']:,}")
    table.add_row("unused initializers removed", str(summary["initializers_removed"]))
    if summary["opset_after"] != summary["opset_before"]:
        table.add_row("opset", f"{summary['opset_before']} -> {summary['opset_after']}")
    if "check" in summary:
        from onnxkd.validate.equivalence import describe

        table.add_row("onnxruntime check", describe(summary["check"]))
    console.print(table)
    for note in summary["notes"]:
        console.print(f"[yellow]note[/]: {note}", highlight=False)
