"""The short causal depthwise convolution, as a sum of W shifted copies (the specification; CPU and compiled
graphs use it, where torch.compile fuses the shifts into one kernel for the forward and one for the backward).

Legend: B batch, T tokens, C channels, W kernel width. Tap j reads x_{t-j} with weight[:, W - 1 - j].
"""

import torch
import torch.nn.functional as F


def short_conv_naive(
    x_BTC: torch.Tensor,
    weight_CW: torch.Tensor,
    history_BHC: torch.Tensor | None = None,
    positions_T: torch.Tensor | None = None,
    activation: str | None = "silu",
) -> torch.Tensor:
    """y_t = act(sum_j weight[:, W-1-j] * x_{t-j}) over j < W, per channel, in x's dtype.

    history_BHC [B, W - 1, C]: the inputs before x, oldest first (zeros when None). positions_T [T] (packed
    sequences): each token's index within its own sequence; tap j is cut where it is below j, so no tap
    reaches across a sequence boundary."""
    B, T, C = x_BTC.shape
    W = weight_CW.shape[1]
    if history_BHC is None:
        history_BHC = x_BTC.new_zeros(B, W - 1, C)
    full = torch.cat([history_BHC.to(x_BTC.dtype), x_BTC], dim=1)  # [B, W - 1 + T, C]
    pos = None if positions_T is None else positions_T[None, :, None]
    weight = weight_CW.to(x_BTC.dtype)
    y = full[:, W - 1 :] * weight[:, W - 1]
    for j in range(1, W):
        tap = full[:, W - 1 - j : W - 1 - j + T] * weight[:, W - 1 - j]
        y = y + (tap if pos is None else tap * (pos >= j).to(x_BTC.dtype))
    return F.silu(y) if activation == "silu" else y
