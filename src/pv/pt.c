/*
 * PV page tables: the entry rules, promotion and demotion (preemptible for
 * L2..L4), entry updates, and the type ops handed to the frame module.
 * See pv.h for the contract and docs/frame.md for the protocol.
 */
#include <errno.h>
#include <stdio.h>

#include "pv/pv_internal.h"

bool pv_preempt_check(struct pv_vcpu *v)
{
    if (!v->preempt_after)
        return false;
    if (++v->preempt_count < v->preempt_after)
        return false;
    v->preempt_count = 0;
    if (!v->preempt_repeat)
        v->preempt_after = 0;
    return true;
}

void pv_corrupt(struct pv_domain *d, mfn_t mfn, const char *what)
{
    if (atomic_fetch_add(&d->corruption, 1) == 0)
        snprintf(d->corruption_msg, sizeof(d->corruption_msg), "mfn %#llx: %s",
                 (unsigned long long)mfn_x(mfn), what);
}

void pv_mark_dirty(struct pv_domain *d, mfn_t mfn)
{
    if (d->hooks.mark_dirty)
        d->hooks.mark_dirty(d->hooks.arg, mfn);
}

static void wtlb_flush(struct pv_vcpu *v, mfn_t mfn)
{
    for (unsigned i = 0; i < PV_WTLB_SIZE; i++) {
        uint64_t m = atomic_load(&v->wtlb[i]);

        if (m != PV_WTLB_EMPTY && (mfn_eq(mfn, INVALID_MFN) || m == mfn_x(mfn)))
            atomic_compare_exchange_strong(&v->wtlb[i], &m, PV_WTLB_EMPTY);
    }
}

void pv_flush(struct pv_vcpu *self, uint64_t mask, mfn_t mfn, uint64_t stamp)
{
    struct pv_domain *d = self->d;

    for (unsigned i = 0; i < d->nr_vcpus && i < 64; i++)
        if (mask & (1ULL << i))
            wtlb_flush(d->vcpus[i], mfn);
    if (d->hooks.flush)
        d->hooks.flush(d->hooks.arg, self, mask, stamp);
}

void pv_flush_local(struct pv_vcpu *self)
{
    pv_flush(self, 1ULL << self->id, INVALID_MFN, frames_tlb_now(self->d->f));
}

void pv_flush_all(struct pv_vcpu *self)
{
    pv_flush(self, PV_FLUSH_ALL, INVALID_MFN, frames_tlb_now(self->d->f));
}

/*
 * A child about to lose a reference from one of our entries must be ours
 * and allocated; anything else is accounting corruption (reported, and the
 * put is skipped rather than done on a stranger's frame).
 */
static bool child_ok(struct pv_vcpu *v, mfn_t mfn)
{
    struct pv_domain *d = v->d;

    if (!frames_mfn_valid(d->f, mfn) || !frame_count(d->f, mfn) ||
        frame_owner(d->f, mfn) != d->id) {
        pv_corrupt(d, mfn, "entry refers to a frame that is not ours");
        return false;
    }
    return true;
}

/* ------------------------------------------------------------ L1 rules */

static int get_page_from_l1e(struct pv_vcpu *v, uint64_t e)
{
    struct pv_domain *d = v->d;
    mfn_t mfn = pte_mfn(e);
    int rc;

    if (!(e & PTE_P))
        return 0;
    if (e & L1_DISALLOW)
        return -EINVAL;
    if (!frames_mfn_valid(d->f, mfn))
        /* not RAM: allowed only in granted I/O memory (no frame, no
         * reference, no type: every access exits as MMIO) */
        return pv_iomem_ok(d, mfn) ? 0 : -EINVAL;
    rc = frame_get(d->f, mfn, d->id);
    if (rc)
        return rc == -EPERM ? -EPERM : -EINVAL;
    if (e & PTE_RW) {
        rc = frame_get_type(d->f, mfn, FRAME_TYPE_WRITABLE, pv_get_tf(v),
                            &pv_type_ops, v);
        if (rc) {
            frame_put(d->f, mfn);
            return -EBUSY;
        }
    }
    return 0;
}

static void put_page_from_l1e(struct pv_vcpu *v, uint64_t e)
{
    struct pv_domain *d = v->d;
    mfn_t mfn = pte_mfn(e);

    if (!(e & PTE_P) || pv_iomem_ok(d, mfn) || !child_ok(v, mfn))
        return;
    /* F13: an entry that holds no writable reference (one the guest put
     * there behind validation's back) is reported, never trusted. */
    if ((e & PTE_RW) && frame_put_type(d->f, mfn, FRAME_TYPE_WRITABLE, 0,
                                       &pv_type_ops, v) != 0) {
        pv_corrupt(d, mfn, "writable put without a writable reference");
        return;
    }
    frame_put(d->f, mfn);
}

/* ------------------------------------------------------- L2..L4 rules */

int pv_get_page_and_type(struct pv_vcpu *v, mfn_t mfn, uint64_t type,
                         unsigned ptf)
{
    struct pv_domain *d = v->d;
    bool have_ref = (ptf & PTF_PARTIAL_SET) && !(ptf & PTF_NOREF);
    unsigned tf =
        pv_get_tf(v) | ((ptf & PTF_PREEMPTIBLE) ? FRAME_TF_PREEMPTIBLE : 0);
    int rc;

    if (!frames_mfn_valid(d->f, mfn))
        return -EINVAL;
    if (!have_ref) {
        rc = frame_get(d->f, mfn, d->id);
        if (rc)
            return rc == -EPERM ? -EPERM : -EINVAL;
    }
    rc = frame_get_type(d->f, mfn, type, tf, &pv_type_ops, v);
    /*
     * Keep the general reference on success; when the entry already held
     * it; when the target's tear-down was queued on this vCPU (the
     * deferred put owns it now); or when asked to on partial progress.
     */
    if (rc && !have_ref && !mfn_eq(v->old_table, mfn) &&
        !((ptf & PTF_RETAIN) && rc == -ERESTART))
        frame_put(d->f, mfn);
    return rc;
}

int pv_put_pt_ref(struct pv_vcpu *v, mfn_t mfn, uint64_t type, unsigned ptf)
{
    struct pv_domain *d = v->d;
    unsigned tf = (ptf & PTF_PREEMPTIBLE) ? FRAME_TF_PREEMPTIBLE : 0;
    int rc;

    if (!child_ok(v, mfn))
        return 0;
    if (ptf & PTF_PARTIAL_SET) {
        tf |= FRAME_TF_PARTIAL_SET;
        if (d->rules.cleanup_put_always)
            tf |= FRAME_TF_TEST_LEGACY_PUT;
    }
    rc = frame_put_type(d->f, mfn, type, tf, &pv_type_ops, v);
    if (rc == -EUCLEAN) {
        pv_corrupt(d, mfn, "type put without a type reference");
        rc = 0;
    } else if (rc) {
        return rc;
    }
    if (!(ptf & PTF_NOREF))
        frame_put(d->f, mfn);
    return 0;
}

static int get_page_from_lne(struct pv_vcpu *v, uint64_t e, unsigned level,
                             unsigned ptf)
{
    if (e & LN_DISALLOW)
        return -EINVAL;
    /* An L2's L1 children validate in one go; L3/L4 children preempt. */
    if (level == 2)
        ptf &= ~PTF_PREEMPTIBLE;
    return pv_get_page_and_type(v, pte_mfn(e), FRAME_TYPE_PT(level - 1), ptf);
}

static bool entries_hold_refs(const uint64_t *pt, unsigned level, unsigned n)
{
    for (unsigned i = 0; i < n; i++)
        if (!pv_is_hv_slot(level, i) && (pv_entry_load(pt, i) & PTE_P))
            return true;
    return false;
}

/* ------------------------------------------------------------ promote */

/* Record a (de)validation's progress point and its partial flags. */
static void set_progress(struct frame *pg, unsigned nr, unsigned pf)
{
    pg->nr_validated = (uint16_t)nr;
    pg->partial_flags = (uint8_t)pf;
}

/*
 * The state shared by promote_ln() and demote_ln(): the frame, its
 * entries, whether this call resumes, and the preemption flag for the
 * children.  A fresh call starts its progress point at fresh_nr.
 */
struct pt_walk {
    struct frame *pg;
    uint64_t *pt;
    bool resume;
    unsigned ptf;
};

static struct pt_walk pt_walk_begin(struct pv_domain *d, mfn_t mfn,
                                    unsigned vflags, unsigned fresh_nr)
{
    struct pt_walk w = {
        .pg = frames_get_frame(d->f, mfn),
        .pt = pv_table(d, mfn),
        .resume = vflags & FRAME_TF_RESUME,
        .ptf = (vflags & FRAME_TF_PREEMPTIBLE) ? PTF_PREEMPTIBLE : 0,
    };

    if (!w.resume)
        set_progress(w.pg, fresh_nr, 0);
    return w;
}

/*
 * P5. The guest kernel runs in ring 3, so every present entry of a PV
 * page table gets the user bit, as Xen sets it for 64-bit PV guests: a
 * kernel writes kernel mappings without it (Linux does), and its user
 * space is kept out of them by the separate user L4, never by this bit.
 * Made in place once the entry is validated (and logged dirty).
 */
static void guest_user_bit(struct pv_domain *d, mfn_t table, uint64_t *pt,
                           unsigned i)
{
    uint64_t e = pv_entry_load(pt, i);

    if ((e & PTE_P) && !(e & PTE_US)) {
        __atomic_fetch_or(&pt[i], PTE_US, __ATOMIC_SEQ_CST);
        pv_mark_dirty(d, table);
    }
}

static int promote_l1(struct pv_vcpu *v, mfn_t mfn)
{
    uint64_t *pt = pv_table(v->d, mfn);
    unsigned i;
    int rc;

    for (i = 0; i < PT_ENTRIES; i++) {
        rc = get_page_from_l1e(v, pv_entry_load(pt, i));
        if (rc) {
            while (i-- > 0)
                put_page_from_l1e(v, pv_entry_load(pt, i));
            return rc;
        }
    }
    for (i = 0; i < PT_ENTRIES; i++)
        guest_user_bit(v->d, mfn, pt, i);
    return 0;
}

/*
 * Validate an L2..L4 from nr_validated (resume) or 0.  On return:
 *  0          all guest entries hold their references;
 *  -EINTR     nothing was done and nothing is held (fresh start only);
 *  -ERESTART  entries [0, nr_validated) hold references, and entry
 *             nr_validated holds a general reference iff PARTIAL_SET;
 *  other      invalid entry at nr_validated; if references are held, this
 *             frame became v's deferred put (a clean-up), which unwinds it.
 */
static int promote_ln(struct pv_vcpu *v, mfn_t mfn, unsigned level,
                      unsigned vflags)
{
    struct pv_domain *d = v->d;
    struct pt_walk w = pt_walk_begin(d, mfn, vflags, 0);
    struct frame *pg = w.pg;
    uint64_t *pt = w.pt;
    bool resume = w.resume;
    unsigned ptf = w.ptf;
    unsigned start, pf, i;
    int rc = 0;

    start = pg->nr_validated;
    pf = pg->partial_flags;
    for (i = start; i < PT_ENTRIES; i++, pf = 0) {
        uint64_t e = pv_entry_load(pt, i);
        mfn_t child = pte_mfn(e);

        if (i > start && ptf && pv_preempt_check(v))
            rc = -EINTR;
        else if (pv_is_hv_slot(level, i) || !(e & PTE_P))
            continue;
        else
            rc = get_page_from_lne(v, e, level, pf | ptf | PTF_RETAIN);
        if (rc == 0) {
            guest_user_bit(d, mfn, pt, i);
            continue;
        }

        if (rc == -ERESTART) {
            /* The child is partial; our entry keeps a general ref on it. */
            set_progress(pg, i, PTF_PARTIAL_SET);
            if (d->rules.no_partial_ref) {
                /* Test-only: the pre-XSA-299 rule. */
                frame_put(d->f, child);
                pg->partial_flags |= PTF_NOREF;
            }
            return rc;
        }
        if (rc == -EINTR) {
            if (!resume && i == 0)
                return rc;
            set_progress(pg, i, pf);
            return -ERESTART;
        }
        /* Invalid entry i. */
        set_progress(pg, i, pf);
        if (mfn_eq(v->old_table, child)) {
            /* The child's own tear-down was queued: take over its ref. */
            pg->partial_flags = PTF_PARTIAL_SET;
            v->old_table = INVALID_MFN;
        }
        if (!mfn_eq(v->old_table, INVALID_MFN)) {
            pv_corrupt(d, mfn, "deferred put busy during validation");
            return rc;
        }
        if ((pg->partial_flags & PTF_PARTIAL_SET) ||
            entries_hold_refs(pt, level, i)) {
            v->old_table = mfn;
            v->old_type = FRAME_TYPE_PT(level);
            v->old_partial = true;
        }
        return rc;
    }
    if (level == 4)
        for (i = 0; i < PV_HV_L4_NR; i++)
            __atomic_store_n(&pt[PV_HV_L4_FIRST + i], d->hv_l4[i],
                             __ATOMIC_RELAXED);
    set_progress(pg, PT_ENTRIES, 0);
    return 0;
}

/* ------------------------------------------------------------- demote */

static int demote_l1(struct pv_vcpu *v, mfn_t mfn)
{
    uint64_t *pt = pv_table(v->d, mfn);

    for (unsigned i = 0; i < PT_ENTRIES; i++)
        put_page_from_l1e(v, pv_entry_load(pt, i));
    return 0;
}

/*
 * Drop the references of an L2..L4, from the top (fresh) or from the
 * progress point (resume), preemptibly.  Returns 0, -EINTR (fresh and
 * nothing done), or -ERESTART with the progress recorded as for promotion.
 */
static int demote_ln(struct pv_vcpu *v, mfn_t mfn, unsigned level,
                     unsigned vflags)
{
    struct pt_walk w = pt_walk_begin(v->d, mfn, vflags, PT_ENTRIES);
    struct frame *pg = w.pg;
    uint64_t *pt = w.pt;
    bool resume = w.resume;
    unsigned ptf = w.ptf;
    unsigned pf;
    int i, start, rc;

    pf = pg->partial_flags;
    start = (int)pg->nr_validated - !(pf & PTF_PARTIAL_SET);
    for (i = start; i >= 0; i--, pf = 0) {
        uint64_t e = pv_entry_load(pt, (unsigned)i);

        if (i != start && ptf && pv_preempt_check(v))
            rc = -EINTR;
        else if (pv_is_hv_slot(level, (unsigned)i) || !(e & PTE_P))
            continue;
        else
            rc = pv_put_pt_ref(v, pte_mfn(e), FRAME_TYPE_PT(level - 1),
                               pf | (level > 2 ? ptf : 0));
        if (rc == 0)
            continue;
        if (rc == -ERESTART) {
            set_progress(pg, (unsigned)i, PTF_PARTIAL_SET);
            return rc;
        }
        /* -EINTR: entry i still holds what it held. */
        set_progress(pg, (unsigned)i + !(pf & PTF_PARTIAL_SET), pf);
        if (!resume && i == start)
            return -EINTR;
        return -ERESTART;
    }
    set_progress(pg, 0, 0);
    return 0;
}

/* ------------------------------------------------------------ type ops */

static int pv_validate(void *ctx, mfn_t mfn, uint64_t type, unsigned flags)
{
    struct pv_vcpu *v = ctx;
    unsigned level = frame_type_level(type);

    /* A page table is dirtied when its type count becomes non-zero. */
    pv_mark_dirty(v->d, mfn);
    if (level == 1)
        return promote_l1(v, mfn);
    return promote_ln(v, mfn, level, flags);
}

static int pv_devalidate(void *ctx, mfn_t mfn, uint64_t type, unsigned flags)
{
    struct pv_vcpu *v = ctx;
    unsigned level = frame_type_level(type);

    if (level == 1)
        return demote_l1(v, mfn);
    return demote_ln(v, mfn, level, flags);
}

static bool pv_teardown_owns(void *ctx, mfn_t mfn)
{
    struct pv_vcpu *v = ctx;

    return mfn_eq(v->old_table, mfn) && v->old_partial;
}

static void pv_type_changed(void *ctx, mfn_t mfn, uint64_t old_type,
                            uint64_t new_type)
{
    struct pv_vcpu *v = ctx;
    struct pv_domain *d = v->d;

    /* No vCPU may keep writing through a translation made for the old
     * (writable) use of the frame: the XSA-401 safety action, after the
     * commit (F9), for the vCPUs that have not flushed since the frame's
     * last writable reference went (F12). */
    if (old_type == FRAME_TYPE_WRITABLE)
        pv_flush(v, PV_FLUSH_ALL, mfn, frame_tlbflush_stamp(d->f, mfn));
    if (d->hooks.type_changed)
        d->hooks.type_changed(d->hooks.arg, mfn, old_type, new_type);
}

const struct frame_type_ops pv_type_ops = {
    .validate = pv_validate,
    .devalidate = pv_devalidate,
    .teardown_owns = pv_teardown_owns,
    .type_changed = pv_type_changed,
};

/* ------------------------------------------------------- entry update */

/*
 * Write entry idx: a plain exchange, or a compare-exchange that keeps the
 * A/D bits set meanwhile.  Returns the old value.
 */
static uint64_t update_entry(uint64_t *pt, unsigned idx, uint64_t nval,
                             bool preserve_ad)
{
    uint64_t o;

    if (!preserve_ad)
        return __atomic_exchange_n(&pt[idx], nval, __ATOMIC_SEQ_CST);
    o = pv_entry_load(pt, idx);
    while (!__atomic_compare_exchange_n(&pt[idx], &o,
                                        nval | (o & (PTE_A | PTE_D)), false,
                                        __ATOMIC_SEQ_CST, __ATOMIC_RELAXED))
        ;
    return o;
}

int pv_mod_entry(struct pv_vcpu *v, mfn_t table, unsigned level, unsigned idx,
                 uint64_t nval, bool preserve_ad)
{
    uint64_t *pt = pv_table(v->d, table);
    uint64_t oval = pv_entry_load(pt, idx);
    uint64_t fast = level == 1 ? L1_FASTPATH : LN_FASTPATH;
    int rc;

    if (pv_is_hv_slot(level, idx))
        return -EINVAL;
    if (nval & PTE_P) {
        nval |= PTE_US; /* P5 (guest_user_bit()) */
        if (nval & (level == 1 ? L1_DISALLOW : LN_DISALLOW))
            return -EINVAL;
        if ((oval & PTE_P) && !((oval ^ nval) & ~fast)) {
            /* Same frame, same rights: no reference changes. */
            (void)update_entry(pt, idx, nval, preserve_ad);
            pv_mark_dirty(v->d, table); /* a write to the guest's memory */
            return 0;
        }
        if (level == 1)
            rc = get_page_from_l1e(v, nval);
        else
            rc = get_page_from_lne(v, nval, level, PTF_PREEMPTIBLE);
        if (rc)
            return rc;
    }
    oval = update_entry(pt, idx, nval, preserve_ad);
    /* Logged after the write and before any reference it held can go
     * (the table itself is held by the caller). */
    pv_mark_dirty(v->d, table);
    if (!(oval & PTE_P))
        return 0;
    if (v->d->hooks.entry_replaced)
        v->d->hooks.entry_replaced(v->d->hooks.arg, v, table, idx);
    if (level == 1 && (oval & PTE_RW) && mfn_eq(pte_mfn(oval), table)) {
        /* A writable self-map no validation let in (the damage of a stale
         * translation): its type reference would be on this very table,
         * which we hold locked.  Report it; never wait on our own lock. */
        pv_corrupt(v->d, table, "L1 entry maps its own table");
    } else if (level == 1) {
        put_page_from_l1e(v, oval);
    } else if (!mfn_eq(v->old_table, INVALID_MFN)) {
        pv_corrupt(v->d, table, "deferred put busy during an update");
    } else if (child_ok(v, pte_mfn(oval))) {
        /* The old child's put may cascade: defer it to the next drain. */
        v->old_table = pte_mfn(oval);
        v->old_type = FRAME_TYPE_PT(level - 1);
        v->old_partial = false;
    }
    return 0;
}
