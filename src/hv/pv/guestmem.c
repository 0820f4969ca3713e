/*
 * guestmem.c - hypercall arguments in guest memory: every guest virtual
 * range is walked through the vCPU's current page tables (the root in CR3),
 * must be mapped present and user-accessible (writable too for a write) at
 * every level, must lie on frames the domain owns (a general reference is
 * held across each page's copy, so a frame freed meanwhile by another vCPU
 * is never touched), and is split at page boundaries.  Writes go through
 * the domain's one dirty-logging accessor (gm_write_phys()).  Anything else is
 * -EFAULT, Xen's answer for a bad guest handle.
 */
#include <errno.h>
#include <string.h>

#include "hv/hv_internal.h"
#include "hv/pv/pvhv.h"
#include "lib/range.h"
#include "lib/x86.h"
#include "pv/pv.h"

static int walk_to(struct pvcpu *pc, uint64_t va, bool write, bool leaf_perm,
                   bool stop_at_l1, uint64_t *maddr, uint64_t *l1e_maddr,
                   uint64_t *l1e);

static int walk(struct pvcpu *pc, uint64_t va, bool write, bool leaf_perm,
                uint64_t *maddr, uint64_t *l1e_maddr, uint64_t *l1e)
{
    return walk_to(pc, va, write, leaf_perm, false, maddr, l1e_maddr, l1e);
}

static int walk_to(struct pvcpu *pc, uint64_t va, bool write, bool leaf_perm,
                   bool stop_at_l1, uint64_t *maddr, uint64_t *l1e_maddr,
                   uint64_t *l1e)
{
    struct frames *f = &pc->d->hv->frames;
    mfn_t mfn = _mfn(pc->cr3 >> PAGE_SHIFT);

    if (!x86_canonical(va))
        return -EFAULT;
    for (unsigned level = 4; level >= 1; level--) {
        unsigned idx = (va >> (12 + 9 * (level - 1))) & 511;
        uint64_t *t, e;

        if (!frames_mfn_valid(f, mfn))
            return -EFAULT;
        t = frames_ptr(f, mfn);
        e = __atomic_load_n(&t[idx], __ATOMIC_RELAXED);
        if (level == 1 && stop_at_l1) {
            *l1e_maddr = (mfn_x(mfn) << PAGE_SHIFT) + idx * 8;
            return 0;
        }
        if (!(e & PTE_P))
            return -EFAULT;
        if (level > 1 || leaf_perm) {
            if (!(e & PTE_US))
                return -EFAULT; /* the shim's slots, among others */
            if (write && !(e & PTE_RW))
                return -EFAULT;
        }
        if (level == 1) {
            if (l1e_maddr)
                *l1e_maddr = (mfn_x(mfn) << PAGE_SHIFT) + idx * 8;
            if (l1e)
                *l1e = e;
        }
        if (level > 1 && (e & PTE_PSE))
            return -EFAULT; /* never validated: PSE is refused above L1 */
        mfn = _mfn((e & PTE_ADDR_MASK) >> PAGE_SHIFT);
    }
    if (!frames_mfn_valid(f, mfn))
        return -EFAULT;
    *maddr = (mfn_x(mfn) << PAGE_SHIFT) | (va & (PAGE_SIZE - 1));
    return 0;
}

int gm_access_ok(struct pvcpu *pc, uint64_t va, bool write, uint64_t *l1e_maddr)
{
    uint64_t maddr;
    return walk(pc, va, write, true, &maddr, l1e_maddr, NULL);
}

int gm_l1e_maddr(struct pvcpu *pc, uint64_t va, uint64_t *l1e_maddr)
{
    uint64_t unused;
    return walk_to(pc, va, false, false, true, &unused, l1e_maddr, NULL);
}

int gm_translate(struct pvcpu *pc, uint64_t va, uint64_t *maddr,
                 uint64_t *l1e_maddr, uint64_t *l1e)
{
    return walk(pc, va, false, false, maddr, l1e_maddr, l1e);
}

static int copy(struct pvcpu *pc, uint64_t va, void *host, uint64_t len,
                bool to_guest)
{
    struct frames *f = &pc->d->hv->frames;
    uint64_t done = 0;

    if (range_check(va, len, UINT64_MAX) < 0)
        return -EFAULT;
    while (done < len) {
        uint64_t a = va + done, maddr;
        uint64_t n = MIN(len - done, PAGE_SIZE - (a & (PAGE_SIZE - 1)));
        mfn_t mfn;
        int r = walk(pc, a, to_guest, true, &maddr, NULL, NULL);

        if (r < 0)
            return r;
        mfn = _mfn(maddr >> PAGE_SHIFT);
        /* A write holds a transient writable type reference, so the frame
         * cannot become a page table under the copy (invariant 2). */
        if (to_guest ? frame_get_and_type(f, mfn, pc->d->id,
                                          FRAME_TYPE_WRITABLE, 0, NULL, NULL)
                     : frame_get(f, mfn, pc->d->id))
            return -EFAULT;
        if (to_guest) {
            /* through the dirty-logging accessor, under the reference: the
             * write is logged before the frame can change hands; -EFAULT
             * if the frame is not in the domain's p2m (ballooned out) */
            r = gm_write_phys(pc->d, maddr, (const uint8_t *)host + done, n);
            BUG_ON(frame_put_and_type(f, mfn, FRAME_TYPE_WRITABLE, 0, NULL,
                                      NULL) < 0);
            if (r < 0)
                return -EFAULT;
        } else {
            memcpy((uint8_t *)host + done,
                   (const uint8_t *)frames_ptr(f, mfn) +
                       (maddr & (PAGE_SIZE - 1)),
                   n);
            frame_put(f, mfn);
        }
        done += n;
    }
    return 0;
}

int gm_copy_from(struct pvcpu *pc, void *dst, uint64_t va, uint64_t len)
{
    return copy(pc, va, dst, len, false);
}

int gm_copy_to(struct pvcpu *pc, uint64_t va, const void *src, uint64_t len)
{
    return copy(pc, va, (void *)(uintptr_t)src, len, true);
}
