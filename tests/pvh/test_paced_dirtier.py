#!/usr/bin/env python3
"""test_paced_dirtier.py MEMVISOR PVKERNEL (TAP)

The PV guest's dirtier paced as bench/compare runs it beside the PVH
workload guest (guest/README.md, `dirty` with rate=, hb=, tsc_khz=): 4096
pages (16 MiB, within work_pfns) and 12288 pages (48 MiB: its pfn list in
pages of its own) of a 64 MiB guest rewritten at 32 MiB/s for three
passes, with heartbeats every 100 ms; tsc_khz is the host's (KVM_GET_TSC_KHZ).
Checks: exit 0 and 'dirty: pass' (every page verified every pass), the
heartbeats' dirtied counts grow at up to 32 MiB/s (at least 10: a loaded
host deschedules the vCPU at times, and the backlog is capped, not caught
up), their guest time advances by ~100 ms each, bad=0 throughout.  Without tsc_khz the
workload refuses rate= with a FAIL line (exit 3): the pacing never guesses
the clock.

Where KVM is not usable (or memvisor exits 69) the program is skipped.
"""
import os
import re
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                '..', 'lib'))
import kvmtap  # noqa: E402

HB = re.compile(r'^dirty: hb (\d+) t=(\d+) dirtied=(\d+) gap=(\d+) bad=(\d+)$')


def run(memvisor, kernel, cmdline):
    cmd = [memvisor, 'run', kernel, '--mem', '64', '--vcpus', '1',
           '--cmdline', cmdline]
    print('# ' + ' '.join(cmd), flush=True)
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    for line in r.stdout.splitlines():
        print('# ' + line)
    for line in r.stderr.splitlines():
        print('# stderr: ' + line)
    return r


def main():
    memvisor, kernel = sys.argv[1], sys.argv[2]
    if not kvmtap.start():
        return 0
    khz = kvmtap.tsc_khz()
    print(f'# host TSC {khz} kHz (KVM_GET_TSC_KHZ)')
    checks = []
    for pages in (4096, 12288):
        r = run(memvisor, kernel, f'dirty pages={pages} passes=3 rate=32 '
                                  f'hb=100 tsc_khz={khz}')
        if r.returncode == 69:
            print('1..0 # SKIP memvisor: KVM not available', flush=True)
            return 0
        lines = r.stdout.splitlines()
        hbs = [tuple(int(x) for x in m.groups())
               for m in (HB.match(x.strip()) for x in lines) if m]
        ticks = [b[1] - a[1] for a, b in zip(hbs, hbs[1:])]
        tmed = statistics.median(ticks) if ticks else 0
        # the rate over the run in guest time (a loaded host deschedules the
        # vCPU at times: the backlog is capped, not caught up)
        rate = 0.0
        if len(hbs) >= 2 and hbs[-1][1] > hbs[0][1]:
            rate = ((hbs[-1][2] - hbs[0][2]) * 4096 / 2**20 /
                    ((hbs[-1][1] - hbs[0][1]) / 1e6))
        checks += [
            (r.returncode == 0 and 'dirty: pass' in lines,
             f'{pages} pages: exit 0 and dirty: pass (got {r.returncode})'),
            (f'dirty: filled {pages} pages, rate 32 MiB/s, heartbeat 100 ms'
             in lines, f'{pages} pages: all allocated and filled'),
            (len(hbs) >= 5, f'{pages} pages: heartbeats ({len(hbs)})'),
            (10 <= rate <= 33.5, f'{pages} pages: {rate:.1f} MiB/s over the '
                                 'run, of 32 asked'),
            (90000 <= tmed <= 110000, f'{pages} pages: heartbeats {tmed} us '
                                      'apart in guest time (100 ms asked)'),
            (all(h[4] == 0 for h in hbs), f'{pages} pages: bad=0 throughout'),
        ]
    r = run(memvisor, kernel, 'dirty pages=64 passes=2 rate=32')
    checks.append((r.returncode == 3 and any(
        'rate= and hb= need tsc_khz=' in x for x in r.stdout.splitlines()),
        f'rate= without tsc_khz= is refused (exit {r.returncode}, FAIL line)'))
    return kvmtap.report(checks)


if __name__ == '__main__':
    sys.exit(main())
