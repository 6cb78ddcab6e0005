"""Bridge (eval, fp32) vs onnxruntime on the architecture zoo (both exporters) and the ONNX-zoo light models.

Bound: rel_err = max|bridge - ort| / max|ort| <= 1e-4 for every output (see bridge_oracle.py).
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

import models
from bridge_oracle import load_proto, rel_err, run_ort, with_outputs, with_symbolic_dims
from light_models import LIGHT_MODELS, light_model_path

import onnxkd

TOL = 1e-4
torch.set_num_threads(1)


def _bridge(model, inputs, capture=None):
    module = onnxkd.to_torch(model).eval()
    with torch.no_grad():
        return module(*inputs, capture=capture) if capture is not None else module(*inputs)


def _assert_close(bridge_outputs, ort_outputs, what):
    assert len(bridge_outputs) == len(ort_outputs)
    for index, (a, b) in enumerate(zip(bridge_outputs, ort_outputs)):
        err = rel_err(a, b)
        assert err <= TOL, f"{what}: output {index} rel err {err:.2e} > {TOL}"


# --------------------------------------------------------------------------- architecture zoo


@pytest.mark.parametrize("exporter", models.EXPORTERS)
@pytest.mark.parametrize("name", sorted(models.ZOO))
def test_zoo_matches_onnxruntime(zoo_model, name, exporter):
    path = zoo_model(name, exporter)
    arch = models.ZOO[name]
    module = onnxkd.to_torch(path).eval()
    # The export's batch and another one (dynamic batch axis), each twice: the first call of a shape runs
    # every step, later ones reuse its cached shape computations.
    for batch in (2, 3, 2, 3):
        x = arch.example_input(batch)
        with torch.no_grad():
            _assert_close(module(x), run_ort(path, [x]), f"{name}/{exporter} batch {batch}")


@pytest.mark.parametrize("exporter", models.EXPORTERS)
@pytest.mark.parametrize("name", sorted(n for n, a in models.ZOO.items() if a.family == "cnn"))
def test_zoo_cnn_second_spatial_size(zoo_model, name, exporter):
    """48x48 instead of the exported 32x32: the exports declare a fixed size, but no zoo CNN bakes it into
    its graph, so with the input's spatial dims made symbolic both runtimes accept another size. Except the
    ShuffleNets' dynamo exports, which write the channel shuffle's Reshape with the traced spatial size
    (onnxruntime rejects 48x48 as well)."""
    if exporter == "dynamo" and name.startswith("shufflenet"):
        pytest.skip("the export bakes the spatial size into a Reshape constant")
    proto = with_symbolic_dims(load_proto(zoo_model(name, exporter)), {2: "height", 3: "width"})
    x = torch.randn(2, 3, 48, 48, generator=torch.Generator().manual_seed(7))
    _assert_close(_bridge(proto, [x]), run_ort(proto, [x]), f"{name}/{exporter} 48x48")


# --------------------------------------------------------------------------- ONNX-zoo light models


def _light_input(proto: onnx.ModelProto, batch: int = 1, size: int = 224) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(size + batch))


def _pre_softmax(proto: onnx.ModelProto) -> list[str]:
    return [n.input[0] for n in proto.graph.node if n.op_type == "Softmax"]


def _randomize(module, proto: onnx.ModelProto) -> None:
    """He-style random weights: the shipped light models fill every weight with 0.02 (uniform outputs)."""
    generator = torch.Generator().manual_seed(0)
    # BN scales and variances (and the Mul scales densenet applies after BN) near 1; other vectors near 0.
    near_one = {n.input[i] for n in proto.graph.node if n.op_type == "BatchNormalization" for i in (1, 4)}
    near_one |= {n.input[1] for n in proto.graph.node if n.op_type == "Mul" and len(n.input) > 1}
    unsqueezed = {n.output[0]: n.input[0] for n in proto.graph.node if n.op_type == "Unsqueeze"}
    near_one |= {unsqueezed[n] for n in list(near_one) if n in unsqueezed}
    with torch.no_grad():
        for name, tensor in module.onnx_tensors():
            if not isinstance(tensor, torch.Tensor) or not tensor.is_floating_point():
                continue
            if tensor.dim() >= 2:
                fan_in = tensor[0].numel()
                tensor.copy_(torch.randn(tensor.shape, generator=generator) * (2.0 / fan_in) ** 0.5)
            elif name in near_one:
                tensor.copy_(torch.rand(tensor.shape, generator=generator) + 0.5)
            else:
                tensor.copy_((torch.rand(tensor.shape, generator=generator) - 0.5) * 0.2)


@pytest.mark.parametrize("name", LIGHT_MODELS)
def test_light_model_as_shipped(name):
    """Weights behind ConstantOfShape: folded, loaded, and the same outputs as onnxruntime (and logits)."""
    proto = load_proto(light_model_path(name))
    x = _light_input(proto)
    logits = _pre_softmax(proto)
    outputs, captured = _bridge(proto, [x], capture=logits)
    expected = run_ort(with_outputs(proto, logits), [x])
    _assert_close(list(outputs) + [captured[n] for n in logits], expected, f"{name} as shipped")


def _randomized_light(name, folder):
    """The light model with random weights written back (ConstantOfShape -> initializers); (module, proto)."""
    module = onnxkd.to_torch(light_model_path(name)).eval()
    assert module.folded, "the light models keep their weights behind ConstantOfShape"
    _randomize(module, load_proto(light_model_path(name)))
    out = folder / f"{name}.onnx"
    onnxkd.write_back(module, light_model_path(name), out)
    proto = load_proto(out)
    changed = {n for n in module.folded if module.onnx_to_key[n] in module.params}
    assert changed and changed <= {i.name for i in proto.graph.initializer}
    return module, proto


@pytest.mark.parametrize("name", LIGHT_MODELS)
def test_light_model_random_weights(name, tmp_path):
    """A non-degenerate comparison: random weights, outputs and pre-softmax logits."""
    module, proto = _randomized_light(name, tmp_path)
    x = _light_input(proto)
    logits = _pre_softmax(proto)
    with torch.no_grad():
        outputs, captured = module(x, capture=logits)
    expected = run_ort(with_outputs(proto, logits), [x])
    assert np.std(expected[-1]) > 1e-3, "random weights should give varied outputs"
    _assert_close(list(outputs) + [captured[n] for n in logits], expected, f"{name} random weights")


# The other light models bake batch 1 and 224x224 into a Reshape before their classifier.
@pytest.mark.parametrize("name", ["densenet121", "squeezenet"])
def test_light_model_second_size(name, tmp_path):
    module, proto = _randomized_light(name, tmp_path)
    x = _light_input(proto, batch=2, size=160)
    expected = run_ort(with_symbolic_dims(proto, {0: "batch", 2: "height", 3: "width"}), [x])
    with torch.no_grad():
        _assert_close(module(x), expected, f"{name} batch 2, 160x160")
