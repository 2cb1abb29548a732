#!/usr/bin/env bash
# Several GPU jobs side by side in one call on a multi-GPU machine, and their results packed so that they
# come back (a call returns at most 8 files):
#   bash scripts/gpu_batch.sh "0:MODELS=gla bash scripts/gpu_compare.sh" "2,3:bash scripts/gpu_recall.sh followup"
# Each argument is GPUS:COMMAND; the command runs with CUDA_VISIBLE_DEVICES=GPUS, writes its results into
# $OUT, and its console output goes to $OUT/jobN.log. Every job is stopped DEADLINE seconds after the start.
# Before the jobs: the carried wheels and Triton autotuning results are set up once (scripts/gpu_setup.sh).
# After them: the autotuning results go to
# $OUT/triton_autotune.tgz (carry it next time), files named *.part* stay as they are (large parts, e.g.
# scripts/build_mamba.sh export), and everything else in $OUT is packed into $OUT/results.tgz.
set -uo pipefail
OUT="${OUT:-benchmarks/results}"
DEADLINE="${DEADLINE:-580}"
mkdir -p "$OUT"
source scripts/gpu_setup.sh && gpu_setup
nvidia-smi -L
n=0
for job in "$@"; do
  gpus=${job%%:*} command=${job#*:}
  echo "job$n on GPU(s) $gpus: $command"
  (export CUDA_VISIBLE_DEVICES=$gpus; timeout -k 15 $((DEADLINE - SECONDS)) bash -c "$command") > "$OUT/job$n.log" 2>&1 &
  n=$((n + 1))
done
wait
echo "jobs done after ${SECONDS}s"
save_autotune "$OUT"
(cd "$OUT" && find . -type f ! -name '*.part*' ! -name triton_autotune.tgz ! -name results.tgz -printf '%P\n' \
  | tar -czf results.tgz -T - --remove-files)
find "$OUT" -mindepth 1 -type d -empty -delete
ls -la "$OUT"
