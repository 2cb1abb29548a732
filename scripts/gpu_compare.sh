#!/usr/bin/env bash
# One call on a GPU machine for the language-model comparison (README: "English text and zero-shot
# evaluation"): builds the tokenizer and token caches once, then trains the models named in MODELS
# (configs/compare/NAME.toml), one per GPU at the same time, and scores each on WikiText-2 test and the five
# zero-shot tasks; per model, one JSON (scripts/lm_compare.py collect) and its console log land in $OUT.
# Before the call, here: `bash scripts/gpu_compare.sh pack` (the corpus as .carry/english.tar.xz and a copy
# of ../shared/data/eval, which does not travel, in .carry/eval); carry ".carry" and ".whl" (fla's wheels,
# for gla and mamba). Everything must finish inside one call: the checkpoints are too large to bring back.
set -uo pipefail
if [ "${1:-}" = pack ]; then
  mkdir -p .carry
  tar -cJf .carry/english.tar.xz data/english
  rm -rf .carry/eval && cp -r ../shared/data/eval .carry/eval
  du -sh .carry
  exit 0
fi
export PYTHONUNBUFFERED=1
OUT="${OUT:-benchmarks/results}"
MODELS="${MODELS:-deltanet transformerpp}"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH="$PWD:/tmp/site"
else
  export PYTHONPATH="$PWD"
fi
[ -d data/english ] || tar -xJf .carry/english.tar.xz
if [ ! -d ../shared/data/eval ]; then mkdir -p ../shared/data && cp -r .carry/eval ../shared/data/eval; fi
nvidia-smi -L
gpus=$(nvidia-smi -L | wc -l)
# The tokenizer and the token caches once, before the runs share them.
python3 -c 'from assocmem.train.config import load_config; from assocmem.train.parallel import Distributed
from assocmem.train.trainer import prepare_data; prepare_data(load_config("configs/compare/deltanet.toml"), Distributed())'
i=0
for m in $MODELS; do
  (
    export CUDA_VISIBLE_DEVICES=$((i % gpus))
    log="$OUT/$m.console.log"
    timeout "${TRAIN_TIMEOUT:-460}" python3 -m assocmem train "configs/compare/$m.toml" --set progress=false \
      ${TRAIN_ARGS:-} > "$log" 2>&1
    run="runs/compare/$m"
    timeout 90 python3 -m assocmem eval "$run" --wikitext2 --out "/tmp/$m.wikitext2.json" >> "$log" 2>&1
    timeout "${ZERO_SHOT_TIMEOUT:-150}" python3 -m assocmem eval "$run" --batch-size 64 \
      --tasks arc_easy arc_challenge piqa hellaswag openbookqa --out "/tmp/$m.zeroshot.json" >> "$log" 2>&1
    python3 scripts/lm_compare.py collect "$m" "$run" /tmp "$OUT/compare_$m.json"
  ) &
  i=$((i + 1))
done
wait
ls -la "$OUT"
