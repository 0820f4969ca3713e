"""kvmtap.py: for the TAP scripts of the KVM tests (as tests/lib/testlib.h
does for the C programs): whether KVM is usable, and its flavour for the
'# kvm: ...' comment every KVM test prints (src/kvm's kvm_flavour_read():
kvm_pvm first, then kvm_amd's npt, then kvm_intel's ept); and one request
on a memvisor control socket."""
import fcntl
import json
import os
import socket

KVM_GET_API_VERSION = 0xAE00


def unusable():
    """None if KVM is usable (and MEMVISOR_TEST_NO_KVM unset), else why."""
    off = os.environ.get('MEMVISOR_TEST_NO_KVM', '')
    if off not in ('', '0'):
        return f'MEMVISOR_TEST_NO_KVM={off}'
    try:
        fd = os.open('/dev/kvm', os.O_RDWR | os.O_CLOEXEC)
    except OSError as e:
        return f'/dev/kvm is not usable ({e.strerror})'
    try:
        if fcntl.ioctl(fd, KVM_GET_API_VERSION) != 12:
            return '/dev/kvm does not speak KVM API version 12'
    except OSError as e:
        return f'/dev/kvm is not usable ({e.strerror})'
    finally:
        os.close(fd)
    return None


def flavour(sysroot='/'):
    """'KVM-PVM, shadow MMU', 'SVM, nested paging (NPT)', ... or None."""
    mod = os.path.join(sysroot, 'sys/module')
    if os.path.isdir(os.path.join(mod, 'kvm_pvm')):
        return 'KVM-PVM, shadow MMU'
    for name, kind, param, what in (('kvm_amd', 'SVM', 'npt', 'NPT'),
                                    ('kvm_intel', 'VMX', 'ept', 'EPT')):
        if not os.path.isdir(os.path.join(mod, name)):
            continue
        try:
            with open(os.path.join(mod, name, 'parameters', param)) as f:
                on = f.read().strip() in ('Y', 'y', '1')
        except OSError:
            return None
        return f'{kind}, nested paging ({what})' if on else f'{kind}, shadow MMU'
    return None


def note_flavour():
    print(f'# kvm: {flavour() or "unknown flavour (sysfs names no KVM module)"}',
          flush=True)


def in_test_vm():
    """Whether this runs inside the emulated test VM (tests/vm: its kernel
    command line names the job)."""
    try:
        with open('/proc/cmdline') as f:
            return 'memvisor.job=' in f.read()
    except OSError:
        return False


def tsc_khz():
    """The host TSC rate KVM gives a new vCPU (KVM_GET_TSC_KHZ), or None."""
    try:
        fd = os.open('/dev/kvm', os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return None
    vm = vcpu = -1
    try:
        vm = fcntl.ioctl(fd, 0xAE01, 0)        # KVM_CREATE_VM
        vcpu = fcntl.ioctl(vm, 0xAE41, 0)      # KVM_CREATE_VCPU
        return fcntl.ioctl(vcpu, 0xAEA3, 0)    # KVM_GET_TSC_KHZ
    except OSError:
        return None
    finally:
        for f in (vcpu, vm, fd):
            if f >= 0:
                os.close(f)


def start():
    """The start of a KVM TAP script: where KVM is not usable prints the
    skip plan and returns False; else prints the flavour comment."""
    why = unusable()
    if why:
        print(f'1..0 # SKIP KVM tests did not run: {why}', flush=True)
        return False
    note_flavour()
    return True


def report(checks):
    """Prints [(ok, what)] as TAP; the exit status (1 if any failed)."""
    print(f'1..{len(checks)}')
    for i, (ok, what) in enumerate(checks, 1):
        print(f'{"ok" if ok else "not ok"} {i} - {what}')
    return 0 if checks and all(ok for ok, _ in checks) else 1


def control(path, req, timeout=60):
    """One request (a dict) on the memvisor control socket at path
    (docs/control.md): its answer as a dict.  OSError or ValueError if the
    socket or the answer fails."""
    c = socket.socket(socket.AF_UNIX)
    try:
        c.settimeout(timeout)
        c.connect(path)
        f = c.makefile('rw')
        f.write(json.dumps(req) + '\n')
        f.flush()
        return json.loads(f.readline())
    finally:
        c.close()
