/*
 * m2p.c - the machine-to-physical table as a PV guest reads it: Xen's
 * read-only M2P array (one 8-byte pfn per machine frame of the pool,
 * PV_M2P_INVALID for frames the domain does not own), mapped user-readable
 * and read-only in L4 slot HV_M2P_SLOT of every validated L4.  A guest
 * finds it with XENMEM_machphys_mapping (Linux's mfn_to_pfn() reads it
 * directly).
 *
 * The array is the pv domain's own m2p (pv_domain_m2p_move()): it lives in
 * contiguous pool frames owned by the hypervisor's frame domain, so every
 * update pv makes (MMU_MACHPHYS_UPDATE, populate_physmap, a frame given
 * back) is what the guest reads next, with no copy.  Its page tables are
 * hypervisor frames too; the guest can name none of them (H1), and the
 * pages are read-only at every level, so a guest store faults.  Slot 256
 * (the shim) is not used: on this machine's KVM ring-3 accesses to slot
 * 256 fault whatever is mapped there (docs/quirks.md).
 */
#include <errno.h>
#include <string.h>

#include "hv/hv_internal.h"
#include "hv/pv/pvhv.h"
#include "pv/pv.h"

static unsigned order_of(uint64_t n)
{
    unsigned o = 0;

    while ((1ULL << o) < n)
        o++;
    return o;
}

int m2p_init(struct domain *d)
{
    struct frames *f = &d->hv->frames;
    struct hv_m2p *m = &d->m2p;
    uint64_t nr_data = DIV_ROUND_UP(f->nr_frames * 8, PAGE_SIZE);
    uint64_t nr_l1 = DIV_ROUND_UP(nr_data, 512);
    uint64_t *l3, *l2;
    int r;

    if (nr_l1 > 512)
        return -E2BIG; /* more than 1 GiB of m2p: a pool of 128 Mi frames */
    m->data_order = order_of(nr_data);
    m->tab_order = order_of(2 + nr_l1);
    if ((r = frames_alloc(f, HV_FRAME_DOMID, m->data_order, &m->data)) < 0)
        return r;
    if ((r = frames_alloc(f, HV_FRAME_DOMID, m->tab_order, &m->tables)) < 0) {
        for (uint64_t i = 0; i < (1ULL << m->data_order); i++)
            BUG_ON(frame_put_alloc_ref(f, _mfn(mfn_x(m->data) + i)) < 0);
        return r;
    }
    m->nr_data = nr_data;
    m->nr_l1 = nr_l1;
    /* tables: L3, L2, then the L1s; frames come scrubbed */
    l3 = frames_ptr(f, m->tables);
    l2 = frames_ptr(f, _mfn(mfn_x(m->tables) + 1));
    l3[0] = ((mfn_x(m->tables) + 1) << PAGE_SHIFT) | PTE_P | PTE_US | PTE_A;
    for (uint64_t i = 0; i < nr_l1; i++) {
        mfn_t l1m = _mfn(mfn_x(m->tables) + 2 + i);
        uint64_t *l1 = frames_ptr(f, l1m);

        l2[i] = (mfn_x(l1m) << PAGE_SHIFT) | PTE_P | PTE_US | PTE_A;
        for (uint64_t j = 0; j < 512 && i * 512 + j < nr_data; j++)
            l1[j] = ((mfn_x(m->data) + i * 512 + j) << PAGE_SHIFT) | PTE_P |
                    PTE_US | PTE_A | PTE_NX;
    }
    pv_domain_m2p_move(d->pv, frames_ptr(f, m->data));
    d->pv->hv_l4[HV_M2P_SLOT - PV_HV_L4_FIRST] =
        (mfn_x(m->tables) << PAGE_SHIFT) | PTE_P | PTE_US | PTE_A;
    return 0;
}

/* After the pv domain is gone (it used the array until its end). */
void m2p_fini(struct domain *d)
{
    struct frames *f = &d->hv->frames;
    struct hv_m2p *m = &d->m2p;

    if (!m->nr_data)
        return;
    for (uint64_t i = 0; i < (1ULL << m->data_order); i++)
        BUG_ON(frame_put_alloc_ref(f, _mfn(mfn_x(m->data) + i)) < 0);
    for (uint64_t i = 0; i < (1ULL << m->tab_order); i++)
        BUG_ON(frame_put_alloc_ref(f, _mfn(mfn_x(m->tables) + i)) < 0);
    memset(m, 0, sizeof(*m));
}

int m2p_slots(struct domain *d)
{
    struct frames *f = &d->hv->frames;
    struct hv_m2p *m = &d->m2p;
    struct {
        mfn_t first;
        uint64_t nr;
    } runs[2] = {{m->data, 1ULL << m->data_order},
                 {m->tables, 1ULL << m->tab_order}};
    int r;

    if (!m->nr_data)
        return 0;
    for (unsigned i = 0; i < 2; i++) {
        r = kvm_vm_set_memory_region(&d->vm, d->nr_shim_slots, 0,
                                     mfn_x(runs[i].first) << PAGE_SHIFT,
                                     runs[i].nr << PAGE_SHIFT,
                                     frames_ptr(f, runs[i].first));
        if (r < 0)
            return r;
        d->nr_shim_slots++;
    }
    return 0;
}

void m2p_mapping(struct domain *d, uint64_t *v_start, uint64_t *v_end,
                 uint64_t *max_mfn)
{
    *v_start = HV_M2P_VA;
    *v_end = HV_M2P_VA + d->m2p.nr_data * PAGE_SIZE;
    *max_mfn = d->hv->frames.nr_frames - 1;
}
