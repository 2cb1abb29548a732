"""The delta rule, step by step: the specification every faster backend is tested against.

Legend: B batch, T time, H heads, K key/query size, V value size, N sequences (B, or len(cu_seqlens) - 1).

For every head, with a fast-weight state S of shape [K, V] and q scaled by `scale`:

    S_t = S_{t-1} + beta_t * k_t (v_t - S_{t-1}^T k_t)^T
    o_t = S_t^T q_t

The loop runs in `compute_dtype` (float32 unless asked otherwise, e.g. bfloat16 to measure the error a
low-precision reference makes). It is slow on purpose: one Python step per token, nothing fused.
"""

from __future__ import annotations

import torch


def l2_normalize(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Divide the last dimension by its L2 norm (plus `eps` under the root, so zero vectors stay finite)."""
    return x * torch.rsqrt(x.pow(2).sum(-1, keepdim=True) + eps)


def _recurrence(q_THK, k_THK, v_THV, beta_TH, state_HKV):
    """One sequence: returns (o [T, H, V], final state [H, K, V]); all in the caller's dtype."""
    outputs = []
    for t in range(q_THK.shape[0]):
        k_HK, v_HV, b_H = k_THK[t], v_THV[t], beta_TH[t]
        recalled_HV = torch.einsum("hkv,hk->hv", state_HKV, k_HK)
        written_HV = b_H[:, None] * (v_HV - recalled_HV)
        state_HKV = state_HKV + k_HK[:, :, None] * written_HV[:, None, :]
        outputs.append(torch.einsum("hkv,hk->hv", state_HKV, q_THK[t]))
    if outputs:
        o_THV = torch.stack(outputs)
    else:
        o_THV = v_THV.new_zeros(v_THV.shape)
    return o_THV, state_HKV


def naive_delta_rule(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    *,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    cu_seqlens: torch.Tensor | None = None,
    qk_l2norm: bool = False,
    compute_dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Reference delta rule. Shapes as in `assocmem.delta_rule`; differentiable through autograd.

    q, k [B, T, H, K]; v [B, T, H, V]; beta [B, T, H]; initial_state [N, H, K, V].
    Returns o [B, T, H, V] in v's dtype and, if asked, the final state [N, H, K, V] in float32
    (or float64 when compute_dtype is float64).
    """
    if scale is None:
        scale = q.shape[-1] ** -0.5
    out_dtype = v.dtype
    q, k, v, beta = (x.to(compute_dtype) for x in (q, k, v, beta))
    if qk_l2norm:
        q, k = l2_normalize(q), l2_normalize(k)
    q = q * scale
    B, T, H, K = q.shape
    V = v.shape[-1]

    if cu_seqlens is None:
        spans = [(b, 0, T) for b in range(B)]
    else:
        bounds = cu_seqlens.tolist()
        spans = [(0, bounds[n], bounds[n + 1]) for n in range(len(bounds) - 1)]

    o_parts, finals = [], []
    for n, (b, start, end) in enumerate(spans):
        if initial_state is None:
            state_HKV = q.new_zeros(H, K, V)
        else:
            state_HKV = initial_state[n].to(compute_dtype)
        o_THV, state_HKV = _recurrence(q[b, start:end], k[b, start:end], v[b, start:end], beta[b, start:end], state_HKV)
        o_parts.append(o_THV)
        finals.append(state_HKV)

    if cu_seqlens is None:
        o = torch.stack(o_parts)
    else:
        o = torch.cat(o_parts)[None]
    state_dtype = torch.float64 if compute_dtype == torch.float64 else torch.float32
    final_state = torch.stack(finals).to(state_dtype) if output_final_state else None
    return o.to(out_dtype), final_state


__all__ = ["naive_delta_rule", "l2_normalize"]
