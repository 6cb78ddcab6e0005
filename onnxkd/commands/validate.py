"""``onnxkd validate``: measure teacher and student on onnxruntime, report, and gate a pipeline."""

from __future__ import annotations

import json

import click

from onnxkd.commands.options import gate_options, image_folder_options, image_options, input_shape_option, session_options
from onnxkd.report.progress import StageBars


@click.command(name="validate", short_help="Measure a student against its teacher.")
@click.argument("teacher", type=click.Path(dir_okay=False))
@click.argument("student", type=click.Path(dir_okay=False))
@click.option("--data", type=click.Path(), help="An .npz of arrays keyed by input name (+ optional int `labels`), or an image folder DIR/<class>/*.png|jpg.")
@click.option("--report", "report_dir", type=click.Path(file_okay=False), help="Write report.json, report.md and report.html here.")
@session_options("")
@click.option("--graph-opt", type=click.Choice(["disable", "basic", "extended", "all"]), default="all", show_default=True, help="onnxruntime graph optimisation level.")
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True, help="Batch for quality runs and the second latency measurement (the first is batch 1).")
@click.option("--runs", type=click.IntRange(min=1), default=50, show_default=True, help="Timed runs per model, at most (see --time-budget).")
@click.option("--warmup", type=click.IntRange(min=0), default=5, show_default=True, help="Untimed runs per model before timing.")
@click.option("--time-budget", type=click.FloatRange(min=0, min_open=True), default=2.0, show_default=True, help="Seconds of timed runs per model and batch size, at most.")
@input_shape_option("Fix an input's dynamic dims for random inputs and MACs (repeatable).")
@image_folder_options
@gate_options
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for random inputs and bootstrap intervals.")
@click.option("--json", "as_json", is_flag=True, help="Print report.json to stdout (the rest goes to stderr).")
def command(teacher, student, data, report_dir, provider, threads, graph_opt, batch_size, runs,
            warmup, time_budget, input_shapes, max_accuracy_drop, min_agreement, min_speedup, seed, as_json,
            **image_flags) -> None:
    """Compare a student with its teacher on onnxruntime: accuracy, agreement, latency, MACs.

    Exit code 0 when all gates pass, 1 when one fails, 2 for bad input.

    \b
    Example:
      onnxkd validate teacher.onnx student.onnx --data val.npz --report out/ \\
          --max-accuracy-drop 0.01 --min-speedup 1.5
    """
    from onnxkd.commands.console import make_console
    from onnxkd.report import write_report
    from onnxkd.report.terminal import render, render_warnings
    from onnxkd.validate.api import validate
    from onnxkd.validate.gates import GateFailed

    options = image_options(image_flags)
    console = make_console(stderr=as_json)
    with StageBars(make_console(stderr=True)) as progress:
        result = validate(
            teacher, student, data, batch_size=batch_size, provider=provider, threads=threads, graph_opt=graph_opt,
            input_shapes=list(input_shapes), image_options=options, warmup=warmup, runs=runs, budget_s=time_budget,
            max_accuracy_drop=max_accuracy_drop, min_agreement=min_agreement, min_speedup=min_speedup, seed=seed,
            progress=progress, columns=image_flags.pop("columns"),
        )
    r = result.to_dict()
    if as_json:
        click.echo(json.dumps(r, indent=2))
        render_warnings(r, console)  # console: stderr
    else:
        render(r, console)
    if report_dir:
        paths = write_report(r, report_dir)
        console.print(f"Report: {', '.join(str(p) for p in paths)}", highlight=False, soft_wrap=True)
    if not result.passed:
        # an exception, not ctx.exit(1): onnxkd.cli.main runs click with standalone_mode=False, which would
        # turn ctx.exit's code into a return value and exit 0
        raise GateFailed([g for g in r["gates"] if not g["passed"]])
