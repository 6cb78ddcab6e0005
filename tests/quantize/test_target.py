"""The activation type chosen for where the model runs (the issue's measurements: U8S8 on x86, S8S8 elsewhere)."""

import pytest

from onnxkd.errors import OnnxkdError
from onnxkd.quantize.target import choose_target

CPU = ["CPUExecutionProvider"]


def test_x86_with_vnni_gets_uint8_activations_and_full_weights():
    target = choose_target(CPU, machine="x86_64", cpu_flags={"avx512_vnni"})
    assert (target.device, target.activation, target.reduce_range) == ("cpu-x86", "uint8", False)


def test_x86_without_vnni_gets_7_bit_weights():
    assert choose_target(CPU, machine="x86_64", cpu_flags={"avx2"}).reduce_range


@pytest.mark.parametrize("providers, machine, device", [
    (["CUDAExecutionProvider", "CPUExecutionProvider"], "x86_64", "cuda"),
    (["TensorrtExecutionProvider", "CUDAExecutionProvider"], "x86_64", "tensorrt"),
    (CPU, "aarch64", "cpu-arm"),
])
def test_gpus_and_arm_get_int8_activations(providers, machine, device):
    target = choose_target(providers, machine=machine, cpu_flags=set())
    assert (target.device, target.activation, target.reduce_range) == (device, "int8", False)


def test_the_flag_overrides_the_choice_and_says_so():
    target = choose_target(CPU, "int8", machine="x86_64", cpu_flags={"avx512_vnni"})
    assert target.activation == "int8" and "fast path here is uint8" in target.reason
    with pytest.raises(OnnxkdError, match="--activation-type"):
        choose_target(CPU, "fp16")
