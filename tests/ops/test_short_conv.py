"""ops.short_conv: the Triton kernels (forward, and the backward with the pre-activation recomputed) against the
shifted-sum specification, on the CPU under the Triton interpreter at small shapes (on a GPU, the same)."""

import importlib.util

import pytest
import torch

from assocmem.modules import ShortConvolution
from assocmem.modules.conv import positions_in_sequence
from assocmem.ops.short_conv import short_conv, short_conv_naive

needs_triton = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="Triton is not installed")
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _inputs(B, T, C, W, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, T, C, generator=g).to(DEVICE, dtype)
    w = (torch.randn(C, W, generator=g) / W**0.5).to(DEVICE)
    return x, w


def _run(backend, x, w, history=None, positions=None, activation="silu", dy=None):
    x = x.detach().clone().requires_grad_()
    w = w.detach().clone().requires_grad_()
    y = short_conv(x, w, history, positions, activation, backend)
    y.backward(dy)
    return y.detach(), x.grad, w.grad


def _rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


@needs_triton
@pytest.mark.parametrize("W", [1, 2, 4])
@pytest.mark.parametrize("activation", ["silu", None])
@pytest.mark.parametrize("shape", [(2, 45, 20), (1, 70, 130)])
def test_triton_matches_the_specification_in_float32(W, activation, shape):
    """Output, dx and dweight in float32 within 1e-5 (relative) of the shifted-sum form, across tile edges in
    T (32) and C (128)."""
    x, w = _inputs(*shape, W)
    dy = torch.randn_like(x)
    ref = _run("torch", x, w, activation=activation, dy=dy)
    out = _run("triton", x, w, activation=activation, dy=dy)
    for name, a, b in zip(("y", "dx", "dw"), out, ref):
        assert _rel(a, b) < 1e-5, name


@needs_triton
def test_triton_with_packed_sequences_and_a_history():
    """With positions (cu_seqlens) no tap crosses a boundary, in the forward and in dx and dweight; a history
    (decoding's conv state, no gradient) enters the first W - 1 outputs as in the specification."""
    x, w = _inputs(1, 50, 24, 4)
    dy = torch.randn_like(x)
    positions = positions_in_sequence(torch.tensor([0, 7, 8, 30, 50], device=DEVICE), 50)
    ref = _run("torch", x, w, positions=positions, dy=dy)
    out = _run("triton", x, w, positions=positions, dy=dy)
    for name, a, b in zip(("y", "dx", "dw"), out, ref):
        assert _rel(a, b) < 1e-5, name
    # a one-token sequence (position 7) sees only its own tap
    assert torch.allclose(out[0][0, 7], torch.nn.functional.silu(x[0, 7] * w[:, 3]), atol=1e-6)
    x2, w2 = _inputs(2, 37, 24, 4, seed=1)
    history = torch.randn(2, 3, 24, device=DEVICE)
    dy2 = torch.randn_like(x2)
    ref = _run("torch", x2, w2, history=history, dy=dy2)
    out = _run("triton", x2, w2, history=history, dy=dy2)
    for name, a, b in zip(("y", "dx", "dw"), out, ref):
        assert _rel(a, b) < 1e-5, name
    assert _rel(out[0], _run("triton", x2, w2, dy=dy2)[0]) > 1e-3  # the history did change the output


@needs_triton
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_triton_low_precision_within_the_specifications_error(dtype):
    """In bf16 / fp16 (float32 sums inside the kernel, the specification sums in the input dtype): against the
    float32 specification, each result's error at most the low-precision specification's, or 2e-3."""
    x, w = _inputs(2, 40, 140, 4)
    dy = torch.randn_like(x)
    exact = _run("torch", x, w, dy=dy)
    low = [(x.to(dtype), w.to(dtype), dy.to(dtype))]
    spec = _run("torch", *low[0][:2], dy=low[0][2])
    ours = _run("triton", *low[0][:2], dy=low[0][2])
    for name, a, s, e in zip(("y", "dx", "dw"), ours, spec, exact):
        assert a.dtype == dtype, name
        assert _rel(a, e) <= max(_rel(s, e), 2e-3), name


def test_arguments_are_checked():
    x, w = _inputs(1, 8, 4, 4)
    with pytest.raises(ValueError, match="backend must be one of"):
        short_conv(x, w, backend="cuda")
    with pytest.raises(ValueError, match=r"expected x \[B, T, C\] and weight \[C, W\]"):
        short_conv(x, w[:3])
    with pytest.raises(ValueError, match="ShortConvolution: backend must be one of"):
        ShortConvolution(4, backend="fast")
    history = torch.zeros(1, 3, 4, device=DEVICE, requires_grad=True)
    if importlib.util.find_spec("triton") is not None:
        with pytest.raises(ValueError, match="gives the history no gradient"):
            short_conv(x, w, history, backend="triton")
    y = short_conv(x, w, history)  # "auto" takes the specification, which differentiates the history
    y.sum().backward()
    assert history.grad is not None and history.grad.abs().sum() > 0
    assert torch.equal(short_conv(x, w, backend="auto"), short_conv_naive(x, w))  # CPU: the specification


@needs_triton
def test_module_with_triton_backend_equals_the_default_module():
    """ShortConvolution(backend="triton") against the default module: output, new state and gradients, with a
    padding mask and a previous state (no gradient)."""
    torch.manual_seed(0)
    ref = ShortConvolution(24, 4, backend="torch").to(DEVICE)
    fast = ShortConvolution(24, 4, backend="triton").to(DEVICE)
    fast.load_state_dict(ref.state_dict())
    x = torch.randn(2, 9, 24, device=DEVICE)
    mask = torch.ones(2, 9, device=DEVICE)
    mask[1, :3] = 0
    state = torch.randn(2, 24, 3, device=DEVICE)
    results = []
    for module in (ref, fast):
        xi = x.clone().requires_grad_()
        y, new_state = module(xi, state, None, mask)
        y.square().sum().backward()
        results.append((y.detach(), new_state, xi.grad, module.weight.grad))
    for name, a, b in zip(("y", "state", "dx", "dw"), *results):
        assert _rel(a, b) < 1e-5, name
    short = torch.randn(2, 2, 24, device=DEVICE)  # fewer tokens than the state holds
    assert torch.equal(fast(short, state)[1], ref(short, state)[1])


@needs_triton
def test_auto_takes_triton_only_where_switched_on(monkeypatch):
    """"auto" runs the specification unless AUTO_TRITON is on (the default; ASSOCMEM_TRITON_SHORT_CONV=0 turns it
    off), and then only for CUDA tensors: on the CPU it stays on the specification either way."""
    from assocmem.ops import short_conv as op

    calls = []
    monkeypatch.setattr("assocmem.ops.short_conv.triton.short_conv_triton",
                        lambda *args: calls.append(args) or short_conv_naive(*args), raising=False)  # fmt: skip
    x, w = _inputs(1, 8, 4, 4)
    for switched in (False, True):
        monkeypatch.setattr(op, "AUTO_TRITON", switched)
        short_conv(x, w)
    assert calls == [] if not x.is_cuda else len(calls) == 1
