#!/usr/bin/env python3
"""test_hvm_cli.py MEMVISOR PVHSTUB: an HVM guest through the memvisor
command (TAP).

- `memvisor run` of the PVH test stub without --hvm (the image says HVM):
  its serial lines on stdout, its exit-port status as the process's;
- live migration between two memvisor processes over a unix socket while
  the stub counts (per-page counters checked at every tick): the source
  exits 0 once the destination confirmed, the destination's guest goes on
  to tick 20 with no bad page, and the ticks of both consoles together are
  1..20, each once;
- save to a file with --zstd (the guest stopped) and restore: the same.

Where KVM is not usable every subtest is reported as skipped.
"""
import json
import os
import re
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                '..', 'lib'))
import kvmtap  # noqa: E402

memvisor, stub = sys.argv[1], sys.argv[2]
results = []


def ok(cond, what):
    results.append(bool(cond))
    print(('ok' if cond else 'not ok') + f' {len(results)} - {what}',
          flush=True)
    return cond


def note(s):
    for line in str(s).splitlines():
        print('# ' + line, flush=True)


def ticks(text):
    return [int(t, 16) for t in re.findall(r'pvh: tick ([0-9a-f]{8}) ok', text)]


def wait_for(path, what, secs=20):
    end = time.time() + secs
    while time.time() < end:
        if os.path.exists(path):
            return True
        time.sleep(0.05)
    note(f'no {what} after {secs} s')
    return False


def wait_ticks(path, n, secs=60):
    end = time.time() + secs
    while time.time() < end:
        with open(path, errors='replace') as f:
            if len(ticks(f.read())) >= n:
                return True
        time.sleep(0.05)
    return False


def run_status(tmp):
    out = subprocess.run([memvisor, 'run', stub, '--mem', '16', '--cmdline',
                          'status'], capture_output=True, text=True,
                         timeout=120)
    ok(out.returncode == 42 and 'pvh: done' in out.stdout,
       'run: the image boots as HVM without --hvm, status 42 from port 0xf4')
    if out.returncode != 42:
        note(out.stdout + out.stderr)


def moved(tmp, what, src_log, dst_log, src_rc, dst_rc):
    with open(src_log, errors='replace') as f:
        a = f.read()
    with open(dst_log, errors='replace') as f:
        b = f.read()
    # the consoles joined: a line cut by the pause becomes whole again
    # (memvisor's own lines at the destination come before the guest's
    # rest of that line: left out of the join)
    t = ticks(a + '\n'.join(x for x in b.split('\n')
                            if not x.startswith('memvisor: ')))
    good = (src_rc == 0 and dst_rc == 0 and 'bad page' not in b and
            'pvh: done' in b and t == list(range(1, 21)) and
            len(ticks(a)) >= 2)
    ok(good, f'{what}: ticks 1..20 once each across the move, no bad page '
       f'({len(ticks(a))} before it)')
    if not good:
        note(f'source rc {src_rc}:\n{a}\ndestination rc {dst_rc}:\n{b}')


def live(tmp):
    ctl, mig = os.path.join(tmp, 'src.ctl'), os.path.join(tmp, 'mig.sock')
    src_log, dst_log = (os.path.join(tmp, 'src.out'),
                        os.path.join(tmp, 'dst.out'))
    with open(dst_log, 'w') as dl, open(src_log, 'w') as sl:
        dst = subprocess.Popen([memvisor, 'receive', '--listen',
                                'unix:' + mig], stdout=dl,
                               stderr=subprocess.STDOUT)
        src = subprocess.Popen([memvisor, 'run', stub, '--mem', '64',
                                '--cmdline', 'count', '--control', ctl],
                               stdout=sl, stderr=subprocess.STDOUT)
        try:
            wait_for(ctl, 'control socket')
            wait_for(mig, 'listening socket')
            wait_ticks(src_log, 2)
            m = subprocess.run([memvisor, 'migrate', '--control', ctl,
                                'unix:' + mig], capture_output=True,
                               text=True, timeout=120)
            note(m.stderr.strip().splitlines()[-1] if m.stderr else '')
            ok(m.returncode == 0 and '"ok":true' in m.stdout,
               'live migration of an HVM guest: the summary says ok')
            src_rc = src.wait(timeout=120)
            dst_rc = dst.wait(timeout=120)
        finally:
            for p in (src, dst):
                if p.poll() is None:
                    p.kill()
                    p.wait()
    moved(tmp, 'live migration', src_log, dst_log, src_rc, dst_rc)


def vcpus_request(ctl):
    """The control request vcpus on the running stub: its one vCPU
    runnable or halted, in the stub (below 1 MiB + its size, paging off),
    its LAPIC software-enabled or not but its TSC and KVM's clock moving."""
    def ask(req={'cmd': 'vcpus'}):
        return kvmtap.control(ctl, req, 30)
    a, b = ask(), ask()
    note(f'vcpus: {json.dumps(a)[:400]}')
    good = a.get('ok') and b.get('ok') and len(a['vcpus']) == 1
    if good:
        v, w = a['vcpus'][0], b['vcpus'][0]
        good = (v['mp_state'] in (0, 3) and 0x100000 <= v['rip'] < 0x200000
                and w['tsc'] > v['tsc'] > 0 and b['clock_ns'] > a['clock_ns']
                and v['irr'] >= -1 and v['isr'] >= -1)
    ok(good, 'vcpus (control socket): one vCPU in the stub, its TSC and '
       'the clock moving')
    # (the stub has no NMI handler: an NMI that reached it would end it)
    bad = [ask({'cmd': 'nmi', 'vcpu': 1}), ask({'cmd': 'nmi', 'vcpu': 'x'}),
           ask({'cmd': 'nmi', 'vcpu': 99999999999})]
    note(f'nmi refusals: {json.dumps(bad)}')
    ok(all(r.get('ok') is False for r in bad) and
       'Invalid argument' in bad[0].get('error', '') and
       'number' in bad[1].get('error', ''),
       'nmi (control socket): a vCPU the guest lacks or a non-number refused')


def save_restore(tmp):
    ctl, img = os.path.join(tmp, 'save.ctl'), os.path.join(tmp, 'img')
    src_log, dst_log = (os.path.join(tmp, 'save.out'),
                        os.path.join(tmp, 'restore.out'))
    with open(src_log, 'w') as sl:
        src = subprocess.Popen([memvisor, 'run', stub, '--mem', '16',
                                '--cmdline', 'count', '--control', ctl],
                               stdout=sl, stderr=subprocess.STDOUT)
        try:
            wait_for(ctl, 'control socket')
            wait_ticks(src_log, 2)
            vcpus_request(ctl)
            s = subprocess.run([memvisor, 'save', '--control', ctl, img,
                                '--zstd', '--stop'], capture_output=True,
                               text=True, timeout=120)
            ok(s.returncode == 0, 'save --zstd --stop of an HVM guest')
            src_rc = src.wait(timeout=60)
        finally:
            if src.poll() is None:
                src.kill()
                src.wait()
    with open(dst_log, 'w') as dl:
        r = subprocess.run([memvisor, 'restore', img], stdout=dl,
                           stderr=subprocess.STDOUT, timeout=120)
    note(f'stream of {os.path.getsize(img)} bytes')
    moved(tmp, 'save and restore', src_log, dst_log, src_rc, r.returncode)


def main():
    why = kvmtap.unusable()
    if why:
        print(f'1..0 # SKIP {why}')
        return 0
    kvmtap.note_flavour()
    with tempfile.TemporaryDirectory() as tmp:
        run_status(tmp)
        live(tmp)
        save_restore(tmp)
    print(f'1..{len(results)}')
    return 0 if all(results) else 1


if __name__ == '__main__':
    sys.exit(main())
