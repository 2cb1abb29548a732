"""Argument checks for `delta_rule`: every message names the argument, what was expected and what came."""

import math

import torch

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
BACKENDS = ("auto", "triton", "triton_recurrent", "chunk", "naive")
# Beyond 256 the state kernels' [K, BV] register tile and [64, K] shared-memory tiles no longer fit (NOTES.md, v5).
TRITON_MAX_HEAD_SIZE = 256


def _shape(x: torch.Tensor) -> list[int]:
    return list(x.shape)


def check_inputs(q, k, v, beta, scale, initial_state, cu_seqlens, backend, chunk_size, chunk_sizes):
    """Raise TypeError / ValueError on bad input; returns N, the number of sequences."""
    for name, x in (("q", q), ("k", k), ("v", v), ("beta", beta)):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"delta_rule: `{name}` must be a torch.Tensor, got {type(x).__name__}")
        if x.dtype not in FLOAT_DTYPES:
            raise TypeError(f"delta_rule: `{name}` must be float16, bfloat16, float32 or float64, got {x.dtype}")
    if q.dim() != 4:
        raise ValueError(f"delta_rule: `q` must be 4-D [B, T, H, K], got shape {_shape(q)}")
    B, T, H, K = q.shape
    if k.shape != q.shape:
        raise ValueError(f"delta_rule: `k` must have q's shape [B, T, H, K] = {_shape(q)}, got {_shape(k)}")
    if v.dim() != 4 or v.shape[:3] != q.shape[:3]:
        raise ValueError(f"delta_rule: `v` must have shape [B, T, H, V] = [{B}, {T}, {H}, V], got {_shape(v)}")
    if beta.shape != q.shape[:3]:
        raise ValueError(f"delta_rule: `beta` must have shape [B, T, H] = [{B}, {T}, {H}], got {_shape(beta)}")
    if K == 0 or v.shape[3] == 0:
        raise ValueError(f"delta_rule: head sizes must be positive, got K = {K}, V = {v.shape[3]}")
    if k.dtype != q.dtype or v.dtype != q.dtype:
        raise TypeError(f"delta_rule: `q`, `k`, `v` must share one dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    for name, x in (("k", k), ("v", v), ("beta", beta), ("initial_state", initial_state), ("cu_seqlens", cu_seqlens)):
        if isinstance(x, torch.Tensor) and x.device != q.device:
            raise ValueError(f"delta_rule: `{name}` is on {x.device} but `q` is on {q.device}")
    if scale is not None and (not isinstance(scale, (int, float)) or not math.isfinite(scale)):
        raise TypeError(f"delta_rule: `scale` must be a finite number or None, got {scale!r}")
    if backend not in BACKENDS:
        raise ValueError(f"delta_rule: `backend` must be one of {BACKENDS}, got {backend!r}")
    if chunk_size not in chunk_sizes:
        raise ValueError(f"delta_rule: `chunk_size` must be one of {chunk_sizes}, got {chunk_size!r}")

    N = B
    if cu_seqlens is not None:
        N = _check_cu_seqlens(cu_seqlens, B, T)
    if initial_state is not None:
        if not isinstance(initial_state, torch.Tensor):
            raise TypeError(
                f"delta_rule: `initial_state` must be a torch.Tensor or None, got {type(initial_state).__name__}"
            )
        expected = [N, H, K, v.shape[3]]
        if _shape(initial_state) != expected:
            raise ValueError(
                f"delta_rule: `initial_state` must have shape [N, H, K, V] = {expected}, got {_shape(initial_state)}"
            )
        if initial_state.dtype not in FLOAT_DTYPES:
            raise TypeError(f"delta_rule: `initial_state` must be a float tensor, got {initial_state.dtype}")
    return N


def _check_cu_seqlens(cu_seqlens, B, T):
    if not isinstance(cu_seqlens, torch.Tensor):
        raise TypeError(f"delta_rule: `cu_seqlens` must be a torch.Tensor or None, got {type(cu_seqlens).__name__}")
    if cu_seqlens.dtype not in (torch.int32, torch.int64):
        raise TypeError(f"delta_rule: `cu_seqlens` must be int32 or int64, got {cu_seqlens.dtype}")
    if cu_seqlens.dim() != 1 or cu_seqlens.shape[0] < 2:
        raise ValueError(f"delta_rule: `cu_seqlens` must be 1-D [N + 1] with N >= 1, got shape {_shape(cu_seqlens)}")
    if B != 1:
        raise ValueError(
            f"delta_rule: with `cu_seqlens` the batch size must be 1 (sequences packed along T), got B = {B}"
        )
    if not torch.compiler.is_compiling():
        bounds = cu_seqlens.tolist()
        if bounds[0] != 0:
            raise ValueError(f"delta_rule: `cu_seqlens` must start at 0, got {bounds[0]}")
        if any(b < a for a, b in zip(bounds, bounds[1:])):
            raise ValueError(f"delta_rule: `cu_seqlens` must be non-decreasing, got {bounds}")
        if bounds[-1] != T:
            raise ValueError(f"delta_rule: `cu_seqlens[-1]` must equal T = {T} (the packed length), got {bounds[-1]}")
    return cu_seqlens.shape[0] - 1


def check_triton(q, v, backend, chunk_size, available):
    """What the Triton backends need beyond `check_inputs`; each message says which backend would do."""
    if not available:
        raise ValueError(
            f"delta_rule: backend={backend!r} needs Triton and a CUDA device (or TRITON_INTERPRET=1 on the CPU); "
            f"`q` is on {q.device}. backend='chunk' runs anywhere"
        )
    if q.dtype == torch.float64:
        raise TypeError(f"delta_rule: backend={backend!r} takes float32, bfloat16 or float16 `q`, got float64; "
                        "backend='chunk' computes in float64")  # fmt: skip
    K, V = q.shape[-1], v.shape[-1]
    if max(K, V) > TRITON_MAX_HEAD_SIZE:
        raise ValueError(
            f"delta_rule: backend={backend!r} takes head sizes up to {TRITON_MAX_HEAD_SIZE}, got K = {K}, V = {V}; "
            "backend='chunk' takes any"
        )
    if backend == "triton" and chunk_size != 64:
        raise ValueError(f"delta_rule: backend='triton' uses chunks of 64, got `chunk_size` = {chunk_size}; "
                         "other chunk sizes are the 'chunk' backend's")  # fmt: skip
