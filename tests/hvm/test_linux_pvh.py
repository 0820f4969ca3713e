#!/usr/bin/env python3
"""test_linux_pvh.py MEMVISOR SOURCE_ROOT: Debian's own kernel
(linux-image-amd64, CONFIG_PVH=y) booted by PVH as an HVM guest of memvisor
to a busybox shell on the 8250 serial port (TAP).

The same kernel and initramfs as tests/linux (scripts/linux-guest); `memvisor
run --hvm --kernel --initrd --append "console=ttyS0 acpi=off"`, the HVM
checker as the audit every second.  Milestones of the boot: the banner, the
memory map from hvm_start_info, KVM found, the serial console, the
initramfs (the PVH module) unpacked, /init, the prompt; then a command typed
on the serial port (memvisor's stdin), an audit over the control socket,
and `reboot -f` (Linux resets through the keyboard controller: exit
status 1), every audit clean.

On KVM-PVM a Linux HVM kernel cannot run its ring 0 (KVM-PVM cannot
emulate the `lock cmpxchg16b` SLUB issues early in boot; docs/hvm.md,
docs/quirks.md), so there this program runs itself in the test VM
(tests/vm/run), whose KVM is hardware KVM, and passes its TAP through; a
failure of the VM counts every check as failed.  It runs directly where KVM
is hardware KVM: a host with VMX or SVM, or inside the test VM.
Where KVM is not usable, or the kernel package cannot be had, every subtest
is reported as skipped.
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
    ('Linux banner on ttyS0 (earlyprintk)', 'Linux version 6.'),
    ('the memory map from hvm_start_info', 'BIOS-e820: [mem 0x0000000000100000'),
    ('the kernel found KVM', 'Hypervisor detected: KVM'),
    ('the initramfs (the PVH module) as the root: /init', 'Run /init as init process'),
    ('user space: /init ran', 'linux-guest: ready'),
    ('busybox shell prompt on ttyS0', '/ # '),
]
SUBTESTS = ['kernel and initramfs prepared'] + [m[0] for m in MILESTONES] + [
    'a command typed on ttyS0 runs', 'audit (control socket): clean',
    'reboot -f ends the run', 'exit status 1 after the reset',
    'audits while running and after the reset clean']
BOOT_LIMIT = float(os.environ.get('MEMVISOR_LINUX_BOOT_LIMIT', '600'))
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


def in_test_vm():
    try:
        with open('/proc/cmdline') as f:
            return 'memvisor.job=' in f.read()
    except OSError:
        return False


def run_in_test_vm():
    """KVM-PVM cannot run this guest's ring 0 (its lock cmpxchg16b): run
    this very program in the test VM, whose KVM is hardware KVM (nested
    SVM), and pass its TAP through.  The kernel is fetched here first: the
    VM has no network."""
    subprocess.run([os.path.join(root, 'scripts', 'linux-guest')],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   check=False)
    r = subprocess.run([os.path.join(root, 'tests', 'vm', 'run'),
                        '--timeout', '780', '--', sys.executable,
                        os.path.abspath(__file__), os.path.abspath(memvisor),
                        root], stdout=subprocess.PIPE, text=True,
                       check=False)
    sys.stdout.write(r.stdout)
    if r.returncode in (124, 125) or not r.stdout.startswith('1..'):
        # the VM itself failed: every check not run counts as failed
        print(f'1..{len(SUBTESTS)}')
        for i, name in enumerate(SUBTESTS, 1):
            print(f'not ok {i} - {name} (the test VM failed: status '
                  f'{r.returncode})')
        return 1
    return r.returncode


why = kvmtap.unusable()
fl = '' if why else (kvmtap.flavour() or 'unknown')
if fl.startswith('KVM-PVM') and not in_test_vm() and \
        not os.environ.get('MEMVISOR_LINUX_PVH_ON_PVM'):
    print('# KVM-PVM cannot emulate the ring-0 lock cmpxchg16b a Linux HVM '
          'kernel issues early in boot (docs/hvm.md): run in the test VM',
          flush=True)
    sys.exit(run_in_test_vm())
print(f'1..{len(SUBTESTS)}', flush=True)
if why:
    skip_all(why)
note(f'kvm: {fl}')
prep = subprocess.run([os.path.join(root, 'scripts', 'linux-guest')],
                      stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                      text=True, check=False)
paths = dict(line.split(' ', 1) for line in prep.stdout.splitlines()
             if line.startswith(('kernel ', 'initrd ')))
if prep.returncode != 0 or 'kernel' not in paths or 'initrd' not in paths:
    note(prep.stderr)
    skip_all('Debian\'s kernel package is not available here')
ok(True, SUBTESTS[0])

tmp = tempfile.mkdtemp(prefix='memvisor-linux-pvh-')
sock = os.path.join(tmp, 'control')
proc = subprocess.Popen(
    [memvisor, 'run', '--hvm', '--kernel', paths['kernel'], '--initrd',
     paths['initrd'], '--append',
     'console=ttyS0 earlyprintk=ttyS0 acpi=off', '--mem', '256',
     '--control', sock, '--audit-every', '1000'],
    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
console = b''
mark = 0
start = time.monotonic()


def wait_for(text, limit):
    global console
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        if text.encode() in console[mark:]:
            return True
        r, _, _ = select.select([proc.stdout], [], [], 1.0)
        if r:
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                return text.encode() in console[mark:]
            console += chunk
    return False


def control(req):
    c = socket.socket(socket.AF_UNIX)
    c.settimeout(60)
    c.connect(sock)
    f = c.makefile('rw')
    f.write(json.dumps(req) + '\n')
    f.flush()
    ans = json.loads(f.readline())
    c.close()
    return ans


alive = True
for name, text in MILESTONES:
    if alive and wait_for(text, BOOT_LIMIT - (time.monotonic() - start)):
        ok(True, name + f' ({time.monotonic() - start:.1f} s)')
    else:
        alive = False
        ok(False, name + f' (not within {BOOT_LIMIT:.0f} s)')
mark = len(console)
if alive:
    proc.stdin.write(b'echo memvisor-$((6*7))\n')
    proc.stdin.flush()
    alive = wait_for('memvisor-42', 120)
ok(alive, SUBTESTS[-5])
try:
    ans = control({'cmd': 'audit'}) if alive else {}
except (OSError, ValueError) as e:
    ans = {'error': str(e)}
ok(ans.get('ok') and ans.get('clean') is True,
   SUBTESTS[-4] + f': {json.dumps(ans)[:200]}')
if alive:
    proc.stdin.write(b'reboot -f\n')
    proc.stdin.flush()
try:
    out, err = proc.communicate(timeout=120)
    ended = True
except subprocess.TimeoutExpired:
    proc.kill()
    out, err = proc.communicate()
    ended = False
console += out
ok(ended and alive, SUBTESTS[-3])
ok(proc.returncode == 1, SUBTESTS[-2] + f' (status {proc.returncode})')
errs = err.decode(errors='replace')
ok('FAILED' not in errs and 'final audit: clean' in errs,
   SUBTESTS[-1])
if not all(results):
    note('console tail:\n' + console[-3000:].decode(errors='replace'))
    note('stderr:\n' + errs[-2000:])
sys.exit(0 if all(results) else 1)
