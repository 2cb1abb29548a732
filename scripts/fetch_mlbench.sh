#!/usr/bin/env bash
# Unpack Debian's r-cran-mlbench (the UCI sets as R data files) into .cache/mlbench without installing it,
# for `assocmem tabular`. Needs apt (a Debian/Ubuntu machine) and access to the Debian archive.
set -euo pipefail
dest="${1:-.cache/mlbench}"
tmp="$(mktemp -d)"
(cd "$tmp" && apt-get download r-cran-mlbench >/dev/null)
mkdir -p "$dest"
dpkg-deb -x "$tmp"/r-cran-mlbench_*.deb "$dest"
rm -rf "$tmp"
echo "mlbench data in $dest/usr/lib/R/site-library/mlbench/data"
