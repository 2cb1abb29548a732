"""RMSNorm and the gated RMSNorm of DeltaNet's output (normalise, then multiply by SiLU(gate))."""

import torch
import torch.nn.functional as F
from torch import nn


class RMSNorm(nn.Module):
    """y = x / sqrt(mean(x^2) + eps) * weight, over the last dimension, computed in float32."""

    def __init__(self, size: int, eps: float = 1e-6):
        super().__init__()
        if size <= 0:
            raise ValueError(f"RMSNorm: size must be positive, got {size}")
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == self.weight.dtype and not torch.is_autocast_enabled(x.device.type):
            # PyTorch's fused kernel (one pass forward, one backward; float32 sums for low-precision inputs):
            # the same numbers as the formula below, which runs six elementwise kernels and keeps their outputs.
            return F.rms_norm(x, (self.weight.shape[0],), self.weight, self.eps)
        x32 = x.float()
        y = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return (y * self.weight.float()).to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"


class GatedRMSNorm(RMSNorm):
    """RMSNorm(x) * SiLU(gate): the output gate of DeltaNet (gate has x's shape)."""

    def forward(self, x: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return (super().forward(x).float() * F.silu(gate.float())).to(x.dtype)
