#!/usr/bin/env python3
"""check_disasm.py OBJDUMP OBJECT [--expect MNEMONIC]: fail if the object's
code uses an instruction that fails (or lies) in emulated ring 0 on the
emulating KVM (docs/quirks.md), or anything outside baseline general-register
x86-64.  With --expect, the check itself is tested: it must find MNEMONIC
(in a deliberately bad object) and report it."""
import re
import subprocess
import sys

FORBIDDEN = re.compile(
    r'^(int3|int|icebp|int1|xgetbv|xsetbv|xsave\w*|xrstor\w*|cmpxchg16b|'
    r'popcnt|lzcnt|tzcnt|andn|shlx|shrx|sarx|bextr|blsi|blsr|blsmsk|pdep|pext|'
    r'crc32|movbe|lar|lsl|verw|verr|rdtscp|rdpid|invpcid|clwb|'
    r'v\w+|\w*xmm\w*|movdq\w*|movap\w*|movup\w*|p\w+|\w+ps|\w+pd|'
    r'fxsave\w*|fxrstor\w*)$')
ALLOWED_P = {'push', 'pushq', 'pushf', 'pushfq', 'pop', 'popq', 'popf', 'popfq',
             'pause'}

out = subprocess.run([sys.argv[1], '-d', '--no-show-raw-insn', sys.argv[2]],
                     check=True, capture_output=True, text=True).stdout
bad = []
count = 0
for line in out.splitlines():
    m = re.match(r'^\s*[0-9a-f]+:\s+(\S+)', line)
    if not m:
        continue
    mnem = m.group(1)
    if mnem.startswith(('rex', 'lock', 'rep')):
        continue
    count += 1
    if mnem in ALLOWED_P:
        continue
    if FORBIDDEN.match(mnem):
        bad.append(line.strip())
expect = sys.argv[4] if len(sys.argv) > 4 and sys.argv[3] == '--expect' else None
print('1..1')
if expect:
    found = any(re.search(r'\s' + re.escape(expect) + r'\b', b) for b in bad)
    print(f'# forbidden instructions found: {bad}')
    print(('ok' if found else 'not ok') +
          f' 1 - the check catches {expect} in a bad image')
    sys.exit(0 if found else 1)
if bad:
    print('# forbidden in ring 0: ' + '; '.join(bad))
    print('not ok 1 - shim image uses failing instructions')
    sys.exit(1)
print(f'# {count} instructions checked')
print('ok 1 - shim image uses no instruction that fails in ring 0')
