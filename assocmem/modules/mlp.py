"""SwiGLU feed-forward block: down(SiLU(gate(x)) * up(x)), bias-free."""

import torch
import torch.nn.functional as F
from torch import nn


def swiglu_hidden_size(hidden_size: int, mlp_ratio: float, multiple_of: int) -> int:
    """The usual SwiGLU width: 2/3 of mlp_ratio * hidden (same parameters as a plain MLP), rounded up."""
    size = int(2 * hidden_size * mlp_ratio / 3)
    return multiple_of * ((size + multiple_of - 1) // multiple_of)


class SwiGLU(nn.Module):
    def __init__(self, hidden_size: int, intermediate_size: int):
        super().__init__()
        self.gate_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.up_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.down_proj = nn.Linear(intermediate_size, hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))
