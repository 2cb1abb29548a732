"""The DeltaNet layer against a step-by-step twin, and its recurrent-model invariants."""

import pytest
import torch
import torch.nn.functional as F

from assocmem.layers import DeltaNet
from assocmem.ops.delta_rule import naive_delta_rule
from tests.ops.helpers import rel_err

C, H = 32, 4


def reference_deltanet(layer: DeltaNet, x):
    """The layer written out with the naive delta rule and an explicit causal conv loop."""
    B, T, _ = x.shape
    D = C // H

    def conv(conv_module, u):
        W = conv_module.kernel_size
        y = torch.zeros_like(u)
        for t in range(T):
            for j in range(min(W, t + 1)):
                y[:, t] += conv_module.weight[:, W - 1 - j] * u[:, t - j]
        return F.silu(y)

    q, k, v = layer.q_proj(x), layer.k_proj(x), layer.v_proj(x)
    if layer.use_short_conv:
        q, k, v = conv(layer.q_conv, q), conv(layer.k_conv, k), conv(layer.v_conv, v)
    else:
        q, k, v = F.silu(q), F.silu(k), F.silu(v)
    beta = torch.sigmoid(layer.b_proj(x)) * (2 if layer.allow_neg_eigval else 1)
    o, _ = naive_delta_rule(q.view(B, T, H, D), k.view(B, T, H, D), v.view(B, T, H, D), beta, qk_l2norm=True)
    o = o * torch.rsqrt(o.pow(2).mean(-1, keepdim=True) + 1e-6) * layer.o_norm.weight
    if layer.use_output_gate:
        o = o * F.silu(layer.g_proj(x).view(B, T, H, D))
    return layer.o_proj(o.reshape(B, T, C))


@pytest.mark.parametrize(
    "options",
    [{}, {"use_output_gate": True}, {"allow_neg_eigval": True}, {"use_short_conv": False}],
    ids=["plain", "gate", "neg-eigval", "no-conv"],
)
def test_layer_matches_reference(options):
    layer = DeltaNet(C, H, **options)
    x = torch.randn(2, 37, C)
    y, state = layer(x)
    assert state is None
    with torch.no_grad():
        assert rel_err(y, reference_deltanet(layer, x)) < 1e-5


def test_negative_eigenvalues_change_the_layer():
    torch.manual_seed(1)
    a = DeltaNet(C, H)
    b = DeltaNet(C, H, allow_neg_eigval=True)
    b.load_state_dict(a.state_dict())
    x = torch.randn(1, 20, C)
    assert rel_err(a(x)[0], b(x)[0]) > 1e-3


def test_cached_steps_equal_one_pass():
    layer = DeltaNet(C, H, use_output_gate=True)
    x = torch.randn(2, 23, C)
    full, _ = layer(x)
    y, state = layer(x[:, :9], use_cache=True)
    outs = [y]
    for t in range(9, 23):
        y, state = layer(x[:, t : t + 1], state=state, use_cache=True)
        outs.append(y)
    assert rel_err(torch.cat(outs, 1), full) < 1e-5
    assert state.recurrent.shape == (2, H, C // H, C // H) and state.conv_q.shape == (2, C, 3)


def test_padded_equals_packed_equals_one_by_one():
    layer = DeltaNet(C, H)
    lengths = [5, 17, 1, 11]
    xs = [torch.randn(1, n, C) for n in lengths]
    alone = [layer(x)[0] for x in xs]
    cu = torch.tensor([0] + torch.tensor(lengths).cumsum(0).tolist())
    packed, _ = layer(torch.cat(xs, 1), cu_seqlens=cu)
    assert rel_err(packed, torch.cat(alone, 1)) < 1e-5
    T = max(lengths)
    for side in ("left", "right"):
        batch = torch.randn(len(xs), T, C)  # the padding holds noise: it must not matter
        mask = torch.zeros(len(xs), T, dtype=torch.long)
        for i, x in enumerate(xs):
            span = slice(T - len(x[0]), T) if side == "left" else slice(0, len(x[0]))
            batch[i, span], mask[i, span] = x[0], 1
        y, _ = layer(batch, attention_mask=mask)
        for i, x in enumerate(xs):
            span = slice(T - len(x[0]), T) if side == "left" else slice(0, len(x[0]))
            assert rel_err(y[i, span], alone[i][0]) < 1e-5, side


def test_gradients_reach_every_parameter():
    layer = DeltaNet(C, H, use_output_gate=True)
    y, _ = layer(torch.randn(2, 40, C))
    y.square().mean().backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_heads"):
        DeltaNet(30, 4)
    layer = DeltaNet(C, H)
    _, state = layer(torch.randn(1, 3, C), use_cache=True)
    with pytest.raises(ValueError, match="cu_seqlens"):
        layer(torch.randn(1, 3, C), state=state, cu_seqlens=torch.tensor([0, 3]))


def test_linear_attention_mode_decodes_like_the_full_pass_and_matches_the_recurrence():
    from assocmem.ops.delta_rule.naive import l2_normalize
    from assocmem.ops.linear_attention import linear_attention_naive

    torch.manual_seed(0)
    layer = DeltaNet(32, 4, use_delta_rule=False, use_short_conv=False).eval()
    assert not hasattr(layer, "b_proj")
    x = torch.randn(2, 21, 32)
    with torch.no_grad():
        full, _ = layer(x)
        y, state = layer(x[:, :9], use_cache=True)
        steps = [y]
        for t in range(9, 21):
            y, state = layer(x[:, t : t + 1], state=state, use_cache=True)
            steps.append(y)
        assert (torch.cat(steps, 1) - full).abs().max() < 1e-5
        # The mixer itself is the additive recurrence on the normalised q, k.
        B, T, H, D = 2, 21, 4, 8
        q, k, v = (torch.nn.functional.silu(p(x)).view(B, T, H, D) for p in (layer.q_proj, layer.k_proj, layer.v_proj))
        o, _ = linear_attention_naive(l2_normalize(q), l2_normalize(k), v)
        ref = layer.o_proj(layer.o_norm(o.float()).reshape(B, T, 32))
        assert (ref - full).abs().max() < 1e-5
