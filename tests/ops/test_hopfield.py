"""Hopfield retrieval against its definition, and the paper's properties of the update and energy."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from assocmem.ops.hopfield import association, energy, retrieve


def reference_update(xi, X, Xv, beta, mask=None):
    """One update written out with the association matrix: Xv softmax(β X ξ), per head."""
    logits = beta * torch.einsum("blhd,bshd->bhls", xi, X)
    if mask is not None:
        logits = logits.masked_fill(~mask[:, None, None, :], float("-inf"))
    return torch.einsum("bhls,bshe->blhe", logits.softmax(-1), Xv)


def test_one_update_is_softmax_attention_with_beta_as_scale():
    xi, X, Xv = torch.randn(2, 5, 3, 8), torch.randn(2, 7, 3, 8), torch.randn(2, 7, 3, 6)
    out = retrieve(xi, X, Xv, beta=0.7)
    assert torch.allclose(out, reference_update(xi, X, Xv, 0.7), atol=1e-6)
    sdpa = torch.nn.functional.scaled_dot_product_attention(
        xi.transpose(1, 2), X.transpose(1, 2), Xv.transpose(1, 2), scale=0.7
    )
    assert torch.allclose(out, sdpa.transpose(1, 2), atol=1e-6)


def test_single_head_layout_and_default_values():
    xi, X = torch.randn(2, 5, 8), torch.randn(2, 7, 8)
    out = retrieve(xi, X, beta=1.3)
    ref = reference_update(xi[:, :, None], X[:, :, None], X[:, :, None], 1.3)[:, :, 0]
    assert out.shape == (2, 5, 8)
    assert torch.allclose(out, ref, atol=1e-6)


def test_steps_move_among_stored_then_read_out_through_values():
    xi, X, Xv = torch.randn(1, 4, 2, 8), torch.randn(1, 9, 2, 8), torch.randn(1, 9, 2, 5)
    out = retrieve(xi, X, Xv, beta=0.5, steps=3)
    manual = reference_update(reference_update(xi, X, X, 0.5), X, X, 0.5)
    assert torch.allclose(out, reference_update(manual, X, Xv, 0.5), atol=1e-5)


def test_per_head_beta_tensor():
    xi, X = torch.randn(1, 3, 2, 4), torch.randn(1, 6, 2, 4)
    beta = torch.tensor([0.5, 2.0])
    out = retrieve(xi, X, beta=beta)
    for h in range(2):
        ref = reference_update(xi[:, :, h : h + 1], X[:, :, h : h + 1], X[:, :, h : h + 1], float(beta[h]))
        assert torch.allclose(out[:, :, h : h + 1], ref, atol=1e-6)


@settings(max_examples=30, deadline=None)
@given(
    d=st.integers(2, 24),
    n=st.integers(2, 40),
    beta=st.floats(0.05, 8.0),
    scale=st.floats(0.2, 3.0),
    seed=st.integers(0, 2**31 - 1),
)
def test_energy_never_increases_along_the_updates(d, n, beta, scale, seed):
    g = torch.Generator().manual_seed(seed)
    X = scale * torch.randn(1, n, d, generator=g, dtype=torch.float64)
    xi = scale * torch.randn(1, 3, d, generator=g, dtype=torch.float64)
    E = energy(xi, X, beta)
    for _ in range(6):
        xi = retrieve(xi, X, beta=beta)
        E_next = energy(xi, X, beta)
        assert (E_next <= E + 1e-9 * (1 + E.abs())).all()
        assert (E_next >= -1e-9).all()
        E = E_next


def test_energy_of_a_single_stored_pattern_at_itself_is_zero():
    x = torch.randn(1, 1, 5, dtype=torch.float64)
    assert energy(x, x, 2.0).abs().item() < 1e-12


def test_energy_matches_its_formula_multihead():
    xi, X, beta = torch.randn(2, 3, 2, 4), torch.randn(2, 5, 2, 4), 0.8
    E = energy(xi, X, beta)
    for h in range(2):
        z = beta * xi[:, :, h] @ X[:, :, h].transpose(1, 2)
        M = X[:, :, h].norm(dim=-1).amax(1, keepdim=True)
        ref = -torch.logsumexp(z, -1) / beta + 0.5 * xi[:, :, h].pow(2).sum(-1) + math.log(5) / beta + 0.5 * M**2
        assert torch.allclose(E[:, :, h], ref, atol=1e-5)


def test_one_step_retrieval_within_the_theorem_5_bound():
    """Well-separated patterns, β large: ‖f(ξ) − x_i‖ ≤ 2(N−1) exp(−β(Δ_i − 2 max(‖ξ−x_i‖, ‖x*_i−x_i‖) M)) M."""
    torch.manual_seed(3)
    N, d, beta = 20, 64, 1.0
    X = torch.randn(1, N, d, dtype=torch.float64)
    xi = X + 0.05 * torch.randn(1, N, d, dtype=torch.float64)
    retrieved = retrieve(xi, X, beta=beta)
    fixed = retrieve(xi, X, beta=beta, steps=50, tol=1e-12)
    M = X.norm(dim=-1).max()
    gram = X[0] @ X[0].T
    for i in range(N):
        delta = (gram[i, i] - torch.cat([gram[i, :i], gram[i, i + 1 :]])).min()
        radius = max((xi[0, i] - X[0, i]).norm(), (fixed[0, i] - X[0, i]).norm())
        assert delta - 2 * radius * M > 0, "patterns not separated enough for the theorem"
        bound = 2 * (N - 1) * torch.exp(-beta * (delta - 2 * radius * M)) * M
        error = (retrieved[0, i] - X[0, i]).norm()
        assert error <= bound
        assert error < 1e-3


def test_small_beta_retrieves_the_global_average():
    X, Xv = torch.randn(2, 30, 16), torch.randn(2, 30, 4)
    xi = torch.randn(2, 5, 16)
    out = retrieve(xi, X, Xv, beta=1e-7)
    assert torch.allclose(out, Xv.mean(1, keepdim=True).expand_as(out), atol=1e-5)


def test_large_beta_one_step_retrieves_the_nearest_pattern():
    X = torch.randn(1, 50, 32)
    xi = X[:, [7, 19]] + 0.1 * torch.randn(1, 2, 32)
    out = retrieve(xi, X, beta=20.0)
    assert torch.allclose(out, X[:, [7, 19]], atol=1e-4)


@pytest.mark.parametrize("mask_kind", ["BS", "BLS", "BHLS"])
def test_masked_patterns_take_no_part(mask_kind):
    xi, X, Xv = torch.randn(2, 4, 2, 8), torch.randn(2, 6, 2, 8), torch.randn(2, 6, 2, 3)
    keep = torch.tensor([[True, False, True, True, False, True], [False, True, True, True, True, True]])
    mask = {"BS": keep, "BLS": keep[:, None].expand(2, 4, 6), "BHLS": keep[:, None, None].expand(2, 2, 4, 6)}[mask_kind]
    out = retrieve(xi, X, Xv, beta=1.0, mask=mask)
    for b in range(2):
        sub = keep[b]
        ref = reference_update(xi[b : b + 1], X[b : b + 1, sub], Xv[b : b + 1, sub], 1.0)
        assert torch.allclose(out[b : b + 1], ref, atol=1e-6)


def test_iteration_cap_and_tolerance():
    X = torch.randn(1, 10, 8)
    xi = torch.randn(1, 3, 8)
    _, made = retrieve(xi, X, beta=0.3, steps=7, tol=0.0, return_steps=True)
    assert made == 7
    _, made = retrieve(xi, X, beta=0.3, steps=7, tol=1e9, return_steps=True)
    assert made == 1
    out, made = retrieve(X[:, :3] * 5, X, beta=50.0, steps=100, tol=1e-6, return_steps=True)
    assert 1 < made < 100
    Xv = torch.randn(1, 10, 4)
    _, made = retrieve(xi, X, Xv, beta=0.3, steps=4, tol=0.0, return_steps=True)
    assert made == 4


def test_gradients_flow_to_every_input():
    xi, X, Xv = (
        torch.randn(1, 4, 2, 8).requires_grad_(),
        torch.randn(1, 6, 2, 8).requires_grad_(),
        torch.randn(1, 6, 2, 3).requires_grad_(),
    )
    beta = torch.tensor([0.5, 1.5], requires_grad=True)
    retrieve(xi, X, Xv, beta=beta, steps=2).square().sum().backward()
    for x in (xi, X, Xv, beta):
        assert x.grad is not None and x.grad.abs().sum() > 0


def test_gradcheck_float64():
    xi, X, Xv = (
        torch.randn(1, 3, 2, 4, dtype=torch.float64, requires_grad=True),
        torch.randn(1, 5, 2, 4, dtype=torch.float64, requires_grad=True),
        torch.randn(1, 5, 2, 3, dtype=torch.float64, requires_grad=True),
    )
    assert torch.autograd.gradcheck(lambda a, b, c: retrieve(a, b, c, beta=0.7, steps=3), (xi, X, Xv))


def test_grad_last_differentiates_only_the_last_update():
    X = torch.randn(1, 8, 6, dtype=torch.float64)
    xi0 = torch.randn(1, 2, 6, dtype=torch.float64)
    X1 = X.clone().requires_grad_()
    xi1 = xi0.clone().requires_grad_()
    out = retrieve(xi1, X1, beta=0.9, steps=4, grad="last")
    out.sum().backward()
    X2 = X.clone().requires_grad_()
    with torch.no_grad():
        before_last = retrieve(xi0, X, beta=0.9, steps=3)
    ref = retrieve(before_last, X2, beta=0.9)
    ref.sum().backward()
    assert torch.allclose(out, retrieve(xi0, X, beta=0.9, steps=4))
    assert torch.allclose(X1.grad, X2.grad)
    assert xi1.grad is None


def test_association_is_the_softmax_matrix():
    xi, X = torch.randn(2, 4, 3, 8), torch.randn(2, 6, 3, 8)
    A = association(xi, X, beta=0.4)
    assert A.shape == (2, 3, 4, 6)
    assert torch.allclose(A.sum(-1), torch.ones(2, 3, 4))
    assert torch.allclose(torch.einsum("bhls,bshd->blhd", A, X), retrieve(xi, X, beta=0.4), atol=1e-6)
    A1 = association(xi[:, :, 0], X[:, :, 0], beta=0.4, mask=torch.ones(2, 6, dtype=torch.bool).tril()[:2])
    assert A1.shape == (2, 4, 6)


BAD = [
    (dict(state=[1.0]), TypeError, r"`state` must be a torch.Tensor"),
    (dict(state=torch.zeros(2, 5)), ValueError, r"`state` must be \[B, N, d\] or \[B, N, H, d\]"),
    (dict(stored=torch.zeros(2, 7, 1, 8)), ValueError, r"`stored` must have as many dimensions as `state`"),
    (dict(stored=torch.zeros(2, 7, 9)), ValueError, r"d = 8 as in `state`, got \[2, 7, 9\]"),
    (dict(state=torch.zeros(2, 5, 8, dtype=torch.int64)), TypeError, r"`state` must be a float tensor"),
    (dict(values=torch.zeros(2, 6, 4)), ValueError, r"`values` must have shape \[2, 7, 'e'\]"),
    (dict(beta=-1.0), ValueError, r"`beta` must be a positive finite number"),
    (dict(beta=torch.ones(3)), ValueError, r"a tensor `beta` must be a scalar or \[H\]"),
    (dict(steps=0), ValueError, r"`steps` must be an integer >= 1, got 0"),
    (dict(tol=-1.0), ValueError, r"`tol` must be a number >= 0"),
    (dict(grad="some"), ValueError, r"`grad` must be one of \('all', 'last'\)"),
    (dict(dropout=1.0), ValueError, r"`dropout` must be in \[0, 1\)"),
    (dict(mask=torch.ones(2, 7)), TypeError, r"`mask` must be a bool tensor"),
    (dict(mask=torch.ones(2, 6, dtype=torch.bool)), ValueError, r"`mask` must have one of the shapes"),
]


@pytest.mark.parametrize("change, exc, match", BAD)
def test_bad_input(change, exc, match):
    args = dict(state=torch.zeros(2, 5, 8), stored=torch.zeros(2, 7, 8), values=None, beta=1.0)
    args.update(change)
    with pytest.raises(exc, match=match):
        retrieve(args.pop("state"), args.pop("stored"), args.pop("values"), **args)
