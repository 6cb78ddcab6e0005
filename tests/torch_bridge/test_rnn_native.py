"""Recurrent nodes on torch's kernels (rnn_native.py) compute what the loop over time does (rnn.py, checked against
the ONNX node suite): outputs, final states, and the gradients of the weights, states and input, in both layouts,
both directions, with and without initial states and biases."""

from __future__ import annotations

import pytest
import torch

from onnxkd.torch_bridge.ops import rnn
from onnxkd.torch_bridge.ops.rnn_native import native

HIDDEN, FEATURES, SEQ, BATCH = 5, 3, 4, 2
GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}


def _operands(op: str, dirs: int, layout: int, with_states: bool, with_bias: bool, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    rand = lambda *shape: torch.randn(*shape, generator=generator, dtype=torch.float64).requires_grad_()  # noqa: E731
    gates = GATES[op]
    x = rand(*((BATCH, SEQ) if layout else (SEQ, BATCH)), FEATURES)
    w, r = rand(dirs, gates * HIDDEN, FEATURES), rand(dirs, gates * HIDDEN, HIDDEN)
    b = rand(dirs, 2 * gates * HIDDEN) if with_bias else None
    state_shape = (BATCH, dirs, HIDDEN) if layout else (dirs, BATCH, HIDDEN)
    states = [rand(*state_shape) if with_states else None for _ in range(2 if op == "LSTM" else 1)]
    return x, w, r, b, states


def _loop(op: str, x, w, r, b, states, direction, layout):
    """The same node through the loop over time (the registered functions without their fast path)."""
    dirs = 2 if direction == "bidirectional" else 1
    defaults = {"LSTM": ["Sigmoid", "Tanh", "Tanh"], "GRU": ["Sigmoid", "Tanh"], "RNN": ["Tanh"]}[op]
    acts = rnn._activations(None, None, None, defaults, dirs)
    cell = {"LSTM": rnn._lstm_cell(None, 0), "GRU": rnn._gru_cell(1), "RNN": rnn._rnn_cell}[op]
    return rnn._run(cell, x, w, r, b, None, states, direction, layout, None, None, acts, GATES[op])


@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("direction", ["forward", "bidirectional"])
@pytest.mark.parametrize("layout", [0, 1])
@pytest.mark.parametrize("with_states,with_bias", [(True, True), (False, False)])
def test_torch_kernels_compute_the_loop_over_time(op, direction, layout, with_states, with_bias):
    dirs = 2 if direction == "bidirectional" else 1
    operands = _operands(op, dirs, layout, with_states, with_bias)
    x, w, r, b, states = operands
    fast = native(op, x, w, r, b, states, activations=None, clip=None, direction=direction, layout=layout)
    slow = _loop(op, x, w, r, b, states, direction, layout)
    assert len(fast) == len(slow)
    for f, s in zip(fast, slow):
        assert f.shape == s.shape
        torch.testing.assert_close(f, s, rtol=1e-9, atol=1e-9)
    leaves = [t for t in (x, w, r, b, *states) if t is not None]
    weights = [torch.randn(f.shape, generator=torch.Generator().manual_seed(i), dtype=torch.float64)
               for i, f in enumerate(fast)]
    fast_grads = torch.autograd.grad(sum((f * k).sum() for f, k in zip(fast, weights)), leaves)
    slow_grads = torch.autograd.grad(sum((s * k).sum() for s, k in zip(slow, weights)), leaves)
    for f, s in zip(fast_grads, slow_grads):
        torch.testing.assert_close(f, s, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("kwargs", [{"clip": 3.0}, {"direction": "reverse"}, {"activations": ["Relu", "Tanh", "Tanh"]}])
def test_what_torch_kernels_do_not_compute_runs_the_loop(kwargs):
    x, w, r, b, states = _operands("LSTM", 1, 0, True, True)
    options = {"activations": None, "clip": None, "direction": "forward", "layout": 0, **kwargs}
    assert native("LSTM", x, w, r, b, states, **options) is None
