"""Off a terminal (CI logs, `| tee`), the commands' output is not wrapped at rich's 80-column fallback."""

from __future__ import annotations

import io
import re
import sys

import pytest
from cli_runner import cli
from rich.console import Console

from onnxkd.commands.console import PIPED_WIDTH, make_console

ANSI = re.compile(r"\x1b\[")


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def plain_env(monkeypatch):
    """No user setting that changes rich's width or colour choice."""
    for name in ("COLUMNS", "FORCE_COLOR", "TTY_COMPATIBLE", "NO_COLOR"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.mark.parametrize("stderr", [False, True])
def test_piped_console_is_wide_and_does_not_wrap(plain_env, stderr):
    plain_env.setattr(sys, "stderr" if stderr else "stdout", io.StringIO())
    console = make_console(stderr=stderr)
    assert console.width == PIPED_WIDTH and console.soft_wrap and not console.is_terminal
    plain_env.setenv("COLUMNS", "132")  # an explicit width from the user wins
    assert make_console(stderr=stderr).width == 132


def test_terminal_console_is_riches_own(plain_env):
    plain_env.setattr(sys, "stdout", _Tty())
    console = make_console()
    assert not console.soft_wrap and console.is_terminal
    assert console.width == Console().width  # the terminal's size (or rich's fallback), not PIPED_WIDTH


def test_distill_epoch_line_and_table_are_not_wrapped_when_captured(plain_env, capsys, digits, digits_student,
                                                                    small_digits, tmp_path):
    args = [digits["teacher"], digits_student, "--data", small_digits["train"], "--val-data", small_digits["val"],
            "--epochs", "1", "--batch-size", "32", "--device", "cpu", "--work-dir", tmp_path / "work",
            "-o", tmp_path / "student.onnx"]
    code, out, err = cli(capsys, "distill", *map(str, args))
    assert code == 0, err
    assert not ANSI.search(out + err)
    lines = out.splitlines()
    epoch = [line for line in lines if line.startswith("epoch") and "loss" in line and "samples/s" in line]
    assert len(epoch) == 1 and len(epoch[0]) > 80, out
    assert any(line.startswith("distilling: ") and len(line) > 80 and line.endswith("on cpu") for line in lines), out
    row = [line for line in lines if "distilled (epoch 1 of 1)" in line]
    assert len(row) == 1 and "loss" in row[0], out  # the table row, whole
    assert len(row[0]) < PIPED_WIDTH  # and the table only as wide as it needs, not stretched to the budget
