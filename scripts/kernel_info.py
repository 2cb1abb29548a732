"""Run forward+backward (bf16, T = 2048, the benchmark's batch) under each variant of ab_triton.py's JSON files
(the head size is the number in the file's name, e.g. sm128.json), then print every Triton kernel this process
compiled, as the GPU's Triton built it: warps, stages, shared memory per block, registers and spills. Shared
memory decides how many blocks share an SM (about 227 KB in all on the H200; benchmarks/results/kinfo_v19.txt).
Usage: python scripts/kernel_info.py VARIANTS.json [...]"""

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import ab_triton  # noqa: E402

from assocmem import delta_rule  # noqa: E402
from assocmem.bench.delta_rule_gpu import _inputs, _runner  # noqa: E402
from assocmem.ops.delta_rule.triton import kernels  # noqa: E402


def run(D: int, T: int = 2048) -> None:
    B, H = 32768 // T, 2048 // D
    do = torch.randn(B, T, H, D, device="cuda", dtype=torch.bfloat16)
    _runner(lambda q, k, v, b: delta_rule(q, k, v, b, backend="triton")[0], _inputs(B, T, H, D, "cuda"), do, True)()
    torch.cuda.synchronize()


def main(paths) -> None:
    for path in paths:
        D = int("".join(c for c in Path(path).stem if c.isdigit()))
        for name, settings in json.loads(Path(path).read_text()).items():
            before = ab_triton._apply(settings)
            try:
                run(D)
            except Exception as e:  # noqa: BLE001
                print(path, name, "failed:", type(e).__name__, str(e)[:200])
            finally:
                ab_triton._apply(before)
    for kname in sorted(dir(kernels)):
        for entry in getattr(getattr(kernels, kname), "device_caches", {}).values():
            for key, compiled in (entry[0] if isinstance(entry, tuple) else entry).items():
                compiled._init_handles()
                md = compiled.metadata
                print(f"{kname:22s} warps {md.num_warps} stages {md.num_stages} shared {md.shared:7d} "
                      f"regs {compiled.n_regs} spills {compiled.n_spills}  {str(key)[:160]}")


if __name__ == "__main__":
    main(sys.argv[1:])
