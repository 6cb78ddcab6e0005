"""Renderers for a validation result: report.json, report.md, report.html, terminal tables.

They read the plain result dict (``ValidationResult.to_dict()`` or a loaded report.json), so a report
can be re-rendered without the models. Imports neither torch nor onnxruntime.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

from onnxkd.errors import OnnxkdError

__all__ = ["as_dict", "write_report"]


def as_dict(result) -> dict:
    return result.to_dict() if hasattr(result, "to_dict") else dict(result)


def write_report(result, folder: str | os.PathLike) -> list[Path]:
    """Write report.json, report.md and report.html into ``folder``, all three or none.

    They are rendered first, written into a temp folder beside ``folder``, and moved into place: a new
    folder is renamed in whole; in an existing one (which may hold other files) each report file is
    replaced by a rename.
    """
    from onnxkd.report import html, json_report, markdown, plots

    r = as_dict(result)
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OnnxkdError(f"--report {folder}: exists and is not a folder")
    # render everything before touching the disk, so a failure leaves no partial report
    contents = {
        "report.json": json_report.render(r),
        "report.md": markdown.render(r),
        "report.html": html.render(r, plots.render_all(r)),
    }
    staging = folder.with_name(f".{folder.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging.mkdir()
        for name, text in contents.items():
            (staging / name).write_text(text, encoding="utf-8")  # a plain open: the usual permissions
        if folder.exists():
            for name in contents:
                os.replace(staging / name, folder / name)
        else:
            os.replace(staging, folder)
    except OSError as exc:
        raise OnnxkdError(f"--report {folder}: cannot write ({exc.strerror or exc})") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return [folder / name for name in contents]
