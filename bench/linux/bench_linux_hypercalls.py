#!/usr/bin/env python3
"""bench-linux-hypercalls: which hypercalls Debian's Linux makes under
memvisor while it boots to its shell and during a fork burst, how often,
and what each costs in memvisor's handler.

Run: `make bench` (a release build), or directly
  build-bench/bench/linux/bench-linux-hypercalls [FORKS]
It prepares the guest with scripts/linux-guest, boots it on 1 vCPU with the
control socket, reads the `stats` counters (hypercalls and hypercall_ns per
type) when the shell prompt appears, runs FORKS (default 200) /bin/true
processes from the shell, reads them again, and prints for each phase and
hypercall: calls, calls per second of the phase, mean handler time, and
that time as a ratio to xen_version's, measured in the same run (the
cheapest call: no work, Linux's force-callback).  Handler time excludes the
KVM exit and register transfer (docs/pv-on-kvm.md measures those);
sched_op includes the time a vCPU blocked.  Skips (exit 0, one line) where
KVM or the kernel package is not available.
"""
import json
import os
import select
import socket
import subprocess
import sys
import tempfile
import time

SOURCE_ROOT = '@SOURCE_ROOT@'
here = os.path.dirname(os.path.abspath(__file__))
memvisor = os.path.join(here, '..', '..', 'src', 'cli', 'memvisor')
forks = int(sys.argv[1]) if len(sys.argv) > 1 else 200

prep = subprocess.run([os.path.join(SOURCE_ROOT, 'scripts', 'linux-guest')],
                      stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                      text=True, check=False)
paths = dict(line.split(' ', 1) for line in prep.stdout.splitlines()
             if line.startswith(('kernel ', 'initrd ')))
if prep.returncode or 'kernel' not in paths or not os.access('/dev/kvm',
                                                             os.R_OK):
    print('bench-linux-hypercalls: skipped (no KVM or no kernel package)')
    sys.exit(0)
tmp = tempfile.mkdtemp(prefix='memvisor-bench-linux-')
sock = os.path.join(tmp, 'control')
proc = subprocess.Popen(
    [memvisor, 'run', '--kernel', paths['kernel'], '--initrd',
     paths['initrd'], '--append', 'console=hvc0 quiet', '--mem', '256',
     '--control', sock],
    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
console = b''


def wait_for(text, limit=300):
    global console
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        if text.encode() in console:
            return True
        r, _, _ = select.select([proc.stdout], [], [], 1.0)
        if r:
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                return False
            console += chunk
    return False


def stats():
    c = socket.socket(socket.AF_UNIX)
    c.connect(sock)
    f = c.makefile('rw')
    f.write('{"cmd":"stats"}\n')
    f.flush()
    s = json.loads(f.readline())
    c.close()
    return s


t0 = time.monotonic()
if not wait_for('/ # '):
    print('bench-linux-hypercalls: Linux did not reach its shell')
    proc.kill()
    sys.exit(1)
boot_s = time.monotonic() - t0
s_boot = stats()
t1 = time.monotonic()
console = b''
proc.stdin.write(f'i=0; while [ $i -lt {forks} ]; do /bin/true; '
                 f'i=$((i+1)); done; echo done-$((i*1))\n'.encode())
proc.stdin.flush()
wait_for(f'done-{forks}')
burst_s = time.monotonic() - t1
s_burst = stats()
proc.stdin.write(b'poweroff -f\n')
proc.stdin.flush()
try:
    proc.wait(timeout=60)
except subprocess.TimeoutExpired:
    proc.kill()


def table(title, secs, now, before):
    calls = {k: v - before.get('hypercalls', {}).get(k, 0)
             for k, v in now['hypercalls'].items()}
    ns = {k: v - before.get('hypercall_ns', {}).get(k, 0)
          for k, v in now['hypercall_ns'].items()}
    base = (ns.get('xen_version', 0) / calls['xen_version']
            if calls.get('xen_version') else 0)
    print(f'{title}: {secs:.1f} s, {sum(calls.values())} hypercalls')
    print(f'  {"hypercall":20} {"calls":>9} {"per s":>9} {"ns/call":>10} '
          f'{"x xen_version":>14}')
    for k in sorted(calls, key=lambda k: -calls[k]):
        if not calls[k]:
            continue
        per = ns[k] / calls[k]
        ratio = f'{per / base:.1f}' if base else '-'
        print(f'  {k:20} {calls[k]:9d} {calls[k] / secs:9.0f} {per:10.0f} '
              f'{ratio:>14}')
    for key in ('exits', 'privops', 'events_sent', 'upcalls', 'timer_fired',
                'wpt_emulated', 'syscalls'):
        print(f'  {key}: {now.get(key, 0) - before.get(key, 0)}')


table('boot to the shell prompt', boot_s, s_boot, {})
table(f'fork burst ({forks} processes)', burst_s, s_burst, s_boot)
