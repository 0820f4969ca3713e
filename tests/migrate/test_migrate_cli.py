#!/usr/bin/env python3
"""test_migrate_cli.py MEMVISOR PVKERNEL: migration between two memvisor
processes, end to end (TAP).

- live migration of a 2-vCPU guest running the dirtier, over a unix socket
  and over TCP: the source exits 0 once the destination confirmed; the
  summary (stdout and the control socket's JSON) has the rounds; on the
  destination the audit is clean and the dirtier goes on verifying every
  page against the counter it last wrote (the memory-consistency oracle:
  a page lost or stale in the final round fails the next pass);
- live migrations with page data over 2 and 3 connections (--connections,
  a parallel stream), the same checks;
- the connection cut after every record in turn (--test-cut-after N): the
  migration fails, the source runs on, the destination exits with an
  error and leaves nothing behind (no process, no socket file); then a
  migration with no cut succeeds;
- a parallel migration with one of its connections (any of them, picked
  at random) cut at a random record: the same, then a parallel migration
  succeeds;
- the page-table churn re-run on the destination: a guest that waits for
  its move (`moved`), migrated over 2 connections, then runs ptchurn
  there: its self-checks pass, the audit stays clean; with the guest's
  refresh of the frame numbers it keeps switched off (refresh=0) the same
  ptchurn fails there;
- a hostile extra connection (garbage, or another stream's token) joining
  a parallel stream: the destination refuses with its reason, answers ERR
  on the main connection and leaves nothing behind;
- the destination killed at random points of a migration: the source runs
  on each time; a retry succeeds;
- save to a file (the guest stopped) and restore: the restored guest runs
  on, audit clean;
- migration between two network namespaces joined by a veth pair (two
  "hosts"); skipped, and said so, where namespaces cannot be made.

Where KVM is not usable every subtest is reported as skipped.
"""
import json
import os
import random
import re
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                '..', 'lib'))
import kvmtap  # noqa: E402

memvisor, pvkernel = sys.argv[1], sys.argv[2]
results = []
CUT_MEM = 16
SEED = int(os.environ.get('MEMVISOR_SEED', '7'))


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


def control(path, req, timeout=30):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(path)
    s.sendall((json.dumps(req) + '\n').encode())
    buf = b''
    while not buf.endswith(b'\n'):
        chunk = s.recv(65536)
        if not chunk:
            break
        buf += chunk
    s.close()
    return json.loads(buf.decode())


def wait_for(cond, timeout=30):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if cond():
            return True
        time.sleep(0.02)
    return False


class Proc:
    def __init__(self, args, ns=None):
        self.out = tempfile.TemporaryFile()
        pre = ['ip', 'netns', 'exec', ns] if ns else []
        self.p = subprocess.Popen(pre + [memvisor] + args, stdout=self.out,
                                  stderr=subprocess.STDOUT)

    def text(self):
        self.out.seek(0)
        return self.out.read().decode(errors='replace')

    def wait(self, timeout=60):
        try:
            return self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()
            return None


def source(tmp, name, mem=64, ns=None, extra=()):
    ctl = os.path.join(tmp, name + '.ctl')
    p = Proc(['run', pvkernel, '--mem', str(mem), '--vcpus', '2',
              '--cmdline', 'dirty pages=512 passes=0', '--control', ctl] +
             list(extra), ns)
    wait_for(lambda: os.path.exists(ctl) and 'dirty: start' in p.text())
    return p, ctl


def progress(text):
    """(vcpu, pass, bad) of every progress line of the dirtier"""
    return [(int(a), int(b), int(c)) for a, b, c in
            re.findall(r'dirty: vcpu (\d+) pass (\d+) bad=(\d+)', text)]


def runs_on(p, ctl, more=2):
    """the guest behind ctl prints `more` further progress lines per vCPU,
    all with bad=0"""
    n0 = len(progress(p.text()))
    good = wait_for(lambda: len(progress(p.text())) >= n0 + 2 * more, 60)
    return good and all(b == 0 for _, _, b in progress(p.text()))


def stop(p, ctl):
    try:
        control(ctl, {'cmd': 'shutdown'})
    except OSError:
        pass
    return p.wait()


def migrate(ctl, to, extra=()):
    r = subprocess.run([memvisor, 'migrate', '--control', ctl, to] +
                       list(extra), capture_output=True, text=True,
                       timeout=120)
    return r


def live_migration(tmp, to_of, label, ns_src=None, ns_dst=None, conns=1):
    src, sctl = source(tmp, 'src-' + label, ns=ns_src)
    dctl = os.path.join(tmp, 'dst-' + label + '.ctl')
    addr_listen, addr_to = to_of(label)
    dst = Proc(['receive', '--listen', addr_listen, '--control', dctl],
               ns_dst)
    wait_for(lambda: 'waiting for a migration' in dst.text())
    r = migrate(sctl, addr_to, ['--downtime', '100', '--connections',
                                str(conns)])
    note(r.stdout + r.stderr)
    ok(r.returncode == 0, f'{label}: migrate exits 0')
    if conns > 1:
        ok(f'over {conns} connections' in dst.text() and
           f'"connections":{conns}' in r.stdout,
           f'{label}: the page data went over {conns} connections')
    summary = None
    for line in r.stdout.splitlines():
        if line.startswith('{'):
            summary = json.loads(line)
    ok(summary and summary['ok'] and summary['stopped'] and
       summary['summary']['rounds'] >= 2 and
       summary['summary']['downtime_ms'] > 0 and
       summary['summary']['round'][-1]['final'] and
       summary['downtime_to_running_ms'] >= summary['summary']['downtime_ms'],
       f'{label}: JSON summary: live rounds, a final paused round, downtime')
    ok(src.wait(30) == 0, f'{label}: the source exits 0 once confirmed')
    ok(wait_for(lambda: os.path.exists(dctl)), f'{label}: destination runs')
    a = control(dctl, {'cmd': 'audit'})
    ok(a['ok'] and a['clean'], f'{label}: destination audit clean ({a})')
    good = runs_on(dst, dctl)
    if not good:
        note(dst.text()[-3000:])
    ok(good, f'{label}: the destination dirtier verifies every page, '
       'pass after pass, bad=0')
    ok(stop(dst, dctl) == 0, f'{label}: destination exits 0 after shutdown')


def crc32c(data, crc=0):
    crc ^= 0xffffffff
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 & -(crc & 1))
    return crc ^ 0xffffffff


def image_header(flags):
    h = struct.pack('<8sHHIIII', b'MVSTREAM', 1, 1, 1, 12, flags, 0)
    return h + struct.pack('<I', crc32c(h))


def record(rtype, body):
    h = struct.pack('<III', rtype, 0, len(body))
    h += struct.pack('<I', crc32c(h + body))
    return h + body + b'\0' * ((8 - len(body) % 8) % 8)


def hostile_extra(tmp, label, extra_bytes):
    """a parallel stream's head on the main connection (a 16 MiB domain,
    2 connections), then extra_bytes on the second one: the destination
    must refuse, say ERR on the main one, and leave nothing behind"""
    path = os.path.join(tmp, f'hostile-{label}.sock')
    dst = Proc(['receive', '--listen', 'unix:' + path, '--pool', '64'])
    wait_for(lambda: 'waiting for a migration' in dst.text())
    token = bytes(range(1, 17))
    m = socket.socket(socket.AF_UNIX)
    m.connect(path)
    m.sendall(image_header(0x4) +
              record(1, struct.pack('<IIQQQQQ', 1, 1, 4096, 0, 0, 0, 0)) +
              record(8, struct.pack('<II16s', 2, 0, token)))
    x = socket.socket(socket.AF_UNIX)
    x.connect(path)
    x.sendall(extra_bytes(token))
    x.shutdown(socket.SHUT_WR)
    m.settimeout(30)
    word = b''
    try:
        while not word.endswith(b'\n'):
            chunk = m.recv(4096)
            if not chunk:
                break
            word += chunk
    except OSError:
        pass
    st = dst.wait(30)
    m.close()
    x.close()
    return st, word.decode(errors='replace').strip(), dst.text(), \
        os.path.exists(path)


def free_port():
    s = socket.socket()
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
    s.close()
    return port


def main():
    why = kvmtap.unusable()
    if why:
        print('1..0 # SKIP ' + why)
        return 0
    kvmtap.note_flavour()
    random.seed(SEED)
    note(f'seed {SEED}')
    with tempfile.TemporaryDirectory(dir='/dev/shm' if os.path.isdir(
            '/dev/shm') else None) as tmp:
        live_migration(tmp, lambda l: (f'unix:{tmp}/{l}.mig',) * 2, 'unix')
        port = free_port()
        live_migration(tmp, lambda l: (f'tcp:127.0.0.1:{port}',) * 2, 'tcp')
        live_migration(tmp, lambda l: (f'unix:{tmp}/{l}.mig',) * 2,
                       'unix, 3 connections', conns=3)
        port = free_port()
        live_migration(tmp, lambda l: (f'tcp:127.0.0.1:{port}',) * 2,
                       'tcp, 2 connections', conns=2)

        # a parallel migration with any one of its connections cut at a
        # random record (every connection writes at least 3 records: its
        # CHANNEL, BARRIER and END; the main one at least 9)
        src, sctl = source(tmp, 'pcut', mem=CUT_MEM)
        pcut_fail, trials = [], []
        for i in range(8):
            conns = 2 + i % 2
            conn = (i // 2) % conns  # each connection in turn
            cut = random.randint(1, 8 if conn == 0 else 2)
            live = random.random() < 0.5
            trials.append(f'{conn}/{conns}@{cut}{"L" if live else ""}')
            path = os.path.join(tmp, f'pcut{i}.sock')
            dst = Proc(['receive', '--listen', 'unix:' + path, '--pool',
                        '64'])
            wait_for(lambda: 'waiting for a migration' in dst.text())
            r = migrate(sctl, 'unix:' + path,
                        ['--connections', str(conns), '--test-cut-conn',
                         str(conn), '--test-cut-after', str(cut)] +
                        ([] if live else ['--offline']))
            st = dst.wait(30)
            if r.returncode == 0 or st in (None, 0) or os.path.exists(path):
                pcut_fail.append(f'connection {conn} of {conns} cut after '
                                 f'{cut}: migrate {r.returncode}, '
                                 f'destination {st}, socket left: '
                                 f'{os.path.exists(path)}')
            s = control(sctl, {'cmd': 'stats'})
            if not s['ok'] or s.get('stopped'):
                pcut_fail.append(f'trial {i}: the source stopped')
        note('connection/connections@record (L: live): ' + ' '.join(trials))
        note('\n'.join(pcut_fail))
        ok(not pcut_fail and runs_on(src, sctl, 1),
           'a parallel migration with one of its connections cut at a '
           'random record, 8 times: each failed, the destination exited '
           'with an error and left no socket, the source runs on with '
           'bad=0')
        dctl = os.path.join(tmp, 'pcut-dst.ctl')
        path = os.path.join(tmp, 'pcut-ok.sock')
        dst = Proc(['receive', '--listen', 'unix:' + path, '--control', dctl])
        wait_for(lambda: 'waiting for a migration' in dst.text())
        r = migrate(sctl, 'unix:' + path, ['--connections', '3'])
        ok(r.returncode == 0 and src.wait(30) == 0 and runs_on(dst, dctl, 1),
           'then a migration over 3 connections succeeds; the guest runs on '
           'there')
        stop(dst, dctl)

        # the page-table churn re-run on the destination
        for refresh in (1, 0):
            ctl = os.path.join(tmp, f'moved{refresh}.ctl')
            src = Proc(['run', pvkernel, '--mem', '64', '--vcpus', '2',
                        '--cmdline', f'moved ptchurn refresh={refresh}',
                        '--control', ctl])
            wait_for(lambda: 'moved: waiting' in src.text())
            path = os.path.join(tmp, f'moved{refresh}.sock')
            dst = Proc(['receive', '--listen', 'unix:' + path,
                        '--audit-every', '200'])
            wait_for(lambda: 'waiting for a migration' in dst.text())
            r = migrate(ctl, 'unix:' + path, ['--connections', '2'])
            st, sst = dst.wait(120), src.wait(30)
            out = dst.text()
            if refresh:
                if st != 0:
                    note(out[-2000:])
                ok(r.returncode == 0 and sst == 0 and st == 0 and
                   'moved: l4 mfn' in out and 'ptchurn: pass' in out and
                   'guest: pass' in out and 'final audit: clean' in out and
                   'FAIL' not in out,
                   'ptchurn re-run on the destination after a live migration '
                   'over 2 connections: its self-checks pass, audits clean '
                   f'(destination status {st})')
            else:
                ok(r.returncode == 0 and st not in (None, 0) and
                   'ptchurn: FAIL' in out,
                   'with the guest\'s refresh of its kept frame numbers '
                   'switched off the same ptchurn fails at the destination '
                   f'(status {st}: {out.count("FAIL: ptchurn")} failed '
                   'checks)')

        # hostile extra connections
        for label, extra, want in (
                ('garbage', lambda t: b'GET / HTTP/1.0\r\n' * 4,
                 'bad magic'),
                ('token', lambda t: image_header(0x8) + record(
                    9, struct.pack('<II16s', 1, 2, bytes(16 * [7]))),
                 'another stream')):
            st, word, text, left = hostile_extra(tmp, label, extra)
            ok(st == 65 and word.startswith('ERR') and want in word and
               want in text and not left,
               f'a hostile extra connection ({label}): refused (status '
               f'{st}), the source told "{word[:90]}", no socket left')

        # the connection cut after every record in turn
        src, sctl = source(tmp, 'cut', mem=CUT_MEM)
        cut_fail = []
        cut = 0
        while True:
            cut += 1
            path = os.path.join(tmp, f'cut{cut}.sock')
            dst = Proc(['receive', '--listen', 'unix:' + path, '--pool',
                        '64'])
            wait_for(lambda: 'waiting for a migration' in dst.text())
            r = migrate(sctl, 'unix:' + path,
                        ['--offline', '--test-cut-after', str(cut)])
            if r.returncode == 0:
                dctl = None
                break
            st = dst.wait(30)
            if st in (None, 0) or os.path.exists(path):
                cut_fail.append(f'cut {cut}: destination status {st}, '
                                f'socket left: {os.path.exists(path)}')
            s = control(sctl, {'cmd': 'stats'})
            if not s['ok'] or s.get('stopped'):
                cut_fail.append(f'cut {cut}: the source stopped')
            if cut > 64:
                break
        note('\n'.join(cut_fail))
        ok(not cut_fail and cut > 5,
           f'connection cut after each of {cut - 1} record boundaries: each '
           'migration failed, the source ran on, the destination exited '
           'with an error and left no socket')
        ok(r.returncode == 0 and src.wait(30) == 0,
           f'then a migration with no cut ({cut} records) succeeds')
        # the destination of that last one runs the guest: stop it
        dst.p.terminate()
        dst.wait(30)

        # the destination dying at random points: after a random number
        # of records (it exits at once, as if killed, telling nobody), and
        # once killed by SIGKILL at a random moment
        src, sctl = source(tmp, 'kill')
        kills = []
        for i in range(4):
            path = os.path.join(tmp, f'kill{i}.sock')
            n = random.randint(1, 12)
            args = ['receive', '--listen', 'unix:' + path]
            if i < 3:
                args += ['--test-die-after', str(n)]
            dst = Proc(args)
            wait_for(lambda: 'waiting for a migration' in dst.text())
            m = subprocess.Popen([memvisor, 'migrate', '--control', sctl,
                                  'unix:' + path], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
            if i == 3:
                delay = random.uniform(0.05, 0.25)
                time.sleep(delay)
                dst.p.kill()
                what = f'killed after {delay * 1000:.0f} ms'
            else:
                what = f'died after {n} records'
            st = dst.wait()
            out, err = m.communicate(timeout=120)
            note(f'destination {what} (status {st}): migrate exited '
                 f'{m.returncode}: {err.strip().splitlines()[-1:]}')
            if m.returncode == 0 and i == 3:
                # the migration was over before the kill: nothing to test
                note('the migration completed before the kill')
                src.wait(30)
                src, sctl = source(tmp, 'kill2')
                continue
            # a process killed by SIGKILL cannot remove its own socket
            # file; one that failed (or died on its own after accepting)
            # leaves nothing
            kills.append((what, m.returncode, st,
                          i < 3 and os.path.exists(path)))
        ok(all(rc != 0 and st != 0 and not left
               for _, rc, st, left in kills) and
           control(sctl, {'cmd': 'stats'})['ok'] and runs_on(src, sctl, 1),
           f'the destination died at {len(kills)} random points: each '
           'migration failed, nothing was left behind, and the source runs '
           'on, its dirtier verifying every page')
        dctl = os.path.join(tmp, 'kill-dst.ctl')
        path = os.path.join(tmp, 'kill-retry.sock')
        dst = Proc(['receive', '--listen', 'unix:' + path, '--control', dctl])
        wait_for(lambda: 'waiting for a migration' in dst.text())
        r = migrate(sctl, 'unix:' + path)
        ok(r.returncode == 0 and src.wait(30) == 0 and runs_on(dst, dctl, 1),
           'a retry after the kills succeeds; the guest runs on there')
        stop(dst, dctl)

        # device models move too: the test device, its state in the
        # stream; a destination without a device model for it refuses
        src, sctl = source(tmp, 'dev', extra=['--device', 'test'])
        path = os.path.join(tmp, 'dev-bad.sock')
        dst = Proc(['receive', '--listen', 'unix:' + path])
        wait_for(lambda: 'waiting for a migration' in dst.text())
        r = migrate(sctl, 'unix:' + path)
        st = dst.wait(30)
        note(r.stderr.strip().splitlines()[-1:])
        ok(r.returncode != 0 and st == 65 and
           'no live device model' in r.stderr and
           control(sctl, {'cmd': 'stats'})['ok'],
           'a destination with no device model for the device state '
           'refuses; the source keeps the guest')
        dctl = os.path.join(tmp, 'dev-dst.ctl')
        path = os.path.join(tmp, 'dev.sock')
        dst = Proc(['receive', '--listen', 'unix:' + path, '--control', dctl,
                    '--device', 'test'])
        wait_for(lambda: 'waiting for a migration' in dst.text())
        r = migrate(sctl, 'unix:' + path)
        summary = next((json.loads(x) for x in r.stdout.splitlines()
                        if x.startswith('{')), None)
        ok(r.returncode == 0 and summary and
           summary['summary']['devices'] == 1 and
           summary['summary']['devices_quiesced'] == 1 and
           src.wait(30) == 0 and
           '1 device states' in dst.text() and runs_on(dst, dctl, 1),
           'with --device test at both ends the device model is quiesced at '
           'the final pause, its state moves (1 DEVICE record) and the guest '
           'runs on')
        stop(dst, dctl)

        # save and restore
        src, sctl = source(tmp, 'save')
        snap = os.path.join(tmp, 'guest.snap')
        r = subprocess.run([memvisor, 'save', '--control', sctl, snap,
                            '--stop', '--zstd'], capture_output=True,
                           text=True, timeout=120)
        note(r.stdout)
        with open(snap, 'rb') as f:
            head = f.read(32)
        ok(r.returncode == 0 and src.wait(30) == 0 and
           head[:8] == b'MVSTREAM' and head[20] & 1,
           'save --stop --zstd: a compressed snapshot file, the source '
           'stopped')
        rctl = os.path.join(tmp, 'restored.ctl')
        dst = Proc(['restore', snap, '--control', rctl])
        wait_for(lambda: os.path.exists(rctl))
        a = control(rctl, {'cmd': 'audit'})
        ok(a['ok'] and a['clean'] and runs_on(dst, rctl, 1),
           'restore: audit clean, the dirtier goes on with bad=0')
        stop(dst, rctl)
        with open(snap, 'r+b') as f:
            f.seek(os.path.getsize(snap) // 2)
            b = f.read(1)
            f.seek(-1, 1)
            f.write(bytes([b[0] ^ 0x40]))
        dst = Proc(['restore', snap])
        st = dst.wait(30)
        ok(st == 65 and 'checksum mismatch' in dst.text(),
           f'a corrupted snapshot is refused (status {st}): '
           f'{dst.text().strip()[-120:]}')

        # two network namespaces
        ns = ('mvmigA%d' % os.getpid(), 'mvmigB%d' % os.getpid())
        made = subprocess.run(['ip', 'netns', 'add', ns[0]],
                              capture_output=True, text=True)
        if made.returncode != 0:
            skip('migration between two network namespaces',
                 'ip netns add failed: ' + made.stderr.strip())
        else:
            try:
                cmds = [['ip', 'netns', 'add', ns[1]],
                        ['ip', 'link', 'add', 'mva%d' % os.getpid(), 'netns',
                         ns[0], 'type', 'veth', 'peer', 'name',
                         'mvb%d' % os.getpid(), 'netns', ns[1]],
                        ['ip', '-n', ns[0], 'addr', 'add', '10.231.7.1/24',
                         'dev', 'mva%d' % os.getpid()],
                        ['ip', '-n', ns[1], 'addr', 'add', '10.231.7.2/24',
                         'dev', 'mvb%d' % os.getpid()],
                        ['ip', '-n', ns[0], 'link', 'set',
                         'mva%d' % os.getpid(), 'up'],
                        ['ip', '-n', ns[1], 'link', 'set',
                         'mvb%d' % os.getpid(), 'up'],
                        ['ip', '-n', ns[0], 'link', 'set', 'lo', 'up'],
                        ['ip', '-n', ns[1], 'link', 'set', 'lo', 'up']]
                fails = [c for c in cmds
                         if subprocess.run(c, capture_output=True).returncode]
                if fails:
                    skip('migration between two network namespaces',
                         'could not set up the veth pair: ' + str(fails[0]))
                else:
                    live_migration(
                        tmp, lambda l: ('tcp:10.231.7.2:7411',
                                        'tcp:10.231.7.2:7411'),
                        'netns', ns_src=ns[0], ns_dst=ns[1])
            finally:
                for n in ns:
                    subprocess.run(['ip', 'netns', 'del', n],
                                   capture_output=True)
    print(f'1..{len(results)}')
    return 0 if all(results) else 1


if __name__ == '__main__':
    sys.exit(main())
