"""Causal softmax attention, global or sliding-window, through PyTorch's scaled_dot_product_attention."""

from .sdpa import attention_mask_for, causal_attention

__all__ = ["causal_attention", "attention_mask_for"]
