"""Per-kernel CUDA time of forward+backward: our Triton kernels and fla's chunk_delta_rule, one shape."""

import sys

import torch
from torch.profiler import ProfilerActivity, profile

from assocmem import delta_rule
from assocmem.bench.delta_rule_gpu import _fla, _inputs, _runner


def main(D=128, T=4096):
    H, B = 2048 // D, 32768 // T
    inputs = _inputs(B, T, H, D, "cuda")
    do = torch.randn(B, T, H, D, device="cuda", dtype=torch.bfloat16)
    fla_chunk, _, _ = _fla()
    calls = {"ours": _runner(lambda q, k, v, b: delta_rule(q, k, v, b, backend="triton")[0], inputs, do, True)}
    if fla_chunk is not None:
        calls["fla"] = _runner(lambda q, k, v, b: fla_chunk(q, k, v, b)[0], inputs, do, True)
    for name, call in calls.items():
        for _ in range(3):
            call()
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(5):
                call()
            torch.cuda.synchronize()
        print(f"== {name}: D={D} T={T} B={B} H={H}, 5 calls of forward+backward")
        print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=14, max_name_column_width=60))


if __name__ == "__main__":
    main(*map(int, sys.argv[1:]))
