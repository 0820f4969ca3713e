#!/usr/bin/env bash
# make demo: runs the demonstration from a build directory: the PV guest's
# workloads under `memvisor demo`, on the host's /dev/kvm where it is usable,
# else in the test VM (tests/vm/run; MEMVISOR_TEST_VM=force uses the VM
# anyway, VM_NPT=0 picks its flavour without nested paging).  Without a
# memvisor and guest built, or with the test VM forbidden
# (MEMVISOR_TEST_VM=never) and no /dev/kvm, the scripted frame-table scenario.
set -euo pipefail
dir=${1:-build}
root=$(cd "$(dirname "$0")/.." && pwd)

frame_demo() {
    if [ -x "$dir/tools/frame-demo/memvisor-frame-demo" ]; then
        echo "memvisor: $1: the frame-table demonstration instead"
        exec "$dir/tools/frame-demo/memvisor-frame-demo"
    fi
    echo "memvisor: no demo program built" >&2
    exit 1
}

[ -x "$dir/src/cli/memvisor" ] && [ -f "$dir/guest/pvkernel" ] ||
    frame_demo "memvisor or its guest is not built"

where=$("$root/tests/vm/kvm-where")
case $where in
    host*)
        exec "$dir/src/cli/memvisor" demo ;;
    vm*)
        flag=--npt
        [ "${VM_NPT:-1}" = 0 ] && flag=--no-npt
        echo "memvisor: using ${where#*: }: \`memvisor demo\` runs there (QEMU emulating"
        echo "memvisor: an AMD CPU with SVM, Debian's kernel with kvm_amd; docs/test-vm.md)"
        exec "$root/tests/vm/run" "$flag" -- "$(cd "$dir" && pwd)/src/cli/memvisor" demo ;;
    *)
        frame_demo "${where#*: }" ;;
esac
