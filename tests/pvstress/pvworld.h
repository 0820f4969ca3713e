/*
 * pvworld.h - a harness around the real frame table and pv module for the
 * randomized, interleaving and fuzz tests: a small pool, a few PV domains
 * with a few vCPUs each, every vCPU's in-flight (resumable) call, and a
 * trivially correct reference model.
 *
 * Calls.  A call is one hypercall as the guest issued it (mmu_update,
 * mmuext_op, memory_op, update_va_mapping, page-frame info).  world_step()
 * issues it once; -ERESTART leaves it pending and the vCPU must re-issue the
 * same call (continuation semantics) before it issues anything else.
 *
 * Reference model.  It knows only what the guest did and what the
 * operations answered: which frames the domain was given and gave back,
 * which tables it pinned, each vCPU's base pointer, and the m2p.  At a
 * quiescent point of a domain (no call in flight on any of its vCPUs, no
 * deferred put, no partial frame) it recomputes from page-table contents
 * (read from the pool) the set of validated tables (everything reachable
 * from pins and base pointers) and every general and type count, and
 * compares them with the frame table, the type word bits and
 * pv_pageframe_info().  It shares no code with pv_audit().
 *
 * world_check() runs frames_check(), pv_audit() and, where the domain is
 * quiescent, the model; it counts failures and keeps the first message.
 */
#ifndef MEMVISOR_TESTS_PVWORLD_H
#define MEMVISOR_TESTS_PVWORLD_H

#include <stdbool.h>
#include <stdint.h>

#include "frame/frame.h"
#include "pv/pv.h"

#define W_MAX_DOMS 4
#define W_MAX_VCPUS 4
#define W_MAX_BATCH 4

enum call_kind {
    CALL_NONE,
    CALL_MMU,    /* pv_mmu_update */
    CALL_MMUEXT, /* pv_mmuext_op */
    CALL_MEMORY, /* pv_memory_op */
    CALL_UVA,    /* pv_update_va_mapping */
    CALL_PFINFO, /* pv_pageframe_info */
    CALL_TLB,    /* pv_vcpu_tlb_fill: the guest writes through a mapping */
    CALL_KINDS
};

struct call {
    enum call_kind kind;
    uint32_t count; /* requests in mmu / ext / extents */
    uint32_t done;
    struct mmu_update mmu[W_MAX_BATCH];
    struct mmuext_op ext[W_MAX_BATCH];
    unsigned long cmd; /* memory_op: XENMEM_* | start << MEMOP_EXTENT_SHIFT */
    uint64_t extents[W_MAX_BATCH];
    uint64_t in[W_MAX_BATCH]; /* the extents as issued (decrease: mfns) */
    struct pv_reservation res;
    uint64_t va, val, flags; /* update_va_mapping */
    int rc;                  /* the final result */
    unsigned issues;         /* how many times it was (re-)issued */
};

struct world_dom {
    struct pv_domain pv;
    struct pv_vcpu vcpu[W_MAX_VCPUS];
    struct call call[W_MAX_VCPUS];
    /* model */
    mfn_t base[W_MAX_VCPUS];
    mfn_t user_base[W_MAX_VCPUS];
};

struct world {
    struct frames f;
    unsigned nr_doms, nr_vcpus;
    struct world_dom dom[W_MAX_DOMS];
    /* model, per mfn */
    uint8_t *pinned;    /* level pinned (1..4), 0 = not pinned */
    uint8_t *allocated; /* the allocation reference is held */
    domid_t *given_to;  /* the domain the model gave it to */
    uint64_t *m2p;      /* what the guest set with MMU_MACHPHYS_UPDATE */
    /* scratch for the model */
    uint64_t *gen, *typ;
    uint8_t *level, *seen;
    /* statistics and failures */
    uint64_t steps, restarts, model_checks, audits;
    uint64_t audit_tables; /* page tables the audits walked */
    uint64_t teardowns;
    uint64_t partial_seen; /* resting partial frames the model met */
    uint64_t ok_by_kind[CALL_KINDS], err_by_kind[CALL_KINDS];
    uint64_t failures;
    uint64_t last_checks; /* preemption checks of the last step (if armed) */
    char first_failure[512];
    bool model_off; /* skip the model (a rule switch makes it meaningless) */
};

/* Domains get ids 1..nr_doms, each nr_vcpus vCPUs and a budget. */
int world_init(struct world *w, uint64_t pool_frames, unsigned nr_doms,
               unsigned nr_vcpus, uint64_t budget);
/*
 * Relinquish every domain (which must leave no frame behind), check, free.
 * Returns the failures counted over the world's life.
 */
uint64_t world_fini(struct world *w);

static inline struct pv_domain *world_pv(struct world *w, unsigned d)
{
    return &w->dom[d].pv;
}

/* Call builders (leave the vCPU's call ready to be issued). */
struct call *world_call(struct world *w, unsigned d, unsigned v);
void call_mmu(struct call *c, mfn_t table, unsigned idx, unsigned cmd,
              uint64_t val);
void call_ext(struct call *c, unsigned cmd, mfn_t mfn);
void call_mem(struct call *c, unsigned cmd, uint32_t order, uint64_t extent);

/*
 * Issue vCPU (d, v)'s call once with the preemption hook set to preempt at
 * every n-th check (0: never; UINT64_MAX: never, but count the checks in
 * last_checks).  Returns the call's rc: -ERESTART while it is
 * still pending.  Updates the model from what the call reports done.
 */
int world_step(struct world *w, unsigned d, unsigned v, uint64_t preempt_n);
/*
 * Stop domain d's vCPUs (their preempted calls are abandoned), tear it down
 * with pv_domain_relinquish() (preempted at every n-th check; audited
 * between re-issues), check that it leaves no frame behind, and start a
 * new domain with the same id.  Returns the new failures.
 */
unsigned world_teardown(struct world *w, unsigned d, uint64_t preempt_n);
/* Issue the call until it completes, without preemption. */
int world_run(struct world *w, unsigned d, unsigned v);
bool world_pending(struct world *w, unsigned d, unsigned v);

/* Checks; return the number of new failures (0 = all good). */
unsigned world_check_dom(struct world *w, unsigned d);
unsigned world_check(struct world *w);
bool world_quiescent(struct world *w, unsigned d);
/* The model alone (domain must be quiescent). */
unsigned world_model_check(struct world *w, unsigned d);
void world_fail(struct world *w, const char *fmt, ...) __printf(2, 3);

/* Frames the domain owns, in mfn order; returns how many. */
unsigned world_owned(struct world *w, unsigned d, mfn_t *out, unsigned max);

#endif
