/*
 * memfix.h - the test fixture shared by the memslot and dirty tests: a real
 * VM (kvm_util) whose test memory comes from a frame pool through a p2m,
 * a dirty log and memory slots, with the vCPU's MMIO and ring-full exits
 * wired to memslot_handle_mmio() and dirty_sync(), and the slot updates'
 * pause wired to the vCPU runner.
 */
#ifndef MEMVISOR_TESTS_MEMFIX_H
#define MEMVISOR_TESTS_MEMFIX_H

#include "dirty/dirty.h"
#include "frame/frame.h"
#include "kvm_util.h"
#include "memslot/memslot.h"
#include "p2m/p2m.h"

#define MEMFIX_DOM 1
#define MEMFIX_GFN0 (KVMTEST_TEST_GPA >> PAGE_SHIFT)

struct memfix {
    struct kvmtest_vm *vm;
    struct frames frames;
    struct p2m p2m;
    struct dirty_log dirty;
    struct memslots ms;
    struct kvmtest_runner runner;
    bool running;
    uint64_t nr_gfns;
    uint64_t mmio_unbacked; /* stores to gfns without RAM (dropped) */
    mfn_t first_mfn;        /* the pool frames the fixture allocated */
    uint64_t nr_frames;
};

/* nr_frames pool frames allocated to the domain (contiguous from
 * first_mfn); p2m/dirty cover gfns [0, MEMFIX_GFN0 + extra_gfns). */
int memfix_init(struct memfix *f, enum kvmtest_guest_fn fn,
                const struct kvm_vm_config *cfg, const struct kvm_ops *ops,
                uint64_t nr_frames, uint64_t extra_gfns);
void memfix_fini(struct memfix *f);
int memfix_start(struct memfix *f);
int memfix_stop(struct memfix *f); /* join the vCPU thread */

/* Guest-virtual (== guest-physical) address of gfn. */
static inline uint64_t memfix_gva(uint64_t gfn)
{
    return gfn << PAGE_SHIFT;
}

/* Host pointer to the frame backing gfn now, or NULL. */
void *memfix_host(struct memfix *f, uint64_t gfn);

#endif
