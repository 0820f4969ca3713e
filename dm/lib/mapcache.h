/*
 * mapcache.h - a device model's cache of mappings of guest memory.
 *
 * Owns: the device model's copy of the domain's gfn -> mfn map (as
 * memvisor announced it in MAP messages), and mappings of the pool memfd:
 * one entry per bucket of MAPCACHE_BUCKET_PAGES consecutive gfns, each
 * page of it mapped MAP_SHARED|MAP_FIXED at its frame's offset (or left
 * PROT_NONE when the gfn has no frame).
 *
 * An entry is:
 *   cached  - in the hash, findable; on the LRU list when its lock count
 *             is 0 (then it may be evicted);
 *   stale   - out of the hash (never handed out again), still mapped
 *             because someone holds it (lock > 0); unmapped at the last
 *             release.
 *
 * Invariants (mapcache_check()):
 *  C1. Every cached entry's valid pages map exactly the frames the map
 *      gives their gfns now; a map change touching a bucket drops (lock 0)
 *      or stales (lock > 0) its entry at once.
 *  C2. After mapcache_invalidate(gen) no cached entry remains; the stale
 *      ones are those held at that moment.  gen is acknowledged (the
 *      on_quiet callback) once no entry that existed before it is mapped:
 *      at once if none was held, else at the last release of those.
 *  C3. The LRU list holds exactly the cached entries with lock 0;
 *      nr_entries counts cached plus stale entries and never exceeds
 *      max_entries + the number of held stale ones.
 *  C4. A hold is granted only for a range inside one page whose gfn has a
 *      frame in the map; the frame lies inside the pool.
 *
 * Locking: one mutex (mc.lock) around everything; on_quiet is called
 * without it, from the thread whose release or invalidate made it quiet.
 *
 * Errors: -ENOENT (the gfn has no frame), -EFAULT (range outside the
 * guest or crossing a page), -EBUSY (every entry is held and the cache is
 * full), -ENOMEM, -errno of mmap.
 */
#ifndef MEMVISOR_DM_MAPCACHE_H
#define MEMVISOR_DM_MAPCACHE_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#define MAPCACHE_BUCKET_SHIFT 4
#define MAPCACHE_BUCKET_PAGES (1u << MAPCACHE_BUCKET_SHIFT)
#define MAPCACHE_NONE (~0ULL)

struct mc_entry;

struct mapcache_ref {
    void *ptr;
    struct mc_entry *e;
};

struct mapcache_stats {
    uint64_t hits, misses, evictions, invalidations, deferred_acks;
    uint64_t stale_drops; /* entries dropped or staled by map changes */
};

struct mapcache {
    pthread_mutex_t lock;
    int memfd;
    uint64_t pool_frames;
    uint64_t nr_gfns;
    uint64_t *map; /* nr_gfns: mfn or MAPCACHE_NONE */
    struct mc_entry **hash;
    uint32_t nr_hash;
    struct mc_entry *lru_head, *lru_tail; /* head: most recently used */
    struct mc_entry *stale;               /* singly linked */
    uint32_t nr_entries, max_entries, nr_stale;
    uint32_t nr_owed; /* stale entries the pending ack waits for */
    uint64_t quiet_gen;   /* latest gen waiting for stale entries */
    void (*on_quiet)(void *opaque, uint64_t gen);
    void *opaque;
    struct mapcache_stats stats;
    /* Test only: held entries stay cached through map changes and
     * invalidations (breaks C1 and C2: a stale mapping is handed out
     * again), to show the tests catch it. */
    bool test_keep_held;
};

int mapcache_init(struct mapcache *mc, int memfd, uint64_t pool_frames,
                  uint64_t nr_gfns, uint32_t max_entries,
                  void (*on_quiet)(void *opaque, uint64_t gen), void *opaque);
void mapcache_fini(struct mapcache *mc);

/* gfns [gfn, gfn + nr) now map to mfn.. (or MAPCACHE_NONE); C1. */
int mapcache_set(struct mapcache *mc, uint64_t gfn, uint64_t mfn,
                 uint64_t nr);
/* The mfn the map gives gfn (MAPCACHE_NONE if none). */
uint64_t mapcache_lookup(struct mapcache *mc, uint64_t gfn);

/* Map len bytes at (gfn, off), len <= 4096 - off, and hold the mapping
 * until mapcache_release(). */
int mapcache_hold(struct mapcache *mc, uint64_t gfn, uint32_t off,
                  uint32_t len, struct mapcache_ref *ref);
void mapcache_release(struct mapcache *mc, struct mapcache_ref *ref);

/* C2: drop every unheld mapping, stale the held ones.  Returns 1 if gen is
 * acknowledged at once, 0 if on_quiet(gen) will be called later. */
int mapcache_invalidate(struct mapcache *mc, uint64_t gen);

/* C1-C4: 0 or -EUCLEAN. */
int mapcache_check(struct mapcache *mc);
void mapcache_get_stats(struct mapcache *mc, struct mapcache_stats *out);
/* Entries mapped now (cached + stale). */
uint32_t mapcache_mapped(struct mapcache *mc);

#endif
