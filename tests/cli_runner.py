"""Run the onnxkd CLI in-process: the exit code and what it printed, without a new interpreter's seconds of
imports per call (`python -m onnxkd` itself is run as a subprocess by the compress and validate tests)."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess


def cli(capsys, *args) -> tuple[int, str, str]:
    """(exit code, stdout, stderr), captured by pytest's ``capsys``."""
    from onnxkd.cli import main

    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


def run_cli(*args, columns: int | None = None) -> subprocess.CompletedProcess:
    """As ``subprocess.run([python, -m, onnxkd, *args], capture_output=True, text=True)`` returns it, in-process
    (``columns``: the COLUMNS the run sees)."""
    from onnxkd.cli import main

    argv = [str(a) for a in args]
    out, err = io.StringIO(), io.StringIO()
    saved = os.environ.get("COLUMNS")
    if columns is not None:
        os.environ["COLUMNS"] = str(columns)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main(argv)
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        if columns is not None:
            if saved is None:
                del os.environ["COLUMNS"]
            else:
                os.environ["COLUMNS"] = saved
    return subprocess.CompletedProcess(argv, code, out.getvalue(), err.getvalue())
