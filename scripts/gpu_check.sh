#!/usr/bin/env bash
# One call on the GPU machine: the CUDA tests, then the GPU benchmarks; results land in $OUT.
set -uo pipefail
export PYTHONPATH="$PWD" PYTHONUNBUFFERED=1
OUT="${OUT:-benchmarks/results}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu_check.log"
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" | tee -a "$OUT/gpu_check.log"
python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py tests/ops 2>&1 | tail -15 | tee -a "$OUT/gpu_check.log"
python3 -m assocmem bench hopfield --device cuda --out "$OUT/hopfield_cuda.json" 2>&1 | tee -a "$OUT/gpu_check.log"
