"""The chunkwise WY/UT delta rule in PyTorch: forward, hand-written backward, one autograd.Function.

Legend: N chunks per sequence, G = B * H independent recurrences, C chunk size, K key size, V value
size. Inside this file tensors are laid out chunk-major, `x_NGCK`, so that the slice of one chunk is
contiguous, and computed in float32 (float64 when the inputs are float64, for gradient checks).
The derivation is in README.md beside this file.

Only the state recurrence across chunks is a Python loop (a few fused matmuls per chunk); everything
inside a chunk is batched over all chunks at once. The backward keeps no autograd graph: it recomputes
the chunk-start states from the inputs, so memory grows linearly in T.
"""

import torch

from .varlen import VarlenIndex

CHUNK_SIZES = (16, 32, 64, 128)


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _to_chunks(x: torch.Tensor, chunk_size: int, dtype: torch.dtype) -> torch.Tensor:
    """[B, T, H, ...] -> [N, B*H, C, ...], zero-padded to a whole number of chunks."""
    B, T, H = x.shape[:3]
    N = -(-T // chunk_size)
    if N * chunk_size != T:
        x = torch.cat([x, x.new_zeros(B, N * chunk_size - T, *x.shape[2:])], dim=1)
    x = x.reshape(B, N, chunk_size, H, *x.shape[3:]).movedim(3, 1).movedim(2, 0)
    return x.reshape(N, B * H, chunk_size, *x.shape[4:]).to(dtype, memory_format=torch.contiguous_format)


def _from_chunks(x_NGC: torch.Tensor, B: int, T: int, dtype: torch.dtype) -> torch.Tensor:
    """[N, B*H, C, ...] -> [B, T, H, ...], dropping the padding."""
    N, G, C = x_NGC.shape[:3]
    x = x_NGC.reshape(N, B, G // B, C, *x_NGC.shape[3:]).movedim(0, 1).movedim(2, 3)
    return x.reshape(B, N * C, G // B, *x_NGC.shape[3:])[:, :T].to(dtype, memory_format=torch.contiguous_format)


def _state_in(state, B, H, K, V, dtype, device):
    """[B, H, K, V] (or None) -> a fresh [B*H, K, V] tensor in the compute dtype."""
    if state is None:
        return torch.zeros(B * H, K, V, dtype=dtype, device=device)
    return state.reshape(B * H, K, V).to(dtype, copy=True)


def _wy_representation(k_NGCK, kT_NGKC, v_NGCV, beta_NGC):
    """Per chunk: A = (I + strict_tril(diag(beta) K K^T))^-1, W = A (beta*K), U = A (beta*V)."""
    C = k_NGCK.shape[-2]
    kb_NGCK = k_NGCK * beta_NGC[..., None]
    vb_NGCV = v_NGCV * beta_NGC[..., None]
    eye_CC = torch.eye(C, dtype=k_NGCK.dtype, device=k_NGCK.device)
    lower_NGCC = torch.tril(kb_NGCK @ kT_NGKC, diagonal=-1) + eye_CC
    A_NGCC = torch.linalg.solve_triangular(lower_NGCC, eye_CC.expand_as(lower_NGCC), upper=False, unitriangular=True)
    return A_NGCC, kb_NGCK, vb_NGCV, A_NGCC @ kb_NGCK, A_NGCC @ vb_NGCV


def chunk_delta_rule_fwd(q, k, v, beta, scale: float, initial_state, chunk_size: int):
    """q, k [B, T, H, K]; v [B, T, H, V]; beta [B, T, H]; initial_state [B, H, K, V] or None.

    Returns o [B, T, H, V] in v's dtype and the final state [B, H, K, V] in float32 (float64 for
    float64 inputs).
    """
    B, T, H, K = q.shape
    V = v.shape[-1]
    dtype = _compute_dtype(q.dtype)
    q_NGCK = _to_chunks(q, chunk_size, dtype) * scale
    k_NGCK = _to_chunks(k, chunk_size, dtype)
    v_NGCV = _to_chunks(v, chunk_size, dtype)
    beta_NGC = _to_chunks(beta, chunk_size, dtype)
    # Keys are read transposed three times; one contiguous copy beats three strided ones.
    kT_NGKC = k_NGCK.transpose(-1, -2).contiguous()
    _, _, _, W_NGCK, U_NGCV = _wy_representation(k_NGCK, kT_NGKC, v_NGCV, beta_NGC)
    causal_NGCC = torch.tril(q_NGCK @ kT_NGKC)

    state_GKV = _state_in(initial_state, B, H, K, V, dtype, q.device)
    o_NGCV = torch.empty_like(U_NGCV)
    for n in range(W_NGCK.shape[0]):
        vnew_GCV = torch.baddbmm(U_NGCV[n], W_NGCK[n], state_GKV, alpha=-1)
        torch.bmm(q_NGCK[n], state_GKV, out=o_NGCV[n])
        o_NGCV[n].baddbmm_(causal_NGCC[n], vnew_GCV)
        state_GKV = torch.baddbmm(state_GKV, kT_NGKC[n], vnew_GCV)
    return _from_chunks(o_NGCV, B, T, v.dtype), state_GKV.reshape(B, H, K, V)


def chunk_delta_rule_bwd(q, k, v, beta, scale: float, initial_state, do, dfinal, chunk_size: int):
    """Gradients (dq, dk, dv, dbeta, dinitial_state) of chunk_delta_rule_fwd, each in its input's dtype.

    `do` is the gradient of o; `dfinal` that of the final state, or None. dinitial_state is float32
    [B, H, K, V] (a zero tensor when initial_state is None).
    """
    B, T, H, K = q.shape
    V = v.shape[-1]
    dtype = _compute_dtype(q.dtype)
    q_NGCK = _to_chunks(q, chunk_size, dtype) * scale
    k_NGCK = _to_chunks(k, chunk_size, dtype)
    v_NGCV = _to_chunks(v, chunk_size, dtype)
    beta_NGC = _to_chunks(beta, chunk_size, dtype)
    do_NGCV = _to_chunks(do, chunk_size, dtype)
    kT_NGKC = k_NGCK.transpose(-1, -2).contiguous()
    A_NGCC, kb_NGCK, vb_NGCV, W_NGCK, U_NGCV = _wy_representation(k_NGCK, kT_NGKC, v_NGCV, beta_NGC)
    N = q_NGCK.shape[0]

    # Recompute the chunk-start states S_n and the written values V'_n = U_n - W_n S_n.
    state_GKV = _state_in(initial_state, B, H, K, V, dtype, q.device)
    states_NGKV = state_GKV.new_empty(N, *state_GKV.shape)
    vnew_NGCV = torch.empty_like(U_NGCV)
    for n in range(N):
        states_NGKV[n] = state_GKV
        vnew_NGCV[n] = torch.baddbmm(U_NGCV[n], W_NGCK[n], state_GKV, alpha=-1)
        state_GKV = torch.baddbmm(state_GKV, kT_NGKC[n], vnew_NGCV[n])

    # Output O = Q S + tril(Q K^T) V': the parts that need no recurrence.
    causal_NGCC = torch.tril(q_NGCK @ kT_NGKC)
    dcausal_NGCC = torch.tril(do_NGCV @ vnew_NGCV.transpose(-1, -2))
    dq_NGCK = do_NGCV @ states_NGKV.transpose(-1, -2) + dcausal_NGCC @ k_NGCK
    dk_NGCK = dcausal_NGCC.transpose(-1, -2) @ q_NGCK
    dvnew_NGCV = causal_NGCC.transpose(-1, -2) @ do_NGCV

    # Reverse recurrence: dS_n is the gradient of the state *after* chunk n.
    if dfinal is None:
        dstate_GKV = torch.zeros_like(state_GKV)
    else:
        dstate_GKV = dfinal.reshape(B * H, K, V).to(dtype, copy=True)
    dstates_NGKV = torch.empty_like(states_NGKV)
    for n in reversed(range(N)):
        dstates_NGKV[n] = dstate_GKV
        dvnew_NGCV[n] = torch.baddbmm(dvnew_NGCV[n], k_NGCK[n], dstate_GKV)
        dstate_GKV = torch.baddbmm(dstate_GKV, q_NGCK[n].transpose(1, 2), do_NGCV[n])
        dstate_GKV = torch.baddbmm(dstate_GKV, W_NGCK[n].transpose(1, 2), dvnew_NGCV[n], alpha=-1)

    # S_{n+1} = S_n + K^T V'  and  V' = U - W S_n.
    dk_NGCK = dk_NGCK + vnew_NGCV @ dstates_NGKV.transpose(-1, -2)
    dU_NGCV = dvnew_NGCV
    dW_NGCK = -dvnew_NGCV @ states_NGKV.transpose(-1, -2)

    # W = A (beta K), U = A (beta V), A = L^-1 with L = I + strict_tril((beta K) K^T).
    AT_NGCC = A_NGCC.transpose(-1, -2)
    dA_NGCC = dW_NGCK @ kb_NGCK.transpose(-1, -2) + dU_NGCV @ vb_NGCV.transpose(-1, -2)
    dlower_NGCC = torch.tril(-AT_NGCC @ dA_NGCC @ AT_NGCC, diagonal=-1)
    dkb_NGCK = AT_NGCC @ dW_NGCK + dlower_NGCC @ k_NGCK
    dvb_NGCV = AT_NGCC @ dU_NGCV
    dk_NGCK = dk_NGCK + dlower_NGCC.transpose(-1, -2) @ kb_NGCK + dkb_NGCK * beta_NGC[..., None]
    dv_NGCV = dvb_NGCV * beta_NGC[..., None]
    dbeta_NGC = (dkb_NGCK * k_NGCK).sum(-1) + (dvb_NGCV * v_NGCV).sum(-1)

    return (
        _from_chunks(dq_NGCK * scale, B, T, q.dtype),
        _from_chunks(dk_NGCK, B, T, k.dtype),
        _from_chunks(dv_NGCV, B, T, v.dtype),
        _from_chunks(dbeta_NGC, B, T, beta.dtype),
        dstate_GKV.reshape(B, H, K, V),
    )


# The two passes as custom ops, so that torch.compile traces through them (their fakes give the shapes)
# and packed sequences (cu_seqlens) are padded into a batch inside, where no shape depends on data.


@torch.library.custom_op("assocmem::chunk_delta_rule_fwd", mutates_args=())
def _chunk_fwd_op(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    scale: float,
    initial_state: torch.Tensor | None,
    cu_seqlens: torch.Tensor | None,
    chunk_size: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    # Outputs are contiguous whatever the inputs' strides: the fakes below promise it to torch.compile.
    if cu_seqlens is None:
        o, final = chunk_delta_rule_fwd(q, k, v, beta, scale, initial_state, chunk_size)
        return o.contiguous(), final.contiguous()
    index = VarlenIndex(cu_seqlens)
    o, final = chunk_delta_rule_fwd(
        index.pad(q), index.pad(k), index.pad(v), index.pad(beta), scale, initial_state, chunk_size
    )
    return index.unpad(o).contiguous(), final.contiguous()


@_chunk_fwd_op.register_fake
def _(q, k, v, beta, scale, initial_state, cu_seqlens, chunk_size):
    N = q.shape[0] if cu_seqlens is None else cu_seqlens.shape[0] - 1
    state_shape = (N, q.shape[2], q.shape[3], v.shape[3])
    return v.new_empty(v.shape), q.new_empty(state_shape, dtype=_compute_dtype(q.dtype))


@torch.library.custom_op("assocmem::chunk_delta_rule_bwd", mutates_args=())
def _chunk_bwd_op(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    scale: float,
    initial_state: torch.Tensor | None,
    cu_seqlens: torch.Tensor | None,
    do: torch.Tensor,
    dfinal: torch.Tensor,
    chunk_size: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    if cu_seqlens is None:
        grads = chunk_delta_rule_bwd(q, k, v, beta, scale, initial_state, do, dfinal, chunk_size)
        return tuple(g.contiguous() for g in grads)
    index = VarlenIndex(cu_seqlens)
    padded = [index.pad(x) for x in (q, k, v, beta)]
    dq, dk, dv, dbeta, dinitial = chunk_delta_rule_bwd(*padded, scale, initial_state, index.pad(do), dfinal, chunk_size)
    grads = (index.unpad(dq), index.unpad(dk), index.unpad(dv), index.unpad(dbeta), dinitial)
    return tuple(g.contiguous() for g in grads)


@_chunk_bwd_op.register_fake
def _(q, k, v, beta, scale, initial_state, cu_seqlens, do, dfinal, chunk_size):
    return tuple(x.new_empty(x.shape) for x in (q, k, v, beta, dfinal))


class ChunkDeltaRuleFunction(torch.autograd.Function):
    """Autograd glue: the forward saves only the inputs; the backward recomputes what it needs."""

    @staticmethod
    def forward(ctx, q, k, v, beta, scale, initial_state, cu_seqlens, chunk_size):
        o, final = _chunk_fwd_op(q, k, v, beta, scale, initial_state, cu_seqlens, chunk_size)
        ctx.save_for_backward(q, k, v, beta, initial_state, cu_seqlens)
        ctx.scale, ctx.chunk_size = scale, chunk_size
        return o, final

    @staticmethod
    def backward(ctx, do, dfinal):
        q, k, v, beta, initial_state, cu_seqlens = ctx.saved_tensors
        dq, dk, dv, dbeta, dinitial = _chunk_bwd_op(
            q, k, v, beta, ctx.scale, initial_state, cu_seqlens, do, dfinal, ctx.chunk_size
        )
        dinitial = None if initial_state is None else dinitial.to(initial_state.dtype)
        return dq, dk, dv, dbeta, None, dinitial, None, None


def chunk_delta_rule(q, k, v, beta, scale, initial_state, cu_seqlens, chunk_size):
    """The chunk backend on validated inputs; see `assocmem.delta_rule` for the contract."""
    return ChunkDeltaRuleFunction.apply(q, k, v, beta, scale, initial_state, cu_seqlens, chunk_size)


__all__ = ["CHUNK_SIZES", "chunk_delta_rule", "chunk_delta_rule_fwd", "chunk_delta_rule_bwd"]
