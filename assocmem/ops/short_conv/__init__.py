"""The short causal depthwise convolution of DeltaNet's q, k, v (with its SiLU), as one op.

`backend`: "auto", "triton" (also on the CPU under TRITON_INTERPRET=1) or "torch" (the shifted-sum
specification, naive.py, which torch.compile fuses itself). "auto" takes the Triton kernels (triton.py) for
CUDA tensors in eager mode where AUTO_TRITON is on (the default; the environment variable
ASSOCMEM_TRITON_SHORT_CONV=0 at import turns it off), and the specification elsewhere. The kernels are checked
against the specification under the interpreter (tests/ops/test_short_conv.py) and on the H200
(tests/test_cuda.py). There, the 340M DeltaNet model trained eager at 97,878 tokens/s with them against 76,808
with the specification (benchmarks/results/models_cuda_conv1.json, models_cuda_conv0.json).
"""

import os

import torch

from ..delta_rule.triton import available as triton_available
from .naive import short_conv_naive

BACKENDS = ("auto", "triton", "torch")
AUTO_TRITON = os.environ.get("ASSOCMEM_TRITON_SHORT_CONV", "1") == "1"


def short_conv(
    x_BTC: torch.Tensor,
    weight_CW: torch.Tensor,
    history_BHC: torch.Tensor | None = None,
    positions_T: torch.Tensor | None = None,
    activation: str | None = "silu",
    backend: str = "auto",
) -> torch.Tensor:
    """y_t = act(sum_j weight[:, W-1-j] * x_{t-j}); arguments as `short_conv_naive`. The Triton kernels sum in
    float32 (the specification in x's dtype) and give the history no gradient: with a history that needs
    one, "auto" takes the specification and "triton" refuses."""
    if backend not in BACKENDS:
        raise ValueError(f"short_conv: backend must be one of {BACKENDS}, got {backend!r}")
    if x_BTC.dim() != 3 or weight_CW.dim() != 2 or weight_CW.shape[0] != x_BTC.shape[2]:
        raise ValueError(f"short_conv: expected x [B, T, C] and weight [C, W], got {tuple(x_BTC.shape)} and "
                         f"{tuple(weight_CW.shape)}")  # fmt: skip
    history_grad = history_BHC is not None and history_BHC.requires_grad and torch.is_grad_enabled()
    if backend == "auto":
        use = (AUTO_TRITON and x_BTC.is_cuda and triton_available(x_BTC.device) and not torch.compiler.is_compiling()
               and not history_grad and x_BTC.dtype in (torch.float32, torch.bfloat16, torch.float16))  # fmt: skip
    else:
        use = backend == "triton"
        if use and not triton_available(x_BTC.device):
            raise ValueError(f"short_conv: backend='triton' cannot run on {x_BTC.device} (Triton missing, or a CPU "
                             "without TRITON_INTERPRET=1)")  # fmt: skip
        if use and history_grad:
            raise ValueError("short_conv: backend='triton' gives the history no gradient; use 'torch'")
    if not use:
        return short_conv_naive(x_BTC, weight_CW, history_BHC, positions_T, activation)
    from .triton import short_conv_triton

    return short_conv_triton(x_BTC, weight_CW, history_BHC, positions_T, activation)


__all__ = ["short_conv", "short_conv_naive"]
