"""Options several commands share: how an image folder becomes tensors, the gates, fixed input shapes."""

from __future__ import annotations

from typing import Callable

import click

from onnxkd.errors import OnnxkdError

GATE_HELP = "Exit 1 unless"
ROUND_TO_HELP = ("Round kept channel counts to the nearest multiple of N [default: 16, the CPU kernels' block; "
                 "1 cuts exactly --ratio].")


def image_folder_options(command: Callable) -> Callable:
    """--image-size/--mean/--std/--channel-order/--layout (``image_options``) and --columns (``columns``)."""
    options = [
        click.option("--image-size", metavar="H[,W]", help="Image folder: resize to this (default: the model's input size, else 224)."),
        click.option("--mean", metavar="R,G,B", default="0.485,0.456,0.406", show_default=True, help="Image folder: per-channel mean of pixels in [0, 1]."),
        click.option("--std", metavar="R,G,B", default="0.229,0.224,0.225", show_default=True, help="Image folder: per-channel std."),
        click.option("--channel-order", type=click.Choice(["rgb", "bgr"]), default="rgb", show_default=True, help="Image folder: channel order."),
        click.option("--layout", type=click.Choice(["nchw", "nhwc"]), default="nchw", show_default=True, help="Image folder: tensor layout."),
        click.option("--columns", metavar="NAME[=COLUMN],...", help="Hugging Face data (a save_to_disk folder or .parquet): the columns feeding each input and the labels, e.g. input_ids,attention_mask,labels=label (default: columns named like the inputs, and label/labels)."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def image_options(kwargs: dict):
    """Pop the image-folder flags from a command's kwargs into an ``ImageOptions``."""
    from onnxkd.data import ImageOptions

    return ImageOptions(size=_size(kwargs.pop("image_size")), mean=_floats(kwargs.pop("mean"), "--mean"),
                        std=_floats(kwargs.pop("std"), "--std"), channel_order=kwargs.pop("channel_order"),
                        layout=kwargs.pop("layout"))


def gate_options(command: Callable) -> Callable:
    options = [
        click.option("--max-accuracy-drop", type=click.FloatRange(0, 1), help=f"{GATE_HELP} teacher - student accuracy <= X (fraction: 0.01 = 1 point)."),
        click.option("--min-agreement", type=click.FloatRange(0, 1), help=f"{GATE_HELP} top-1 agreement >= X (fraction)."),
        click.option("--min-speedup", type=click.FloatRange(min=0), help=f"{GATE_HELP} the p50 speed-up at batch 1 >= X."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def session_options(purpose: str) -> Callable:
    """--provider and --threads of the onnxruntime session; ``purpose`` starts their help ("" or "--x: ")."""
    def decorate(command: Callable) -> Callable:
        command = click.option("--threads", type=click.IntRange(min=0), default=0, show_default=True,
                               help=f"{purpose}onnxruntime intra-op threads (0 = onnxruntime default).")(command)
        return click.option("--provider", type=click.Choice(["auto", "cpu", "cuda", "tensorrt"]), default="auto",
                            show_default=True,
                            help=f"{purpose}onnxruntime execution provider; auto = best available.")(command)
    return decorate


def target_speedup_options(against: str, candidates: str) -> Callable:
    """--target-speedup with --max-ratio and --latency-batch (prune and compress); ``against`` names the
    reference model, ``candidates`` says what is timed."""
    def decorate(command: Callable) -> Callable:
        command = click.option("--group-trials", type=click.IntRange(min=1), default=24, show_default=True,
                               help="--per-group: how many groups (most parameters first) are timed whole, one at "
                                    "a time.")(command)
        command = click.option("--per-group", is_flag=True,
                               help="--target-speedup: after the ratio search, leave whole the groups whose cut "
                                    "barely lowers latency and cut the others harder (one timing per group).")(command)
        command = click.option("--latency-batch", type=click.IntRange(min=1), default=1, show_default=True,
                               help="--target-speedup: batch size the candidates are timed at.")(command)
        command = click.option("--max-ratio", type=click.FloatRange(0, 1, max_open=True), default=0.9,
                               show_default=True, help="--target-speedup: the largest ratio tried.")(command)
        return click.option("--target-speedup", type=click.FloatRange(min=0, min_open=True), metavar="X",
                            help=f"Instead of --ratio: the candidate whose onnxruntime speed-up over {against} is "
                                 f">= X with the most MACs kept, found by {candidates}. Without --round-to, round-to "
                                 "1, 8 and 16 are tried (CPU kernels work on blocks of 8 or 16 channels).")(command)
    return decorate


def input_shape_option(help_text: str) -> Callable:
    return click.option("--input-shape", "input_shapes", multiple=True, metavar="NAME=D0,D1,...", help=help_text)


def _floats(text: str, flag: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise OnnxkdError(f"{flag} {text!r}: expected comma-separated numbers") from None
    if flag == "--std" and any(v <= 0 for v in values):
        raise OnnxkdError(f"{flag} {text!r}: values must be positive")
    return values


def _size(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        dims = [int(v) for v in text.replace("x", ",").split(",")]
        if len(dims) not in (1, 2) or min(dims) < 1:
            raise ValueError
    except ValueError:
        raise OnnxkdError(f"--image-size {text!r}: expected H or H,W in pixels") from None
    return (dims[0], dims[-1])


def warn_other_teacher(teacher: str, saved_sha: str | None, console) -> None:
    """A recipe replayed on a teacher other than the one it was saved from: say so (its group ids and
    per-node overrides may name other layers)."""
    if not saved_sha:
        return
    from onnxkd.model import sha256_of

    try:
        current = sha256_of(teacher)  # as the recipe saved it: the weights files' too
    except OSError:
        return  # a missing teacher is reported by the pipeline
    if current != saved_sha:
        console.print("[yellow]Warning:[/] the recipe was made for another teacher (SHA-256 differs); "
                      "group-specific settings may not apply", highlight=False)
