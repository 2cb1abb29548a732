"""Causal softmax attention layer: rotary embeddings, grouped key/value heads, optional sliding window.

Legend: B batch, T new tokens, S keys (cached + new), H query heads, G key/value heads, D head size.
"""

import torch
from torch import nn

from ..modules import RotaryEmbedding, apply_rotary
from ..ops.attention import causal_attention
from .state import AttentionState


class Attention(nn.Module):
    """Multi-head causal attention (global, or sliding-window when `window_size` is set) with a KV cache.

    forward(x [B, T, hidden], positions [B or 1, T], attention_mask [B, S] (1 = token; covers cached and
    new tokens), cu_seqlens (packed, B = 1), state, use_cache) -> (y [B, T, hidden], new state or None).
    With a window, the cache rolls: it keeps only the last window_size - 1 keys and values.
    """

    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        num_kv_heads: int | None = None,
        window_size: int | None = None,
        rope_theta: float = 10000.0,
    ):
        super().__init__()
        num_kv_heads = num_heads if num_kv_heads is None else num_kv_heads
        if hidden_size % num_heads:
            raise ValueError(f"Attention: num_heads ({num_heads}) must divide hidden_size ({hidden_size})")
        if num_heads % num_kv_heads:
            raise ValueError(f"Attention: num_kv_heads ({num_kv_heads}) must divide num_heads ({num_heads})")
        if window_size is not None and window_size <= 0:
            raise ValueError(f"Attention: window_size must be a positive int or None, got {window_size}")
        self.hidden_size, self.num_heads, self.num_kv_heads = hidden_size, num_heads, num_kv_heads
        self.head_dim = hidden_size // num_heads
        self.window_size = window_size
        self.q_proj = nn.Linear(hidden_size, num_heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(hidden_size, num_kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(hidden_size, num_kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(num_heads * self.head_dim, hidden_size, bias=False)
        self.rotary = RotaryEmbedding(self.head_dim, rope_theta)

    def forward(
        self,
        x_BTC: torch.Tensor,
        *,
        positions: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        cu_seqlens: torch.Tensor | None = None,
        state: AttentionState | None = None,
        use_cache: bool = False,
    ) -> tuple[torch.Tensor, AttentionState | None]:
        B, T, _ = x_BTC.shape
        q = self.q_proj(x_BTC).view(B, T, self.num_heads, self.head_dim)
        k = self.k_proj(x_BTC).view(B, T, self.num_kv_heads, self.head_dim)
        v = self.v_proj(x_BTC).view(B, T, self.num_kv_heads, self.head_dim)
        cos, sin = self.rotary(positions)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if state is not None:
            k = torch.cat([state.key.to(k.dtype), k], dim=1)
            v = torch.cat([state.value.to(v.dtype), v], dim=1)
        S = k.shape[1]
        key_valid = None
        if attention_mask is not None:
            if attention_mask.shape[1] < S:
                raise ValueError(
                    f"Attention: attention_mask covers {attention_mask.shape[1]} tokens, fewer than the {S} keys"
                )
            key_valid = attention_mask[:, attention_mask.shape[1] - S :].bool()
        o = causal_attention(q, k, v, window_size=self.window_size, key_valid_BS=key_valid, cu_seqlens=cu_seqlens)
        y = self.o_proj(o.reshape(B, T, self.num_heads * self.head_dim))
        new_state = None
        if use_cache:
            if self.window_size is not None:
                keep = min(S, self.window_size - 1)
                k, v = k[:, S - keep :], v[:, S - keep :]
            new_state = AttentionState(key=k, value=v)
        return y, new_state
