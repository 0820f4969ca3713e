/*
 * dirty.h - the dirty log: one authoritative record per domain, by gfn, of
 * the frames written since they were last harvested, from every writer.
 *
 * Owns: the domain log (one bit per gfn), the table of KVM memory slots
 * that log dirty pages (as the memslot module publishes them) with one GET
 * buffer per slot in the bitmap modes, and the harvest of KVM's logs.
 *
 * Sources and how they reach the log:
 *  - KVM bitmap with manual protect (KVM_DIRTY_BITMAP_MANUAL): dirty_sync()
 *    copies each slot's bitmap (KVM_GET_DIRTY_LOG, which does not clear or
 *    re-protect) and ORs it into the log.  dirty_harvest() takes the log
 *    in batches of up to 512 chunks of 64 pages (128 MiB), re-protects
 *    exactly the bits it took (KVM_CLEAR_DIRTY_LOG, 64-page aligned, one
 *    call per slot per batch: each call flushes TLBs), then hands the
 *    batch's chunks to the consumer: a page is always re-protected before
 *    its consumer reads it.
 *  - KVM bitmap without manual protect (KVM_DIRTY_BITMAP): GET clears and
 *    re-protects as it reads; harvest has nothing to clear.
 *  - Dirty ring (KVM_DIRTY_RING): dirty_sync() collects every vCPU's ring
 *    into the log and resets the rings (KVM_RESET_DIRTY_RINGS) before it
 *    returns, i.e. before any consumer reads the pages.  A vCPU stopped by
 *    a ring-full exit calls dirty_sync() and re-enters.
 *  - The hypervisor: every write memvisor makes to guest memory goes
 *    through dirty_copy_to_guest(), which writes and then marks the log.
 *
 * The "pending set" of a domain is the set of gfns whose bit is set in the
 * log or in a published slot's KVM log (or ring).  Harvesting moves gfns
 * from the pending set to a consumer; nothing else removes one.
 *
 * Invariants:
 *  D1. No lost write: a gfn written (by a vCPU through a logged slot or by
 *      dirty_copy_to_guest()) after it was last handed to a consumer is in
 *      the pending set until it is handed out again.
 *  D2. A harvest is a transaction: the bits of a chunk whose consumer (or
 *      whose KVM clear) fails are put back into the log, so the pending set
 *      is as before minus what earlier consumers accepted.
 *  D3. Published slots do not overlap, lie within [0, nr_gfns), and are
 *      indexed both by KVM slot id and by base gfn (sorted); in the bitmap
 *      modes each has a GET buffer of ALIGN_UP(npages, 64) bits.
 *  D4. The log has no bit set at or beyond nr_gfns.
 *  D5. Memory: the log costs 1 bit per gfn, the GET buffers at most 1 bit
 *      per logged page: at most 2 bits per guest page beyond KVM's own.
 *
 * Slot changes (the memslot module's side of the contract): a slot's KVM
 * log is pulled into the domain log (dirty_slot_flush_locked()) before that
 * slot is deleted, moved or stops logging, with the vCPUs paused, so no bit
 * is lost across split, merge, move, delete or log-off.  New slots are
 * published in the same critical section as the KVM ioctl that created
 * them, so no ring entry names a slot the log does not know.
 *
 * Locking: dirty.lock (mutex) protects the slot table, the GET buffers and
 * serialises every KVM dirty-log ioctl and ring harvest.  It nests inside
 * the memslot lock and the vCPU pause; dirty_sync() takes no other lock, so
 * a vCPU thread may call it on a ring-full exit.  Log bits are set and
 * taken with atomic operations, so dirty_mark()/dirty_copy_to_guest() take
 * no lock and may run on any thread.  Functions ending in _locked need the
 * lock (dirty_lock()/dirty_unlock(); dirty_assert_locked() checks).
 *
 * Errors: -EFAULT (range outside the guest, or not RAM in the p2m), -ENOMEM,
 * -ENOSPC (slot id outside the table), -EEXIST (slot id published twice or
 * overlapping), -EIO (KVM reset fewer ring entries than were harvested),
 * -errno from KVM, or the consumer's own error.
 */
#ifndef MEMVISOR_DIRTY_DIRTY_H
#define MEMVISOR_DIRTY_DIRTY_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "kvm/kvm.h"
#include "lib/compiler.h"
#include "lib/types.h"
#include "p2m/p2m.h"

#define DIRTY_MAX_VCPUS 64

struct dirty_slot {
    uint32_t id;
    gfn_t base;
    uint64_t npages;
    uint64_t *getbuf; /* bitmap modes: KVM_GET_DIRTY_LOG target */
};

struct dirty_stats {
    uint64_t syncs;          /* dirty_sync() calls */
    uint64_t get_calls;      /* KVM_GET_DIRTY_LOG */
    uint64_t clear_calls;    /* KVM_CLEAR_DIRTY_LOG */
    uint64_t ring_entries;   /* ring entries collected */
    uint64_t ring_stale;     /* entries naming no published slot */
    uint64_t handed_out;     /* pages handed to consumers */
    uint64_t put_back;       /* pages put back after a failed consumer */
    uint64_t marks;          /* pages marked by the hypervisor */
};

struct dirty_log {
    struct kvm_vm *vm;
    struct p2m *p2m;
    enum kvm_dirty_mode mode;
    uint64_t nr_gfns;
    uint64_t *log; /* 1 bit per gfn */

    pthread_mutex_t lock;
    pthread_t owner; /* holder of lock, for dirty_assert_locked() */
    bool locked;
    uint32_t max_slots;
    struct dirty_slot **by_id;  /* max_slots entries */
    struct dirty_slot **sorted; /* nr_slots entries by base gfn */
    uint32_t nr_slots;
    struct kvm_vcpu *vcpus[DIRTY_MAX_VCPUS];
    uint32_t nr_vcpus;
    struct dirty_stats stats;

    /* Test-only switch: skip KVM_CLEAR_DIRTY_LOG in dirty_harvest(), to show
     * that the tests catch the pages lost without it. */
    bool test_skip_clear;
};

/* A log for gfns [0, nr_gfns) of the VM (mode from vm->dirty_mode); slot
 * ids below max_slots. */
int __must_check dirty_init(struct dirty_log *d, struct kvm_vm *vm,
                            struct p2m *p2m, uint64_t nr_gfns,
                            uint32_t max_slots);
void dirty_fini(struct dirty_log *d);
/* Ring mode: collect this vCPU's ring too. */
int __must_check dirty_add_vcpu(struct dirty_log *d, struct kvm_vcpu *vcpu);

void dirty_lock(struct dirty_log *d);
void dirty_unlock(struct dirty_log *d);
void dirty_assert_locked(struct dirty_log *d);

/* Slot table.  prepare allocates (fallible, invisible); publish makes a
 * prepared slot known (cannot fail); discard frees an unpublished one;
 * unpublish forgets a published slot and returns it for discarding. */
int __must_check dirty_slot_prepare(struct dirty_log *d, uint32_t id,
                                    gfn_t base, uint64_t npages,
                                    struct dirty_slot **out);
void dirty_slot_discard(struct dirty_slot *s);
void dirty_slot_publish_locked(struct dirty_log *d, struct dirty_slot *s);
struct dirty_slot *dirty_slot_unpublish_locked(struct dirty_log *d,
                                               uint32_t id);
/* Pull one published slot's KVM log into the log (ring mode: all rings). */
int __must_check dirty_slot_flush_locked(struct dirty_log *d, uint32_t id);

/* Pull every KVM log into the domain log. */
int __must_check dirty_sync(struct dirty_log *d);
int __must_check dirty_sync_locked(struct dirty_log *d);

/*
 * Hand out the logged gfns of [gfn, gfn + nr), 64-gfn-aligned chunk by
 * chunk: take a batch of chunks' bits, re-protect them in KVM (manual
 * mode), then call fn(chunk_base, bits, opaque) per chunk, where bit i is
 * chunk_base + i.  If the clear or fn fails, the bits of that chunk and of
 * the batch's later chunks go back (D2) and the error returns; chunks
 * handed out before stay handed out.  Does not sync first.
 */
typedef int (*dirty_consumer_fn)(gfn_t chunk_base, uint64_t bits,
                                 void *opaque);
int __must_check dirty_harvest(struct dirty_log *d, gfn_t gfn, uint64_t nr,
                               dirty_consumer_fn fn, void *opaque);

/* Mark [gfn, gfn + nr) dirty (a write the hypervisor made by other means). */
int __must_check dirty_mark(struct dirty_log *d, gfn_t gfn, uint64_t nr);
/* THE accessor for hypervisor writes to guest memory: copy len bytes to
 * guest-physical gpa (RAM in the p2m), then mark the pages dirty. */
int __must_check dirty_copy_to_guest(struct dirty_log *d, gpa_t gpa,
                                     const void *src, uint64_t len);
/* Read guest memory (no marking). */
int __must_check dirty_copy_from_guest(struct dirty_log *d, void *dst,
                                       gpa_t gpa, uint64_t len);

/* Is gfn's bit set in the domain log (not KVM's)?  For tests and audits. */
bool dirty_test(struct dirty_log *d, gfn_t gfn);
/* Bytes of dirty-log memory memvisor holds for this domain (D5). */
uint64_t dirty_memory_bytes(struct dirty_log *d);

/* D3, D4: 0 or -EUCLEAN. */
int __must_check dirty_check(struct dirty_log *d);

#endif
