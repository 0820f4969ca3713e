/*
 * vcpu.c - an HVM vCPU's exits (hvm.h): port I/O to the UART, the exit
 * port, reset, the device models or nowhere; MMIO to tracked RAM, the
 * device models or nowhere.  Nothing the guest does here ends the
 * process: an access nobody claims is answered (all ones) and counted.
 * Also the diagnosis of a guest that stopped reacting (hv.h): the vCPUs'
 * snapshot, read while the domain is held quiescent (the guest's pvclock
 * page taken as untrusted guest memory), and the NMI button.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hv/hvm/hvm.h"
#include "memvisor/dm.h"
#include "memvisor/stream.h"

#define KBD_PORT 0x64
#define KBD_RESET 0xfe
#define RST_CNT_PORT 0xcf9
#define HVM_REBOOT 1 /* the run's status, as a PV guest's reboot */

/* What the platform serves itself (memvisor here, or KVM's in-kernel
 * irqchip, PIT and TSS): an access there never reaches a device model,
 * so none may claim it (ioreq.h I4). */
static const struct dm_range platform_ranges[] = {
    {DM_RANGE_PIO, 0, 0x20, 2},                       /* PIC, master */
    {DM_RANGE_PIO, 0, 0x40, 4},                       /* PIT */
    {DM_RANGE_PIO, 0, 0x61, 1},                       /* PIT gate, speaker */
    {DM_RANGE_PIO, 0, KBD_PORT, 1},                   /* status, reset */
    {DM_RANGE_PIO, 0, 0xa0, 2},                       /* PIC, slave */
    {DM_RANGE_PIO, 0, HVM_EXIT_PORT, 1},              /* exit port */
    {DM_RANGE_PIO, 0, UART_COM1_BASE, 8},             /* COM1 */
    {DM_RANGE_PIO, 0, 0x4d0, 2},                      /* ELCR */
    {DM_RANGE_PIO, 0, RST_CNT_PORT, 1},               /* reset control */
    {DM_RANGE_MMIO, 0, 0xfec00000, 0x1000},           /* IOAPIC */
    {DM_RANGE_MMIO, 0, 0xfee00000, 0x1000},           /* LAPIC */
    {DM_RANGE_MMIO, 0, HVM_TSS_GPA - 0x1000, 0x4000}, /* KVM's TSS, EPT
                                                         identity map */
};

unsigned hvm_platform_ranges(const struct dm_range **out)
{
    *out = platform_ranges;
    return sizeof(platform_ranges) / sizeof(platform_ranges[0]);
}

static struct hvm_vcpu *hvm_vcpu_of(struct vcpu *v)
{
    return (struct hvm_vcpu *)(void *)((char *)v -
                                       offsetof(struct hvm_vcpu, vcpu));
}

void hvm_uart_irq(void *opaque, bool level)
{
    struct domain *d = opaque;

    /* A refused line change leaves the guest without that interrupt; the
     * in-kernel irqchip exists for the domain's whole life. */
    (void)!kvm_vm_irq_line(&d->vm, UART_COM1_IRQ, level);
}

static int shutdown(struct domain *d, int code)
{
    d->shutdown_reason = code;
    vcpu_group_stop(&d->group, code);
    return VCPU_SHUTDOWN;
}

static void note_unclaimed(struct hvm_domain *h, const char *what,
                           uint64_t addr, unsigned size, bool write)
{
    snprintf(h->last_unclaimed, sizeof(h->last_unclaimed),
             "%s %s of %u bytes at %#llx", what, write ? "write" : "read",
             size, (unsigned long long)addr);
}

/* One port access of size bytes (1, 2 or 4) at data. */
static int pio(struct hvm_vcpu *hc, uint16_t port, unsigned size, bool out,
               uint8_t *data)
{
    struct domain *d = hc->d;
    struct hvm_domain *h = d->hvm;
    uint64_t v = 0;
    int r;

    if (port >= UART_COM1_BASE && port + size <= UART_COM1_BASE + 8) {
        atomic_fetch_add_explicit(&h->uart_accesses, 1, memory_order_relaxed);
        for (unsigned i = 0; i < size; i++)
            if (uart_io(&h->uart, port - UART_COM1_BASE + i, out, &data[i]) < 0)
                return -EIO;
        return VCPU_CONTINUE;
    }
    if (out && port == HVM_EXIT_PORT)
        return shutdown(d, data[0]);
    if (!out && port == KBD_PORT && size == 1) {
        data[0] = 0; /* the keyboard controller's status: ready, empty */
        return VCPU_CONTINUE;
    }
    if (out && ((port == KBD_PORT && data[0] == KBD_RESET) ||
                (port == RST_CNT_PORT && (data[0] & 0x04))))
        return shutdown(d, HVM_REBOOT);
    if (out)
        memcpy(&v, data, size);
    r = d->created_io ? ioreq_access(&d->io, hc->id, DM_RANGE_PIO, port, size,
                                     out, &v)
                      : -ENOENT;
    if (r == -ENOENT || r == -EINVAL) {
        atomic_fetch_add_explicit(&h->pio_unclaimed, 1, memory_order_relaxed);
        note_unclaimed(h, "port", port, size, out);
        v = ~0ULL;
    } else {
        atomic_fetch_add_explicit(&h->pio_forwarded, 1, memory_order_relaxed);
    }
    if (!out)
        memcpy(data, &v, size); /* all ones if unclaimed or failed */
    return VCPU_CONTINUE;
}

static int mmio(struct hvm_vcpu *hc, uint64_t gpa, uint8_t *data, uint32_t len,
                bool write)
{
    struct domain *d = hc->d;
    struct hvm_domain *h = d->hvm;
    uint64_t v = 0;
    int r;

    /* tracked RAM (read-only slots): the subscribers, then the store */
    r = memslot_handle_mmio(&d->ms, _gpa(gpa), data, len, write);
    if (r != -ENOENT)
        return r < 0 ? r : VCPU_CONTINUE;
    if (len == 1 || len == 2 || len == 4 || len == 8) {
        if (write)
            memcpy(&v, data, len);
        r = d->created_io ? ioreq_access(&d->io, hc->id, DM_RANGE_MMIO, gpa,
                                         len, write, &v)
                          : -ENOENT;
    } else {
        r = -ENOENT;
    }
    if (r == -ENOENT || r == -EINVAL) {
        atomic_fetch_add_explicit(&h->mmio_unclaimed, 1, memory_order_relaxed);
        note_unclaimed(h, "MMIO", gpa, len, write);
        v = ~0ULL;
    } else {
        atomic_fetch_add_explicit(&h->mmio_forwarded, 1, memory_order_relaxed);
    }
    if (!write)
        memcpy(data, &v, MIN(len, (uint32_t)sizeof(v)));
    return VCPU_CONTINUE;
}

int hvm_vcpu_exit(struct vcpu *v, void *opaque)
{
    struct hvm_vcpu *hc = hvm_vcpu_of(v);
    struct kvm_exit ex;
    int r;

    (void)opaque;
    kvm_vcpu_exit(&v->kvm, &ex);
    switch (ex.kind) {
    case KVM_XK_IO:
        if (ex.io.size != 1 && ex.io.size != 2 && ex.io.size != 4) {
            vcpu_group_crash(v->group, v, "vcpu %u: port access of %u bytes\n",
                             v->id, ex.io.size);
            return -EIO;
        }
        for (uint32_t i = 0; i < ex.io.count; i++) {
            r = pio(hc, ex.io.port, ex.io.size, ex.io.out,
                    ex.io.data + (size_t)i * ex.io.size);
            if (r != VCPU_CONTINUE)
                return r;
        }
        return VCPU_CONTINUE;
    case KVM_XK_MMIO:
        return mmio(hc, ex.mmio.addr, ex.mmio.data, MIN(ex.mmio.len, 8u),
                    ex.mmio.is_write);
    case KVM_XK_HLT:
        /* the in-kernel LAPIC keeps halts inside KVM; should one come out,
         * running again waits for the next interrupt there */
        return VCPU_CONTINUE;
    case KVM_XK_RING_FULL:
        r = dirty_sync(&hc->d->dirty);
        return r < 0 ? r : VCPU_CONTINUE;
    default:
        vcpu_group_crash(v->group, v, "vcpu %u: unexpected exit %s (%u)\n",
                         v->id, kvm_exit_reason_name(ex.raw), ex.raw);
        return -EIO;
    }
}

void hvm_vcpu_diag(struct vcpu *v, char *buf, size_t len, void *opaque)
{
    struct domain *d = opaque;
    struct kvm_vcpu_regs r;
    uint8_t code[16];
    size_t at = 0;

    (void)v;
    if (!len)
        return;
    buf[0] = 0;
    if (kvm_vcpu_get_regs(&v->kvm, &r) < 0)
        return;
    /* the bytes at rip when paging is off (rip is then a gpa) */
    if (dirty_copy_from_guest(&d->dirty, code, _gpa(r.rip), sizeof(code)) == 0) {
        at += (size_t)snprintf(buf + at, len - at, " bytes at rip:");
        for (unsigned i = 0; i < sizeof(code) && at < len; i++)
            at += (size_t)snprintf(buf + at, len - at, " %02x", code[i]);
        if (at < len)
            snprintf(buf + at, len - at, "\n");
    }
}

int hvm_vcpu_flush(struct vcpu *v, void *opaque)
{
    (void)v;
    hv_mem_pause_wait(opaque);
    return 0;
}

/* ---------------------------------------------------------- diagnosis */

static uint32_t lapic_reg(const struct stream_hvm_vcpu *v, unsigned off)
{
    uint32_t r;

    memcpy(&r, v->lapic + off, sizeof(r));
    return r;
}

/* The highest vector set in the LAPIC's 256-bit register at off (IRR,
 * ISR: eight 32-bit words 16 bytes apart); -1 if none. */
static int lapic_top(const struct stream_hvm_vcpu *v, unsigned off)
{
    for (int w = 7; w >= 0; w--) {
        uint32_t bits = lapic_reg(v, off + (unsigned)w * 16);

        if (bits)
            return w * 32 + 31 - __builtin_clz(bits);
    }
    return -1;
}

/* MSR index as the snapshot v carries it (*val 0 and false if not). */
static bool snapshot_msr(const struct stream_hvm_vcpu *v, uint32_t index,
                         uint64_t *val)
{
    *val = 0;
    for (uint32_t i = 0; i < v->nr_msrs; i++)
        if (v->msrs[i].index == index) {
            *val = v->msrs[i].value;
            return true;
        }
    return false;
}

/* The guest's kvm-clock at tsc: its pvclock page's system_time plus the
 * TSC ticks since its stamp, scaled as the page says.  The page is the
 * guest's memory (it may have written anything there): a shift KVM never
 * writes is -EINVAL. */
static int guest_clock(struct domain *d, uint64_t msr, uint64_t tsc,
                       uint32_t *version, int64_t *ns)
{
    struct {
        uint32_t version, pad0;
        uint64_t tsc_timestamp, system_time;
        uint32_t mul;
        int8_t shift;
        uint8_t flags, pad[2];
    } pv;
    uint64_t delta;
    int r;

    if ((r = dirty_copy_from_guest(&d->dirty, &pv, _gpa(msr & ~1ULL),
                                   sizeof(pv))) < 0)
        return r;
    if (pv.shift <= -64 || pv.shift >= 64)
        return -EINVAL;
    *version = pv.version;
    delta = tsc - pv.tsc_timestamp;
    if (pv.shift < 0)
        delta >>= -pv.shift;
    else
        delta <<= pv.shift;
    *ns = (int64_t)(pv.system_time +
                    (uint64_t)(((unsigned __int128)delta * pv.mul) >> 32));
    return 0;
}

static int vcpus_snapshot(struct domain *d, struct hv_hvm_vcpus *out,
                          struct stream_hvm_vcpu *v)
{
    uint8_t clock[48];
    int r;

    if ((r = kvm_vm_state(&d->vm, KVM_ST_CLOCK, clock, sizeof(clock),
                          false)) < 0)
        return r;
    memcpy(&out->clock_ns, clock, sizeof(out->clock_ns));
    out->nr_vcpus = d->nr_vcpus;
    for (unsigned i = 0; i < d->nr_vcpus; i++) {
        uint64_t msr;
        __typeof__(out->vcpu[0]) *o = &out->vcpu[i];

        if ((r = hvm_vcpu_get(d, i, v)) < 0)
            return r;
        o->mp_state = v->mp_state;
        memcpy(&o->rip, v->regs + 128, sizeof(o->rip));    /* kvm_regs */
        memcpy(&o->rflags, v->regs + 136, sizeof(o->rflags));
        o->tpr = lapic_reg(v, 0x80);
        o->ppr = lapic_reg(v, 0xa0);
        o->svr = lapic_reg(v, 0xf0);
        o->lvtt = lapic_reg(v, 0x320);
        o->lint0 = lapic_reg(v, 0x350);
        o->lint1 = lapic_reg(v, 0x360);
        o->tmict = lapic_reg(v, 0x380);
        o->tmcct = lapic_reg(v, 0x390);
        o->tdcr = lapic_reg(v, 0x3e0);
        o->isr = lapic_top(v, 0x100);
        o->irr = lapic_top(v, 0x200);
        if (v->flags & STREAM_HVM_VCPU_EVENTS) { /* kvm_vcpu_events */
            o->exc_pending = v->events[0] || v->events[3];
            o->irq_injected = v->events[8];
            o->irq_nr = v->events[9];
            o->shadow = v->events[11];
            o->nmi_pending = v->events[12] || v->events[13];
            o->nmi_masked = v->events[14];
        }
        /* the MSRs as the snapshot read them */
        if (!snapshot_msr(v, HVM_MSR_TSC, &o->tsc))
            return -EOPNOTSUPP;
        (void)snapshot_msr(v, HVM_MSR_TSC_DEADLINE, &o->tsc_deadline);
        if (snapshot_msr(v, HVM_MSR_KVM_SYSTEM_TIME_NEW, &msr) && (msr & 1))
            o->kvmclock = guest_clock(d, msr, o->tsc, &o->pvclock_version,
                                      &o->guest_ns) == 0;
    }
    return 0;
}

int hv_domain_hvm_vcpus(struct domain *d, struct hv_hvm_vcpus *out)
{
    struct stream_hvm_vcpu *v;
    bool paused;
    int r;

    memset(out, 0, sizeof(*out));
    if (!d->hvm)
        return -EOPNOTSUPP;
    if (!(v = malloc(sizeof(*v))))
        return -ENOMEM;
    paused = hv_hold_quiescent(d);
    r = vcpus_snapshot(d, out, v);
    if (paused)
        hv_domain_resume(d);
    free(v);
    return r;
}

int hv_domain_hvm_nmi(struct domain *d, unsigned vcpu)
{
    bool paused;
    int r;

    if (!d->hvm)
        return -EOPNOTSUPP;
    if (vcpu >= d->nr_vcpus)
        return -EINVAL;
    paused = hv_hold_quiescent(d);
    r = kvm_vcpu_nmi(&d->hvm->vcpus[vcpu].vcpu.kvm);
    if (paused)
        hv_domain_resume(d);
    return r;
}
