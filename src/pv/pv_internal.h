/*
 * pv_internal.h - shared inside src/pv only: entry rules, promote/demote,
 * the type ops given to the frame module, and small helpers.
 */
#ifndef MEMVISOR_PV_PV_INTERNAL_H
#define MEMVISOR_PV_PV_INTERNAL_H

#include "pv/pv.h"

/*
 * Flags of the entry helpers (Xen's PTF_* in spirit).  Only
 * FRAME_PARTIAL_SET / FRAME_PARTIAL_NOREF are ever stored in a frame.
 */
#define PTF_PARTIAL_SET FRAME_PARTIAL_SET /* entry holds a partial ref */
#define PTF_NOREF FRAME_PARTIAL_NOREF     /* test: ...without general ref */
#define PTF_PREEMPTIBLE 0x10
#define PTF_RETAIN 0x20 /* keep the general ref on -ERESTART */

/* Flags that are refused in a present entry. */
#define L1_DISALLOW (PTE_PWT | PTE_PCD | PTE_PSE)
#define LN_DISALLOW (PTE_PWT | PTE_PCD | PTE_PSE | PTE_G)
/* Flags whose change needs no reference change (the fast path). */
#define L1_FASTPATH                                                            \
    (PTE_NX | PTE_AVAIL_HIGH | PTE_AVAIL | PTE_G | PTE_D | PTE_A | PTE_US)
#define LN_FASTPATH (L1_FASTPATH | PTE_RW)

extern const struct frame_type_ops pv_type_ops;

static inline bool pv_is_hv_slot(unsigned level, unsigned i)
{
    return level == 4 && i >= PV_HV_L4_FIRST &&
           i < PV_HV_L4_FIRST + PV_HV_L4_NR;
}

static inline uint64_t pv_entry_load(const uint64_t *pt, unsigned i)
{
    return __atomic_load_n(&pt[i], __ATOMIC_RELAXED);
}

static inline uint64_t *pv_table(struct pv_domain *d, mfn_t mfn)
{
    return frames_ptr(d->f, mfn);
}

/* The frame_get_type()/frame_put_type() flags the rule switches add. */
static inline unsigned pv_get_tf(const struct pv_vcpu *v)
{
    return v->d->rules.safety_before_commit ? FRAME_TF_TEST_SAFETY_FIRST : 0;
}

bool pv_preempt_check(struct pv_vcpu *v);
void pv_corrupt(struct pv_domain *d, mfn_t mfn, const char *what);
void pv_mark_dirty(struct pv_domain *d, mfn_t mfn);
/*
 * Flush the TLBs of the vCPUs in mask (PV_FLUSH_ALL: every vCPU) that may
 * hold translations older than stamp (frame.h F12): the model (wtlb: the
 * entries for mfn, or all of them if mfn is invalid) and, through
 * hooks.flush, the real ones.  Returns once no named vCPU can use such a
 * translation again.
 */
#define PV_FLUSH_ALL (~0ULL)
void pv_flush(struct pv_vcpu *self, uint64_t mask, mfn_t mfn, uint64_t stamp);
/* The acting vCPU alone, for every translation it has now. */
void pv_flush_local(struct pv_vcpu *self);
void pv_flush_all(struct pv_vcpu *self);

/* General + type reference for an entry's target (Xen's
 * get_page_and_type_from_mfn). */
int __must_check pv_get_page_and_type(struct pv_vcpu *v, mfn_t mfn,
                                      uint64_t type, unsigned ptf);
/* Put a full (or, with PTF_PARTIAL_SET, partial) reference of a child
 * page table: 0, -EINTR, -ERESTART. */
int __must_check pv_put_pt_ref(struct pv_vcpu *v, mfn_t mfn, uint64_t type,
                               unsigned ptf);

/* Update entry idx of the validated, locked table of the given level. */
int __must_check pv_mod_entry(struct pv_vcpu *v, mfn_t table, unsigned level,
                              unsigned idx, uint64_t nval, bool preserve_ad);

#endif
