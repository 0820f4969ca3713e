/*
 * p2m.h - a domain's guest-physical to machine map: gfn -> (mfn, type).
 *
 * Owns: one dense table of nr_gfns packed entries per domain, the general
 * references its RAM entries hold, and the domain's mapcache-invalidate
 * flag.
 *
 * Entry word, one meaning per field:
 *
 *   bits 63-4  mfn    the machine frame (MMIO: a host-physical frame number
 *                     that is not a pool frame)
 *   bits 3-0   type   enum p2m_type; 0 (P2M_INVALID) means no entry, and
 *                     then the whole word is 0
 *
 * Types: P2M_RAM (guest RAM, writable), P2M_RAM_RO (RAM the guest may only
 * read), P2M_LOGDIRTY (RAM whose writes are logged even while the domain is
 * not in log-dirty mode), P2M_MMIO (device memory, no pool frame),
 * P2M_INVALID (nothing).  The first three are the "RAM types".
 *
 * Kinds: an HVM domain maps any gfn to any frame it owns; a PV domain's
 * guest-physical space is its machine space, so a RAM entry must have
 * gfn == mfn.
 *
 * Invariants:
 *  P1. An entry of a RAM type holds exactly one general reference on its
 *      mfn, taken with frame_get(..., domid): the frame is owned by the
 *      domain and cannot be freed while mapped.  No other entry holds one.
 *  P2. PV: every RAM entry has gfn == mfn.
 *  P3. nr_ram equals the number of entries of a RAM type.
 *  P4. An invalid entry is the all-zero word.
 *  P5. Once p2m_remove() or p2m_replace() took away a RAM entry's mfn (or
 *      made a RAM entry non-RAM), mapcache_invalidate is set until
 *      p2m_mapcache_test_and_clear() or p2m_mapcache_take() reads it.
 *  P6. While hold_removed is on (the domain has device models), the
 *      reference such an entry held is not dropped but moved to the held
 *      list, in the same critical section that sets the flag: the frame
 *      cannot be freed and reused until p2m_mapcache_take()'s caller, having
 *      had every device model acknowledge an invalidation issued after the
 *      take, drops it with p2m_put_held() (or p2m_fini() does).  (The memfd
 *      mappings of a device model hold no reference of their own.)
 *
 * Locking: p2m.lock (a mutex) protects the table and nr_ram; every function
 * takes it; the lookups return a consistent snapshot.  It nests inside
 * the memslot lock and takes no other lock except the frame allocator's
 * (inside frame_put()).  mapcache_invalidate is atomic.
 *
 * Errors: -EINVAL (bad type, PV gfn != mfn, MMIO mfn in the pool's range
 * on populate is allowed), -EFAULT (gfn range outside [0, nr_gfns)),
 * -EEXIST (populate over a valid entry), -ENOENT (no entry; or the frame is
 * free), -EPERM (frame owned by another domain), -EOVERFLOW (frame count
 * would wrap), -ENOMEM.
 */
#ifndef MEMVISOR_P2M_P2M_H
#define MEMVISOR_P2M_P2M_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "frame/frame.h"
#include "lib/compiler.h"
#include "lib/types.h"

enum p2m_type {
    P2M_INVALID = 0,
    P2M_RAM = 1,
    P2M_RAM_RO = 2,
    P2M_LOGDIRTY = 3,
    P2M_MMIO = 4,
    P2M_NR_TYPES
};

enum p2m_kind { P2M_HVM, P2M_PV };

struct p2m_entry {
    mfn_t mfn;
    enum p2m_type type;
};

struct p2m {
    struct frames *frames;
    domid_t domid;
    enum p2m_kind kind;
    uint64_t nr_gfns;
    pthread_mutex_t lock;
    uint64_t *table; /* nr_gfns entry words */
    uint64_t nr_ram; /* P3 */
    atomic_bool mapcache_invalidate;
    bool hold_removed; /* P6 */
    mfn_t *held;       /* P6: references of removed entries, not yet put */
    uint64_t nr_held, cap_held;
};

static inline bool p2m_is_ram(enum p2m_type t)
{
    return t == P2M_RAM || t == P2M_RAM_RO || t == P2M_LOGDIRTY;
}

int __must_check p2m_init(struct p2m *p, struct frames *frames, domid_t domid,
                          enum p2m_kind kind, uint64_t nr_gfns);
/* Drops every RAM entry's reference. */
void p2m_fini(struct p2m *p);

/* Map gfn (now invalid) to mfn with type t (not P2M_INVALID). */
int __must_check p2m_populate(struct p2m *p, gfn_t gfn, mfn_t mfn,
                              enum p2m_type t);
/* Invalidate gfn; *old (may be NULL) receives the entry removed. */
int __must_check p2m_remove(struct p2m *p, gfn_t gfn, struct p2m_entry *old);
/* Replace a valid entry: the new reference is taken before the old one
 * goes, so a failure changes nothing. */
int __must_check p2m_replace(struct p2m *p, gfn_t gfn, mfn_t mfn,
                             enum p2m_type t, struct p2m_entry *old);

/* Change a RAM entry's type to another RAM type, keeping its frame and
 * reference (no mapcache invalidation: the frame stays).  -ENOENT if the
 * entry is not RAM, -EINVAL if t is not a RAM type. */
int __must_check p2m_set_type(struct p2m *p, gfn_t gfn, enum p2m_type t);

/* Entry of gfn; an invalid entry is returned as (INVALID_MFN, P2M_INVALID)
 * with 0.  -EFAULT outside the table. */
int __must_check p2m_lookup(struct p2m *p, gfn_t gfn, struct p2m_entry *e);
/* nr entries from gfn, one consistent snapshot. */
int __must_check p2m_lookup_range(struct p2m *p, gfn_t gfn, uint64_t nr,
                                  struct p2m_entry *out);

/* P5: read and clear the mapcache-invalidate flag. */
bool p2m_mapcache_test_and_clear(struct p2m *p);
/* P6: hold the references of removed RAM entries from now on (or not). */
void p2m_hold_removed(struct p2m *p, bool on);
/* P5 + P6 at once: read and clear the flag and take the held list
 * (*held malloc'ed, *nr entries; NULL/0 if empty). */
bool p2m_mapcache_take(struct p2m *p, mfn_t **held, uint64_t *nr);
/* Drop the references of a list from p2m_mapcache_take() and free it. */
void p2m_put_held(struct p2m *p, mfn_t *held, uint64_t nr);

/* P1-P4 (P1 as: frame owned by domid with a non-zero count): 0 or -EUCLEAN. */
int __must_check p2m_check(struct p2m *p);

#endif
