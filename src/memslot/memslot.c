/*
 * memslot.c - KVM memory slots as transactions over a derived view, and
 * page tracking (see memslot.h and docs/memory.md for the state machine).
 */
#include "memslot/memslot.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "lib/bitmap.h"
#include "lib/range.h"

/* ---- small helpers --------------------------------------------------------
 */

static void *ms_alloc(struct memslots *ms, size_t n, size_t size)
{
    if (ms->test_fail_alloc && --ms->test_fail_alloc == 0)
        return NULL;
    return calloc(n ? n : 1, size);
}

static void copy_slots(struct memslot *dst, const struct memslot *src,
                       uint32_t n)
{
    if (n)
        memcpy(dst, src, n * sizeof(*dst));
}

static uint64_t slot_end(const struct memslot *s)
{
    return gfn_x(s->base) + s->npages;
}

static bool mergeable(const struct memslot *a, const struct memslot *b)
{
    return slot_end(a) == gfn_x(b->base) &&
           mfn_x(a->mfn) + a->npages == mfn_x(b->mfn) && a->flags == b->flags;
}

static int kvm_set(struct memslots *ms, const struct memslot *s, bool del)
{
    ms->stats.ioctls++;
    return kvm_vm_set_memory_region(
        ms->vm, s->id, del ? 0 : s->flags, gfn_x(s->base) << PAGE_SHIFT,
        del ? 0 : s->npages << PAGE_SHIFT, frames_ptr(ms->frames, s->mfn));
}

/* First slot whose end is above gfn (the slot containing it or the next). */
static uint32_t slot_from(const struct memslot *slots, uint32_t nr,
                          uint64_t gfn)
{
    uint32_t lo = 0, hi = nr;

    while (lo < hi) {
        uint32_t mid = (lo + hi) / 2;
        if (slot_end(&slots[mid]) <= gfn)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* Index of the slot containing gfn, or -1. */
static int64_t slot_at(const struct memslot *slots, uint32_t nr, uint64_t gfn)
{
    uint32_t i = slot_from(slots, nr, gfn);

    return i < nr && gfn_x(slots[i].base) <= gfn ? (int64_t)i : -1;
}

/* First index in tracks with gfn >= g. */
static uint32_t track_lower(const struct memslot_track *tr, uint32_t nr,
                            uint64_t g)
{
    uint32_t lo = 0, hi = nr;

    while (lo < hi) {
        uint32_t mid = (lo + hi) / 2;
        if (gfn_x(tr[mid].gfn) < g)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static uint32_t nr_trackers(const struct memslot_track *tr, uint32_t nr,
                            uint64_t g)
{
    uint32_t i = track_lower(tr, nr, g), n = 0;

    while (i + n < nr && gfn_x(tr[i + n].gfn) == g)
        n++;
    return n;
}

/* ---- the update: overlay, derivation, plan --------------------------------
 */

struct gfn_span {
    uint64_t lo, hi;
};

/* What an update changes before the view is re-derived. */
struct overlay {
    uint64_t win_lo, win_hi; /* window to re-derive (at least) */
    uint64_t lo, hi;         /* gfns the change applies to */
    enum { OV_NONE, OV_HOLE, OV_TYPE, OV_HOLES } kind;
    enum p2m_type type; /* OV_TYPE: new RAM type */
    /* OV_HOLES: the gfn ranges [holes[i].lo, holes[i].hi) become holes;
     * sorted, disjoint, within [lo, hi) */
    const struct gfn_span *holes;
    uint32_t nr_holes;
    /* if set: the p2m and tracking changed only in these spans (sorted,
     * disjoint, within [lo, hi)); derive() reads the p2m only there */
    const struct gfn_span *changed;
    uint32_t nr_changed;
    int log_dirty;                   /* -1: unchanged, else the new switch */
    struct memslot_tracker *track_t; /* tracking change at lo, if set */
    bool track_add;
};

enum act_kind { ACT_DELETE, ACT_FLAGS, ACT_CREATE };

struct action {
    enum act_kind kind;
    struct memslot old;      /* DELETE, FLAGS */
    struct memslot new;      /* FLAGS, CREATE */
    struct dirty_slot *prep; /* a dirty slot to publish at commit */
    bool fresh_id;           /* CREATE: id allocated for it */
    bool id_reused;          /* DELETE: a CREATE took over its id */
};

struct plan {
    uint64_t lo, hi;
    uint32_t i0, i1; /* old slots [i0, i1) are replaced */
    struct memslot *derived;
    uint32_t nd;
    struct action *acts;
    uint32_t nacts, applied;
    struct memslot *new_slots;
    uint32_t new_nr;
    struct memslot_track *new_tracks;
    uint32_t new_nr_tracks;
    struct memslot_track *removed; /* announced after commit */
    uint32_t nr_removed;
    bool need_flush;
};

/* Does the overlay make gfn g a hole? */
static bool ov_hole(const struct overlay *ov, uint64_t g)
{
    uint32_t lo = 0, hi;

    if (g < ov->lo || g >= ov->hi)
        return false;
    if (ov->kind == OV_HOLE)
        return true;
    if (ov->kind != OV_HOLES)
        return false;
    hi = ov->nr_holes;
    while (lo < hi) {
        uint32_t mid = (lo + hi) / 2;
        if (ov->holes[mid].hi <= g)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < ov->nr_holes && ov->holes[lo].lo <= g;
}

/* Whether gfn g is tracked with the overlay applied; *cur is a cursor
 * into ms->tracks for a caller that walks g upwards (start at 0). */
static bool ov_tracked(struct memslots *ms, const struct overlay *ov,
                       uint64_t g, uint32_t *cur)
{
    uint32_t n = 0;

    while (*cur < ms->nr_tracks && gfn_x(ms->tracks[*cur].gfn) < g)
        (*cur)++;
    while (*cur + n < ms->nr_tracks && gfn_x(ms->tracks[*cur + n].gfn) == g)
        n++;

    if (ov->track_t && g == ov->lo)
        n = ov->track_add ? n + 1 : n - 1;
    if (ov_hole(ov, g))
        n = 0;
    return n > 0;
}

static struct p2m_entry ov_entry(const struct overlay *ov, uint64_t g,
                                 struct p2m_entry e)
{
    if (ov_hole(ov, g))
        return (struct p2m_entry){INVALID_MFN, P2M_INVALID};
    if (g >= ov->lo && g < ov->hi) {
        if (ov->kind == OV_TYPE && p2m_is_ram(e.type))
            e.type = ov->type;
    }
    return e;
}

/* Append s to p->derived (merging with the last), growing it by doubling. */
static int derived_push(struct memslots *ms, struct plan *p, uint32_t *cap,
                        const struct memslot *s)
{
    if (p->nd && mergeable(&p->derived[p->nd - 1], s)) {
        p->derived[p->nd - 1].npages += s->npages;
        return 0;
    }
    if (p->nd == *cap) {
        uint32_t ncap = *cap ? 2 * *cap : 16;
        struct memslot *n = ms_alloc(ms, ncap, sizeof(*n));
        if (!n)
            return -ENOMEM;
        copy_slots(n, p->derived, p->nd);
        free(p->derived);
        p->derived = n;
        *cap = ncap;
    }
    p->derived[p->nd++] = *s;
    return 0;
}

#define DERIVE_CHUNK 4096

/* The derived slots of [c, stop) from the p2m, appended to p->derived. */
static int derive_p2m(struct memslots *ms, const struct overlay *ov,
                      struct plan *p, uint64_t c0, uint64_t stop,
                      struct p2m_entry *e, uint32_t *cap, uint32_t *cur)
{
    bool log_on = ov->log_dirty < 0 ? ms->log_dirty : ov->log_dirty;
    int rc = 0;

    for (uint64_t c = c0; c < stop && !rc; c += DERIVE_CHUNK) {
        uint64_t m = MIN((uint64_t)DERIVE_CHUNK, stop - c);
        rc = p2m_lookup_range(ms->p2m, _gfn(c), m, e);
        for (uint64_t i = 0; i < m && !rc; i++) {
            uint64_t g = c + i;
            struct p2m_entry x = ov_entry(ov, g, e[i]);
            if (!p2m_is_ram(x.type))
                continue;
            uint32_t flags = 0;
            if (x.type == P2M_RAM_RO || ov_tracked(ms, ov, g, cur))
                flags = MEMSLOT_RO;
            else if (log_on || x.type == P2M_LOGDIRTY)
                flags = MEMSLOT_LOG;
            struct memslot *last = p->nd ? &p->derived[p->nd - 1] : NULL;
            if (last && slot_end(last) == g && last->flags == flags &&
                mfn_x(last->mfn) + last->npages == mfn_x(x.mfn)) {
                last->npages++; /* the common case: the run goes on */
                continue;
            }
            struct memslot s = {0, _gfn(g), 1, x.mfn, flags};
            rc = derived_push(ms, p, cap, &s);
        }
    }
    return rc;
}

/* The current slots cut to [a, b), appended to p->derived. */
static int derive_keep(struct memslots *ms, struct plan *p, uint64_t a,
                       uint64_t b, uint32_t *cap)
{
    int rc = 0;

    for (uint32_t i = slot_from(ms->slots, ms->nr, a);
         i < ms->nr && gfn_x(ms->slots[i].base) < b && !rc; i++) {
        const struct memslot *o = &ms->slots[i];
        uint64_t from = MAX(gfn_x(o->base), a), to = MIN(slot_end(o), b);
        struct memslot s = {0, _gfn(from), to - from,
                            _mfn(mfn_x(o->mfn) + (from - gfn_x(o->base))),
                            o->flags};
        rc = derived_push(ms, p, cap, &s);
    }
    return rc;
}

/*
 * The derived slots of [lo, hi) into p->derived (ids unset).  Only the
 * parts the update changes are read from the p2m: the overlay's changed
 * spans when it lists them (a batch), else [win_lo, win_hi) and [lo, hi),
 * where the caller changed the p2m or the tracking table.  Elsewhere
 * nothing the view depends on changed, so the view there is the current
 * slots (M2 makes them the derived view), cut to the window and merged
 * with their neighbours as derivation would - unless the domain-wide
 * log-dirty switch changes, which changes every slot.  So an update of a
 * few pages inside a large slot does not read the whole slot's p2m.
 */
static int derive(struct memslots *ms, const struct overlay *ov, struct plan *p)
{
    struct gfn_span whole = {MIN(ov->win_lo, ov->lo), MAX(ov->win_hi, ov->hi)};
    const struct gfn_span *sp = &whole;
    uint32_t nsp = 1, cap = 0;
    uint32_t cur = track_lower(ms->tracks, ms->nr_tracks, p->lo);
    uint64_t at = p->lo;
    struct p2m_entry *e;
    int rc = 0;

    if (ov->log_dirty >= 0) {
        whole = (struct gfn_span){p->lo, p->hi};
    } else if (ov->changed) {
        sp = ov->changed;
        nsp = ov->nr_changed;
    }
    p->nd = 0;
    e = ms_alloc(ms, DERIVE_CHUNK, sizeof(*e));
    if (!e)
        return -ENOMEM;
    for (uint32_t i = 0; i < nsp && !rc; i++) {
        uint64_t a = MAX(sp[i].lo, at), b = MIN(sp[i].hi, p->hi);

        if (a >= b)
            continue;
        rc = derive_keep(ms, p, at, a, &cap);
        if (!rc)
            rc = derive_p2m(ms, ov, p, a, b, e, &cap, &cur);
        at = b;
    }
    if (!rc)
        rc = derive_keep(ms, p, at, p->hi, &cap);
    free(e);
    return rc;
}

static void plan_free(struct plan *p)
{
    if (p->acts)
        for (uint32_t i = 0; i < p->nacts; i++)
            dirty_slot_discard(p->acts[i].prep);
    free(p->derived);
    free(p->acts);
    free(p->new_slots);
    free(p->new_tracks);
    free(p->removed);
    memset(p, 0, sizeof(*p));
}

/* Window and derivation, widened until the edges cannot merge (M2). */
static int plan_window(struct memslots *ms, const struct overlay *ov,
                       struct plan *p)
{
    p->lo = ov->win_lo;
    p->hi = ov->win_hi;
    for (;;) {
        int64_t i;
        if (p->lo > 0 && (i = slot_at(ms->slots, ms->nr, p->lo - 1)) >= 0)
            p->lo = gfn_x(ms->slots[i].base);
        if ((i = slot_at(ms->slots, ms->nr, p->hi)) >= 0)
            p->hi = slot_end(&ms->slots[i]);
        free(p->derived);
        p->derived = NULL;
        int rc = derive(ms, ov, p);
        if (rc)
            return rc;
        bool grew = false;
        if (p->nd && p->lo > 0 &&
            (i = slot_at(ms->slots, ms->nr, p->lo - 1)) >= 0 &&
            mergeable(&ms->slots[i], &p->derived[0])) {
            p->lo = gfn_x(ms->slots[i].base);
            grew = true;
        }
        if (p->nd && (i = slot_at(ms->slots, ms->nr, p->hi)) >= 0 &&
            mergeable(&p->derived[p->nd - 1], &ms->slots[i])) {
            p->hi = slot_end(&ms->slots[i]);
            grew = true;
        }
        if (!grew)
            return 0;
    }
}

static int alloc_id(struct memslots *ms, uint32_t *id)
{
    uint64_t lim = ms->test_slot_limit ? MIN(ms->test_slot_limit, ms->max_slots)
                                       : ms->max_slots;
    uint64_t i = bitmap_find_next_zero(ms->id_used, lim, 0);

    if (i >= lim)
        return -ENOSPC;
    bitmap_set(ms->id_used, i);
    *id = ms->id_base + (uint32_t)i;
    return 0;
}

/* Undo the ids alloc_id() handed to this plan's CREATEs. */
static void plan_release_ids(struct memslots *ms, struct plan *p)
{
    for (uint32_t i = 0; i < p->nacts; i++)
        if (p->acts[i].kind == ACT_CREATE && p->acts[i].fresh_id)
            bitmap_clear(ms->id_used, p->acts[i].new.id - ms->id_base);
}

static int prepare_dirty(struct memslots *ms, struct action *a)
{
    if (!ms->dirty)
        return -EINVAL;
    if (ms->test_fail_alloc && --ms->test_fail_alloc == 0)
        return -ENOMEM;
    return dirty_slot_prepare(ms->dirty, a->new.id, a->new.base, a->new.npages,
                              &a->prep);
}

/* PREPARE: diff, ids, dirty slots, the new arrays.  Nothing visible. */
static int plan_prepare(struct memslots *ms, const struct overlay *ov,
                        struct plan *p)
{
    int rc = plan_window(ms, ov, p);
    if (rc)
        return rc;

    /* old slots inside the window */
    p->i0 = 0;
    while (p->i0 < ms->nr && slot_end(&ms->slots[p->i0]) <= p->lo)
        p->i0++;
    p->i1 = p->i0;
    while (p->i1 < ms->nr && gfn_x(ms->slots[p->i1].base) < p->hi)
        p->i1++;

    uint32_t nold = p->i1 - p->i0;
    p->acts = ms_alloc(ms, (size_t)nold + 2 * p->nd, sizeof(*p->acts));
    bool *kept = ms_alloc(ms, nold, sizeof(bool));
    if (!p->acts || !kept) {
        free(kept);
        return -ENOMEM;
    }
    /* match each derived slot with an old slot of the same extent and
     * frame: kept as is, or a flags-only change (LOG); KVM cannot resize,
     * move or toggle READONLY in place, so anything else is delete+create */
    for (uint32_t d = 0, o = p->i0; d < p->nd; d++) {
        struct memslot *ds = &p->derived[d];
        while (o < p->i1 && gfn_x(ms->slots[o].base) < gfn_x(ds->base))
            o++;
        struct memslot *os = o < p->i1 ? &ms->slots[o] : NULL;
        if (os && gfn_x(os->base) == gfn_x(ds->base) &&
            os->npages == ds->npages && mfn_eq(os->mfn, ds->mfn) &&
            !((os->flags ^ ds->flags) & MEMSLOT_RO)) {
            kept[o - p->i0] = true;
            ds->id = os->id;
        } else {
            ds->id = UINT32_MAX; /* to be created */
        }
    }
    /* acts: deletes, then flag changes, then creates */
    for (uint32_t o = p->i0; o < p->i1; o++)
        if (!kept[o - p->i0])
            p->acts[p->nacts++] =
                (struct action){.kind = ACT_DELETE, .old = ms->slots[o]};
    for (uint32_t d = 0, o = p->i0; d < p->nd; d++) {
        struct memslot *ds = &p->derived[d];
        if (ds->id == UINT32_MAX)
            continue;
        while (ms->slots[o].id != ds->id)
            o++;
        if (ms->slots[o].flags != ds->flags)
            p->acts[p->nacts++] = (struct action){
                .kind = ACT_FLAGS, .old = ms->slots[o], .new = *ds};
    }
    free(kept);

    /* creates: reuse the ids of deleted slots first (KVM sees the delete
     * before the create, and a rollback deletes the create before it
     * recreates the old slot), then fresh ids */
    uint32_t ndel = 0, reuse = 0;
    while (ndel < p->nacts && p->acts[ndel].kind == ACT_DELETE)
        ndel++;
    for (uint32_t d = 0; d < p->nd; d++) {
        if (p->derived[d].id != UINT32_MAX)
            continue;
        struct action *a = &p->acts[p->nacts];
        memset(a, 0, sizeof(*a));
        a->kind = ACT_CREATE;
        a->new = p->derived[d];
        if (reuse < ndel) {
            a->new.id = p->acts[reuse].old.id;
            p->acts[reuse++].id_reused = true;
        } else {
            rc = alloc_id(ms, &a->new.id);
            if (rc)
                return rc; /* ids of earlier creates released by the caller */
            a->fresh_id = true;
        }
        p->nacts++;
        p->derived[d].id = a->new.id;
    }

    /* dirty slots to publish; flush needed for logs that stop */
    for (uint32_t i = 0; i < p->nacts; i++) {
        struct action *a = &p->acts[i];
        bool old_log = a->kind != ACT_CREATE && (a->old.flags & MEMSLOT_LOG);
        bool new_log = a->kind != ACT_DELETE && (a->new.flags &MEMSLOT_LOG);
        if (old_log && !new_log)
            p->need_flush = true;
        if (new_log && !old_log) {
            rc = prepare_dirty(ms, a);
            if (rc)
                return rc;
        }
    }

    /* the new slot array */
    p->new_nr = ms->nr - (p->i1 - p->i0) + p->nd;
    p->new_slots = ms_alloc(ms, p->new_nr, sizeof(*p->new_slots));
    if (!p->new_slots)
        return -ENOMEM;
    copy_slots(p->new_slots, ms->slots, p->i0);
    if (p->nd)
        copy_slots(p->new_slots + p->i0, p->derived, p->nd);
    if (ms->nr > p->i1)
        copy_slots(p->new_slots + p->i0 + p->nd, ms->slots + p->i1,
                   ms->nr - p->i1);

    /* the new tracking table and the removals to announce */
    p->new_tracks =
        ms_alloc(ms, (size_t)ms->nr_tracks + 1, sizeof(*p->new_tracks));
    p->removed = ms_alloc(ms, ms->nr_tracks, sizeof(*p->removed));
    if (!p->new_tracks || !p->removed)
        return -ENOMEM;
    for (uint32_t i = 0; i < ms->nr_tracks; i++) {
        struct memslot_track t = ms->tracks[i];
        uint64_t g = gfn_x(t.gfn);
        if (ov->track_t && !ov->track_add && g == ov->lo && t.t == ov->track_t)
            continue; /* untracked: not a removal */
        if (ov_hole(ov, g)) {
            p->removed[p->nr_removed++] = t;
            continue;
        }
        p->new_tracks[p->new_nr_tracks++] = t;
    }
    if (ov->track_t && ov->track_add) {
        /* insert at its (gfn, subscriber) position */
        struct memslot_track n = {_gfn(ov->lo), ov->track_t};
        uint32_t k = 0;
        while (k < p->new_nr_tracks &&
               (gfn_x(p->new_tracks[k].gfn) < ov->lo ||
                (gfn_x(p->new_tracks[k].gfn) == ov->lo &&
                 (uintptr_t)p->new_tracks[k].t < (uintptr_t)ov->track_t)))
            k++;
        if (p->new_nr_tracks > k)
            memmove(&p->new_tracks[k + 1], &p->new_tracks[k],
                    (p->new_nr_tracks - k) * sizeof(n));
        p->new_tracks[k] = n;
        p->new_nr_tracks++;
    }
    return 0;
}

/* APPLY with ROLLBACK.  Called with the view write-held and dirty locked. */
static int plan_apply(struct memslots *ms, struct plan *p)
{
    int rc = 0;

    for (p->applied = 0; p->applied < p->nacts; p->applied++) {
        struct action *a = &p->acts[p->applied];
        rc = kvm_set(ms, a->kind == ACT_DELETE ? &a->old : &a->new,
                     a->kind == ACT_DELETE);
        if (rc)
            break;
    }
    if (!rc)
        return 0;
    /* ROLLBACK: reapply the old slots, newest change first */
    ms->stats.rolled_back++;
    while (p->applied-- > 0) {
        struct action *a = &p->acts[p->applied];
        int r2 = a->kind == ACT_CREATE ? kvm_set(ms, &a->new, true)
                                       : kvm_set(ms, &a->old, false);
        if (r2)
            ms->broken = true; /* KVM state unknown: the domain must die */
    }
    return ms->broken ? -EIO : rc;
}

/* COMMIT: cannot fail.  View write-held, dirty locked. */
static void plan_commit(struct memslots *ms, struct plan *p)
{
    for (uint32_t i = 0; i < p->nacts; i++) {
        struct action *a = &p->acts[i];
        bool old_log = a->kind != ACT_CREATE && (a->old.flags & MEMSLOT_LOG);
        bool new_log = a->kind != ACT_DELETE && (a->new.flags &MEMSLOT_LOG);
        if (old_log && !new_log)
            dirty_slot_discard(
                dirty_slot_unpublish_locked(ms->dirty, a->old.id));
        if (new_log && !old_log) {
            dirty_slot_publish_locked(ms->dirty, a->prep);
            a->prep = NULL;
        }
        if (a->kind == ACT_DELETE && !a->id_reused)
            bitmap_clear(ms->id_used, a->old.id - ms->id_base);
    }
    free(ms->slots);
    ms->slots = p->new_slots;
    ms->nr = p->new_nr;
    p->new_slots = NULL;
    free(ms->tracks);
    ms->tracks = p->new_tracks;
    ms->nr_tracks = p->new_nr_tracks;
    p->new_tracks = NULL;
}

static void announce(struct plan *p)
{
    for (uint32_t i = 0; i < p->nr_removed;) {
        struct memslot_track *t = &p->removed[i];
        uint32_t n = 1;
        /* coalesce runs of the same subscriber's consecutive gfns */
        while (i + n < p->nr_removed && p->removed[i + n].t == t->t &&
               gfn_x(p->removed[i + n].gfn) == gfn_x(t->gfn) + n)
            n++;
        t->t->removed(t->t, t->gfn, n);
        i += n;
    }
}

/*
 * One update: PREPARE -> QUIESCE -> FLUSH -> APPLY -> COMMIT with the
 * caller's p2m step (after_commit, under the view lock), then ANNOUNCE.
 * ms.lock held.
 */
static int update_locked(struct memslots *ms, const struct overlay *ov,
                         void (*after_commit)(struct memslots *, void *),
                         void *arg)
{
    struct plan p;
    bool paused = false;
    int rc;

    if (ms->broken)
        return -EIO;
    memset(&p, 0, sizeof(p));
    ms->stats.updates++;

    /* PREPARE */
    rc = plan_prepare(ms, ov, &p);
    if (rc)
        goto abort;
    if (ms->test_announce_early)
        announce(&p);

    /* QUIESCE: no vCPU in KVM_RUN while a logging slot's log is pulled
     * and the slot changes, so no write lands in a log that is going; and
     * none while a slot is deleted and recreated, so no vCPU fetches an
     * instruction from memory that is momentarily absent. */
    bool deletes = p.nacts && p.acts[0].kind == ACT_DELETE;
    if ((p.need_flush || deletes) && ms->pause.pause && !ms->test_skip_flush) {
        ms->pause.pause(ms->pause.opaque);
        ms->stats.pauses++;
        paused = true;
    }
    pthread_rwlock_wrlock(&ms->view);
    if (ms->dirty)
        dirty_lock(ms->dirty);

    /* FLUSH */
    if (p.need_flush && !ms->test_skip_flush) {
        for (uint32_t i = 0; i < p.nacts && !rc; i++) {
            struct action *a = &p.acts[i];
            bool old_log =
                a->kind != ACT_CREATE && (a->old.flags & MEMSLOT_LOG);
            bool new_log = a->kind != ACT_DELETE && (a->new.flags &MEMSLOT_LOG);
            if (old_log && !new_log) {
                rc = dirty_slot_flush_locked(ms->dirty, a->old.id);
                ms->stats.flushes++;
                if (ms->dirty->mode == KVM_DIRTY_RING)
                    break; /* one ring flush covers every slot */
            }
        }
    }
    /* APPLY (ROLLBACK inside on failure) */
    if (!rc)
        rc = plan_apply(ms, &p);
    /* COMMIT, and the p2m step: still under the view lock, so that no
     * MMIO exit sees a frame in the middle of leaving the guest */
    if (!rc) {
        plan_commit(ms, &p);
        if (after_commit)
            after_commit(ms, arg);
    }
    if (ms->dirty)
        dirty_unlock(ms->dirty);
    pthread_rwlock_unlock(&ms->view);
    if (paused)
        ms->pause.unpause(ms->pause.opaque);
    if (rc)
        goto abort;

    /* ANNOUNCE */
    if (!ms->test_announce_early)
        announce(&p);
    plan_free(&p);
    return 0;

abort:
    ms->stats.aborted++;
    if (p.acts)
        plan_release_ids(ms, &p);
    plan_free(&p);
    return rc;
}

/* ---- public operations ----------------------------------------------------
 */

int memslot_init(struct memslots *ms, struct kvm_vm *vm, struct frames *frames,
                 struct p2m *p2m, struct dirty_log *dirty, uint32_t id_base,
                 uint32_t max_slots)
{
    memset(ms, 0, sizeof(*ms));
    if (!max_slots)
        return -EINVAL;
    if (vm && (uint64_t)id_base + max_slots > vm->sys->caps.nr_memslots)
        return -EINVAL;
    if (dirty && dirty->max_slots < id_base + max_slots)
        return -EINVAL;
    ms->id_used = bitmap_alloc(max_slots);
    if (!ms->id_used)
        return -ENOMEM;
    ms->vm = vm;
    ms->frames = frames;
    ms->p2m = p2m;
    ms->dirty = dirty;
    ms->id_base = id_base;
    ms->max_slots = max_slots;
    pthread_mutex_init(&ms->lock, NULL);
    pthread_rwlock_init(&ms->view, NULL);
    return 0;
}

void memslot_fini(struct memslots *ms)
{
    for (uint32_t i = 0; i < ms->nr; i++)
        (void)!kvm_set(ms, &ms->slots[i], true);
    if (ms->dirty) {
        dirty_lock(ms->dirty);
        for (uint32_t i = 0; i < ms->nr; i++)
            dirty_slot_discard(
                dirty_slot_unpublish_locked(ms->dirty, ms->slots[i].id));
        dirty_unlock(ms->dirty);
    }
    free(ms->slots);
    free(ms->tracks);
    bitmap_free(ms->id_used);
    pthread_rwlock_destroy(&ms->view);
    pthread_mutex_destroy(&ms->lock);
    memset(ms, 0, sizeof(*ms));
}

void memslot_set_pause(struct memslots *ms, const struct memslot_pause *p)
{
    pthread_mutex_lock(&ms->lock);
    ms->pause = *p;
    pthread_mutex_unlock(&ms->lock);
}

static struct overlay ov_window(uint64_t lo, uint64_t hi)
{
    return (struct overlay){.win_lo = lo,
                            .win_hi = hi,
                            .lo = lo,
                            .hi = hi,
                            .kind = OV_NONE,
                            .log_dirty = -1};
}

int memslot_sync(struct memslots *ms, gfn_t gfn, uint64_t nr)
{
    struct overlay ov = ov_window(gfn_x(gfn), gfn_x(gfn) + nr);
    int rc;

    if (!nr || range_check(gfn_x(gfn), nr, ms->p2m->nr_gfns))
        return -EFAULT;
    pthread_mutex_lock(&ms->lock);
    rc = update_locked(ms, &ov, NULL, NULL);
    pthread_mutex_unlock(&ms->lock);
    return rc;
}

/* Remove p2m entries [gfn, gfn + n) that the caller populated, leaving the
 * mapcache flag as it was (the frames were never visible). */
static void unpopulate(struct p2m *p2m, uint64_t gfn, uint64_t n)
{
    bool was = atomic_load(&p2m->mapcache_invalidate);

    for (uint64_t i = 0; i < n; i++)
        (void)!p2m_remove(p2m, _gfn(gfn + i), NULL);
    if (!was)
        atomic_store(&p2m->mapcache_invalidate, false);
}

int memslot_populate(struct memslots *ms, gfn_t gfn, mfn_t mfn, uint64_t nr,
                     enum p2m_type t)
{
    struct overlay ov = ov_window(gfn_x(gfn), gfn_x(gfn) + nr);
    uint64_t i;
    int rc = 0;

    if (!nr || range_check(gfn_x(gfn), nr, ms->p2m->nr_gfns))
        return -EFAULT;
    pthread_mutex_lock(&ms->lock);
    for (i = 0; i < nr && !rc; i++)
        rc = p2m_populate(ms->p2m, _gfn(gfn_x(gfn) + i), _mfn(mfn_x(mfn) + i),
                          t);
    if (rc)
        i--;
    if (!rc)
        rc = update_locked(ms, &ov, NULL, NULL);
    if (rc)
        unpopulate(ms->p2m, gfn_x(gfn), i);
    pthread_mutex_unlock(&ms->lock);
    return rc;
}

struct range_arg {
    uint64_t lo, hi;
    enum p2m_type type;
};

static void remove_entries(struct memslots *ms, void *opaque)
{
    struct range_arg *r = opaque;

    for (uint64_t g = r->lo; g < r->hi; g++)
        (void)!p2m_remove(ms->p2m, _gfn(g), NULL); /* -ENOENT: skipped */
}

int memslot_remove(struct memslots *ms, gfn_t gfn, uint64_t nr)
{
    struct overlay ov = ov_window(gfn_x(gfn), gfn_x(gfn) + nr);
    struct range_arg r = {gfn_x(gfn), gfn_x(gfn) + nr, P2M_INVALID};
    int rc;

    if (!nr || range_check(gfn_x(gfn), nr, ms->p2m->nr_gfns))
        return -EFAULT;
    ov.kind = OV_HOLE;
    pthread_mutex_lock(&ms->lock);
    rc = update_locked(ms, &ov, remove_entries, &r);
    pthread_mutex_unlock(&ms->lock);
    return rc;
}

/* ---- batches: many ranges, one transaction ------------------------------ */

static int span_cmp(const void *a, const void *b)
{
    const struct gfn_span *x = a, *y = b;
    return x->lo < y->lo ? -1 : x->lo > y->lo;
}

/* The ranges as sorted, merged gfn spans (*out malloc'ed, *nout >= 1). */
static int ranges_to_spans(struct memslots *ms, const struct memslot_range *r,
                           uint32_t n, struct gfn_span **out, uint32_t *nout)
{
    struct gfn_span *s;
    uint32_t k = 0;

    if (!n)
        return -EINVAL;
    for (uint32_t i = 0; i < n; i++)
        if (!r[i].nr || range_check(gfn_x(r[i].gfn), r[i].nr, ms->p2m->nr_gfns))
            return -EFAULT;
    s = ms_alloc(ms, n, sizeof(*s));
    if (!s)
        return -ENOMEM;
    for (uint32_t i = 0; i < n; i++)
        s[i] = (struct gfn_span){gfn_x(r[i].gfn), gfn_x(r[i].gfn) + r[i].nr};
    qsort(s, n, sizeof(*s), span_cmp);
    for (uint32_t i = 1; i < n; i++) {
        if (s[i].lo <= s[k].hi)
            s[k].hi = MAX(s[k].hi, s[i].hi);
        else
            s[++k] = s[i];
    }
    *out = s;
    *nout = k + 1;
    return 0;
}

int memslot_populate_ranges(struct memslots *ms, const struct memslot_range *r,
                            uint32_t n, enum p2m_type t)
{
    struct gfn_span *sp = NULL;
    uint32_t nsp = 0, fi = n;
    uint64_t fj = 0;
    int rc;

    if ((rc = ranges_to_spans(ms, r, n, &sp, &nsp)) < 0)
        return rc;
    struct overlay ov = ov_window(sp[0].lo, sp[nsp - 1].hi);
    ov.changed = sp;
    ov.nr_changed = nsp;
    pthread_mutex_lock(&ms->lock);
    /* populated so far: ranges [0, fi) whole and fj entries of range fi */
    for (uint32_t i = 0; i < n && !rc; i++) {
        uint64_t j;

        for (j = 0; j < r[i].nr && !rc; j++)
            rc = p2m_populate(ms->p2m, _gfn(gfn_x(r[i].gfn) + j),
                              _mfn(mfn_x(r[i].mfn) + j), t);
        if (rc) {
            fi = i;
            fj = j - 1;
        }
    }
    if (!rc)
        rc = update_locked(ms, &ov, NULL, NULL);
    if (rc) {
        for (uint32_t k = 0; k < fi; k++)
            unpopulate(ms->p2m, gfn_x(r[k].gfn), r[k].nr);
        if (fi < n)
            unpopulate(ms->p2m, gfn_x(r[fi].gfn), fj);
    }
    pthread_mutex_unlock(&ms->lock);
    free(sp);
    return rc;
}

static void remove_spans(struct memslots *ms, void *opaque)
{
    const struct overlay *ov = opaque;

    for (uint32_t i = 0; i < ov->nr_holes; i++)
        for (uint64_t g = ov->holes[i].lo; g < ov->holes[i].hi; g++)
            (void)!p2m_remove(ms->p2m, _gfn(g), NULL); /* -ENOENT: skipped */
}

int memslot_remove_ranges(struct memslots *ms, const struct memslot_range *r,
                          uint32_t n)
{
    struct gfn_span *sp = NULL;
    uint32_t nsp = 0;
    int rc;

    if ((rc = ranges_to_spans(ms, r, n, &sp, &nsp)) < 0)
        return rc;
    struct overlay ov = ov_window(sp[0].lo, sp[nsp - 1].hi);
    ov.kind = OV_HOLES;
    ov.holes = sp;
    ov.nr_holes = nsp;
    ov.changed = sp;
    ov.nr_changed = nsp;
    pthread_mutex_lock(&ms->lock);
    rc = update_locked(ms, &ov, remove_spans, &ov);
    pthread_mutex_unlock(&ms->lock);
    free(sp);
    return rc;
}

uint32_t memslot_count(struct memslots *ms)
{
    uint32_t n;

    pthread_mutex_lock(&ms->lock);
    n = ms->nr;
    pthread_mutex_unlock(&ms->lock);
    return n;
}

static void set_types(struct memslots *ms, void *opaque)
{
    struct range_arg *r = opaque;

    for (uint64_t g = r->lo; g < r->hi; g++)
        (void)!p2m_set_type(ms->p2m, _gfn(g), r->type); /* non-RAM skipped */
}

int memslot_set_type(struct memslots *ms, gfn_t gfn, uint64_t nr,
                     enum p2m_type t)
{
    struct overlay ov = ov_window(gfn_x(gfn), gfn_x(gfn) + nr);
    struct range_arg r = {gfn_x(gfn), gfn_x(gfn) + nr, t};
    int rc;

    if (!p2m_is_ram(t))
        return -EINVAL;
    if (!nr || range_check(gfn_x(gfn), nr, ms->p2m->nr_gfns))
        return -EFAULT;
    ov.kind = OV_TYPE;
    ov.type = t;
    pthread_mutex_lock(&ms->lock);
    rc = update_locked(ms, &ov, set_types, &r);
    pthread_mutex_unlock(&ms->lock);
    return rc;
}

struct move_arg {
    uint64_t from, to, nr;
};

static void move_finish(struct memslots *ms, void *opaque)
{
    struct move_arg *m = opaque;

    for (uint64_t i = 0; i < m->nr; i++)
        (void)!p2m_remove(ms->p2m, _gfn(m->from + i), NULL);
    if (ms->dirty)
        (void)!dirty_mark(ms->dirty, _gfn(m->to), m->nr);
}

int memslot_move(struct memslots *ms, gfn_t from, gfn_t to, uint64_t nr)
{
    struct move_arg m = {gfn_x(from), gfn_x(to), nr};
    struct p2m_entry *e = NULL;
    uint64_t i = 0;
    int rc;

    if (ms->p2m->kind != P2M_HVM)
        return -EINVAL;
    if (!nr || range_check(m.from, nr, ms->p2m->nr_gfns) ||
        range_check(m.to, nr, ms->p2m->nr_gfns))
        return -EFAULT;
    if (m.from < m.to + nr && m.to < m.from + nr)
        return -EINVAL; /* overlapping source and target */
    e = calloc(nr, sizeof(*e));
    if (!e)
        return -ENOMEM;
    pthread_mutex_lock(&ms->lock);
    rc = p2m_lookup_range(ms->p2m, from, nr, e);
    if (rc)
        goto out;
    for (uint64_t g = m.from; g < m.from + nr; g++)
        if (nr_trackers(ms->tracks, ms->nr_tracks, g)) {
            rc = -EBUSY; /* decided: tracked memory does not move */
            goto out;
        }
    /* the target takes the frames first (extra references) */
    for (i = 0; i < nr && !rc; i++) {
        if (e[i].type != P2M_INVALID) /* RAM and MMIO entries move */
            rc = p2m_populate(ms->p2m, _gfn(m.to + i), e[i].mfn, e[i].type);
        else {
            struct p2m_entry t;
            rc = p2m_lookup(ms->p2m, _gfn(m.to + i), &t);
            if (!rc && t.type != P2M_INVALID)
                rc = -EEXIST;
        }
    }
    if (rc) {
        i--;
        goto undo;
    }
    struct overlay ov = {
        .win_lo = MIN(m.from, m.to),
        .win_hi = MAX(m.from, m.to) + nr,
        .lo = m.from,
        .hi = m.from + nr,
        .kind = OV_HOLE,
        .log_dirty = -1,
    };
    rc = update_locked(ms, &ov, move_finish, &m);
    if (!rc)
        goto out;
undo:
    for (uint64_t k = 0; k < i; k++)
        if (e[k].type != P2M_INVALID)
            unpopulate(ms->p2m, m.to + k, 1);
out:
    pthread_mutex_unlock(&ms->lock);
    free(e);
    return rc;
}

int memslot_set_log_dirty(struct memslots *ms, bool on)
{
    struct overlay ov;
    int rc = 0;

    if (!ms->dirty)
        return -EINVAL;
    pthread_mutex_lock(&ms->lock);
    /* only flags change: the window is what the slots cover */
    ov = ov_window(ms->nr ? gfn_x(ms->slots[0].base) : 0,
                   ms->nr ? slot_end(&ms->slots[ms->nr - 1]) : 1);
    ov.log_dirty = on;
    if (ms->log_dirty != on) {
        rc = update_locked(ms, &ov, NULL, NULL);
        if (!rc)
            ms->log_dirty = on;
    }
    pthread_mutex_unlock(&ms->lock);
    return rc;
}

static bool has_track(struct memslots *ms, uint64_t g,
                      struct memslot_tracker *t)
{
    for (uint32_t i = track_lower(ms->tracks, ms->nr_tracks, g);
         i < ms->nr_tracks && gfn_x(ms->tracks[i].gfn) == g; i++)
        if (ms->tracks[i].t == t)
            return true;
    return false;
}

static int track_change(struct memslots *ms, gfn_t gfn,
                        struct memslot_tracker *t, bool add)
{
    struct overlay ov = ov_window(gfn_x(gfn), gfn_x(gfn) + 1);
    struct p2m_entry e;
    int rc;

    if (!t)
        return -EINVAL;
    ov.track_t = t;
    ov.track_add = add;
    pthread_mutex_lock(&ms->lock);
    rc = p2m_lookup(ms->p2m, gfn, &e);
    if (!rc && add && !p2m_is_ram(e.type))
        rc = -ENOENT;
    if (!rc && has_track(ms, gfn_x(gfn), t) == add)
        rc = add ? -EEXIST : -ENOENT;
    if (!rc)
        rc = update_locked(ms, &ov, NULL, NULL);
    pthread_mutex_unlock(&ms->lock);
    return rc;
}

int memslot_track(struct memslots *ms, gfn_t gfn, struct memslot_tracker *t)
{
    return track_change(ms, gfn, t, true);
}

int memslot_untrack(struct memslots *ms, gfn_t gfn, struct memslot_tracker *t)
{
    return track_change(ms, gfn, t, false);
}

/* ---- the exit path --------------------------------------------------------
 */

static int mmio_page(struct memslots *ms, uint64_t gpa, uint8_t *data,
                     uint32_t len, bool is_write)
{
    uint64_t g = gpa >> PAGE_SHIFT;
    struct p2m_entry e;
    int rc;

    rc = p2m_lookup(ms->p2m, _gfn(g), &e);
    if (rc || !p2m_is_ram(e.type))
        return -ENOENT;
    uint8_t *host =
        (uint8_t *)frames_ptr(ms->frames, e.mfn) + (gpa & (PAGE_SIZE - 1));
    if (!is_write) {
        if (ms->dirty)
            return dirty_copy_from_guest(ms->dirty, data, _gpa(gpa), len);
        memcpy(data, host, len);
        return 0;
    }
    /* P2M_RAM_RO is ROM to the guest: its stores are shown to subscribers
     * and dropped */
    bool refused = e.type == P2M_RAM_RO, tracked = false;
    for (uint32_t i = track_lower(ms->tracks, ms->nr_tracks, g);
         i < ms->nr_tracks && gfn_x(ms->tracks[i].gfn) == g; i++) {
        struct memslot_tracker *t = ms->tracks[i].t;
        tracked = true;
        if (t->write(t, _gpa(gpa), data, len))
            refused = true;
    }
    __atomic_fetch_add(tracked ? &ms->stats.tracked_writes
                               : &ms->stats.ram_writes,
                       1, __ATOMIC_RELAXED);
    if (refused) {
        __atomic_fetch_add(&ms->stats.refused_writes, 1, __ATOMIC_RELAXED);
        return 0;
    }
    if (ms->dirty) {
        rc = dirty_copy_to_guest(ms->dirty, _gpa(gpa), data, len);
        return rc == -EFAULT ? -ENOENT : rc; /* no longer RAM: dropped */
    }
    memcpy(host, data, len);
    return 0;
}

int memslot_handle_mmio(struct memslots *ms, gpa_t gpa, uint8_t *data,
                        uint32_t len, bool is_write)
{
    uint64_t a = gpa_x(gpa);
    int rc = 0;

    if (!len || len > 8 || range_check(a, len, ms->p2m->nr_gfns << PAGE_SHIFT))
        return -ENOENT;
    pthread_rwlock_rdlock(&ms->view);
    while (len && !rc) {
        uint32_t n = (uint32_t)MIN(len, PAGE_SIZE - (a & (PAGE_SIZE - 1)));
        rc = mmio_page(ms, a, data, n, is_write);
        a += n;
        data += n;
        len -= n;
    }
    pthread_rwlock_unlock(&ms->view);
    return rc;
}

/* ---- queries and the checker ----------------------------------------------
 */

int memslot_snapshot(struct memslots *ms, struct memslot **out, uint32_t *nr)
{
    pthread_rwlock_rdlock(&ms->view);
    *out = malloc((ms->nr ? ms->nr : 1) * sizeof(**out));
    if (*out) {
        copy_slots(*out, ms->slots, ms->nr);
        *nr = ms->nr;
    }
    pthread_rwlock_unlock(&ms->view);
    return *out ? 0 : -ENOMEM;
}

bool memslot_is_tracked(struct memslots *ms, gfn_t gfn)
{
    pthread_rwlock_rdlock(&ms->view);
    bool r = nr_trackers(ms->tracks, ms->nr_tracks, gfn_x(gfn)) > 0;
    pthread_rwlock_unlock(&ms->view);
    return r;
}

static int check_locked(struct memslots *ms)
{
    struct p2m_entry *e = NULL;
    uint32_t nlog = 0;
    int rc = 0;

    for (uint32_t i = 0; i < ms->nr && !rc; i++) {
        const struct memslot *s = &ms->slots[i];
        if (!s->npages || s->id < ms->id_base ||
            s->id - ms->id_base >= ms->max_slots ||
            !bitmap_test(ms->id_used, s->id - ms->id_base))
            return -EUCLEAN;
        if (i && (slot_end(&ms->slots[i - 1]) > gfn_x(s->base) ||
                  mergeable(&ms->slots[i - 1], s)))
            return -EUCLEAN; /* M1, M2 */
        if ((s->flags & MEMSLOT_LOG) && (s->flags & MEMSLOT_RO))
            return -EUCLEAN;
        e = calloc(s->npages, sizeof(*e));
        if (!e)
            return -ENOMEM;
        rc = p2m_lookup_range(ms->p2m, s->base, s->npages, e);
        for (uint64_t k = 0; k < s->npages && !rc; k++) {
            uint64_t g = gfn_x(s->base) + k;
            if (!p2m_is_ram(e[k].type) || mfn_x(e[k].mfn) != mfn_x(s->mfn) + k)
                rc = -EUCLEAN; /* M1 */
            uint32_t want = 0;
            if (e[k].type == P2M_RAM_RO ||
                nr_trackers(ms->tracks, ms->nr_tracks, g))
                want = MEMSLOT_RO;
            else if (ms->log_dirty || e[k].type == P2M_LOGDIRTY)
                want = MEMSLOT_LOG;
            if (want != s->flags)
                rc = -EUCLEAN; /* M2, M4 */
        }
        free(e);
        if (s->flags & MEMSLOT_LOG) {
            nlog++;
            struct dirty_slot *d = ms->dirty && s->id < ms->dirty->max_slots
                                       ? ms->dirty->by_id[s->id]
                                       : NULL;
            if (!d || gfn_x(d->base) != gfn_x(s->base) ||
                d->npages != s->npages)
                rc = -EUCLEAN; /* M5 */
        }
    }
    if (!rc && ms->dirty && ms->dirty->nr_slots != nlog)
        rc = -EUCLEAN; /* M5 */
    if (!rc && bitmap_weight(ms->id_used, ms->max_slots) != ms->nr)
        rc = -EUCLEAN;
    for (uint32_t i = 0; i < ms->nr_tracks && !rc; i++) {
        struct memslot_track *t = &ms->tracks[i];
        int64_t k = slot_at(ms->slots, ms->nr, gfn_x(t->gfn));
        if (k < 0 || !(ms->slots[k].flags & MEMSLOT_RO))
            rc = -EUCLEAN; /* M4 */
        if (i && (gfn_x(ms->tracks[i - 1].gfn) > gfn_x(t->gfn) ||
                  (gfn_x(ms->tracks[i - 1].gfn) == gfn_x(t->gfn) &&
                   ms->tracks[i - 1].t == t->t)))
            rc = -EUCLEAN;
    }
    return rc;
}

int memslot_check(struct memslots *ms)
{
    pthread_mutex_lock(&ms->lock);
    pthread_rwlock_rdlock(&ms->view);
    if (ms->dirty)
        dirty_lock(ms->dirty);
    int rc = check_locked(ms);
    if (ms->dirty)
        dirty_unlock(ms->dirty);
    pthread_rwlock_unlock(&ms->view);
    pthread_mutex_unlock(&ms->lock);
    return rc;
}
