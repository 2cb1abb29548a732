"""Rotary position embeddings (the rotate-half form), applied to [B, T, H, D] queries or keys."""

import torch
from torch import nn


class RotaryEmbedding(nn.Module):
    """cos/sin tables for given positions; `apply_rotary` rotates pairs (x_i, x_{i + D/2})."""

    def __init__(self, head_dim: int, theta: float = 10000.0):
        super().__init__()
        if head_dim % 2:
            raise ValueError(f"RotaryEmbedding: head_dim must be even, got {head_dim}")
        if theta <= 0:
            raise ValueError(f"RotaryEmbedding: theta must be positive, got {theta}")
        self.head_dim, self.theta = head_dim, theta

    def forward(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """positions [B, T] or [T] (int) -> cos, sin [B or 1, T, 1, D] in float32."""
        if positions.dim() == 1:
            positions = positions[None]
        # Computed per call (D/2 numbers), not kept as a buffer: checkpoint loaders that build the
        # model on the meta device would otherwise leave a non-persistent buffer empty.
        exponents = torch.arange(0, self.head_dim, 2, dtype=torch.float32, device=positions.device) / self.head_dim
        inv_freq = 1.0 / self.theta**exponents
        angles = positions.float()[..., None] * inv_freq  # [B, T, D/2]
        angles = torch.cat([angles, angles], dim=-1)[:, :, None, :]
        return angles.cos(), angles.sin()


def apply_rotary(x_BTHD: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    x = x_BTHD.float()
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return (x * cos + rotated * sin).to(x_BTHD.dtype)
