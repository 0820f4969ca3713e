/*
 * p2m.c - the gfn -> (mfn, type) table (see p2m.h).
 */
#include "p2m/p2m.h"

#include <errno.h>
#include <stdlib.h>

#include "lib/range.h"

#define TYPE_BITS 4
#define TYPE_MASK ((1ULL << TYPE_BITS) - 1)
#define MFN_LIMIT (1ULL << (64 - TYPE_BITS))

static uint64_t pack(mfn_t mfn, enum p2m_type t)
{
    return t == P2M_INVALID ? 0 : (mfn_x(mfn) << TYPE_BITS) | t;
}

static struct p2m_entry unpack(uint64_t w)
{
    if (!w)
        return (struct p2m_entry){INVALID_MFN, P2M_INVALID};
    return (struct p2m_entry){_mfn(w >> TYPE_BITS), (enum p2m_type)(w & TYPE_MASK)};
}

int p2m_init(struct p2m *p, struct frames *frames, domid_t domid,
             enum p2m_kind kind, uint64_t nr_gfns)
{
    if (!nr_gfns || nr_gfns > MFN_LIMIT || (kind != P2M_HVM && kind != P2M_PV))
        return -EINVAL;
    p->table = calloc(nr_gfns, sizeof(*p->table));
    if (!p->table)
        return -ENOMEM;
    p->frames = frames;
    p->domid = domid;
    p->kind = kind;
    p->nr_gfns = nr_gfns;
    p->nr_ram = 0;
    atomic_init(&p->mapcache_invalidate, false);
    p->hold_removed = false;
    p->held = NULL;
    p->nr_held = p->cap_held = 0;
    pthread_mutex_init(&p->lock, NULL);
    return 0;
}

void p2m_fini(struct p2m *p)
{
    for (uint64_t g = 0; g < p->nr_gfns; g++) {
        struct p2m_entry e = unpack(p->table[g]);
        if (p2m_is_ram(e.type))
            frame_put(p->frames, e.mfn);
    }
    p2m_put_held(p, p->held, p->nr_held);
    p->held = NULL;
    p->nr_held = p->cap_held = 0;
    free(p->table);
    p->table = NULL;
    pthread_mutex_destroy(&p->lock);
}

/* Validate (gfn, mfn, t) for a new entry and take the RAM reference (P1). */
static int take_ref(struct p2m *p, gfn_t gfn, mfn_t mfn, enum p2m_type t)
{
    if (t <= P2M_INVALID || t >= P2M_NR_TYPES || mfn_x(mfn) >= MFN_LIMIT)
        return -EINVAL;
    if (!p2m_is_ram(t))
        return 0;
    if (p->kind == P2M_PV && gfn_x(gfn) != mfn_x(mfn))
        return -EINVAL; /* P2 */
    if (!frames_mfn_valid(p->frames, mfn))
        return -ENOENT;
    return frame_get(p->frames, mfn, p->domid);
}

/* P6: keep mfn's reference on the held list; false if out of memory (the
 * caller then puts it at once: the one case P6 cannot cover). */
static bool hold(struct p2m *p, mfn_t mfn)
{
    if (p->nr_held == p->cap_held) {
        uint64_t cap = p->cap_held ? p->cap_held * 2 : 64;
        mfn_t *n = realloc(p->held, cap * sizeof(*n));
        if (!n)
            return false;
        p->held = n;
        p->cap_held = cap;
    }
    p->held[p->nr_held++] = mfn;
    return true;
}

static void drop_old(struct p2m *p, struct p2m_entry old, struct p2m_entry new)
{
    if (!p2m_is_ram(old.type))
        return;
    /* P5: the frame leaves this gfn (or stops being RAM there). */
    if (!p2m_is_ram(new.type) || !mfn_eq(old.mfn, new.mfn)) {
        atomic_store(&p->mapcache_invalidate, true);
        if (p->hold_removed && hold(p, old.mfn))
            return; /* P6: put after the device models acknowledged */
    }
    frame_put(p->frames, old.mfn);
}

int p2m_populate(struct p2m *p, gfn_t gfn, mfn_t mfn, enum p2m_type t)
{
    int rc;

    if (range_check(gfn_x(gfn), 1, p->nr_gfns))
        return -EFAULT;
    pthread_mutex_lock(&p->lock);
    if (p->table[gfn_x(gfn)]) {
        rc = -EEXIST;
        goto out;
    }
    rc = take_ref(p, gfn, mfn, t);
    if (rc)
        goto out;
    p->table[gfn_x(gfn)] = pack(mfn, t);
    if (p2m_is_ram(t))
        p->nr_ram++;
out:
    pthread_mutex_unlock(&p->lock);
    return rc;
}

int p2m_remove(struct p2m *p, gfn_t gfn, struct p2m_entry *old)
{
    struct p2m_entry e;

    if (range_check(gfn_x(gfn), 1, p->nr_gfns))
        return -EFAULT;
    pthread_mutex_lock(&p->lock);
    e = unpack(p->table[gfn_x(gfn)]);
    if (e.type == P2M_INVALID) {
        pthread_mutex_unlock(&p->lock);
        return -ENOENT;
    }
    p->table[gfn_x(gfn)] = 0;
    if (p2m_is_ram(e.type))
        p->nr_ram--;
    drop_old(p, e, (struct p2m_entry){INVALID_MFN, P2M_INVALID});
    pthread_mutex_unlock(&p->lock);
    if (old)
        *old = e;
    return 0;
}

int p2m_replace(struct p2m *p, gfn_t gfn, mfn_t mfn, enum p2m_type t,
                struct p2m_entry *old)
{
    struct p2m_entry e;
    int rc;

    if (range_check(gfn_x(gfn), 1, p->nr_gfns))
        return -EFAULT;
    pthread_mutex_lock(&p->lock);
    e = unpack(p->table[gfn_x(gfn)]);
    if (e.type == P2M_INVALID) {
        rc = -ENOENT;
        goto out;
    }
    rc = take_ref(p, gfn, mfn, t); /* before anything changes */
    if (rc)
        goto out;
    p->table[gfn_x(gfn)] = pack(mfn, t);
    p->nr_ram += (uint64_t)p2m_is_ram(t) - (uint64_t)p2m_is_ram(e.type);
    drop_old(p, e, (struct p2m_entry){mfn, t});
    if (old)
        *old = e;
out:
    pthread_mutex_unlock(&p->lock);
    return rc;
}

int p2m_set_type(struct p2m *p, gfn_t gfn, enum p2m_type t)
{
    struct p2m_entry e;
    int rc = 0;

    if (!p2m_is_ram(t))
        return -EINVAL;
    if (range_check(gfn_x(gfn), 1, p->nr_gfns))
        return -EFAULT;
    pthread_mutex_lock(&p->lock);
    e = unpack(p->table[gfn_x(gfn)]);
    if (!p2m_is_ram(e.type))
        rc = -ENOENT;
    else
        p->table[gfn_x(gfn)] = pack(e.mfn, t);
    pthread_mutex_unlock(&p->lock);
    return rc;
}

int p2m_lookup(struct p2m *p, gfn_t gfn, struct p2m_entry *e)
{
    return p2m_lookup_range(p, gfn, 1, e);
}

int p2m_lookup_range(struct p2m *p, gfn_t gfn, uint64_t nr,
                     struct p2m_entry *out)
{
    if (range_check(gfn_x(gfn), nr, p->nr_gfns))
        return -EFAULT;
    pthread_mutex_lock(&p->lock);
    for (uint64_t i = 0; i < nr; i++)
        out[i] = unpack(p->table[gfn_x(gfn) + i]);
    pthread_mutex_unlock(&p->lock);
    return 0;
}

bool p2m_mapcache_test_and_clear(struct p2m *p)
{
    return atomic_exchange(&p->mapcache_invalidate, false);
}

void p2m_hold_removed(struct p2m *p, bool on)
{
    pthread_mutex_lock(&p->lock);
    p->hold_removed = on;
    pthread_mutex_unlock(&p->lock);
}

bool p2m_mapcache_take(struct p2m *p, mfn_t **held, uint64_t *nr)
{
    bool flag;

    pthread_mutex_lock(&p->lock);
    flag = atomic_exchange(&p->mapcache_invalidate, false);
    *held = p->held;
    *nr = p->nr_held;
    p->held = NULL;
    p->nr_held = p->cap_held = 0;
    pthread_mutex_unlock(&p->lock);
    return flag;
}

void p2m_put_held(struct p2m *p, mfn_t *held, uint64_t nr)
{
    for (uint64_t i = 0; i < nr; i++)
        frame_put(p->frames, held[i]);
    free(held);
}

int p2m_check(struct p2m *p)
{
    uint64_t nr_ram = 0;
    int rc = 0;

    pthread_mutex_lock(&p->lock);
    for (uint64_t g = 0; g < p->nr_gfns && !rc; g++) {
        uint64_t w = p->table[g];
        struct p2m_entry e = unpack(w);
        if (!w)
            continue;
        if (e.type == P2M_INVALID || e.type >= P2M_NR_TYPES) {
            rc = -EUCLEAN; /* P4 */
            break;
        }
        if (!p2m_is_ram(e.type))
            continue;
        nr_ram++;
        if (p->kind == P2M_PV && mfn_x(e.mfn) != g)
            rc = -EUCLEAN; /* P2 */
        else if (!frames_mfn_valid(p->frames, e.mfn) ||
                 frame_owner(p->frames, e.mfn) != p->domid ||
                 frame_count(p->frames, e.mfn) == 0)
            rc = -EUCLEAN; /* P1 */
    }
    if (!rc && nr_ram != p->nr_ram)
        rc = -EUCLEAN; /* P3 */
    pthread_mutex_unlock(&p->lock);
    return rc;
}
