/*
 * dm.c - a domain's device models (src/ioreq) seen from hv: their life with
 * the domain's, the end of every hypercall (invalidate and wait: DESIGN
 * invariant 8), and the guest's port I/O, emulated from its #GP (a PV
 * guest runs with IOPL 0, so every in/out of its ring 3 faults; a port a
 * device model claims is forwarded to it, any other is the guest's #GP).
 */
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "hv/hv_internal.h"
#include "hv/pv/pvhv.h"
#include "pv/pv.h"
#include "xen/xen.h"

int hv_dm_init(struct domain *d, const struct dm_range *reserved, unsigned n)
{
    struct ioreq_config cfg = {0};
    int r;

    if (n > IOREQ_MAX_RESERVED)
        return -EINVAL;
    if (n)
        memcpy(cfg.reserved, reserved, n * sizeof(*reserved));
    cfg.nr_reserved = n;
    pthread_mutex_init(&d->iomem_lock, NULL);
    r = ioreq_domain_init(&d->io, &d->hv->frames, &d->p2m, &d->ms, &d->dirty,
                          d->nr_vcpus, &cfg);
    if (r == 0)
        d->created_io = true;
    return r;
}

void hv_dm_fini(struct domain *d)
{
    if (d->created_io)
        ioreq_domain_fini(&d->io);
    d->created_io = false;
}

void hv_dm_end_hypercall(struct pvcpu *pc, unsigned nr)
{
    struct domain *d = pc->d;

    if (!d->created_io)
        return;
    /* a reservation may have added frames: the device models hear of them */
    if (nr == __HYPERVISOR_memory_op)
        (void)ioreq_sync_map(&d->io);
    /* I1: returns once every device model acknowledged or was cut off */
    (void)ioreq_end_hypercall(&d->io);
}

void hv_dm_p2m_changed(struct domain *d)
{
    if (!d->created_io)
        return;
    /* added gfns announced; removed ones are announced with the
     * INVALIDATE that covers them (I2) */
    (void)ioreq_sync_map(&d->io);
    (void)ioreq_end_hypercall(&d->io);
}

unsigned hv_decode_pio(const uint8_t *b, bool *out, unsigned *size,
                       bool *imm)
{
    unsigned i = 0, op;
    bool opsize = false;

    if (b[0] == 0x66) {
        opsize = true;
        i = 1;
    }
    op = b[i];
    if ((op & 0xf4) != 0xe4)
        return 0;
    *imm = !(op & 0x08);
    *out = op & 0x02;
    *size = (op & 0x01) ? (opsize ? 2 : 4) : 1;
    return i + 1 + (*imm ? 1 : 0);
}

int hv_pio_emulate(struct pvcpu *pc, bool *handled)
{
    uint8_t insn[3] = {0};
    unsigned len, size, port;
    bool out, imm;
    uint64_t data;
    int r;

    *handled = false;
    if (!pc->d->created_io || !pc->kernel_mode)
        return 0;
    /* at most 3 bytes; fewer when the instruction ends a mapped page */
    for (len = sizeof(insn); len; len--)
        if (gm_copy_from(pc, insn, pc->ret.rip, len) == 0)
            break;
    if (!len)
        return 0;
    unsigned have = len;
    len = hv_decode_pio(insn, &out, &size, &imm);
    if (!len || len > have)
        return 0;
    port = imm ? insn[len - 1] : (unsigned)(pc->regs.rdx & 0xffff);
    data = out ? pc->regs.rax & (size == 4 ? 0xffffffffULL
                                            : (1ULL << (size * 8)) - 1)
               : 0;
    r = ioreq_access(&pc->d->io, pc->id, DM_RANGE_PIO, port, size, out, &data);
    if (r == -ENOENT)
        return 0; /* no device there: the guest's own #GP */
    /* handled, also when the device failed (-EIO: reads see all ones) */
    *handled = true;
    if (!out) {
        if (size == 4)
            pc->regs.rax = data & 0xffffffffULL; /* zero-extends */
        else if (size == 2)
            pc->regs.rax = (pc->regs.rax & ~0xffffULL) | (data & 0xffff);
        else
            pc->regs.rax = (pc->regs.rax & ~0xffULL) | (data & 0xff);
    }
    pc->ret.rip += len;
    return 0;
}

int hv_domain_attach_dm(struct domain *d, int sock, pid_t child)
{
    int r;

    if (!d->created_io) {
        close(sock);
        return -ENODEV;
    }
    r = ioreq_attach(&d->io, sock);
    if (r >= 0 && child > 0 && ioreq_set_child(&d->io, (unsigned)r, child) < 0)
        return -EINVAL;
    if (r >= 0 && d->pv) {
        /* a PV domain: its MMIO ranges become I/O memory the guest may map
         * (docs/abi.md); ioreq refused any inside the domain's RAM space,
         * which for a PV domain is the pool.  (An HVM guest's accesses
         * there exit as MMIO by themselves: no slot covers them.) */
        struct dm_range rg[DM_MAX_RANGES];
        int n = ioreq_server_ranges(&d->io, (unsigned)r, rg);
        pthread_mutex_lock(&d->iomem_lock);
        for (int i = 0; i < n; i++)
            if (rg[i].kind == DM_RANGE_MMIO &&
                pv_iomem_grant(d->pv, _mfn(rg[i].base >> PAGE_SHIFT),
                               rg[i].len >> PAGE_SHIFT) < 0) {
                pthread_mutex_unlock(&d->iomem_lock);
                ioreq_cut(&d->io, (unsigned)r,
                          "its MMIO ranges cannot be granted to the guest");
                return -ENOSPC;
            }
        pthread_mutex_unlock(&d->iomem_lock);
    }
    return r;
}

int hv_mmio_forward(struct pvcpu *pc, uint64_t gpa, uint8_t *data,
                    uint32_t len, bool write)
{
    uint64_t v = 0;
    int r;

    if (!pc->d->created_io || (len != 1 && len != 2 && len != 4 && len != 8))
        return -ENOENT;
    if (write)
        memcpy(&v, data, len);
    r = ioreq_access(&pc->d->io, pc->id, DM_RANGE_MMIO, gpa, len, write, &v);
    if (r == -ENOENT || r == -EINVAL)
        return -ENOENT;
    if (!write)
        memcpy(data, &v, len); /* all ones if the device failed */
    return 0;
}

struct ioreq_domain *hv_domain_ioreq(struct domain *d)
{
    return d->created_io ? &d->io : NULL;
}

void hv_domain_test_iomem_any(struct domain *d)
{
    if (d->pv)
        d->pv->rules.iomem_any = true;
}

void hv_domain_test_dm_drop_dirty(struct domain *d)
{
    d->io.cfg.test_drop_dirty = true;
}

void hv_domain_test_no_inval_wait(struct domain *d)
{
    d->io.cfg.test_no_wait_acks = true;
}
