"""Hopfield retrieval written out with the association matrix: the readable twin of `retrieve`.

It materialises softmax(β ξXᵀ) [B, H, L, S] at every update, as straightforward implementations do
(hopfield-layers among them): memory grows as L·S. Tests compare `retrieve` with it; the benchmark
times both.
"""

import torch


def naive_retrieve(state, stored, values=None, *, beta, steps=1, mask=None):
    """state [B, L, H, d], stored [B, S, H, d], values [B, S, H, e] or None; mask bool [B, S] or None."""
    values = stored if values is None else values
    xi = state
    for step in range(steps):
        logits = torch.einsum("blhd,bshd->bhls", xi, stored) * beta
        if mask is not None:
            logits = logits.masked_fill(~mask[:, None, None, :], float("-inf"))
        target = values if step == steps - 1 else stored
        xi = torch.einsum("bhls,bshe->blhe", logits.softmax(-1), target)
    return xi
