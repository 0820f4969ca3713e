/*
 * hc_mm.c - the MMU hypercalls (mmu_update, mmuext_op, update_va_mapping,
 * memory_op): guest arrays are copied in bounded chunks, handed to the pv
 * code, and results copied back; long calls become continuations (Xen's
 * encodings: MMU_UPDATE_PREEMPTED in count with *done accumulated, the
 * start extent in cmd >> MEMOP_EXTENT_SHIFT).  A continuation is taken
 * only at a chunk boundary or when pv reports -ERESTART, and only when a
 * pause is pending (otherwise the call goes on at once).
 */
#include <errno.h>
#include <string.h>

#include "hv/hv_internal.h"
#include "pv/pv.h"
#include "xen/xen.h"

#define MMU_CHUNK 128
#define EXTENT_CHUNK 256

uint64_t hc_pv_base(struct pvcpu *pc, bool user)
{
    mfn_t m = user ? pc->pv->user_base : pc->pv->base;
    return mfn_eq(m, INVALID_MFN) ? ~0ULL : mfn_x(m);
}

int hc_pv_set_base(struct pvcpu *pc, uint64_t mfn)
{
    struct mmuext_op op = {.cmd = MMUEXT_NEW_BASEPTR, .arg1.mfn = mfn};
    uint32_t done = 0;
    int rc;

    do
        rc = pv_mmuext_op(pc->pv, &op, 1, &done, DOMID_SELF);
    while (rc == -ERESTART);
    return rc;
}

static bool preempt_now(struct pvcpu *pc)
{
    return vcpu_pause_pending(&pc->vcpu) || pc->d->test_preempt;
}

void hv_domain_test_skip_empty_reissue(struct domain *d)
{
    d->test_skip_empty_reissue = true;
}

void hv_domain_test_preempt(struct domain *d, uint64_t every)
{
    d->test_preempt = every != 0;
    for (unsigned i = 0; i < d->nr_vcpus; i++)
        pv_vcpu_set_preempt(d->vcpus[i].pv, every, every != 0);
}

/*
 * The loop shared by mmu_update and mmuext_op: a[0] array, a[1] count (with
 * MMU_UPDATE_PREEMPTED on a continuation), a[2] done pointer, a[3]
 * foreigndom.  op() applies host copies.
 */
typedef int (*batch_fn)(struct pv_vcpu *v, const void *ops, uint32_t n,
                        uint32_t *pdone, uint32_t fd);

static int mmu_batch(struct pv_vcpu *v, const void *ops, uint32_t n,
                     uint32_t *pdone, uint32_t fd)
{
    return pv_mmu_update(v, ops, n, pdone, fd);
}

static int mmuext_batch(struct pv_vcpu *v, const void *ops, uint32_t n,
                        uint32_t *pdone, uint32_t fd)
{
    return pv_mmuext_op(v, ops, n, pdone, (domid_t)fd);
}

static long batch(struct pvcpu *pc, uint64_t a[6], size_t size, batch_fn fn,
                  bool is_mmu)
{
    uint8_t buf[MMU_CHUNK * 24];
    uint32_t count = (uint32_t)a[1], done_total = 0;
    uint64_t va = a[0];
    long rc = 0;
    /* H4: a continuation always reaches pv, even with no request left:
     * pv may hold the last request's result back until a deferred put is
     * drained (its -ERESTART after the last request), and only a re-issue
     * drains it and returns that result.  Skipped, the deferred put and
     * the held result would be taken by the vCPU's next, unrelated
     * operation (an update_va_mapping, an emulated page-table store),
     * which pv then answers with the stale result instead of doing it. */
    bool reissue = false;

    if (count & MMU_UPDATE_PREEMPTED) {
        count &= ~MMU_UPDATE_PREEMPTED;
        reissue = !pc->d->test_skip_empty_reissue;
        if (a[2] && gm_copy_from(pc, &done_total, a[2], 4) < 0)
            return -EFAULT;
    }
    if ((uint32_t)a[3] != DOMID_SELF && (uint32_t)a[3] != pc->d->id)
        return -ESRCH;
    while (count > 0 || reissue) {
        uint32_t n = MIN(count, (uint32_t)MMU_CHUNK), done = 0;

        reissue = false;
        if (is_mmu && pvcpu_touch_room(pc) < n)
            goto preempt; /* let the shim store the entries back first */
        if (n && gm_copy_from(pc, buf, va, (uint64_t)n * size) < 0) {
            rc = -EFAULT;
            break;
        }
        for (;;) {
            rc = fn(pc->pv, buf, n, &done, DOMID_SELF);
            if (rc != -ERESTART || preempt_now(pc))
                break;
        }
        if (is_mmu) {
            const struct mmu_update *req = (const void *)buf;
            for (uint32_t k = 0; k < done; k++) {
                unsigned cmd = req[k].ptr & 7;
                if (cmd == MMU_NORMAL_PT_UPDATE ||
                    cmd == MMU_PT_UPDATE_PRESERVE_AD ||
                    cmd == MMU_PT_UPDATE_NO_TRANSLATE)
                    pvcpu_touch_add(pc, req[k].ptr & ~7ULL);
            }
        }
        done_total += done;
        va += (uint64_t)done * size;
        count -= done;
        /* -ERESTART with count 0: every request is done but pv holds the
         * result back; the continuation re-issues with none left. */
        if (rc == -ERESTART || (rc == 0 && count > 0 && preempt_now(pc)))
            goto preempt;
        if (rc < 0)
            break;
    }
    if (a[2] && gm_copy_to(pc, a[2], &done_total, 4) < 0)
        return -EFAULT;
    return rc;

preempt:
    /* continuation: the rest, with *done carried in the guest */
    if (a[2] && gm_copy_to(pc, a[2], &done_total, 4) < 0)
        return -EFAULT;
    a[0] = va;
    a[1] = count | MMU_UPDATE_PREEMPTED;
    pc->retry = true;
    return 0;
}

long hc_mmu_update(struct pvcpu *pc, uint64_t a[6])
{
    return batch(pc, a, sizeof(struct mmu_update), mmu_batch, true);
}

long hc_mmuext_op(struct pvcpu *pc, uint64_t a[6])
{
    long rc = batch(pc, a, sizeof(struct mmuext_op), mmuext_batch, false);

    /* A new base pointer, or a TLB flush request: load CR3 for the current
     * mode and flush this vCPU's TLB through the touch loop. */
    pvcpu_load_cr3(pc);
    pc->want_flush = true;
    return rc;
}

long hc_update_va_mapping(struct pvcpu *pc, uint64_t a[6])
{
    uint64_t l1e_maddr;
    bool known = gm_l1e_maddr(pc, a[0], &l1e_maddr) == 0;
    int rc;

    do
        rc = pv_update_va_mapping(pc->pv, a[0], a[1], a[2]);
    while (rc == -ERESTART);
    if (rc == 0) {
        if (known)
            pvcpu_touch_add(pc, l1e_maddr);
        else
            pc->want_flush = true;
    }
    return rc;
}

static long reservation(struct pvcpu *pc, uint64_t a[6], unsigned op)
{
    struct xen_memory_reservation g;
    uint64_t ext[EXTENT_CHUNK];
    uint64_t start = a[0] >> MEMOP_EXTENT_SHIFT;

    if (gm_copy_from(pc, &g, a[1], sizeof(g)) < 0)
        return -EFAULT;
    if (g.nr_extents > (~0U >> MEMOP_EXTENT_SHIFT) || start > g.nr_extents)
        return (long)start; /* Xen: a malformed request is "start done" */
    if (g.domid != DOMID_SELF && g.domid != pc->d->id)
        return -ESRCH;
    if (g.extent_order > PV_MAX_EXTENT_ORDER)
        return (long)start;
    while (start < g.nr_extents) {
        uint64_t n = MIN(g.nr_extents - start, (uint64_t)EXTENT_CHUNK);
        uint64_t va = g.extent_start + start * 8;
        struct pv_reservation r = {
            .extent_start = ext, .nr_extents = n,
            .extent_order = g.extent_order, .mem_flags = g.mem_flags,
            .domid = DOMID_SELF,
        };
        unsigned long cmd = op;
        bool refused = false;
        long done;

        if (gm_copy_from(pc, ext, va, n * 8) < 0)
            return (long)start;
        if (op == XENMEM_decrease_reservation) {
            /* The shared info frame is the hypervisor's page lent to the
             * guest: it can be mapped, never given back. */
            uint64_t si = pc->d->shared_info_mfn;
            for (uint64_t k = 0; k < n; k++) {
                uint64_t first = ext[k] & ~((1ULL << g.extent_order) - 1);
                if (si >= first && si - first < (1ULL << g.extent_order)) {
                    n = k;
                    refused = true;
                    break;
                }
            }
            if (n == 0)
                return (long)start;
            r.nr_extents = n;
        }
        for (;;) {
            done = pv_memory_op(pc->pv, &cmd, &r);
            if (done != -ERESTART)
                break;
            if (preempt_now(pc)) {
                /* continuation at the extent pv reached in this chunk */
                uint64_t progress = cmd >> MEMOP_EXTENT_SHIFT;
                if (op != XENMEM_decrease_reservation && progress > 0 &&
                    gm_copy_to(pc, va, ext, progress * 8) < 0)
                    return (long)start;
                a[0] = op | ((start + progress) << MEMOP_EXTENT_SHIFT);
                pc->retry = true;
                return 0;
            }
        }
        if (done < 0)
            return start == 0 ? done : (long)start;
        if (op != XENMEM_decrease_reservation && done > 0 &&
            gm_copy_to(pc, va, ext, (uint64_t)done * 8) < 0)
            return (long)start;
        start += (uint64_t)done;
        if ((uint64_t)done < n || refused)
            return (long)start;
        if (start < g.nr_extents && preempt_now(pc)) {
            a[0] = op | (start << MEMOP_EXTENT_SHIFT);
            pc->retry = true;
            return 0;
        }
    }
    return (long)start;
}

long hc_memory_op(struct pvcpu *pc, uint64_t a[6])
{
    unsigned op = a[0] & MEMOP_CMD_MASK;
    uint16_t domid;

    switch (op) {
    case XENMEM_increase_reservation:
    case XENMEM_decrease_reservation:
    case XENMEM_populate_physmap:
        return reservation(pc, a, op);
    case 3: /* XENMEM_current_reservation */
    case 4: /* XENMEM_maximum_reservation */
        if (gm_copy_from(pc, &domid, a[1], 2) < 0)
            return -EFAULT;
        if (domid != DOMID_SELF && domid != pc->d->id)
            return -ESRCH;
        if (op == 3)
            return (long)frames_domain_tot(&pc->d->hv->frames, pc->d->id);
        return (long)pc->d->hv->frames.domains[pc->d->id].max_frames;
    default:
        return -ENOSYS;
    }
}
