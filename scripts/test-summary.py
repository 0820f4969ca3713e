#!/usr/bin/env python3
"""Totals the TAP results of every test program over one or more meson
build directories and prints the final line `N passed, N failed`.
Exit status 1 if anything failed or a program crashed without TAP output."""
import json, re, sys

passed = failed = skipped = 0
bad = []
for d in sys.argv[1:]:
    try:
        lines = open(f"{d}/meson-logs/testlog.json").read().splitlines()
    except OSError as e:
        print(f"test-summary: {e}")
        failed += 1
        continue
    for line in lines:
        t = json.loads(line)
        out = t.get("stdout") or ""
        ok = nok = sk = 0
        for l in out.splitlines():
            if re.match(r"^ok \d+", l):
                if re.search(r"#\s*SKIP", l, re.I):
                    sk += 1
                else:
                    ok += 1
            elif re.match(r"^not ok \d+", l):
                nok += 1
        if t["result"] not in ("OK", "SKIP", "EXPECTEDFAIL") and nok == 0:
            nok = 1
        if nok:
            bad.append(f'{d}: {t["name"]} ({t["result"]})')
        passed += ok
        failed += nok
        skipped += sk
for b in bad:
    print(f"FAILED: {b}")
if skipped:
    print(f"{skipped} skipped")
print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
