"""Causal linear attention with the additive update: the delta rule with the correction switched off.

    S_t = S_{t-1} + k_t v_t^T,    o_t = S_t^T (scale q_t)

(no normaliser, no decay; the baseline that DeltaNet's delta rule S_t = S_{t-1} + beta_t k_t (v_t -
S_{t-1}^T k_t)^T improves on). `linear_attention_naive` is the spec, one token at a time;
`linear_attention` computes the same chunk by chunk: within a chunk the causal product
tril(Q K^T) V, across chunks the running state. Shapes as in `delta_rule`: q, k [B, T, H, K],
v [B, T, H, V], states [B, H, K, V] float32.
"""

import torch
import torch.nn.functional as F


def _scale(q, scale):
    return q.shape[-1] ** -0.5 if scale is None else scale


def linear_attention_naive(q, k, v, *, scale=None, initial_state=None):
    """The recurrence, token by token, in float64; returns (o in v's dtype, final state float64)."""
    B, T, H, K = q.shape
    S = q.new_zeros(B, H, K, v.shape[-1], dtype=torch.float64)
    if initial_state is not None:
        S = S + initial_state.double()
    qd, kd, vd = q.double() * _scale(q, scale), k.double(), v.double()
    out = []
    for t in range(T):
        S = S + kd[:, t, :, :, None] * vd[:, t, :, None, :]
        out.append(torch.einsum("bhk,bhkv->bhv", qd[:, t], S))
    o = torch.stack(out, 1) if out else v.new_zeros(B, 0, H, v.shape[-1], dtype=torch.float64)
    return o.to(v.dtype), S


def linear_attention(q, k, v, *, scale=None, initial_state=None, output_final_state=False, chunk_size=64,
                     cu_seqlens=None):  # fmt: skip
    """Chunkwise causal linear attention (float32 math). Returns (o [B, T, H, V] in v's dtype, the final
    state [N, H, K, V] float32 or None). With `cu_seqlens` (B = 1, packed) each sequence starts from its
    own row of `initial_state` (or zeros)."""
    if q.dim() != 4 or k.shape != q.shape or v.shape[:3] != q.shape[:3]:
        raise ValueError(
            f"linear_attention: expected q, k [B, T, H, K] and v [B, T, H, V]; got {tuple(q.shape)}, "
            f"{tuple(k.shape)}, {tuple(v.shape)}"
        )
    if chunk_size < 1:
        raise ValueError(f"linear_attention: `chunk_size` must be positive, got {chunk_size}")
    if cu_seqlens is not None:
        if q.shape[0] != 1:
            raise ValueError(f"linear_attention: packed sequences (cu_seqlens) need B = 1, got B = {q.shape[0]}")
        bounds = cu_seqlens.tolist()
        outs, finals = [], []
        for i, (start, end) in enumerate(zip(bounds[:-1], bounds[1:])):
            h0 = None if initial_state is None else initial_state[i : i + 1]
            o, s = linear_attention(q[:, start:end], k[:, start:end], v[:, start:end], scale=scale,
                                    initial_state=h0, output_final_state=True, chunk_size=chunk_size)  # fmt: skip
            outs.append(o)
            finals.append(s)
        return torch.cat(outs, 1), (torch.cat(finals, 0) if output_final_state else None)
    scale = _scale(q, scale)
    B, T, H, K = q.shape
    V = v.shape[-1]
    C = chunk_size
    pad = (-T) % C
    qf, kf, vf = (F.pad(x.float(), (0, 0, 0, 0, 0, pad)) for x in (q, k, v))
    n = (T + pad) // C
    # [B, H, n, C, D]
    qf, kf, vf = (x.view(B, n, C, H, x.shape[-1]).permute(0, 3, 1, 2, 4) for x in (qf, kf, vf))
    kv = kf.transpose(-1, -2) @ vf  # [B, H, n, K, V]: what each chunk adds to the state
    states = torch.cumsum(kv, dim=2)
    if initial_state is not None:
        states = states + initial_state.float()[:, :, None]
    before = states - kv  # the state at each chunk's start
    causal = torch.ones(C, C, dtype=torch.bool, device=q.device).tril()
    scores = (qf @ kf.transpose(-1, -2)).masked_fill(~causal, 0.0)
    o = (qf @ before + scores @ vf) * scale
    o = o.permute(0, 2, 3, 1, 4).reshape(B, n * C, H, V)[:, :T].to(v.dtype)
    final = None
    if output_final_state:
        if n:
            final = states[:, :, -1]
        elif initial_state is not None:  # no tokens: the state is the initial one
            final = initial_state.float().clone()
        else:
            final = q.new_zeros(B, H, K, V, dtype=torch.float32)
    return o, final


def linear_attention_step(q, k, v, state, *, scale=None):
    """One token: q, k [B, H, K], v [B, H, V], state [B, H, K, V] -> (o [B, H, V], new state float32)."""
    state = state.float() + k.float()[..., None] * v.float()[..., None, :]
    o = torch.einsum("bhk,bhkv->bhv", q.float() * _scale(q, scale), state)
    return o.to(v.dtype), state
