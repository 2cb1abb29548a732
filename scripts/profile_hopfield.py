"""Where the time of one Hopfield retrieval (forward+backward, L = S = 4096) goes on a GPU: kernels vs gaps."""

import torch
from torch.profiler import ProfilerActivity, profile

from assocmem.bench.hopfield import _inputs, _make_call

for name in ("ours", "naive"):
    call = _make_call(name, _inputs(1, 4096, 4, 64, torch.bfloat16, torch.device("cuda")), 64**-0.5, 1)
    for _ in range(5):
        call()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(10):
            call()
        torch.cuda.synchronize()
    events = prof.key_averages()
    kernel_us = sum(e.device_time_total for e in events if e.device_type == torch.autograd.DeviceType.CUDA) / 10
    print(f"== {name}: GPU kernel time per call {kernel_us:.0f} us")
    print(events.table(sort_by="device_time_total", row_limit=12, max_name_column_width=60))
