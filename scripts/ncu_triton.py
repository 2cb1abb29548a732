"""Three forward+backward calls of the Triton delta rule at the benchmark's D = 128, T = 2048 shape (B = 16,
H = 16, bf16), for Nsight Compute to read the kernels of the last one on the H200:
    ncu --clock-control none --section SpeedOfLight --section Occupancy --section WarpStateStats \\
        --section MemoryWorkloadAnalysis --section LaunchStats \\
        -k regex:"state_fwd|state_bwd|dqkw|wy_bwd|wy_fwd" --launch-skip 10 --launch-count 5 \\
        python3 scripts/ncu_triton.py
(benchmarks/results/ncu_v18_d128.txt; the first two calls compile and warm up)."""

import torch

from assocmem import delta_rule
from assocmem.bench.delta_rule_gpu import _inputs, _runner

D, T = 128, 2048
H, B = 2048 // D, 32768 // T
torch.manual_seed(0)
call = _runner(lambda q, k, v, b: delta_rule(q, k, v, b, backend="triton")[0], _inputs(B, T, H, D, "cuda"),
               torch.randn(B, T, H, D, device="cuda", dtype=torch.bfloat16), True)
for _ in range(3):
    call()
torch.cuda.synchronize()
print("done")
