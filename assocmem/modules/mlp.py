"""SwiGLU feed-forward block: down(SiLU(gate(x)) * up(x)), bias-free."""

import torch
import torch.nn.functional as F
from torch import nn


def swiglu_hidden_size(hidden_size: int, mlp_ratio: float, multiple_of: int) -> int:
    """The usual SwiGLU width: 2/3 of mlp_ratio * hidden (same parameters as a plain MLP), rounded up."""
    size = int(2 * hidden_size * mlp_ratio / 3)
    return multiple_of * ((size + multiple_of - 1) // multiple_of)


class _SiLUMul(torch.autograd.Function):
    """SiLU(g) * u, keeping g and u for the backward and forming SiLU(g) again there: autograd's form keeps
    SiLU(g) as well (one more [tokens, intermediate] tensor per block; the down projection keeps the product)."""

    @staticmethod
    def forward(ctx, g: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(g, u)
        return F.silu(g) * u

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        g, u = ctx.saved_tensors
        return torch.ops.aten.silu_backward(grad * u, g), grad * F.silu(g)


def silu_mul(g: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """F.silu(g) * u, with one tensor less kept for the backward (same shapes and dtypes required) in eager mode;
    under torch.compile the plain product, whose saved tensors the compiler plans itself (as l2norm.py's
    function: torch 2.11 compiled one of ours wrongly on the GPU)."""
    if g.shape != u.shape or g.dtype != u.dtype:
        raise ValueError(f"silu_mul: g and u must match, got {tuple(g.shape)} {g.dtype} and {tuple(u.shape)} {u.dtype}")
    if torch.compiler.is_compiling():
        return F.silu(g) * u
    return _SiLUMul.apply(g, u)


class SwiGLU(nn.Module):
    def __init__(self, hidden_size: int, intermediate_size: int):
        super().__init__()
        self.gate_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.up_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.down_proj = nn.Linear(intermediate_size, hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(silu_mul(self.gate_proj(x), self.up_proj(x)))
