/*
 * vcpu.c - an HVM vCPU's exits (hvm.h): port I/O to the UART, the exit
 * port, reset, the device models or nowhere; MMIO to tracked RAM, the
 * device models or nowhere.  Nothing the guest does here ends the
 * process: an access nobody claims is answered (all ones) and counted.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "hv/hvm/hvm.h"
#include "memvisor/dm.h"

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
