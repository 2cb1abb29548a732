#!/usr/bin/env bash
# One call on a GPU machine (one or two H200s) for `assocmem recall`: the full MQAR grid, 16 runs at a time,
# each with a training-time budget; results in $OUT ($NAME.json, $NAME.png, $NAME.log; NAME=mqar).
# Several can share a GPU at once with different NAMEs (and CUDA_VISIBLE_DEVICES to pick the GPU).
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD"
OUT="${OUT:-benchmarks/results}"
NAME="${NAME:-mqar}"
nvidia-smi -L
timeout "${RECALL_TIMEOUT:-540}" python3 -m assocmem recall --device cuda --workers "${WORKERS:-16}" \
  --steps "${STEPS:-20000}" --batch 64 --max-minutes "${MINUTES:-3.4}" ${RECALL_ARGS:-} \
  --out "$OUT/$NAME.json" 2>&1 | grep -v Warning | tee "$OUT/$NAME.log"
