"""The one place the commands get a rich Console: terminal width on a terminal, unwrapped lines off it."""

from __future__ import annotations

import os
import sys

from rich.console import Console

# Off a terminal rich falls back to 80 columns, which broke every epoch line and table in CI logs and
# under `| tee`. Tables take only the width they need (none of ours sets expand=True), so a wide
# budget costs nothing for short output.
PIPED_WIDTH = 240


def make_console(stderr: bool = False) -> Console:
    """A Console on stdout (or stderr). On a terminal: rich's own behaviour. Piped or captured: an
    explicit COLUMNS if the user set one, else PIPED_WIDTH, and text lines never wrapped, since logs are
    grepped line by line. Colour stays rich's choice (none off a terminal unless FORCE_COLOR asks)."""
    stream = sys.stderr if stderr else sys.stdout
    if _isatty(stream):
        return Console(stderr=stderr)
    return Console(stderr=stderr, width=piped_width(os.environ), soft_wrap=True)


def piped_width(environ) -> int:
    columns = environ.get("COLUMNS", "")
    return int(columns) if columns.isdigit() and int(columns) > 0 else PIPED_WIDTH


def _isatty(stream) -> bool:
    # The stream itself, not rich's is_terminal: FORCE_COLOR in CI asks for colour, not for 80 columns.
    try:
        return bool(stream is not None and stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or closed (end of a pytest run)
        return False
