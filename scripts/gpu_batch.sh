#!/usr/bin/env bash
# Several GPU jobs side by side in one call on a multi-GPU machine, and their results packed so that they
# come back (a call returns at most 8 files):
#   bash scripts/gpu_batch.sh "0:MODELS=gla bash scripts/gpu_compare.sh" "2,3:bash scripts/gpu_recall.sh followup"
# Each argument is GPUS:COMMAND; the command runs with CUDA_VISIBLE_DEVICES=GPUS, writes its results into
# $OUT, and its console output goes to $OUT/jobN.log. Every job is stopped DEADLINE seconds after the start.
# Before the jobs: the carried wheels (.whl) are installed once into /tmp/site, and the carried Triton
# autotuning results (.carry/triton_autotune.tgz) restored. After them: the autotuning results go to
# $OUT/triton_autotune.tgz (carry it next time), files named *.part* stay as they are (large parts, e.g.
# scripts/build_mamba.sh export), and everything else in $OUT is packed into $OUT/results.tgz.
set -uo pipefail
export PYTHONUNBUFFERED=1
export TRITON_CACHE_DIR="${TRITON_CACHE_DIR:-/tmp/triton_cache}"
OUT="${OUT:-benchmarks/results}"
DEADLINE="${DEADLINE:-580}"
mkdir -p "$OUT" "$TRITON_CACHE_DIR"
if ls .whl/*.whl >/dev/null 2>&1 && [ ! -f /tmp/site/.installed ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    .whl/*.whl && touch /tmp/site/.installed
fi
if [ -f .carry/triton_autotune.tgz ] && [ ! -f "$TRITON_CACHE_DIR/.restored" ]; then
  tar -xzf .carry/triton_autotune.tgz -C "$TRITON_CACHE_DIR" && touch "$TRITON_CACHE_DIR/.restored"
fi
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
OUT="$OUT" bash scripts/gpu_compare.sh save-autotune
(cd "$OUT" && find . -type f ! -name '*.part*' ! -name triton_autotune.tgz ! -name results.tgz -printf '%P\n' \
  | tar -czf results.tgz -T - --remove-files)
find "$OUT" -mindepth 1 -type d -empty -delete
ls -la "$OUT"
