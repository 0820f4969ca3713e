#!/usr/bin/env python3
"""test_linux_pvh.py MEMVISOR SOURCE_ROOT: Debian's own kernel
(linux-image-amd64, CONFIG_PVH=y) booted by PVH as an HVM guest of memvisor
to a busybox shell on the 8250 serial port (TAP).

The same kernel and initramfs as tests/linux (scripts/linux-guest); `memvisor
run --hvm --kernel --initrd --append "console=ttyS0 acpi=off"`, the HVM
checker as the audit every second in every memvisor process.  Milestones of
the boot: the banner, the memory map from hvm_start_info, KVM found, /init,
the prompt; then a command typed on the serial port (memvisor's stdin) and
an audit over the control socket.  Then the running Linux moves twice:
- `memvisor save --stop` to a file, after files written in its tmpfs (a
  marker, its uptime, the date) and a `sleep 10` begun in the background,
  and `memvisor restore` in a new process: the sleep's line comes with
  nothing typed (the timer the guest armed survived), a command typed there
  answers with the marker, and after `sleep 1`
  (which needs the guest's timer to fire) uptime and date are past
  the saved ones;
- `memvisor migrate` over a unix socket to a `memvisor receive` while a
  shell loop prints a counter to ttyS0 every second and writes it to tmpfs:
  the loop's lines of both consoles together are 1, 2, 3, ... (none lost,
  at least two on each side), and a command typed at the destination
  answers with the marker and the loop's counter;
then `reboot -f` there (Linux resets through the keyboard controller: exit
status 1); every process's audits clean, each one's status as expected.
Last, the same kernel boots with `--vcpus 2`: Linux finds the second vCPU
in the MultiProcessor tables, starts it by INIT/SIPI through KVM's LAPIC
and counts two processors, and `reboot -f` ends that run with status 1.

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
    'files written in tmpfs before the save',
    'save --stop: the stream written, the run ends with status 0',
    'the saved run\'s audits clean',
    'restored: a sleep begun before the save ends without input',
    'restore in a new process: a command typed there answers',
    'restored: the tmpfs file, uptime and date went on, sleep 1 returns',
    'restored: audit (control socket) clean',
    'a shell loop writes to ttyS0 and tmpfs',
    'live migration to a new process (unix socket): the summary says ok',
    'the migrated-away run ends with status 0, its audits clean',
    'destination: the loop\'s lines go on from the source\'s, none lost',
    'destination: a command typed there answers, tmpfs intact',
    'destination: audit (control socket) clean',
    'an NMI (control socket): Linux reports it and goes on',
    'reboot -f ends the run', 'exit status 1 after the reset',
    'audits while running and after the reset clean',
    'two vCPUs: both up (MultiProcessor tables, INIT/SIPI), two processors '
    'in /proc/cpuinfo',
    'two vCPUs: reboot -f, exit status 1, audits clean']
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


def run_in_test_vm():
    """KVM-PVM cannot run this guest's ring 0 (its lock cmpxchg16b): run
    this very program in the test VM, whose KVM is hardware KVM (nested
    SVM), and pass its TAP through.  The kernel is fetched here first: the
    VM has no network.  The VM gets one CPU: with two, the VM's emulation
    sometimes delivers a guest's interrupt while the guest has interrupts
    off (docs/test-vm.md, "Interrupts with IF clear"); taking the second
    CPU offline inside the VM did not help."""
    subprocess.run([os.path.join(root, 'scripts', 'linux-guest')],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   check=False)
    r = subprocess.run([os.path.join(root, 'tests', 'vm', 'run'),
                        '--cpus', '1', '--timeout', '780', '--',
                        sys.executable, os.path.abspath(__file__),
                        os.path.abspath(memvisor), root],
                       stdout=subprocess.PIPE, text=True, check=False)
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
if fl.startswith('KVM-PVM') and not kvmtap.in_test_vm() and \
        not os.environ.get('MEMVISOR_LINUX_PVH_ON_PVM'):
    print('# KVM-PVM cannot emulate the ring-0 lock cmpxchg16b a Linux HVM '
          'kernel issues early in boot (docs/hvm.md): run in the test VM',
          flush=True)
    sys.exit(run_in_test_vm())
print(f'1..{len(SUBTESTS)}', flush=True)
if kvmtap.in_test_vm() and (os.cpu_count() or 1) > 1:
    note(f'warning: this test VM has {os.cpu_count()} CPUs; with more than '
         'one its emulation may deliver interrupts with IF clear and stop '
         'Linux (docs/test-vm.md): tests/vm/run --cpus 1, as tests/vm/'
         'kvm-suite runs this test')
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


class Guest:
    """One memvisor process with the guest's console (ttyS0) on its stdout
    and its stdin typed to ttyS0; stderr to a file."""

    def __init__(self, name, args):
        self.name = name
        self.errpath = os.path.join(tmp, name + '.err')
        self.ctl = os.path.join(tmp, name + '.ctl')
        with open(self.errpath, 'wb') as ef:
            self.proc = subprocess.Popen(
                [memvisor] + args + ['--control', self.ctl,
                                     '--audit-every', '1000'],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=ef)
        self.console = b''
        self.mark = 0
        self.rc = None
        self.started = time.monotonic()

    def pump(self, secs):
        r, _, _ = select.select([self.proc.stdout], [], [], secs)
        if not r:
            return True
        chunk = os.read(self.proc.stdout.fileno(), 65536)
        self.console += chunk
        return bool(chunk)

    def pump_for(self, secs):
        """Reads the console for secs seconds."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < secs:
            self.pump(0.5)

    def wait_for(self, pattern, limit, quiet=None):
        """The first match of the regex pattern (bytes) in the console since
        the mark, within limit seconds (and before the console has been
        silent for quiet seconds); None if none."""
        rx = re.compile(pattern.encode() if isinstance(pattern, str)
                        else pattern)
        t0 = last = time.monotonic()
        seen = len(self.console)
        while True:
            m = rx.search(self.console, self.mark)
            if m:
                return m
            now = time.monotonic()
            if len(self.console) != seen:
                seen, last = len(self.console), now
            if now - t0 > limit or (quiet and now - last > quiet) or \
                    not self.pump(1.0):
                return rx.search(self.console, self.mark)

    def type(self, line):
        self.mark = len(self.console)
        try:
            self.proc.stdin.write(line.encode() + b'\n')
            self.proc.stdin.flush()
        except OSError:
            pass

    def control(self, req):
        return kvmtap.control(self.ctl, req, 120)

    def audit(self):
        try:
            ans = self.control({'cmd': 'audit'})
        except (OSError, ValueError) as e:
            ans = {'error': str(e)}
        return (ans.get('ok') and ans.get('clean') is True,
                json.dumps(ans)[:200])

    def finish(self, limit):
        """Waits for the process to end (killed after limit seconds): its
        status, None if it had to be killed."""
        t0 = time.monotonic()
        while self.proc.poll() is None and time.monotonic() - t0 < limit:
            self.pump(0.5)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
            killed = True
        else:
            killed = False
        while self.pump(0):
            if not select.select([self.proc.stdout], [], [], 0)[0]:
                break
        self.rc = None if killed else self.proc.returncode
        return self.rc

    def err(self):
        with open(self.errpath, errors='replace') as f:
            return f.read()

    def audits_clean(self):
        e = self.err()
        return 'FAILED' not in e and 'final audit: clean' in e

    def dump(self):
        note(f'{self.name}: console tail:\n' +
             self.console[-3000:].decode(errors='replace'))
        note(f'{self.name}: stderr:\n' + self.err()[-2000:])


def elapsed(t0):
    return f'{time.monotonic() - t0:.1f} s'


def boot_linux(name):
    """Boots Linux to its prompt: the process and each milestone's time
    (None from the first one not reached)."""
    g = Guest(name, ['run', '--hvm', '--kernel', paths['kernel'],
                     '--initrd', paths['initrd'], '--append',
                     'console=ttyS0 earlyprintk=ttyS0 acpi=off', '--mem',
                     '256'])
    reached = []
    for _, text in MILESTONES:
        left = BOOT_LIMIT - (time.monotonic() - g.started)
        if not g.wait_for(re.escape(text), left, quiet=STALL):
            break
        reached.append(time.monotonic() - g.started)
    return g, reached + [None] * (len(MILESTONES) - len(reached))


def stats(g):
    try:
        return json.dumps(g.control({'cmd': 'stats'}))[:600]
    except (OSError, ValueError) as e:
        return str(e)


def vcpus(g):
    """The vCPUs as KVM holds them (control request vcpus), one line each:
    MP state, where it runs (Debian's System.map is a placeholder: match
    rip against /proc/kallsyms of a healthy boot of the same kernel), its
    LAPIC timer and pending vectors, and the guest's kvm-clock against
    KVM's."""
    try:
        ans = g.control({'cmd': 'vcpus'})
    except (OSError, ValueError) as e:
        return str(e)
    if not ans.get('ok'):
        return json.dumps(ans)
    out = []
    for i, v in enumerate(ans['vcpus']):
        out.append(
            f'vcpu {i}: mp_state {v["mp_state"]} rip {v["rip"]:#x} '
            f'rflags {v["rflags"]:#x} lvtt {v["lvtt"]:#x} tmict '
            f'{v["tmict"]} tmcct {v["tmcct"]} tdcr {v["tdcr"]} irr '
            f'{v["irr"]} isr {v["isr"]} tpr {v["tpr"]} ppr {v["ppr"]} '
            f'injected {v["irq_injected"]}/{v["irq_nr"]} shadow '
            f'{v["shadow"]} nmi {v["nmi_pending"]} deadline '
            f'{v["tsc_deadline"]} tsc {v["tsc"]} guest_ns '
            f'{v.get("guest_ns")} (kvm clock {ans["clock_ns"]})')
    return '\n'.join(out)


def why_silent(g, what):
    """Notes, for a guest that stopped answering, its counters once and
    its vCPUs twice 5 s apart, and what its console said meanwhile (the
    pauses for the snapshots take its vCPUs out of KVM once each)."""
    if g.proc.poll() is not None:
        note(f'{g.name}: {what}; the process ended ({g.proc.returncode})')
        return
    seen = len(g.console)
    note(f'{g.name}: {what}: stats: {stats(g)}')
    note(f'{g.name}: vcpus:\n{vcpus(g)}')
    g.pump_for(5)
    note(f'{g.name}: 5 s later: vcpus:\n{vcpus(g)}')
    g.pump_for(5)
    note(f'{g.name}: console since: '
         f'{g.console[seen:][-300:].decode(errors="replace")!r}')


# A boot that stops making progress (STALL seconds of a silent console) is
# given up, and said so with the vCPUs' state (docs/hvm.md).
STALL = float(os.environ.get('MEMVISOR_LINUX_STALL', '150'))
guests = []
start = time.monotonic()
boot, reached = boot_linux('boot')
if None in reached:
    tail = boot.console[-300:].decode(errors='replace').strip()
    why_silent(boot, f'boot stalled: {STALL:.0f} s without console output '
               f'after {tail.splitlines()[-1] if tail else "nothing"!r}')
guests.append(boot)
alive = True
for (name, text), t in zip(MILESTONES, reached):
    if t is not None:
        ok(True, name + f' ({t:.1f} s)')
    else:
        alive = False
        ok(False, name + f' (not within {BOOT_LIMIT:.0f} s, or silent for '
           f'{STALL:.0f} s)')
for line in boot.console.decode(errors='replace').splitlines():
    if re.search(r'clockevent|deadline|clocksource: Switched', line):
        note('guest: ' + line.strip())
if alive:
    boot.type('echo memvisor-$((6*7))')
    alive = bool(boot.wait_for('memvisor-42', 120))
    if not alive:
        why_silent(boot, 'no answer')
ok(alive, 'a command typed on ttyS0 runs')
good, ans = boot.audit() if alive else (False, '')
ok(good, f'audit (control socket): clean: {ans}')

# ---- save to a file, restore in a new process --------------------------
if alive:
    # and a timer the guest waits for across the save: nothing typed
    # after the restore wakes it before its line comes
    boot.type("echo saved-$((1000+234)) > /tmp/mark; "
              "cut -d' ' -f1 /proc/uptime > /tmp/up0; date +%s > /tmp/d0; "
              "(sleep 10; echo wake-$((3*3))) & echo files-$((3*5))")
    alive = bool(boot.wait_for('files-15', 120))
ok(alive, 'files written in tmpfs before the save')
img = os.path.join(tmp, 'linux.img')
if alive:
    t0 = time.monotonic()
    s = subprocess.run([memvisor, 'save', '--control', boot.ctl, img,
                        '--stop'], capture_output=True, text=True,
                       timeout=900)
    took = elapsed(t0)
    boot.finish(120)
    size = os.path.getsize(img) if os.path.exists(img) else 0
    note(f'save: {took}, {size} bytes: ' +
         (s.stderr.strip().splitlines() or [''])[-1])
    alive = s.returncode == 0 and boot.rc == 0 and size > 0
    ok(alive, 'save --stop: the stream written, the run ends with status 0'
       f' (save {s.returncode}, run {boot.rc})')
else:
    boot.finish(5)
    ok(False, 'save --stop: not tried')
ok(boot.audits_clean(), 'the saved run\'s audits clean')

rst = None
if alive:
    t0 = time.monotonic()
    rst = Guest('restore', ['restore', img])
    guests.append(rst)
    woke = bool(rst.wait_for('wake-9', 120))
    if not woke:
        why_silent(rst, 'the sleep begun before the save did not end')
    ok(woke and b'wake-9' not in boot.console,
       'restored: a sleep begun before the save ends without input '
       f'({elapsed(t0)})')
    rst.type('echo r-$((40+2))-$(cat /tmp/mark)')
    alive = bool(rst.wait_for('r-42-saved-1234', 300))
    if not alive:
        why_silent(rst, 'no answer')
    ok(alive, 'restore in a new process: a command typed there answers '
       f'({elapsed(t0)})')
else:
    ok(False, 'restore: not tried')
    ok(False, 'restore: not tried')
m = None
if alive:
    rst.type("sleep 1; echo tm $(cat /tmp/up0) "
             "$(cut -d' ' -f1 /proc/uptime) $(cat /tmp/d0) $(date +%s) "
             "t-$((7*6))")
    m = rst.wait_for(r'tm ([0-9.]+) ([0-9.]+) ([0-9]+) ([0-9]+) t-42', 120)
if m:
    u0, u1, d0, d1 = (float(x) for x in m.groups())
    note(f'uptime {u0} s before the save, {u1} s after the restore; '
         f'date {d0:.0f} -> {d1:.0f}')
    good = u1 >= u0 + 1 and d1 >= d0 + 1
else:
    good = alive = False
ok(good, 'restored: the tmpfs file, uptime and date went on, sleep 1 returns')
good, ans = rst.audit() if alive else (False, '')
ok(good, f'restored: audit (control socket) clean: {ans}')

# ---- live migration while a shell loop writes --------------------------
LOOP = rb'lp-([0-9]+)-x'
loop_from = 0
if alive:
    rst.type("rm -f /tmp/stop; (i=0; while [ ! -e /tmp/stop ]; do "
             "i=$((i+1)); echo $i > /tmp/cnt; echo lp-$i-x; sleep 1; "
             "done) &")
    loop_from = rst.mark
    alive = bool(rst.wait_for('lp-2-x', 120))
    if not alive:
        why_silent(rst, 'no loop')
ok(alive, 'a shell loop writes to ttyS0 and tmpfs')
dst = None
mig = os.path.join(tmp, 'mig.sock')
if alive:
    dst = Guest('receive', ['receive', '--listen', 'unix:' + mig])
    guests.append(dst)
    t0 = time.monotonic()
    while not os.path.exists(mig) and time.monotonic() - t0 < 60:
        time.sleep(0.1)
    rst.wait_for('lp-3-x', 60)
    t0 = time.monotonic()
    mg = subprocess.run([memvisor, 'migrate', '--control', rst.ctl,
                         'unix:' + mig], capture_output=True, text=True,
                        timeout=900)
    note(f'migrate: {elapsed(t0)}: ' +
         (mg.stderr.strip().splitlines() or [''])[-1])
    alive = mg.returncode == 0 and '"ok":true' in mg.stdout
    ok(alive, 'live migration to a new process (unix socket): the summary '
       'says ok')
else:
    ok(False, 'live migration: not tried')
if rst:
    rst.finish(120 if alive else 5)
    ok(rst.rc == 0 and rst.audits_clean(), 'the migrated-away run ends with '
       f'status 0, its audits clean (status {rst.rc})')
else:
    ok(False, 'the migrated-away run: none')
if alive:
    before = [int(x) for x in re.findall(LOOP, rst.console[loop_from:])]
    last = max(before, default=0)
    if not dst.wait_for(f'lp-{last + 3}-x', 120):
        why_silent(dst, 'the loop did not go on')
    # the consoles joined: a line cut by the pause is whole again
    seq = [int(x) for x in
           re.findall(LOOP, rst.console[loop_from:] + dst.console)]
    after = [int(x) for x in re.findall(LOOP, dst.console)]
    note(f'loop lines: {len(before)} at the source (last {last}), '
         f'{len(after)} at the destination')
    alive = (len(before) >= 2 and len(after) >= 2 and
             seq == list(range(1, len(seq) + 1)))
    ok(alive, 'destination: the loop\'s lines go on from the source\'s, '
       'none lost')
else:
    ok(False, 'destination: no loop')
if alive:
    dst.type('touch /tmp/stop; echo m-$((50+8))-$(cat /tmp/mark)-'
             '$(cat /tmp/cnt)')
    # the whole line: the counter may have two digits, and a read of the
    # console can end between them
    m = dst.wait_for(r'm-58-saved-1234-([0-9]+)\r?\n', 120)
    if not m:
        why_silent(dst, 'no answer')
    alive = bool(m) and int(m.group(1)) >= last
ok(alive, 'destination: a command typed there answers, tmpfs intact')
good, ans = dst.audit() if alive else (False, '')
ok(good, f'destination: audit (control socket) clean: {ans}')
if alive:
    # without unknown_nmi_panic Linux logs an NMI it has no handler for
    # and goes on: the typed command after it answers
    try:
        ans = dst.control({'cmd': 'nmi', 'vcpu': 0})
    except (OSError, ValueError) as e:
        ans = {'error': str(e)}
    dst.mark = len(dst.console)
    seen = dst.wait_for(r'NMI received for unknown reason', 60)
    dst.type('echo n-$((60+6))')
    alive = bool(ans.get('ok') and seen and dst.wait_for('n-66', 60))
    if not alive:
        why_silent(dst, f'after the NMI ({json.dumps(ans)})')
ok(alive, 'an NMI (control socket): Linux reports it and goes on')
if alive:
    dst.type('reboot -f')
last_run = dst or rst or boot
last_run.finish(120)
ok(alive and last_run.rc is not None, 'reboot -f ends the run')
ok(last_run.rc == 1, f'exit status 1 after the reset (status {last_run.rc})')
ok(all(g.audits_clean() for g in guests),
   'audits while running and after the reset clean')

# ---- two vCPUs: the MultiProcessor tables and INIT/SIPI ------------------
t0 = time.monotonic()
smp = Guest('smp', ['run', '--hvm', '--kernel', paths['kernel'], '--initrd',
                    paths['initrd'], '--append',
                    'console=ttyS0 earlyprintk=ttyS0 acpi=off', '--mem', '256',
                    '--vcpus', '2'])
guests.append(smp)
up = smp.wait_for(re.escape('smp: Brought up 1 node, 2 CPUs'), BOOT_LIMIT,
                  quiet=STALL)
up = up and smp.wait_for(re.escape('/ # '), BOOT_LIMIT, quiet=STALL)
if up:
    smp.type('echo cpus-$(grep -c ^processor /proc/cpuinfo)-x')
    up = smp.wait_for(r'cpus-2-x', 120)
if not up:
    why_silent(smp, 'two vCPUs')
ok(up, 'two vCPUs: both up (MultiProcessor tables, INIT/SIPI), two '
   f'processors in /proc/cpuinfo ({elapsed(t0)})')
if up:
    smp.type('reboot -f')
smp.finish(120 if up else 5)
ok(up and smp.rc == 1 and smp.audits_clean(),
   f'two vCPUs: reboot -f, exit status 1, audits clean (status {smp.rc})')
note(f'all of it: {elapsed(start)}')
for g in guests:
    if g.proc.poll() is None:
        g.proc.kill()
        g.proc.wait()
if not all(results):
    for g in guests:
        g.dump()
sys.exit(0 if all(results) else 1)
