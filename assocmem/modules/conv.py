"""Short causal depthwise convolution with a state for step-by-step decoding.

Legend: B batch, T new tokens, C channels, W kernel width. The state holds the last W - 1 inputs
[B, C, W - 1], oldest first, so that decoding one token at a time equals one pass over the sequence.
"""

import torch
import torch.nn.functional as F
from torch import nn


def positions_in_sequence(cu_seqlens: torch.Tensor, total: int) -> torch.Tensor:
    """[total] int64: for packed sequences, the index of each token within its own sequence."""
    lengths = (cu_seqlens[1:] - cu_seqlens[:-1]).long()
    starts = cu_seqlens[:-1].long()
    return torch.arange(total, device=cu_seqlens.device) - torch.repeat_interleave(starts, lengths, output_size=total)


class ShortConvolution(nn.Module):
    """y_t = act(sum_j w_j * x_{t-j}), j < W, per channel; no bias.

    forward(x [B, T, C], state=None, cu_seqlens=None, mask=None) -> (y [B, T, C], new_state [B, C, W-1]).
    `state` holds the inputs before x (zeros when None). With `cu_seqlens` (B = 1), taps never reach
    across a sequence boundary. `mask` [B, T] (1 = token, 0 = padding) zeroes padded inputs, so left
    padding acts like an empty history and right padding cannot reach earlier tokens.
    """

    def __init__(self, channels: int, kernel_size: int = 4, activation: str | None = "silu"):
        super().__init__()
        if kernel_size < 1:
            raise ValueError(f"ShortConvolution: kernel_size must be >= 1, got {kernel_size}")
        if activation not in (None, "silu"):
            raise ValueError(f"ShortConvolution: activation must be None or 'silu', got {activation!r}")
        self.channels, self.kernel_size, self.activation = channels, kernel_size, activation
        self.weight = nn.Parameter(torch.empty(channels, kernel_size))
        nn.init.uniform_(self.weight, -kernel_size**-0.5, kernel_size**-0.5)

    def extra_repr(self) -> str:
        return f"{self.channels}, kernel_size={self.kernel_size}, activation={self.activation}"

    def forward(
        self,
        x_BTC: torch.Tensor,
        state_BCW: torch.Tensor | None = None,
        cu_seqlens: torch.Tensor | None = None,
        mask_BT: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        B, T, C = x_BTC.shape
        W = self.kernel_size
        if mask_BT is not None:
            x_BTC = x_BTC * mask_BT[..., None].to(x_BTC.dtype)
        if state_BCW is None:
            history = x_BTC.new_zeros(B, W - 1, C)
        else:
            history = state_BCW.transpose(1, 2).to(x_BTC.dtype)
        full = torch.cat([history, x_BTC], dim=1)  # [B, W - 1 + T, C]
        if T == 1 and cu_seqlens is None:
            # Decoding: one dot product per channel; cheaper than a conv1d call.
            y = torch.einsum("bwc,cw->bc", full, self.weight.to(x_BTC.dtype))[:, None]
        else:
            # A sum of W shifted copies: elementwise work that torch.compile fuses into one kernel for the
            # forward and one for the backward (a grouped conv1d ran as depthwise-conv2d kernels, ~9 % of
            # a DeltaNet training step on an H200, eager). Tap j reads x_{t-j}; with cu_seqlens it is cut where
            # t - j falls before the start of t's sequence.
            pos = positions_in_sequence(cu_seqlens, T)[None, :, None] if cu_seqlens is not None else None
            weight = self.weight.to(x_BTC.dtype)
            y = full[:, W - 1 :] * weight[:, W - 1]
            for j in range(1, W):
                tap = full[:, W - 1 - j : W - 1 - j + T] * weight[:, W - 1 - j]
                y = y + (tap if pos is None else tap * (pos >= j).to(x_BTC.dtype))
        if self.activation == "silu":
            y = F.silu(y)
        new_state = full[:, full.shape[1] - (W - 1) :].transpose(1, 2)
        return y, new_state
