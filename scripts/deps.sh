#!/usr/bin/env bash
# Installs what the build and the tests need on Debian 12, once.
# Run as root (make demo / make check call it); does nothing when all is there.
set -euo pipefail
pkgs=(meson ninja-build pkg-config gcc clang libclang-rt-14-dev libcmocka-dev qemu-system-x86
      python3 binutils libzstd-dev gnuplot-nox)
missing=()
for p in "${pkgs[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "memvisor: installing ${missing[*]}"
if [ "$(id -u)" -ne 0 ]; then
    echo "memvisor: need root to install: ${missing[*]}" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq "${missing[@]}" >/dev/null
