#!/usr/bin/env bash
# One call on a GPU machine (one or two H200s) for `assocmem recall`: the full MQAR grid, 16 runs at a time,
# each with a training-time budget; results in $OUT ($NAME.json, $NAME.png, $NAME.log; NAME=mqar).
# Several can share a GPU at once with different NAMEs (and CUDA_VISIBLE_DEVICES to pick the GPU).
# `bash scripts/gpu_recall.sh followup` (two GPUs): the follow-up runs described below.
# `bash scripts/gpu_recall.sh equal` (three GPUs): the other mixers at the follow-up's budget, described below.
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD"
OUT="${OUT:-benchmarks/results}"
NAME="${NAME:-mqar}"
if [ "${1:-}" = equal ]; then
  # The follow-up gave DeltaNet 7.6 minutes per run, 6 compiled runs on a GPU; the other mixers had only the
  # grid's 8 minutes shared by 16 eager runs. The same kind of budget for them (README, "MQAR"), same task
  # and training mixture, on three GPUs (the first three CUDA_VISIBLE_DEVICES names; fewer are shared):
  # linear attention (widths 64-512, lr 1e-3 and 5e-4: 8 runs), DeltaNet without convolution (the same 8),
  # and softmax attention with heads of 64 (the setting that reached 100 % at width 128; lr 1e-3) beside
  # DeltaNet at width 64 (lr 1e-3 and 5e-4): 6 runs.
  common="--widths 64 128 256 512 --train-kv-pairs 4 8 16 32 64 --compile"
  IFS=, read -ra gpu <<< "${CUDA_VISIBLE_DEVICES:-0,1,2}"
  left=$((${RECALL_TIMEOUT:-570} - SECONDS))
  minutes=$(python3 -c "print(round(($left - 45) / 60, 1))")
  each="MINUTES=$minutes RECALL_TIMEOUT=$left STEPS=200000"
  # EQUAL_PARTS picks some of the three parts (linear, noconv, attention), e.g. one per call on a one-GPU
  # machine; the chosen parts take the GPUs in order.
  k=0
  for part in ${EQUAL_PARTS:-linear noconv attention}; do
    g=${gpu[k % ${#gpu[@]}]}; k=$((k + 1))
    case $part in
      linear) env CUDA_VISIBLE_DEVICES=$g $each NAME="${NAME}_equal_linear" WORKERS=8 \
        RECALL_ARGS="--mixers linear --lrs 1e-3 5e-4 $common" bash "$0" & ;;
      noconv) env CUDA_VISIBLE_DEVICES=$g $each NAME="${NAME}_equal_noconv" WORKERS=8 \
        RECALL_ARGS="--mixers deltanet-noconv --lrs 1e-3 5e-4 $common" bash "$0" & ;;
      attention)
        env CUDA_VISIBLE_DEVICES=$g $each NAME="${NAME}_equal_attention" WORKERS=4 \
          RECALL_ARGS="--mixers attention --lrs 1e-3 $common" bash "$0" &
        env CUDA_VISIBLE_DEVICES=$g $each NAME="${NAME}_equal_deltanet64" WORKERS=2 \
          RECALL_ARGS="--mixers deltanet --lrs 1e-3 5e-4 $common --widths 64" bash "$0" & ;;
      *) echo "EQUAL_PARTS: unknown part '$part' (expected linear, noconv, attention)"; exit 2 ;;
    esac
  done
  wait
  exit 0
fi
if [ "${1:-}" = followup ]; then
  # One two-GPU call for the points the H200 grids left open (README, "MQAR"): DeltaNet at widths 128-512
  # with the whole call (6 runs on GPU 0) and softmax attention with one head at lower rates (8 runs on GPU
  # 1), the paper's setting with token-0 fillers and the training mixture of the earlier grids. Each run is
  # compiled unless a 20-step compiled smoke run fails here first.
  common="--train-kv-pairs 4 8 16 32 64"
  IFS=, read -ra gpu <<< "${CUDA_VISIBLE_DEVICES:-0,1}"  # the two GPUs: the first two named
  if ! CUDA_VISIBLE_DEVICES=${gpu[0]} timeout 120 python3 -m assocmem recall --device cuda --mixers deltanet --widths 64 --lrs 1e-3 --steps 20 \
      --compile --no-save --no-plot $common > "$OUT/${NAME}_compile_smoke.log" 2>&1; then
    echo "compiled smoke run failed: eager runs"; tail -5 "$OUT/${NAME}_compile_smoke.log"; compile=""
  else
    compile="--compile"
  fi
  left=$((${RECALL_TIMEOUT:-570} - SECONDS))
  minutes=$(python3 -c "print(round(($left - 45) / 60, 1))")
  CUDA_VISIBLE_DEVICES=${gpu[0]} NAME="${NAME}_followup_deltanet" WORKERS=6 MINUTES=$minutes RECALL_TIMEOUT=$left \
    STEPS=200000 RECALL_ARGS="--mixers deltanet --widths 128 256 512 --lrs 1e-3 5e-4 $compile $common" bash "$0" &
  CUDA_VISIBLE_DEVICES=${gpu[1]:-${gpu[0]}} NAME="${NAME}_followup_attention" WORKERS=8 MINUTES=$minutes RECALL_TIMEOUT=$left \
    STEPS=200000 RECALL_ARGS="--mixers attention --num-heads 1 --widths 64 128 256 512 --lrs 3e-4 1e-4 $compile $common" \
    bash "$0" &
  wait
  exit 0
fi
nvidia-smi -L
timeout "${RECALL_TIMEOUT:-540}" python3 -m assocmem recall --device cuda --workers "${WORKERS:-16}" \
  --steps "${STEPS:-20000}" --batch 64 --max-minutes "${MINUTES:-3.4}" ${RECALL_ARGS:-} \
  --out "$OUT/$NAME.json" 2>&1 | grep -v Warning | tee "$OUT/$NAME.log"
