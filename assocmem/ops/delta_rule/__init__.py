"""The delta rule: linear attention whose fast-weight state is updated by the delta rule."""

import warnings

import torch

from . import triton as _triton
from .chunk import CHUNK_SIZES, chunk_delta_rule
from .l2norm import l2_normalize_keeping_output
from .naive import l2_normalize, naive_delta_rule
from .recurrent import delta_rule_step
from .validate import TRITON_MAX_HEAD_SIZE, check_inputs, check_triton

_announced_fallback: set[str] = set()


def _pick_backend(backend: str, q: torch.Tensor, v: torch.Tensor) -> str:
    if backend != "auto":
        return backend
    if q.device.type != "cuda":
        return "chunk"
    reason = None
    if not _triton.available(q.device):
        reason = "Triton is not installed"
    elif q.dtype == torch.float64:
        reason = "the Triton kernels take float32, bfloat16 and float16, not float64"
    elif max(q.shape[-1], v.shape[-1]) > TRITON_MAX_HEAD_SIZE:
        reason = f"the Triton kernels take head sizes up to {TRITON_MAX_HEAD_SIZE}"
    if reason is None:
        return "triton"
    if reason not in _announced_fallback:
        warnings.warn(f"delta_rule: {reason}; backend='auto' uses the PyTorch chunk backend", stacklevel=3)
        _announced_fallback.add(reason)
    return "chunk"


def delta_rule(
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
    backend: str = "auto",
    chunk_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Linear attention with the delta-rule state update, over whole sequences.

    For each head, with state S [K, V] starting at `initial_state` (zeros if None):

        S_t = S_{t-1} + beta_t k_t (v_t - S_{t-1}^T k_t)^T,    o_t = S_t^T (scale * q_t)

    Args:
        q, k: [B, T, H, K] queries and keys (float16, bfloat16, float32 or float64, one dtype with v).
        v: [B, T, H, V] values.
        beta: [B, T, H] writing strengths, usually in (0, 1) (in (0, 2) to allow negative eigenvalues).
        scale: multiplies q; defaults to K ** -0.5.
        initial_state: [N, H, K, V] state before the first token; N = B, or the number of sequences
            when `cu_seqlens` is given. Any float dtype; the state is kept in float32.
        output_final_state: also return the state after the last token, [N, H, K, V] float32.
        cu_seqlens: int32/int64 [N + 1] offsets of N sequences packed along T (B must be 1):
            sequence n is tokens cu_seqlens[n]:cu_seqlens[n + 1]; no state crosses a boundary.
        qk_l2norm: L2-normalise q and k over their last dimension first (in float32).
        backend: "auto" (the Triton kernels on CUDA, else the PyTorch chunk path), "triton" (the
            chunkwise algorithm in Triton kernels; CUDA, head sizes up to 256, not float64),
            "triton_recurrent" (the fused token-by-token kernel, for decoding and short sequences),
            "chunk" (the chunkwise WY/UT algorithm in PyTorch, any device) or "naive" (the
            step-by-step specification, slow).
        chunk_size: chunk length of the PyTorch chunk backend, one of 16, 32, 64, 128 (the Triton
            kernels always use 64).

    Returns:
        (o [B, T, H, V] in v's dtype, final state [N, H, K, V] float32 or None).
        Gradients flow to q, k, v, beta and initial_state on every backend; float64 inputs are
        computed in float64 throughout (for gradient checks).

    Example:
        >>> B, T, H, K, V = 2, 128, 4, 32, 32
        >>> q, k, v = torch.randn(B, T, H, K), torch.randn(B, T, H, K), torch.randn(B, T, H, V)
        >>> beta = torch.rand(B, T, H)
        >>> o, state = delta_rule(q, k, v, beta, qk_l2norm=True, output_final_state=True)
        >>> o.shape, state.shape
        (torch.Size([2, 128, 4, 32]), torch.Size([2, 4, 32, 32]))
    """
    check_inputs(q, k, v, beta, scale, initial_state, cu_seqlens, backend, chunk_size, CHUNK_SIZES)
    if scale is None:
        scale = q.shape[-1] ** -0.5
    backend = _pick_backend(backend, q, v)
    if backend.startswith("triton"):
        check_triton(q, v, backend, chunk_size, _triton.available(q.device))
    if qk_l2norm and backend.startswith("triton") and q.dtype == v.dtype and k.dtype == v.dtype:
        # The kernels take q and k in v's dtype: normalised in float32 and rounded back, keeping for the
        # backward only the result, which the kernels keep anyway (l2norm.py).
        q, k = l2_normalize_keeping_output(q), l2_normalize_keeping_output(k)
    elif qk_l2norm:
        math_dtype = torch.float64 if q.dtype == torch.float64 else torch.float32
        q, k = l2_normalize(q.to(math_dtype)), l2_normalize(k.to(math_dtype))
    # The op chooses its own precisions (state math in float32); an enclosing autocast must not recast them.
    with torch.autocast(q.device.type, enabled=False):
        return _run(q, k, v, beta, scale, initial_state, output_final_state, cu_seqlens, backend, chunk_size)


def _run(q, k, v, beta, scale, initial_state, output_final_state, cu_seqlens, backend, chunk_size):
    if backend == "naive":
        compute_dtype = torch.float64 if v.dtype == torch.float64 else torch.float32
        return naive_delta_rule(
            q,
            k,
            v,
            beta,
            scale=scale,
            initial_state=initial_state,
            output_final_state=output_final_state,
            cu_seqlens=cu_seqlens,
            compute_dtype=compute_dtype,
        )
    if backend.startswith("triton"):
        # The kernels take one input dtype, v's (the output's): q and k normalised in float32 above are
        # rounded back to it, as the projections that made them were.
        q, k, beta = q.to(v.dtype), k.to(v.dtype), beta.to(v.dtype)
    if backend == "triton":
        from .triton.chunk import triton_chunk_delta_rule

        o, final_state = triton_chunk_delta_rule(q, k, v, beta, float(scale), initial_state, cu_seqlens)
        return o, (final_state if output_final_state else None)
    if backend == "triton_recurrent":
        from .triton.recurrent import triton_recurrent_delta_rule

        o, final_state = triton_recurrent_delta_rule(q, k, v, beta, float(scale), initial_state, cu_seqlens)
        return o, (final_state if output_final_state else None)
    o, final_state = chunk_delta_rule(q, k, v, beta, float(scale), initial_state, cu_seqlens, chunk_size)
    return o, (final_state if output_final_state else None)


__all__ = ["delta_rule", "delta_rule_step", "naive_delta_rule", "l2_normalize", "CHUNK_SIZES"]
