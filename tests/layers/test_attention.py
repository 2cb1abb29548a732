"""The attention layer against a materialised softmax twin: global, sliding window, grouped heads, cache."""

import pytest
import torch

from assocmem.layers import Attention
from assocmem.modules import apply_rotary
from tests.ops.helpers import rel_err

C = 32


def reference_attention(layer: Attention, x, window=None):
    """Scores for every pair, masked, softmax, written out."""
    B, T, _ = x.shape
    H, G, D = layer.num_heads, layer.num_kv_heads, layer.head_dim
    cos, sin = layer.rotary(torch.arange(T))
    q = apply_rotary(layer.q_proj(x).view(B, T, H, D), cos, sin)
    k = apply_rotary(layer.k_proj(x).view(B, T, G, D), cos, sin).repeat_interleave(H // G, dim=2)
    v = layer.v_proj(x).view(B, T, G, D).repeat_interleave(H // G, dim=2)
    scores = torch.einsum("bthd,bshd->bhts", q, k) / D**0.5
    i, j = torch.arange(T)[:, None], torch.arange(T)[None, :]
    allowed = (j <= i) & ((i - j < window) if window else True)
    scores = scores.masked_fill(~allowed, float("-inf"))
    o = torch.einsum("bhts,bshd->bthd", scores.softmax(-1), v)
    return layer.o_proj(o.reshape(B, T, C))


@pytest.mark.parametrize("heads,kv_heads,window", [(4, 4, None), (4, 2, None), (4, 1, 5), (2, 2, 1)])
def test_layer_matches_reference(heads, kv_heads, window):
    layer = Attention(C, heads, kv_heads, window_size=window)
    x = torch.randn(2, 19, C)
    y, _ = layer(x, positions=torch.arange(19)[None])
    with torch.no_grad():
        assert rel_err(y, reference_attention(layer, x, window)) < 1e-5


@pytest.mark.parametrize("window", [None, 4])
def test_cached_steps_equal_one_pass_and_window_cache_rolls(window):
    layer = Attention(C, 4, 2, window_size=window)
    x = torch.randn(2, 21, C)
    full, _ = layer(x, positions=torch.arange(21)[None])
    y, state = layer(x[:, :8], positions=torch.arange(8)[None], use_cache=True)
    outs = [y]
    for t in range(8, 21):
        y, state = layer(x[:, t : t + 1], positions=torch.tensor([[t]]), state=state, use_cache=True)
        outs.append(y)
        assert state.key.shape[1] == (t + 1 if window is None else window - 1)
    assert rel_err(torch.cat(outs, 1), full) < 1e-5


def test_padded_equals_packed_equals_one_by_one():
    layer = Attention(C, 4, 2, window_size=6)
    lengths = [4, 13, 1, 9]
    xs = [torch.randn(1, n, C) for n in lengths]
    alone = [layer(x, positions=torch.arange(len(x[0]))[None])[0] for x in xs]
    cu = torch.tensor([0] + torch.tensor(lengths).cumsum(0).tolist())
    positions = torch.cat([torch.arange(n) for n in lengths])[None]
    packed, _ = layer(torch.cat(xs, 1), positions=positions, cu_seqlens=cu)
    assert rel_err(packed, torch.cat(alone, 1)) < 1e-5
    T = max(lengths)
    batch, mask = torch.randn(len(xs), T, C), torch.zeros(len(xs), T, dtype=torch.long)
    for i, x in enumerate(xs):
        batch[i, T - len(x[0]) :], mask[i, T - len(x[0]) :] = x[0], 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    y, _ = layer(batch, positions=positions, attention_mask=mask)
    assert torch.isfinite(y).all()
    for i, x in enumerate(xs):
        assert rel_err(y[i, T - len(x[0]) :], alone[i][0]) < 1e-5


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_heads"):
        Attention(30, 4)
    with pytest.raises(ValueError, match="num_kv_heads"):
        Attention(32, 4, 3)
    with pytest.raises(ValueError, match="window_size"):
        Attention(32, 4, window_size=0)
    layer = Attention(C, 4)
    with pytest.raises(ValueError, match="attention_mask"):
        layer(torch.randn(1, 5, C), positions=torch.arange(5)[None], attention_mask=torch.ones(1, 3))


@pytest.mark.parametrize("lengths", [[300, 500, 400, 700, 200, 90], [1500, 30, 800]], ids=["many", "one-long"])
def test_long_packed_batches_are_grouped_exactly(lengths):
    """Past 1024 tokens, packed sequences are attended in groups; the result must not change."""
    layer = Attention(16, 2, window_size=None)
    xs = [torch.randn(1, n, 16) for n in lengths]
    cu = torch.tensor([0] + torch.tensor(lengths).cumsum(0).tolist())
    positions = torch.cat([torch.arange(n) for n in lengths])[None]
    with torch.no_grad():
        packed, _ = layer(torch.cat(xs, 1), positions=positions, cu_seqlens=cu)
        alone = torch.cat([layer(x, positions=torch.arange(x.shape[1])[None])[0] for x in xs], 1)
    assert rel_err(packed, alone) < 1e-5
