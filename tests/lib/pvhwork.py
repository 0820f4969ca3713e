"""pvhwork.py: the PVH workload guest (guest/pvh) seen from the host: the
QEMU command line that boots it (as ../shared research drove QEMU on KVM-PVM:
the pc machine, `-cpu host,-arch-capabilities`, which QEMU 7.2 needs on this
KVM), and the parser of what it prints on its serial port.  Used by
tests/pvh and bench/compare.

Lines (guest/README.md, "The PVH workload guest"):
  pvh-workload: start_info v1 at 0x..., cmdline "..."
  pvh-workload: tsc N kHz (PIT|command line)
  pvh-workload: ram N MiB, filled N MiB (N pages at 0x...) in N ms; ...
  hb N t=US pages=N dirtied=N rate=R.R verified=N gap=US errors=N
  corrupt: flipped a byte of page N behind its counter
  error: WHO: page N (gpa 0x...) WHAT at word N: counter want N have N
  pvh-workload: done secs=N dirtied=N verified=N errors=N
  pvh-workload: FAIL: ...
"""
import re

QEMU = 'qemu-system-x86_64'

HB = re.compile(r'^hb (\d+) t=(\d+) pages=(\d+) dirtied=(\d+) '
                r'rate=(\d+)\.(\d) verified=(\d+) gap=(\d+) errors=(\d+)\s*$')
DONE = re.compile(r'^pvh-workload: done secs=(\d+) dirtied=(\d+) '
                  r'verified=(\d+) errors=(\d+)\s*$')
TSC = re.compile(r'^pvh-workload: tsc (\d+) kHz')
ERROR = re.compile(r'^error: (\w+): page (\d+) ')
CORRUPT = re.compile(r'^corrupt: flipped a byte of page (\d+) ')


def read(path):
    """A log file's text so far ('' if it is not there yet)."""
    try:
        with open(path, errors='replace') as f:
            return f.read()
    except OSError:
        return ''


def qemu_cmd(image, mem_mib, cmdline, serial, extra=()):
    """QEMU's command line for the workload guest; serial is QEMU's -serial
    argument (file:PATH, stdio, ...)."""
    return [QEMU, '-enable-kvm', '-M', 'pc', '-cpu', 'host,-arch-capabilities',
            '-smp', '1', '-m', str(mem_mib), '-nodefaults', '-no-user-config',
            '-display', 'none', '-serial', serial, '-kernel', image,
            '-append', cmdline, *extra]


def heartbeat(line):
    """A heartbeat line as a dict, or None."""
    m = HB.match(line.strip())
    if not m:
        return None
    g = [int(x) for x in m.groups()]
    return {'n': g[0], 't_us': g[1], 'pages': g[2], 'dirtied': g[3],
            'rate': g[4] + g[5] / 10, 'verified': g[6], 'gap_us': g[7],
            'errors': g[8]}


def parse(text):
    """Everything the guest said: heartbeats, tsc_khz, done, errors."""
    out = {'hb': [], 'tsc_khz': None, 'done': None, 'error_lines': [],
           'corrupt_page': None, 'fail': [], 'lines': text.splitlines()}
    for line in out['lines']:
        line = line.strip()
        hb = heartbeat(line)
        if hb:
            out['hb'].append(hb)
            continue
        m = TSC.match(line)
        if m:
            out['tsc_khz'] = int(m.group(1))
        m = DONE.match(line)
        if m:
            out['done'] = {'secs': int(m.group(1)), 'dirtied': int(m.group(2)),
                           'verified': int(m.group(3)),
                           'errors': int(m.group(4))}
        m = ERROR.match(line)
        if m:
            out['error_lines'].append((m.group(1), int(m.group(2))))
        m = CORRUPT.match(line)
        if m:
            out['corrupt_page'] = int(m.group(1))
        if 'FAIL' in line:
            out['fail'].append(line)
    return out
