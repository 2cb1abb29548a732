#!/usr/bin/env bash
# The second GPU's share of a call that readies fla's baselines while the first trains (README: "English
# text and zero-shot evaluation"): builds mamba-ssm and causal-conv1d in the background
# (scripts/build_mamba.sh), runs the GPU test of `assocmem convert fla` (fla's own DeltaNet against ours),
# then, once the build is done, starts fla's Mamba training (its Triton kernels autotune on the way: Triton
# keeps the results in TRITON_CACHE_DIR; gpu_compare.sh save-autotune packs them). Stops DEADLINE seconds
# after its start; run it after the carried wheels are in /tmp/site (gpu_compare.sh or gpu_batch.sh).
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD:/tmp/site:/tmp/site_mamba"
export TRITON_CACHE_DIR="${TRITON_CACHE_DIR:-/tmp/triton_cache}"
DEADLINE="${DEADLINE:-560}"
OUT="${OUT:-benchmarks/results}"
timeout $((DEADLINE - 20)) bash scripts/build_mamba.sh build > /tmp/build_mamba.log 2>&1 &
build=$!
timeout "${TEST_TIMEOUT:-300}" python3 -m pytest -q -x -p no:cacheprovider tests/test_cuda.py -k fla 2>&1 | tail -30
echo "convert-fla test finished after ${SECONDS}s"
wait "$build"
echo "mamba build exited with $? after ${SECONDS}s"; tail -5 /tmp/build_mamba.log
python3 -c 'import fla.layers.mamba as m; assert m.is_fast_path_available' || exit 1
OUT="$OUT" bash scripts/build_mamba.sh export
left=$((DEADLINE - SECONDS))
# Mamba's training starts here and, stopped by the deadline, saves a checkpoint that the next call on the
# same machine resumes (gpu_compare.sh).
MODELS=mamba ZERO_SHOT_MODELS=none DEADLINE=$left MIN_TRAIN=60 TRAIN_TIMEOUT=$left bash scripts/gpu_compare.sh
echo "done after ${SECONDS}s"
