#!/usr/bin/env python3
"""Totals the TAP results of every test program over one or more meson
build directories and prints the final line `N passed, N failed, N skipped`.

  scripts/test-summary.py [--where=TEXT] [--kvm-skipped=NAME,...] BUILD [BUILD...]

Reads BUILD/meson-logs/testlog.json (what `meson test` ran on the host) and,
if present, BUILD/meson-logs/testlog-vm.json (what tests/vm/kvm-suite ran in
the test VM).  Counting, per program: `ok N` passes, `ok N # SKIP` and a plan
`1..0 # SKIP` are skipped, `not ok N` fails (also `not ok N # SKIP`, as
meson's TAP parser has it).  A program that fails, crashes or times out
without a `not ok` line counts as one failure; a failure of the test VM
itself counts as one failure.  --kvm-skipped: KVM test programs that were
not run at all (no usable /dev/kvm, and the test VM forbidden), one skip each.
--where: where the KVM tests ran, printed before the totals.  --vm-only:
read only the test VM's logs (make check-vm).  --expect-vm: the KVM tests
were meant to run in the test VM: a build without its VM log is a failure.
Exit status 1 if anything failed."""
import json
import os
import re
import sys

passed = failed = skipped = 0
bad = []
args = []
kvm_skipped = []
where_text = None
vm_only = False
expect_vm = False
for a in sys.argv[1:]:
    if a.startswith("--kvm-skipped="):
        kvm_skipped += [n for n in a.split("=", 1)[1].split(",") if n]
    elif a == "--vm-only":
        vm_only = True
    elif a == "--expect-vm":
        expect_vm = True
    elif a.startswith("--where="):
        where_text = a.split("=", 1)[1]
    else:
        args.append(a)


def load(path):
    with open(path) as f:
        return [json.loads(l) for l in f.read().splitlines() if l.strip()]


for d in args:
    logs = []
    try:
        if not vm_only:
            logs += [(t, "host") for t in load(f"{d}/meson-logs/testlog.json")]
    except OSError as e:
        print(f"test-summary: {e}")
        failed += 1
    vm = f"{d}/meson-logs/testlog-vm.json"
    if os.path.exists(vm):
        logs += [(t, t.get("where", "test VM")) for t in load(vm)]
    elif vm_only or expect_vm:
        bad.append(f"{d}: the KVM tests in the test VM left no results (no {vm})")
        failed += 1
    for t, ran in logs:
        out = t.get("stdout") or ""
        ok = nok = sk = 0
        for l in out.splitlines():
            if re.match(r"^ok\b", l):
                if re.search(r"#\s*SKIP", l, re.I):
                    sk += 1
                else:
                    ok += 1
            elif re.match(r"^not ok\b", l):
                nok += 1
            elif re.match(r"^1\.\.0\b.*#\s*SKIP", l, re.I):
                sk += 1
        if t["result"] == "SKIP" and ok + nok + sk == 0:
            sk = 1
        if t["result"] not in ("OK", "SKIP", "EXPECTEDFAIL") and nok == 0:
            nok = 1
        if nok:
            why = t["result"]
            if t["result"] == "VMFAIL":
                why = "the test VM itself failed: " + (t.get("stderr") or "").strip()
            bad.append(f'{d}: {t["name"]} ({why}{"" if ran == "host" else ", in the " + ran})')
        passed += ok
        failed += nok
        skipped += sk
for name in kvm_skipped:
    print(f"SKIPPED: {name} (no usable /dev/kvm and MEMVISOR_TEST_VM=never)")
    skipped += 1
for b in bad:
    print(f"FAILED: {b}")
if where_text:
    print(f"KVM tests ran on: {where_text}")
print(f"{passed} passed, {failed} failed, {skipped} skipped")
sys.exit(1 if failed else 0)
