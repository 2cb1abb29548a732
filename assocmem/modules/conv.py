"""Short causal depthwise convolution with a state for step-by-step decoding.

Legend: B batch, T new tokens, C channels, W kernel width. The state holds the last W - 1 inputs
[B, C, W - 1], oldest first, so that decoding one token at a time equals one pass over the sequence.
"""

import torch
import torch.nn.functional as F
from torch import nn

from ..ops.short_conv import BACKENDS, short_conv


def positions_in_sequence(cu_seqlens: torch.Tensor, total: int) -> torch.Tensor:
    """[total] int64: for packed sequences, the index of each token within its own sequence."""
    lengths = (cu_seqlens[1:] - cu_seqlens[:-1]).long()
    starts = cu_seqlens[:-1].long()
    return torch.arange(total, device=cu_seqlens.device) - torch.repeat_interleave(starts, lengths, output_size=total)


class ShortConvolution(nn.Module):
    """y_t = act(sum_j w_j * x_{t-j}), j < W, per channel; no bias (the op: `assocmem.ops.short_conv`).

    forward(x [B, T, C], state=None, cu_seqlens=None, mask=None) -> (y [B, T, C], new_state [B, C, W-1]).
    `state` holds the inputs before x (zeros when None). With `cu_seqlens` (B = 1), taps never reach
    across a sequence boundary. `mask` [B, T] (1 = token, 0 = padding) zeroes padded inputs, so left
    padding acts like an empty history and right padding cannot reach earlier tokens. `backend`: the op's
    ("auto", "triton" or "torch"; see assocmem.ops.short_conv).
    """

    def __init__(self, channels: int, kernel_size: int = 4, activation: str | None = "silu", backend: str = "auto"):
        super().__init__()
        if kernel_size < 1:
            raise ValueError(f"ShortConvolution: kernel_size must be >= 1, got {kernel_size}")
        if activation not in (None, "silu"):
            raise ValueError(f"ShortConvolution: activation must be None or 'silu', got {activation!r}")
        if backend not in BACKENDS:
            raise ValueError(f"ShortConvolution: backend must be one of {BACKENDS}, got {backend!r}")
        self.channels, self.kernel_size, self.activation = channels, kernel_size, activation
        self.backend = backend
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
        history = None if state_BCW is None else state_BCW.transpose(1, 2).to(x_BTC.dtype)  # [B, W - 1, C]
        full = None  # history and x in one tensor: for the decoding step, and for the new state when T < W - 1
        if T < W - 1 or (T == 1 and cu_seqlens is None):
            full = torch.cat([x_BTC.new_zeros(B, W - 1, C) if history is None else history, x_BTC], dim=1)
        if T == 1 and cu_seqlens is None:
            # Decoding: one dot product per channel; cheaper than a kernel launch per tap.
            y = torch.einsum("bwc,cw->bc", full, self.weight.to(x_BTC.dtype))[:, None]
            y = F.silu(y) if self.activation == "silu" else y
        else:
            # ops.short_conv: the shifted-sum form (torch.compile fuses it) or two Triton kernels. With cu_seqlens
            # no tap reaches across a sequence boundary.
            pos = positions_in_sequence(cu_seqlens, T) if cu_seqlens is not None else None
            y = short_conv(x_BTC, self.weight, history, pos, self.activation, self.backend)
        # The last W - 1 inputs (oldest first), from x alone where it is long enough.
        new_state = (x_BTC if full is None else full)[:, -(W - 1) :] if W > 1 else x_BTC[:, T:]
        return y, new_state.transpose(1, 2)
