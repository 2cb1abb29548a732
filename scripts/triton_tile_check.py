"""Triton chunk kernels at small head sizes on the GPU, with chunk.MIN_TILE at 16 (tiles as narrow as the
head) and 64 (the default): output, final state and gradients against naive.py in float32 on the same rounded
inputs, beside naive.py in the input dtype; "BAD" where an error exceeds twice the latter or 1e-2 (STYLE.md's
bound). Each setting runs in its own process (a kernel that faults poisons the CUDA context).
Usage: python scripts/triton_tile_check.py   (every shape and setting; benchmarks/results/triton_min_tile_v14.log)
       python scripts/triton_tile_check.py B,T,H,K,V[,packed] DTYPE   (one, under ASSOCMEM_TRITON_MIN_TILE)
"""

import os
import subprocess
import sys

SHAPES = ["1,128,2,64,32", "1,64,1,128,16", "2,100,2,32,16", "1,130,1,16,128", "1,180,2,32,16,packed",
          "1,128,2,64,64"]  # fmt: skip
NAMES = ["o", "s", "q", "k", "v", "beta", "h0"]


def all_settings():
    for shape in SHAPES:
        for tile in ("16", "64"):
            for dtype in ("bfloat16", "float16") if shape in SHAPES[:2] else ("bfloat16",):
                env = dict(os.environ, ASSOCMEM_TRITON_MIN_TILE=tile)
                r = subprocess.run([sys.executable, __file__, shape, dtype], env=env, capture_output=True, text=True,
                                   timeout=120)  # fmt: skip
                line = r.stdout.strip() or r.stderr.strip().splitlines()[-1]
                print(f"MIN_TILE={tile} {shape} {dtype}:", line[:300], flush=True)


def one(shape: str, dtype_name: str):
    import torch

    sys.path.insert(0, ".")
    from assocmem import delta_rule
    from assocmem.ops.delta_rule import naive_delta_rule
    from tests.ops.helpers import grads, leaves, make_inputs, rel_err

    parts = shape.split(",")
    B, T, H, K, V = map(int, parts[:5])
    dtype = getattr(torch, dtype_name)
    cu = torch.tensor([0, 50, 51, 180]) if "packed" in parts else None
    N = B if cu is None else 3
    torch.manual_seed(0)
    inputs = make_inputs(B, T, H, K, V, N=N)
    do, ds = torch.randn(B, T, H, V), torch.randn(N, H, K, V)

    def naive(*x, **kw):
        return naive_delta_rule(*x[:4], initial_state=x[4], output_final_state=True, cu_seqlens=cu, **kw)

    def triton(*x):
        packed = None if cu is None else cu.cuda()
        return delta_rule(*x[:4], initial_state=x[4], output_final_state=True, backend="triton", cu_seqlens=packed)

    low = [t.to(dtype) for t in inputs[:4]] + [inputs[4]]
    o_ref, s_ref, g_ref = grads(naive, leaves(*low), do, ds)
    o_low, s_low, g_low = grads(lambda *x: naive(*x, compute_dtype=dtype), leaves(*low), do, ds)
    o, s, g = grads(triton, leaves(*[t.cuda() for t in low]), do.cuda(), ds.cuda())
    out, bad = [], False
    ours, lows, refs = [o, s, *g], [o_low, s_low, *g_low], [o_ref, s_ref, *g_ref]
    for name, a, lo, ref in zip(NAMES, ours, lows, refs):
        err, err_low = rel_err(a.float().cpu(), ref.float()), rel_err(lo.float(), ref.float())
        bad |= not (err <= 2 * err_low and err < 1e-2)
        out.append(f"{name}:{err:.1e}/{err_low:.1e}")
    print("BAD" if bad else "ok ", " ".join(out))


if __name__ == "__main__":
    if len(sys.argv) == 1:
        all_settings()
    else:
        one(sys.argv[1], sys.argv[2])
