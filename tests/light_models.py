"""The ONNX-zoo "light" models that ship inside the onnx package (real exports, small weights)."""

from __future__ import annotations

from pathlib import Path

LIGHT_DIR = Path(__import__("onnx").__file__).parent / "backend" / "test" / "data" / "light"
LIGHT_MODELS = sorted(p.stem.removeprefix("light_") for p in LIGHT_DIR.glob("light_*.onnx"))


def light_model_path(name: str) -> Path:
    return LIGHT_DIR / f"light_{name}.onnx"
