"""Triton kernels of the delta rule: the chunkwise WY/UT passes and the fused recurrence.

Legend: BT chunk length (64, four 16-row sub-blocks), BK / BV tiles of the key / value size, N sequences,
H heads. Every tensor is token-major as the public op takes it ([B, T, H, D] or packed [1, total, H, D]),
so a chunk of one head is a [BT, D] tile with row stride H * D. Matmuls of two inputs run in the input
dtype (the products are exact in float32); every intermediate (A, states, V', their gradients) is
float32 in registers and so are the matmuls that touch one, except where a backward kernel's
`HALF_OPERANDS` bits (chunk.py, chosen by measured error) round one to bf16 as it enters a matmul; the
backward also stores the chunk states and their gradients in bf16 when the inputs are bf16 (chunk.py's
_store_dtype). `PREC` is the precision of float32 matmuls: "tf32x3" for float32 inputs (within the fp32
error bound), "tf32" otherwise (bf16/fp16 inputs are exact in TF32).

The math, per chunk with chunk-start state S and q already scaled:
    L = strict_tril(diag(beta) K K^T),  A = (I + L)^-1,  W = A diag(beta) K,  U = A diag(beta) V
    V' = U - W S = A diag(beta) (V - K S),   O = Q S + tril(Q K^T) V',   S_next = S + K^T V'
Only A is stored (64 numbers per token and head); W and U exist only as A applied in the state kernels.
With chunk.STORE_P the WY forward also stores P = scale tril(Q K^T) (64 more numbers per token and head),
read by the state passes in place of forming it once per value tile.
The backward is chunk.py's (the PyTorch path), split into a parallel pass for the chunk-local part of dV'
(not run where P is stored: the reverse pass forms that part from P), a reverse state pass and two more
parallel passes.
"""

import triton
import triton.language as tl

BT = 64


@triton.jit
def _tile(base, row0, n_rows, row_stride, col0, n_cols, BR: tl.constexpr, BC: tl.constexpr):
    """Load rows row0..row0+BR and columns col0..col0+BC of a row-major matrix; zeros outside."""
    r = row0 + tl.arange(0, BR)
    c = col0 + tl.arange(0, BC)
    mask = (r[:, None] < n_rows) & (c[None, :] < n_cols)
    return tl.load(base + r[:, None] * row_stride + c[None, :], mask=mask, other=0.0)


@triton.jit
def _put(base, x, row0, n_rows, row_stride, col0, n_cols, BR: tl.constexpr, BC: tl.constexpr):
    r = row0 + tl.arange(0, BR)
    c = col0 + tl.arange(0, BC)
    mask = (r[:, None] < n_rows) & (c[None, :] < n_cols)
    tl.store(base + r[:, None] * row_stride + c[None, :], x.to(base.dtype.element_ty), mask=mask)


@triton.jit
def _vec(base, row0, n_rows, stride, BR: tl.constexpr):
    r = row0 + tl.arange(0, BR)
    return tl.load(base + r * stride, mask=r < n_rows, other=0.0).to(tl.float32)


@triton.jit
def _span(cu_seqlens, chunk_index, i_b, i_t, T, IS_VARLEN: tl.constexpr):
    """(first token, length, chunk within the sequence, sequence) of program (i_b, i_t)."""
    if IS_VARLEN:
        i_n = tl.load(chunk_index + 2 * i_t).to(tl.int32)
        i_c = tl.load(chunk_index + 2 * i_t + 1).to(tl.int32)
        bos = tl.load(cu_seqlens + i_n).to(tl.int32)
        length = tl.load(cu_seqlens + i_n + 1).to(tl.int32) - bos
    else:
        i_n, i_c = i_b, i_t
        bos, length = i_b * T, T
    return bos, length, i_c, i_n


@triton.jit
def _sequence(cu_seqlens, chunk_offsets, i_n, T, IS_VARLEN: tl.constexpr):
    """(first token, length, first global chunk) of sequence i_n, for the kernels that walk a sequence."""
    if IS_VARLEN:
        bos = tl.load(cu_seqlens + i_n).to(tl.int32)
        length = tl.load(cu_seqlens + i_n + 1).to(tl.int32) - bos
        boh = tl.load(chunk_offsets + i_n).to(tl.int32)
    else:
        bos, length = i_n * T, T
        boh = i_n * tl.cdiv(T, 64)
    return bos, length, boh


@triton.jit
def _dot(a, b, PREC: tl.constexpr):
    """a @ b with float32 accumulation; PREC applies to float32 operands (half ones are exact anyway)."""
    if a.dtype == tl.float32:
        return tl.dot(a, b, input_precision=PREC)
    else:
        return tl.dot(a, b)


@triton.jit
def _dot_in(a, b, HALF: tl.constexpr, PREC: tl.constexpr):
    """a @ b with float32 accumulation, both operands rounded to bf16 where HALF (a HALF_OPERANDS bit: bf16
    inputs only), else both in float32."""
    if HALF:
        return tl.dot(a.to(tl.bfloat16), b.to(tl.bfloat16))
    else:
        return _dot(a.to(tl.float32), b.to(tl.float32), PREC)


@triton.jit
def _inv_unit_lower_diag16(L):
    """(I + D)^-1 for D the strictly lower parts of the four 16x16 diagonal blocks of a [64, 64] L, as a block-
    diagonal [64, 64] matrix. The blocks are cut out of L by a reshape to [4, 16, 4, 16] (the diagonal taken by a
    masked sum), inverted together by forward substitution, and put back by a reshape. Per block, with
    M = -strict_tril(D) and X = (I + D)^-1 - I, X = M + M X: row i of X needs only the rows above it, so step i
    forms row i of all four blocks. (The same substitution on the masked [64, 64] tile, four times the elements
    per step, was 2-4x slower on the H200 and wrong at K = 256: NOTES.md, version 17.)"""
    b4 = tl.arange(0, 4)
    r = tl.arange(0, 16)
    same = b4[:, None, None, None] == b4[None, None, :, None]
    D = tl.sum(tl.where(same, tl.reshape(L, (4, 16, 4, 16)), 0.0), 2)
    M = -tl.where(r[None, :, None] > r[None, None, :], D, 0.0)
    X = M
    for i in tl.static_range(1, 16):
        sel = r[None, :, None] == i
        m = tl.sum(tl.where(sel, M, 0.0), 1)
        row = m + tl.sum(m[:, :, None] * X, 1)
        X = tl.where(sel, row[:, None, :], X)
    X = X + tl.where(r[None, :, None] == r[None, None, :], 1.0, 0.0)
    return tl.reshape(tl.where(same, X[:, :, None, :], 0.0), (64, 64))


@triton.jit
def wy_fwd_kernel(
    q, k, v, beta, A, p, w, u, cu_seqlens, chunk_index, scale, T, C0,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BK: tl.constexpr, IS_VARLEN: tl.constexpr,
    PREC: tl.constexpr, STORE_P: tl.constexpr = False, A_PREC: tl.constexpr = "tf32", STORE_WU: tl.constexpr = False,
    HALF_WU: tl.constexpr = False,
):  # fmt: skip
    """One chunk of one head: A = (I + strict_tril(beta K K^T))^-1, the WY representation's only stored part
    (W = A beta K and U = A beta V are formed only with STORE_WU: the state kernels apply A). With STORE_P also
    the chunk's P = scale tril(Q K^T) (chunk.STORE_P), so that the state passes, which run one program per value tile,
    neither form it on their chains nor each form it again.

    On whole [64, 64] tiles: L = beta K K^T in one product per key tile (sharing K's tile with P's product;
    products of two input-dtype numbers are exact in float32), the diagonal blocks' inverses Dinv
    (_inv_unit_lower_diag16), then with E = L's blocks below the diagonal and F = Dinv E (nilpotent, F^4 = 0)
    A = (I + F)^-1 Dinv = Dinv - F A, three times from A = Dinv: four [64, 64] products in A_PREC (tf32: A within
    about 2e-4 of its float64 value relative to its largest entry, under the 1e-3 of A's bf16 storage, for random
    keys: scripts/wy_inverse_accuracy.py; tf32x3 about float32's). Versions up to 16 worked on 16-row blocks,
    whose products each warp repeated (a 16-row product covers one warp), at 255 registers a thread for any warp
    count: 1.5x this kernel's time in bf16, 3x in float32 (NOTES.md, version 17).

    C0: the first chunk of the launch (equal-length sequences; chunk.PIPELINE launches the chunks in segments).
    STORE_WU (chunk.PIPELINE_WU): also W = A beta K and U = A beta V, in [64, BK] tiles, for state_wu_kernel;
    HALF_WU rounds A and beta K, beta V to bf16 in those products (bf16 inputs; float32 accumulation).
    """
    i_t, i_bh = tl.program_id(0) + C0, tl.program_id(1)
    i_b, i_h = i_bh // H, i_bh % H
    bos, T, i_c, i_n = _span(cu_seqlens, chunk_index, i_b, i_t, T, IS_VARLEN)
    t0 = i_c * 64
    head = (bos * H + i_h).to(tl.int64)
    k += head * K
    q += head * K
    G = tl.zeros([64, 64], tl.float32)
    P = tl.zeros([64, 64], tl.float32)
    for i_k in range(tl.cdiv(K, BK)):
        kt = _tile(k, t0, T, H * K, i_k * BK, K, 64, BK)
        G += _dot(kt, tl.trans(kt), PREC)
        if STORE_P:
            P += _dot(_tile(q, t0, T, H * K, i_k * BK, K, 64, BK), tl.trans(kt), PREC)
    r = tl.arange(0, 64)
    if STORE_P:
        _put(p + head * 64, tl.where(r[:, None] >= r[None, :], P * scale, 0.0), t0, T, H * 64, 0, 64, 64, 64)
    L = G * _vec(beta + head, t0, T, H, 64)[:, None]
    Dinv = _inv_unit_lower_diag16(L)
    F = _dot(Dinv, tl.where((r[:, None] // 16) > (r[None, :] // 16), L, 0.0), A_PREC)
    Ac = Dinv
    for _ in tl.static_range(3):
        Ac = Dinv - _dot(F, Ac, A_PREC)
    Ac = tl.where(r[:, None] >= r[None, :], Ac, 0.0)
    _put(A + head * 64, Ac, t0, T, H * 64, 0, 64, 64, 64)
    if STORE_WU:
        bt = _vec(beta + head, t0, T, H, 64)
        for i_k in range(tl.cdiv(K, BK)):
            kt = _tile(k, t0, T, H * K, i_k * BK, K, 64, BK)
            _put(w + head * K, _a_beta(Ac, bt, kt, HALF_WU, PREC), t0, T, H * K, i_k * BK, K, 64, BK)
        for i_v in range(tl.cdiv(V, BK)):
            vt = _tile(v + head * V, t0, T, H * V, i_v * BK, V, 64, BK)
            _put(u + head * V, _a_beta(Ac, bt, vt, HALF_WU, PREC), t0, T, H * V, i_v * BK, V, 64, BK)


@triton.jit
def _a_beta(A, bt, x, HALF: tl.constexpr, PREC: tl.constexpr):
    """A (beta x) for a chunk's [64, 64] A, its [64] beta and a [64, n] tile x: W's or U's tile (HALF: both
    operands rounded to bf16, float32 accumulation)."""
    return _dot_in(A, x.to(tl.float32) * bt[:, None], HALF, PREC)


@triton.jit
def state_wu_kernel(
    q, k, w, u, p, o, h, vnew, h0, ht, cu_seqlens, chunk_offsets, scale, T, C0, C1,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    USE_H0: tl.constexpr, IS_VARLEN: tl.constexpr, PREC: tl.constexpr, HALF_OPERANDS: tl.constexpr = 0,
    WRITE_O: tl.constexpr = False,
):  # fmt: skip
    """The recurrence across chunks from the WY forward's W and U (STORE_WU), its chain two products long:
    per chunk the chunk-start state S is stored, V' = U - W S (stored), S += K^T V'; the final state to ht.
    The output follows from the stored states and V' (output_kernel), or with WRITE_O here, off the chain:
    O = scale Q S + P V' from the stored P. HALF_OPERANDS as state_fwd's bits 1 (S in W S and Q S) and 4 (V' in
    K^T V' and P V'). C0, C1 as state_fwd's."""
    i_v, i_nh = tl.program_id(0), tl.program_id(1)
    i_n, i_h = i_nh // H, i_nh % H
    bos, T, boh = _sequence(cu_seqlens, chunk_offsets, i_n, T, IS_VARLEN)
    v0 = i_v * BV
    k += (bos * H + i_h).to(tl.int64) * K
    w += (bos * H + i_h).to(tl.int64) * K
    u += (bos * H + i_h).to(tl.int64) * V
    vnew += (bos * H + i_h).to(tl.int64) * V
    if WRITE_O:
        q += (bos * H + i_h).to(tl.int64) * K
        p += (bos * H + i_h).to(tl.int64) * 64
        o += (bos * H + i_h).to(tl.int64) * V
    S = tl.zeros([BK, BV], tl.float32)
    if USE_H0:
        S += _tile(h0 + i_nh * K * V, 0, K, V, v0, V, BK, BV)
    for i_t in range(C0, tl.minimum(tl.cdiv(T, 64), C1)):
        t0 = i_t * 64
        _put(h + ((boh + i_t) * H + i_h).to(tl.int64) * K * V, S, 0, K, V, v0, V, BK, BV)
        wt = _tile(w, t0, T, H * K, 0, K, 64, BK)
        vn = _tile(u, t0, T, H * V, v0, V, 64, BV).to(tl.float32) - _dot_in(wt, S, HALF_OPERANDS & 1, PREC)
        _put(vnew, vn, t0, T, H * V, v0, V, 64, BV)
        if WRITE_O:
            ot = _dot_in(_tile(q, t0, T, H * K, 0, K, 64, BK), S, HALF_OPERANDS & 1, PREC) * scale + _dot_in(
                _tile(p, t0, T, H * 64, 0, 64, 64, 64), vn, HALF_OPERANDS & 4, PREC)
            _put(o, ot, t0, T, H * V, v0, V, 64, BV)
        S += _dot_in(tl.trans(_tile(k, t0, T, H * K, 0, K, 64, BK)), vn, HALF_OPERANDS & 4, PREC)
    _put(ht + i_nh * K * V, S, 0, K, V, v0, V, BK, BV)


@triton.jit
def _chunk_a(A, t0, T, H: tl.constexpr):
    """The chunk's [64, 64] A (float32, or bf16 where chunk.HALF_A stores it so), its upper blocks (never
    written) masked to zero."""
    r = tl.arange(0, 64)
    return tl.where(r[:, None] >= r[None, :], _tile(A, t0, T, H * 64, 0, 64, 64, 64), 0.0)


@triton.jit
def state_fwd_kernel(
    q, k, v, beta, A, p, o, h, vnew, h0, ht, cu_seqlens, chunk_offsets, scale, T, C0, C1,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    USE_H0: tl.constexpr, STORE_FINAL: tl.constexpr, STORE_H: tl.constexpr, WRITE_O: tl.constexpr,
    IS_VARLEN: tl.constexpr, PREC: tl.constexpr, HALF_OPERANDS: tl.constexpr = 0, LOAD_P: tl.constexpr = False,
    Q_ONE_BUFFER: tl.constexpr = False,
):  # fmt: skip
    """The recurrence across chunks for one head and one value tile, fused with the output.

    Per chunk: V' = A (beta (V - K S)) (= U - W S without forming W or U), O = scale (Q S + tril(Q K^T) V'),
    S += K^T V'. With STORE_H the chunk-start states and V' are written for the backward (and O is
    skipped unless WRITE_O). HALF_OPERANDS (bf16 inputs; float32 accumulation and state throughout): bit 1
    rounds S to bf16 in K S and Q S (K and Q stay in their dtype), bit 2 rounds A and beta (V - K S) in
    their product, bit 4 rounds V' and the masked Q K^T in the products with V'. LOAD_P: the masked, scaled
    Q K^T comes from the WY forward (wy_fwd_kernel's STORE_P) instead of a product here. C0, C1: the chunks
    walked, C0 <= chunk < C1 (chunk.PIPELINE: a segment, from the state the previous one left in h0).
    Q_ONE_BUFFER (chunk.TRAIN_STATE_FWD): Q's tile passes through an identity select that keeps Triton's software
    pipeliner from giving it a shared-memory buffer per stage: one [64, K] buffer instead of num_stages (at
    K = 128 in bf16, 2 stages of a keeping forward: 114,688 bytes instead of 131,072, two blocks per SM).
    """
    i_v, i_nh = tl.program_id(0), tl.program_id(1)
    i_n, i_h = i_nh // H, i_nh % H
    bos, T, boh = _sequence(cu_seqlens, chunk_offsets, i_n, T, IS_VARLEN)
    v0 = i_v * BV
    q += (bos * H + i_h).to(tl.int64) * K
    k += (bos * H + i_h).to(tl.int64) * K
    v += (bos * H + i_h).to(tl.int64) * V
    beta += bos * H + i_h
    A += (bos * H + i_h).to(tl.int64) * 64
    if WRITE_O:
        o += (bos * H + i_h).to(tl.int64) * V
    if STORE_H:
        vnew += (bos * H + i_h).to(tl.int64) * V
    if LOAD_P:
        p += (bos * H + i_h).to(tl.int64) * 64
    r = tl.arange(0, 64)
    causal = r[:, None] >= r[None, :]

    S = tl.zeros([BK, BV], tl.float32)
    if USE_H0:
        S += _tile(h0 + i_nh * K * V, 0, K, V, v0, V, BK, BV)
    for i_t in range(C0, tl.minimum(tl.cdiv(T, 64), C1)):
        t0 = i_t * 64
        if STORE_H:
            _put(h + ((boh + i_t) * H + i_h).to(tl.int64) * K * V, S, 0, K, V, v0, V, BK, BV)
        kt = _tile(k, t0, T, H * K, 0, K, 64, BK)
        bt = _vec(beta, t0, T, H, 64)
        # What the chunk's writes must add to what S already predicts: the difference in float32.
        x = (_tile(v, t0, T, H * V, v0, V, 64, BV).to(tl.float32) - _dot_in(kt, S, HALF_OPERANDS & 1, PREC))
        x = x * bt[:, None]
        vn = _dot_in(_chunk_a(A, t0, T, H), x, HALF_OPERANDS & 2, PREC)
        if STORE_H:
            _put(vnew, vn, t0, T, H * V, v0, V, 64, BV)
        if WRITE_O:
            qt = _tile(q, t0, T, H * K, 0, K, 64, BK)
            if Q_ONE_BUFFER:  # q itself: NaN stays NaN
                qt = tl.where(qt == qt, qt, float("nan"))
            if LOAD_P:
                ot = _dot_in(qt, S, HALF_OPERANDS & 1, PREC) * scale + _dot_in(
                    _tile(p, t0, T, H * 64, 0, 64, 64, 64), vn, HALF_OPERANDS & 4, PREC)
            else:
                s = tl.where(causal, _dot(qt, tl.trans(kt), PREC), 0.0)
                ot = (_dot_in(qt, S, HALF_OPERANDS & 1, PREC) + _dot_in(s, vn, HALF_OPERANDS & 4, PREC)) * scale
            _put(o, ot, t0, T, H * V, v0, V, 64, BV)
        S += _dot_in(tl.trans(kt), vn, HALF_OPERANDS & 4, PREC)
    if STORE_FINAL:
        _put(ht + i_nh * K * V, S, 0, K, V, v0, V, BK, BV)


@triton.jit
def _chunk_qk(q, k, tok, t0, T, H: tl.constexpr, K: tl.constexpr, BK: tl.constexpr):
    """The chunk's [64, BK] tiles of Q and K (head offset `tok`), zeros past the sequence."""
    return _tile(q + tok * K, t0, T, H * K, 0, K, 64, BK), _tile(k + tok * K, t0, T, H * K, 0, K, 64, BK)


@triton.jit
def output_kernel(
    q, k, p, h, vnew, o, cu_seqlens, chunk_index, scale, T, C0,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    IS_VARLEN: tl.constexpr, PREC: tl.constexpr, HALF_OPERANDS: tl.constexpr = 0, LOAD_P: tl.constexpr = False,
):  # fmt: skip
    """The output from the stored chunk-start states and V' (chunk.SPLIT_OUTPUT: the state pass then carries
    only the products on its chain), every chunk at once: O = scale (Q S + tril(Q K^T) V'). HALF_OPERANDS as
    state_fwd's bits 1 and 4 (S is stored in bf16 for bf16 inputs, so bit 1 is what the storage did already);
    LOAD_P as state_fwd's. C0: the first chunk of the launch (equal-length sequences; chunk.PIPELINE)."""
    i_v, i_t, i_bh = tl.program_id(0), tl.program_id(1) + C0, tl.program_id(2)
    bos, T, i_c, i_g, i_h = _chunk_of(cu_seqlens, chunk_index, i_t, i_bh, T, H, IS_VARLEN)
    t0, v0 = i_c * 64, i_v * BV
    tok = (bos * H + i_h).to(tl.int64)
    St = _tile(h + (i_g * H + i_h).to(tl.int64) * K * V, 0, K, V, v0, V, BK, BV)
    vn = _tile(vnew + tok * V, t0, T, H * V, v0, V, 64, BV)
    if LOAD_P:
        qt = _tile(q + tok * K, t0, T, H * K, 0, K, 64, BK)
        ot = _dot_in(qt, St, HALF_OPERANDS & 1, PREC) * scale + _dot_in(
            _tile(p + tok * 64, t0, T, H * 64, 0, 64, 64, 64), vn, HALF_OPERANDS & 4, PREC)
    else:
        qt, kt = _chunk_qk(q, k, tok, t0, T, H, K, BK)
        r = tl.arange(0, 64)
        s = tl.where(r[:, None] >= r[None, :], _dot(qt, tl.trans(kt), PREC), 0.0)
        ot = (_dot_in(qt, St, HALF_OPERANDS & 1, PREC) + _dot_in(s, vn, HALF_OPERANDS & 4, PREC)) * scale
    _put(o + tok * V, ot, t0, T, H * V, v0, V, 64, BV)


@triton.jit
def dv_local_kernel(
    q, k, p, do, dvnew, cu_seqlens, chunk_index, scale, T, C0,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    IS_VARLEN: tl.constexpr, PREC: tl.constexpr, LOAD_P: tl.constexpr = False,
):  # fmt: skip
    """The part of dV' that stays inside its chunk, tril(Q K^T)^T dO (scaled), for every chunk at once:
    it leaves the reverse state pass (`state_bwd`) with only the products that carry dS across chunks.
    LOAD_P: from the stored P (the WY forward's scale tril(Q K^T)) as P^T dO. C0: the first chunk of the
    launch (equal-length sequences; chunk.PIPELINE)."""
    i_v, i_t, i_bh = tl.program_id(0), tl.program_id(1) + C0, tl.program_id(2)
    i_b, i_h = i_bh // H, i_bh % H
    bos, T, i_c, i_n = _span(cu_seqlens, chunk_index, i_b, i_t, T, IS_VARLEN)
    t0, v0 = i_c * 64, i_v * BV
    tok = (bos * H + i_h).to(tl.int64)
    dot_ = _tile(do + tok * V, t0, T, H * V, v0, V, 64, BV)
    if LOAD_P:
        pt = _tile(p + tok * 64, t0, T, H * 64, 0, 64, 64, 64)
        dvl = _dot(tl.trans(pt), dot_.to(pt.dtype), PREC)
    else:
        qt, kt = _chunk_qk(q, k, tok, t0, T, H, K, BK)
        r = tl.arange(0, 64)
        # Transposed causal mask: entry (j, i) is kept when token i sees token j.
        sT = tl.where(r[:, None] <= r[None, :], _dot(kt, tl.trans(qt), PREC), 0.0) * scale
        dvl = _dot(sT, dot_.to(tl.float32), PREC)
    _put(dvnew + tok * V, dvl, t0, T, H * V, v0, V, 64, BV)


@triton.jit
def w_kernel(
    k, beta, A, w, cu_seqlens, chunk_index, T, C0,
    H: tl.constexpr, K: tl.constexpr, BK: tl.constexpr, IS_VARLEN: tl.constexpr, PREC: tl.constexpr,
    HALF: tl.constexpr = False,
):  # fmt: skip
    """W = A beta K from the stored A, every chunk at once, in key tiles of BK (chunk.REVERSE_FROM_W: the reverse
    pass then forms W^T dV' in one product). HALF rounds A and beta K to bf16 in the product (bf16 inputs).
    C0: the first chunk of the launch (equal-length sequences; chunk.PIPELINE)."""
    i_k, i_t, i_bh = tl.program_id(0), tl.program_id(1) + C0, tl.program_id(2)
    i_b, i_h = i_bh // H, i_bh % H
    bos, T, i_c, i_n = _span(cu_seqlens, chunk_index, i_b, i_t, T, IS_VARLEN)
    t0 = i_c * 64
    head = (bos * H + i_h).to(tl.int64)
    kt = _tile(k + head * K, t0, T, H * K, i_k * BK, K, 64, BK)
    wt = _a_beta(_chunk_a(A + head * 64, t0, T, H), _vec(beta + head, t0, T, H, 64), kt, HALF, PREC)
    _put(w + head * K, wt, t0, T, H * K, i_k * BK, K, 64, BK)


@triton.jit
def state_bwd_kernel(
    q, k, beta, A, p, w, do, dh, dvnew, dht, dh0, cu_seqlens, chunk_offsets, scale, T, C0, C1,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    USE_DHT: tl.constexpr, STORE_DH0: tl.constexpr, IS_VARLEN: tl.constexpr, PREC: tl.constexpr,
    HALF_OPERANDS: tl.constexpr, LOAD_P: tl.constexpr = False, LOAD_W: tl.constexpr = False,
):  # fmt: skip
    """The reverse recurrence: dS is the gradient of the state after chunk n (stored per chunk);
    dV' = (dV' local) + K dS, then dS += Q^T dO - W^T dV' with W^T dV' = K^T (beta A^T dV'). The local part
    P^T dO comes from dv_local_kernel (already in dvnew), or with LOAD_P is formed here from the stored P
    (one [64, 64] tile and a product off the chain; dv_local_kernel is then not run). HALF_OPERANDS (bf16
    inputs; float32 accumulation): bit 1 rounds dS and beta A^T dV' to bf16 in the two products with K, bit 2
    rounds A and dV' in A^T dV'. C0, C1: the chunks walked (from C1 - 1 down to C0; chunk.PIPELINE: a segment,
    from the dS the later one left in dht). LOAD_W: W = A beta K from w_kernel, so that W^T dV' is one product
    (dV' rounded to bf16 there under bit 1) and the chain two products long."""
    i_v, i_nh = tl.program_id(0), tl.program_id(1)
    i_n, i_h = i_nh // H, i_nh % H
    bos, T, boh = _sequence(cu_seqlens, chunk_offsets, i_n, T, IS_VARLEN)
    v0 = i_v * BV
    q += (bos * H + i_h).to(tl.int64) * K
    k += (bos * H + i_h).to(tl.int64) * K
    beta += bos * H + i_h
    A += (bos * H + i_h).to(tl.int64) * 64
    do += (bos * H + i_h).to(tl.int64) * V
    dvnew += (bos * H + i_h).to(tl.int64) * V
    if LOAD_P:
        p += (bos * H + i_h).to(tl.int64) * 64
    if LOAD_W:
        w += (bos * H + i_h).to(tl.int64) * K

    dS = tl.zeros([BK, BV], tl.float32)
    if USE_DHT:
        dS += _tile(dht + i_nh * K * V, 0, K, V, v0, V, BK, BV)
    c_end = tl.minimum(tl.cdiv(T, 64), C1)
    for i_r in range(c_end - C0):
        i_t = c_end - 1 - i_r
        t0 = i_t * 64
        _put(dh + ((boh + i_t) * H + i_h).to(tl.int64) * K * V, dS, 0, K, V, v0, V, BK, BV)
        qt = _tile(q, t0, T, H * K, 0, K, 64, BK)
        kt = _tile(k, t0, T, H * K, 0, K, 64, BK)
        dot_ = _tile(do, t0, T, H * V, v0, V, 64, BV)
        if LOAD_P:
            pt = _tile(p, t0, T, H * 64, 0, 64, 64, 64)
            dvn = _dot(tl.trans(pt), dot_.to(pt.dtype), PREC) + _dot_in(kt, dS, HALF_OPERANDS & 1, PREC)
        else:
            dvn = _tile(dvnew, t0, T, H * V, v0, V, 64, BV).to(tl.float32) + _dot_in(kt, dS, HALF_OPERANDS & 1, PREC)
        _put(dvnew, dvn, t0, T, H * V, v0, V, 64, BV)
        # Both forms keep the timed build's order (Q^T dO before W^T dV'); a shared update changed its registers.
        if LOAD_W:
            wt = _tile(w, t0, T, H * K, 0, K, 64, BK)
            dS += _dot(tl.trans(qt), dot_, PREC) * scale - _dot_in(tl.trans(wt), dvn, HALF_OPERANDS & 1, PREC)
        else:
            dx = _dot_in(tl.trans(_chunk_a(A, t0, T, H)), dvn, HALF_OPERANDS & 2, PREC)
            dx = dx * _vec(beta, t0, T, H, 64)[:, None]
            dS += _dot(tl.trans(qt), dot_, PREC) * scale - _dot_in(tl.trans(kt), dx, HALF_OPERANDS & 1, PREC)
    if STORE_DH0:
        _put(dh0 + i_nh * K * V, dS, 0, K, V, v0, V, BK, BV)


@triton.jit
def _chunk_of(cu_seqlens, chunk_index, i_t, i_bh, T, H: tl.constexpr, IS_VARLEN: tl.constexpr):
    """(first token, length, chunk within the sequence, chunk in the stored states, head) of program
    (i_t, i_bh) of a per-chunk kernel that reads the chunk states."""
    i_b, i_h = i_bh // H, i_bh % H
    bos, T, i_c, i_n = _span(cu_seqlens, chunk_index, i_b, i_t, T, IS_VARLEN)
    if IS_VARLEN:
        i_g = i_t
    else:
        i_g = i_b * tl.cdiv(T, 64) + i_t
    return bos, T, i_c, i_g, i_h


@triton.jit
def _dqkw_accumulate(
    dqt, dP, dkt, dwt, h, dh, vnew, do, dvnew, tok, t0, T, k0, v0,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    HALF_OPERANDS: tl.constexpr, PREC: tl.constexpr,
):  # fmt: skip
    """Add one value tile's share of a chunk's dQ (before its scale and local part), dP, dK's output/state
    part and dW (key columns k0..k0+BK) to the accumulators; returns them and the tile of dV' it read.

    The chunk states are stored in bf16 for bf16 inputs (float32 otherwise): dO S^T runs as a bf16 matmul
    there (exact products). V' and dV' are stored in float32 (bf16 with chunk.HALF_VPRIME); with
    HALF_OPERANDS they are rounded to bf16 as they enter the matmuls (float32 accumulation), as the stored
    states are."""
    St = _tile(h, k0, K, V, v0, V, BK, BV)
    dSt = _tile(dh, k0, K, V, v0, V, BK, BV)
    vn = _tile(vnew + tok * V, t0, T, H * V, v0, V, 64, BV)
    dot_ = _tile(do + tok * V, t0, T, H * V, v0, V, 64, BV)
    dvn = _tile(dvnew + tok * V, t0, T, H * V, v0, V, 64, BV)
    dqt += _dot(dot_.to(St.dtype), tl.trans(St), PREC)
    dP += _dot_in(dot_, tl.trans(vn), HALF_OPERANDS & 1, PREC)
    dkt += _dot_in(vn, tl.trans(dSt), HALF_OPERANDS & 2, PREC)
    dwt -= _dot_in(dvn, tl.trans(St), HALF_OPERANDS & 4, PREC)
    return dqt, dP, dkt, dwt, dvn


@triton.jit
def dqkw_kernel(
    q, k, vnew, do, dvnew, h, dh, dq, dk, dw, cu_seqlens, chunk_index, scale, T, C0,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    IS_VARLEN: tl.constexpr, PREC: tl.constexpr, HALF_OPERANDS: tl.constexpr,
):  # fmt: skip
    """Per chunk and key tile: dQ (final), dK's output/state part, dW = -dV' S^T (both float32). C0: the first
    chunk of the launch (equal lengths)."""
    i_k, i_t, i_bh = tl.program_id(0), tl.program_id(1) + C0, tl.program_id(2)
    bos, T, i_c, i_g, i_h = _chunk_of(cu_seqlens, chunk_index, i_t, i_bh, T, H, IS_VARLEN)
    t0 = i_c * 64
    k0 = i_k * BK
    tok = (bos * H + i_h).to(tl.int64)
    h += (i_g * H + i_h).to(tl.int64) * K * V
    dh += (i_g * H + i_h).to(tl.int64) * K * V
    r = tl.arange(0, 64)

    dqt = tl.zeros([64, BK], tl.float32)
    dkt = tl.zeros([64, BK], tl.float32)
    dwt = tl.zeros([64, BK], tl.float32)
    dP = tl.zeros([64, 64], tl.float32)
    for i_v in range(tl.cdiv(V, BV)):
        v0 = i_v * BV
        dqt, dP, dkt, dwt, _ = _dqkw_accumulate(dqt, dP, dkt, dwt, h, dh, vnew, do, dvnew, tok, t0, T, k0, v0,
                                                H, K, V, BK, BV, HALF_OPERANDS, PREC)  # fmt: skip
    dP = tl.where(r[:, None] >= r[None, :], dP, 0.0) * scale
    qt = _tile(q + tok * K, t0, T, H * K, k0, K, 64, BK)
    kt = _tile(k + tok * K, t0, T, H * K, k0, K, 64, BK)
    dqt = dqt * scale + _dot_in(dP, kt, HALF_OPERANDS & 8, PREC)
    dkt += _dot_in(tl.trans(dP), qt, HALF_OPERANDS & 8, PREC)
    _put(dq + tok * K, dqt, t0, T, H * K, k0, K, 64, BK)
    _put(dk + tok * K, dkt, t0, T, H * K, k0, K, 64, BK)
    _put(dw + tok * K, dwt, t0, T, H * K, k0, K, 64, BK)


@triton.jit
def wy_bwd_kernel(
    k, v, beta, A, dw, du, dk_part, dk, dv, dbeta, cu_seqlens, chunk_index, T, C0,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    IS_VARLEN: tl.constexpr, PREC: tl.constexpr, HALF_OPERANDS: tl.constexpr = 0,
):  # fmt: skip
    """Backward of W = A beta K, U = A beta V, A = (I + strict_tril(beta K K^T))^-1 for one chunk.

    `dk_part` holds dK's other parts (float32); the full dK goes to `dk` in k's dtype. Every product in
    float32 (TF32 for bf16 inputs) unless a HALF_OPERANDS bit rounds its operands to bf16 (float32
    accumulation): 1 A^T dW and A^T dU, 2 the two products of dL = -A^T dA A^T, 4 dL K and dL^T (beta K),
    8 dW (beta K)^T and dU (beta V)^T.
    """
    i_t, i_bh = tl.program_id(0) + C0, tl.program_id(1)
    i_b, i_h = i_bh // H, i_bh % H
    bos, T, i_c, i_n = _span(cu_seqlens, chunk_index, i_b, i_t, T, IS_VARLEN)
    F32 = tl.float32
    t0 = i_c * 64
    tok = (bos * H + i_h).to(tl.int64)
    r = tl.arange(0, 64)
    b = _vec(beta + tok, t0, T, H, 64)
    At = tl.where(r[:, None] >= r[None, :], _tile(A + tok * 64, t0, T, H * 64, 0, 64, 64, 64), 0.0)
    AtT = tl.trans(At)

    dA = tl.zeros([64, 64], tl.float32)
    for i_k in range(tl.cdiv(K, BK)):
        kb = _tile(k + tok * K, t0, T, H * K, i_k * BK, K, 64, BK).to(F32) * b[:, None]
        dA += _dot_in(_tile(dw + tok * K, t0, T, H * K, i_k * BK, K, 64, BK), tl.trans(kb), HALF_OPERANDS & 8, PREC)
    for i_v in range(tl.cdiv(V, BV)):
        vb = _tile(v + tok * V, t0, T, H * V, i_v * BV, V, 64, BV).to(F32) * b[:, None]
        dA += _dot_in(_tile(du + tok * V, t0, T, H * V, i_v * BV, V, 64, BV), tl.trans(vb), HALF_OPERANDS & 8, PREC)
    dL = _wy_dl(AtT, dA, HALF_OPERANDS & 2, PREC)

    db = tl.zeros([64], tl.float32)
    for i_k in range(tl.cdiv(K, BK)):
        kt = _tile(k + tok * K, t0, T, H * K, i_k * BK, K, 64, BK).to(F32)
        kb = kt * b[:, None]
        dwt = _tile(dw + tok * K, t0, T, H * K, i_k * BK, K, 64, BK)
        dkb = _dot_in(AtT, dwt, HALF_OPERANDS & 1, PREC) + _dot_in(dL, kt, HALF_OPERANDS & 4, PREC)
        dkt = _tile(dk_part + tok * K, t0, T, H * K, i_k * BK, K, 64, BK).to(F32)
        dkt += _dot_in(tl.trans(dL), kb, HALF_OPERANDS & 4, PREC) + dkb * b[:, None]
        db += tl.sum(dkb * kt, 1)
        _put(dk + tok * K, dkt, t0, T, H * K, i_k * BK, K, 64, BK)
    for i_v in range(tl.cdiv(V, BV)):
        vt = _tile(v + tok * V, t0, T, H * V, i_v * BV, V, 64, BV).to(F32)
        dvb = _dot_in(AtT, _tile(du + tok * V, t0, T, H * V, i_v * BV, V, 64, BV), HALF_OPERANDS & 1, PREC)
        db += tl.sum(dvb * vt, 1)
        _put(dv + tok * V, dvb * b[:, None], t0, T, H * V, i_v * BV, V, 64, BV)
    rows = t0 + r
    tl.store(dbeta + tok + rows * H, db, mask=rows < T)


@triton.jit
def _wy_dl(AtT, dA, HALF: tl.constexpr, PREC: tl.constexpr):
    """dL = -A^T dA A^T, strictly lower (the gradient of L in A = (I + L)^-1)."""
    r = tl.arange(0, 64)
    dL = -_dot_in(_dot_in(AtT, dA, HALF, PREC), AtT, HALF, PREC)
    return tl.where(r[:, None] > r[None, :], dL, 0.0)


@triton.jit
def dqkw_wy_kernel(
    q, k, v, beta, A, vnew, do, dvnew, h, dh, dq, dk, dv, dbeta, cu_seqlens, chunk_index, scale, T, C0,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    IS_VARLEN: tl.constexpr, PREC: tl.constexpr, HALF_OPERANDS: tl.constexpr, HALF_WY: tl.constexpr = 0,
):  # fmt: skip
    """`dqkw_kernel` and `wy_bwd_kernel` in one program per chunk and head (the whole key size in one
    tile, BK >= K): dK's output/state part and dW = -dV' S^T stay in registers instead of going to memory in
    float32 and back, and dV' (= dU) is read once, in the same pass over the value tiles that forms dQ, dP,
    dK and dW. The same products as the two kernels, in the same precisions (HALF_OPERANDS: dqkw's bits,
    HALF_WY: wy_bwd's). C0: the first chunk of the launch (equal lengths; chunk.PIPELINE_BWD runs it per
    segment).

    Measured on the H200 (NOTES.md, version 19): at K = 64 with 4 warps faster than the two kernels; at
    K = 128 on whole heads slower (its registers spill). Cutting the key size into tiles, each program forming
    the whole dA from X = beta (V - K S), was slower still at K = 128 and 256 (one more product over all keys
    per tile)."""
    i_t, i_bh = tl.program_id(0) + C0, tl.program_id(1)
    bos, T, i_c, i_g, i_h = _chunk_of(cu_seqlens, chunk_index, i_t, i_bh, T, H, IS_VARLEN)
    F32 = tl.float32
    t0 = i_c * 64
    tok = (bos * H + i_h).to(tl.int64)
    h += (i_g * H + i_h).to(tl.int64) * K * V
    dh += (i_g * H + i_h).to(tl.int64) * K * V
    r = tl.arange(0, 64)
    b = _vec(beta + tok, t0, T, H, 64)
    AtT = tl.trans(tl.where(r[:, None] >= r[None, :], _tile(A + tok * 64, t0, T, H * 64, 0, 64, 64, 64), 0.0))

    dqt = tl.zeros([64, BK], tl.float32)
    dkt = tl.zeros([64, BK], tl.float32)
    dwt = tl.zeros([64, BK], tl.float32)
    dP = tl.zeros([64, 64], tl.float32)
    dA = tl.zeros([64, 64], tl.float32)
    db = tl.zeros([64], tl.float32)
    for i_v in range(tl.cdiv(V, BV)):
        v0 = i_v * BV
        dqt, dP, dkt, dwt, dvn = _dqkw_accumulate(dqt, dP, dkt, dwt, h, dh, vnew, do, dvnew, tok, t0, T, 0, v0,
                                                  H, K, V, BK, BV, HALF_OPERANDS, PREC)  # fmt: skip
        # The WY backward's value side: dA's part dU (beta V)^T, dV = beta A^T dU and dbeta's part.
        vt = _tile(v + tok * V, t0, T, H * V, v0, V, 64, BV).to(F32)
        dA += _dot_in(dvn, tl.trans(vt * b[:, None]), HALF_WY & 8, PREC)
        dvb = _dot_in(AtT, dvn, HALF_WY & 1, PREC)
        db += tl.sum(dvb * vt, 1)
        _put(dv + tok * V, dvb * b[:, None], t0, T, H * V, v0, V, 64, BV)
    dP = tl.where(r[:, None] >= r[None, :], dP, 0.0) * scale
    qt = _tile(q + tok * K, t0, T, H * K, 0, K, 64, BK)
    kt = _tile(k + tok * K, t0, T, H * K, 0, K, 64, BK)
    dqt = dqt * scale + _dot_in(dP, kt, HALF_OPERANDS & 8, PREC)
    dkt += _dot_in(tl.trans(dP), qt, HALF_OPERANDS & 8, PREC)
    _put(dq + tok * K, dqt, t0, T, H * K, 0, K, 64, BK)
    # The WY backward's key side, from dW in registers.
    ktf = kt.to(F32)
    kb = ktf * b[:, None]
    dA += _dot_in(dwt, tl.trans(kb), HALF_WY & 8, PREC)
    dL = _wy_dl(AtT, dA, HALF_WY & 2, PREC)
    dkb = _dot_in(AtT, dwt, HALF_WY & 1, PREC) + _dot_in(dL, ktf, HALF_WY & 4, PREC)
    dkt += _dot_in(tl.trans(dL), kb, HALF_WY & 4, PREC) + dkb * b[:, None]
    db += tl.sum(dkb * ktf, 1)
    _put(dk + tok * K, dkt, t0, T, H * K, 0, K, 64, BK)
    rows = t0 + r
    tl.store(dbeta + tok + rows * H, db, mask=rows < T)


@triton.jit
def recurrent_fwd_kernel(
    q, k, v, beta, o, h0, ht, u, cu_seqlens, scale, T,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    USE_H0: tl.constexpr, STORE_U: tl.constexpr, IS_VARLEN: tl.constexpr, QK_L2NORM: tl.constexpr,
):  # fmt: skip
    """Token by token for one head and one value tile; the state stays in registers.

    h0 and ht may be the same tensor (the state is updated in place: each program reads its tile
    before it writes it). With STORE_U the written values u_t = beta (v_t - S^T k_t) are kept for the
    backward.
    """
    i_v, i_nh = tl.program_id(0), tl.program_id(1)
    i_n, i_h = i_nh // H, i_nh % H
    if IS_VARLEN:
        bos = tl.load(cu_seqlens + i_n).to(tl.int32)
        T = tl.load(cu_seqlens + i_n + 1).to(tl.int32) - bos
    else:
        bos = i_n * T
    rk = tl.arange(0, BK)
    rv = i_v * BV + tl.arange(0, BV)
    mk, mv = rk < K, rv < V
    S = tl.zeros([BK, BV], tl.float32)
    if USE_H0:
        S += _tile(h0 + i_nh * K * V, 0, K, V, i_v * BV, V, BK, BV)
    pk = (bos * H + i_h).to(tl.int64) * K + rk
    pv = (bos * H + i_h).to(tl.int64) * V + rv
    pb = (bos * H + i_h).to(tl.int64)
    for _ in range(T):
        kt = tl.load(k + pk, mask=mk, other=0.0).to(tl.float32)
        qt = tl.load(q + pk, mask=mk, other=0.0).to(tl.float32)
        if QK_L2NORM:
            kt = kt * tl.rsqrt(tl.sum(kt * kt, 0) + 1e-6)
            qt = qt * tl.rsqrt(tl.sum(qt * qt, 0) + 1e-6)
        qt = qt * scale
        vt = tl.load(v + pv, mask=mv, other=0.0).to(tl.float32)
        bt = tl.load(beta + pb).to(tl.float32)
        ut = bt * (vt - tl.sum(S * kt[:, None], 0))
        S += kt[:, None] * ut[None, :]
        tl.store(o + pv, tl.sum(S * qt[:, None], 0).to(o.dtype.element_ty), mask=mv)
        if STORE_U:
            tl.store(u + pv, ut, mask=mv)
        pk += H * K
        pv += H * V
        pb += H
    _put(ht + i_nh * K * V, S, 0, K, V, i_v * BV, V, BK, BV)


@triton.jit
def recurrent_bwd_kernel(
    q, k, v, beta, u, ht, do, dht, dq, dk, dv, dbeta, dh0, cu_seqlens, scale, T,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    USE_DHT: tl.constexpr, IS_VARLEN: tl.constexpr,
):  # fmt: skip
    """Reverse pass of the recurrence: S_{t-1} = S_t - k_t u_t^T is restored from the final state.

    dq, dk, dbeta are partial sums over this value tile ([NV, ...], float32); dv and dh0 are complete.
    """
    i_v, i_nh = tl.program_id(0), tl.program_id(1)
    i_n, i_h = i_nh // H, i_nh % H
    if IS_VARLEN:
        bos = tl.load(cu_seqlens + i_n).to(tl.int32)
        T = tl.load(cu_seqlens + i_n + 1).to(tl.int32) - bos
        total = tl.load(cu_seqlens + tl.num_programs(1) // H)
    else:
        bos = i_n * T
        total = tl.num_programs(1) // H * T
    rk = tl.arange(0, BK)
    rv = i_v * BV + tl.arange(0, BV)
    mk, mv = rk < K, rv < V
    S = _tile(ht + i_nh * K * V, 0, K, V, i_v * BV, V, BK, BV)
    dS = tl.zeros([BK, BV], tl.float32)
    if USE_DHT:
        dS += _tile(dht + i_nh * K * V, 0, K, V, i_v * BV, V, BK, BV)
    last = (bos + T - 1) * H + i_h
    pk = last.to(tl.int64) * K + rk
    pv = last.to(tl.int64) * V + rv
    pb = last.to(tl.int64)
    part = i_v.to(tl.int64) * total * H
    for _ in range(T):
        kt = tl.load(k + pk, mask=mk, other=0.0).to(tl.float32)
        qt = tl.load(q + pk, mask=mk, other=0.0).to(tl.float32) * scale
        vt = tl.load(v + pv, mask=mv, other=0.0).to(tl.float32)
        bt = tl.load(beta + pb).to(tl.float32)
        ut = tl.load(u + pv, mask=mv, other=0.0)
        dot_ = tl.load(do + pv, mask=mv, other=0.0).to(tl.float32)
        # o_t = S_t^T q_t
        tl.store(dq + part * K + pk, tl.sum(S * dot_[None, :], 1) * scale, mask=mk)
        dS += qt[:, None] * dot_[None, :]
        # S_t = S_{t-1} + k_t u_t^T
        du = tl.sum(dS * kt[:, None], 0)
        dkt = tl.sum(dS * ut[None, :], 1)
        S -= kt[:, None] * ut[None, :]
        # u_t = beta (v_t - S_{t-1}^T k_t)
        pred = tl.sum(S * kt[:, None], 0)
        dpred = -bt * du
        dkt += tl.sum(S * dpred[None, :], 1)
        dS += kt[:, None] * dpred[None, :]
        tl.store(dk + part * K + pk, dkt, mask=mk)
        tl.store(dv + pv, (bt * du).to(dv.dtype.element_ty), mask=mv)
        tl.store(dbeta + part + pb, tl.sum(du * (vt - pred), 0))
        pk -= H * K
        pv -= H * V
        pb -= H
    _put(dh0 + i_nh * K * V, dS, 0, K, V, i_v * BV, V, BK, BV)
