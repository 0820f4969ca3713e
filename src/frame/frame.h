/*
 * frame.h - machine memory: the pool, the frame table, the allocator,
 * ownership and general reference counts.
 *
 * The pool is one memfd of nr_frames 4 KiB frames, mapped once into the
 * hypervisor process (frames_ptr()).  Device models and KVM memory slots see
 * the same memory through the same memfd.  One struct frame per mfn.
 *
 * Count word (struct frame.count_info), one meaning per bit:
 *
 *   bit 63     FRAME_ALLOCATED  the allocation reference: while set, the owner
 *                               holds one general reference.  Set by
 *                               frames_alloc(), cleared exactly once by
 *                               frame_put_alloc_ref() (balloon out, teardown).
 *   bit 62     FRAME_BROKEN     never handed out again, reported as broken.
 *   bits 61-48 reserved, zero.
 *   bits 47-0  general count    references that keep the frame allocated.
 *
 * Invariants:
 *  F1. A frame is free (in the allocator's free bitmap) iff its general count
 *      is 0 and its owner is DOMID_NONE.
 *  F2. The owner of a frame changes only while it is free: frames_alloc() sets
 *      it, the final frame_put() clears it.  A successful frame_get() therefore
 *      sees a stable owner.
 *  F3. A frame is scrubbed (zero-filled) before it can be allocated again.
 *  F4. A domain owns at most its budget (max_frames) of frames; tot_frames
 *      counts the frames it owns, including ones only kept by references.
 *  F5. The general count never wraps: frame_get() refuses at FRAME_COUNT_MAX.
 *
 * Locking: the allocator lock (frames.alloc_lock) protects the free bitmap,
 * the search cursor and every domain's tot_frames.  Count words change only
 * by compare-and-swap, so frame_get()/frame_put() take no lock until a count
 * reaches zero, when frame_put() takes the allocator lock to free the frame.
 *
 * Errors: -ENOMEM (pool, table or budget exhausted), -EINVAL (bad argument),
 * -ESRCH (no such domain), -EEXIST (domain already registered), -EBUSY (the
 * domain still owns frames), -ENOENT (mfn out of range or frame free),
 * -EPERM (frame owned by another domain), -EOVERFLOW (count would wrap).
 */
#ifndef MEMVISOR_FRAME_FRAME_H
#define MEMVISOR_FRAME_FRAME_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "lib/compiler.h"
#include "lib/types.h"

#define FRAME_ALLOCATED (1ULL << 63)
#define FRAME_BROKEN (1ULL << 62)
#define FRAME_COUNT_MASK ((1ULL << 48) - 1)
#define FRAME_COUNT_MAX (FRAME_COUNT_MASK - 1)

#define FRAME_MAX_DOMAINS 64
#define FRAME_MAX_ORDER 18 /* 1 GiB */

struct frame {
    _Atomic uint64_t count_info; /* see the count word table above */
    _Atomic uint64_t type_info;  /* see the type word table (below) */
    _Atomic uint16_t owner;      /* DOMID_NONE while free */
    /*
     * PV page-table progress, valid while the type word says the frame is
     * a page table that is validated, partial or being (de)validated:
     * entries [0, nr_validated) hold their references; partial_flags says
     * whether entry nr_validated holds a general reference (XSA-299 rule).
     */
    uint16_t nr_validated;
    uint8_t partial_flags;
    uint8_t pad;
    int16_t linear_count;
    uint64_t aux; /* type-machine private: TLB stamp or validator id */
};

struct frame_domain {
    bool present;
    uint64_t max_frames;
    uint64_t tot_frames;
};

struct frames {
    int memfd;
    uint8_t *base;       /* the pool mapping */
    uint64_t nr_frames;
    struct frame *table; /* nr_frames entries */

    pthread_mutex_t alloc_lock;
    uint64_t *free_map; /* bit set = frame free (F1) */
    uint64_t nr_free;
    uint64_t cursor;    /* next-fit search start for order-0 allocations */
    struct frame_domain domains[FRAME_MAX_DOMAINS];
};

/* Pool and table. nr_frames > 0. */
int __must_check frames_init(struct frames *f, uint64_t nr_frames);
void frames_fini(struct frames *f);

static inline bool frames_mfn_valid(const struct frames *f, mfn_t mfn)
{
    return mfn_x(mfn) < f->nr_frames;
}

static inline struct frame *frames_get_frame(struct frames *f, mfn_t mfn)
{
    return &f->table[mfn_x(mfn)];
}

/* The host address of a valid mfn's 4 KiB in the pool mapping. */
static inline void *frames_ptr(const struct frames *f, mfn_t mfn)
{
    return f->base + (mfn_x(mfn) << PAGE_SHIFT);
}

static inline uint64_t frames_offset(mfn_t mfn)
{
    return mfn_x(mfn) << PAGE_SHIFT;
}

/* Domains: ownership budgets.  domid < FRAME_MAX_DOMAINS. */
int __must_check frames_domain_add(struct frames *f, domid_t d,
                                   uint64_t max_frames);
/* -EBUSY while the domain still owns frames. */
int __must_check frames_domain_remove(struct frames *f, domid_t d);
uint64_t frames_domain_tot(struct frames *f, domid_t d);

/*
 * Allocate 2^order contiguous, naturally aligned frames to domain d, each
 * with FRAME_ALLOCATED and general count 1 (the allocation reference).
 * Order-0 allocations prefer the frame after the last one handed out, so
 * that consecutive allocations form contiguous runs.
 */
int __must_check frames_alloc(struct frames *f, domid_t d, unsigned order,
                              mfn_t *out);

/* General references. */
domid_t frame_owner(struct frames *f, mfn_t mfn);
/* Take a reference if mfn is allocated and owned by d. */
int __must_check frame_get(struct frames *f, mfn_t mfn, domid_t d);
/* Take a reference on a frame the caller knows has count > 0. */
void frame_get_light(struct frames *f, mfn_t mfn);
/* Drop a reference; the last one scrubs and frees the frame. */
void frame_put(struct frames *f, mfn_t mfn);
/*
 * Clear FRAME_ALLOCATED and drop the allocation reference.  -EINVAL if it
 * was already clear.  The frame stays until its last reference goes.
 */
int __must_check frame_put_alloc_ref(struct frames *f, mfn_t mfn);
uint64_t frame_count(struct frames *f, mfn_t mfn);

/* Check F1, F2 (owner of free frames), F4; 0 or -EUCLEAN. */
int __must_check frames_check(struct frames *f);

#endif
