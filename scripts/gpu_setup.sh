# Sourced by the GPU-call scripts (gpu_batch.sh, gpu_compare.sh, gpu_kernels.sh); `gpu_setup` is the
# machine's one-time setup, safe when several jobs of a call run it at once (each step runs once per machine):
#   - the carried wheels (.whl) installed into /tmp/site, and PYTHONPATH set to the checkout and them;
#   - fla's Triton autotuning results restored from .carry/triton_autotune.tgz into TRITON_CACHE_DIR
#     (fla's kernels autotune at first use: dozens of configurations per kernel, seconds of compilation
#     each); `save_autotune DIR` packs them into DIR/triton_autotune.tgz for the next call to carry.
export PYTHONUNBUFFERED=1
export TRITON_CACHE_DIR="${TRITON_CACHE_DIR:-/tmp/triton_cache}"
mkdir -p "$TRITON_CACHE_DIR"
gpu_setup() {
  export PYTHONPATH="$PWD"
  if ls .whl/*.whl >/dev/null 2>&1; then
    if [ ! -f /tmp/site/.installed ]; then  # other jobs of the call may already be importing from it
      python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .whl/*.whl && touch /tmp/site/.installed
    fi
    export PYTHONPATH="$PWD:/tmp/site"
  fi
  if [ -f .carry/triton_autotune.tgz ] && [ ! -f "$TRITON_CACHE_DIR/.restored" ]; then
    tar -xzf .carry/triton_autotune.tgz -C "$TRITON_CACHE_DIR" && touch "$TRITON_CACHE_DIR/.restored"
  fi
}
save_autotune() {  # DIR: the autotuning results of this machine as DIR/triton_autotune.tgz
  local out
  out=$(mkdir -p "$1" && cd "$1" && pwd)
  (cd "$TRITON_CACHE_DIR" && find . -name '*.autotune.json' | tar -czf "$out/triton_autotune.tgz" -T -)
  tar -tzf "$out/triton_autotune.tgz" | wc -l
}
