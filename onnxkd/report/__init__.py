"""Renderers for a validation result: report.json, report.md, report.html, terminal tables.

They read the plain result dict (``ValidationResult.to_dict()`` or a loaded report.json), so a report
can be re-rendered without the models. Imports neither torch nor onnxruntime.
"""

from __future__ import annotations

import os
from pathlib import Path

from onnxkd.errors import OnnxkdError

__all__ = ["as_dict", "write_report"]


def as_dict(result) -> dict:
    return result.to_dict() if hasattr(result, "to_dict") else dict(result)


def write_report(result, folder: str | os.PathLike) -> list[Path]:
    """Write report.json, report.md and report.html into ``folder`` (created), each atomically."""
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
    try:
        folder.mkdir(parents=True, exist_ok=True)
        return [_write_atomic(folder / name, text) for name, text in contents.items()]
    except OSError as exc:
        raise OnnxkdError(f"--report {folder}: cannot write ({exc.strerror or exc})") from None


def _write_atomic(path: Path, text: str) -> Path:
    # a plain open (not mkstemp, which makes 0600 files) so the report gets the usual umask permissions
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
