"""The ``onnxkd`` command line: one command = parse args, call the API, render with rich.

Commands live in ``onnxkd/commands/<name>.py`` (one file each) and are registered below by name, so
``onnxkd --help`` does not import torch or onnxruntime.
"""

from __future__ import annotations

import importlib
import sys

import click

from onnxkd import __version__
from onnxkd.errors import OnnxkdError
from onnxkd.torchrun_rank import is_rank_zero

INTERNAL_ERROR = 3

# command name -> module in onnxkd.commands defining a click command called `command`
COMMANDS: dict[str, str] = {
    "compress": "compress",
    "distill": "distill",
    "inspect": "inspect",
    "optimize": "optimize",
    "prune": "prune",
    "quantize": "quantize",
    "validate": "validate",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return sorted(COMMANDS)

    def get_command(self, ctx, name):
        module = COMMANDS.get(name)
        if module is None:
            return None
        return importlib.import_module(f"onnxkd.commands.{module}").command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="onnxkd")
@click.option("--debug", is_flag=True, help="Show full tracebacks for errors.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Shrink trained ONNX models: prune channels in the graph, distill in PyTorch, prove it with onnxruntime.

    \b
    Example:
      onnxkd inspect model.onnx
    """
    ctx.obj = {"debug": debug}


def main(argv: list[str] | None = None) -> None:
    """Console entry point: user errors become one line `Error: ...` and exit 2 (no traceback).

    Exit codes: 0 success, 1 a gate failed, 2 bad input, 3 internal error (a bug), 130 interrupted.
    """
    argv = list(argv if argv is not None else sys.argv[1:])
    debug = "--debug" in argv
    if debug:  # also after the command (`onnxkd compress ... --debug`), where users add it to a failed run
        argv = ["--debug"] + [arg for arg in argv if arg != "--debug"]
    try:
        # Without standalone mode click hands back ctx.exit(code) as a return value instead of exiting.
        code = cli.main(args=argv, prog_name="onnxkd", standalone_mode=False)
        if isinstance(code, int) and code != 0:
            sys.exit(code)
    except click.exceptions.Abort:  # click's form of KeyboardInterrupt
        _interrupted()
    except click.ClickException as exc:  # a bad flag or value: one line, like any bad input
        command = exc.ctx.command_path if isinstance(exc, click.UsageError) and exc.ctx is not None else None
        help_hint = f" (see {command} --help)" if command else ""
        click.echo(f"Error: {exc.format_message()}{help_hint}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except OnnxkdError as exc:
        if debug:
            raise
        click.echo(f"Error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        _interrupted()
    except Exception as exc:  # a bug: still one line unless --debug
        if debug:
            raise
        click.echo(f"Error: internal error: {type(exc).__name__}: {exc} (add --debug for the traceback)", err=True)
        sys.exit(INTERNAL_ERROR)


def _interrupted() -> None:
    if is_rank_zero():  # torchrun interrupts its other ranks too: one line is enough
        click.echo("Interrupted.", err=True)
    sys.exit(130)
