/*
 * mapcache.c - a device model's cache of mappings of guest memory
 * (mapcache.h).
 */
#include "mapcache.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define PG 4096ULL
#define BUCKET_BYTES (MAPCACHE_BUCKET_PAGES * PG)

struct mc_entry {
    uint64_t bidx;
    uint8_t *va;
    uint32_t valid; /* bit i: page i is mapped */
    uint32_t lock;
    bool stale;
    bool owed; /* stale at an invalidation still to be acknowledged */
    struct mc_entry *hnext;
    struct mc_entry *prev, *next; /* LRU, while cached with lock 0 */
};

static uint32_t hash_of(const struct mapcache *mc, uint64_t bidx)
{
    return (uint32_t)((bidx * 0x9E3779B97F4A7C15ULL) >> 32) % mc->nr_hash;
}

static void lru_del(struct mapcache *mc, struct mc_entry *e)
{
    if (e->prev)
        e->prev->next = e->next;
    else if (mc->lru_head == e)
        mc->lru_head = e->next;
    if (e->next)
        e->next->prev = e->prev;
    else if (mc->lru_tail == e)
        mc->lru_tail = e->prev;
    e->prev = e->next = NULL;
}

static void lru_push(struct mapcache *mc, struct mc_entry *e)
{
    e->prev = NULL;
    e->next = mc->lru_head;
    if (mc->lru_head)
        mc->lru_head->prev = e;
    mc->lru_head = e;
    if (!mc->lru_tail)
        mc->lru_tail = e;
}

static void hash_del(struct mapcache *mc, struct mc_entry *e)
{
    struct mc_entry **pp = &mc->hash[hash_of(mc, e->bidx)];

    while (*pp && *pp != e)
        pp = &(*pp)->hnext;
    if (*pp)
        *pp = e->hnext;
    e->hnext = NULL;
}

static void entry_free(struct mapcache *mc, struct mc_entry *e)
{
    munmap(e->va, BUCKET_BYTES);
    free(e);
    mc->nr_entries--;
}

/* Take a cached entry out: freed if unheld, else staled (C1, C2). */
static void entry_drop(struct mapcache *mc, struct mc_entry *e)
{
    hash_del(mc, e);
    if (e->lock == 0) {
        lru_del(mc, e);
        entry_free(mc, e);
        return;
    }
    e->stale = true;
    e->hnext = mc->stale;
    mc->stale = e;
    mc->nr_stale++;
}

static struct mc_entry *find(struct mapcache *mc, uint64_t bidx)
{
    for (struct mc_entry *e = mc->hash[hash_of(mc, bidx)]; e; e = e->hnext)
        if (e->bidx == bidx)
            return e;
    return NULL;
}

/* Map the bucket's pages at e->va (reserved PROT_NONE). */
static int map_bucket(struct mapcache *mc, struct mc_entry *e)
{
    e->valid = 0;
    for (uint32_t i = 0; i < MAPCACHE_BUCKET_PAGES; i++) {
        uint64_t gfn = e->bidx * MAPCACHE_BUCKET_PAGES + i, mfn;
        if (gfn >= mc->nr_gfns)
            break;
        mfn = mc->map[gfn];
        if (mfn == MAPCACHE_NONE || mfn >= mc->pool_frames)
            continue;
        if (mmap(e->va + i * PG, PG, PROT_READ | PROT_WRITE,
                 MAP_SHARED | MAP_FIXED, mc->memfd, (off_t)(mfn * PG)) ==
            MAP_FAILED)
            return -errno;
        e->valid |= 1u << i;
    }
    return 0;
}

int mapcache_init(struct mapcache *mc, int memfd, uint64_t pool_frames,
                  uint64_t nr_gfns, uint32_t max_entries,
                  void (*on_quiet)(void *opaque, uint64_t gen), void *opaque)
{
    memset(mc, 0, sizeof(*mc));
    if (!max_entries || !nr_gfns || nr_gfns > (1ULL << 40))
        return -EINVAL;
    mc->memfd = memfd;
    mc->pool_frames = pool_frames;
    mc->nr_gfns = nr_gfns;
    mc->max_entries = max_entries;
    mc->nr_hash = max_entries * 2 + 1;
    mc->on_quiet = on_quiet;
    mc->opaque = opaque;
    mc->map = malloc(nr_gfns * sizeof(uint64_t));
    mc->hash = calloc(mc->nr_hash, sizeof(*mc->hash));
    if (!mc->map || !mc->hash) {
        free(mc->map);
        free(mc->hash);
        return -ENOMEM;
    }
    for (uint64_t i = 0; i < nr_gfns; i++)
        mc->map[i] = MAPCACHE_NONE;
    pthread_mutex_init(&mc->lock, NULL);
    return 0;
}

void mapcache_fini(struct mapcache *mc)
{
    if (!mc->map)
        return;
    for (uint32_t h = 0; h < mc->nr_hash; h++)
        while (mc->hash[h]) {
            struct mc_entry *e = mc->hash[h];
            mc->hash[h] = e->hnext;
            entry_free(mc, e);
        }
    while (mc->stale) {
        struct mc_entry *e = mc->stale;
        mc->stale = e->hnext;
        entry_free(mc, e);
    }
    free(mc->map);
    free(mc->hash);
    mc->map = NULL;
    pthread_mutex_destroy(&mc->lock);
}

int mapcache_set(struct mapcache *mc, uint64_t gfn, uint64_t mfn, uint64_t nr)
{
    if (gfn >= mc->nr_gfns || nr > mc->nr_gfns - gfn)
        return -EFAULT;
    pthread_mutex_lock(&mc->lock);
    for (uint64_t i = 0; i < nr; i++) {
        uint64_t m = mfn == MAPCACHE_NONE ? MAPCACHE_NONE : mfn + i;
        struct mc_entry *e;
        if (mc->map[gfn + i] == m)
            continue;
        mc->map[gfn + i] = m;
        e = find(mc, (gfn + i) >> MAPCACHE_BUCKET_SHIFT);
        if (e && !(e->lock && mc->test_keep_held)) {
            mc->stats.stale_drops++;
            entry_drop(mc, e);
        }
    }
    pthread_mutex_unlock(&mc->lock);
    return 0;
}

uint64_t mapcache_lookup(struct mapcache *mc, uint64_t gfn)
{
    uint64_t m;

    pthread_mutex_lock(&mc->lock);
    m = gfn < mc->nr_gfns ? mc->map[gfn] : MAPCACHE_NONE;
    pthread_mutex_unlock(&mc->lock);
    return m;
}

int mapcache_hold(struct mapcache *mc, uint64_t gfn, uint32_t off,
                  uint32_t len, struct mapcache_ref *ref)
{
    uint64_t bidx = gfn >> MAPCACHE_BUCKET_SHIFT;
    uint32_t page = (uint32_t)(gfn & (MAPCACHE_BUCKET_PAGES - 1));
    struct mc_entry *e;
    int r;

    ref->ptr = NULL;
    ref->e = NULL;
    if (gfn >= mc->nr_gfns || off >= PG || len > PG - off)
        return -EFAULT;
    pthread_mutex_lock(&mc->lock);
    if (mc->map[gfn] == MAPCACHE_NONE || mc->map[gfn] >= mc->pool_frames) {
        pthread_mutex_unlock(&mc->lock);
        return -ENOENT;
    }
    e = find(mc, bidx);
    if (e) {
        mc->stats.hits++;
    } else {
        mc->stats.misses++;
        if (mc->nr_entries - mc->nr_stale >= mc->max_entries) {
            /* evict the least recently used unheld entry */
            struct mc_entry *v = mc->lru_tail;
            if (!v) {
                pthread_mutex_unlock(&mc->lock);
                return -EBUSY;
            }
            hash_del(mc, v);
            lru_del(mc, v);
            entry_free(mc, v);
            mc->stats.evictions++;
        }
        e = calloc(1, sizeof(*e));
        if (!e) {
            pthread_mutex_unlock(&mc->lock);
            return -ENOMEM;
        }
        e->bidx = bidx;
        e->va = mmap(NULL, BUCKET_BYTES, PROT_NONE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (e->va == MAP_FAILED) {
            r = -errno;
            free(e);
            pthread_mutex_unlock(&mc->lock);
            return r;
        }
        mc->nr_entries++;
        if ((r = map_bucket(mc, e)) < 0) {
            entry_free(mc, e);
            pthread_mutex_unlock(&mc->lock);
            return r;
        }
        e->hnext = mc->hash[hash_of(mc, bidx)];
        mc->hash[hash_of(mc, bidx)] = e;
        lru_push(mc, e);
    }
    if (!(e->valid & (1u << page))) {
        /* C1 keeps this from happening: the map said yes above */
        pthread_mutex_unlock(&mc->lock);
        return -ENOENT;
    }
    if (e->lock++ == 0)
        lru_del(mc, e);
    else if (mc->lru_head != e) {
        /* already held: not on the LRU */
    }
    ref->e = e;
    ref->ptr = e->va + page * PG + off;
    pthread_mutex_unlock(&mc->lock);
    return 0;
}

void mapcache_release(struct mapcache *mc, struct mapcache_ref *ref)
{
    struct mc_entry *e = ref->e;
    uint64_t quiet = 0;

    if (!e)
        return;
    pthread_mutex_lock(&mc->lock);
    if (--e->lock == 0) {
        if (e->stale) {
            struct mc_entry **pp = &mc->stale;
            while (*pp && *pp != e)
                pp = &(*pp)->hnext;
            if (*pp)
                *pp = e->hnext;
            mc->nr_stale--;
            if (e->owed && --mc->nr_owed == 0 && mc->quiet_gen) {
                quiet = mc->quiet_gen;
                mc->quiet_gen = 0;
            }
            entry_free(mc, e);
        } else {
            lru_push(mc, e);
        }
    }
    pthread_mutex_unlock(&mc->lock);
    ref->e = NULL;
    ref->ptr = NULL;
    if (quiet && mc->on_quiet)
        mc->on_quiet(mc->opaque, quiet);
}

int mapcache_invalidate(struct mapcache *mc, uint64_t gen)
{
    int now;

    pthread_mutex_lock(&mc->lock);
    mc->stats.invalidations++;
    for (uint32_t h = 0; h < mc->nr_hash; h++) {
        struct mc_entry *e = mc->hash[h], *next;
        for (; e; e = next) {
            next = e->hnext;
            if (e->lock && mc->test_keep_held)
                continue;
            entry_drop(mc, e);
        }
    }
    /* C2: every stale entry now predates gen; later ones do not count */
    mc->nr_owed = 0;
    for (struct mc_entry *e = mc->stale; e; e = e->hnext) {
        e->owed = true;
        mc->nr_owed++;
    }
    now = mc->nr_owed == 0;
    if (!now) {
        mc->quiet_gen = gen;
        mc->stats.deferred_acks++;
    }
    pthread_mutex_unlock(&mc->lock);
    return now;
}

int mapcache_check(struct mapcache *mc)
{
    uint32_t cached = 0, unheld = 0, lru = 0, stale = 0;
    int r = 0;

    pthread_mutex_lock(&mc->lock);
    for (uint32_t h = 0; h < mc->nr_hash && !r; h++)
        for (struct mc_entry *e = mc->hash[h]; e && !r; e = e->hnext) {
            cached++;
            unheld += e->lock == 0;
            if (e->stale || hash_of(mc, e->bidx) != h)
                r = -EUCLEAN;
            for (uint32_t i = 0; i < MAPCACHE_BUCKET_PAGES && !r; i++) {
                uint64_t gfn = e->bidx * MAPCACHE_BUCKET_PAGES + i;
                uint64_t m = gfn < mc->nr_gfns ? mc->map[gfn] : MAPCACHE_NONE;
                bool want = m != MAPCACHE_NONE && m < mc->pool_frames;
                if (want != !!(e->valid & (1u << i))) /* C1 */
                    r = -EUCLEAN;
            }
        }
    for (struct mc_entry *e = mc->lru_head; e && !r; e = e->next) {
        lru++;
        if (e->lock || e->stale || find(mc, e->bidx) != e) /* C3 */
            r = -EUCLEAN;
    }
    for (struct mc_entry *e = mc->stale; e && !r; e = e->hnext) {
        stale++;
        if (!e->lock || !e->stale)
            r = -EUCLEAN;
    }
    if (!r && (lru != unheld || stale != mc->nr_stale ||
               cached + stale != mc->nr_entries ||
               cached > mc->max_entries))
        r = -EUCLEAN;
    pthread_mutex_unlock(&mc->lock);
    return r;
}

void mapcache_get_stats(struct mapcache *mc, struct mapcache_stats *out)
{
    pthread_mutex_lock(&mc->lock);
    *out = mc->stats;
    pthread_mutex_unlock(&mc->lock);
}

uint32_t mapcache_mapped(struct mapcache *mc)
{
    uint32_t n;

    pthread_mutex_lock(&mc->lock);
    n = mc->nr_entries;
    pthread_mutex_unlock(&mc->lock);
    return n;
}
