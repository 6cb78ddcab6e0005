"""Recurrent layers: RNN, GRU, LSTM, as differentiable loops over time (ONNX gate orders: LSTM iofc, GRU zrh); on
torch's own kernels instead where the node's attributes allow (``rnn_native.py``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from onnxkd.errors import OnnxkdError
from onnxkd.torch_bridge.ops.rnn_native import DEFAULT_ACTIVATIONS, native
from onnxkd.torch_bridge.registry import register

# name -> (function of (x, alpha, beta), default alpha, default beta)
_ACTIVATIONS = {
    "relu": (lambda x, a, b: torch.relu(x), None, None),
    "tanh": (lambda x, a, b: torch.tanh(x), None, None),
    "sigmoid": (lambda x, a, b: torch.sigmoid(x), None, None),
    "affine": (lambda x, a, b: a * x + b, 1.0, 0.0),
    "leakyrelu": (lambda x, a, b: F.leaky_relu(x, a), 0.01, None),
    "thresholdedrelu": (lambda x, a, b: torch.where(x > a, x, torch.zeros_like(x)), 1.0, None),
    "scaledtanh": (lambda x, a, b: a * torch.tanh(b * x), 1.0, 1.0),
    "hardsigmoid": (lambda x, a, b: torch.clamp(a * x + b, 0.0, 1.0), 0.2, 0.5),
    "elu": (lambda x, a, b: F.elu(x, a), 1.0, None),
    "softsign": (lambda x, a, b: F.softsign(x), None, None),
    "softplus": (lambda x, a, b: F.softplus(x), None, None),
}


def _activations(names, alphas, betas, defaults, num_directions):
    """One list of callables per direction; alpha/beta lists are consumed in order by the activations using them."""
    names = list(names) if names else defaults * num_directions
    alphas, betas = list(alphas or []), list(betas or [])
    result = []
    for name in names:
        key = name.lower()
        if key not in _ACTIVATIONS:
            raise OnnxkdError(f"RNN activation {name!r} is not supported")
        fn, alpha, beta = _ACTIVATIONS[key]
        if alpha is not None and alphas:
            alpha = alphas.pop(0)
        if beta is not None and betas:
            beta = betas.pop(0)
        result.append(lambda x, fn=fn, a=alpha, b=beta: fn(x, a, b))
    per = len(names) // num_directions
    return [result[d * per:(d + 1) * per] for d in range(num_directions)]


def _reverse_index(seq_len, lengths, device):
    """[seq, batch] time indices that reverse each sequence within its own length (padding stays in place)."""
    t = torch.arange(seq_len, device=device).unsqueeze(1)
    lengths = lengths.to(device).unsqueeze(0)
    return torch.where(t < lengths, lengths - 1 - t, t)


def _run(cell, x, w, r, b, sequence_lens, initial_states, direction, layout, hidden_size, clip, acts, gates):
    """Shared driver: cell(x_proj_t, states, r, rb, acts, clip, d) -> new states (hidden first)."""
    if layout:
        x = x.transpose(0, 1)
        initial_states = [s.transpose(0, 1) if s is not None else None for s in initial_states]
    seq_len, batch = x.shape[:2]
    num_dirs = 2 if direction == "bidirectional" else 1
    hidden = hidden_size or r.shape[-1]
    if sequence_lens is None:
        lengths = torch.full((batch,), seq_len, dtype=torch.long, device=x.device)
    else:
        lengths = sequence_lens.to(device=x.device, dtype=torch.long)
    if b is None:
        b = x.new_zeros(num_dirs, 2 * gates * hidden)
    ys, finals = [], []
    for d in range(num_dirs):
        reverse = direction == "reverse" or d == 1
        xd = x
        if reverse:
            index = _reverse_index(seq_len, lengths, x.device)
            xd = torch.gather(x, 0, index.unsqueeze(-1).expand_as(x))
        projected = torch.matmul(xd, w[d].transpose(0, 1)) + b[d, : gates * hidden]
        states = [s[d] if s is not None else x.new_zeros(batch, hidden) for s in initial_states]
        outputs = []
        for t in range(seq_len):
            new = cell(projected[t], states, r[d], b[d, gates * hidden:], acts[d], clip, d)
            alive = (t < lengths).unsqueeze(1)
            states = [torch.where(alive, n, s) for n, s in zip(new, states)]
            outputs.append(torch.where(alive, new[0], torch.zeros_like(new[0])))
        y = torch.stack(outputs) if outputs else x.new_zeros(0, batch, hidden)
        if reverse:
            y = torch.gather(y, 0, index.unsqueeze(-1).expand_as(y))
        ys.append(y)
        finals.append(states)
    y = torch.stack(ys, 1)  # [seq, dirs, batch, hidden]
    final = [torch.stack([f[i] for f in finals]) for i in range(len(initial_states))]
    if layout:
        return (y.permute(2, 0, 1, 3), *[s.transpose(0, 1) for s in final])
    return (y, *final)


def _clip(x, clip):
    return x if clip is None else torch.clamp(x, -clip, clip)


def _rnn_cell(xt, states, r, rb, acts, clip, d):
    return [acts[0](_clip(xt + states[0] @ r.transpose(0, 1) + rb, clip))]


def _gru_cell(linear_before_reset):
    def cell(xt, states, r, rb, acts, clip, d):
        h = states[0]
        hidden = h.shape[-1]
        xz, xr, xh = xt.split(hidden, -1)
        rz, rr, rh = r.split(hidden, 0)
        bz, br, bh = rb.split(hidden, -1)
        z = acts[0](_clip(xz + h @ rz.transpose(0, 1) + bz, clip))
        reset = acts[0](_clip(xr + h @ rr.transpose(0, 1) + br, clip))
        if linear_before_reset:
            candidate = xh + reset * (h @ rh.transpose(0, 1) + bh)
        else:
            candidate = xh + (reset * h) @ rh.transpose(0, 1) + bh
        g = acts[1](_clip(candidate, clip))
        return [(1 - z) * g + z * h]
    return cell


def _lstm_cell(peepholes, input_forget):
    def cell(xt, states, r, rb, acts, clip, d):
        h, c = states
        gates = xt + h @ r.transpose(0, 1) + rb
        gi, go, gf, gc = gates.chunk(4, -1)
        if peepholes is not None:
            pi, po, pf = peepholes[d].chunk(3, -1)
            gi, gf = gi + pi * c, gf + pf * c
        i = acts[0](_clip(gi, clip))
        f = 1 - i if input_forget else acts[0](_clip(gf, clip))
        c_new = f * c + i * acts[1](_clip(gc, clip))
        if peepholes is not None:
            go = go + po * c_new
        o = acts[0](_clip(go, clip))
        return [o * acts[2](c_new), c_new]
    return cell


def _directions(direction):
    return 2 if direction == "bidirectional" else 1


@register("RNN", since=1)
def rnn(ctx, x, w, r, b=None, sequence_lens=None, initial_h=None, *, activation_alpha=None, activation_beta=None,
        activations=None, clip=None, direction="forward", hidden_size=None, layout=0, output_sequence=0):
    if sequence_lens is None and (fast := native("RNN", x, w, r, b, [initial_h], activations=activations, clip=clip,
                                                  direction=direction, layout=layout)) is not None:
        return fast
    acts = _activations(activations, activation_alpha, activation_beta, DEFAULT_ACTIVATIONS["RNN"],
                        _directions(direction))
    return _run(_rnn_cell, x, w, r, b, sequence_lens, [initial_h], direction, layout, hidden_size, clip, acts, 1)


@register("GRU", since=1)
def gru(ctx, x, w, r, b=None, sequence_lens=None, initial_h=None, *, activation_alpha=None, activation_beta=None,
        activations=None, clip=None, direction="forward", hidden_size=None, layout=0, linear_before_reset=0,
        output_sequence=0):
    if sequence_lens is None and linear_before_reset and (fast := native(
            "GRU", x, w, r, b, [initial_h], activations=activations, clip=clip, direction=direction,
            layout=layout)) is not None:
        return fast
    acts = _activations(activations, activation_alpha, activation_beta, DEFAULT_ACTIVATIONS["GRU"],
                        _directions(direction))
    return _run(_gru_cell(linear_before_reset), x, w, r, b, sequence_lens, [initial_h], direction, layout,
                hidden_size, clip, acts, 3)


@register("LSTM", since=1)
def lstm(ctx, x, w, r, b=None, sequence_lens=None, initial_h=None, initial_c=None, p=None, *, activation_alpha=None,
         activation_beta=None, activations=None, clip=None, direction="forward", hidden_size=None, input_forget=0,
         layout=0, output_sequence=0):
    if sequence_lens is None and p is None and not input_forget and (fast := native(
            "LSTM", x, w, r, b, [initial_h, initial_c], activations=activations, clip=clip, direction=direction,
            layout=layout)) is not None:
        return fast
    acts = _activations(activations, activation_alpha, activation_beta, DEFAULT_ACTIVATIONS["LSTM"],
                        _directions(direction))
    return _run(_lstm_cell(p, input_forget), x, w, r, b, sequence_lens, [initial_h, initial_c], direction,
                layout, hidden_size, clip, acts, 4)
