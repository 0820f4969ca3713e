/*
 * memslot.h - what KVM sees of a domain's memory: memory slots derived from
 * the p2m and the pool mapping, changed only by transactions, and page
 * tracking on top of them.
 *
 * Owns: the domain's KVM memory slots (ids id_base .. id_base+max_slots-1),
 * the domain-wide log-dirty switch, and the page-tracking table (which
 * subscriber tracks which gfn).
 *
 * The slot view is a function of the p2m, the tracking table and the
 * log-dirty switch (memslot_derive in memslot.c): a maximal run of gfns
 * whose p2m entries are RAM with consecutive mfns and equal flags becomes
 * one slot at host address frames_ptr(mfn); flags are
 *     READONLY  iff the entry is P2M_RAM_RO or the gfn is tracked,
 *     LOG_DIRTY iff not READONLY and (log-dirty is on or P2M_LOGDIRTY).
 *
 * An update (memslot_sync, _populate, _remove, _populate_ranges,
 * _remove_ranges, _set_type, _move, _set_log_dirty, _track, _untrack)
 * computes the new view of a window,
 * diffs it against the old one (keep / flags-only / delete / create: KVM
 * cannot resize, move or toggle READONLY in place) and runs the state
 * machine documented in docs/memory.md:
 *
 *   PREPARE -> QUIESCE -> FLUSH -> APPLY -> COMMIT -> ANNOUNCE
 *      |           |         |        \-> ROLLBACK -> (aborted)
 *      \-----------+---------+-> (aborted)
 *
 * Everything that can fail (allocations, slot ids, KVM_GET_DIRTY_LOG of
 * slots about to change, every KVM_SET_USER_MEMORY_REGION) happens before
 * COMMIT; a failure in APPLY reapplies the old slots in reverse.
 *
 * Invariants:
 *  M1. Slots are sorted by base gfn, do not overlap, and each maps only
 *      gfns whose p2m entry is RAM, with mfn = slot mfn + offset.
 *  M2. Canonical: each slot's flags are the derived flags of its gfns, and
 *      no two adjacent slots could be merged (touching, consecutive mfns,
 *      equal flags).
 *  M3. KVM's slots are exactly these (same id, gpa, size, host address,
 *      flags) whenever no update is in progress.
 *  M4. Every tracked gfn is RAM in the p2m and lies in a READONLY slot, so
 *      every guest store to it exits to memslot_handle_mmio().
 *  M5. The dirty module's published slots are exactly the LOG_DIRTY slots.
 *  M6. Atomicity: if an update returns an error, the slots, KVM's slots
 *      (M3), the tracking table, the p2m, and the domain's pending dirty
 *      set are as before it, and no subscriber heard anything.
 *  M7. A subscriber hears removed() for a gfn only after the removal is
 *      committed and the p2m entry is gone; a slot deleted and recreated
 *      (split, merge, flag change) is never reported as a removal.
 *
 * Moving tracked memory is refused (-EBUSY): a subscriber shadowing a
 * guest structure cannot follow it to a new address, so the caller must
 * untrack first (as KVM refuses MOVE with external page-track users).
 *
 * A domain whose rollback itself failed (KVM refused to restore a slot it
 * had accepted a moment before) is marked broken: every later update
 * returns -EIO, and the caller is expected to crash the domain.
 *
 * Locking, in acquisition order:
 *   ms.lock (mutex) - serialises updates; held for a whole update;
 *   vCPU pause      - the pause hook, taken (when an update deletes a
 *                     slot or stops a slot's logging) before any lock
 *                     below;
 *   ms.view (rwlock)- the slot array, the tracking table and the p2m
 *                     entries an update removes or retypes; written from
 *                     APPLY to the end of COMMIT's p2m step, read by
 *                     memslot_handle_mmio()
 *                     on vCPU threads (so a store to a page being tracked
 *                     waits for the commit and is then reported);
 *   dirty.lock, p2m.lock (see their headers).
 * Subscriber callbacks run without ms.lock and ms.view (removed()) or with
 * ms.view read-held (write()); they must not call memslot functions.
 *
 * Errors: -ENOSPC (no free slot id: the domain has max_slots slots),
 * -ENOMEM, -EFAULT (range outside the p2m), -ENOENT (not RAM / not
 * tracked), -EEXIST (populate/move target not empty, already tracked),
 * -EBUSY (moving tracked memory), -EINVAL, -EIO (domain broken), -errno
 * from KVM.
 */
#ifndef MEMVISOR_MEMSLOT_MEMSLOT_H
#define MEMVISOR_MEMSLOT_MEMSLOT_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "dirty/dirty.h"
#include "frame/frame.h"
#include "kvm/kvm.h"
#include "lib/compiler.h"
#include "lib/types.h"
#include "p2m/p2m.h"

#define MEMSLOT_LOG KVM_SLOT_LOG_DIRTY
#define MEMSLOT_RO KVM_SLOT_READONLY

struct memslot {
    uint32_t id; /* KVM slot id */
    gfn_t base;
    uint64_t npages;
    mfn_t mfn;   /* frame of base; host address frames_ptr(mfn) */
    uint32_t flags;
};

/* A page-tracking subscriber (embedded in the subscriber's own object). */
struct memslot_tracker {
    /* A guest store of len bytes at gpa to a tracked gfn, before it lands.
     * 0: memvisor performs it; -EPERM: it is dropped. */
    int (*write)(struct memslot_tracker *t, gpa_t gpa, const void *bytes,
                 uint32_t len);
    /* [gfn, gfn + nr) left the guest (committed); tracking of it ended. */
    void (*removed)(struct memslot_tracker *t, gfn_t gfn, uint64_t nr);
};

struct memslot_track {
    gfn_t gfn;
    struct memslot_tracker *t;
};

/* vCPU pause, provided by the vCPU layer: pause() returns when no vCPU of
 * the domain is inside KVM_RUN; unpause() lets them go. */
struct memslot_pause {
    void (*pause)(void *opaque);
    void (*unpause)(void *opaque);
    void *opaque;
};

struct memslot_stats {
    uint64_t updates, aborted, rolled_back;
    uint64_t ioctls;          /* KVM_SET_USER_MEMORY_REGION issued */
    uint64_t flushes;         /* slot logs pulled before a change */
    uint64_t pauses;
    uint64_t tracked_writes, refused_writes, ram_writes;
};

struct memslots {
    struct kvm_vm *vm;
    struct frames *frames;
    struct p2m *p2m;
    struct dirty_log *dirty;
    uint32_t id_base, max_slots;

    pthread_mutex_t lock;
    pthread_rwlock_t view;
    struct memslot *slots; /* nr entries, sorted (M1) */
    uint32_t nr;
    uint64_t *id_used;     /* bit i: id id_base + i is in use */
    bool log_dirty;
    struct memslot_track *tracks; /* nr_tracks, sorted by (gfn, t) */
    uint32_t nr_tracks;
    bool broken;
    struct memslot_pause pause;
    struct memslot_stats stats;

    /* Test-only switches (each shows a test fails without its rule). */
    bool test_skip_flush;       /* no harvest before a slot changes */
    bool test_announce_early;   /* removals announced before APPLY */
    uint64_t test_fail_alloc;   /* fail the n-th allocation from now (1-based) */
    uint32_t test_slot_limit;   /* non-zero: ids beyond this many are "full" */
};

/* Slots with ids [id_base, id_base + max_slots); dirty may be NULL only if
 * log-dirty is never used (then the hypervisor write path is unavailable). */
int __must_check memslot_init(struct memslots *ms, struct kvm_vm *vm,
                              struct frames *frames, struct p2m *p2m,
                              struct dirty_log *dirty, uint32_t id_base,
                              uint32_t max_slots);
/* Deletes every slot from KVM. */
void memslot_fini(struct memslots *ms);
void memslot_set_pause(struct memslots *ms, const struct memslot_pause *p);

/* Re-derive [gfn, gfn + nr) from the p2m (after p2m_populate()). */
int __must_check memslot_sync(struct memslots *ms, gfn_t gfn, uint64_t nr);
/* p2m_populate(gfn + i, mfn + i, t) for i < nr, then present them; on any
 * failure nothing changed. */
int __must_check memslot_populate(struct memslots *ms, gfn_t gfn, mfn_t mfn,
                                  uint64_t nr, enum p2m_type t);
/* Take [gfn, gfn + nr) out of the guest: slots first, then the p2m entries
 * (their frames' references dropped), then subscribers of tracked gfns in
 * the range hear removed().  Invalid entries in the range are skipped. */
int __must_check memslot_remove(struct memslots *ms, gfn_t gfn, uint64_t nr);
/* A run of nr gfns from gfn backed by the frames from mfn
 * (memslot_remove_ranges ignores mfn). */
struct memslot_range {
    gfn_t gfn;
    mfn_t mfn;
    uint64_t nr;
};
/* Batches: many ranges (in any order, e.g. the extents of one reservation
 * hypercall) as ONE transaction whose window spans them all.  populate:
 * p2m_populate of every frame, then one update; on any failure no entry
 * and no slot changed.  remove: as memslot_remove() for every range at
 * once (overlapping ranges are merged).  -EINVAL for n == 0, -EFAULT for
 * an empty or out-of-range range. */
int __must_check memslot_populate_ranges(struct memslots *ms,
                                         const struct memslot_range *r,
                                         uint32_t n, enum p2m_type t);
int __must_check memslot_remove_ranges(struct memslots *ms,
                                       const struct memslot_range *r,
                                       uint32_t n);
/* Change the type of the RAM entries of [gfn, gfn + nr) among P2M_RAM,
 * P2M_RAM_RO and P2M_LOGDIRTY (read-only and per-range log toggles). */
int __must_check memslot_set_type(struct memslots *ms, gfn_t gfn, uint64_t nr,
                                  enum p2m_type t);
/* HVM: move the entries (RAM and MMIO) of [from, from + nr) to
 * [to, to + nr), which must be empty, keeping frames and contents; the
 * target gfns are marked dirty.  -EBUSY if a gfn in the range is tracked,
 * -EINVAL for a PV domain or overlapping ranges. */
int __must_check memslot_move(struct memslots *ms, gfn_t from, gfn_t to,
                              uint64_t nr);
/* Domain-wide log-dirty mode on or off (off flushes every log first). */
int __must_check memslot_set_log_dirty(struct memslots *ms, bool on);

/* Page tracking.  track: gfn must be RAM; a tracker tracks a gfn once. */
int __must_check memslot_track(struct memslots *ms, gfn_t gfn,
                               struct memslot_tracker *t);
int __must_check memslot_untrack(struct memslots *ms, gfn_t gfn,
                                 struct memslot_tracker *t);

/*
 * A KVM_EXIT_MMIO at gpa (from a vCPU thread).  RAM gfn: a store is shown
 * to the gfn's subscribers and, unless one refuses or the entry is
 * P2M_RAM_RO (ROM to the guest), written through the dirty accessor; a load
 * is served from the frame.  Returns 0 when handled
 * (including refused stores), -ENOENT when gpa is not RAM (real MMIO).
 */
int __must_check memslot_handle_mmio(struct memslots *ms, gpa_t gpa,
                                     uint8_t *data, uint32_t len,
                                     bool is_write);

/* Copy of the slots (for tests and the auditor); *out malloc'ed. */
int __must_check memslot_snapshot(struct memslots *ms, struct memslot **out,
                                  uint32_t *nr);
bool memslot_is_tracked(struct memslots *ms, gfn_t gfn);
/* How many slots the domain has now. */
uint32_t memslot_count(struct memslots *ms);

/* M1, M2, M4, M5 (M3 needs KVM's view: tests compare it): 0 or -EUCLEAN. */
int __must_check memslot_check(struct memslots *ms);

#endif
