"""Relative errors of the Triton chunk kernels in bf16 / fp16 against float32 math on the same rounded
inputs, beside the error naive.py itself makes in that dtype (the tests' bound is 1e-2 and twice the
latter). On a machine without a GPU the kernels run under the Triton interpreter, whose float32 matmuls
are exact (no TF32): the numbers show the storage and rounding choices, not the tensor cores.
With --half-operands the bf16 rows are repeated for each choice of chunk.HALF_OPERANDS (bit masks of where the
backward rounds float32 intermediates to bf16 as they enter a matmul), with dqkw and wy_bwd as two kernels and
fused; with --forward-half-operands, for each choice of the forward's bits (state_fwd: the output only; the
backward recomputes without them). The interpreter is taught to round float32 to bf16 as the GPU does.
With --half-vprime: V' and dV' stored in bf16 (chunk.HALF_VPRIME), at the default bits and with every backward
bit on, two kernels and fused. With --recompute-half-operands: for each choice of the bits the backward's
recomputing state pass takes (chunk.HALF_OPERANDS["state_recompute"]), at the defaults otherwise. With
--version12: version 12's storage options (chunk.HALF_A, HALF_DW) one at a time and together, with every
state-pass bit on.
Usage: python scripts/triton_errors.py [--half-operands | --forward-half-operands | --half-vprime |
                                        --recompute-half-operands | --version12]"""

import os
import sys
from pathlib import Path

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from ops.helpers import grads, leaves, make_inputs, rel_err  # noqa: E402
from ops.test_delta_rule_triton import (  # noqa: E402
    NAMES,
    _teach_the_interpreter_bfloat16,
    naive,
    run,
)


def main():
    if "--half-operands" in sys.argv[1:]:
        choices = [{"state_bwd": 0, "dqkw": 0}, {"state_bwd": 1, "dqkw": 0}]
        choices += [{"state_bwd": 1, "dqkw": bits} for bits in (1, 2, 4, 8, 1 | 8, 15)]
        choices += [{"state_bwd": 1, "dqkw": 1 | 8, "wy_bwd": bits} for bits in (1, 2, 4, 8, 15)]
        choices += [{"state_bwd": 1, "dqkw": 15, "wy_bwd": 15}, {"state_bwd": 3, "dqkw": 15, "wy_bwd": 15}]
        choices += [{"state_bwd": 3, "dqkw": 15, "wy_bwd": 15, "state_recompute": 7}]
        each_choice(choices, "HALF_OPERANDS = {choice}")
        return
    if "--half-vprime" in sys.argv[1:]:
        from assocmem.ops.delta_rule.triton import chunk

        chunk.HALF_VPRIME = True
        each_choice(({}, {"dqkw": 15, "wy_bwd": 15}), "HALF_VPRIME, HALF_OPERANDS = {bits}")
        return
    if "--recompute-half-operands" in sys.argv[1:]:
        each_choice([{"state_recompute": bits} for bits in (0, 1, 2, 4, 1 | 2, 1 | 2 | 4)],
                    "HALF_OPERANDS = {bits}", fused_too=False)
        return
    if "--version12" in sys.argv[1:]:
        from assocmem.ops.delta_rule.triton import chunk

        chunk.HALF_OPERANDS.update({"state_fwd": 7, "state_recompute": 7, "state_bwd": 3})
        for flags in ((), ("HALF_A",), ("HALF_DW",), ("HALF_A", "HALF_DW")):
            for flag in ("HALF_A", "HALF_DW"):
                setattr(chunk, flag, flag in flags)
            print(f"version 12 options on: {', '.join(flags) or 'none'} (HALF_OPERANDS = {chunk.HALF_OPERANDS})")
            errors((torch.bfloat16,))
        return
    if "--forward-half-operands" in sys.argv[1:]:
        from assocmem.ops.delta_rule.triton import chunk

        for bits in (0, 1, 2, 4, 1 | 2, 1 | 4, 1 | 2 | 4):
            chunk.HALF_OPERANDS["state_fwd"] = bits
            print(f"HALF_OPERANDS['state_fwd'] = {bits}")
            errors((torch.bfloat16,), forward_only=True)
        return
    errors((torch.bfloat16, torch.float16))


def each_choice(choices, title, fused_too=True):
    """The bf16 errors for each choice of backward bits (on top of the defaults), with dqkw and wy_bwd as two
    kernels and then (fused_too) fused; `title` is formatted with the choice and the resulting bits."""
    from assocmem.ops.delta_rule.triton import chunk

    defaults = dict(chunk.HALF_OPERANDS)
    for fused in (False, True) if fused_too else (False,):
        chunk.FUSED_WY_BWD.update({K: fused for K in (16, 32, 64, 128)})
        for choice in choices:
            chunk.HALF_OPERANDS.update(defaults)
            chunk.HALF_OPERANDS.update(choice)
            print(title.format(choice=choice, bits=chunk.HALF_OPERANDS) + (", fused" if fused else ""))
            errors((torch.bfloat16,))


def errors(dtypes, forward_only=False):
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        _teach_the_interpreter_bfloat16()
    print("dtype     B T H K V        name  ours      naive-in-dtype")
    for dtype in dtypes:
        for shape in [(1, 128, 2, 64, 32), (1, 256, 1, 128, 64)]:
            torch.manual_seed(0)
            inputs = make_inputs(*shape, dtype)
            B, T, H, K, V = shape
            do, dstate = torch.randn(B, T, H, V), torch.randn(B, H, K, V)
            o_ref, _, g_ref = grads(naive, leaves(*inputs), do, dstate)
            o_low, _, g_low = grads(lambda *x, dtype=dtype: naive(*x, compute_dtype=dtype), leaves(*inputs), do, dstate)
            on = [None if x is None else x.to(device) for x in inputs]
            o, _, g = grads(run("triton"), leaves(*on), do.to(device), dstate.to(device))
            rows = [("o", o, o_low, o_ref)] + ([] if forward_only else list(zip(NAMES, g, g_low, g_ref)))
            for name, a, low, ref in rows:
                print(f"{str(dtype)[6:]:9s} {shape} {name:>13s}  {rel_err(a.cpu(), ref):.2e}  {rel_err(low, ref):.2e}")


if __name__ == "__main__":
    main()
