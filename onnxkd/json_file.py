"""A JSON file written atomically: a temp file beside it, then a rename, so a reader (or a resumed run) sees the
old content or the new, never half of it."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any


def write_json(path: str | os.PathLike, data: Any, **dumps) -> Path:
    """``json.dumps(data, **dumps)`` (plus a final newline) to ``path``, atomically."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        tmp.write_text(json.dumps(data, **dumps) + "\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
