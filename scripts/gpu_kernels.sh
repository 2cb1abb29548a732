#!/usr/bin/env bash
# One call on the GPU machine for the Triton kernels: the GPU tests, then (STEPS) the per-kernel profile,
# a training-step profile of two comparison models, the launch-settings sweep and the benchmark against fla
# and SDPA (and long_tile32: the long shape with narrower state tiles; models_conv: the 340M model with the
# short convolution's kernels off and on; ab_v22 / ab_v22b: version 22's candidates; models: the 340M models;
# compile_check: the compile tests and the compiled model). Results land in $OUT. Carry .whl (fla's two
# pure-Python wheels).
set -uo pipefail
OUT="${OUT:-benchmarks/results}"
STEPS="${STEPS:-tests sweep bench}"
source scripts/gpu_setup.sh && gpu_setup  # the carried wheels (fla's) into /tmp/site, once per machine
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
for step in $STEPS; do
  case "$step" in
    # TEST_WORKERS (default 4) pytest-xdist processes where it is installed: the GPU tests spend most of their
    # time compiling kernels on the host's CPUs, and every call of version 14 ran out of its test budget serially.
    # Each process gets its share of the host's CPU threads: six processes with every thread each failed three
    # tests with CPU references (version 15).
    tests) workers=$(python3 -c "import xdist" 2>/dev/null && echo "-n ${TEST_WORKERS:-4}")
           [ -n "$workers" ] && export OMP_NUM_THREADS=$(( $(nproc) / ${TEST_WORKERS:-4} > 0 ? $(nproc) / ${TEST_WORKERS:-4} : 1 ))
           timeout "${TEST_TIMEOUT:-330}" python3 -m pytest -v -p no:cacheprovider --durations=15 --tb=short $workers \
             --timeout="${TEST_EACH_TIMEOUT:-120}" tests/ops/test_delta_rule_triton.py tests/test_cuda.py \
             tests/data/test_mqar.py -k "${TEST_FILTER:-triton or deltanet or fla or layout}" 2>&1 | grep -v "^$" > "$OUT/gpu_kernels_tests.log"
           grep -E "PASSED|FAILED|ERROR|passed|failed|Error|assert" "$OUT/gpu_kernels_tests.log" | tail -60 ;;
    profile) timeout 120 python3 scripts/profile_triton.py 128 4096 2>&1 | tee "$OUT/triton_profile_h200.txt" ;;
    model_profile) timeout "${MODEL_PROFILE_TIMEOUT:-120}" python3 scripts/profile_model.py ${MODEL_PROFILE_ARGS:-} \
             configs/compare/deltanet.toml configs/compare/transformerpp.toml 2>&1 | tee "$OUT/model_profile_h200.txt" ;;
    sweep) timeout "${SWEEP_TIMEOUT:-300}" python3 scripts/sweep_triton.py "$OUT/triton_sweep.json" ${SWEEP_HEADS:-} 2>&1 | tail -60 ;;
    bench) [ -f "$OUT/triton_sweep.json" ] && export ASSOCMEM_TRITON_TUNED="$OUT/triton_sweep.json"  # this call's sweep
           timeout "${BENCH_TIMEOUT:-420}" python3 -m assocmem bench delta-rule --device cuda ${BENCH_ARGS:-} --out "$OUT/delta_rule_cuda.json" 2>&1 \
             | tee "$OUT/delta_rule_cuda.log" ;;
    # The 340M DeltaNet model eager, with the short convolution's Triton kernels off (fla's model in the same
    # run) and on (ASSOCMEM_TRITON_SHORT_CONV=1), after their GPU test.
    models_conv) timeout 200 python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py -k short_conv 2>&1 | tail -5 \
             | tee "$OUT/short_conv_tests.log"
           for conv in 0 1; do
             ASSOCMEM_TRITON_SHORT_CONV=$conv timeout "${MODELS_TIMEOUT:-300}" python3 -m assocmem bench models --device cuda \
               --size 340m --arch deltanet --batch 8 --seq-len 2048 --decode-batch 16 --prompt-len 512 --new-tokens 16 \
               $([ $conv = 1 ] && echo --no-fla) --out "$OUT/models_cuda_conv$conv.json" 2>&1 | tee "$OUT/models_cuda_conv$conv.log"
           done ;;
    # Version 22's candidates (NOTES.md "Next (version 22)"): their GPU tests, then an A/B against the default
    # with fla in the same rounds (benchmarks/results/ab_v22a_variants.json).
    ab_v22) workers=$(python3 -c "import xdist" 2>/dev/null && echo "-n ${TEST_WORKERS:-4}")
           timeout "${TEST_TIMEOUT:-280}" python3 -m pytest -q -p no:cacheprovider $workers tests/test_cuda.py \
             -k "(pipelined and wu) or reverse_pass_from_w" 2>&1 | tail -15 | tee "$OUT/gpu_tests_v22.log"
           timeout "${AB_TIMEOUT:-300}" python3 scripts/ab_triton.py "$OUT/ab_v22a.json" \
             --variants benchmarks/results/ab_v22a_variants.json --D 128 64 --T 2048 8192 16384 --rounds 3 \
             --passes fwd+bwd 2>&1 | tee "$OUT/ab_v22a.log" | grep "D=" ;;
    # Version 22, second round: the W/U forward with the reverse pass from W where the backward is pipelined, and
    # the pipelines' segments cut unevenly (PIPELINE_FWD_CUTS / PIPELINE_BWD_CUTS; ab_v22b_variants.json).
    ab_v22b) timeout "${AB_TIMEOUT:-300}" python3 scripts/ab_triton.py "$OUT/ab_v22b.json" \
             --variants benchmarks/results/ab_v22b_variants.json --D 128 64 --T 8192 16384 --rounds 3 \
             --passes fwd+bwd 2>&1 | tee "$OUT/ab_v22b.log" | grep "D=" ;;
    # The 340M models eager (every preset and fla's DeltaNet), then our DeltaNet compiled: speed and peak memory.
    models) timeout "${MODELS_TIMEOUT:-300}" python3 -m assocmem bench models --device cuda --size 340m --batch 8 \
              --seq-len 2048 --decode-batch 16 --prompt-len 512 --new-tokens 32 --out "$OUT/models_cuda.json" 2>&1 \
              | tee "$OUT/models_cuda.log" | tail -8
            timeout "${MODELS_TIMEOUT:-300}" python3 -m assocmem bench models --device cuda --size 340m --arch deltanet \
              --compile --batch 8 --seq-len 2048 --decode-batch 16 --prompt-len 512 --new-tokens 32 \
              --out "$OUT/models_cuda_compiled.json" 2>&1 | tee "$OUT/models_cuda_compiled.log" | tail -4 ;;
    # NOTES.md "Next (version 23)", item 1: the compile tests (the L2 norm, one tensor as q and k, the layer) and
    # the compile diagnosis on this card's torch, then our DeltaNet model compiled with fla's in the same run.
    compile_check) timeout 240 python3 -m pytest -q -p no:cacheprovider tests/ops/test_delta_rule_triton.py \
             tests/modules/test_loss.py tests/modules/test_modules.py tests/test_cuda.py -k "torch_compile" 2>&1 \
             | tail -5 | tee "$OUT/gpu_compile_tests.log"
           python3 scripts/diag_l2_compile.py 2>&1 | grep -v -i warn | tee "$OUT/l2norm_compile_h200.log"
           timeout "${MODELS_TIMEOUT:-300}" python3 -m assocmem bench models --device cuda --size 340m --arch deltanet \
             --compile --batch 8 --seq-len 2048 --decode-batch 16 --prompt-len 512 --new-tokens 32 \
             --out "$OUT/models_cuda_compiled.json" 2>&1 | tee "$OUT/models_cuda_compiled.log" | tail -4 ;;
    # The forward's state pass with value tiles of 32 (twice the programs) at the long shape, where the default
    # tile of 64 leaves half the SMs idle (B x H x V / 64 = 64 programs at D = 64 and 128, T = 16384, B = 2).
    long_tile32) echo '{"64": {"chosen": {"state_fwd": {"num_warps": 4, "num_stages": 3, "tile_v": 32}}},
                        "128": {"chosen": {"state_fwd": {"num_warps": 4, "num_stages": 3, "tile_v": 32}}}}' > /tmp/tile32.json
           ASSOCMEM_TRITON_TUNED=/tmp/tile32.json timeout "${BENCH_TIMEOUT:-420}" python3 -m assocmem bench delta-rule --device cuda \
             --T 16384 --D 64 128 --no-memory --no-plot --out "$OUT/delta_rule_cuda_long_tile32.json" 2>&1 | tee "$OUT/delta_rule_cuda_long_tile32.log" ;;
  esac
done
