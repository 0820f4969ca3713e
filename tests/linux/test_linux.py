#!/usr/bin/env python3
"""test_linux.py MEMVISOR SOURCE_ROOT: Debian's own kernel (linux-image-amd64,
CONFIG_XEN_PV=y) booted as a PV guest of memvisor (TAP).

scripts/linux-guest fetches the kernel package (apt-get download, never
installed), takes the ELF out of vmlinuz and builds the busybox initramfs;
then `memvisor run --kernel --initrd --append` boots it with the control
socket on.  The test reads the guest console as it comes and checks the
milestones of Linux's PV boot that memvisor's ABI carries it through:
  - Xen's early console (console_io) prints Linux's first lines;
  - the kernel finds the hypervisor (the CPUID leaves behind Xen's
    forced-emulation prefix) and Xen 4.19 (xen_version);
  - it maps the m2p, switches to its own page tables (pinned, user bit
    set by memvisor), and reaches "Booting kernel on Xen";
the frame table is audited every second while it runs (guest paused);
then the test stops the domain over the control socket and checks every
audit, and the final one after the shutdown, were clean.

Where KVM is not usable, or the kernel package cannot be had (no apt
index, no network), every subtest is reported as skipped.
"""
import json
import os
import select
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                '..', 'lib'))
import kvmtap  # noqa: E402

memvisor, root = sys.argv[1], sys.argv[2]
MILESTONES = [
    ('early console: Linux banner', 'Linux version 6.'),
    ('the kernel found Xen PV', 'Hypervisor detected: Xen PV'),
    ('the kernel saw Xen 4.19', 'Xen version: 4.19'),
    ('boot reached "Booting kernel on Xen"', 'Booting kernel on Xen'),
]
SUBTESTS = ['kernel and initramfs prepared'] + [m[0] for m in MILESTONES] + [
    'shutdown over the control socket', 'exit status after shutdown',
    'audits while running and after shutdown clean']
BOOT_LIMIT = float(os.environ.get('MEMVISOR_LINUX_BOOT_LIMIT', '90'))
results = []


def ok(cond, what):
    results.append(bool(cond))
    print(('ok' if cond else 'not ok') + f' {len(results)} - {what}',
          flush=True)
    return cond


def note(s):
    for line in str(s).splitlines():
        print('# ' + line, flush=True)


def skip_all(why):
    for name in SUBTESTS[len(results):]:
        results.append(True)
        print(f'ok {len(results)} # SKIP {name}: {why}', flush=True)
    sys.exit(0)


print(f'1..{len(SUBTESTS)}', flush=True)
why = kvmtap.unusable()
if why:
    skip_all(why)
note(f'kvm: {kvmtap.flavour() or "unknown"}')
prep = subprocess.run([os.path.join(root, 'scripts', 'linux-guest')],
                      stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                      text=True, check=False)
paths = dict(line.split(' ', 1) for line in prep.stdout.splitlines()
             if line.startswith(('kernel ', 'initrd ')))
if prep.returncode != 0 or 'kernel' not in paths or 'initrd' not in paths:
    note(prep.stderr)
    skip_all('Debian\'s kernel package is not available here')
ok(True, SUBTESTS[0])
note(f'kernel {paths["kernel"]}, initrd {paths["initrd"]}')

tmp = tempfile.mkdtemp(prefix='memvisor-linux-')
sock = os.path.join(tmp, 'control')
proc = subprocess.Popen(
    [memvisor, 'run', '--kernel', paths['kernel'], '--initrd',
     paths['initrd'], '--append', 'console=hvc0 earlyprintk=xen', '--mem',
     '256', '--control', sock, '--audit-every', '1000'],
    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
console = b''
start = time.monotonic()
pending = list(MILESTONES)
while pending and time.monotonic() - start < BOOT_LIMIT:
    r, _, _ = select.select([proc.stdout], [], [], 1.0)
    if r:
        chunk = os.read(proc.stdout.fileno(), 65536)
        if not chunk:
            break
        console += chunk
    while pending and pending[0][1].encode() in console:
        ok(True, pending[0][0] + f' ({time.monotonic() - start:.1f} s)')
        pending.pop(0)
for name, _ in pending:
    ok(False, name + f' (not within {BOOT_LIMIT:.0f} s)')


def control(req):
    c = socket.socket(socket.AF_UNIX)
    c.settimeout(30)
    c.connect(sock)
    f = c.makefile('rw')
    f.write(json.dumps(req) + '\n')
    f.flush()
    ans = json.loads(f.readline())
    c.close()
    return ans


try:
    ans = control({'cmd': 'shutdown'})
except (OSError, ValueError) as e:
    ans = {'error': str(e)}
ok(ans.get('ok'), SUBTESTS[-3])
try:
    out, err = proc.communicate(timeout=60)
except subprocess.TimeoutExpired:
    proc.kill()
    out, err = proc.communicate()
console += out
ok(proc.returncode == 0, SUBTESTS[-2] + f': {proc.returncode}')
err = err.decode(errors='replace')
# --audit-every: audits while paused every second, and the final one
ok('final audit: clean' in err and 'FAILED' not in err and
   'crashed' not in err, SUBTESTS[-1])
note('\n'.join(line for line in err.splitlines() if 'audit' in line))
if not all(results):
    note('console (last 60 lines):')
    note('\n'.join(console.decode(errors='replace').splitlines()[-60:]))
    note('stderr:')
    note(err)
sys.exit(0)
