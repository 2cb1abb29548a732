#!/usr/bin/env bash
# One call on a GPU machine for the language-model comparison (README: "English text and zero-shot
# evaluation"): builds the tokenizer and token caches once, then trains the models in MODELS
# (configs/compare/NAME.toml): words separated by spaces go to different GPUs, names joined by commas run
# one after another on the same GPU ("deltanet,transformerpp deltanet-swa": two on GPU 0, one on GPU 1).
# Each model is scored on WikiText-2 test, and those in ZERO_SHOT_MODELS on the five zero-shot tasks; per
# model, one JSON (scripts/lm_compare.py collect) and its console log land in $OUT. AFTER (optional) is a
# command run on GPU AFTER_QUEUE (default 0) once its queue is done (e.g. the GPU tests of `convert fla`).
# Before the call, here: `bash scripts/gpu_compare.sh pack` (the corpus as .carry/english.tar.xz and a copy
# of ../shared/data/eval, which does not travel, in .carry/eval); carry ".carry" and ".whl" (fla's wheels
# for gla, lm-eval and its dependencies for the zero-shot tasks). Everything must finish inside one call:
# the checkpoints are too large to bring back.
set -uo pipefail
if [ "${1:-}" = pack ]; then
  mkdir -p .carry
  tar -cJf .carry/english.tar.xz data/english
  rm -rf .carry/eval && cp -r ../shared/data/eval .carry/eval
  du -sh .carry
  exit 0
fi
OUT="${OUT:-benchmarks/results}"
MODELS="${MODELS:-deltanet transformerpp}"
# The carried wheels and fla's autotuning results (scripts/gpu_setup.sh); `save-autotune` packs this
# machine's autotuning results into $OUT/triton_autotune.tgz, and a later call that carries that file in
# .carry starts from them (GLA had not finished its first step after 7 minutes on a fresh machine).
source scripts/gpu_setup.sh
if [ "${1:-}" = save-autotune ]; then save_autotune "$OUT"; exit 0; fi
gpu_setup
# mamba-ssm and causal-conv1d for fla's Mamba: built on this machine by scripts/build_mamba.sh, or unpacked
# from the parts an earlier call exported into .carry (else built here, which takes most of a call)
if [[ " ${MODELS//,/ } " == *" mamba "* ]] && [ ! -d /tmp/site_mamba/mamba_ssm ]; then
  bash scripts/build_mamba.sh build || { echo "mamba-ssm is not available"; rm -rf /tmp/site_mamba; }
fi
[ -d /tmp/site_mamba ] && export PYTHONPATH="$PYTHONPATH:/tmp/site_mamba"
[ -d data/english ] || tar -xJf .carry/english.tar.xz
if [ ! -d ../shared/data/eval ]; then mkdir -p ../shared/data && cp -r .carry/eval ../shared/data/eval; fi
gpus=$(nvidia-smi -L 2>/dev/null | tee /dev/stderr | wc -l)
[ "$gpus" -gt 0 ] || gpus=1
# The tokenizer and the token caches once, before the runs share them.
python3 -c 'from assocmem.train.config import load_config; from assocmem.train.parallel import Distributed
from assocmem.train.trainer import prepare_data; prepare_data(load_config("configs/compare/deltanet.toml"), Distributed())'
ZERO_SHOT_MODELS="${ZERO_SHOT_MODELS:-deltanet transformerpp deltanet-swa deltanet-2attn}"
DEADLINE="${DEADLINE:-570}"  # seconds after the call's start by which every queue must be done
one_model() {  # NAME: train (within what the deadline leaves after the scoring), score, collect
  local m=$1 log="$OUT/$1.console.log" run="runs/compare/$1" zero_shot=0
  [[ " $ZERO_SHOT_MODELS " == *" $m "* ]] && zero_shot=${ZERO_SHOT_TIMEOUT:-120}
  local reserve=$((${WT2_TIMEOUT:-40} + zero_shot))  # what the scoring needs after the training
  if [ "$m" = mamba ] && [ ! -d /tmp/site_mamba/mamba_ssm ]; then  # not its per-token slow path
    echo "$m: not started, mamba-ssm's kernels are not installed"; return
  fi
  # A finished run (an earlier call on the same machine) is only scored. A run stopped by the time limit
  # (SIGTERM) saves a checkpoint; a later call on the same machine resumes it.
  if [ -f "$run/result.json" ]; then
    echo "$m: already trained in $run" | tee -a "$log"
  else
    local left=$((DEADLINE - SECONDS - reserve)) resume=""
    if [ "$left" -lt "${MIN_TRAIN:-150}" ]; then echo "$m: not started, ${left}s left for training"; return; fi
    [ "$left" -gt "${TRAIN_TIMEOUT:-400}" ] && left=${TRAIN_TIMEOUT:-400}
    ls -d "$run"/checkpoint-* >/dev/null 2>&1 && resume="--resume $run" && echo "$m: resuming $run"
    timeout -k 60 "$left" python3 -m assocmem train "configs/compare/$m.toml" --set progress=false $resume \
      ${TRAIN_ARGS:-} >> "$log" 2>&1
    echo "$m: training exited with $? after ${SECONDS}s of the call" | tee -a "$log"
  fi
  if [ ! -f "$run/result.json" ]; then echo "$m: not finished (resumable)"; return; fi
  # The scoring gets at least WT2_TIMEOUT seconds, and more where the deadline leaves more (fla's GLA needed
  # more than 40 s here before the scoring ran without a cache).
  local wt2=$((DEADLINE - SECONDS - zero_shot - 10))
  [ "$wt2" -lt "${WT2_TIMEOUT:-40}" ] && wt2=${WT2_TIMEOUT:-40}
  timeout "$wt2" python3 -m assocmem eval "$run" --wikitext2 --out "/tmp/$m.wikitext2.json" >> "$log" 2>&1
  if [ "$zero_shot" -gt 0 ]; then
    timeout "$zero_shot" python3 -m assocmem eval "$run" --batch-size 128 \
      --tasks arc_easy arc_challenge piqa hellaswag openbookqa --out "/tmp/$m.zeroshot.json" >> "$log" 2>&1
  fi
  python3 scripts/lm_compare.py collect "$m" "$run" /tmp "$OUT/compare_$m.json"
  echo "$m: done after ${SECONDS}s of the call"
}
# GPUs: those CUDA_VISIBLE_DEVICES names (a caller that gives this script some of the machine's), else all
if [ -n "${CUDA_VISIBLE_DEVICES:-}" ]; then IFS=, read -ra gpu_ids <<< "$CUDA_VISIBLE_DEVICES"
else read -ra gpu_ids <<< "$(seq -s ' ' 0 $((gpus - 1)))"; fi
i=0
for queue in $MODELS; do
  (
    export CUDA_VISIBLE_DEVICES=${gpu_ids[$((i % ${#gpu_ids[@]}))]}
    for m in ${queue//,/ }; do one_model "$m"; done
    if [ "$i" = "${AFTER_QUEUE:-0}" ] && [ -n "${AFTER:-}" ] && [ $((DEADLINE - SECONDS)) -gt 60 ]; then
      timeout $((DEADLINE - SECONDS)) bash -c "$AFTER"
    fi
  ) &
  i=$((i + 1))
done
wait
ls -la "$OUT"
