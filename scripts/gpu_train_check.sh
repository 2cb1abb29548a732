#!/usr/bin/env bash
# On the two-GPU machine: (1) training throughput and peak memory of the 340M presets on one H200,
# (2) FSDP2 on two GPUs against one GPU on the same global batch. Results land in $OUT.
set -uo pipefail
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
OUT="${OUT:-benchmarks/results}"
LOG="$OUT/gpu_train.log"
RUNS=/tmp/assocmem-runs
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$LOG"
common=(--set corpus='"stdlib"' --set cache_dir="\"$RUNS/cache\"" --set progress=false --set sample_tokens=0
        --set eval_every=1000 --set save_every=1000 --set keep_last=1)
# (1) 340M presets, one GPU, bf16 autocast, 8 x 2048 tokens per step, vocabulary 32000 (BPE on the corpus).
for preset in deltanet-340m transformer++-340m deltanet-swa-340m; do
  CUDA_VISIBLE_DEVICES=0 python3 -m assocmem train "${common[@]}" --set preset="\"$preset\"" --set vocab_size=32000 \
    --set seq_len=2048 --set batch_size=8 --set max_steps=25 --set warmup_steps=5 --set lr=3e-4 \
    --set document_masking=false --set log_every=5 --set eval_batches=2 --set out_dir="\"$RUNS/$preset\"" \
    2>&1 | tail -4 | tee -a "$LOG"
  cp "$RUNS/$preset/result.json" "$OUT/train_${preset//+/p}_h200.json" 2>/dev/null
done
# (2) FSDP2: the same 20 steps on 1 and 2 GPUs (global batch 16 x 512).
fsdp=("${common[@]}" --set preset='"deltanet-swa-small"' --set vocab_size=4096 --set seq_len=512 --set batch_size=16
      --set max_steps=20 --set warmup_steps=5 --set log_every=1 --set eval_batches=2)
CUDA_VISIBLE_DEVICES=0 python3 -m assocmem train "${fsdp[@]}" --set out_dir="\"$RUNS/one\"" 2>&1 | tail -2 | tee -a "$LOG"
torchrun --nproc_per_node 2 -m assocmem train "${fsdp[@]}" --set parallel='"fsdp"' --set out_dir="\"$RUNS/two\"" \
  2>&1 | tail -2 | tee -a "$LOG"
python3 scripts/compare_losses.py "$RUNS/one/log.csv" "$RUNS/two/log.csv" --out "$OUT/fsdp_h200.json" | tee -a "$LOG"
