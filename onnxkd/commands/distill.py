"""``onnxkd distill``: train a pruned student to match its teacher (knowledge distillation), ONNX in and out."""

from __future__ import annotations

import json

import click

from onnxkd.commands.options import image_folder_options, image_options, input_shape_option
from onnxkd.errors import OnnxkdError
from onnxkd.torchrun_rank import is_rank_zero


def distill_options(command, optimizer_steps: bool = True):
    """The training flags, shared with ``onnxkd compress`` (where --steps means pruning steps, so
    ``optimizer_steps=False`` leaves it out); the command receives them as keyword arguments."""
    options = [
        click.option("--epochs", type=click.IntRange(min=1), help="Passes over --data (default: chosen from the data size, see README)."),
    ] + ([click.option("--steps", "total_steps", type=click.IntRange(min=1), help="Optimizer steps in all, instead of --epochs.")]
         if optimizer_steps else []) + [
        click.option("--lr", type=float, help="Peak learning rate (default 1e-3 for adamw, 0.05 for sgd), with warm-up and cosine decay."),
        click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True, help="Samples per step, over all processes."),
        click.option("--optimizer", type=click.Choice(["adamw", "sgd"]), default="adamw", show_default=True),
        click.option("--weight-decay", type=click.FloatRange(min=0), default=0.0, show_default=True),
        click.option("--temperature", type=click.FloatRange(min=0, min_open=True), default=4.0, show_default=True, help="KD temperature T (KL of softened class scores, scaled by T²)."),
        click.option("--alpha", type=click.FloatRange(0, 1), default=0.5, show_default=True, help="Weight of the KD loss against cross-entropy on labels (when --data has labels)."),
        click.option("--loss", "losses", multiple=True, metavar="KIND|OUTPUT=KIND", help="auto, kl, mse or cosine, for all outputs or one (repeatable). auto: kl for class scores [N, C], mse otherwise."),
        click.option("--output-weight", "output_weights", multiple=True, metavar="OUTPUT=W", help="Weight of one output's loss in the sum (default 1, repeatable)."),
        click.option("--hint", "hints", multiple=True, metavar="TENSOR|auto", help="Match this intermediate tensor to the teacher's at the kept channels (repeatable); auto picks three through the depth."),
        click.option("--hint-weight", type=click.FloatRange(min=0), default=1.0, show_default=True, help="Weight of the hint losses."),
        click.option("--device", default="auto", show_default=True, help="auto (cuda when available), cpu, cuda or cuda:N."),
        click.option("--bf16", is_flag=True, help="bf16 autocast for both models (losses stay fp32)."),
        click.option("--compile", "compile_", is_flag=True, help="torch.compile the student."),
        click.option("--seed", type=int, default=0, show_default=True, help="Seed for shuffling, the held-out split and dropout."),
        click.option("--no-recalibrate-bn", is_flag=True, help="Keep the pruned BatchNorm statistics instead of measuring them on the training data."),
        click.option("--cache-mb", type=click.FloatRange(min=0), default=2048, show_default=True, help="Cache the teacher's outputs when they fit in this many MB."),
        click.option("--augment", type=click.Choice(["none", "crop", "light", "strong"]), default="none", show_default=True,
                     help="Augment training images; the teacher sees the same augmented batch. crop: random resized crop; light: + horizontal flip; strong: + mixup/cutmix. Use crop where a flip changes the label (digits, text)."),
        click.option("--workers", type=click.IntRange(min=0), help="Loader processes reading and decoding data (default: min(8, CPUs-1) for files, 0 for in-memory arrays; 0 = in the training process)."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def config_from_flags(flags: dict):
    """Pop the training flags from a command's kwargs into a ``DistillConfig``."""
    from onnxkd.distill.config import DistillConfig
    from onnxkd.distill.targets import parse_loss_option

    return DistillConfig(
        epochs=flags.pop("epochs"), steps=flags.pop("total_steps"), lr=flags.pop("lr"),
        batch_size=flags.pop("batch_size"), optimizer=flags.pop("optimizer"), weight_decay=flags.pop("weight_decay"),
        temperature=flags.pop("temperature"), alpha=flags.pop("alpha"), loss=parse_loss_option(flags.pop("losses")),
        output_weights=parse_weights(flags.pop("output_weights")), hints=list(flags.pop("hints")),
        hint_weight=flags.pop("hint_weight"), device=flags.pop("device"), bf16=flags.pop("bf16"),
        compile=flags.pop("compile_"), seed=flags.pop("seed"), recalibrate_bn=not flags.pop("no_recalibrate_bn"),
        cache_mb=flags.pop("cache_mb"), augment=flags.pop("augment"), workers=flags.pop("workers"),
    )


@click.command(name="distill", short_help="Train a pruned student to match its teacher (knowledge distillation).")
@click.argument("teacher", type=click.Path(dir_okay=False))
@click.argument("student", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Where to write the distilled student.")
@click.option("--data", type=click.Path(), help="Training samples: an .npz keyed by input name (+ optional int `labels`), a folder of .npy files, an image folder DIR/<class>/*.jpg or a list file (.csv/.txt of path,label). Read a batch at a time. Without it: random inputs (data-free, weak).")
@click.option("--val-data", type=click.Path(), help="Validation samples (same formats). Without it a seeded 10% of --data is held out.")
@distill_options
@click.option("--work-dir", type=click.Path(file_okay=False), help="Checkpoints (after every epoch and on Ctrl-C). Default: OUTPUT.work beside the output.")
@click.option("--resume", is_flag=True, help="Continue the interrupted run whose checkpoint is in the work dir.")
@input_shape_option("Without --data: fix an input's dynamic dims for the random inputs (repeatable).")
@image_folder_options
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def command(teacher, student, output, data, val_data, work_dir, resume, input_shapes, as_json, **flags) -> None:
    """Distil TEACHER into STUDENT (usually the output of `onnxkd prune`) and write the trained student to OUTPUT.

    Both models run in PyTorch through the torch bridge; the student's trained weights are written back
    into its own ONNX graph. Class scores are matched with KL at temperature T (plus cross-entropy on
    labels), other outputs with MSE; --hint adds intermediate features at the channels the prune plan kept.

    \b
    Example:
      onnxkd prune teacher.onnx --ratio 0.5 -o pruned.onnx
      onnxkd distill teacher.onnx pruned.onnx --data train.npz -o student.onnx
      onnxkd distill teacher.onnx pruned.onnx --data train.npz --val-data val.npz --epochs 30 --hint auto -o student.onnx
      torchrun --nproc-per-node 4 -m onnxkd distill teacher.onnx pruned.onnx --data train.npz -o student.onnx
    """
    from onnxkd.commands.console import make_console
    from onnxkd.data import parse_input_shapes
    from onnxkd.distill.api import distill, load_labelled
    from onnxkd.graph_passes.analyze.quantized import refuse_quantized

    for label, path in (("teacher", teacher), ("student", student)):  # the API also trains QDQ graphs (QAD)
        refuse_quantized(load_labelled(path, label), f"{label} {path}", "distil the float models, then quantize "
                         "the student (onnxkd quantize; --qat distils its int8 model from the float teacher)")
    options = image_options(flags)
    config = config_from_flags(flags)
    console = make_console(stderr=as_json)
    result = distill(teacher, student, data, output, val_data=val_data, work_dir=work_dir, resume=resume,
                     image_options=options, input_shapes=parse_input_shapes(input_shapes), progress=console,
                     columns=flags.pop("columns"), config=config)
    if result.world_size > 1:
        from onnxkd.distill import distributed

        distributed.shutdown()
        if not is_rank_zero():
            return
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2, default=str))
        return
    render_result(result.to_dict(), console)
    console.print(f"Wrote {output}", highlight=False, soft_wrap=True)


def render_result(result: dict, console) -> None:
    """The before/after table of a distillation run."""
    from rich import box
    from rich.table import Table

    from onnxkd.distill.evaluate import describe

    table = Table(title="Distillation (validation, vs the teacher)", title_justify="left", title_style="bold",
                  box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("student")
    table.add_column("figures")
    recalibration = result.get("recalibration")
    if recalibration:
        table.add_row("pruned, as given", describe(recalibration["before"]))
        table.add_row("BatchNorm recalibrated" + ("" if recalibration.get("kept", True) else " (worse: not kept)"),
                      describe(recalibration["after"]))
    if result.get("best_epoch") == 0:
        table.add_row("written: as before training (no epoch did better)", describe(result["best"]))
    elif result.get("best"):
        table.add_row(f"distilled (epoch {result['best_epoch']} of {result['epochs']})", describe(result["best"]))
    console.print(table)
    console.print(f"{result['steps']:,} steps in {result['wall_s']:.1f} s, {result['samples_per_s']:,.0f} samples/s "
                  f"on {result['device']}", highlight=False)
    for warning in result.get("warnings", []):
        console.print(f"[yellow]Warning:[/] {warning}", highlight=False)


def parse_weights(items) -> dict[str, float]:
    weights = {}
    for item in items:
        name, sep, value = item.rpartition("=")
        try:
            if not sep or not name:
                raise ValueError
            weights[name] = float(value)
        except ValueError:
            raise OnnxkdError(f"--output-weight {item!r}: expected OUTPUT=WEIGHT") from None
    return weights
