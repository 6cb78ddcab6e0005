"""Linear algebra and attention: MatMul, Gemm, Einsum, MatMulInteger, Det, Attention, RotaryEmbedding, SwiGLU."""

from __future__ import annotations

import math

import torch

from onnxkd.torch_bridge import dtypes
from onnxkd.torch_bridge.registry import register


def _int_matmul(a, b):
    # CUDA has no integer GEMM; float64 is exact while sums stay below 2**53.
    if a.is_floating_point() or a.device.type == "cpu":
        return torch.matmul(a, b)
    return torch.matmul(a.double(), b.double()).to(a.dtype)


@register("MatMul", since=1)
def matmul(ctx, a, b):
    return _int_matmul(a, b)


def _gemm(a, b, c, alpha, beta, trans_a, trans_b):
    a = a.transpose(0, 1) if trans_a else a
    b = b.transpose(0, 1) if trans_b else b
    if c is None or beta == 0:
        y = _int_matmul(a, b)
        return y if alpha == 1 else y * alpha
    if a.is_floating_point():
        return torch.addmm(c, a, b, beta=beta, alpha=alpha)
    return (_int_matmul(a, b) * int(alpha) + c * int(beta)).to(a.dtype)


@register("Gemm", since=1)
def gemm_v1(ctx, a, b, c, *, alpha=1.0, beta=1.0, broadcast=0, transA=0, transB=0):  # noqa: N803
    return _gemm(a, b, c, alpha, beta, transA, transB)


@register("Gemm", since=7)
def gemm(ctx, a, b, c=None, *, alpha=1.0, beta=1.0, transA=0, transB=0):  # noqa: N803
    return _gemm(a, b, c, alpha, beta, transA, transB)


@register("Einsum", since=12)
def einsum(ctx, *inputs, equation):
    return torch.einsum(equation.replace(" ", ""), *inputs)


@register("MatMulInteger", since=10)
def matmul_integer(ctx, a, b, a_zero_point=None, b_zero_point=None):
    # Exact in float64 (int8 products summed stay far below 2**53); float64 matmul also runs on CUDA.
    af, bf = a.double(), b.double()
    if a_zero_point is not None:
        zp = a_zero_point.double()
        af = af - (zp.reshape(-1, 1) if zp.dim() == 1 and zp.numel() > 1 else zp)
    if b_zero_point is not None:
        bf = bf - b_zero_point.double()
    return torch.round(torch.matmul(af, bf)).to(torch.int32)


@register("Det", since=11)
def det(ctx, x):
    return torch.linalg.det(x)


def _split_heads(x, num_heads):
    batch, seq, hidden = x.shape
    return x.reshape(batch, seq, num_heads, hidden // num_heads).transpose(1, 2)


def _offset_mask(q_len, kv_len, offset, device):
    """Boolean [q, kv] (or [batch, 1, q, kv] for per-batch offsets) and the causal difference i + offset - j."""
    i = torch.arange(q_len, device=device).reshape(q_len, 1)
    j = torch.arange(kv_len, device=device).reshape(1, kv_len)
    if isinstance(offset, torch.Tensor):
        return (i + offset.reshape(-1, 1, 1, 1)) - j
    return i + offset - j


@register("Attention", since=23)
def attention(ctx, q, k, v, attn_mask=None, past_key=None, past_value=None, nonpad_kv_seqlen=None, *,
              is_causal=0, kv_num_heads=None, q_num_heads=None, qk_matmul_output_mode=0, scale=None, softcap=0.0,
              softmax_precision=None, left_window_size=-1, right_window_size=-1):
    rank3 = q.dim() == 3
    if rank3:
        q, k, v = _split_heads(q, q_num_heads), _split_heads(k, kv_num_heads), _split_heads(v, kv_num_heads)
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1])
    present_key = torch.cat([past_key, k], 2) if past_key is not None else k
    present_value = torch.cat([past_value, v], 2) if past_value is not None else v
    q_len, kv_len = q.shape[2], present_key.shape[2]
    device, dtype = q.device, q.dtype
    neg_inf = torch.tensor(-math.inf, dtype=dtype, device=device)
    zero = torch.zeros((), dtype=dtype, device=device)

    bias = torch.zeros(q_len, kv_len, dtype=dtype, device=device)
    if attn_mask is not None:
        if attn_mask.shape[-1] < kv_len:  # a mask for the new keys only: the missing tail is masked out
            pad_value = False if attn_mask.dtype == torch.bool else -math.inf
            attn_mask = torch.nn.functional.pad(attn_mask, [0, kv_len - attn_mask.shape[-1]], value=pad_value)
        if attn_mask.dtype == torch.bool:
            attn_mask = torch.where(attn_mask, zero, neg_inf)
        bias = bias + attn_mask.to(dtype)
    if past_key is None and nonpad_kv_seqlen is not None:
        offset = nonpad_kv_seqlen.to(device) - q_len
    else:
        offset = past_key.shape[2] if past_key is not None else 0
    if is_causal or left_window_size >= 0 or right_window_size >= 0:
        diff = _offset_mask(q_len, kv_len, offset, device)
        allowed = torch.ones_like(diff, dtype=torch.bool)
        if is_causal:
            allowed &= diff >= 0
        if left_window_size >= 0:
            allowed &= diff <= left_window_size
        if right_window_size >= 0:
            allowed &= -diff <= right_window_size
        bias = bias + torch.where(allowed, zero, neg_inf)
    if nonpad_kv_seqlen is not None:
        valid = torch.arange(kv_len, device=device) < nonpad_kv_seqlen.to(device).reshape(-1, 1)
        bias = bias + torch.where(valid, zero, neg_inf).reshape(-1, 1, 1, kv_len)

    heads_q, heads_kv = q.shape[1], present_key.shape[1]
    keys, values = present_key, present_value
    if heads_q != heads_kv:  # grouped-query attention: each key/value head serves heads_q / heads_kv query heads
        keys = keys.repeat_interleave(heads_q // heads_kv, 1)
        values = values.repeat_interleave(heads_q // heads_kv, 1)
    root = torch.tensor(math.sqrt(scale), dtype=dtype, device=device)
    qk = torch.matmul(q * root, (keys * root).transpose(-1, -2))
    if softcap > 0:
        qk = torch.tanh(qk / softcap) * softcap
    logits = qk + bias
    qk_out = logits if qk_matmul_output_mode == 2 else qk
    if softmax_precision is not None:
        logits = logits.to(dtypes.to_torch_dtype(softmax_precision))
    # A row with every key masked gives zeros, not NaN.
    all_masked = torch.isneginf(bias.amax(-1, keepdim=True))
    logits = torch.where(all_masked, torch.zeros_like(logits), logits)
    if logits.dtype in (torch.float16, torch.bfloat16):
        # Step by step in the low precision, as the ONNX reference rounds (torch.softmax would not).
        exp = torch.exp(logits - logits.amax(-1, keepdim=True))
        probs = exp / exp.sum(-1, keepdim=True)
    else:
        probs = torch.softmax(logits, -1)
    probs = torch.where(all_masked, torch.zeros_like(probs), probs).to(dtype)
    if qk_matmul_output_mode == 3:
        qk_out = probs
    y = torch.matmul(probs, values)
    if rank3:
        y = y.transpose(1, 2).reshape(y.shape[0], q_len, -1)
    return y, present_key, present_value, qk_out.to(dtype)


@register("RotaryEmbedding", since=23)
def rotary_embedding(ctx, x, cos_cache, sin_cache, position_ids=None, *, interleaved=0, num_heads=0,
                     rotary_embedding_dim=0):
    shape = x.shape
    if x.dim() == 4:  # [batch, heads, seq, head] -> [batch, seq, heads, head]
        x = x.transpose(1, 2)
    else:
        x = x.reshape(shape[0], shape[1], num_heads, shape[2] // num_heads)
    dim = rotary_embedding_dim or x.shape[-1]
    rotate, keep = x[..., :dim], x[..., dim:]
    if position_ids is not None:
        cos_cache, sin_cache = cos_cache[position_ids], sin_cache[position_ids]
    cos, sin = cos_cache.unsqueeze(2), sin_cache.unsqueeze(2)
    if interleaved:
        x1, x2 = rotate[..., 0::2], rotate[..., 1::2]
    else:
        x1, x2 = rotate.chunk(2, -1)
    real, imag = cos * x1 - sin * x2, sin * x1 + cos * x2
    if interleaved:
        rotated = torch.stack([real, imag], -1).reshape(rotate.shape)
    else:
        rotated = torch.cat([real, imag], -1)
    y = torch.cat([rotated, keep], -1)
    return y.transpose(1, 2) if len(shape) == 4 else y.reshape(shape)


@register("SwiGLU", since=28)
def swiglu(ctx, a, b, *, alpha=1.0):
    return a * torch.sigmoid(alpha * a) * b


@register("LinearAttention", since=27)
def linear_attention(ctx, query, key, value, past_state=None, decay=None, beta=None, *, chunk_size=None,
                     kv_num_heads, q_num_heads, scale=0.0, update_rule="gated_delta"):
    """A recurrent state [B, H_kv, d_k, d_v] updated per step (linear/gated/delta rules), read by the queries."""
    gating, delta = update_rule in ("gated", "gated_delta"), update_rule in ("delta", "gated_delta")
    batch, steps, _ = query.shape
    d_k = query.shape[-1] // q_num_heads
    q = _split_heads(query, q_num_heads).float()
    k, v = _split_heads(key, kv_num_heads).float(), _split_heads(value, kv_num_heads).float()
    if gating:
        decay = decay.reshape(batch, steps, kv_num_heads, -1).transpose(1, 2).float()  # [B, H, T, 1 or d_k]
    if delta:
        beta = beta.reshape(batch, steps, beta.shape[-1], 1).transpose(1, 2).float()
    if past_state is not None:
        state, state_dtype = past_state.float(), past_state.dtype
    else:
        state, state_dtype = q.new_zeros(batch, kv_num_heads, d_k, v.shape[-1]), query.dtype
    scale = scale or 1.0 / math.sqrt(d_k)
    group = q_num_heads // kv_num_heads
    outputs = []
    for t in range(steps):
        k_t, v_t = k[:, :, t], v[:, :, t]
        if gating:
            state = state * torch.exp(decay[:, :, t]).unsqueeze(-1)
        if delta:
            v_t = beta[:, :, t] * (v_t - torch.einsum("bhdm,bhd->bhm", state, k_t))
        state = state + k_t.unsqueeze(-1) * v_t.unsqueeze(-2)
        read = state.repeat_interleave(group, 1) if group > 1 else state
        outputs.append(scale * torch.einsum("bhd,bhdm->bhm", q[:, :, t], read))
    y = torch.stack(outputs, 2).transpose(1, 2).reshape(batch, steps, -1)
    return y.to(query.dtype), state.to(state_dtype)


@register("FlexAttention", since=1, domain="ai.onnx.preview")
def flex_attention(ctx, q, k, v, *, scale=None, score_mod=None, prob_mod=None, softmax_precision=None):
    """Scaled dot-product attention whose scores and probabilities pass through optional subgraphs."""
    if q.shape[1] != k.shape[1]:
        k = k.repeat_interleave(q.shape[1] // k.shape[1], 1)
        v = v.repeat_interleave(q.shape[1] // v.shape[1], 1)
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1])
    root = torch.tensor(math.sqrt(scale), dtype=q.dtype, device=q.device)
    scores = torch.matmul(q * root, (k * root).transpose(-1, -2))
    if softmax_precision is not None:
        compute = dtypes.to_torch_dtype(softmax_precision)
    else:
        compute = torch.float32 if q.dtype.itemsize < 4 else q.dtype
    scores = scores.to(compute)
    if score_mod is not None:
        scores = score_mod(scores)[0].to(compute)
    probs = torch.softmax(scores, -1)
    if prob_mod is not None:
        probs = prob_mod(probs)[0].to(compute)
    return torch.matmul(probs, v.to(compute)).to(v.dtype)
