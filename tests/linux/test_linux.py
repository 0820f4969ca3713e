#!/usr/bin/env python3
"""test_linux.py MEMVISOR SOURCE_ROOT: Debian's own kernel (linux-image-amd64,
CONFIG_XEN_PV=y) booted as a PV guest of memvisor to a busybox shell (TAP).

scripts/linux-guest fetches the kernel package (apt-get download, never
installed), takes the ELF out of vmlinuz and builds the busybox initramfs;
then `memvisor run --kernel --initrd --append` boots it (on the number of
vCPUs given as the third argument, 1 by default) with the
control socket on and the frame table audited every second (guest
paused).  The test reads the guest console as it comes and checks the
milestones of Linux's PV boot: Xen's early console, hypervisor detection,
the 2-level event channels, hvc0 on the console ring, the Xen timer and
clocksource, /init, the shell prompt; then types on hvc0 (memvisor's
stdin): a command, and a fork burst (page tables built and torn down);
asks for an audit over the control socket; on 1 vCPU balloons Linux down
to 160 MiB and up again through the control socket's mem-target (its
balloon driver reads xenstore's memory/target), checking the domain's
frames follow, Linux's MemTotal moves by as much, and the audit stays
clean; then types `poweroff -f` (1 vCPU: exit status 0) or the detach key
Ctrl-] (more vCPUs: exit status 72), and checks every audit was clean, the
final one after the shutdown included.

Where KVM is not usable, or the kernel package cannot be had (no apt
index, no network), every subtest is reported as skipped.  Inside the
emulated test VM (tests/vm: its kernel command line names the job) it runs
as anywhere else, with a longer boot limit (600 s instead of 180 s;
MEMVISOR_LINUX_BOOT_LIMIT overrides both): there the prompt comes after
43 s (1 vCPU) and 77 s (2 vCPUs) on an otherwise idle 2-core machine, and
after 207 s with the cores fully loaded.  A step that gets no answer notes
the guest's counters and event-channel state (the control socket's
`events`) twice, 5 s apart, and the console's tail.
"""
import json
import os
import re
import select
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                '..', 'lib'))
import kvmtap  # noqa: E402

memvisor, root = sys.argv[1], sys.argv[2]
VCPUS = int(sys.argv[3]) if len(sys.argv) > 3 else 1
# On more than one vCPU the run ends with the detach key instead of a
# poweroff (exit status 72), and the balloon round trip is left to the
# one-vCPU run.
DETACH = VCPUS > 1
MILESTONES = [
    ('early console: Linux banner', 'Linux version 6.'),
    ('the kernel found Xen PV', 'Hypervisor detected: Xen PV'),
    ('the kernel saw Xen 4.19', 'Xen version: 4.19'),
    ('events: the 2-level ABI', 'xen:events: Using 2-level ABI'),
    ('hvc0: the console ring is the console', 'printk: console [hvc0] enabled'),
    ('the Xen timer and clocksource', 'clocksource: Switched to clocksource xen'),
    ('user space: /init ran', 'linux-guest: ready'),
    (f'Linux sees {VCPUS} CPU(s)', f'{VCPUS} cpu)'),
    ('busybox shell prompt on hvc0', '/ # '),
]
SHELL = [
    ('a command typed on hvc0 runs', 'echo memvisor-$((6*7))\n',
     'memvisor-42'),
    ('a fork burst (50 processes)',
     'i=0; while [ $i -lt 50 ]; do /bin/true; i=$((i+1)); done; '
     'echo forks-$i\n', 'forks-50'),
]
SUBTESTS = ['kernel and initramfs prepared'] + [m[0] for m in MILESTONES] + [
    s[0] for s in SHELL] + [
    'pfinfo after the fork burst: its L1-L4 are the audit walk\'s tables',
    'audit after the fork burst (control socket): clean'] + ([] if DETACH else [
    'balloon down to 160 MiB (mem-target): Linux gives frames back',
    'audit after the balloon down: clean',
    'balloon up to 256 MiB: Linux takes them again',
    'audit after the balloon up: clean']) + ([
    'the detach key (Ctrl-]) ends the run', 'exit status 72 after detach']
    if DETACH else [
    'poweroff from the shell ends the run', 'exit status 0 after poweroff']) + [
    'audits while running and after shutdown clean']
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
# The test VM's CPU is emulated: a boot takes 3-6 times as long there.
BOOT_LIMIT = float(os.environ.get('MEMVISOR_LINUX_BOOT_LIMIT',
                                  '600' if kvmtap.in_test_vm() else '180'))
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
     paths['initrd'], '--append', 'console=hvc0 earlyprintk=xen', '--mem', '256',
     '--vcpus', str(VCPUS),
     '--control', sock, '--audit-every', '1000'],
    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
console = b''
start = time.monotonic()


def wait_for(text, limit):
    """Read the console until text appears after the mark; False if the
    process ended or the limit passed."""
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
    return kvmtap.control(sock, req)


def diagnose():
    """A step got no answer: is the guest still running, and where are its
    events?  Two snapshots of the event state and counters, 5 s apart."""
    for i in range(2):
        if i:
            time.sleep(5)
        try:
            st = control({'cmd': 'stats'})
            note(f'exits {st.get("exits")} timer_fired {st.get("timer_fired")} '
                 f'upcalls {st.get("upcalls")} hypercalls '
                 f'{json.dumps(st.get("hypercalls"))}')
            note('events: ' + json.dumps(control({'cmd': 'events'})))
        except (OSError, ValueError) as e:
            note(f'no answer on the control socket: {e}')
    note('console tail: ' + repr(console[-400:]))


mark = 0
alive = True
for name, text in MILESTONES:
    if alive and wait_for(text, BOOT_LIMIT - (time.monotonic() - start)):
        ok(True, name + f' ({time.monotonic() - start:.1f} s)')
    else:
        alive = False
        ok(False, name + f' (not within {BOOT_LIMIT:.0f} s)')
for name, cmd, text in SHELL:
    mark = len(console)
    if alive:
        t0 = time.monotonic()
        proc.stdin.write(cmd.encode())
        proc.stdin.flush()
        alive = wait_for(text, 120)
        ok(alive, name + f' ({time.monotonic() - t0:.1f} s)')
        if not alive:
            diagnose()
    else:
        ok(False, name + ' (no shell)')
try:
    ans = control({'cmd': 'audit'}) if alive else {}
    pf = control({'cmd': 'pfinfo'}) if alive else {}
except (OSError, ValueError) as e:
    ans = {'error': str(e)}
    pf = {}
# The page-frame info (the type query migration uses) against the audit,
# which walks the page tables from the pins and the vCPUs' base pointers:
# every frame reported as an L1..L4 is one the walk validated, and no
# other.  Both taken with the guest paused, Linux idle at its prompt.
types = pf.get('types', {})
pf_tables = sum(types.get(k, 0) for k in ('l1', 'l2', 'l3', 'l4'))
ok(pf.get('ok') and pf_tables == ans.get('tables') and pf.get('pinned', 0) > 0,
   SUBTESTS[-5 if DETACH else -9] +
   f': pfinfo {json.dumps(types)} pinned {pf.get("pinned")}, '
   f'audit {ans.get("tables")} tables')
ok(ans.get('ok') and ans.get('clean') is True,
   SUBTESTS[-4 if DETACH else -8] + f': {json.dumps(ans)[:200]}')


def frames():
    try:
        return control({'cmd': 'mem-current'}).get('frames', 0)
    except (OSError, ValueError):
        return 0


def memtotal():
    """Linux's own MemTotal (KiB) as the shell prints it; 0 if three tries
    gave no readable answer (a kernel message can land in the middle of
    the shell's line while the balloon driver works)."""
    global mark
    for _ in range(3):
        mark = len(console)
        # the marker is computed by the shell, so the echoed command line
        # (which holds the expression, not its value) never matches it
        proc.stdin.write(b'echo MT$((40+2))=$(grep MemTotal /proc/meminfo | '
                         b'tr -s " " | cut -d" " -f2)=$((6*7))Z\n')
        proc.stdin.flush()
        if not wait_for('=42Z', 60):
            continue
        m = re.search(r'MT42=(\d+)=42Z', console[mark:].decode(errors='replace'))
        if m:
            return int(m.group(1))
    return 0


def balloon(kib, name, audit_name):
    """Set the target; wait until the domain's frames settle near it;
    Linux's MemTotal moves by about the same amount."""
    if not alive:
        ok(False, name + ' (no shell)')
        ok(False, audit_name)
        return
    f0, m0 = frames(), memtotal()
    t0 = time.monotonic()
    try:
        control({'cmd': 'mem-target', 'kib': kib})
    except (OSError, ValueError):
        pass
    want = kib // 4
    f1, same = f0, 0
    while time.monotonic() - t0 < 60 and same < 3:
        time.sleep(1)
        f = frames()
        same = same + 1 if f == f1 and abs(f - want) < 2048 else 0
        f1 = f  # settled: unchanged for 3 s near the target
    m1 = memtotal()
    moved_frames = (f0 - f1) * 4
    moved_linux = m0 - m1
    ok(abs(f1 - want) < 2048 and m1 and
       abs(moved_frames - moved_linux) <= 4096,
       name + f': frames {f0} -> {f1} (target {want}), Linux MemTotal '
       f'{m0} -> {m1} KiB ({time.monotonic() - t0:.1f} s)')
    try:
        ans = control({'cmd': 'audit'})
    except (OSError, ValueError) as e:
        ans = {'error': str(e)}
    ok(ans.get('ok') and ans.get('clean') is True,
       audit_name + f': {json.dumps(ans)[:120]}')


if not DETACH:
    balloon(160 * 1024, SUBTESTS[-7], SUBTESTS[-6])
    balloon(256 * 1024, SUBTESTS[-5], SUBTESTS[-4])
mark = len(console)
if alive:
    proc.stdin.write(b'\x1d' if DETACH else b'poweroff -f\n')
    proc.stdin.flush()
try:
    out, err = proc.communicate(timeout=120 if alive else 1)
    ended = alive
except subprocess.TimeoutExpired:
    ended = False
    try:
        control({'cmd': 'shutdown'})
    except (OSError, ValueError):
        pass
    try:
        out, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
console += out
ok(ended, SUBTESTS[-3])
ok(ended and proc.returncode == (72 if DETACH else 0),
   SUBTESTS[-2] + f': {proc.returncode}')
err = err.decode(errors='replace')
# --audit-every: audits while paused every second, and the final one
ok('final audit: clean' in err and 'FAILED' not in err and
   'crashed' not in err, SUBTESTS[-1])
note('\n'.join(line for line in err.splitlines() if line.startswith('memvisor')))
if not all(results):
    note('console (last 60 lines):')
    note('\n'.join(console.decode(errors='replace').splitlines()[-60:]))
    note('stderr:')
    note(err[-3000:])
sys.exit(0)
