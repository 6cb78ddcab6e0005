"""Training through the bridge and back: SGD, write-back, parameters/buffers, capture, autocast, compile, DDP."""

from __future__ import annotations

import warnings
from pathlib import Path

import ml_dtypes
import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

import models
from bridge_oracle import load_proto, rel_err, run_ort, with_outputs

import onnxkd
from onnxkd.errors import UnsupportedOpError

torch.set_num_threads(1)


def _export_with_bn(name: str, folder: Path) -> Path:
    """The zoo model exported by the legacy exporter WITHOUT folding BatchNormalization into the convs."""
    path = folder / f"{name}-legacy-bn.onnx"
    if not path.exists():
        model = models.build(name)
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (models.ZOO[name].example_input(2),), str(path), dynamo=False, opset_version=17,
                              do_constant_folding=False, input_names=["input"], output_names=["output"],
                              dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}})
    return path


def _sgd_steps(module, x, target, steps, lr=0.05):
    optimizer = torch.optim.SGD(module.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(module(x)[0], target)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def _initializers(model) -> dict[str, onnx.TensorProto]:
    proto = model if isinstance(model, onnx.ModelProto) else onnx.load(str(model))
    return {t.name: t for t in proto.graph.initializer}


def _same_initializer(a: onnx.TensorProto, b: onnx.TensorProto) -> bool:
    return a.data_type == b.data_type and list(a.dims) == list(b.dims) and \
        numpy_helper.to_array(a).tobytes() == numpy_helper.to_array(b).tobytes()


# --------------------------------------------------------------------------- loading, naming


def test_accepts_every_model_form_and_maps_names_both_ways(zoo_model):
    import onnx_ir as ir

    path = zoo_model("transformer", "legacy")
    x = models.ZOO["transformer"].example_input(2)
    modules = [onnxkd.to_torch(path), onnxkd.to_torch(onnx.load(str(path))), onnxkd.to_torch(ir.load(str(path)))]
    with torch.no_grad():
        outputs = [m.eval()(x)[0] for m in modules]
    assert all(torch.equal(outputs[0], o) for o in outputs[1:])
    module = modules[0]
    names = [t.name for t in load_proto(path).graph.initializer]
    assert set(module.onnx_to_key) >= set(names)
    for name in names:  # keys are attribute-safe and map back to the ONNX name
        key = module.onnx_to_key[name]
        assert key.isidentifier() and module.key_to_onnx[key] == name
    assert dict(module.named_parameters()).keys() == {f"params.{k}" for _, k in module._param_items}
    # write_back takes the same forms and never modifies the model it is given
    ir_model = ir.load(str(path))
    name = next(n for n, _ in module.onnx_parameters())
    before = ir_model.graph.initializers[name].const_value.numpy().copy()
    with torch.no_grad():
        module.parameter(name).add_(1.0)
    for target in (path, onnx.load(str(path)), ir_model):
        written = onnxkd.write_back(module, target)
        np.testing.assert_array_equal(written.graph.initializers[name].const_value.numpy(), before + 1.0)
    np.testing.assert_array_equal(ir_model.graph.initializers[name].const_value.numpy(), before)


def test_local_functions_and_unsorted_nodes(tmp_path):
    """Model-local functions are inlined and out-of-order nodes sorted; write-back still targets the original."""
    function = helper.make_function(
        "local.fn", "ScaledRelu", ["a", "w"], ["b"],
        [helper.make_node("MatMul", ["a", "w"], ["m"]), helper.make_node("Relu", ["m"], ["b"])],
        opset_imports=[helper.make_opsetid("", 17)],
    )
    w = np.random.default_rng(0).standard_normal((4, 4)).astype(np.float32)
    nodes = [  # deliberately out of order: Neg reads the function's output before it is made
        helper.make_node("Neg", ["h"], ["y"]),
        helper.make_node("ScaledRelu", ["x", "W"], ["h"], domain="local.fn"),
    ]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])], [numpy_helper.from_array(w, "W")])
    model = helper.make_model(graph, functions=[function],
                              opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("local.fn", 1)])
    module = onnxkd.to_torch(model)
    x = torch.randn(3, 4)
    sorted_model = onnx.ModelProto()
    sorted_model.CopyFrom(model)
    sorted_model.graph.node.reverse()
    with torch.no_grad():
        assert rel_err(module(x)[0], run_ort(sorted_model, [x])[0]) <= 1e-6
        module.parameter("W").mul_(2)
    out = tmp_path / "written.onnx"
    onnxkd.write_back(module, model, out)
    written = onnx.load(str(out))
    assert [n.op_type for n in written.graph.node] == ["Neg", "ScaledRelu"] and len(written.functions) == 1
    np.testing.assert_array_equal(numpy_helper.to_array(_initializers(written)["W"]), 2 * w)


# --------------------------------------------------------------------------- SGD, write-back


@pytest.mark.parametrize("name", ["resnet", "transformer"])
def test_sgd_lowers_the_loss(zoo_model, name):
    module = onnxkd.to_torch(zoo_model(name, "legacy")).train()
    x = models.ZOO[name].example_input(8)
    target = torch.randint(0, 5, (8,), generator=torch.Generator().manual_seed(1))
    losses = _sgd_steps(module, x, target, steps=5)
    assert losses[-1] < losses[0] * 0.9, losses


def test_scalar_initializers_are_buffers_and_weight_decay_stays_finite(zoo_model):
    """The dynamo export keeps the causal mask's -inf and sqrt(d) as 0-d initializers: constants, not weights."""
    path = zoo_model("gpt", "dynamo")
    scalars = [t.name for t in load_proto(path).graph.initializer if len(t.dims) == 0 and t.data_type == TensorProto.FLOAT]
    assert scalars
    module = onnxkd.to_torch(path).train()
    assert not set(scalars) & {name for name, _ in module.onnx_parameters()}
    optimizer = torch.optim.SGD(module.parameters(), lr=0.05, weight_decay=0.1)
    x = models.ZOO["gpt"].example_input(4)
    for _ in range(3):
        optimizer.zero_grad()
        logits = module(x)[0]
        torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 50), x[:, 1:].reshape(-1)).backward()
        optimizer.step()
    assert torch.isfinite(module(x)[0]).all()


def test_train_mode_matches_native_torch(tmp_path):
    """Train-mode BatchNormalization uses batch statistics and updates the running ones like torch does."""
    native = models.build("resnet").train()
    module = onnxkd.to_torch(_export_with_bn("resnet", tmp_path)).train()
    x = models.ZOO["resnet"].example_input(4)
    expected = native(x)
    got = module(x)[0]
    assert rel_err(got, expected) < 1e-4
    got.square().mean().backward()
    expected.square().mean().backward()
    assert rel_err(module.parameter("fc.weight").grad, native.fc.weight.grad) < 1e-3
    stats = dict(module.onnx_tensors())
    assert rel_err(stats["stem.1.running_mean"], native.stem[1].running_mean) < 1e-5
    assert rel_err(stats["stem.1.running_var"], native.stem[1].running_var) < 1e-5


@pytest.mark.parametrize("opset", [9, 13])
def test_dropout_drops_in_train_mode_only(opset):
    """(The zoo's eval-mode exports drop Dropout nodes, so a hand-made graph: ratio attribute <= 11, input >= 12.)"""
    if opset < 12:
        node = helper.make_node("Dropout", ["x"], ["y"], ratio=0.5)
        inits = []
    else:
        node = helper.make_node("Dropout", ["x", "ratio"], ["y"])
        inits = [numpy_helper.from_array(np.array(0.5, np.float32), "ratio")]
    graph = helper.make_graph([node], "drop", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1000])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1000])], inits)
    module = onnxkd.to_torch(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]))
    x = torch.rand(1000) + 1
    with torch.no_grad():
        module.train()
        y = module(x)[0]
        module.eval()
        assert torch.equal(module(x)[0], x)
    dropped = y == 0
    assert 300 < int(dropped.sum()) < 700
    torch.testing.assert_close(y[~dropped], x[~dropped] * 2)


def test_write_back_after_training_matches_onnxruntime(tmp_path):
    path = _export_with_bn("resnet", tmp_path)
    module = onnxkd.to_torch(path).train()
    x = models.ZOO["resnet"].example_input(8)
    _sgd_steps(module, x, torch.arange(8) % 10, steps=3)
    out = tmp_path / "trained.onnx"
    onnxkd.write_back(module, path, out)
    module.eval()
    with torch.no_grad():
        bridge = module(x)[0]
    assert rel_err(bridge, run_ort(out, [x])[0]) <= 1e-5
    # BatchNormalization running statistics are buffers, changed by training and written back.
    before, after = _initializers(path), _initializers(out)
    bn_stats = [n.input[i] for n in load_proto(path).graph.node if n.op_type == "BatchNormalization" for i in (3, 4)]
    assert bn_stats
    buffers = dict(module.consts.named_buffers())
    for name in bn_stats:
        assert module.onnx_to_key[name] in buffers and module.onnx_to_key[name] not in module.params
        assert not _same_initializer(before[name], after[name])
        np.testing.assert_array_equal(numpy_helper.to_array(after[name]), buffers[module.onnx_to_key[name]].numpy())


@pytest.mark.parametrize("exporter", models.EXPORTERS)
@pytest.mark.parametrize("name", ["transformer", "gpt", "mobilenetv3"])
def test_write_back_after_training_other_models(zoo_model, tmp_path, name, exporter):
    path = zoo_model(name, exporter)
    module = onnxkd.to_torch(path).train()
    x = models.ZOO[name].example_input(4)
    logits = module(x)[0]
    logits.float().square().mean().backward()
    with torch.no_grad():
        for _, param in module.onnx_parameters():
            param -= 0.1 * param.grad
    out = tmp_path / "trained.onnx"
    onnxkd.write_back(module, path, out)
    written = _initializers(out)
    for onnx_name, param in module.onnx_parameters():  # every initializer carries its parameter, bit for bit
        np.testing.assert_array_equal(numpy_helper.to_array(written[onnx_name]), param.detach().numpy())
    changed = [n for n, t in written.items() if not _same_initializer(t, _initializers(path)[n])]
    assert len(changed) >= 0.8 * len(list(module.onnx_parameters()))
    with torch.no_grad():
        assert rel_err(module.eval()(x)[0], run_ort(out, [x])[0]) <= 1e-5


@pytest.mark.parametrize("exporter", models.EXPORTERS)
def test_write_back_without_training_is_bit_identical(zoo_model, tmp_path, exporter):
    path = zoo_model("gpt", exporter)
    out = tmp_path / "same.onnx"
    onnxkd.write_back(onnxkd.to_torch(path), path, out)
    before, after = _initializers(path), _initializers(out)
    assert before.keys() == after.keys()
    assert all(_same_initializer(before[n], after[n]) for n in before)
    assert [n.SerializeToString() for n in load_proto(path).graph.node] == [n.SerializeToString() for n in load_proto(out).graph.node]


def _half_model(data_type: int) -> onnx.ModelProto:
    """y = x @ W + b with fp16 or bf16 initializers (W shared through an Identity, the legacy exporter's dedup)."""
    rng = np.random.default_rng(0)
    np_type = np.float16 if data_type == TensorProto.FLOAT16 else ml_dtypes.bfloat16
    w = rng.standard_normal((4, 4)).astype(np_type)
    b = rng.standard_normal(4).astype(np_type)
    nodes = [helper.make_node("MatMul", ["x", "W"], ["h"]), helper.make_node("Add", ["h", "b"], ["y"])]
    graph = helper.make_graph(
        nodes, "half", [helper.make_tensor_value_info("x", data_type, ["N", 4])],
        [helper.make_tensor_value_info("y", data_type, ["N", 4])],
        [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "b")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("data_type", [TensorProto.FLOAT16, TensorProto.BFLOAT16], ids=["fp16", "bf16"])
def test_half_precision_initializers_keep_their_dtype(tmp_path, data_type):
    model = _half_model(data_type)
    module = onnxkd.to_torch(model)
    assert module.parameter("W").dtype == (torch.float16 if data_type == TensorProto.FLOAT16 else torch.bfloat16)
    onnxkd.write_back(module, model, tmp_path / "same.onnx")
    before, after = _initializers(model), _initializers(tmp_path / "same.onnx")
    assert all(_same_initializer(before[n], after[n]) for n in before)
    with torch.no_grad():
        module.parameter("W").add_(0.5)
    onnxkd.write_back(module, model, tmp_path / "changed.onnx")
    changed = _initializers(tmp_path / "changed.onnx")
    assert changed["W"].data_type == data_type
    np.testing.assert_array_equal(
        numpy_helper.to_array(changed["W"]).astype(np.float32), module.parameter("W").detach().float().numpy()
    )


def test_shared_weight_is_one_parameter(tmp_path):
    """Two MatMuls read W: one directly, one through Identity (legacy exporter dedup); one parameter, one initializer."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((4, 4)).astype(np.float32)
    nodes = [
        helper.make_node("Identity", ["W"], ["W_shared"]),
        helper.make_node("MatMul", ["x", "W"], ["h"]),
        helper.make_node("MatMul", ["h", "W_shared"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "shared", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])], [numpy_helper.from_array(w, "W")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    module = onnxkd.to_torch(model)
    assert [name for name, _ in module.onnx_parameters()] == ["W"]
    x = torch.randn(3, 4)
    module(x)[0].sum().backward()
    w_t = torch.from_numpy(w).requires_grad_()
    (x @ w_t @ w_t).sum().backward()  # the gradient collects both uses
    torch.testing.assert_close(module.parameter("W").grad, w_t.grad)
    with torch.no_grad():
        module.parameter("W").mul_(2)
    out = tmp_path / "shared.onnx"
    onnxkd.write_back(module, model, out)
    assert list(_initializers(out)) == ["W"]
    np.testing.assert_allclose(run_ort(out, [x])[0], (x @ (2 * w_t) @ (2 * w_t)).detach().numpy(), rtol=1e-5)


def test_constant_node_weights_are_parameters_written_back_as_initializers(tmp_path):
    """A weight in a Constant node (older exporters) trains like an initializer; scalar Constants do not."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((4, 3)).astype(np.float32)
    nodes = [
        helper.make_node("Constant", [], ["W"], value=numpy_helper.from_array(w)),
        helper.make_node("Constant", [], ["half"], value_float=0.5),
        helper.make_node("MatMul", ["x", "W"], ["h"]),
        helper.make_node("Mul", ["h", "half"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "const", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    module = onnxkd.to_torch(model)
    assert [name for name, _ in module.onnx_parameters()] == ["W"]
    assert module.folded == {"W": "Constant", "half": "Constant"}
    # Untouched: the graph is written back as it was.
    same = tmp_path / "same.onnx"
    onnxkd.write_back(module, model, same)
    assert [n.op_type for n in onnx.load(str(same)).graph.node] == ["Constant", "Constant", "MatMul", "Mul"]
    x = torch.randn(5, 4)
    _sgd_steps(module.train(), x, torch.tensor([0, 1, 2, 0, 1]), steps=2, lr=0.5)
    out = tmp_path / "trained.onnx"
    onnxkd.write_back(module, model, out)
    written = onnx.load(str(out))
    assert [n.op_type for n in written.graph.node] == ["Constant", "MatMul", "Mul"]
    np.testing.assert_array_equal(numpy_helper.to_array(_initializers(written)["W"]), module.parameter("W").detach().numpy())
    with torch.no_grad():
        assert rel_err(module.eval()(x)[0], run_ort(written, [x])[0]) <= 1e-5


def _bn_through_identity_model() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    c = 3
    inits = [numpy_helper.from_array(a.astype(np.float32), n) for n, a in
             [("scale", rng.random(c) + 0.5), ("bias", rng.random(c)), ("mean", rng.random(c)), ("var", rng.random(c) + 0.5)]]
    inits.append(numpy_helper.from_array(np.array([2.0, 2.0], np.float32), "clip_max_vec"))
    nodes = [
        helper.make_node("Identity", ["mean"], ["mean_alias"]),
        helper.make_node("Identity", ["var"], ["var_alias"]),
        helper.make_node("BatchNormalization", ["x", "scale", "bias", "mean_alias", "var_alias"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "bn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", c, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", c, 4, 4])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)])


def test_bn_statistics_through_identity_are_buffers(tmp_path):
    model = _bn_through_identity_model()
    module = onnxkd.to_torch(model)
    assert sorted(name for name, _ in module.onnx_parameters()) == ["bias", "scale"]
    buffers = dict(module.consts.named_buffers())
    assert {"mean", "var"} <= set(buffers)
    module.train()
    module(torch.randn(8, 3, 4, 4) * 3 + 1)
    out = tmp_path / "bn.onnx"
    onnxkd.write_back(module, model, out)
    written = _initializers(out)
    for name in ("mean", "var"):
        np.testing.assert_array_equal(numpy_helper.to_array(written[name]), buffers[name].numpy())
        assert not _same_initializer(written[name], _initializers(model)[name])
    module.eval()
    x = torch.randn(2, 3, 4, 4)
    with torch.no_grad():
        assert rel_err(module(x)[0], run_ort(out, [x])[0]) <= 1e-5


def test_consts_read_like_a_dict_of_their_keys():
    """The README's `module.consts`: keys() raised AttributeError, and `in` answered for any attribute of the
    module ("train", "forward")."""
    module = onnxkd.to_torch(_bn_through_identity_model())
    buffers = dict(module.consts.named_buffers())
    assert set(module.consts.keys()) == set(buffers) == set(module.consts) and len(module.consts) == len(buffers)
    assert all(module.consts[key] is tensor for key, tensor in module.consts.items())
    assert "train" not in module.consts and "forward" not in module.consts
    with pytest.raises(KeyError):
        module.consts["train"]


def test_graph_inputs_with_initializers_are_not_inputs():
    """Old models list initializers among the graph inputs; forward takes only the real inputs."""
    model = _bn_through_identity_model()
    model.graph.input.extend(helper.make_tensor_value_info(t.name, TensorProto.FLOAT, list(t.dims)) for t in model.graph.initializer)
    model.ir_version = 3
    module = onnxkd.to_torch(model).eval()
    assert module.input_names == ["x"]
    x = torch.randn(2, 3, 4, 4)
    with torch.no_grad():
        assert rel_err(module(x)[0], run_ort(model, [x])[0]) <= 1e-5


# --------------------------------------------------------------------------- capture


@pytest.mark.parametrize("name", ["resnet", "transformer"])
def test_capture_equals_onnxruntime_intermediates(zoo_model, name):
    path = zoo_model(name, "legacy")
    proto = load_proto(path)
    wanted = {"Conv", "Relu", "Add", "Softmax", "LayerNormalization", "MatMul"}
    names = [n.output[0] for n in proto.graph.node if n.op_type in wanted][::3][:6]
    assert len(names) >= 3
    module = onnxkd.to_torch(path).eval()
    x = models.ZOO[name].example_input(2)
    with torch.no_grad():
        outputs, captured = module(x, capture=names)
    expected = run_ort(with_outputs(proto, names), [x])
    assert rel_err(outputs[0], expected[0]) <= 1e-4
    for tensor_name, value in zip(names, expected[1:]):
        assert rel_err(captured[tensor_name], value) <= 1e-4, tensor_name
    with pytest.raises(onnxkd.OnnxkdError, match="no_such_tensor"):
        module(x, capture=["no_such_tensor"])


def test_capture_of_tensors_inside_fused_patterns(zoo_model):
    """MatMul+Add (Linear) and the exported GELU run fused; capturing their inner tensors still works."""
    path = zoo_model("transformer", "legacy")
    proto = load_proto(path)
    module = onnxkd.to_torch(path).eval()
    inner = {n.output[0] for n in proto.graph.node if n.op_type in ("Erf", "MatMul")}
    names = sorted(inner & module.program.fused_away)
    assert any("Erf" in n for n in names) and any("MatMul" in n for n in names)
    x = models.ZOO["transformer"].example_input(2)
    with torch.no_grad():
        fused_out = module(x)[0]
        outputs, captured = module(x, capture=names)
    expected = run_ort(with_outputs(proto, names), [x])
    assert rel_err(fused_out, expected[0]) <= 1e-4 and rel_err(outputs[0], expected[0]) <= 1e-4
    for name, value in zip(names, expected[1:]):
        assert rel_err(captured[name], value) <= 1e-4, name


# --------------------------------------------------------------------------- external data


def test_external_data_model_loads_and_writes_back(zoo_model, tmp_path):
    path = zoo_model("resnet", "dynamo", external_data=True)
    assert any(t.data_location == TensorProto.EXTERNAL for t in onnx.load(str(path), load_external_data=False).graph.initializer)
    module = onnxkd.to_torch(path).eval()
    x = models.ZOO["resnet"].example_input(2)
    with torch.no_grad():
        assert rel_err(module(x)[0], run_ort(path, [x])[0]) <= 1e-4
    out = tmp_path / "written.onnx"
    onnxkd.write_back(module, path, out)
    assert (tmp_path / "written.onnx.data").exists()
    before, after = _initializers(path), _initializers(out)
    assert before.keys() == after.keys() and all(_same_initializer(before[n], after[n]) for n in before)
    with torch.no_grad():
        next(iter(module.params.values())).mul_(1.5)
        bridge = module(x)[0]
    onnxkd.write_back(module, path, out)
    assert rel_err(bridge, run_ort(out, [x])[0]) <= 1e-5


# --------------------------------------------------------------------------- autocast, compile


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("name", ["resnet", "transformer"])
def test_autocast_close_to_fp32(zoo_model, name, dtype):
    module = onnxkd.to_torch(zoo_model(name, "legacy")).eval()
    x = models.ZOO[name].example_input(2)
    with torch.no_grad():
        reference = module(x)[0]
        with torch.autocast("cpu", dtype=dtype):
            low = module(x)[0]
    err = rel_err(low.float(), reference)
    assert 0 < err < 5e-2  # low-precision kernels did run (not bit-equal to fp32), and stay close


def test_torch_compile_matches_eager(zoo_model):
    path = zoo_model("resnet", "legacy")
    eager = onnxkd.to_torch(path).train()
    compiled_module = onnxkd.to_torch(path).train()
    compiled = torch.compile(compiled_module, backend="aot_eager")
    x = models.ZOO["resnet"].example_input(2)
    name = next(n.output[0] for n in load_proto(path).graph.node if n.op_type == "Relu")
    (y_eager,), feats_eager = eager(x, capture=[name])
    (y_comp,), feats_comp = compiled(x, capture=[name])
    torch.testing.assert_close(y_comp, y_eager, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(feats_comp[name], feats_eager[name], rtol=1e-5, atol=1e-5)
    (y_eager.sum() + feats_eager[name].mean()).backward()
    (y_comp.sum() + feats_comp[name].mean()).backward()
    for (n, p_eager), (_, p_comp) in zip(eager.onnx_parameters(), compiled_module.onnx_parameters()):
        torch.testing.assert_close(p_comp.grad, p_eager.grad, rtol=1e-4, atol=1e-5, msg=n)


@pytest.mark.parametrize("exporter", models.EXPORTERS)
def test_torch_compile_transformer_is_one_graph(zoo_model, exporter):
    """Shape arithmetic (Shape -> Gather -> Concat -> Reshape) does not break the graph once the input shape
    has been seen (by an eager call here; a compiled call without one breaks once, then recompiles)."""
    path = zoo_model("transformer", exporter)
    module = onnxkd.to_torch(path).eval()
    compiled = torch.compile(module, backend="aot_eager", fullgraph=True)
    for batch in (2, 3):
        x = models.ZOO["transformer"].example_input(batch)
        with torch.no_grad():
            expected = module(x)[0]
            torch.testing.assert_close(compiled(x)[0], expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("exporter", models.EXPORTERS)
def test_dtype_change_after_a_forward(zoo_model, exporter):
    """.double() after a call: cached shape computations do not keep float32 tensors from before."""
    path = zoo_model("gpt", exporter)
    module = onnxkd.to_torch(path).eval()
    x = models.ZOO["gpt"].example_input(2)
    with torch.no_grad():
        module(x)
        out = module.double()(x)[0]
    assert out.dtype == torch.float64
    assert rel_err(out, run_ort(path, [x])[0]) <= 1e-4


def test_inference_mode_then_training(zoo_model):
    """Shape computations cached under torch.inference_mode are not reused by a training step."""
    module = onnxkd.to_torch(zoo_model("gpt", "legacy"))
    x = models.ZOO["gpt"].example_input(2)
    with torch.inference_mode():
        expected = module.eval()(x)[0].clone()
    out = module.train()(x)[0]
    out.square().mean().backward()
    torch.testing.assert_close(out.detach(), expected)
    assert module.parameter("tok.weight").grad is not None


# --------------------------------------------------------------------------- DDP


def _ddp_step(rank: int, path: str, out_dir: str) -> None:
    from torch.nn.parallel import DistributedDataParallel

    module = onnxkd.to_torch(path).train()
    proto = onnx.load(path)
    feature = next(n.output[0] for n in proto.graph.node if n.op_type == "Relu")
    ddp = DistributedDataParallel(module)
    optimizer = torch.optim.SGD(ddp.parameters(), lr=0.1)
    x = models.ZOO["resnet"].example_input(2 + rank)  # different data per rank
    (logits,), captured = ddp(x, capture=[feature])
    loss = logits.square().mean() + captured[feature].mean()
    loss.backward()
    optimizer.step()
    torch.save({n: p.detach() for n, p in module.onnx_parameters()}, f"{out_dir}/rank{rank}.pt")


def _ddp_worker(rank: int, world: int, path: str, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        _ddp_step(rank, path, out_dir)  # its DDP wrapper (which holds the process group) is gone on return
        # Tear down together and before interpreter exit: a gloo group destroyed while its peer still
        # works, or left to static destructors, aborted a CI run ("terminate called without an active exception").
        dist.barrier()
    finally:
        dist.destroy_process_group()


def test_ddp_two_process_training_step(zoo_model, tmp_path):
    path = str(zoo_model("resnet", "legacy"))
    torch.multiprocessing.spawn(_ddp_worker, args=(2, path, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    rank0, rank1 = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    original = dict(onnxkd.to_torch(path).onnx_parameters())
    assert rank0.keys() == rank1.keys() == original.keys()
    for name in rank0:  # gradients were averaged: both ranks hold the same, updated weights
        torch.testing.assert_close(rank0[name], rank1[name])
    assert any(not torch.equal(rank0[n], original[n].detach()) for n in rank0)


# --------------------------------------------------------------------------- unsupported ops


def test_unsupported_op_raises_at_to_torch():
    nodes = [helper.make_node("Relu", ["x"], ["h"], name="ok"), helper.make_node("FancyOp", ["h"], ["y"], name="the_fancy_node", domain="com.example")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 3)])
    with pytest.raises(UnsupportedOpError) as info:
        onnxkd.to_torch(model)
    message = str(info.value)
    for part in ("FancyOp", "com.example", "opset 3", "the_fancy_node"):
        assert part in message
    assert isinstance(info.value, onnxkd.OnnxkdError)


def test_inductor_compiles_a_real_model(digits):
    """The other compile tests use aot_eager (fast); this one goes through inductor's code generation once."""
    module = onnxkd.to_torch(digits["teacher"]).eval()
    x = torch.from_numpy(np.random.default_rng(0).random((4, 1, 8, 8), dtype=np.float32))
    compiled = torch.compile(module, backend="inductor")
    with torch.no_grad():
        torch.testing.assert_close(compiled(x)[0], module(x)[0], rtol=1e-5, atol=1e-5)
    assert rel_err(compiled(x)[0].detach(), run_ort(digits["teacher"], [x])[0]) <= 1e-4
