#!/usr/bin/env bash
# make demo: runs the demonstration from a build directory: the PV guest
# under `memvisor run` once it exists, else the scripted frame-table scenario.
set -euo pipefail
dir=${1:-build}
if [ -x "$dir/src/cli/memvisor" ] && [ -f "$dir/guest/pvkernel" ]; then
    exec "$dir/src/cli/memvisor" demo
fi
if [ -x "$dir/tools/frame-demo/memvisor-frame-demo" ]; then
    exec "$dir/tools/frame-demo/memvisor-frame-demo"
fi
echo "memvisor: no demo program built" >&2
exit 1
