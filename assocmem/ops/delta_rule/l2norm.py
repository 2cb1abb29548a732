"""L2 normalisation of q and k for the Triton path, keeping only what its backward needs.

`naive.l2_normalize` is the specification: y = x / sqrt(sum(x^2) + eps) over the last dimension. Through
autograd, its float32 form keeps a float32 copy of x (4 bytes an element) for the backward, on top of the
normalised q and k that the delta rule keeps anyway. Here the math is the same float32 forward, the result is
returned in x's dtype, and the backward uses only that result y and r = 1 / sqrt(sum(x^2) + eps):

    dx = r (g - y (g . y))

so nothing is kept that the delta rule does not keep already (y is the tensor the kernels receive), plus one
float32 number per row. For bfloat16 inputs the backward reads y rounded to bfloat16, a relative error of
about 2^-9 in dx, the size of dx's own rounding to bfloat16.
"""

import torch

from . import naive


class _L2Normalize(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, eps: float) -> torch.Tensor:
        x32 = x if x.dtype == torch.float64 else x.float()
        r = torch.rsqrt(x32.square().sum(-1, keepdim=True) + eps)
        y = (x32 * r).to(x.dtype)
        ctx.save_for_backward(y, r)
        return y

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        y, r = ctx.saved_tensors
        y32, g32 = y.to(r.dtype), g.to(r.dtype)
        dx = r * (g32 - y32 * (g32 * y32).sum(-1, keepdim=True))
        return dx.to(y.dtype), None


def l2_normalize_keeping_output(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """`naive.l2_normalize(x.float(), eps).to(x.dtype)`, whose backward keeps only the output (and a number
    per row) in eager mode. Under torch.compile it is that plain form, whose saved tensors the compiler plans
    itself: torch 2.11's compiled graph of the autograd function gave its input a zero gradient on the GPU
    (benchmarks/results/l2norm_compile_h200.log)."""
    if torch.compiler.is_compiling():
        return naive.l2_normalize(x.float(), eps).to(x.dtype)
    return _L2Normalize.apply(x, eps)
