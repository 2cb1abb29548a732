"""Host side of the fused recurrent kernels: decoding (state updated in place) and short sequences.

The forward walks the tokens one by one with the [K, BV] state tile in registers. Its backward walks them
in reverse, restoring each earlier state from the later one (S_{t-1} = S_t - k_t u_t^T, with the written
values u_t kept by the forward), so nothing of size T x K x V is stored.
"""

import torch

from . import kernels, on_input_device
from .chunk import _cdiv, _num_sequences, _pow2

LAUNCH = {"fwd": {"num_warps": 4, "num_stages": 1}, "bwd": {"num_warps": 4, "num_stages": 1}}


def _tile_v(K: int, V: int, programs_per_tile: int) -> int:
    """Small value tiles when there are few (sequence, head) pairs, so that more SMs take part."""
    bv = min(_pow2(V, 8), 64 if K <= 128 else 32)
    while bv > 8 and _cdiv(V, bv) * programs_per_tile < 256:
        bv //= 2
    return bv


@on_input_device
def recurrent_fwd(q, k, v, beta, scale, h0, cu_seqlens, *, state_out=None, store_u=False, qk_l2norm=False):
    """o [B, T, H, V] in v's dtype, the final state (written into `state_out` when given; it may be
    h0 itself for an in-place update) and, with store_u, the written values u [B, T, H, V] float32."""
    B, T, H, K = q.shape
    V = v.shape[-1]
    N = _num_sequences(B, cu_seqlens)
    BV = _tile_v(K, V, N * H)
    o = torch.empty_like(v)
    ht = state_out if state_out is not None else torch.empty(N, H, K, V, dtype=torch.float32, device=q.device)
    u = torch.empty(B, T, H, V, dtype=torch.float32, device=q.device) if store_u else None
    kernels.recurrent_fwd_kernel[(_cdiv(V, BV), N * H)](
        q, k, v, beta, o, h0, ht, u, cu_seqlens, scale, T,
        H=H, K=K, V=V, BK=_pow2(K), BV=BV, USE_H0=h0 is not None, STORE_U=store_u,
        IS_VARLEN=cu_seqlens is not None, QK_L2NORM=qk_l2norm, **LAUNCH["fwd"],
    )  # fmt: skip
    return o, ht, u


@on_input_device
def recurrent_bwd(q, k, v, beta, scale, u, ht, cu_seqlens, do, dht):
    B, T, H, K = q.shape
    V = v.shape[-1]
    N = _num_sequences(B, cu_seqlens)
    BV = _tile_v(K, V, N * H)
    NV = _cdiv(V, BV)
    dq = torch.empty(NV, B, T, H, K, dtype=torch.float32, device=q.device)
    dk = torch.empty_like(dq)
    dbeta = torch.empty(NV, B, T, H, dtype=torch.float32, device=q.device)
    dv = torch.empty_like(v)
    dh0 = torch.empty(N, H, K, V, dtype=torch.float32, device=q.device)
    kernels.recurrent_bwd_kernel[(NV, N * H)](
        q, k, v, beta, u, ht, do, dht, dq, dk, dv, dbeta, dh0, cu_seqlens, scale, T,
        H=H, K=K, V=V, BK=_pow2(K), BV=BV, USE_DHT=dht is not None,
        IS_VARLEN=cu_seqlens is not None, **LAUNCH["bwd"],
    )  # fmt: skip
    return dq.sum(0).to(q.dtype), dk.sum(0).to(k.dtype), dv, dbeta.sum(0).to(beta.dtype), dh0


class TritonRecurrentFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, beta, scale, initial_state, cu_seqlens):
        q, k, v, beta = (x.contiguous() for x in (q, k, v, beta))
        h0 = None if initial_state is None else initial_state.to(torch.float32).contiguous()
        o, ht, u = recurrent_fwd(q, k, v, beta, scale, h0, cu_seqlens, store_u=True)
        ctx.save_for_backward(q, k, v, beta, u, ht, initial_state, cu_seqlens)
        ctx.scale = scale
        return o, ht

    @staticmethod
    def backward(ctx, do, dfinal):
        q, k, v, beta, u, ht, initial_state, cu_seqlens = ctx.saved_tensors
        do = do.to(v.dtype).contiguous()
        dht = None if dfinal is None else dfinal.to(torch.float32).contiguous()
        dq, dk, dv, dbeta, dh0 = recurrent_bwd(q, k, v, beta, ctx.scale, u, ht, cu_seqlens, do, dht)
        dh0 = None if initial_state is None else dh0.to(initial_state.dtype)
        return dq, dk, dv, dbeta, None, dh0, None


def triton_recurrent_delta_rule(q, k, v, beta, scale, initial_state, cu_seqlens):
    """The fused recurrent backend on validated inputs (autograd through the reverse kernel)."""
    return TritonRecurrentFunction.apply(q, k, v, beta, scale, initial_state, cu_seqlens)


@torch.no_grad()
def recurrent_step_(q, k, v, beta, state, scale, qk_l2norm=False):
    """Decode: advance `state` [B, H, K, V] float32 *in place* over q/k [B, T, H, K] (T small); returns o."""
    q, k, v, beta = (x.contiguous() for x in (q, k, v, beta))
    o, _, _ = recurrent_fwd(q, k, v, beta, scale, state, None, state_out=state, qk_l2norm=qk_l2norm)
    return o
