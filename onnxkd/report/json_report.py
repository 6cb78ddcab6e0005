"""report.json: the result dict, verbatim (raw latency samples included)."""

from __future__ import annotations

import json


def render(r: dict) -> str:
    # allow_nan=False: the result layer already turned NaN/Inf into null, and JSON has no NaN
    return json.dumps(r, indent=2, allow_nan=False) + "\n"
