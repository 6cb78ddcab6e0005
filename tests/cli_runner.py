"""Run the onnxkd CLI in-process: (exit code, stdout, stderr) captured by pytest's ``capsys``."""

from __future__ import annotations


def cli(capsys, *args) -> tuple[int, str, str]:
    from onnxkd.cli import main

    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err
