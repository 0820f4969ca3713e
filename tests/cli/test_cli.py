#!/usr/bin/env python3
"""test_cli.py MEMVISOR PVKERNEL: the memvisor command end to end (TAP).

- usage and load errors exit 2 with a message;
- `run --paused --control`: the control socket answers stats, pfinfo,
  audit, console, pause/resume and refuses malformed requests; the guest
  console reaches stdout and the exit status is the guest's;
- `shutdown` over the socket stops a running guest;
- `demo` runs every workload and says so.
"""
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

memvisor, pvkernel = sys.argv[1], sys.argv[2]
results = []


def ok(cond, what):
    results.append((bool(cond), what))
    print(('ok' if cond else 'not ok') + f' {len(results)} - {what}', flush=True)
    return cond


def note(s):
    for line in str(s).splitlines():
        print('# ' + line, flush=True)


def connect(path, proc):
    for _ in range(3000):  # 30 s: a loaded machine starts slowly
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
    def __init__(self, sock):
        self.sock = sock
        self.f = sock.makefile('rwb', buffering=0)

    def raw(self, line):
        self.f.write(line.encode() + b'\n')
        return json.loads(self.f.readline().decode())

    def __call__(self, **req):
        return self.raw(json.dumps(req))


def main():
    print('1..26', flush=True)
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

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, 'ctl')
        p = subprocess.Popen([memvisor, 'run', pvkernel, '--mem', '64',
                              '--vcpus', '2', '--cmdline', 'dirty ptchurn',
                              '--control', path, '--paused'],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
        s = connect(path, p)
        if not ok(s is not None, 'control socket accepts a client'):
            p.kill()
            return
        c = Control(s)
        st = c(cmd='stats')
        ok(st['ok'] and st['exits'] == 0 and st['vcpus'] == 2,
           'stats while started paused: no exit yet, 2 vCPUs')
        pf = c(cmd='pfinfo')
        note(f'pfinfo: {pf["frames"]} frames, types {pf["types"]}, '
             f'pinned {pf["pinned"]}')
        ok(pf['ok'] and pf['pinned'] >= 1 and pf['types'].get('l4', 0) >= 1
           and pf['types'].get('l1', 0) >= 1,
           'pfinfo: the bootstrap tables are typed, the L4 pinned')
        lst = c(cmd='pfinfo', mfn=0, count=4)
        ok(lst['ok'] and len(lst['list']) == 4, 'pfinfo list of 4 frames')
        au = c(cmd='audit')
        ok(au['ok'] and au['clean'] and au['tables'] > 0,
           'audit before the first instruction: clean')
        ok(c.raw('garbage')['ok'] is False, 'a non-JSON line is refused')
        ok(c(cmd='fly')['ok'] is False, 'an unknown command is refused')
        ok(c.raw('{"cmd":"' + 'x' * 9000 + '"}')['ok'] is False,
           'an overlong line is refused')
        # memvisor exits as soon as the guest stops, so every request below
        # is made while the socket holds the guest paused, or right after
        # it was let go from its first instruction (never after a sleep
        # that the guest could outlast on a loaded machine).
        ok(c(cmd='resume')['ok'], 'resume')
        ok(c(cmd='resume')['ok'] is False, 'resume when not paused is refused')
        time.sleep(0.1)
        audits = 0
        clean = True
        for i in range(5):
            if i:
                c(cmd='resume')
                time.sleep(0.02)
            if not c(cmd='pause')['ok']:
                break
            a = c(cmd='audit')
            clean = clean and a['clean']
            audits += 1
        note(f'{audits} audits while paused, all clean: {clean}')
        ok(clean, 'audits while paused mid-run are clean')
        dv = c(cmd='dirty')
        note(f'dirty harvest: {dv}')
        ok(dv['ok'] and dv['pages'] > 0, 'dirty harvest over the socket')
        ok(c(cmd='resume')['ok'], 'resume after the audits')
        out, err = p.communicate(timeout=120)
        st_code = p.returncode
        note(err.strip())
        ok(st_code == 0, f'exit status 0 (got {st_code})')
        ok('dirty: pass' in out and 'ptchurn: pass' in out
           and 'guest: pass' in out, 'guest console on stdout')
        s.close()

        # shutdown over the socket
        p = subprocess.Popen([memvisor, 'run', pvkernel, '--mem', '64',
                              '--vcpus', '2', '--cmdline', 'hostile dirty',
                              '--control', path, '--paused'],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
        s = connect(path, p)
        ok(s is not None, 'second run: control socket')
        c = Control(s)
        ok(c(cmd='resume')['ok'], 'resume the second guest')
        time.sleep(0.05)
        c(cmd='pause')  # held until the shutdown: the guest cannot finish
        con = c(cmd='console')
        ok(con['ok'] and 'guest:' in con['tail'], 'console tail over the socket')
        ok(c(cmd='shutdown')['ok'], 'shutdown accepted')
        out, err = p.communicate(timeout=60)
        ok(p.returncode == 0, f'after shutdown: exit status 0 '
           f'(got {p.returncode})')
        s.close()

    t0 = time.time()
    r = subprocess.run([memvisor, 'demo'], capture_output=True, text=True,
                       timeout=300)
    note(f'demo took {time.time() - t0:.1f} s')
    passes = [w for w in ('dirty', 'ptchurn', 'balloon', 'hostile', 'abi')
              if f'{w}: pass' in r.stdout]
    ok(r.returncode == 0 and len(passes) == 5,
       f'demo: every workload passes ({passes})')
    ok(r.stderr.count('final audit: clean') == 5, 'demo: five clean audits')


main()
sys.exit(0 if all(r for r, _ in results) else 1)
