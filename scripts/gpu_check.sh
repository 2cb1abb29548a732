#!/usr/bin/env bash
# One call on the GPU machine: the CUDA tests, then the GPU benchmarks; results land in $OUT.
# Carry .whl (flash-linear-attention and fla-core wheels) to have fla's DeltaNet model as a peer.
set -uo pipefail
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
OUT="${OUT:-benchmarks/results}"
LOG="$OUT/gpu_check.log"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$LOG"
python3 -c "import torch, triton, transformers; print('torch', torch.__version__, 'triton', triton.__version__,
'transformers', transformers.__version__)" | tee -a "$LOG"
python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py tests/modules tests/layers tests/models \
  2>&1 | tail -15 | tee -a "$LOG"
python3 -m assocmem bench hopfield --device cuda --out "$OUT/hopfield_cuda.json" 2>&1 | tee -a "$LOG"
python3 -m assocmem bench models --device cuda --size 340m --batch 8 --seq-len 2048 --decode-batch 16 \
  --prompt-len 512 --new-tokens 32 --out "$OUT/models_cuda.json" 2>&1 | tee -a "$LOG"
python3 scripts/profile_hopfield.py 2>&1 | tee -a "$LOG"
python3 -m assocmem bench hopfield --device cuda --batch 8 --L 1024 4096 --out "$OUT/hopfield_cuda_b8.json" 2>&1 \
  | tee -a "$LOG"
