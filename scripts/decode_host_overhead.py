"""Host-side cost of one decoding step of the Triton recurrent path, without a GPU: the kernel launch is
replaced by a no-op and the step runs on CPU tensors (batch 1, 16 heads, head size 128), so what is timed is
the Python around the launch. Timed twice: with chunk.py's plain-Python `_cdiv` / `_pow2`, and with Triton's
`cdiv` / `next_power_of_2` put back in their place (what the host code called before).
Usage: python scripts/decode_host_overhead.py [steps]"""

import sys
import time

import torch
import triton

from assocmem.ops.delta_rule.triton import chunk, kernels, recurrent


class _NoLaunch:
    def __getitem__(self, grid):
        return lambda *args, **kwargs: None


def per_step_us(steps: int) -> float:
    q, k, v = (torch.randn(1, 1, 16, 128) for _ in range(3))
    beta, state = torch.rand(1, 1, 16), torch.randn(1, 16, 128, 128)
    step = lambda: recurrent.recurrent_step_(q, k, v, beta, state, 0.1, qk_l2norm=True)  # noqa: E731
    for _ in range(1000):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - start) / steps * 1e6


def main(steps: int = 20000):
    kernels.recurrent_fwd_kernel = _NoLaunch()
    plain = per_step_us(steps)
    saved = recurrent._cdiv, recurrent._pow2, chunk._cdiv
    recurrent._cdiv = chunk._cdiv = triton.cdiv
    recurrent._pow2 = lambda n, lo=16: max(lo, triton.next_power_of_2(n))
    with_triton = per_step_us(steps)
    recurrent._cdiv, recurrent._pow2, chunk._cdiv = saved
    print(f"Triton {triton.__version__}, torch {torch.__version__}, {steps} steps, launch stubbed out")
    print(f"host side per decoding step: {with_triton:.1f} us with triton.cdiv / next_power_of_2, "
          f"{plain:.1f} us with the plain-Python helpers")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:]))
