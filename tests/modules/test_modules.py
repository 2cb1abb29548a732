"""Norms, short convolution, SwiGLU, rotary embeddings and the one-token delta-rule step."""

import pytest
import torch
import torch.nn.functional as F

from assocmem.modules import (
    GatedRMSNorm,
    RMSNorm,
    RotaryEmbedding,
    ShortConvolution,
    SwiGLU,
    apply_rotary,
    swiglu_hidden_size,
)
from assocmem.ops.delta_rule import delta_rule_step, naive_delta_rule
from tests.ops.helpers import make_inputs, rel_err


def test_rmsnorm_formula_and_gate():
    norm = RMSNorm(12, eps=1e-5)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
    x, g = torch.randn(3, 5, 12), torch.randn(3, 5, 12)
    expected = x / torch.sqrt((x * x).mean(-1, keepdim=True) + 1e-5) * norm.weight
    assert rel_err(norm(x), expected) < 1e-6
    gated = GatedRMSNorm(12, eps=1e-5)
    gated.load_state_dict(norm.state_dict())
    assert rel_err(gated(x, g), expected * g * torch.sigmoid(g)) < 1e-6
    assert norm(x.bfloat16()).dtype == torch.bfloat16


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rmsnorm_fused_path_gives_the_formulas_numbers(dtype):
    """Where x and the weight share a dtype (outside autocast) RMSNorm runs PyTorch's fused rms_norm; its output
    and gradients equal the float32 formula's rounded to the dtype (within one rounding in bf16), and under
    autocast or with mixed dtypes the formula runs and keeps x's dtype."""
    norm = RMSNorm(64, eps=1e-6).to(dtype)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
    x = torch.randn(4, 7, 64).to(dtype)
    dy = torch.randn(4, 7, 64).to(dtype)

    def formula(x, w):
        x32 = x.float()
        return (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + 1e-6) * w.float()).to(x.dtype)

    results = []
    for fn in (norm, lambda x: formula(x, norm.weight)):
        xi = x.clone().requires_grad_()
        norm.weight.grad = None
        y = fn(xi)
        y.backward(dy)
        results.append((y.detach(), xi.grad, norm.weight.grad.clone()))
    limit = 1e-6 if dtype == torch.float32 else 1e-2
    for name, a, b in zip(("y", "dx", "dw"), *results):
        assert a.dtype == dtype and rel_err(a.float(), b.float()) < limit, name
    mixed = RMSNorm(64)
    assert mixed(x.bfloat16()).dtype == torch.bfloat16
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert RMSNorm(64)(torch.randn(2, 64)).dtype == torch.float32


def _conv_reference(x_BTC, weight_CW):
    """Causal depthwise conv written as a loop over time: y_t = sum_j w[W-1-j] x_{t-j}."""
    B, T, C = x_BTC.shape
    W = weight_CW.shape[1]
    y = torch.zeros_like(x_BTC)
    for t in range(T):
        for j in range(W):
            if t - j >= 0:
                y[:, t] += weight_CW[:, W - 1 - j] * x_BTC[:, t - j]
    return F.silu(y)


def test_short_conv_matches_loop_and_steps_equal_one_pass():
    conv = ShortConvolution(6, kernel_size=4)
    x = torch.randn(2, 11, 6)
    y, state = conv(x)
    assert rel_err(y, _conv_reference(x, conv.weight.detach())) < 1e-6
    assert state.shape == (2, 6, 3)
    # Three calls (5, 1, 5 tokens) carrying the state equal one call.
    ys, s = [], None
    for part in (x[:, :5], x[:, 5:6], x[:, 6:]):
        out, s = conv(part, s)
        ys.append(out)
    assert rel_err(torch.cat(ys, 1), y) < 1e-6
    assert rel_err(s, state) == 0


def test_short_conv_packed_and_masked():
    conv = ShortConvolution(5, kernel_size=4)
    lengths = [3, 1, 7]
    xs = [torch.randn(1, n, 5) for n in lengths]
    cu = torch.tensor([0, 3, 4, 11])
    packed, _ = conv(torch.cat(xs, 1), cu_seqlens=cu)
    one_by_one = torch.cat([conv(x)[0] for x in xs], 1)
    assert rel_err(packed, one_by_one) < 1e-6
    # Left padding: zeroed inputs act as an empty history.
    x = xs[2]
    padded = torch.cat([torch.randn(1, 2, 5), x], 1)
    mask = torch.tensor([[0, 0] + [1] * 7])
    y, _ = conv(padded, mask_BT=mask)
    assert rel_err(y[:, 2:], conv(x)[0]) < 1e-6


def test_short_conv_rejects_bad_arguments():
    with pytest.raises(ValueError, match="kernel_size"):
        ShortConvolution(4, kernel_size=0)
    with pytest.raises(ValueError, match="activation"):
        ShortConvolution(4, activation="gelu")


def test_swiglu_formula_and_width():
    mlp = SwiGLU(8, 24)
    x = torch.randn(4, 8)
    expected = mlp.down_proj(F.silu(mlp.gate_proj(x)) * mlp.up_proj(x))
    assert torch.equal(mlp(x), expected)
    assert swiglu_hidden_size(1024, 4.0, 256) == 2816  # int(2 * 4096 / 3) = 2730, rounded up to 256
    assert swiglu_hidden_size(64, 4.0, 32) == 192


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_silu_mul_gradients_equal_autograd_and_it_keeps_one_tensor_less(dtype):
    """silu_mul (SwiGLU's SiLU(g) * u): float64 gradcheck; the same output and gradients, bit for bit, as
    autograd's F.silu(g) * u (the same SiLU backward, SiLU(g) formed again); it keeps g and u for the backward,
    not SiLU(g) too."""
    from assocmem.modules.mlp import silu_mul

    torch.manual_seed(0)
    g, u = (torch.randn(3, 7, 24, dtype=dtype, requires_grad=True) for _ in range(2))
    if dtype == torch.float64:
        assert torch.autograd.gradcheck(silu_mul, (g, u))
    grad = torch.randn(3, 7, 24, dtype=dtype)
    kept = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: kept.append(t) or t, lambda t: t):
        y = silu_mul(g, u)
    y.backward(grad)
    g2, u2 = (x.detach().clone().requires_grad_() for x in (g, u))
    y2 = F.silu(g2) * u2
    y2.backward(grad)
    assert torch.equal(y, y2) and torch.equal(g.grad, g2.grad) and torch.equal(u.grad, u2.grad)
    assert len(kept) == 2 and kept[0] is g and kept[1] is u
    with pytest.raises(ValueError, match="g and u must match"):
        silu_mul(g, u[..., :3])


def test_silu_mul_under_torch_compile_equals_eager():
    """Under torch.compile (the plain product there) output and gradients are eager mode's, float32 within 1e-5
    (on the GPU where there is one: torch 2.11 compiled another of our autograd functions wrongly)."""
    from assocmem.modules.mlp import silu_mul

    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    g0, u0, grad = (torch.randn(3, 7, 24, device=device) for _ in range(3))
    results = []
    for fn in (silu_mul, torch.compile(silu_mul)):
        g, u = g0.clone().requires_grad_(), u0.clone().requires_grad_()
        y = fn(g * 1.5, u * 0.5)
        y.backward(grad)
        results.append((y.detach(), g.grad, u.grad))
    assert results[0][1].norm() > 0 and results[0][2].norm() > 0
    for compiled, eager in zip(results[1], results[0]):
        assert rel_err(compiled, eager) < 1e-5


def test_rotary_is_relative_and_norm_preserving():
    rope = RotaryEmbedding(16)
    q, k = torch.randn(1, 1, 1, 16), torch.randn(1, 1, 1, 16)

    def score(p, s):
        cq, sq = rope(torch.tensor([p]))
        ck, sk = rope(torch.tensor([s]))
        return (apply_rotary(q, cq, sq) * apply_rotary(k, ck, sk)).sum()

    assert abs(score(7, 3) - score(104, 100)) < 1e-4
    assert abs(score(7, 3) - score(3, 7)) > 1e-3  # direction matters
    cos, sin = rope(torch.arange(5))
    assert torch.allclose(apply_rotary(q.expand(1, 5, 1, 16), cos, sin).norm(dim=-1), q.norm(dim=-1), atol=1e-5)
    with pytest.raises(ValueError, match="even"):
        RotaryEmbedding(15)


def test_delta_rule_step_matches_the_specification():
    B, T, H, K, V = 3, 9, 2, 12, 10
    q, k, v, beta, h0 = make_inputs(B, T, H, K, V)
    ref_o, ref_state = naive_delta_rule(q, k, v, beta, initial_state=h0, output_final_state=True, qk_l2norm=True)
    state, outs = h0, []
    for t in range(T):
        o, state = delta_rule_step(q[:, t], k[:, t], v[:, t], beta[:, t], state, qk_l2norm=True)
        outs.append(o)
    assert rel_err(torch.stack(outs, 1), ref_o) < 1e-5
    assert rel_err(state, ref_state) < 1e-5
    assert state.dtype == torch.float32
