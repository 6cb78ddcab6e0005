"""``onnxkd compress``: prune, distill, validate and report in one command (a thin CLI over ``onnxkd.pipeline``)."""

from __future__ import annotations

import json

import click

from onnxkd.commands.distill import distill_options
from onnxkd.errors import OnnxkdError
from onnxkd.commands.options import (ROUND_TO_HELP, gate_options, image_folder_options, image_options, input_shape_option,
                                     session_options, target_speedup_options, warn_other_teacher)

CRITERIA = ["l1", "l2", "bn", "random", "taylor", "kd"]

# the click parameter names that differ from onnxkd.compress's keywords (recipe.FLAT_OPTIONS)
CLI_NAMES = {"steps": "prune_steps", "loss": "losses", "compile": "compile_", "recalibrate_bn": "no_recalibrate_bn"}


def recipe_flags() -> dict[str, tuple[str | None, str]]:
    """Flag (click parameter name) -> (recipe section, field); a flag given on the command line overrides the
    recipe. The Python API's table under the CLI's names, so that the two cannot drift apart."""
    from onnxkd.recipe import FLAT_OPTIONS

    flags = {CLI_NAMES.get(name, name): target for name, target in FLAT_OPTIONS.items()}
    return dict(flags, seed=(None, "seed"), optimize=(None, "optimize"))


def training_options(command):
    """The flags of ``onnxkd distill`` but --steps, which here counts pruning steps."""
    return distill_options(command, optimizer_steps=False)


@click.command(name="compress", short_help="Prune + distill + validate a model in one go (the whole pipeline).")
@click.argument("teacher", type=click.Path(dir_okay=False))
@click.option("--ratio", type=float, help="Fraction of channels removed from every prunable group, in [0, 1) (default 0.5).")
@click.option("--data", type=click.Path(), help="Training samples: an .npz keyed by input name (+ optional int `labels`), a folder of .npy files, an image folder DIR/<class>/*.jpg or a list file (.csv/.txt of path,label). Read a batch at a time. Without it: data-free (weak).")
@click.option("--val-data", type=click.Path(), help="Validation samples (same formats). Without it a seeded 10% of --data is held out, never trained on.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="The student (default: TEACHER with .student.onnx).")
@click.option("--report", "report_dir", type=click.Path(file_okay=False), help="Report folder (default: beside the student, STUDENT.report).")
@click.option("--steps", "prune_steps", type=click.IntRange(min=1), default=1, show_default=True, help="Prune in K steps, distilling between them (re-scoring on the student).")
@click.option("--criterion", type=click.Choice(CRITERIA), help="Channel importance (default: kd with --data, l1 without).")
@click.option("--global", "global_rank", is_flag=True, help="Rank channels across groups (same overall fraction).")
@click.option("--max-group-ratio", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.9, show_default=True,
              help="With --global: the largest fraction of any one group's channels removed.")
@click.option("--round-to", type=click.IntRange(min=1), help=ROUND_TO_HELP)
@click.option("--ignore", metavar="REGEX", help="Leave groups whose node or weight names match REGEX whole.")
@click.option("--prune-normalized", is_flag=True, help="Also cut LayerNorm-normalised hidden sizes (transformers' residual stream).")
@target_speedup_options("TEACHER", "timing pruned (and optimized) candidates before distilling")
@training_options
@session_options("Validation and --target-speedup: ")
@click.option("--validate-batch-size", type=click.IntRange(min=1), default=32, show_default=True, help="Batch for the second latency measurement (the first is batch 1).")
@click.option("--optimize/--no-optimize", default=True, show_default=True,
              help="Fuse the student's written-out activations and drop dead weight (onnxkd optimize); the report "
                   "times the teacher optimized alone too, so fusion gains are not taken for pruning gains.")
@click.option("--int8", is_flag=True, help="Quantize the distilled student to int8 (onnxkd quantize) where it is measured "
              "faster, within 1 point of the float student; validation then compares the int8 student with the teacher.")
@click.option("--qat/--no-qat", default=True, show_default=True,
              help="--int8: where PTQ loses more than that, distil the int8 student from the teacher (QAD) first.")
@gate_options
@click.option("--recipe", type=click.Path(dir_okay=False), help="Replay a saved recipe (JSON); flags given here override it.")
@click.option("--work-dir", type=click.Path(file_okay=False), help="Stage outputs and checkpoints (default: STUDENT.work).")
@click.option("--resume", is_flag=True, help="Continue an interrupted run from its last completed stage or epoch.")
@input_shape_option("Fix an input's dynamic dims for random inputs and MACs (repeatable).")
@image_folder_options
@click.option("--json", "as_json", is_flag=True, help="Print report.json to stdout.")
def command(teacher, data, val_data, output, report_dir, recipe, work_dir, resume, input_shapes, as_json,
            **flags) -> None:
    """Compress TEACHER: prune its channels, distil the student from it, measure both with onnxruntime.

    Writes the student, its recipe (STUDENT.recipe.json, replayable with --recipe) and a report
    (report.json, report.md, report.html). Exit 0 when done and every gate passes, 1 when a gate fails
    (the student and report are still written), 2 for bad input, 3 for an internal error, 130 when
    interrupted (nothing is left half-written; --resume continues).

    \b
    Example:
      onnxkd compress teacher.onnx --ratio 0.5 --data train.npz
      onnxkd compress teacher.onnx --ratio 0.6 --data train.npz --val-data val.npz --steps 3 --epochs 30 \\
          --max-accuracy-drop 0.01 --min-speedup 1.5 -o small.onnx --report out/
      onnxkd compress teacher.onnx --recipe small.recipe.json --data train.npz
    """
    from onnxkd.commands.console import make_console
    from onnxkd.data import parse_input_shapes
    from onnxkd.pipeline import compress
    from onnxkd.report.terminal import render, render_compress, render_warnings
    from onnxkd.validate.gates import GateFailed

    options = image_options(flags)
    plan, saved_sha = _recipe(click.get_current_context(), recipe, flags)
    console = make_console(stderr=as_json)
    warn_other_teacher(teacher, saved_sha, console)
    result = compress(teacher, data=data, output=output, report=report_dir, val_data=val_data, recipe=plan,
                      work_dir=work_dir, resume=resume, image_options=options,
                      input_shapes=parse_input_shapes(input_shapes), progress=console, columns=flags.pop("columns"))
    if result is None:  # another rank than 0 of a torchrun job: rank 0 prints and writes
        return
    r = result.to_dict()
    if as_json:
        click.echo(json.dumps(r, indent=2))
        render_warnings(r, console)  # console: stderr
    else:
        render(r, console)
        render_compress(r, console)
        where = [f"Student: {result.student}", f"Recipe:  {result.recipe_path}"]
        if result.report_dir:
            where.append(f"Report:  {result.report_dir}/report.html")
        for line in where:  # whole paths, never wrapped: logs are grepped and copied from
            console.print(line, highlight=False, soft_wrap=True)
    if not result.passed:
        raise GateFailed([g for g in r["gates"] if not g["passed"]])


def _recipe(ctx: click.Context, path, flags: dict):
    """The run's recipe: --recipe (or the defaults), then every flag given on the command line."""
    from click.core import ParameterSource

    from onnxkd.distill.targets import parse_loss_option
    from onnxkd.commands.distill import parse_weights
    from onnxkd.recipe import Recipe, load_recipe

    plan, raw = load_recipe(path) if path else (Recipe(), {})
    sections = {"prune": plan.prune, "distill": plan.distill, "validate": plan.validate, "quantize": plan.quantize}
    for name, (section, key) in recipe_flags().items():
        if ctx.get_parameter_source(name) != ParameterSource.COMMANDLINE:
            continue
        value = flags[name]
        if name == "losses":
            value = parse_loss_option(value)
        elif name == "output_weights":
            value = parse_weights(value)
        elif name in ("hints",):
            value = list(value)
        elif name == "no_recalibrate_bn":
            value = not value
        if section is None:
            setattr(plan, key, value)
        else:
            setattr(sections[section], key, value)
    given = {name for name in ("ratio", "target_speedup") if ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE}
    if len(given) == 2:
        raise OnnxkdError("--ratio and --target-speedup exclude each other: give one")
    plan.prune.check()
    plan.distill.check()
    return plan, raw.get("teacher_sha256")
