#!/usr/bin/env bash
# fla's Mamba trains on mamba-ssm's CUDA kernels (`selective_scan_cuda`, through `mamba_inner_fn`) and
# causal-conv1d's (`causal_conv1d_cuda`); without them it falls back to a per-token PyTorch loop. PyPI has
# both only as source packages that compile at install, and the GPU machine cannot fetch prebuilt wheels.
#   bash scripts/build_mamba.sh pack   (here)  the two source packages into .carry/src (plus ninja's wheel),
#        with three edits: setup.py builds for the H200 alone (sm_90, instead of eight architectures);
#        the kernels are instantiated only for the types fla's Mamba uses (TRIM=1, the default: bf16 or
#        float32 activations, real float32 A; the full build's packages were 61 MB compressed, too large
#        to carry beside the corpus); mamba_ssm/__init__.py imports its Mamba-2/3 modules only if it can
#        (they pull optional packages the GPU image lacks; fla needs only the selective-scan functions).
#   bash scripts/build_mamba.sh build  (GPU machine)  compiles both into wheels, installs them into
#        $SITE (default /tmp/site_mamba; add it to PYTHONPATH) and checks that fla sees its fast path.
#        Idempotent: a second call on the same machine only checks; where .carry holds the parts that
#        `export` wrote, it unpacks those instead of compiling (~400 s on the 32-core machine). Compiles at
#        low priority on the cores above 8, so that training runs beside it keep theirs.
#   bash scripts/build_mamba.sh export (GPU machine)  $SITE as xz parts of 15 MB in $OUT (files back from a
#        call are limited to 16 MiB each); put them in .carry for the next call.
set -euo pipefail
MAMBA=2.3.2.post1
CONV=1.7.0
SITE="${SITE:-/tmp/site_mamba}"
if [ "${1:-}" = pack ]; then
  mkdir -p .carry/src && cd .carry/src
  rm -rf "mamba_ssm-$MAMBA" "causal_conv1d-$CONV"
  for spec in "mamba-ssm $MAMBA" "causal-conv1d $CONV"; do  # the source package's address from PyPI's JSON
    set -- $spec
    url=$(curl -sf "https://pypi.org/pypi/$1/json" | python3 -c 'import json, sys
print(next(u["url"] for u in json.load(sys.stdin)["releases"][sys.argv[1]] if u["packagetype"] == "sdist"))' "$2")
    curl -sfL "$url" | tar -xz
  done
  python3 -m pip download -q --no-deps --only-binary=:all: --platform manylinux2014_x86_64 -d . ninja==1.13.2
  python3 - "mamba_ssm-$MAMBA" "causal_conv1d-$CONV" <<'EOF'
import os, pathlib, re, sys
for src in sys.argv[1:]:
    setup = pathlib.Path(src, "setup.py")
    text = setup.read_text()
    anchor = "    # HACK: The compiler flag"
    assert text.count(anchor) == 1, f"{setup}: the architecture list moved"
    text = text.replace(anchor, '    cc_flag = ["-gencode", "arch=compute_90,code=sm_90"]  # the H200 only\n\n' + anchor)
    setup.write_text(text)
# Only the types fla's Mamba uses (bf16 or float32 activations; float32 real A; conv weights in float32
# or bf16): without the fp16 and complex instantiations the two extensions build in less time and pack
# small enough to carry beside the corpus. Unset TRIM to build everything.
if os.environ.get("TRIM", "1") == "1":
    half = re.compile(r"if \((\w+) == at::ScalarType::Half\) \{\s*\\\s*using \w+ = at::Half;\s*\\\s*"
                      r"__VA_ARGS__\(\);\s*\\\s*\} else if")
    cplx = re.compile(r"\} else if \(WTYPE == at::ScalarType::ComplexFloat\) \{\s*\\\s*using weight_t = "
                      r"c10::complex<float>;\s*\\\s*__VA_ARGS__\(\);\s*\\\s*\}")
    inst = re.compile(r"^template void .*(at::Half|complex_t).*$\n?", re.M)
    for src in sys.argv[1:]:
        for cpp in pathlib.Path(src, "csrc").rglob("*.cpp"):
            text, n_half = half.subn("if", cpp.read_text())
            text, n_cplx = cplx.subn("}", text)
            if n_half or n_cplx:
                cpp.write_text(text)
                print(f"{cpp}: {n_half} half and {n_cplx} complex dispatch branches removed")
        for cu in pathlib.Path(src, "csrc").rglob("*.cu"):
            text, n = inst.subn("", cu.read_text())
            cu.write_text(text)
            print(f"{cu}: {n} instantiations removed")
        setup = pathlib.Path(src, "setup.py")
        lines = setup.read_text().splitlines(keepends=True)
        drop = [line for line in lines if line.strip().startswith('"csrc/') and ("fp16" in line or "complex" in line)]
        setup.write_text("".join(line for line in lines if line not in drop))
        print(f"{setup}: {len(drop)} sources dropped")
init = pathlib.Path(sys.argv[1], "mamba_ssm", "__init__.py")
lines = init.read_text().splitlines()
optional = [line for line in lines if line.startswith("from mamba_ssm.m")]
kept = [line for line in lines if not line.startswith("from mamba_ssm.m")]
kept += ["try:"] + ["    " + line for line in optional] + ["except ImportError:", "    pass"]
init.write_text("\n".join(kept) + "\n")
EOF
  du -sh .
  exit 0
fi
if [ "${1:-}" = export ]; then  # the built packages as parts of at most 15 MB in $OUT, to carry in .carry
  tar -C "$SITE" -cf - . | xz -T0 -9 | split -b 15m -d - "$OUT/mamba_site.tar.xz.part"
  ls -la "$OUT"/mamba_site.tar.xz.part*
  exit 0
fi
[ "${1:-}" = build ] || { echo "usage: $0 pack|build|export" >&2; exit 2; }
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
check() {
  python3 -c 'import torch, selective_scan_cuda, causal_conv1d_cuda
import fla.layers.mamba as m
assert m.is_fast_path_available, "fla does not see the mamba-ssm fast path"
print("mamba-ssm fast path: available")'
}
if [ -d "$SITE/mamba_ssm" ] && check; then exit 0; fi
if ls .carry/mamba_site.tar.xz.part* >/dev/null 2>&1; then  # brought back from an earlier build (`export`)
  mkdir -p "$SITE" && cat .carry/mamba_site.tar.xz.part* | tar -xJ -C "$SITE" && check && exit 0
fi
if ! command -v ninja >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --target /tmp/ninja .carry/src/ninja-*.whl
  export PATH="/tmp/ninja/bin:$PATH"
fi
cores=$(nproc)
pin=""
[ "$cores" -gt 12 ] && pin="taskset -c 8-$((cores - 1))"
wheels=/tmp/mamba_wheels
mkdir -p "$wheels" "$SITE"
start=$SECONDS
(cd ".carry/src/causal_conv1d-$CONV" && TORCH_CUDA_ARCH_LIST=9.0 CAUSAL_CONV1D_FORCE_BUILD=TRUE MAX_JOBS=4 nice -n 19 $pin \
  python3 -m pip wheel -v --no-build-isolation --no-deps --no-index -w "$wheels" .) > /tmp/build_causal_conv1d.log 2>&1 &
(cd ".carry/src/mamba_ssm-$MAMBA" && TORCH_CUDA_ARCH_LIST=9.0 MAMBA_FORCE_BUILD=TRUE MAX_JOBS=12 nice -n 19 $pin \
  python3 -m pip wheel -v --no-build-isolation --no-deps --no-index -w "$wheels" .) > /tmp/build_mamba_ssm.log 2>&1 &
status=0
wait %1 || status=1
wait %2 || status=1
echo "built in $((SECONDS - start)) s (status $status)"; ls -la "$wheels"
if [ "$status" != 0 ]; then tail -40 /tmp/build_causal_conv1d.log /tmp/build_mamba_ssm.log; exit 1; fi
python3 -m pip install -q --no-index --no-deps --no-compile --target "$SITE" "$wheels"/*.whl
check
