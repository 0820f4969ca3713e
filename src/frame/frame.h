/*
 * frame.h - machine memory: the pool, the frame table, the allocator,
 * ownership, general reference counts, and type references with their
 * state machine.
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
 * Type word (struct frame.type_info), valid while the general count is
 * non-zero, one meaning per bit:
 *
 *   bits 63-61 FRAME_TYPE_MASK  the use the frame is committed to; exclusive:
 *                0 FRAME_TYPE_NONE      no use yet (fresh frame)
 *                1 FRAME_TYPE_L1        PV level-1 page table
 *                2 FRAME_TYPE_L2        PV level-2 page table
 *                3 FRAME_TYPE_L3        PV level-3 page table
 *                4 FRAME_TYPE_L4        PV level-4 (root) page table
 *                5, 6                   reserved (Xen's seg_desc, shared)
 *                7 FRAME_TYPE_WRITABLE  mapped writable somewhere
 *              The field is left as it was when the type count drops to 0
 *              (a "stale" type); it changes only at type count 0.
 *   bit 60     FRAME_TYPE_LOCKED    frame_lock(): an entry update of this
 *                                   validated page table is in progress
 *                                   (the locker also holds a type reference).
 *   bit 59     FRAME_TYPE_PINNED    the owner pinned the frame to its type:
 *                                   the pin holds one type and one general
 *                                   reference.  Pinned implies validated.
 *   bit 58     FRAME_TYPE_VALIDATED the contents were checked for the type;
 *                                   cleared on devalidation (page tables) and
 *                                   on every type change.
 *   bit 57     reserved, zero.
 *   bit 56     FRAME_TYPE_PARTIAL   (page tables) a preemptible validation
 *                                   or devalidation stopped part-way; the
 *                                   progress is in nr_validated and
 *                                   partial_flags.  The flag itself owns the
 *                                   type count (exactly 1) and one general
 *                                   reference; whoever clears it drops them.
 *   bit 55     reserved, zero.
 *   bits 54-0  type count       type references: page-table entries, pins,
 *                               base pointers, deferred puts, writable
 *                               mappings, transient holders.
 *
 * States of a page-table type T (docs/frame.md has the diagram):
 *   free-typed   count 0 (T may be stale, not validated)
 *   validating   T | count 1, neither VALIDATED nor PARTIAL: exactly one
 *                thread runs validation; others spin, or get -EINTR
 *   partial      T | PARTIAL | count 1: progress recorded, nobody running
 *   validated    T | VALIDATED | count >= 1
 *   devalidating T | count 1 (same bits as validating), reached from
 *                validated when the last reference goes
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
 *  F6. Every type reference is backed by a general reference of the same
 *      holder (the PARTIAL flag holds one of each), so general count >=
 *      type count and a frame with a non-zero type count is never free.
 *  F7. The type field changes only while the type count is 0.
 *  F8. Validation runs only on the 0->1 edge of the type count (or when
 *      resuming a PARTIAL frame), devalidation only on the 1->0 edge; at most
 *      one thread (de)validates a frame at a time.
 *  F9. The type_changed hook (safety actions: TLB flush, IOMMU, cache) runs
 *      strictly after the type reference that changed the type is committed
 *      (the XSA-401 ordering).
 *  F10. PARTIAL implies type count exactly 1; PINNED implies VALIDATED.
 *  F11. mfn 0 is never allocated (as in Xen, no domain owns it), so the
 *      ABI can use 0 for "none" (e.g. MMUEXT_NEW_USER_BASEPTR).
 *  F12. A frame's tlbflush_stamp is written (seq_cst, from tlb_clock) after
 *      its last writable reference is gone and before its type can change,
 *      and when it is freed, before the free_hook runs; the clock only
 *      grows.  Whoever flushes vCPUs for a type change or a free passes
 *      the stamp, so that vCPUs which flushed since are left alone (Xen's
 *      tlbflush_filter).
 *  F13. A type put names the type of the reference it drops; a put of any
 *      other type is refused with -EUCLEAN and changes nothing (it never
 *      spins on a lock or decrements another type's count).
 *
 * Locking: the allocator lock (frames.alloc_lock) protects the free bitmap,
 * the search cursor and every domain's tot_frames.  Count and type words
 * change only by compare-and-swap, so references take no lock until a count
 * reaches zero, when frame_put() takes the allocator lock to free the frame.
 * nr_validated and partial_flags belong to the thread that owns the
 * validating/devalidating state; the CAS that enters or leaves it orders them.
 *
 * Errors: -ENOMEM (pool, table or budget exhausted), -EINVAL (bad argument,
 * type conflict), -ESRCH (no such domain), -EEXIST (domain already
 * registered), -EBUSY (the domain still owns frames), -ENOENT (mfn out of
 * range or frame free), -EPERM (frame owned by another domain), -EOVERFLOW
 * (count would wrap), -EINTR (preemptible type operation interrupted,
 * nothing changed), -ERESTART (preemptible type operation made partial
 * progress, recorded in the frame), -EUCLEAN (a put found no reference to
 * drop: accounting corruption, reported instead of crashing).
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

#define FRAME_TYPE_SHIFT 61
#define FRAME_TYPE_MASK (7ULL << FRAME_TYPE_SHIFT)
#define FRAME_TYPE_NONE (0ULL << FRAME_TYPE_SHIFT)
#define FRAME_TYPE_L1 (1ULL << FRAME_TYPE_SHIFT)
#define FRAME_TYPE_L2 (2ULL << FRAME_TYPE_SHIFT)
#define FRAME_TYPE_L3 (3ULL << FRAME_TYPE_SHIFT)
#define FRAME_TYPE_L4 (4ULL << FRAME_TYPE_SHIFT)
#define FRAME_TYPE_WRITABLE (7ULL << FRAME_TYPE_SHIFT)
#define FRAME_TYPE_LOCKED (1ULL << 60)
#define FRAME_TYPE_PINNED (1ULL << 59)
#define FRAME_TYPE_VALIDATED (1ULL << 58)
#define FRAME_TYPE_PARTIAL (1ULL << 56)
#define FRAME_TYPE_COUNT_MASK ((1ULL << 55) - 1)
#define FRAME_TYPE_COUNT_MAX (FRAME_TYPE_COUNT_MASK - 1)

/* Level n (1..4) <-> page-table type. */
#define FRAME_TYPE_PT(n) ((uint64_t)(n) << FRAME_TYPE_SHIFT)
static inline unsigned frame_type_level(uint64_t type)
{
    uint64_t t = (type & FRAME_TYPE_MASK) >> FRAME_TYPE_SHIFT;
    return t >= 1 && t <= 4 ? (unsigned)t : 0;
}

/* partial_flags (struct frame): about the entry at index nr_validated. */
#define FRAME_PARTIAL_SET 0x1   /* it is partially (de)validated */
#define FRAME_PARTIAL_NOREF 0x2 /* test-only: it holds no general ref */

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
    int16_t linear_count; /* reserved: linear page tables are refused */
    /*
     * TLB-flush stamp (F12): frames.tlb_clock as it read when the frame
     * last stopped being writable (writable type count 1 -> 0) or was
     * freed.  A vCPU whose last flush began after it holds no translation
     * made for that use.
     */
    _Atomic uint64_t tlbflush_stamp;
};
BUILD_BUG_ON(sizeof(struct frame) > 32);

struct frame_domain {
    bool present;
    uint64_t max_frames;
    uint64_t tot_frames;
};

struct frames {
    int memfd;
    uint8_t *base; /* the pool mapping */
    uint64_t nr_frames;
    struct frame *table; /* nr_frames entries */

    pthread_mutex_t alloc_lock;
    uint64_t *free_map; /* bit set = frame free (F1) */
    uint64_t nr_free;
    uint64_t cursor; /* next-fit search start for order-0 allocations */
    struct frame_domain domains[FRAME_MAX_DOMAINS];
    /*
     * Called when a frame's last reference goes, before it is scrubbed and
     * can be allocated again (flush translations, IOMMU, mapcaches).  It
     * must not take references on the frame.  Set before use; optional.
     */
    void (*free_hook)(void *arg, mfn_t mfn, domid_t owner);
    void *free_hook_arg;
    /*
     * The TLB-flush clock (F12): advanced by every vCPU flush that starts
     * (vcpu.h), read into frame stamps.
     */
    _Atomic uint64_t tlb_clock;
};

/* Pool and table. nr_frames > 1 (frame 0 is reserved, F11). */
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

/*
 * Type references.
 *
 * The frame module runs the state machine; what validation and devalidation
 * mean is supplied by the caller's ops (the pv module for L1..L4), called
 * with ctx (the acting vCPU).  Writable and none need no ops.
 */
struct frame_type_ops {
    /*
     * Check the contents of mfn for type and take the references its
     * entries hold.  flags: FRAME_TF_PREEMPTIBLE, FRAME_TF_RESUME (the frame
     * was PARTIAL: continue from nr_validated/partial_flags).  Returns 0
     * (validated), -EINTR (nothing done, nothing held), -ERESTART (progress
     * recorded: the frame becomes PARTIAL), or another -errno (invalid);
     * after a hard error the frame keeps its progress only if
     * teardown_owns() says the caller queued its tear-down.
     */
    int (*validate)(void *ctx, mfn_t mfn, uint64_t type, unsigned flags);
    /* Drop the references the entries hold; same returns as validate. */
    int (*devalidate)(void *ctx, mfn_t mfn, uint64_t type, unsigned flags);
    /* Whether a failed validation's partial state is now owned by ctx. */
    bool (*teardown_owns)(void *ctx, mfn_t mfn);
    /*
     * Safety actions after a 0->1 type change from old_type to new_type
     * (flush stale writable translations, IOMMU, cache): called strictly
     * after the type reference is committed (F9).
     */
    void (*type_changed)(void *ctx, mfn_t mfn, uint64_t old_type,
                         uint64_t new_type);
};

/* flags of frame_get_type(), frame_put_type() and the ops */
#define FRAME_TF_PREEMPTIBLE 0x01 /* may return -EINTR / -ERESTART */
#define FRAME_TF_PARTIAL_SET 0x02 /* put: clean up a PARTIAL frame only */
#define FRAME_TF_RESUME 0x04      /* ops: resuming a PARTIAL frame */
/* Test-only switches that disable a rule, to show its test catches it. */
#define FRAME_TF_TEST_SAFETY_FIRST 0x100 /* type_changed before the commit */
#define FRAME_TF_TEST_LEGACY_PUT 0x200   /* a put acts in every state */

/*
 * Take a type reference of type (FRAME_TYPE_*) on mfn.  The caller holds a
 * general reference (F6).  0 -> 1 with a different stored type changes the
 * type (F7); 0 -> 1 of a page-table type validates (F8).  Non-preemptible
 * callers spin while another thread validates; preemptible ones get -EINTR.
 * Errors: -EINVAL (type conflict, failed validation), -EOVERFLOW, -EINTR,
 * -ERESTART (validation partial: the frame holds the progress, and the
 * caller's reference is not taken).
 */
int __must_check frame_get_type(struct frames *f, mfn_t mfn, uint64_t type,
                                unsigned flags,
                                const struct frame_type_ops *ops, void *ctx);
/*
 * Drop a type reference of type `type` (FRAME_TYPE_*: what the caller's
 * reference is for; F13).  The 1 -> 0 edge of a validated (or, with
 * FRAME_TF_PARTIAL_SET, a PARTIAL) page table devalidates.  With
 * FRAME_TF_PARTIAL_SET the caller only owns the clean-up of a PARTIAL frame:
 * if the frame is no longer PARTIAL (someone else finished it), nothing
 * happens and 0 is returned.  Errors: -EINTR (nothing done, the reference is
 * still held), -ERESTART (devalidation partial: the frame is PARTIAL and owns
 * the reference), -EUCLEAN (no such reference: the count, state or type
 * says the caller holds none; nothing changed).
 */
int __must_check frame_put_type(struct frames *f, mfn_t mfn, uint64_t type,
                                unsigned flags,
                                const struct frame_type_ops *ops, void *ctx);
/* frame_get() + frame_get_type(); the general reference is dropped on error. */
int __must_check frame_get_and_type(struct frames *f, mfn_t mfn, domid_t d,
                                    uint64_t type, unsigned flags,
                                    const struct frame_type_ops *ops,
                                    void *ctx);
/* frame_put_type() then, on 0, frame_put(). */
int __must_check frame_put_and_type(struct frames *f, mfn_t mfn, uint64_t type,
                                    unsigned flags,
                                    const struct frame_type_ops *ops,
                                    void *ctx);
/*
 * Serialise entry updates of a validated page table: sets FRAME_TYPE_LOCKED
 * and takes a type reference.  -EINVAL if the frame is not a validated page
 * table (or writable/none); spins while another thread holds the lock.
 */
int __must_check frame_lock(struct frames *f, mfn_t mfn);
void frame_unlock(struct frames *f, mfn_t mfn);
/* Pin bit: test-and-set / test-and-clear; return the previous value. */
bool frame_test_and_set_pinned(struct frames *f, mfn_t mfn);
bool frame_test_and_clear_pinned(struct frames *f, mfn_t mfn);
uint64_t frame_type_word(struct frames *f, mfn_t mfn);
/* The frame's TLB-flush stamp (F12), and the clock's current value. */
uint64_t frame_tlbflush_stamp(struct frames *f, mfn_t mfn);
uint64_t frames_tlb_now(struct frames *f);

/* Check F1, F2 (owner of free frames), F4, F6, F10, F11; 0 or -EUCLEAN. */
int __must_check frames_check(struct frames *f);

#endif
