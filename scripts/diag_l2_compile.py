"""The gradient of the Triton path's L2 norm (l2norm.py) under torch.compile against eager mode: the autograd
function itself (`_L2Normalize`), alone and before the Triton op, and the public function (plain under compile).
Usage: python scripts/diag_l2_compile.py (on the GPU: benchmarks/results/l2norm_compile_h200.log)."""

import torch

from assocmem.ops.delta_rule.l2norm import _L2Normalize, l2_normalize_keeping_output
from assocmem.ops.delta_rule.triton.chunk import triton_chunk_delta_rule

DEV = "cuda" if torch.cuda.is_available() else "cpu"
print("torch", torch.__version__, DEV)
torch.manual_seed(0)
for case in ("function", "function+triton", "public", "public+triton"):
    x = torch.randn(2, 70, 2, 32, device=DEV, requires_grad=True)
    v, b = torch.randn(2, 70, 2, 32, device=DEV), torch.rand(2, 70, 2, device=DEV)
    norm = (lambda t: _L2Normalize.apply(t, 1e-6)) if case.startswith("function") else l2_normalize_keeping_output

    def f(x, norm=norm, case=case, v=v, b=b):
        y = norm(x * 1.5)
        if case.endswith("triton"):
            y = triton_chunk_delta_rule(y, y, v, b, 32**-0.5, None, None)[0]
        return y.square().sum() + y.sum()

    (eager,) = torch.autograd.grad(f(x), x)
    (compiled,) = torch.autograd.grad(torch.compile(f)(x), x)
    print(f"{case:16s} |grad| eager {eager.norm().item():.6f} compiled {compiled.norm().item():.6f} "
          f"difference {(eager - compiled).norm().item():.2e}")  # fmt: skip
