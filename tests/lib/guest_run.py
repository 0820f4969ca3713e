#!/usr/bin/env python3
"""guest_run.py --expect pass|lost-write -- MEMVISOR run IMAGE ... (TAP)

Runs the PV guest through `memvisor run` and checks what the guest itself
reported on its console (guest/kernel.c's lines), not only the exit status:

  pass        exit status 0, 'guest: pass', '<workload>: pass' for every
              workload word of --cmdline, and with --audit-every a clean
              final audit with no failed audit while paused;
  lost-write  the dirtier's own test (inject-lost-write=P drops one write in
              pass P): exit status 3 (the guest's SHUTDOWN_crash, not a
              failure to start), exactly one 'FAIL: dirty vcpu 0: pass P+1
              pfn N: stale-counter at word W' line, 'bad=1' and
              'dirty: FAIL (1 failures)'.

Where KVM is not usable (or MEMVISOR_TEST_NO_KVM is set), or memvisor
exits 69 (EX_UNAVAILABLE: no usable /dev/kvm), the program is skipped:
'1..0 # SKIP reason'.  The console goes to the log as TAP comments.
"""
import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kvmtap  # noqa: E402

EX_UNAVAILABLE = 69
SHUTDOWN_CRASH = 3
WORKLOADS = ('abi', 'dirty', 'ptchurn', 'balloon', 'hostile')


def option(argv, name, default=None):
    return argv[argv.index(name) + 1] if name in argv[:-1] else default


def main():
    args = sys.argv[1:]
    if len(args) < 4 or args[0] != '--expect' or args[2] != '--':
        print(__doc__, file=sys.stderr)
        return 2
    expect, cmd = args[1], args[3:]
    why = kvmtap.unusable()
    if why:
        print(f'1..0 # SKIP KVM tests did not run: {why}', flush=True)
        print(f'\n*** SKIPPING: {why} ***\n', file=sys.stderr)
        return 0
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if r.returncode == EX_UNAVAILABLE:
        print(f'1..0 # SKIP memvisor: KVM not available: '
              f'{r.stderr.strip().splitlines()[-1] if r.stderr.strip() else ""}',
              flush=True)
        return 0
    kvmtap.note_flavour()
    for line in r.stdout.splitlines():
        print('# ' + line)
    for line in r.stderr.splitlines():
        print('# stderr: ' + line)
    out, err, code = r.stdout, r.stderr, r.returncode
    checks = []
    if expect == 'pass':
        words = (option(cmd, '--cmdline', '') or '').split()
        checks.append((code == 0, f'exit status 0 (got {code})'))
        checks.append(('guest: pass' in out.splitlines(),
                       "the guest's verdict: 'guest: pass'"))
        for w in (w for w in words if w in WORKLOADS):
            checks.append((f'{w}: pass' in out.splitlines(),
                           f"'{w}: pass' on the console"))
        if '--audit-every' in cmd:
            m = re.search(r'audits while paused: (\d+) \((\d+) failed\); '
                          r'final audit: clean', err)
            checks.append((m is not None and int(m.group(1)) > 0
                           and m.group(2) == '0',
                           'audits while paused, none failed; final audit '
                           'clean'))
    elif expect == 'lost-write':
        p = int(re.search(r'inject-lost-write=(\d+)',
                          option(cmd, '--cmdline', '')).group(1))
        checks.append((code == SHUTDOWN_CRASH,
                       f'exit status {SHUTDOWN_CRASH}, the guest\'s own '
                       f'crash (got {code})'))
        stale = re.findall(rf'^FAIL: dirty vcpu 0: pass {p + 1} pfn \d+: '
                           r'stale-counter at word \d+$', out, re.M)
        fails = re.findall(r'^FAIL: ', out, re.M)
        checks.append((len(stale) == 1 and len(fails) == 1,
                       f'the guest reports the one lost write: a stale '
                       f'counter in pass {p + 1} ({len(stale)} such, '
                       f'{len(fails)} FAIL lines)'))
        checks.append((re.search(r'^dirty: .*\bbad=1\b', out, re.M) is not None
                       and 'dirty: FAIL (1 failures)' in out.splitlines(),
                       "the dirtier's summary: bad=1, 1 failure"))
    else:
        print(f'unknown --expect {expect}', file=sys.stderr)
        return 2
    print(f'1..{len(checks)}')
    for i, (good, what) in enumerate(checks, 1):
        print(f'{"ok" if good else "not ok"} {i} - {what}')
    return 0 if all(good for good, _ in checks) else 1


sys.exit(main())
