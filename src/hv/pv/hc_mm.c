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
#include <stdlib.h>
#include <string.h>

#include "hv/hv_internal.h"
#include "hv/pv/pvhv.h"
#include "pv/pv.h"
#include "xen/xen.h"

#define MMU_CHUNK 128
#define EXTENT_CHUNK 4096 /* extents per slot transaction */

mfn_t hc_pv_base(struct pvcpu *pc, bool user)
{
    return user ? pc->pv->user_base : pc->pv->base;
}

int hc_pv_set_base(struct pvcpu *pc, mfn_t mfn)
{
    struct mmuext_op op = {.cmd = MMUEXT_NEW_BASEPTR, .arg1.mfn = mfn_x(mfn)};
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

/*
 * The extents ext[0..n) of order `order` as runs of consecutive frames
 * (gfn == mfn); *out malloc'ed.
 */
static int extent_ranges(const uint64_t *ext, uint64_t n, unsigned order,
                         struct memslot_range **out, uint32_t *nout)
{
    struct memslot_range *rg = calloc(n ? n : 1, sizeof(*rg));
    uint32_t k = 0;

    if (!rg)
        return -ENOMEM;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t nr = 1ULL << order;

        if (k && mfn_x(rg[k - 1].mfn) + rg[k - 1].nr == ext[i])
            rg[k - 1].nr += nr;
        else
            rg[k++] = (struct memslot_range){_gfn(ext[i]), _mfn(ext[i]), nr};
    }
    *out = rg;
    *nout = k;
    return 0;
}

/* Balloon in: present the frames of ext[0..n) to the VM, one transaction. */
static int present_extents(struct domain *d, const uint64_t *ext, uint64_t n,
                           unsigned order)
{
    struct memslot_range *rg;
    uint32_t k;
    int r;

    if (!n)
        return 0;
    if ((r = extent_ranges(ext, n, order, &rg, &k)) < 0)
        return r;
    if (d->test_no_slot_txn) {
        /* the baseline of bench-balloon: the p2m alone */
        for (uint32_t i = 0; i < k; i++)
            for (uint64_t j = 0; j < rg[i].nr && r == 0; j++)
                r = p2m_populate(&d->p2m, _gfn(gfn_x(rg[i].gfn) + j),
                                 _mfn(mfn_x(rg[i].mfn) + j), P2M_RAM);
    } else {
        r = memslot_populate_ranges(&d->ms, rg, k, P2M_RAM);
    }
    /* a frame that arrives has new (scrubbed) content at that gfn */
    for (uint32_t i = 0; i < k && r == 0; i++)
        if (!d->test_no_dirty_accessor)
            (void)!dirty_mark(&d->dirty, rg[i].gfn, rg[i].nr);
    free(rg);
    return r;
}

/*
 * Balloon out, first half: how many leading extents of ext[0..n) are
 * wholly the domain's RAM in its p2m (what pv will accept back), and take
 * them out of the VM in one transaction (the dirty log harvested and the
 * other vCPUs held out of the guest until it committed; the p2m's
 * references are dropped after the slots went).  The frames stay
 * allocated until pv gives them back.
 */
static int withdraw_extents(struct domain *d, const uint64_t *ext, uint64_t *n,
                            unsigned order)
{
    struct memslot_range *rg;
    uint64_t ok = 0;
    uint32_t k;
    int r = 0;

    for (; ok < *n; ok++) {
        uint64_t first = ext[ok], nr = 1ULL << order;
        bool ram = first < d->p2m.nr_gfns && nr <= d->p2m.nr_gfns - first;

        for (uint64_t j = 0; ram && j < nr; j++) {
            struct p2m_entry e;

            ram = p2m_lookup(&d->p2m, _gfn(first + j), &e) == 0 &&
                  e.type == P2M_RAM;
        }
        if (!ram)
            break;
    }
    *n = ok;
    if (!ok)
        return 0;
    if ((r = extent_ranges(ext, ok, order, &rg, &k)) < 0)
        return r;
    if (d->test_no_slot_txn) {
        for (uint32_t i = 0; i < k; i++)
            for (uint64_t j = 0; j < rg[i].nr; j++)
                (void)!p2m_remove(&d->p2m, _gfn(gfn_x(rg[i].gfn) + j), NULL);
    } else {
        r = memslot_remove_ranges(&d->ms, rg, k);
    }
    free(rg);
    return r;
}

/*
 * pv's reservation operation over the n extents.  With may_stop, a
 * preemption pv reports while a pause is pending (or under the test's
 * preemption) stops it: -ERESTART with *progress extents done.  Otherwise
 * preemptions are run through.
 */
static long pv_reserve(struct pvcpu *pc, unsigned op, uint64_t *ext, uint64_t n,
                       const struct xen_memory_reservation *g, bool may_stop,
                       uint64_t *progress)
{
    struct pv_reservation r = {
        .extent_start = ext,
        .nr_extents = n,
        .extent_order = g->extent_order,
        .mem_flags = g->mem_flags,
        .domid = DOMID_SELF,
    };
    unsigned long cmd = op;
    long done;

    for (;;) {
        done = pv_memory_op(pc->pv, &cmd, &r);
        if (done != -ERESTART)
            return done;
        if (may_stop && preempt_now(pc)) {
            *progress = cmd >> MEMOP_EXTENT_SHIFT;
            return -ERESTART;
        }
    }
}

/*
 * One chunk of a reservation call: extents ext[0..n) (n <= EXTENT_CHUNK)
 * are one slot transaction.  Balloon in: pv allocates, then the frames are
 * presented; if that fails (-ENOSPC: no slot left, -ENOMEM) they are given
 * back and the chunk did nothing; a preemption pv reports while a pause is
 * pending stops the chunk at its progress (*stopped: the caller takes a
 * continuation).  Balloon out: the frames leave the VM first, then pv
 * takes them back (a frame is freed, flushed from every TLB by the free
 * hook and scrubbed only after it left the slots); pv runs through its
 * preemptions, as the frames already left.  Returns the extents done or
 * -errno with nothing done.
 */
static long reserve_chunk(struct pvcpu *pc, unsigned op, uint64_t *ext,
                          uint64_t n, const struct xen_memory_reservation *g,
                          bool *stopped)
{
    struct domain *d = pc->d;
    uint64_t progress = 0;
    long done;
    int r;

    if (op == XENMEM_decrease_reservation) {
        uint64_t ok = n;

        if ((r = withdraw_extents(d, ext, &ok, g->extent_order)) < 0)
            return r;
        done = ok ? pv_reserve(pc, op, ext, ok, g, false, NULL) : 0;
        if (done < 0)
            done = 0;
        /* Only a race with another vCPU giving the same frames back makes
         * pv refuse an extent checked above: those it refused are the
         * domain's still and are presented again (best effort: the guest
         * loses access to them otherwise, nothing else). */
        if ((uint64_t)done < ok)
            (void)!present_extents(d, ext + done, ok - (uint64_t)done,
                                   g->extent_order);
        return done;
    }
    done = pv_reserve(pc, op, ext, n, g, true, &progress);
    if (done == -ERESTART) {
        /* a continuation at the extent pv reached: what it allocated so
         * far is presented (and copied out) first */
        done = (long)progress;
        *stopped = true;
    }
    if (done <= 0)
        return done;
    if ((r = present_extents(d, ext, (uint64_t)done, g->extent_order)) < 0) {
        /* undo: the frames were never visible to the guest */
        uint64_t *back = calloc((size_t)done, sizeof(*back));
        struct xen_memory_reservation gb = *g;

        if (back) {
            memcpy(back, ext, (size_t)done * sizeof(*back));
            (void)pv_reserve(pc, XENMEM_decrease_reservation, back,
                             (uint64_t)done, &gb, false, NULL);
            free(back);
        }
        return r;
    }
    return done;
}

static long reservation(struct pvcpu *pc, uint64_t a[6], unsigned op)
{
    struct xen_memory_reservation g;
    uint64_t *ext = NULL;
    uint64_t start = a[0] >> MEMOP_EXTENT_SHIFT;
    long ret;

    if (gm_copy_from(pc, &g, a[1], sizeof(g)) < 0)
        return -EFAULT;
    if (g.nr_extents > (~0U >> MEMOP_EXTENT_SHIFT) || start > g.nr_extents)
        return (long)start; /* Xen: a malformed request is "start done" */
    if (g.domid != DOMID_SELF && g.domid != pc->d->id)
        return -ESRCH;
    if (g.extent_order > PV_MAX_EXTENT_ORDER)
        return (long)start;
    if (start == g.nr_extents)
        return (long)start;
    ext = malloc(MIN(g.nr_extents - start, (uint64_t)EXTENT_CHUNK) * 8);
    if (!ext)
        return start == 0 ? -ENOMEM : (long)start;
    ret = (long)start;
    while (start < g.nr_extents) {
        uint64_t n = MIN(g.nr_extents - start, (uint64_t)EXTENT_CHUNK);
        uint64_t va = g.extent_start + start * 8;
        bool refused = false, stopped = false;
        long done;

        ret = (long)start;
        if (gm_copy_from(pc, ext, va, n * 8) < 0)
            break;
        if (op == XENMEM_decrease_reservation) {
            /* The shared info frame is the hypervisor's page lent to the
             * guest: it can be mapped, never given back. */
            uint64_t si = mfn_x(pc->d->shared_info_mfn); /* gfn == mfn */
            for (uint64_t k = 0; k < n; k++) {
                uint64_t first = ext[k] & ~((1ULL << g.extent_order) - 1);
                if (si >= first && si - first < (1ULL << g.extent_order)) {
                    n = k;
                    refused = true;
                    break;
                }
            }
            if (n == 0)
                break;
        }
        done = reserve_chunk(pc, op, ext, n, &g, &stopped);
        if (done < 0) {
            /* -ENOSPC (no KVM slot left), -ENOMEM: a clear error when
             * nothing was done, else the count done (Xen's convention) */
            ret = start == 0 ? done : (long)start;
            break;
        }
        if (op != XENMEM_decrease_reservation && done > 0 &&
            gm_copy_to(pc, va, ext, (uint64_t)done * 8) < 0)
            break; /* the frames stay the guest's, as in Xen */
        start += (uint64_t)done;
        ret = (long)start;
        if (stopped) {
            /* continuation at the extent pv reached */
            a[0] = op | (start << MEMOP_EXTENT_SHIFT);
            pc->retry = true;
            ret = 0;
            break;
        }
        if ((uint64_t)done < n || refused)
            break;
        if (start < g.nr_extents && preempt_now(pc)) {
            a[0] = op | (start << MEMOP_EXTENT_SHIFT);
            pc->retry = true;
            ret = 0;
            break;
        }
    }
    free(ext);
    return ret;
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
    case XENMEM_machphys_mapping: {
        /* where the guest reads the m2p (m2p.c) */
        uint64_t mp[3];

        m2p_mapping(pc->d, &mp[0], &mp[1], &mp[2]);
        return gm_copy_to(pc, a[1], mp, sizeof(mp)) < 0 ? -EFAULT : 0;
    }
    default:
        return -ENOSYS;
    }
}
