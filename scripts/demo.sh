#!/usr/bin/env bash
# make demo: runs the demonstration from a build directory.
set -euo pipefail
dir=${1:-build}
if [ -x "$dir/src/cli/memvisor" ]; then
    exec "$dir/src/cli/memvisor" demo
fi
echo "memvisor: no demo program built yet" >&2
exit 1
