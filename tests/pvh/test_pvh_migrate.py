#!/usr/bin/env python3
"""test_pvh_migrate.py MEMVISOR IMAGE (TAP)

The PVH workload guest (guest/pvh) live-migrated between two memvisor
processes over TCP on 127.0.0.1 while it dirties memory, as bench/compare
migrates it: `memvisor receive`, `memvisor run IMAGE --control`, then
`memvisor migrate --downtime 300`.  A 96 MiB HVM domain with 48 MiB of
self-checking pages rewritten at 50 MiB/s and verified at 256 MiB/s.

Checks: the migration's summary (ok, rounds, bytes), the source exits 0
once the destination runs the guest, the heartbeats go on at the
destination (counters continuing from the source's, errors=0) until its
verifier has swept every page once more after the move, and the pause the
guest saw (the first heartbeat's gap at the destination) is reported.  The
self-check's power to fail is shown by test_pvh.py's corrupt runs.

Where KVM is not usable (or memvisor exits 69) the program is skipped.
"""
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                '..', 'lib'))
import kvmtap  # noqa: E402
import pvhwork  # noqa: E402

PAGES = 48 * 256


def wait(pred, timeout, procs):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        if any(p.poll() is not None for p in procs):
            return pred()
        time.sleep(0.02)
    return False


def main():
    memvisor, image = sys.argv[1], sys.argv[2]
    if not kvmtap.start():
        return 0
    khz = kvmtap.tsc_khz()
    tmp = tempfile.mkdtemp(prefix='pvh-migrate.')
    slog, dlog, derr = f'{tmp}/src.out', f'{tmp}/dst.out', f'{tmp}/dst.err'
    serr = f'{tmp}/src.err'
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    with open(dlog, 'w') as out, open(derr, 'w') as err:
        dst = subprocess.Popen([memvisor, 'receive', '--listen',
                                f'tcp:127.0.0.1:{port}', '--control',
                                f'{tmp}/dst.ctl'], stdin=subprocess.DEVNULL,
                               stdout=out, stderr=err)
    src = None
    checks = []
    try:
        if not wait(lambda: 'waiting for a migration' in pvhwork.read(derr), 30,
                    [dst]):
            if dst.poll() == 69:
                print('1..0 # SKIP memvisor: KVM not available')
                return 0
            checks.append((False, f'memvisor receive listens: {pvhwork.read(derr)}'))
            raise RuntimeError
        cmdline = f'mem=48 rate=50 verify=256 hb=100 tsc_khz={khz}'
        # stdout is the guest's serial port alone, so that the two sides'
        # consoles join into one: the final pause may cut a line in two
        with open(slog, 'w') as out, open(serr, 'w') as err:
            src = subprocess.Popen([memvisor, 'run', image, '--mem', '96',
                                    '--cmdline', cmdline, '--control',
                                    f'{tmp}/src.ctl'],
                                   stdin=subprocess.DEVNULL, stdout=out,
                                   stderr=err)
        steady = wait(lambda: len(pvhwork.parse(pvhwork.read(slog))['hb']) >= 5, 60,
                      [src])
        checks.append((steady, 'the guest runs at the source (5 heartbeats)'))
        if not steady:
            raise RuntimeError
        r = subprocess.run([memvisor, 'migrate', '--control', f'{tmp}/src.ctl',
                            f'tcp:127.0.0.1:{port}', '--downtime', '300'],
                           capture_output=True, text=True, timeout=120)
        for line in (r.stdout + r.stderr).splitlines():
            print('# migrate: ' + line)
        line = next((x for x in r.stdout.splitlines()
                     if x.startswith('{"ok"')), '{}')
        j = json.loads(line)
        summ = j.get('summary', {})
        checks.append((r.returncode == 0 and j.get('ok') is True and
                       summ.get('rounds', 0) >= 1 and
                       summ.get('bytes', 0) >= PAGES * 4096,
                       f'migrated: {summ.get("rounds")} rounds, '
                       f'{summ.get("bytes", 0) / 2**20:.1f} MiB, downtime '
                       f'{summ.get("downtime_ms")} ms'))
        try:
            code = src.wait(timeout=30)
        except subprocess.TimeoutExpired:
            code = None
        checks.append((code == 0, f'the source exited 0 (got {code})'))
        src_text = pvhwork.read(slog)
        src_hb = pvhwork.parse(src_text)['hb']
        last_src = src_hb[-1]

        def joined():
            # the heartbeats after the source's last whole one, the line the
            # pause cut (if any) included
            return pvhwork.parse(src_text + pvhwork.read(dlog))

        def swept():
            hb = joined()['hb'][len(src_hb):]
            return len(hb) >= 2 and hb[-1]['verified'] - hb[0]['verified'] \
                >= PAGES
        ok = wait(swept, 60, [dst])
        after = joined()
        hbs = after['hb'][len(src_hb):]
        checks.append((ok, f'heartbeats at the destination until every page '
                           f'was verified again ({len(hbs)} heartbeats)'))
        seq = after['hb']
        checks.append((bool(hbs) and
                       all(b['n'] == a['n'] + 1 and b['dirtied'] >= a['dirtied']
                           for a, b in zip(seq, seq[1:])) and
                       hbs[-1]['dirtied'] > hbs[0]['dirtied'],
                       'the counters go on from the source\'s (heartbeat '
                       f'{last_src["n"]} -> {hbs[0]["n"] if hbs else None}, '
                       'consecutive over both consoles)'))
        checks.append((bool(hbs) and all(h['errors'] == 0 for h in hbs)
                       and not after['fail'],
                       'errors=0 at the destination'))
        if hbs:
            print(f'# the pause the guest saw: {hbs[0]["gap_us"] / 1000:.1f} '
                  f'ms (memvisor downtime {summ.get("downtime_ms")} ms, '
                  f'until running {j.get("downtime_to_running_ms")} ms)')
    except RuntimeError:
        pass
    finally:
        for p in (src, dst):
            if p and p.poll() is None:
                p.kill()
                p.wait()
        for name, path in (('source', slog), ('source stderr', serr),
                           ('destination', dlog),
                           ('destination stderr', derr)):
            for line in pvhwork.read(path).splitlines()[-8:]:
                print(f'# {name}: {line}')
    return kvmtap.report(checks)


if __name__ == '__main__':
    sys.exit(main())
