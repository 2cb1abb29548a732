"""The chunkwise WY/UT delta rule in PyTorch: forward, hand-written backward, one autograd.Function.

Legend: B batch, H heads, N chunks per sequence, C chunk size, K key size, V value size.
Inside this file tensors are laid out head-major, `x_BHNCK`, and computed in float32 (float64 when
the inputs are float64, for gradient checks). The derivation is in README.md beside this file.

Only the state recurrence across chunks is a Python loop (two small matmuls per chunk); everything
inside a chunk is batched over all chunks at once. The backward keeps no autograd graph: it recomputes
the chunk-start states from the inputs, so memory grows linearly in T.
"""


import torch

from .varlen import VarlenIndex

CHUNK_SIZES = (16, 32, 64, 128)


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _to_chunks(x: torch.Tensor, chunk_size: int, dtype: torch.dtype) -> torch.Tensor:
    """[B, T, H, ...] -> [B, H, N, C, ...], zero-padded to a whole number of chunks."""
    B, T, H = x.shape[:3]
    N = -(-T // chunk_size)
    x = x.to(dtype).transpose(1, 2)
    if N * chunk_size != T:
        x = torch.cat([x, x.new_zeros(B, H, N * chunk_size - T, *x.shape[3:])], dim=2)
    return x.reshape(B, H, N, chunk_size, *x.shape[3:])


def _from_chunks(x_BHNC: torch.Tensor, T: int, dtype: torch.dtype) -> torch.Tensor:
    """[B, H, N, C, ...] -> [B, T, H, ...], dropping the padding."""
    B, H, N, C = x_BHNC.shape[:4]
    x = x_BHNC.reshape(B, H, N * C, *x_BHNC.shape[4:])[:, :, :T]
    return x.transpose(1, 2).contiguous().to(dtype)


def _wy_representation(k_BHNCK, v_BHNCV, beta_BHNC):
    """Per chunk: A = (I + strict_tril(diag(beta) K K^T))^-1, W = A (beta*K), U = A (beta*V)."""
    C = k_BHNCK.shape[-2]
    kb_BHNCK = k_BHNCK * beta_BHNC[..., None]
    vb_BHNCV = v_BHNCV * beta_BHNC[..., None]
    eye_CC = torch.eye(C, dtype=k_BHNCK.dtype, device=k_BHNCK.device)
    lower_BHNCC = torch.tril(kb_BHNCK @ k_BHNCK.transpose(-1, -2), diagonal=-1) + eye_CC
    A_BHNCC = torch.linalg.solve_triangular(lower_BHNCC, eye_CC.expand_as(lower_BHNCC), upper=False, unitriangular=True)
    return A_BHNCC, kb_BHNCK, vb_BHNCV, A_BHNCC @ kb_BHNCK, A_BHNCC @ vb_BHNCV


def _chunk_states(k_BHNCK, W_BHNCK, U_BHNCV, state_BHKV):
    """The sequential part: chunk-start states S_n and the values actually written, V'_n = U_n - W_n S_n."""
    N = k_BHNCK.shape[2]
    states_BHNKV = state_BHKV.new_empty(*state_BHKV.shape[:2], N, *state_BHKV.shape[2:])
    vnew_BHNCV = U_BHNCV.new_empty(U_BHNCV.shape)
    for n in range(N):
        states_BHNKV[:, :, n] = state_BHKV
        vnew_BHCV = U_BHNCV[:, :, n] - W_BHNCK[:, :, n] @ state_BHKV
        vnew_BHNCV[:, :, n] = vnew_BHCV
        state_BHKV = state_BHKV + k_BHNCK[:, :, n].transpose(-1, -2) @ vnew_BHCV
    return states_BHNKV, vnew_BHNCV, state_BHKV


def chunk_delta_rule_fwd(q, k, v, beta, scale: float, initial_state, chunk_size: int):
    """q, k [B, T, H, K]; v [B, T, H, V]; beta [B, T, H]; initial_state [B, H, K, V] or None.

    Returns o [B, T, H, V] in v's dtype and the final state [B, H, K, V] in float32 (float64 for
    float64 inputs).
    """
    B, T, H, K = q.shape
    V = v.shape[-1]
    dtype = _compute_dtype(q.dtype)
    q_BHNCK = _to_chunks(q, chunk_size, dtype) * scale
    k_BHNCK = _to_chunks(k, chunk_size, dtype)
    v_BHNCV = _to_chunks(v, chunk_size, dtype)
    beta_BHNC = _to_chunks(beta, chunk_size, dtype)
    _, _, _, W_BHNCK, U_BHNCV = _wy_representation(k_BHNCK, v_BHNCV, beta_BHNC)

    if initial_state is None:
        state_BHKV = q.new_zeros(B, H, K, V, dtype=dtype)
    else:
        state_BHKV = initial_state.to(dtype, copy=True)
    states_BHNKV, vnew_BHNCV, final_BHKV = _chunk_states(k_BHNCK, W_BHNCK, U_BHNCV, state_BHKV)

    causal_BHNCC = torch.tril(q_BHNCK @ k_BHNCK.transpose(-1, -2))
    o_BHNCV = q_BHNCK @ states_BHNKV + causal_BHNCC @ vnew_BHNCV
    return _from_chunks(o_BHNCV, T, v.dtype), final_BHKV


def chunk_delta_rule_bwd(q, k, v, beta, scale: float, initial_state, do, dfinal, chunk_size: int):
    """Gradients (dq, dk, dv, dbeta, dinitial_state) of chunk_delta_rule_fwd, each in its input's dtype.

    `do` is the gradient of o; `dfinal` that of the final state, or None. dinitial_state is float32
    [B, H, K, V] (a zero tensor when initial_state is None).
    """
    B, T, H, K = q.shape
    V = v.shape[-1]
    dtype = _compute_dtype(q.dtype)
    q_BHNCK = _to_chunks(q, chunk_size, dtype) * scale
    k_BHNCK = _to_chunks(k, chunk_size, dtype)
    v_BHNCV = _to_chunks(v, chunk_size, dtype)
    beta_BHNC = _to_chunks(beta, chunk_size, dtype)
    do_BHNCV = _to_chunks(do, chunk_size, dtype)
    A_BHNCC, kb_BHNCK, vb_BHNCV, W_BHNCK, U_BHNCV = _wy_representation(k_BHNCK, v_BHNCV, beta_BHNC)

    if initial_state is None:
        state_BHKV = q.new_zeros(B, H, K, V, dtype=dtype)
    else:
        state_BHKV = initial_state.to(dtype, copy=True)
    states_BHNKV, vnew_BHNCV, _ = _chunk_states(k_BHNCK, W_BHNCK, U_BHNCV, state_BHKV)

    # Output O = Q S + tril(Q K^T) V': the parts that need no recurrence.
    causal_BHNCC = torch.tril(q_BHNCK @ k_BHNCK.transpose(-1, -2))
    dcausal_BHNCC = torch.tril(do_BHNCV @ vnew_BHNCV.transpose(-1, -2))
    dq_BHNCK = do_BHNCV @ states_BHNKV.transpose(-1, -2) + dcausal_BHNCC @ k_BHNCK
    dk_BHNCK = dcausal_BHNCC.transpose(-1, -2) @ q_BHNCK
    dvnew_BHNCV = causal_BHNCC.transpose(-1, -2) @ do_BHNCV

    # Reverse recurrence: dS_n is the gradient of the state *after* chunk n.
    N = q_BHNCK.shape[2]
    dstate_BHKV = torch.zeros_like(state_BHKV) if dfinal is None else dfinal.to(dtype, copy=True)
    dstates_BHNKV = torch.empty_like(states_BHNKV)
    for n in reversed(range(N)):
        dstates_BHNKV[:, :, n] = dstate_BHKV
        dvnew_BHCV = dvnew_BHNCV[:, :, n] + k_BHNCK[:, :, n] @ dstate_BHKV
        dvnew_BHNCV[:, :, n] = dvnew_BHCV
        dstate_BHKV = (
            dstate_BHKV
            + q_BHNCK[:, :, n].transpose(-1, -2) @ do_BHNCV[:, :, n]
            - W_BHNCK[:, :, n].transpose(-1, -2) @ dvnew_BHCV
        )
    dinitial_BHKV = dstate_BHKV

    # S_{n+1} = S_n + K^T V'  and  V' = U - W S_n.
    dk_BHNCK = dk_BHNCK + vnew_BHNCV @ dstates_BHNKV.transpose(-1, -2)
    dU_BHNCV = dvnew_BHNCV
    dW_BHNCK = -dvnew_BHNCV @ states_BHNKV.transpose(-1, -2)

    # W = A (beta K), U = A (beta V), A = L^-1 with L = I + strict_tril((beta K) K^T).
    AT_BHNCC = A_BHNCC.transpose(-1, -2)
    dA_BHNCC = dW_BHNCK @ kb_BHNCK.transpose(-1, -2) + dU_BHNCV @ vb_BHNCV.transpose(-1, -2)
    dlower_BHNCC = torch.tril(-AT_BHNCC @ dA_BHNCC @ AT_BHNCC, diagonal=-1)
    dkb_BHNCK = AT_BHNCC @ dW_BHNCK + dlower_BHNCC @ k_BHNCK
    dvb_BHNCV = AT_BHNCC @ dU_BHNCV
    dk_BHNCK = dk_BHNCK + dlower_BHNCC.transpose(-1, -2) @ kb_BHNCK + dkb_BHNCK * beta_BHNC[..., None]
    dv_BHNCV = dvb_BHNCV * beta_BHNC[..., None]
    dbeta_BHNC = (dkb_BHNCK * k_BHNCK).sum(-1) + (dvb_BHNCV * v_BHNCV).sum(-1)

    return (
        _from_chunks(dq_BHNCK * scale, T, q.dtype),
        _from_chunks(dk_BHNCK, T, k.dtype),
        _from_chunks(dv_BHNCV, T, v.dtype),
        _from_chunks(dbeta_BHNC, T, beta.dtype),
        dinitial_BHKV,
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
    if cu_seqlens is None:
        return chunk_delta_rule_fwd(q, k, v, beta, scale, initial_state, chunk_size)
    index = VarlenIndex(cu_seqlens)
    o, final = chunk_delta_rule_fwd(
        index.pad(q), index.pad(k), index.pad(v), index.pad(beta), scale, initial_state, chunk_size
    )
    return index.unpad(o), final


@_chunk_fwd_op.register_fake
def _(q, k, v, beta, scale, initial_state, cu_seqlens, chunk_size):
    N = q.shape[0] if cu_seqlens is None else cu_seqlens.shape[0] - 1
    state_shape = (N, q.shape[2], q.shape[3], v.shape[3])
    return torch.empty_like(v), q.new_empty(state_shape, dtype=_compute_dtype(q.dtype))


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
        return chunk_delta_rule_bwd(q, k, v, beta, scale, initial_state, do, dfinal, chunk_size)
    index = VarlenIndex(cu_seqlens)
    padded = [index.pad(x) for x in (q, k, v, beta)]
    dq, dk, dv, dbeta, dinitial = chunk_delta_rule_bwd(*padded, scale, initial_state, index.pad(do), dfinal, chunk_size)
    return index.unpad(dq), index.unpad(dk), index.unpad(dv), index.unpad(dbeta), dinitial


@_chunk_bwd_op.register_fake
def _(q, k, v, beta, scale, initial_state, cu_seqlens, do, dfinal, chunk_size):
    return (
        torch.empty_like(q),
        torch.empty_like(k),
        torch.empty_like(v),
        torch.empty_like(beta),
        torch.empty_like(dfinal),
    )


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
