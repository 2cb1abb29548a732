"""Three forward+backward calls of the Triton delta rule at the benchmark's D = 128, T = 2048 shape (B = 16,
H = 16, bf16), for Nsight Compute to read the kernels of the last one on the H200:
    ncu --clock-control none --section SpeedOfLight --section Occupancy --section WarpStateStats \\
        --section MemoryWorkloadAnalysis --section LaunchStats \\
        -k regex:"state_fwd|state_bwd|dqkw|wy_bwd|wy_fwd" --launch-skip 10 --launch-count 5 \\
        python3 scripts/ncu_triton.py
(benchmarks/results/ncu_v18_d128.txt; the first two calls compile and warm up)."""

import torch

from assocmem import delta_rule

D, T, B = 128, 2048, 16
H = 2048 // D
g = torch.Generator(device="cuda").manual_seed(0)
q = torch.randn(B, T, H, D, device="cuda", dtype=torch.bfloat16, generator=g)
k = torch.nn.functional.normalize(torch.randn(B, T, H, D, device="cuda", generator=g), dim=-1).to(torch.bfloat16)
v = torch.randn(B, T, H, D, device="cuda", dtype=torch.bfloat16, generator=g)
beta = torch.rand(B, T, H, device="cuda", generator=g).to(torch.bfloat16)
do = torch.randn(B, T, H, D, device="cuda", dtype=torch.bfloat16, generator=g)
for _ in range(3):
    xs = [x.clone().requires_grad_(True) for x in (q, k, v, beta)]
    delta_rule(*xs, backend="triton")[0].backward(do)
torch.cuda.synchronize()
print("done")
