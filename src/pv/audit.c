/*
 * The auditor: recompute every reference a PV domain's frames should have
 * from first principles and compare with the frame table (pv.h P1-P4).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "pv/pv_internal.h"

struct expect {
    uint64_t gen;  /* general references */
    uint64_t typ;  /* type references */
    uint64_t want; /* FRAME_TYPE_* the type referrers need, or ~0 if none */
    bool conflict; /* referrers disagree about the type */
};

struct audit {
    struct pv_domain *d;
    struct expect *e;
    struct pv_audit_report *rep;
};

static void __printf(3, 4) bad(struct audit *a, mfn_t mfn, const char *fmt, ...)
{
    va_list ap;

    if (a->rep->errors++ == 0) {
        a->rep->first_mfn = mfn;
        va_start(ap, fmt);
        vsnprintf(a->rep->first, sizeof(a->rep->first), fmt, ap);
        va_end(ap);
    }
}

static bool ours(struct audit *a, mfn_t mfn)
{
    struct frames *f = a->d->f;

    return frames_mfn_valid(f, mfn) && frame_owner(f, mfn) == a->d->id &&
           frame_count(f, mfn);
}

static void want_type(struct audit *a, mfn_t mfn, uint64_t type)
{
    struct expect *x = &a->e[mfn_x(mfn)];

    x->typ++;
    if (x->want == ~0ULL)
        x->want = type;
    else if (x->want != type)
        x->conflict = true;
}

/* A referrer (pin, base, deferred put, partial entry) of frame mfn. */
static void hold(struct audit *a, mfn_t mfn, bool type_ref, const char *who)
{
    if (!ours(a, mfn)) {
        bad(a, mfn, "%s refers to a frame that is not the domain's", who);
        return;
    }
    a->e[mfn_x(mfn)].gen++;
    if (type_ref)
        a->e[mfn_x(mfn)].typ++;
}

static const char *type_name(uint64_t t)
{
    static const char *const names[8] = {"plain", "L1", "L2", "L3",
                                         "L4",    "?5", "?6", "writable"};

    return names[(t & FRAME_TYPE_MASK) >> FRAME_TYPE_SHIFT];
}

/*
 * The damage itself, named: an entry of a validated table that validation
 * would have refused, judged by what its target is now (the counts may
 * agree or not; an entry stored behind validation's back, e.g. through a
 * stale writable translation, holds no reference at all).
 */
static void entry_rules(struct audit *a, mfn_t table, unsigned level,
                        unsigned i, uint64_t e)
{
    mfn_t child = pte_mfn(e);
    uint64_t t = frame_type_word(a->d->f, child);
    uint64_t need = level > 1 ? FRAME_TYPE_PT(level - 1)
                              : ((e & PTE_RW) ? FRAME_TYPE_WRITABLE : 0);

    if (mfn_eq(child, table) && (level > 1 || (e & PTE_RW))) {
        bad(a, table,
            "entry %u (level %u) maps its own table%s: validation refuses "
            "this (linear or writable self-map)",
            i, level, (e & PTE_RW) ? " writable" : "");
        return;
    }
    if (need && (t & FRAME_TYPE_MASK) != need &&
        !(need == FRAME_TYPE_WRITABLE && !frame_type_level(t)))
        bad(a, table,
            "entry %u (level %u) maps mfn %#" PRIx64 " (%s) %s: validation "
            "refuses this",
            i, level, mfn_x(child), type_name(t),
            level == 1 ? "writable" : "as its next level");
}

/* The references entry e of a table of the given level holds. */
static void count_entry(struct audit *a, mfn_t table, unsigned level,
                        unsigned i, uint64_t e)
{
    mfn_t child = pte_mfn(e);

    if (!(e & PTE_P) || pv_is_hv_slot(level, i))
        return;
    if (level == 1 && pv_iomem_ok(a->d, child))
        return; /* granted I/O memory: holds nothing */
    if (!ours(a, child)) {
        bad(a, table,
            "entry %u (level %u) refers to mfn %#" PRIx64
            " which is not the domain's",
            i, level, mfn_x(child));
        return;
    }
    if (e & (level == 1 ? L1_DISALLOW : LN_DISALLOW))
        bad(a, table, "entry %u (level %u) has refused flags", i, level);
    entry_rules(a, table, level, i, e);
    a->e[mfn_x(child)].gen++;
    if (level > 1)
        want_type(a, child, FRAME_TYPE_PT(level - 1));
    else if (e & PTE_RW)
        want_type(a, child, FRAME_TYPE_WRITABLE);
}

static void count_table(struct audit *a, mfn_t mfn, uint64_t t)
{
    struct frame *pg = frames_get_frame(a->d->f, mfn);
    const uint64_t *pt = pv_table(a->d, mfn);
    unsigned level = frame_type_level(t), n = PT_ENTRIES, i;

    a->rep->tables++;
    if (t & FRAME_TYPE_PARTIAL) {
        n = pg->nr_validated;
        if (n > PT_ENTRIES ||
            (n == PT_ENTRIES && (pg->partial_flags & FRAME_PARTIAL_SET))) {
            bad(a, mfn, "partial progress %u out of range", n);
            return;
        }
        /* P3: the entry at the progress point holds a general ref. */
        if (pg->partial_flags & FRAME_PARTIAL_SET) {
            uint64_t e = pv_entry_load(pt, n);

            if (!(e & PTE_P))
                bad(a, mfn, "partial entry %u is not present", n);
            else
                hold(a, pte_mfn(e), false, "a partial entry");
        }
    } else if (level == 4) {
        for (i = 0; i < PV_HV_L4_NR; i++)
            if (pv_entry_load(pt, PV_HV_L4_FIRST + i) != a->d->hv_l4[i])
                bad(a, mfn, "hypervisor slot %u not filled",
                    PV_HV_L4_FIRST + i);
    }
    for (i = 0; i < n; i++)
        count_entry(a, mfn, level, i, pv_entry_load(pt, i));
}

static void compare(struct audit *a, mfn_t mfn)
{
    struct pv_domain *d = a->d;
    struct expect *x = &a->e[mfn_x(mfn)];
    uint64_t c = atomic_load(&frames_get_frame(d->f, mfn)->count_info);
    uint64_t t = frame_type_word(d->f, mfn);
    uint64_t gen = x->gen, tc = t & FRAME_TYPE_COUNT_MASK;

    if (d->hooks.extra_refs)
        gen += d->hooks.extra_refs(d->hooks.arg, mfn);
    if (d->hooks.extra_writable) {
        uint64_t w = d->hooks.extra_writable(d->hooks.arg, mfn);

        if (w) {
            x->typ += w;
            if (x->want == ~0ULL)
                x->want = FRAME_TYPE_WRITABLE;
            else if (x->want != FRAME_TYPE_WRITABLE)
                x->conflict = true;
        }
    }
    if ((c & FRAME_COUNT_MASK) != gen)
        bad(a, mfn, "general count %" PRIu64 ", references found %" PRIu64,
            (uint64_t)(c & FRAME_COUNT_MASK), gen);
    if (tc != x->typ)
        bad(a, mfn, "type count %" PRIu64 ", type references found %" PRIu64,
            (uint64_t)tc, x->typ);
    if (x->conflict)
        bad(a, mfn, "referrers need different types (writable and table?)");
    else if (x->want != ~0ULL && (t & FRAME_TYPE_MASK) != x->want)
        bad(a, mfn, "type %u but referrers need %u",
            (unsigned)((t & FRAME_TYPE_MASK) >> FRAME_TYPE_SHIFT),
            (unsigned)(x->want >> FRAME_TYPE_SHIFT));
}

int pv_audit(struct pv_domain *d, struct pv_audit_report *rep)
{
    struct pv_audit_report local;
    struct frames *f = d->f;
    struct audit a = {d, NULL, rep ? rep : &local};
    uint64_t m;

    *a.rep = (struct pv_audit_report){0, 0, 0, INVALID_MFN, ""};
    a.e = calloc(f->nr_frames, sizeof(*a.e));
    if (!a.e)
        return -ENOMEM;
    for (m = 0; m < f->nr_frames; m++)
        a.e[m].want = ~0ULL;

    if (atomic_load(&d->corruption))
        bad(&a, INVALID_MFN, "%" PRIu64 " corruption(s) recorded, first: %s",
            (uint64_t)atomic_load(&d->corruption), d->corruption_msg);

    /* Holders outside page tables. */
    for (unsigned i = 0; i < d->nr_vcpus; i++) {
        struct pv_vcpu *v = d->vcpus[i];

        if (!mfn_eq(v->base, INVALID_MFN)) {
            hold(&a, v->base, false, "a base pointer");
            if (ours(&a, v->base))
                want_type(&a, v->base, FRAME_TYPE_L4);
        }
        if (!mfn_eq(v->user_base, INVALID_MFN)) {
            hold(&a, v->user_base, false, "a user base pointer");
            if (ours(&a, v->user_base))
                want_type(&a, v->user_base, FRAME_TYPE_L4);
        }
        if (!mfn_eq(v->old_table, INVALID_MFN))
            hold(&a, v->old_table, !v->old_partial, "a deferred put");
        /* P2: no writable translation of a frame used as a page table. */
        for (unsigned j = 0; j < PV_WTLB_SIZE; j++) {
            uint64_t w = atomic_load(&v->wtlb[j]);

            if (w != PV_WTLB_EMPTY && w < f->nr_frames &&
                frame_type_level(frame_type_word(d->f, _mfn(w))))
                bad(&a, _mfn(w),
                    "vCPU %u keeps a writable translation of "
                    "a page table",
                    i);
        }
    }

    /* The domain's frames: their own flags, and what their entries hold. */
    for (m = 0; m < f->nr_frames; m++) {
        mfn_t mfn = _mfn(m);
        uint64_t c, t, tc;
        unsigned level;

        if (frame_owner(f, mfn) != d->id)
            continue;
        c = atomic_load(&frames_get_frame(f, mfn)->count_info);
        if (!(c & FRAME_COUNT_MASK))
            continue;
        a.rep->frames++;
        t = frame_type_word(f, mfn);
        tc = t & FRAME_TYPE_COUNT_MASK;
        level = frame_type_level(t);
        if (c & FRAME_ALLOCATED)
            a.e[m].gen++;
        if (t & FRAME_TYPE_PINNED) {
            a.e[m].gen++;
            a.e[m].typ++;
        }
        if (t & FRAME_TYPE_PARTIAL) {
            a.e[m].gen++;
            a.e[m].typ++;
        }
        if (t & FRAME_TYPE_LOCKED)
            bad(&a, mfn, "locked at a quiescent point");
        if (level && tc && !(t & (FRAME_TYPE_VALIDATED | FRAME_TYPE_PARTIAL)))
            bad(&a, mfn, "(de)validation in progress at a quiescent point");
        if (level && !tc &&
            (t &
             (FRAME_TYPE_VALIDATED | FRAME_TYPE_PARTIAL | FRAME_TYPE_PINNED)))
            bad(&a, mfn, "unused page table still marked in use");
        if ((t & FRAME_TYPE_PINNED) && !(t & FRAME_TYPE_VALIDATED))
            bad(&a, mfn, "pinned but not validated");
        if (level && tc && (t & (FRAME_TYPE_VALIDATED | FRAME_TYPE_PARTIAL)))
            count_table(&a, mfn, t);
    }
    for (m = 0; m < f->nr_frames; m++)
        if (frame_owner(f, _mfn(m)) == d->id && frame_count(f, _mfn(m)))
            compare(&a, _mfn(m));
    free(a.e);
    return a.rep->errors ? -EUCLEAN : 0;
}
