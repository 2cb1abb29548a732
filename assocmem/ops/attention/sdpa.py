"""Causal softmax attention over a key sequence that may include cached past tokens.

Legend: B batch, T queries (the newest tokens), S keys (cached past + the T new ones, in order),
H query heads, G key/value heads (H % G == 0), D head size.

Query t sits at key slot S - T + t. Key j is visible to it when
  j <= S - T + t                         (causal),
  S - T + t - j < window_size            (sliding window: the query and the window_size - 1 before it),
  key_valid[b, j]                        (padding), and
  seq_id[j] == seq_id[S - T + t]         (packed sequences, cu_seqlens).
A query always sees its own slot, so a padded query row is finite (its output is meaningless).
"""

import torch
import torch.nn.functional as F


def attention_mask_for(
    T: int,
    S: int,
    *,
    window_size: int | None = None,
    key_valid_BS: torch.Tensor | None = None,
    cu_seqlens: torch.Tensor | None = None,
    device: torch.device | None = None,
) -> torch.Tensor | None:
    """Boolean visibility mask [B or 1, 1, T, S] (True = attend), or None when plain causal suffices."""
    if window_size is None and key_valid_BS is None and cu_seqlens is None:
        return None
    q_slot = torch.arange(S - T, S, device=device)[:, None]
    k_slot = torch.arange(S, device=device)[None, :]
    visible = k_slot <= q_slot
    if window_size is not None:
        visible = visible & (q_slot - k_slot < window_size)
    if cu_seqlens is not None:
        lengths = (cu_seqlens[1:] - cu_seqlens[:-1]).long()
        seq_id = torch.repeat_interleave(torch.arange(len(lengths), device=device), lengths, output_size=S)
        visible = visible & (seq_id[S - T :, None] == seq_id[None, :])
    visible = visible[None, None]
    if key_valid_BS is not None:
        visible = visible & key_valid_BS.bool()[:, None, None, :]
    return visible | (q_slot == k_slot)[None, None]


def causal_attention(
    q_BTHD: torch.Tensor,
    k_BSGD: torch.Tensor,
    v_BSGD: torch.Tensor,
    *,
    window_size: int | None = None,
    key_valid_BS: torch.Tensor | None = None,
    cu_seqlens: torch.Tensor | None = None,
    scale: float | None = None,
) -> torch.Tensor:
    """Softmax attention of the T newest tokens over S keys; returns [B, T, H, D].

    With no window, padding or packing and T == S this is SDPA's `is_causal` path (flash attention
    on GPUs); otherwise SDPA with a boolean mask from `attention_mask_for`.
    """
    B, T, H, D = q_BTHD.shape
    S, G = k_BSGD.shape[1], k_BSGD.shape[2]
    if H % G:
        raise ValueError(f"causal_attention: query heads ({H}) must be a multiple of key/value heads ({G})")
    if S < T:
        raise ValueError(f"causal_attention: keys (S={S}) must include the T={T} new tokens")
    if cu_seqlens is not None and T == S and B == 1 and key_valid_BS is None and T > _GROUP_TOKENS:
        return _packed_attention(q_BTHD, k_BSGD, v_BSGD, cu_seqlens, window_size, scale)
    return _dense(q_BTHD, k_BSGD, v_BSGD, window_size, key_valid_BS, cu_seqlens, scale)


def _dense(q_BTHD, k_BSGD, v_BSGD, window_size, key_valid_BS, cu_seqlens, scale):
    T, H = q_BTHD.shape[1], q_BTHD.shape[2]
    S, G = k_BSGD.shape[1], k_BSGD.shape[2]
    q, k, v = (x.transpose(1, 2) for x in (q_BTHD, k_BSGD, v_BSGD))
    if G != H:
        k = k.repeat_interleave(H // G, dim=1)
        v = v.repeat_interleave(H // G, dim=1)
    mask = attention_mask_for(T, S, window_size=window_size, key_valid_BS=key_valid_BS, cu_seqlens=cu_seqlens,
                              device=q.device)
    if mask is None and T == S:
        o = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale)
    elif mask is None and T == 1:
        o = F.scaled_dot_product_attention(q, k, v, scale=scale)
    else:
        if mask is None:
            mask = attention_mask_for(T, S, window_size=S, device=q.device)
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
    return o.transpose(1, 2)


_GROUP_TOKENS = 1024


def _packed_attention(q_BTHD, k_BTGD, v_BTGD, cu_seqlens, window_size, scale, group_tokens: int = _GROUP_TOKENS):
    """Packed sequences without one [T, T] mask: whole sequences are gathered into groups of at most
    `group_tokens` tokens (or one longer sequence), padded into a batch, and attended within each group,
    so the cost is about T * group_tokens rather than T^2."""
    bounds = cu_seqlens.tolist()
    groups, start = [], bounds[0]
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        if hi - start > group_tokens and lo > start:
            groups.append((start, lo))
            start = lo
    groups.append((start, bounds[-1]))
    if len(groups) == 1:
        return _dense(q_BTHD, k_BTGD, v_BTGD, window_size, None, cu_seqlens, scale)
    G = max(hi - lo for lo, hi in groups)
    device = q_BTHD.device
    index = torch.cat([torch.arange(lo, lo + G, device=device).clamp(max=hi - 1) for lo, hi in groups])
    valid = torch.cat([torch.arange(G, device=device) < hi - lo for lo, hi in groups]).view(len(groups), G)
    q, k, v = (x[0, index].view(len(groups), G, *x.shape[2:]) for x in (q_BTHD, k_BTGD, v_BTGD))
    cu = torch.tensor(bounds, device=device)
    seq_of_token = torch.bucketize(torch.arange(bounds[-1], device=device), cu[1:], right=True)
    seq_id = seq_of_token[index].view(len(groups), G)
    H, Gk = q.shape[2], k.shape[2]
    qh, kh, vh = (x.transpose(1, 2) for x in (q, k, v))
    if Gk != H:
        kh, vh = kh.repeat_interleave(H // Gk, dim=1), vh.repeat_interleave(H // Gk, dim=1)
    slot = torch.arange(G, device=device)
    mask = (slot[None, :] <= slot[:, None])[None] & (seq_id[:, :, None] == seq_id[:, None, :]) & valid[:, None, :]
    if window_size is not None:
        mask = mask & (slot[:, None] - slot[None, :] < window_size)[None]
    mask = mask | torch.eye(G, dtype=torch.bool, device=device)[None]
    o = F.scaled_dot_product_attention(qh, kh, vh, attn_mask=mask[:, None], scale=scale).transpose(1, 2)
    keep = torch.cat([torch.arange(hi - lo, device=device) + n * G for n, (lo, hi) in enumerate(groups)])
    return o.reshape(len(groups) * G, H, -1)[keep][None]
