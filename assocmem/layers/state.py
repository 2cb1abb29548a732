"""Per-layer decoding state: what a layer keeps between calls when generating token by token.

A layer reads its state from the previous call and returns the new one; the model's cache holds one
state per layer. `select(index)` picks rows of the batch (beam search reorders with it).
"""

from dataclasses import dataclass, fields

import torch


@dataclass
class _State:
    def select(self, index: torch.Tensor) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, torch.Tensor):
                setattr(self, f.name, value.index_select(0, index.to(value.device)))


@dataclass
class DeltaNetState(_State):
    """recurrent [B, H, K, V] float32; conv_q/conv_k [B, H*K, W-1], conv_v [B, H*V, W-1] (None without conv)."""

    recurrent: torch.Tensor
    conv_q: torch.Tensor | None = None
    conv_k: torch.Tensor | None = None
    conv_v: torch.Tensor | None = None


@dataclass
class AttentionState(_State):
    """Keys and values [B, S, G, D] after rotary; for a sliding window only the last window_size - 1."""

    key: torch.Tensor
    value: torch.Tensor
