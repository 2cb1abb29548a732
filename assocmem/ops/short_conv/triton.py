"""The short convolution as two Triton kernels: the forward (taps and SiLU in one pass, float32 sums) and the
backward (the pre-activation recomputed, dx and per-tile partial sums of dweight in one pass). The unfused form
(naive.py) runs 2W + 1 elementwise kernels forward and about three times as many backward, each a full pass
over [B, T, C]; these read x (and dy) once from memory and write y (dx) once.

Legend as in naive.py; BT x BC: a program's tile of tokens and channels. Offsets into [B, T, C] are int64, so
tensors past 2^31 elements are addressed correctly.
"""

import torch
import triton
import triton.language as tl

from ..delta_rule.triton import on_input_device

# 16 x 128 tiles over 8 warps (8 elements a thread per tile): the backward, which holds the recomputed
# pre-activation of W shifted windows, builds for sm_90 without spilling (182 registers, 226 with positions:
# scripts/smem_check.py --short-conv, benchmarks/results/smem_short_conv_v20.txt); 32 x 128 tiles over 4 warps
# spilled in the same check.
BLOCK_T, BLOCK_C, WARPS = 16, 128, 8


@triton.jit
def _tap(x, h, pos, b, rows, cols, j, T, C, W: tl.constexpr, HAS_H: tl.constexpr, HAS_POS: tl.constexpr):
    """x_{t-j} for the rows t (float32; zero before the history, past T, or across a sequence boundary)."""
    src = rows - j
    inside = (rows < T) & (rows >= 0)
    col_ok = cols < C
    value = tl.load(x + (b * T + src).to(tl.int64)[:, None] * C + cols[None, :],
                    mask=(inside & (src >= 0))[:, None] & col_ok[None, :], other=0.0).to(tl.float32)
    if HAS_H:
        value += tl.load(h + (b * (W - 1) + (W - 1) + src).to(tl.int64)[:, None] * C + cols[None, :],
                         mask=(inside & (src < 0))[:, None] & col_ok[None, :], other=0.0).to(tl.float32)
    if HAS_POS:
        p = tl.load(pos + rows, mask=inside, other=0)
        value = tl.where((p >= j)[:, None], value, 0.0)
    return value


@triton.jit
def _pre(x, w, h, pos, b, rows, cols, T, C, W: tl.constexpr, HAS_H: tl.constexpr, HAS_POS: tl.constexpr):
    """sum_j w[:, W-1-j] x_{t-j} for the rows t, in float32."""
    acc = tl.zeros((rows.shape[0], cols.shape[0]), dtype=tl.float32)
    for j in tl.static_range(W):
        wj = tl.load(w + cols * W + (W - 1 - j), mask=cols < C, other=0.0).to(tl.float32)
        acc += _tap(x, h, pos, b, rows, cols, j, T, C, W, HAS_H, HAS_POS) * wj[None, :]
    return acc


@triton.jit
def short_conv_fwd_kernel(x, w, h, pos, y, T, C, W: tl.constexpr, BT: tl.constexpr, BC: tl.constexpr,
                          HAS_H: tl.constexpr, HAS_POS: tl.constexpr, SILU: tl.constexpr):  # fmt: skip
    it, ic, b = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    rows = it * BT + tl.arange(0, BT)
    cols = ic * BC + tl.arange(0, BC)
    acc = _pre(x, w, h, pos, b, rows, cols, T, C, W, HAS_H, HAS_POS)
    if SILU:
        acc = acc * tl.sigmoid(acc)
    mask = (rows < T)[:, None] & (cols < C)[None, :]
    tl.store(y + (b * T + rows).to(tl.int64)[:, None] * C + cols[None, :], acc.to(y.dtype.element_ty), mask=mask)


@triton.jit
def short_conv_bwd_kernel(x, w, h, pos, dy, dx, dw, T, C, W: tl.constexpr, BT: tl.constexpr, BC: tl.constexpr,
                          HAS_H: tl.constexpr, HAS_POS: tl.constexpr, SILU: tl.constexpr):  # fmt: skip
    """dx_t = sum_j w[:, W-1-j] g_{t+j} (tap j of row t + j, where it was not cut), g = dy * act'(pre);
    dw[tile, c, W-1-j] = sum over the tile's rows t of g_t x_{t-j}."""
    it, ic, b = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    rows = it * BT + tl.arange(0, BT)
    cols = ic * BC + tl.arange(0, BC)
    col_ok = cols < C
    dx_acc = tl.zeros((BT, BC), dtype=tl.float32)
    for j in tl.static_range(W):
        out_rows = rows + j  # the rows whose tap j reads x_t
        live = (out_rows < T)[:, None] & col_ok[None, :]
        g = tl.load(dy + (b * T + out_rows).to(tl.int64)[:, None] * C + cols[None, :], mask=live, other=0.0)
        g = g.to(tl.float32)
        if SILU:
            pre = _pre(x, w, h, pos, b, out_rows, cols, T, C, W, HAS_H, HAS_POS)
            sig = tl.sigmoid(pre)
            g = g * sig * (1.0 + pre * (1.0 - sig))
        if j == 0:  # this tile's own rows: the weight's partial sums
            for i in tl.static_range(W):
                part = tl.sum(g * _tap(x, h, pos, b, rows, cols, i, T, C, W, HAS_H, HAS_POS), axis=0)
                tile = (b * tl.num_programs(0) + it).to(tl.int64)
                tl.store(dw + (tile * C + cols) * W + (W - 1 - i), part, mask=col_ok)
        if HAS_POS:
            p = tl.load(pos + out_rows, mask=out_rows < T, other=0)
            g = tl.where((p >= j)[:, None], g, 0.0)
        wj = tl.load(w + cols * W + (W - 1 - j), mask=col_ok, other=0.0).to(tl.float32)
        dx_acc += g * wj[None, :]
    mask = (rows < T)[:, None] & col_ok[None, :]
    tl.store(dx + (b * T + rows).to(tl.int64)[:, None] * C + cols[None, :], dx_acc.to(dx.dtype.element_ty),
             mask=mask)


def _grid(B, T, C):
    return (triton.cdiv(T, BLOCK_T), triton.cdiv(C, BLOCK_C), B)


@on_input_device
def _forward(x, weight, history, positions, silu: bool):
    B, T, C = x.shape
    y = torch.empty_like(x)
    dummy = x  # an unused pointer argument where a tensor is absent
    short_conv_fwd_kernel[_grid(B, T, C)](
        x, weight, dummy if history is None else history, dummy if positions is None else positions, y, T, C,
        W=weight.shape[1], BT=BLOCK_T, BC=BLOCK_C, HAS_H=history is not None, HAS_POS=positions is not None,
        SILU=silu, num_warps=WARPS)  # fmt: skip
    return y


@on_input_device
def _backward(x, weight, history, positions, dy, silu: bool):
    B, T, C = x.shape
    W = weight.shape[1]
    grid = _grid(B, T, C)
    dx = torch.empty_like(x)
    dw_tiles = torch.empty(B * grid[0], C, W, device=x.device, dtype=torch.float32)
    dummy = x
    short_conv_bwd_kernel[grid](
        x, weight, dummy if history is None else history, dummy if positions is None else positions, dy, dx,
        dw_tiles, T, C, W=W, BT=BLOCK_T, BC=BLOCK_C, HAS_H=history is not None, HAS_POS=positions is not None,
        SILU=silu, num_warps=WARPS)  # fmt: skip
    return dx, dw_tiles.sum(0).to(weight.dtype)


class ShortConvFunction(torch.autograd.Function):
    """Triton forward and backward; the history (if any) gets no gradient (the caller checks)."""

    @staticmethod
    def forward(ctx, x, weight, history, positions, silu):
        x, weight = x.contiguous(), weight.contiguous()
        history = None if history is None else history.to(x.dtype).contiguous()
        positions = None if positions is None else positions.to(torch.int32).contiguous()
        ctx.save_for_backward(x, weight, history, positions)
        ctx.silu = silu
        return _forward(x, weight, history, positions, silu)

    @staticmethod
    def backward(ctx, dy):
        x, weight, history, positions = ctx.saved_tensors
        dx, dw = _backward(x, weight, history, positions, dy.contiguous(), ctx.silu)
        return dx, dw, None, None, None


def short_conv_triton(x, weight, history=None, positions=None, activation="silu"):
    return ShortConvFunction.apply(x, weight, history, positions, activation == "silu")
