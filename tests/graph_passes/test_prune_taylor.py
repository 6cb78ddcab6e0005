"""``--criterion taylor``: gradients from the bridge rank channels by their effect on the loss, not their size.

The models are built so the answer is known: a channel with the largest weights whose output nothing
downstream reads (a zero column in the next layer) has zero Taylor score, so taylor removes it while l1
removes a small channel that matters. Removing a dead channel leaves the function unchanged, which
onnxruntime checks on the pruned file.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from test_prune_cli import cli  # the same in-process CLI runner
from onnxkd.graph_passes.api import channel_groups, prune, read_plan
from onnxkd.errors import OnnxkdError
from onnxkd.graph_passes.prune.importance import importance

pytest.importorskip("torch")
from onnxkd.torch_bridge.gradients import initializer_gradients  # noqa: E402

RNG = np.random.default_rng(0)
SMALL, DEAD = 0, 3  # channel indices of the hidden layer (4 channels)


def hidden_weights(large: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    w = RNG.uniform(0.5, 1.5, (4, 6)).astype(np.float32)
    w[SMALL] *= 0.1
    for c in large:
        w[c] *= 5.0
    return w, np.full(4, 0.1, np.float32)


def head(dead: int) -> np.ndarray:
    w = RNG.uniform(0.5, 1.5, (3, 4)).astype(np.float32)
    w[:, dead] = 0.0  # nothing downstream reads this channel
    return w


def mlp(path, branches: list[tuple[str, np.ndarray]], w1: np.ndarray, b1: np.ndarray):
    """x[N,6] -> Gemm(W1, b1) -> Relu -> Gemm(head) per branch -> sum. W1/b1 are shared by all branches."""
    nodes, inits, outs = [], [numpy_helper.from_array(w1, "W1"), numpy_helper.from_array(b1, "b1")], []
    for name, w in branches:
        inits += [numpy_helper.from_array(w, name), numpy_helper.from_array(np.zeros(3, np.float32), f"{name}_b")]
        nodes += [helper.make_node("Gemm", ["x", "W1", "b1"], [f"h_{name}"], transB=1, name=f"fc1_{name}"),
                  helper.make_node("Relu", [f"h_{name}"], [f"r_{name}"], name=f"relu_{name}"),
                  helper.make_node("Gemm", [f"r_{name}", name, f"{name}_b"], [f"y_{name}"], transB=1, name=f"fc2_{name}")]
        outs.append(f"y_{name}")
    nodes.append(helper.make_node("Sum", outs, ["logits"], name="sum"))
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 6])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", 3])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def samples(n: int = 16):
    x = RNG.uniform(0.1, 1.0, (n, 6)).astype(np.float32)  # positive inputs keep every ReLU open
    return x, RNG.integers(0, 3, n)


def hidden_group(groups, head_name: str):
    """The hidden-layer group read by ``head_name`` (its input channels)."""
    return next(g for g in groups if any(s.name == head_name and s.role == "in" for s in g.slices))


def kept_by_head(result, head_name: str) -> list[int]:
    return result.plan[hidden_group(result.groups, head_name).id]


def ort_run(path, x):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def test_taylor_removes_the_dead_channel_l1_removes_the_small_one(tmp_path):
    w1, b1 = hidden_weights(large=(DEAD,))
    path = mlp(tmp_path / "mlp.onnx", [("W2", head(DEAD))], w1, b1)
    x, y = samples()
    grads = initializer_gradients(path, {"x": x}, labels=y)
    assert np.all(grads["W1"][DEAD] == 0) and np.any(grads["W1"][SMALL] != 0)
    l1 = prune(path, 0.25, criterion="l1", round_to=1)
    taylor = prune(path, 0.25, criterion="taylor", gradients=grads, round_to=1)
    assert kept_by_head(l1, "W2") == [1, 2, 3]
    assert kept_by_head(taylor, "W2") == [0, 1, 2]


def test_gradients_of_another_model_are_refused(tmp_path):
    """Gradients keyed by another export's weight names left every channel at 0, and a first-k cut came out
    as a Taylor one; gradients of another shape fail the same way."""
    w1, b1 = hidden_weights(large=(DEAD,))
    path = mlp(tmp_path / "mlp.onnx", [("W2", head(DEAD))], w1, b1)
    x, y = samples()
    grads = initializer_gradients(path, {"x": x}, labels=y)
    renamed = {f"layer.{name}": g for name, g in grads.items()}
    with pytest.raises(OnnxkdError, match="gradients: none for channel group .*another model"):
        prune(path, 0.25, criterion="taylor", gradients=renamed, round_to=1)
    with pytest.raises(OnnxkdError, match="'W1' has shape"):
        prune(path, 0.25, criterion="taylor", gradients=dict(grads, W1=grads["W1"][:, :1]), round_to=1)


def test_gradients_keyed_by_original_names_reach_untied_copies(tmp_path):
    """W1 feeds two branches; pruning unties it into W1 and W1__u1, and the copy's slice reads W1's gradient.

    That gradient sums both branches (an approximation for the copy); the CLI takes gradients on the
    untied graph instead (next test)."""
    w1, b1 = hidden_weights(large=(SMALL, DEAD))
    path = mlp(tmp_path / "shared.onnx", [("WA", head(DEAD)), ("WB", head(SMALL))], w1, b1)
    x, y = samples()
    grads = initializer_gradients(path, {"x": x}, labels=y)  # keyed by the original names only
    assert "W1__u1" not in grads
    prepared, groups = channel_groups(path)
    group = next(g for g in groups if any(s.name == "W1__u1" for s in g.slices))
    arrays = {s.name: prepared.graph.initializers[s.name].const_value.numpy() for s in group.slices}
    assert {s.name for s in group.slices} == {"W1__u1", "b1__u1", "WB"}
    expected = (np.abs((w1 * grads["W1"]).sum(1)) + np.abs(b1 * grads["b1"])
                + np.abs((arrays["WB"] * grads["WB"]).sum(0)))  # |sum w * dL/dw| per channel and tensor
    np.testing.assert_allclose(importance([group], arrays, "taylor", grads)[group.id], expected, rtol=1e-6)
    result = prune(path, 0.25, criterion="taylor", gradients=grads, round_to=1)
    assert all(len(kept) == 3 for kept in result.plan.values())


def test_cli_taylor_on_untied_weights_is_exact(tmp_path, capsys):
    """The CLI takes gradients on the untied graph: each branch drops the channel it ignores, output unchanged."""
    w1, b1 = hidden_weights(large=(SMALL, DEAD))
    path = mlp(tmp_path / "shared.onnx", [("WA", head(DEAD)), ("WB", head(SMALL))], w1, b1)
    x, y = samples()
    np.savez(tmp_path / "calib.npz", x=x, labels=y)
    out = tmp_path / "small.onnx"
    code, stdout, stderr = cli(capsys, "prune", str(path), "--ratio", "0.25", "--criterion", "taylor",
                               "--data", str(tmp_path / "calib.npz"), "--batch-size", "5", "--round-to", "1",
                               "-o", str(out))
    assert code == 0, stderr
    assert "Wrote" in stdout
    onnx.checker.check_model(str(out), full_check=True)
    _, groups = channel_groups(path)  # which group belongs to which branch
    plan = read_plan(out)
    assert plan[hidden_group(groups, "WA").id] == [0, 1, 2]
    assert plan[hidden_group(groups, "WB").id] == [1, 2, 3]
    np.testing.assert_allclose(ort_run(out, x), ort_run(path, x), rtol=1e-5, atol=1e-6)
    shapes = {t.name: list(t.dims) for t in onnx.load(str(out)).graph.initializer}
    assert shapes["W1"] == shapes["W1__u1"] == [3, 6]


def test_cli_taylor_on_resnet_writes_a_runnable_model(zoo_model, tmp_path, capsys):
    source = zoo_model("resnet", "legacy")
    rng = np.random.default_rng(1)
    x = rng.standard_normal((6, 3, 32, 32)).astype(np.float32)
    np.savez(tmp_path / "calib.npz", input=x)  # no labels: the label-free proxy loss
    out = tmp_path / "small.onnx"
    code, _, stderr = cli(capsys, "prune", str(source), "--ratio", "0.5", "--criterion", "taylor", "--data",
                          str(tmp_path / "calib.npz"), "--batch-size", "2", "--max-batches", "2", "-o", str(out))
    assert code == 0, stderr
    assert read_plan(out)
    result = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"input": x[:2]})[0]
    assert result.shape == (2, 10) and np.isfinite(result).all()
    assert out.stat().st_size < source.stat().st_size


def test_cli_taylor_without_data_is_a_one_line_error(tmp_path, capsys):
    w1, b1 = hidden_weights(large=(DEAD,))
    path = mlp(tmp_path / "mlp.onnx", [("W2", head(DEAD))], w1, b1)
    out = tmp_path / "small.onnx"
    code, stdout, stderr = cli(capsys, "prune", str(path), "--ratio", "0.25", "--criterion", "taylor", "-o", str(out))
    assert code == 2
    assert stderr.startswith("Error: --criterion taylor needs --data") and stderr.count("\n") == 1
    assert not out.exists() and stdout == ""
