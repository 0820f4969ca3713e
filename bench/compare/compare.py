#!/usr/bin/env python3
"""bench/compare/compare.py - memvisor beside QEMU: live migration and boot.

Each migration goes from a freshly booted guest to a second process of the
same hypervisor on 127.0.0.1, QEMU and memvisor in the same run:

  QEMU      Debian's qemu-system-x86_64 with KVM, the pc machine, the PVH
            workload guest (guest/pvh) by -kernel, driven over QMP:
            max-bandwidth raised from 7.2's 32 MiB/s to 64 GiB/s, the
            downtime limit, multifd off and on with 2 channels (set on both
            sides; the destination starts with -incoming defer), then
            `migrate` and query-migrate until it completes.
  memvisor  `memvisor run --control SOCK` and `memvisor receive`, then
            `memvisor migrate --downtime MS` (docs/control.md), the same
            image as an HVM domain.  Should memvisor not migrate it (one
            small migration tells), its guest there is the built-in PV guest
            running the paced dirtier (guest/README.md, `dirty` with rate=,
            hb=, tsc_khz=) over the same share of its memory, and the output
            says so.

Workloads: idle (memory filled, nothing dirtied), dirtying 50 and
500 MiB/s; guest RAM 512 MiB and 2 GiB, 3/4 of it filled with
self-checking pages.  Per migration: total time, downtime (each
hypervisor's own figure), the pause the guest saw (the longest gap of its
loop, from its heartbeats, over the migration window: on KVM-PVM the
guest's TSC is the host's, so it is wall time), bytes sent, and whether
the guest's self-check stayed at errors=0 after the move.  Also the boot
time of each to the guest's first serial line: the same PVH image, QEMU
through its firmware, memvisor as an HVM domain.  Ratios are
memvisor / QEMU of the same row (against multifd off and on).

Run (after a build; a release build for figures worth quoting):
  make compare [COMPARE_ARGS=--quick]
  bench/compare/compare.py --memvisor build-bench/src/cli/memvisor \\
      --pvkernel build-bench/guest/pvkernel \\
      --image build-bench/guest/pvh/pvh-workload [--quick] [--reps N] \\
      [--json OUT.json]
--quick: 512 MiB only, one rep (about 3 minutes on 2 idle cores); the full
matrix (512 MiB and 2 GiB, 3 reps, medians) takes about half an hour.
"""
import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                '..', '..', 'tests', 'lib'))
import pvhwork  # noqa: E402

HB_MS = 100
VERIFY_MIB = 256
STEADY_HBS = 5          # heartbeats after the fill before migrating
AFTER_HBS = 5           # heartbeats at the destination at least
MAX_BANDWIDTH = 64 << 30
PV_HB = re.compile(r'^dirty: hb (\d+) t=(\d+) dirtied=(\d+) gap=(\d+) '
                   r'bad=(\d+)\s*$')


def log(msg):
    print(f'compare: {msg}', file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


read = pvhwork.read


def tail(path, n=5):
    lines = read(path).strip().splitlines()[-n:]
    return ' | '.join(x.strip() for x in lines) or '(nothing)'


def wait_for(pred, timeout, what, procs=(), logf=None):
    """Polls pred() until it returns something true; raises on timeout or
    when one of procs exits (with the end of logf)."""
    end = time.monotonic() + timeout
    why = f'timed out after {timeout} s'
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        dead = [p for p in procs if p.poll() is not None]
        if dead:
            why = f'process exited ({dead[0].returncode})'
            break
        time.sleep(0.01)
    raise RuntimeError(f'{what}: {why}' +
                       (f'; its log ends: {tail(logf)}' if logf else ''))


def stop(p):
    if p and p.poll() is None:
        p.send_signal(signal.SIGKILL)
        p.wait()


# ---- heartbeats -----------------------------------------------------------

def pvh_beats(text):
    return pvhwork.parse(text)['hb']


def pv_beats(text):
    out = []
    for line in text.splitlines():
        m = PV_HB.match(line.strip())
        if m:
            g = [int(x) for x in m.groups()]
            out.append({'n': g[0], 't_us': g[1], 'dirtied': g[2],
                        'gap_us': g[3], 'errors': g[4]})
    return out


# ---- QMP ------------------------------------------------------------------

class Qmp:
    def __init__(self, path, timeout=30):
        self.s = socket.socket(socket.AF_UNIX)
        end = time.monotonic() + timeout
        while True:
            try:
                self.s.connect(path)
                break
            except OSError:
                if time.monotonic() > end:
                    raise
                time.sleep(0.02)
        self.f = self.s.makefile('rw')
        json.loads(self.f.readline())       # greeting
        self.cmd('qmp_capabilities')

    def cmd(self, name, **args):
        msg = {'execute': name}
        if args:
            msg['arguments'] = args
        self.f.write(json.dumps(msg) + '\n')
        self.f.flush()
        while True:
            r = json.loads(self.f.readline())
            if 'event' in r:
                continue
            if 'error' in r:
                raise RuntimeError(f'QMP {name}: {r["error"]}')
            return r.get('return')

    def close(self):
        self.s.close()


# ---- one migration ---------------------------------------------------------

def pvh_cmdline(a, rate):
    """The workload guest's command line: the TSC rate measured once for
    the run (both sides get the same), no calibration per boot."""
    return (f'rate={rate} hb={HB_MS} verify={VERIFY_MIB} '
            f'tsc_khz={a.tsc_khz}')


def ram_pages(ram_mib):
    return ram_mib * 3 // 4 * 256


def qemu_migration(a, tmp, ram, rate, dt, mfd):
    port = free_port()
    slog, dlog = f'{tmp}/qsrc.log', f'{tmp}/qdst.log'
    sq, dq = f'{tmp}/qsrc.qmp', f'{tmp}/qdst.qmp'
    for f in (slog, dlog):
        if os.path.exists(f):
            os.unlink(f)
    cmdline = pvh_cmdline(a, rate)
    t0 = time.monotonic()
    with open(f'{tmp}/qsrc.err', 'w') as err:
        src = subprocess.Popen(pvhwork.qemu_cmd(
            a.image, ram, cmdline, f'file:{slog}',
            ['-qmp', f'unix:{sq},server=on,wait=off']),
            stdin=subprocess.DEVNULL, stdout=err, stderr=err)
    with open(f'{tmp}/qdst.err', 'w') as err:
        dst = subprocess.Popen(pvhwork.qemu_cmd(
            a.image, ram, cmdline, f'file:{dlog}',
            ['-qmp', f'unix:{dq},server=on,wait=off', '-incoming', 'defer']),
            stdin=subprocess.DEVNULL, stdout=err, stderr=err)
    qs = qd = None
    try:
        wait_for(lambda: read(slog).strip(), 120, 'QEMU: first line', [src],
                 slog)
        boot_ms = (time.monotonic() - t0) * 1000
        wait_for(lambda: 'filled' in read(slog) and
                 len(pvh_beats(read(slog))) >= STEADY_HBS, 300,
                 'QEMU: guest steady', [src], slog)
        qs, qd = Qmp(sq), Qmp(dq)
        for q in (qs, qd):
            q.cmd('migrate-set-capabilities', capabilities=[
                {'capability': 'multifd', 'state': mfd > 0}])
            if mfd:
                q.cmd('migrate-set-parameters', **{'multifd-channels': mfd})
        qd.cmd('migrate-incoming', uri=f'tcp:127.0.0.1:{port}')
        qs.cmd('migrate-set-parameters', **{'max-bandwidth': MAX_BANDWIDTH,
                                            'downtime-limit': dt})
        mark = len(read(slog))
        qs.cmd('migrate', uri=f'tcp:127.0.0.1:{port}')
        while True:
            r = qs.cmd('query-migrate')
            st = r.get('status')
            if st in ('failed', 'cancelled'):
                raise RuntimeError(f'QEMU migration {st}: {r}')
            if st == 'completed' and r.get('total-time'):
                break
            time.sleep(0.02)
        ram_st = r.get('ram', {})
        res = {'total_ms': float(r['total-time']),
               'downtime_ms': float(r.get('downtime', 0)),
               'bytes': int(ram_st.get('transferred', 0)),
               'rounds': int(ram_st.get('dirty-sync-count', 0))}
        res.update(after_move(pvh_beats, slog, mark, dlog, [dst],
                              sweep_pages=ram_pages(ram)))
        res['boot_ms'] = boot_ms
        return res
    finally:
        for q in (qs, qd):
            if q:
                q.close()
        stop(src)
        stop(dst)


def after_move(beats, slog, mark, dlog, procs, sweep_pages=0):
    """The guest at the destination: enough heartbeats (for the PVH guest,
    until its verifier swept every page once more, at most 30 s), the
    longest pause over the migration window, its error count."""
    need = AFTER_HBS
    if sweep_pages:
        need = max(need, int(sweep_pages / (VERIFY_MIB * 256) * 1000 / HB_MS)
                   + 3)
        need = min(need, 30000 // HB_MS)
    wait_for(lambda: len(beats(read(dlog))) >= need, 60 + need * HB_MS / 1000,
             'destination heartbeats', procs, dlog)
    before = beats(read(slog)[mark:])
    after = beats(read(dlog))
    window = before + after[:AFTER_HBS]
    swept = after[-1].get('verified', 0) - after[0].get('verified', 0)
    return {'pause_ms': max(b['gap_us'] for b in window) / 1000,
            'resume_gap_ms': after[0]['gap_us'] / 1000,
            'errors': after[-1]['errors'],
            'swept_pages': swept,
            'hb_rate': (statistics.median(b['rate'] for b in after[1:])
                        if 'rate' in after[0] and len(after) > 1 else None)}


def memvisor_migration(a, tmp, ram, rate, dt, kind):
    port = free_port()
    slog, dlog, derr = f'{tmp}/msrc.log', f'{tmp}/mdst.log', f'{tmp}/mdst.err'
    sctl, dctl = f'{tmp}/msrc.ctl', f'{tmp}/mdst.ctl'
    for f in (slog, dlog, derr, sctl, dctl):
        if os.path.exists(f):
            os.unlink(f)
    if kind == 'pvh':
        image = a.image
        cmdline = pvh_cmdline(a, rate)
        beats, filled = pvh_beats, 'filled'
    else:
        image = a.pvkernel
        cmdline = (f'dirty pages={ram_pages(ram)} passes=0 rate={rate} '
                   f'hb={HB_MS} tsc_khz={a.tsc_khz}')
        beats, filled = pv_beats, 'dirty: filled'
    with open(dlog, 'w') as out, open(derr, 'w') as err:
        dst = subprocess.Popen([a.memvisor, 'receive', '--listen',
                                f'tcp:127.0.0.1:{port}', '--control', dctl],
                               stdin=subprocess.DEVNULL, stdout=out,
                               stderr=err)
    src = None
    try:
        wait_for(lambda: 'waiting for a migration' in read(derr), 60,
                 'memvisor receive', [dst], derr)
        t0 = time.monotonic()
        with open(slog, 'w') as out:
            src = subprocess.Popen([a.memvisor, 'run', image, '--mem',
                                    str(ram), '--vcpus', '1', '--cmdline',
                                    cmdline, '--control', sctl],
                                   stdin=subprocess.DEVNULL, stdout=out,
                                   stderr=subprocess.STDOUT)
        wait_for(lambda: read(slog).strip(), 120, 'memvisor: first line',
                 [src], slog)
        boot_ms = (time.monotonic() - t0) * 1000
        wait_for(lambda: filled in read(slog) and
                 len(beats(read(slog))) >= STEADY_HBS, 300,
                 'memvisor: guest steady', [src], slog)
        mark = len(read(slog))
        r = subprocess.run([a.memvisor, 'migrate', '--control', sctl,
                            f'tcp:127.0.0.1:{port}', '--downtime', str(dt)],
                           capture_output=True, text=True, timeout=600)
        line = next((x for x in r.stdout.splitlines()
                     if x.startswith('{"ok"')), None)
        if r.returncode != 0 or not line:
            raise RuntimeError(f'memvisor migrate ({r.returncode}): '
                               f'{r.stderr.strip()[-400:]}')
        j = json.loads(line)
        s = j['summary']
        res = {'total_ms': float(s['total_ms']),
               'downtime_ms': float(s['downtime_ms']),
               'running_ms': float(j.get('downtime_to_running_ms', 0)),
               'bytes': int(s['bytes']), 'rounds': int(s['rounds'])}
        res.update(after_move(beats, slog, mark, dlog, [dst],
                              sweep_pages=ram_pages(ram)
                              if kind == 'pvh' else 0))
        res['boot_ms'] = boot_ms
        return res
    finally:
        stop(src)
        stop(dst)


def first_line_ms(cmd, watch, stdout_file=False, timeout=120):
    """Starts cmd; the time until a first whole line appears in the file
    watch (its stdout when stdout_file, else e.g. QEMU's -serial file:),
    or None; the process is then killed."""
    if os.path.exists(watch):
        os.unlink(watch)
    t0 = time.monotonic()
    with open(watch if stdout_file else os.devnull, 'w') as out:
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out,
                             stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: '\n' in read(watch), timeout, 'first line', [p],
                 watch)
        return (time.monotonic() - t0) * 1000
    except RuntimeError as e:
        log(f'boot {cmd[0]}: {e}')
        return None
    finally:
        stop(p)


def boots(a, tmp, ram, reps, kind):
    """Boot to the first serial/console line, QEMU and memvisor in turn."""
    cmdline = f'mem=8 hb={HB_MS} tsc_khz={a.tsc_khz}'
    out = []
    for rep in range(reps):
        qlog = f'{tmp}/qboot.log'
        q = first_line_ms(pvhwork.qemu_cmd(a.image, ram, cmdline,
                                           f'file:{qlog}'), qlog)
        if kind == 'pvh':
            cmd = [a.memvisor, 'run', a.image, '--mem', str(ram), '--cmdline',
                   cmdline]
        else:
            cmd = [a.memvisor, 'run', a.pvkernel, '--mem', str(ram),
                   '--vcpus', '1', '--cmdline', 'dirty pages=8 passes=0']
        m = first_line_ms(cmd, f'{tmp}/mboot.log', stdout_file=True)
        out.append({'ram': ram, 'rep': rep, 'qemu_ms': q, 'memvisor_ms': m,
                    'memvisor_guest': kind})
    return out


def memvisor_boots_pvh(a, tmp):
    """Whether `memvisor run` boots the PVH workload image here."""
    try:
        r = subprocess.run([a.memvisor, 'run', a.image, '--mem', '64',
                            '--cmdline', f'mem=8 secs=1 hb=200 '
                                         f'tsc_khz={a.tsc_khz}'],
                           capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        return False
    d = pvhwork.parse(r.stdout)['done']
    return d is not None and d['errors'] == 0


def memvisor_migrates_pvh(a, tmp):
    """Whether memvisor live-migrates the PVH workload guest here: one
    small migration; (True, '') or (False, why)."""
    try:
        memvisor_migration(a, tmp, 64, 0, 300, 'pvh')
        return True, ''
    except (RuntimeError, OSError, subprocess.SubprocessError) as e:
        return False, str(e)


# ---- the matrix -------------------------------------------------------------

def attempt(what, fn, *args, **fields):
    """One migration: its figures, or why it failed, with fields."""
    log(what)
    try:
        r = fn(*args)
    except (RuntimeError, OSError, subprocess.SubprocessError) as e:
        log(f'{what}: FAILED: {e}')
        r = {'failed': str(e)}
    return {**fields, **r}


def median_of(runs, key):
    vals = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(vals) if vals else None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--memvisor', required=True)
    ap.add_argument('--pvkernel', required=True)
    ap.add_argument('--image', required=True, help='guest/pvh/pvh-workload')
    ap.add_argument('--quick', action='store_true',
                    help='512 MiB only, one rep')
    ap.add_argument('--reps', type=int)
    ap.add_argument('--ram', type=int, action='append',
                    help='MiB (repeatable; default 512 and 2048)')
    ap.add_argument('--rates', default='0,50,500',
                    help='MiB/s, 0 = idle (default 0,50,500)')
    ap.add_argument('--json', default='compare.json')
    ap.add_argument('--memvisor-guest', choices=['auto', 'pv', 'pvh'],
                    default='auto')
    a = ap.parse_args()
    if not shutil.which(pvhwork.QEMU):
        log(f'{pvhwork.QEMU} not found (apt-get install qemu-system-x86)')
        return 2
    rams = a.ram or ([512] if a.quick else [512, 2048])
    reps = a.reps or (1 if a.quick else 3)
    rates = [int(x) for x in a.rates.split(',')]
    tmp = tempfile.mkdtemp(prefix='memvisor-compare.')

    # The guest's own TSC calibration under QEMU: the PV guest gets it.
    for _ in range(3):
        probe = subprocess.run(pvhwork.qemu_cmd(a.image, 128, 'mem=8 secs=1',
                                                'stdio', ['-no-reboot']),
                               stdin=subprocess.DEVNULL, capture_output=True,
                               text=True, timeout=120)
        a.tsc_khz = pvhwork.parse(probe.stdout)['tsc_khz']
        if a.tsc_khz:
            break
    if not a.tsc_khz:
        log(f'the workload guest did not calibrate under QEMU:\n'
            f'{probe.stdout}{probe.stderr}')
        return 1
    boot_kind = 'pvh' if memvisor_boots_pvh(a, tmp) else 'pv'
    kind, why = a.memvisor_guest, ''
    if kind == 'auto':
        kind = 'pv'
        if boot_kind == 'pvh':
            ok, why = memvisor_migrates_pvh(a, tmp)
            kind = 'pvh' if ok else 'pv'
        else:
            why = '`memvisor run` does not boot the PVH image'
    guest_note = ('the same PVH workload image on both sides' if kind == 'pvh'
                  else 'memvisor migrates its PV guest (guest/pvkernel, the '
                       'paced dirtier over the same share of memory), QEMU '
                       'the PVH workload guest: memvisor does not migrate the '
                       f'PVH image yet ({why.strip()[:200]})')
    log(f'TSC {a.tsc_khz} kHz; boot: memvisor runs the '
        f'{"PVH image" if boot_kind == "pvh" else "PV guest"}; migration: '
        f'{guest_note}; RAM {rams} MiB, rates {rates} MiB/s, {reps} rep(s)')

    boot_runs = []
    for ram in rams:
        boot_runs += boots(a, tmp, ram, max(reps, 3), boot_kind)
    keep(a, [], boot_runs)

    runs = []
    for ram in rams:
        for rate in rates:
            for rep in range(reps):
                for dt in (300, 20):
                    for mfd in (0, 2):
                        runs.append(attempt(
                            f'QEMU {ram} MiB rate {rate} dt {dt} mfd {mfd} '
                            f'(rep {rep + 1})', qemu_migration,
                            a, tmp, ram, rate, dt, mfd,
                            engine=f'qemu-mfd{mfd}', guest='pvh', ram=ram,
                            rate=rate, dt=dt, rep=rep))
                    runs.append(attempt(
                        f'memvisor ({kind}) {ram} MiB rate {rate} dt {dt} '
                        f'(rep {rep + 1})', memvisor_migration,
                        a, tmp, ram, rate, dt, kind, engine='memvisor',
                        guest=kind, ram=ram, rate=rate, dt=dt, rep=rep))
                    keep(a, runs, boot_runs)

    report(runs, boot_runs, rams, rates, reps, kind, boot_kind, guest_note, a)
    shutil.rmtree(tmp, ignore_errors=True)
    bad = [r for r in runs if r.get('failed') or r.get('errors')]
    return 1 if bad else 0


def keep(a, runs, boot_runs):
    """Every run so far into the JSON file ("partial": true), so that an
    interrupted matrix keeps what it measured; report() overwrites it."""
    tmpname = a.json + '.tmp'
    with open(tmpname, 'w') as f:
        json.dump({'partial': True, 'runs': runs, 'boots': boot_runs}, f,
                  indent=1)
    os.replace(tmpname, a.json)


def fmt(v, nd=0):
    if v is None:
        return '–'
    return f'{v:.{nd}f}'


def ratio(a, b):
    if a is None or b is None or b == 0:
        return '–'
    return f'{a / b:.2f}'


def report(runs, boot_runs, rams, rates, reps, kind, boot_kind, guest_note,
           a):
    keys = ('total_ms', 'downtime_ms', 'pause_ms', 'bytes', 'rounds',
            'errors', 'boot_ms', 'running_ms', 'resume_gap_ms')
    cells = {}
    for r in runs:
        k = (r['ram'], r['rate'], r['dt'], r['engine'])
        cells.setdefault(k, []).append(r)
    med = {}
    for k, rs in cells.items():
        ok = [r for r in rs if not r.get('failed')]
        m = {key: median_of(ok, key) for key in keys}
        m['failed'] = len(rs) - len(ok)
        m['errors'] = max((r.get('errors') or 0) for r in ok) if ok else None
        med[k] = m

    engines = ['qemu-mfd0', 'qemu-mfd2', 'memvisor']
    name = {'qemu-mfd0': 'QEMU, multifd off', 'qemu-mfd2': 'QEMU, multifd 2',
            'memvisor': f'memvisor ({"PVH" if kind == "pvh" else "PV guest"})'}
    print(f'\n## Live migration, memvisor beside QEMU ({time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())})\n')
    print(f'{guest_note}. Median of {reps}; each migration from a freshly '
          'booted guest to a second process on 127.0.0.1; 3/4 of RAM filled '
          'by the workload. Ratios: memvisor / QEMU multifd off, / multifd 2 '
          '(below 1: memvisor is faster/smaller). "pause" is the longest gap '
          "the guest's own loop saw during the migration; errors: the "
          "guest's self-check at the destination.\n")
    print('| RAM | workload | limit | engine | total ms | downtime ms | '
          'pause ms | MiB sent | rounds | errors | total ratio | '
          'downtime ratio | pause ratio | bytes ratio |')
    print('|---|---|---|---|---|---|---|---|---|---|---|---|---|---|')
    for ram in rams:
        for rate in rates:
            for dt in (300, 20):
                q0 = med.get((ram, rate, dt, 'qemu-mfd0'), {})
                q2 = med.get((ram, rate, dt, 'qemu-mfd2'), {})
                for e in engines:
                    m = med.get((ram, rate, dt, e))
                    if not m:
                        continue
                    wl = 'idle' if rate == 0 else f'{rate} MiB/s'
                    rat = ['', '', '', '']
                    if e == 'memvisor':
                        rat = [f'{ratio(m[k], q0.get(k))} / '
                               f'{ratio(m[k], q2.get(k))}'
                               for k in ('total_ms', 'downtime_ms',
                                         'pause_ms', 'bytes')]
                    mib = m['bytes'] / 2**20 if m['bytes'] is not None else None
                    fail = f' ({m["failed"]} failed)' if m['failed'] else ''
                    print(f'| {ram} MiB | {wl} | {dt} ms | {name[e]}{fail} | '
                          f'{fmt(m["total_ms"])} | {fmt(m["downtime_ms"], 1)} | '
                          f'{fmt(m["pause_ms"], 1)} | {fmt(mib)} | '
                          f'{fmt(m["rounds"])} | {fmt(m["errors"])} | '
                          + ' | '.join(rat) + ' |')
    print('\n## Boot to the first serial line\n')
    print(f'Median of {max(reps, 3)} boots each, process start to the first '
          'whole line on the guest\'s serial port (QEMU: the pc machine, '
          'SeaBIOS and its PVH option ROM; memvisor: '
          + ('the same PVH image as an HVM domain' if boot_kind == 'pvh'
             else 'its PV guest\'s console') + ').\n')
    print('| RAM | QEMU ms | memvisor ms | memvisor / QEMU |')
    print('|---|---|---|---|')
    for ram in rams:
        rs = [r for r in boot_runs if r['ram'] == ram]
        q = median_of(rs, 'qemu_ms')
        m = median_of(rs, 'memvisor_ms')
        print(f'| {ram} MiB | {fmt(q)} | {fmt(m)} | {ratio(m, q)} |')
    with open(a.json, 'w') as f:
        json.dump({'guest_note': guest_note, 'memvisor_guest': kind,
                   'memvisor_boot_guest': boot_kind,
                   'tsc_khz': a.tsc_khz, 'reps': reps, 'runs': runs,
                   'boots': boot_runs,
                   'medians': [{'ram': k[0], 'rate': k[1], 'dt': k[2],
                                'engine': k[3], **v}
                               for k, v in sorted(med.items())]},
                  f, indent=1)
    print(f'\n(JSON: {a.json})')


if __name__ == '__main__':
    sys.exit(main())
