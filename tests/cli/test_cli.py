#!/usr/bin/env python3
"""test_cli.py MEMVISOR PVKERNEL: the memvisor command end to end (TAP).

- usage and load errors exit 2 with a message (no KVM needed);
- without KVM, `run` exits 69 (EX_UNAVAILABLE) and names /dev/kvm;
- `run --paused --control`: the control socket answers stats, pfinfo,
  audit and refuses malformed requests before the first instruction; after
  `resume` the guest runs to its end, its console reaches stdout and the
  exit status is the guest's;
- a guest that runs until stopped (`dirty passes=0`): pause, audit, dirty
  harvest and resume mid-run, each pause waited for by its answer and each
  resume by the guest's progress (its exit count), never by a sleep; then
  `shutdown` over the socket stops it;
- `demo` runs every workload and says so.

Where KVM is not usable (or MEMVISOR_TEST_NO_KVM is set) the subtests that
run a guest are reported as skipped ("ok N # SKIP"), never as passed.
"""
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                '..', 'lib'))
import kvmtap  # noqa: E402

memvisor, pvkernel = sys.argv[1], sys.argv[2]
# The subtests that run a guest, in order: reported one by one as skipped
# where KVM is not usable (the names as the runs below print them).
KVM_SUBTESTS = [
    'control socket accepts a client',
    'stats while started paused: no exit yet, 2 vCPUs',
    'events while started paused: 2 vCPUs, nothing pending, the console ring empty',
    'vcpus (an HVM request) on a PV guest: refused',
    'nmi (an HVM request) on a PV guest: refused',
    'pfinfo: the bootstrap tables are typed, the L4 pinned',
    'pfinfo list of 4 frames',
    'audit before the first instruction: clean',
    'a non-JSON line is refused',
    'an unknown command is refused',
    'an overlong line is refused',
    'resume: the guest runs to its end',
    'exit status 0',
    'guest console on stdout',
    'second run (dirty passes=0): control socket',
    'resume the second guest',
    'resume when not paused is refused',
    'the guest runs: its exits grow',
    'pause mid-run: 5 of 5 accepted, the guest ran between them',
    'audits while paused mid-run are clean',
    'dirty harvest over the socket',
    'console tail over the socket',
    'shutdown accepted (while paused)',
    'after shutdown: exit status 0',
    'demo: every workload passes',
    'demo: five clean audits',
]
PLAN = 5 + len(KVM_SUBTESTS)
EX_UNAVAILABLE = 69  # memvisor's status when KVM is not available
results = []


def ok(cond, what):
    results.append(bool(cond))
    print(('ok' if cond else 'not ok') + f' {len(results)} - {what}',
          flush=True)
    return cond


def skip(what, why):
    results.append(True)
    print(f'ok {len(results)} # SKIP {what}: {why}', flush=True)


def note(s):
    for line in str(s).splitlines():
        print('# ' + line, flush=True)


def kvm_state():
    """(usable, forced_off, reason)"""
    why = kvmtap.unusable()
    return why is None, why is not None and 'MEMVISOR_TEST_NO_KVM' in why, why


def connect(path, proc, seconds=30):
    """Wait for the socket to accept (a loaded machine starts slowly)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if os.path.exists(path):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.connect(path)
                return s
            except OSError:
                s.close()
        if proc.poll() is not None:
            return None
        time.sleep(0.01)
    return None


class Control:
    """A client; a request that cannot be made answers ok: false."""

    def __init__(self, sock):
        self.sock = sock
        self.f = sock.makefile('rwb', buffering=0)

    def raw(self, line):
        try:
            self.f.write(line.encode() + b'\n')
            reply = self.f.readline().decode()
            return json.loads(reply) if reply else {
                'ok': False, 'error': 'connection closed'}
        except (OSError, ValueError) as e:
            return {'ok': False, 'error': f'{type(e).__name__}: {e}'}

    def __call__(self, **req):
        return self.raw(json.dumps(req))

    def exits(self):
        st = self(cmd='stats')
        return st['exits'] if st.get('ok') else None

    def wait_progress(self, since, seconds=60):
        """After a resume: wait until the guest made exits past since."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            e = self.exits()
            if e is None:
                return None
            if e > since:
                return e
            time.sleep(0.005)
        return None


def finish(p, timeout):
    try:
        out, err = p.communicate(timeout=timeout)
        return p.returncode, out, err
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
        return None, out, err


def load_errors():
    r = subprocess.run([memvisor], capture_output=True, text=True)
    ok(r.returncode == 2 and 'usage' in r.stderr, 'no command: usage, status 2')
    r = subprocess.run([memvisor, 'run', '/nonexistent/kernel'],
                       capture_output=True, text=True)
    ok(r.returncode == 2 and 'nonexistent' in r.stderr,
       'missing image: status 2 and the path named')
    with tempfile.NamedTemporaryFile() as junk:
        junk.write(b'not an elf at all' * 10)
        junk.flush()
        r = subprocess.run([memvisor, 'run', junk.name], capture_output=True,
                           text=True)
        ok(r.returncode == 2 and 'not an ELF' in r.stderr,
           'garbage image: refused with a reason')
    r = subprocess.run([memvisor, 'run', pvkernel, '--vcpus', '0'],
                       capture_output=True, text=True)
    ok(r.returncode == 2, 'bad --vcpus: status 2')


def without_kvm(usable, forced, why):
    what = f'without KVM: run exits {EX_UNAVAILABLE} and names /dev/kvm'
    cmd = [memvisor, 'run', pvkernel]
    if usable or forced:
        # KVM is there: take it away for this one run, in a private mount
        # namespace whose /dev is an empty tmpfs (as root; else a skip)
        if os.geteuid() != 0 or not shutil.which('unshare'):
            skip(what, 'KVM is usable here and /dev cannot be hidden')
            return
        cmd = ['unshare', '-m', '--propagation', 'private', 'sh', '-c',
               'mount -t tmpfs none /dev && exec "$@"', 'sh'] + cmd
        what += ' (/dev hidden in a mount namespace)'
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    note(f'memvisor without KVM: status {r.returncode}: {r.stderr.strip()}')
    ok(r.returncode == EX_UNAVAILABLE and '/dev/kvm' in r.stderr, what)


def first_run(tmp):
    """Paused start, requests before the first instruction, run to the end."""
    path = os.path.join(tmp, 'ctl1')
    p = subprocess.Popen([memvisor, 'run', pvkernel, '--mem', '64',
                          '--vcpus', '2', '--cmdline', 'dirty ptchurn',
                          '--control', path, '--paused'],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    s = connect(path, p)
    ok(s is not None, 'control socket accepts a client')
    c = Control(s) if s else Control(socket.socket(socket.AF_UNIX))
    st = c(cmd='stats')
    ok(st.get('ok') and st['exits'] == 0 and st['vcpus'] == 2,
       'stats while started paused: no exit yet, 2 vCPUs')
    ev = c(cmd='events')
    note(f'events: {json.dumps(ev)[:300]}')
    ok(ev.get('ok') and len(ev['vcpus']) == 2 and ev['vcpus'][0]['up']
       and not any(v.get('upcall_pending') for v in ev['vcpus'])
       and not any(p[3] for p in ev['ports'])
       and ev.get('console', {}).get('in_prod') == 0
       and ev['console']['in_cons'] == 0,
       'events while started paused: 2 vCPUs, nothing pending, the console ring empty')
    vc = c(cmd='vcpus')
    ok(vc.get('ok') is False and 'not supported' in vc.get('error', ''),
       'vcpus (an HVM request) on a PV guest: refused')
    nm = c(cmd='nmi')
    ok(nm.get('ok') is False and 'not supported' in nm.get('error', ''),
       'nmi (an HVM request) on a PV guest: refused')
    pf = c(cmd='pfinfo')
    if pf.get('ok'):
        note(f'pfinfo: {pf["frames"]} frames, types {pf["types"]}, '
             f'pinned {pf["pinned"]}')
    ok(pf.get('ok') and pf['pinned'] >= 1 and pf['types'].get('l4', 0) >= 1
       and pf['types'].get('l1', 0) >= 1,
       'pfinfo: the bootstrap tables are typed, the L4 pinned')
    lst = c(cmd='pfinfo', mfn=0, count=4)
    ok(lst.get('ok') and len(lst['list']) == 4, 'pfinfo list of 4 frames')
    au = c(cmd='audit')
    ok(au.get('ok') and au['clean'] and au['tables'] > 0,
       'audit before the first instruction: clean')
    ok(c.raw('garbage').get('ok') is False, 'a non-JSON line is refused')
    ok(c(cmd='fly').get('ok') is False, 'an unknown command is refused')
    ok(c.raw('{"cmd":"' + 'x' * 9000 + '"}').get('ok') is False,
       'an overlong line is refused')
    # memvisor exits as soon as the guest stops: after this resume no
    # request is made (the guest may already be done).
    ok(c(cmd='resume').get('ok'), 'resume: the guest runs to its end')
    code, out, err = finish(p, 120)
    note(err.strip())
    ok(code == 0, f'exit status 0 (got {code})')
    ok('dirty: pass' in out and 'ptchurn: pass' in out
       and 'guest: pass' in out, 'guest console on stdout')
    if s:
        s.close()


def second_run(tmp):
    """A guest that never ends by itself: every request is safe."""
    path = os.path.join(tmp, 'ctl2')
    with tempfile.TemporaryFile(mode='w+', dir=tmp) as out:
        p = subprocess.Popen([memvisor, 'run', pvkernel, '--mem', '64',
                              '--vcpus', '2', '--cmdline', 'dirty passes=0',
                              '--control', path, '--paused'],
                             stdout=out, stderr=subprocess.PIPE, text=True)
        s = connect(path, p)
        ok(s is not None, 'second run (dirty passes=0): control socket')
        c = Control(s) if s else Control(socket.socket(socket.AF_UNIX))
        ok(c(cmd='resume').get('ok'), 'resume the second guest')
        ok(c(cmd='resume').get('ok') is False,
           'resume when not paused is refused')
        e = c.wait_progress(0)
        ok(e is not None, f'the guest runs: its exits grow ({e})')
        pauses = audits = clean = rounds = 0
        for i in range(5):
            if i:
                c(cmd='resume')
                e = c.wait_progress(e or 0)
                rounds += e is not None
            if not c(cmd='pause').get('ok'):
                continue  # counted: every pause must be accepted
            pauses += 1
            a = c(cmd='audit')
            audits += bool(a.get('ok'))
            clean += bool(a.get('ok') and a['clean'])
            e = c.exits()
        note(f'{pauses} pauses, {rounds} of 4 resumes made progress, '
             f'{audits} audits while paused, {clean} clean')
        ok(pauses == 5 and rounds == 4, 'pause mid-run: 5 of 5 accepted, '
           'the guest ran between them')
        ok(audits == 5 and clean == 5, 'audits while paused mid-run are clean')
        dv = c(cmd='dirty')
        note(f'dirty harvest: {dv}')
        ok(dv.get('ok') and dv['pages'] > 0, 'dirty harvest over the socket')
        # The guest prints 'dirty:' once its workload starts: on a slow KVM
        # (the test VM) that may come after the pauses above.  Let it run
        # until the tail shows it (a condition, bounded), then pause again.
        con = c(cmd='console')
        if con.get('ok') and 'dirty:' not in con['tail']:
            c(cmd='resume')
            deadline = time.time() + 120
            while time.time() < deadline:
                con = c(cmd='console')
                if not con.get('ok') or 'dirty:' in con['tail']:
                    break
                time.sleep(0.1)
            c(cmd='pause')
        ok(con.get('ok') and 'dirty:' in con['tail'],
           'console tail over the socket')
        ok(c(cmd='shutdown').get('ok'), 'shutdown accepted (while paused)')
        code, _, err = finish(p, 60)
        note(err.strip())
        ok(code == 0, f'after shutdown: exit status 0 (got {code})')
        if s:
            s.close()


def demo():
    t0 = time.time()
    r = subprocess.run([memvisor, 'demo'], capture_output=True, text=True,
                       timeout=300)
    note(f'demo took {time.time() - t0:.1f} s')
    passes = [w for w in ('dirty', 'ptchurn', 'balloon', 'hostile', 'abi')
              if f'{w}: pass' in r.stdout]
    ok(r.returncode == 0 and len(passes) == 5,
       f'demo: every workload passes ({passes})')
    ok(r.stderr.count('final audit: clean') == 5, 'demo: five clean audits')


def main():
    usable, forced, why = kvm_state()
    print(f'1..{PLAN}', flush=True)
    load_errors()
    without_kvm(usable, forced, why)
    if not usable:
        print(f'# SKIP: KVM tests did not run: {why}', flush=True)
        for what in KVM_SUBTESTS:
            skip(what, why)
        return
    kvmtap.note_flavour()
    with tempfile.TemporaryDirectory() as tmp:
        first_run(tmp)
        second_run(tmp)
    demo()
    if len(results) != PLAN:
        ok(False, f'the script ran {len(results)} subtests, planned {PLAN}')


main()
sys.exit(0 if all(results) else 1)
