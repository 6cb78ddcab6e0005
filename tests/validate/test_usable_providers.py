"""A provider onnxruntime lists but cannot start is not used, and asking for it is one clear error.

onnxruntime-gpu lists TensorrtExecutionProvider (and CUDA) even where TensorRT's libraries are absent; a
session asked for it then runs on the CPU without a word. Here the CPU build is made to list the GPU
providers: a real session on them falls back to the CPU exactly as on such a machine.
"""

import onnxruntime as ort
import pytest

from onnxkd.errors import OnnxkdError
from onnxkd.validate import sessions


@pytest.fixture
def gpu_listed_not_startable(monkeypatch):
    listed = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    monkeypatch.setattr(ort, "get_available_providers", lambda: listed)
    sessions.usable_providers.cache_clear()
    yield
    sessions.usable_providers.cache_clear()


def test_auto_uses_only_providers_that_start(gpu_listed_not_startable):
    assert sessions.usable_providers() == ("CPUExecutionProvider",)
    assert sessions.resolve_providers("auto") == ["CPUExecutionProvider"]


@pytest.mark.parametrize("provider", ["tensorrt", "cuda"])
def test_asking_for_a_provider_that_cannot_start_is_an_error(gpu_listed_not_startable, provider):
    with pytest.raises(OnnxkdError, match=f"--provider {provider}: this onnxruntime lists .* but cannot start it"):
        sessions.resolve_providers(provider)


def test_the_cpu_provider_starts():
    sessions.usable_providers.cache_clear()
    assert "CPUExecutionProvider" in sessions.usable_providers()
    assert sessions.resolve_providers("cpu") == ["CPUExecutionProvider"]
