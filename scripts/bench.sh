#!/usr/bin/env bash
# Runs every benchmark of a release build directory.
set -euo pipefail
dir=${1:-build-bench}
found=0
for b in "$dir"/bench/*/bench-*; do
    [ -f "$b" ] && [ -x "$b" ] || continue
    found=1
    echo "== ${b##*/}"
    "$b"
done
[ $found -eq 1 ] || echo "no benchmarks built"
