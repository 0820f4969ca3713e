#!/usr/bin/env python3
"""test_hvm_dm_cli.py MEMVISOR PVH-WORKLOAD: an HVM guest with a device model
moved between memvisor processes by the memvisor command (TAP).

The PVH workload guest in its device mode (`dev=1 dev_mmio=... dev_hb=1`,
guest/README.md) with `--device test:mmio=0xf0000000` on both sides: at
every heartbeat it checks that the page the device filled at the last one
is still there and that the device's registers hold the witness it left,
then has the device fill the page again; so after a move both the page
(the device's DMA, carried through the dirty log) and the registers (the
device model's state, saved at the source and given to the device model
started at the destination) must have come along.

- live migration over a unix socket (`receive --device test:mmio=...`,
  `migrate`): the source exits 0 once the destination confirmed, the
  destination says it restored 1 device state, the guest goes on there to
  its end with no failed check and heartbeats after the move;
- save --stop and `restore --device test:mmio=...`: the same.

Where KVM is not usable every subtest is reported as skipped.
"""
import os
import re
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                '..', 'lib'))
import kvmtap  # noqa: E402

memvisor, image = sys.argv[1], sys.argv[2]
DEVICE = 'test:mmio=0xf0000000'
CMDLINE = 'dev=1 dev_mmio=0xf0000000 dev_hb=1 mem=4 secs=3 hb=100'
results = []


def ok(cond, what):
    results.append(bool(cond))
    print(('ok' if cond else 'not ok') + f' {len(results)} - {what}',
          flush=True)
    return cond


def note(s):
    for line in str(s).splitlines():
        print('# ' + line, flush=True)


def wait_for(path, what, secs=20):
    end = time.time() + secs
    while time.time() < end:
        if os.path.exists(path):
            return True
        time.sleep(0.05)
    note(f'no {what} after {secs} s')
    return False


def heartbeats(text):
    return [int(n) for n in re.findall(r'^hb (\d+) ', text, re.M)]


def wait_hb(path, n, secs=60):
    end = time.time() + secs
    while time.time() < end:
        with open(path, errors='replace') as f:
            if len(heartbeats(f.read())) >= n:
                return True
        time.sleep(0.05)
    return False


def moved(what, src_log, dst_log, src_rc, dst_rc):
    with open(src_log, errors='replace') as f:
        a = f.read()
    with open(dst_log, errors='replace') as f:
        b = f.read()
    good = (src_rc == 0 and dst_rc == 0 and 'dev: pass' in a and
            'dev: FAIL' not in a + b and
            re.search(r'dev: done heartbeat-ops=\d+ checks=\d+ failures=0',
                      b) is not None and
            'pvh-workload: done' in b and len(heartbeats(b)) >= 3 and
            re.search(r'\b1 device states', b) is not None)
    ok(good, f'{what}: the device\'s page and registers came along (the '
       f'guest\'s checks at {len(heartbeats(b))} heartbeats at the '
       f'destination, {len(heartbeats(a))} before the move), 1 device state '
       'restored')
    if not good:
        note(f'source rc {src_rc}:\n{a}\ndestination rc {dst_rc}:\n{b}')


def live(tmp):
    ctl, mig = os.path.join(tmp, 'src.ctl'), os.path.join(tmp, 'mig.sock')
    src_log, dst_log = (os.path.join(tmp, 'src.out'),
                        os.path.join(tmp, 'dst.out'))
    with open(dst_log, 'w') as dl, open(src_log, 'w') as sl:
        dst = subprocess.Popen([memvisor, 'receive', '--listen',
                                'unix:' + mig, '--device', DEVICE],
                               stdout=dl, stderr=subprocess.STDOUT)
        src = subprocess.Popen([memvisor, 'run', '--hvm', '--kernel', image,
                                '--mem', '32', '--cmdline', CMDLINE,
                                '--device', DEVICE, '--control', ctl],
                               stdout=sl, stderr=subprocess.STDOUT)
        src_rc = dst_rc = None
        try:
            wait_for(ctl, 'control socket')
            wait_for(mig, 'listening socket')
            wait_hb(src_log, 3)
            m = subprocess.run([memvisor, 'migrate', '--control', ctl,
                                'unix:' + mig], capture_output=True,
                               text=True, timeout=120)
            note(m.stderr.strip().splitlines()[-1] if m.stderr else '')
            ok(m.returncode == 0 and '"ok":true' in m.stdout,
               'live migration of an HVM guest with a device model: the '
               'summary says ok')
            src_rc = src.wait(timeout=120)
            dst_rc = dst.wait(timeout=120)
        finally:
            for p in (src, dst):
                if p.poll() is None:
                    p.kill()
                    p.wait()
    moved('live migration', src_log, dst_log, src_rc, dst_rc)


def save_restore(tmp):
    ctl, img = os.path.join(tmp, 'save.ctl'), os.path.join(tmp, 'img')
    src_log, dst_log = (os.path.join(tmp, 'save.out'),
                        os.path.join(tmp, 'restore.out'))
    src_rc = None
    with open(src_log, 'w') as sl:
        src = subprocess.Popen([memvisor, 'run', '--hvm', '--kernel', image,
                                '--mem', '32', '--cmdline', CMDLINE,
                                '--device', DEVICE, '--control', ctl],
                               stdout=sl, stderr=subprocess.STDOUT)
        try:
            wait_for(ctl, 'control socket')
            wait_hb(src_log, 3)
            s = subprocess.run([memvisor, 'save', '--control', ctl, img,
                                '--stop'], capture_output=True, text=True,
                               timeout=120)
            ok(s.returncode == 0, 'save --stop of an HVM guest with a device '
                                  'model')
            src_rc = src.wait(timeout=60)
        finally:
            if src.poll() is None:
                src.kill()
                src.wait()
    with open(dst_log, 'w') as dl:
        r = subprocess.run([memvisor, 'restore', img, '--device', DEVICE],
                           stdout=dl, stderr=subprocess.STDOUT, timeout=120)
    moved('save and restore', src_log, dst_log, src_rc, r.returncode)


def main():
    why = kvmtap.unusable()
    if why:
        print(f'1..0 # SKIP {why}')
        return 0
    kvmtap.note_flavour()
    with tempfile.TemporaryDirectory() as tmp:
        live(tmp)
        save_restore(tmp)
    print(f'1..{len(results)}')
    return 0 if all(results) else 1


if __name__ == '__main__':
    sys.exit(main())
