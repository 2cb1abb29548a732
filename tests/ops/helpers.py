"""Random inputs and error measures for the delta-rule tests."""

import torch
import torch.nn.functional as F


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    """Relative RMS error ||out - ref|| / ||ref||, computed in float64."""
    out, ref = out.double(), ref.double()
    return ((out - ref).norm() / ref.norm().clamp_min(1e-30)).item()


def make_inputs(B, T, H, K, V, dtype=torch.float32, *, state=True, N=None, requires_grad=False):
    """q, k, v, beta, initial_state as a DeltaNet layer would feed them: unit-norm k, beta in (0, 1)."""
    q = torch.randn(B, T, H, K)
    k = F.normalize(torch.randn(B, T, H, K), dim=-1)
    v = torch.randn(B, T, H, V)
    beta = torch.rand(B, T, H).clamp(0.05, 0.95)
    h0 = torch.randn(N if N is not None else B, H, K, V) if state else None
    out = [x.to(dtype) for x in (q, k, v, beta)] + [h0]
    if requires_grad:
        out = [x.requires_grad_() if x is not None else None for x in out]
    return out


def leaves(*xs):
    """Fresh leaf copies that require grad (None stays None)."""
    return [None if x is None else x.detach().clone().requires_grad_() for x in xs]


def grads(fn, inputs, do, dstate):
    """Gradients of <o, do> + <final_state, dstate> with respect to every non-None input."""
    o, s = fn(*inputs)
    loss = (o.float() * do).sum() + (s * dstate).sum()
    wrt = [x for x in inputs if x is not None]
    return o, s, torch.autograd.grad(loss, wrt)
