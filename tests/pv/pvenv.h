/*
 * pvenv.h - a small PV world for tests: a pool, domain DOM (with PV state
 * and PVENV_VCPUS vCPUs) and domain OTHER (frames only), and helpers that
 * build page tables and issue operations, re-issuing on -ERESTART with the
 * audit after every step.
 */
#ifndef MEMVISOR_TESTS_PVENV_H
#define MEMVISOR_TESTS_PVENV_H

#include <errno.h>

#include "pv/pv.h"
#include "testlib.h"

#define DOM 1
#define OTHER 2
#define PVENV_VCPUS 3
#define PT_FLAGS (PTE_P | PTE_RW | PTE_US | PTE_A | PTE_D)

struct pvenv {
    struct frames f;
    struct pv_domain d;
    struct pv_vcpu v[PVENV_VCPUS];
    uint64_t restarts; /* -ERESTART re-issues seen by the helpers */
    bool no_check;     /* helpers skip the check (a rule is off) */
};

void pvenv_init(struct pvenv *e, uint64_t nr_frames);
/* Relinquish (re-issued while preempted), audit, check that every frame of
 * DOM is free again. */
void pvenv_fini(struct pvenv *e);

mfn_t pvenv_page(struct pvenv *e);            /* a fresh frame of DOM */
mfn_t pvenv_page_of(struct pvenv *e, domid_t d);
static inline uint64_t *pvenv_pt(struct pvenv *e, mfn_t m)
{
    return frames_ptr(&e->f, m);
}
static inline uint64_t pvenv_pte(mfn_t m, uint64_t flags)
{
    return (mfn_x(m) << PAGE_SHIFT) | flags;
}

/* pv_audit() and frames_check() must pass (prints the report if not). */
void pvenv_check(struct pvenv *e);
/* pv_audit() result, report printed as a TAP note. */
int pvenv_audit(struct pvenv *e);

/* One operation, one call (may return -ERESTART). */
int pvenv_ext1(struct pv_vcpu *v, unsigned cmd, uint64_t arg,
               uint32_t *done);
int pvenv_upd1(struct pv_vcpu *v, mfn_t table, unsigned idx, uint64_t val,
               uint32_t *done);
/* Re-issue until the result is not -ERESTART, checking after each step. */
int pvenv_ext(struct pvenv *e, struct pv_vcpu *v, unsigned cmd, uint64_t arg);
int pvenv_upd(struct pvenv *e, struct pv_vcpu *v, mfn_t table, unsigned idx,
              uint64_t val);

#endif
