/*
 * hc_desc.c - the descriptor-table hypercalls: set_gdt (2) and
 * update_descriptor (10).
 *
 * The hardware GDT is the shim's (flat ring-0 and ring-3 selectors); a PV
 * guest's own GDT is never loaded, so its descriptors need no validation:
 * they are the guest's data.  What memvisor keeps is the rule that matters
 * to the frame table: set_gdt names frames the domain owns (recorded per
 * vCPU), and update_descriptor stores into a frame the domain owns that is
 * not a page table in use (pv_write_data(): a transient writable type
 * reference, refused on a page table, logged dirty) - never a way around
 * page-table validation.
 */
#include <errno.h>
#include <string.h>

#include "hv/hv_internal.h"
#include "hv/pv/pvhv.h"
#include "pv/pv.h"
#include "xen/xen.h"

/* Xen's first reserved GDT entry: the guest's GDT may use entries below. */
#define FIRST_RESERVED_GDT_ENTRY (14 * 512)

long hc_set_gdt(struct pvcpu *pc, uint64_t a[6])
{
    uint64_t frames[HV_GDT_FRAMES];
    uint64_t entries = a[1], nr;
    struct frames *f = &pc->d->hv->frames;

    if (entries > FIRST_RESERVED_GDT_ENTRY)
        return -EINVAL;
    nr = (entries + 511) / 512;
    if (nr && gm_copy_from(pc, frames, a[0], nr * sizeof(frames[0])) < 0)
        return -EFAULT;
    for (uint64_t i = 0; i < nr; i++) {
        mfn_t m = _mfn(frames[i]);

        /* owned by the caller: a general reference taken and dropped */
        if (!frames_mfn_valid(f, m) || frame_get(f, m, pc->d->id) < 0)
            return -EINVAL;
        frame_put(f, m);
    }
    memcpy(pc->gdt_frames, frames, nr * sizeof(frames[0]));
    pc->gdt_entries = (unsigned)entries;
    return 0;
}

long hc_update_descriptor(struct pvcpu *pc, uint64_t a[6])
{
    int r;

    /* a[0]: machine address of the descriptor, a[1]: its 8 bytes */
    if (a[0] & 7)
        return -EINVAL;
    if (pc->d->test_no_desc_rule)
        /* test only: the store made wherever the domain owns the frame,
         * page table or not (shows the audit catches the hole) */
        return gm_write_phys(pc->d, a[0], &a[1], 8) < 0 ? -EINVAL : 0;
    r = pv_write_data(pc->pv, a[0], a[1]);
    return r == -EPERM ? -EINVAL : r;
}

void hv_domain_test_no_desc_rule(struct domain *d)
{
    d->test_no_desc_rule = true;
}
