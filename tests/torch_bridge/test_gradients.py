"""``initializer_gradients``: bridge gradients equal the gradients of the torch module the ONNX came from."""

from __future__ import annotations

import logging
import warnings

import models
import numpy as np
import pytest
import torch
from torch import nn

from onnxkd.errors import OnnxkdError
from onnxkd.torch_bridge import to_torch
from onnxkd.torch_bridge.gradients import initializer_gradients

torch.set_num_threads(1)
F = nn.functional


def assert_rel(actual: np.ndarray, expected: torch.Tensor, what: str, tol: float = 1e-4) -> None:
    expected = expected.detach().numpy()
    assert actual.shape == expected.shape, what
    assert actual.dtype == np.float32, what
    scale = max(float(np.abs(expected).max()), 1e-12)
    assert float(np.abs(actual - expected).max()) / scale < tol, what


def tiny_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 6, 3, padding=1), nn.Tanh(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 5)).eval()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A torch net without BN and its legacy export, which keeps parameter names as initializer names."""
    net = tiny_net()
    path = tmp_path_factory.mktemp("grad") / "tiny.onnx"
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.zeros(1, 3, 8, 8),), str(path), dynamo=False, opset_version=17,
                          input_names=["x"], output_names=["logits"], dynamic_axes={"x": {0: "n"}, "logits": {0: "n"}})
    return net, path


def data(n: int = 6, seed: int = 1):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 3, 8, 8)).astype(np.float32), rng.integers(0, 5, n)


def torch_grads(net: nn.Module, loss: torch.Tensor) -> dict[str, torch.Tensor]:
    net.zero_grad()
    loss.backward()
    return {name: p.grad.clone() for name, p in net.named_parameters()}


def test_cross_entropy_with_labels_matches_torch(tiny):
    net, path = tiny
    x, y = data()
    # three batches of 2 with labels sliced from the global array: the mean over all 6 samples
    grads = initializer_gradients(path, [{"x": x[i:i + 2]} for i in range(0, 6, 2)], labels=y)
    expected = torch_grads(net, F.cross_entropy(net(torch.from_numpy(x)), torch.from_numpy(y)))
    assert set(expected) <= set(grads)
    for name, ref in expected.items():
        assert_rel(grads[name], ref, name)


def test_label_free_proxy_is_squared_output_norm(tiny):
    net, path = tiny
    x, _ = data()
    grads = initializer_gradients(path, {"x": x})
    out = net(torch.from_numpy(x))
    expected = torch_grads(net, out.square().sum() / len(x))
    for name, ref in expected.items():
        assert_rel(grads[name], ref, name)
    # labels that do not fit class scores are not silently accepted
    with pytest.raises(OnnxkdError, match="class id 7"):
        initializer_gradients(path, {"x": x[:2]}, labels=np.array([7, 0]))


def test_max_batches_and_dataset_batches(tiny):
    from onnxkd.data import Dataset

    net, path = tiny
    x, y = data(8)
    seen = []
    grads = initializer_gradients(path, Dataset({"x": x}, y), batch_size=3, max_batches=2,
                                  progress=lambda stage, done, total: seen.append((stage, done, total)))
    assert seen == [("gradients", 3, 6), ("gradients", 6, 6)]
    expected = torch_grads(net, F.cross_entropy(net(torch.from_numpy(x[:6])), torch.from_numpy(y[:6])))
    for name, ref in expected.items():
        assert_rel(grads[name], ref, name)


def test_data_in_the_commands_forms(tiny, tmp_path):
    """A path, (x, y) and a dict with labels, as --data takes them: the same cross-entropy gradients."""
    net, path = tiny
    x, y = data()
    np.savez(tmp_path / "d.npz", x=x, labels=y)
    expected = torch_grads(net, F.cross_entropy(net(torch.from_numpy(x)), torch.from_numpy(y)))
    for given in (str(tmp_path / "d.npz"), tmp_path / "d.npz", (x, y), {"x": x, "labels": y}):
        grads = initializer_gradients(path, given, batch_size=4)
        for name, ref in expected.items():
            assert_rel(grads[name], ref, f"{type(given).__name__}: {name}")
    with pytest.raises(OnnxkdError, match="not an OnnxModule"):
        initializer_gradients(to_torch(path), (x, y))


def test_given_module_is_left_as_it_was(tiny):
    _, path = tiny
    module = to_torch(path).train()
    before = {k: v.clone() for k, v in module.state_dict().items()}
    x, y = data(2)
    initializer_gradients(module, [({"x": x}, y)])
    assert module.training
    assert all(p.grad is None for p in module.parameters())
    assert all(torch.equal(before[k], v) for k, v in module.state_dict().items())
    with pytest.raises(OnnxkdError, match="no samples"):
        initializer_gradients(module, [])


def test_resnet_with_folded_batchnorm(zoo_model):
    """Exporters fold eval BN into the conv: W' = W * s, b' = beta - mean * s, so dL/dW' = (dL/dW) / s."""
    net = models.build("resnet")
    x = models.ZOO["resnet"].example_input(4)
    y = torch.tensor([0, 3, 5, 9])
    expected = torch_grads(net, F.cross_entropy(net(x), y))
    modules = dict(net.named_modules())
    feeds = [({"input": x[:2].numpy()}, y[:2].numpy()), ({"input": x[2:].numpy()}, y[2:].numpy())]

    legacy = initializer_gradients(zoo_model("resnet", "legacy"), feeds)
    for name in ("fc.weight", "fc.bias"):  # the legacy exporter renames folded convs, keeps Gemm names
        assert_rel(legacy[name], expected[name], name)

    dynamo = initializer_gradients(zoo_model("resnet", "dynamo"), feeds)
    bn_of = {"stem.0": "stem.1", "layer2.0.down.0": "layer2.0.down.1"}
    convs = [name[:-len(".weight")] for name in expected if name.endswith(".weight") and
             isinstance(modules[name[:-len(".weight")]], nn.Conv2d)]
    assert len(convs) == 10
    for conv in convs:
        bn = modules[bn_of.get(conv, conv.replace("conv", "bn"))]
        scale = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).detach()
        assert_rel(dynamo[f"{conv}.weight"], expected[f"{conv}.weight"] / scale[:, None, None, None], conv)
        assert_rel(dynamo[f"{conv}.weight_bias"], bn.bias.grad, f"{conv} bias")
    for name in ("fc.weight", "fc.bias"):
        assert_rel(dynamo[name], expected[name], name)


def test_a_deployment_export_is_differentiated_through_the_logits_behind_its_class_id(digits, tmp_path):
    """Class id and confidence (no scores among the outputs): with labels, the cross-entropy of the logits
    behind them, exactly as for the same classifier exporting its logits."""
    from classifier_heads import deployed

    data = np.load(digits["val"])
    feeds, labels = {"image": data["image"][:64]}, data["labels"][:64]
    plain = initializer_gradients(digits["teacher"], feeds, labels)
    through_heads = initializer_gradients(deployed(digits["teacher"], tmp_path / "deployed.onnx"), feeds, labels)
    assert plain.keys() == through_heads.keys()
    for name, grad in plain.items():
        np.testing.assert_allclose(through_heads[name], grad, rtol=1e-5, atol=1e-7)
