"""Shared fixtures: the exported architecture zoo and the ONNX-zoo light models, made once a session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "2")

LIGHT_DIR = Path(__import__("onnx").__file__).parent / "backend" / "test" / "data" / "light"
LIGHT_MODELS = sorted(p.stem.removeprefix("light_") for p in LIGHT_DIR.glob("light_*.onnx"))


@pytest.fixture(scope="session")
def zoo_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("zoo")


@pytest.fixture(scope="session")
def zoo_model(zoo_dir):
    """``zoo_model(name, exporter="legacy", external_data=False) -> Path`` of the exported file (cached)."""
    import models  # torch is imported only by tests that use the zoo

    def get(name: str, exporter: str = "legacy", external_data: bool = False) -> Path:
        return models.export(name, zoo_dir, exporter, external_data=external_data)

    return get


def light_model_path(name: str) -> Path:
    return LIGHT_DIR / f"light_{name}.onnx"
