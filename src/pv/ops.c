/*
 * PV operations: domain and vCPU state, the deferred put, mmu_update,
 * mmuext_op, memory_op reservations, update_va_mapping, teardown and the
 * page-frame info query.  See pv.h for the contract.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "lib/range.h"
#include "pv/pv_internal.h"

/* ---------------------------------------------------------------- set-up */

int pv_iomem_grant(struct pv_domain *d, mfn_t first, uint64_t nr)
{
    unsigned n = atomic_load_explicit(&d->nr_iomem, memory_order_relaxed);

    if (!nr || mfn_x(first) < d->f->nr_frames ||
        mfn_x(first) + nr < mfn_x(first) || mfn_x(first) + nr > (1ULL << 40))
        return -EINVAL;
    if (n == PV_MAX_IOMEM)
        return -ENOSPC;
    d->iomem[n] = (struct pv_iomem){mfn_x(first), nr};
    atomic_store_explicit(&d->nr_iomem, n + 1, memory_order_release);
    return 0;
}

bool pv_iomem_ok(struct pv_domain *d, mfn_t mfn)
{
    unsigned n = atomic_load_explicit(&d->nr_iomem, memory_order_acquire);

    if (frames_mfn_valid(d->f, mfn))
        return false;
    if (d->rules.iomem_any)
        return true; /* the rule off (tests) */
    for (unsigned i = 0; i < n; i++)
        if (mfn_x(mfn) - d->iomem[i].first < d->iomem[i].nr)
            return true;
    return false;
}

int pv_domain_init(struct pv_domain *d, struct frames *f, domid_t id)
{
    memset(d, 0, sizeof(*d));
    atomic_init(&d->nr_iomem, 0);
    if (id >= FRAME_MAX_DOMAINS)
        return -EINVAL;
    d->f = f;
    d->id = id;
    d->m2p = malloc(f->nr_frames * sizeof(*d->m2p));
    if (!d->m2p)
        return -ENOMEM;
    for (uint64_t i = 0; i < f->nr_frames; i++)
        atomic_init(&d->m2p[i], PV_M2P_INVALID);
    atomic_init(&d->corruption, 0);
    return 0;
}

void pv_domain_fini(struct pv_domain *d)
{
    if (!d->m2p_external)
        free(d->m2p);
    d->m2p = NULL;
}

void pv_domain_m2p_move(struct pv_domain *d, _Atomic uint64_t *to)
{
    for (uint64_t i = 0; i < d->f->nr_frames; i++)
        atomic_init(&to[i], atomic_load(&d->m2p[i]));
    if (!d->m2p_external)
        free(d->m2p);
    d->m2p = to;
    d->m2p_external = true;
}

int pv_vcpu_init(struct pv_vcpu *v, struct pv_domain *d)
{
    memset(v, 0, sizeof(*v));
    if (d->nr_vcpus >= PV_MAX_VCPUS)
        return -ENOSPC;
    v->d = d;
    v->id = d->nr_vcpus;
    v->base = v->user_base = v->old_table = INVALID_MFN;
    for (unsigned i = 0; i < PV_WTLB_SIZE; i++)
        atomic_init(&v->wtlb[i], PV_WTLB_EMPTY);
    d->vcpus[d->nr_vcpus++] = v;
    return 0;
}

void pv_vcpu_set_preempt(struct pv_vcpu *v, uint64_t n, bool repeat)
{
    v->preempt_after = n;
    v->preempt_count = 0;
    v->preempt_repeat = repeat;
}

int pv_vcpu_tlb_fill(struct pv_vcpu *v, mfn_t mfn)
{
    struct frames *f = v->d->f;
    unsigned i;
    uint64_t t;

    if (!frames_mfn_valid(f, mfn) || frame_owner(f, mfn) != v->d->id)
        return -EINVAL;
    for (i = 0; i < PV_WTLB_SIZE; i++) {
        uint64_t empty = PV_WTLB_EMPTY;

        if (atomic_load(&v->wtlb[i]) == mfn_x(mfn) ||
            atomic_compare_exchange_strong(&v->wtlb[i], &empty, mfn_x(mfn)))
            break;
    }
    if (i == PV_WTLB_SIZE)
        atomic_store(&v->wtlb[i = 0], mfn_x(mfn));
    /*
     * Fill first, then check: a type change commits before it flushes, so
     * either the flush sees this entry or this check sees the new type.
     */
    t = frame_type_word(f, mfn);
    if ((t & FRAME_TYPE_MASK) != FRAME_TYPE_WRITABLE ||
        !(t & FRAME_TYPE_COUNT_MASK)) {
        uint64_t m = mfn_x(mfn);

        atomic_compare_exchange_strong(&v->wtlb[i], &m, PV_WTLB_EMPTY);
        return -EBUSY;
    }
    return 0;
}

/* ------------------------------------------------------------- draining */

int pv_drain(struct pv_vcpu *v)
{
    struct pv_domain *d = v->d;
    mfn_t mfn = v->old_table;
    unsigned tf = FRAME_TF_PREEMPTIBLE;
    int rc;

    if (mfn_eq(mfn, INVALID_MFN))
        return 0;
    if (d->rules.no_deferred_partial)
        tf |= FRAME_TF_TEST_LEGACY_PUT; /* test-only: forget the mode */
    else if (v->old_partial)
        tf |= FRAME_TF_PARTIAL_SET;
    if (frames_mfn_valid(d->f, mfn) && frame_count(d->f, mfn) &&
        frame_owner(d->f, mfn) == d->id) {
        rc = frame_put_type(d->f, mfn, v->old_type, tf, &pv_type_ops, v);
        if (rc == -EINTR || rc == -ERESTART) {
            v->old_partial = rc == -ERESTART;
            return -ERESTART;
        }
        if (rc)
            pv_corrupt(d, mfn, "deferred put without a type reference");
        frame_put(d->f, mfn);
    } else {
        pv_corrupt(d, mfn, "deferred put of a frame that is not ours");
    }
    v->old_table = INVALID_MFN;
    v->old_partial = false;
    return 0;
}

/*
 * Start of every MMU operation: finish an earlier call's deferred put and,
 * if that call's result was held back for it, hand it out now.
 * Returns 1 if the caller should proceed, else the result to return.
 */
static int op_enter(struct pv_vcpu *v)
{
    int rc = pv_drain(v);

    if (rc)
        return rc;
    if (v->cont_pending) {
        v->cont_pending = false;
        return v->cont_rc;
    }
    return 1;
}

/*
 * End of an MMU operation: the guest sees rc only after the deferred put is
 * drained (P5).  If one is pending, hold rc back and make the caller
 * re-issue; the re-issue drains first (op_enter()) and then returns rc.
 */
static int op_exit(struct pv_vcpu *v, int rc)
{
    if (rc != -ERESTART && !mfn_eq(v->old_table, INVALID_MFN)) {
        v->cont_pending = true;
        v->cont_rc = rc;
        return -ERESTART;
    }
    return rc;
}

/* ------------------------------------------------------------ mmu_update */

static int mmu_pt_update(struct pv_vcpu *v, uint64_t ptr, uint64_t val,
                         bool preserve_ad)
{
    struct pv_domain *d = v->d;
    mfn_t table = _mfn(ptr >> PAGE_SHIFT);
    unsigned idx = (unsigned)((ptr & ~PAGE_MASK) >> 3);
    int rc;

    if (!frames_mfn_valid(d->f, table))
        return -EINVAL;
    rc = frame_get(d->f, table, d->id);
    if (rc)
        return rc == -EPERM ? -EPERM : -EINVAL;
    if (frame_lock(d->f, table) == 0) {
        unsigned level = frame_type_level(frame_type_word(d->f, table));

        rc = pv_mod_entry(v, table, level, idx, val, preserve_ad);
        frame_unlock(d->f, table);
        if (rc == -EINTR)
            rc = -ERESTART;
    } else if (frame_get_type(d->f, table, FRAME_TYPE_WRITABLE, pv_get_tf(v),
                              &pv_type_ops, v) == 0) {
        /* Not a page table in use: a plain write, the frame is writable. */
        uint64_t *pt = pv_table(d, table);

        if (preserve_ad) {
            uint64_t o = pv_entry_load(pt, idx);

            while (!__atomic_compare_exchange_n(
                &pt[idx], &o, val | (o & (PTE_A | PTE_D)), false,
                __ATOMIC_SEQ_CST, __ATOMIC_RELAXED))
                ;
        } else {
            __atomic_store_n(&pt[idx], val, __ATOMIC_SEQ_CST);
        }
        pv_mark_dirty(d, table);
        if (frame_put_type(d->f, table, FRAME_TYPE_WRITABLE, 0, &pv_type_ops,
                           v))
            pv_corrupt(d, table, "transient writable reference lost");
        rc = 0;
    } else {
        rc = -EINVAL;
    }
    frame_put(d->f, table);
    return rc;
}

int pv_write_data(struct pv_vcpu *v, uint64_t maddr, uint64_t val)
{
    struct pv_domain *d = v->d;
    mfn_t mfn = _mfn(maddr >> PAGE_SHIFT);
    int rc;

    if ((maddr & 7) || !frames_mfn_valid(d->f, mfn))
        return -EINVAL;
    rc = frame_get_and_type(d->f, mfn, d->id, FRAME_TYPE_WRITABLE,
                            pv_get_tf(v), &pv_type_ops, v);
    if (rc)
        return rc == -EPERM ? -EPERM : -EINVAL;
    __atomic_store_n((uint64_t *)pv_table(d, mfn) + ((maddr & ~PAGE_MASK) >> 3),
                     val, __ATOMIC_SEQ_CST);
    pv_mark_dirty(d, mfn);
    if (frame_put_and_type(d->f, mfn, FRAME_TYPE_WRITABLE, 0, &pv_type_ops, v))
        pv_corrupt(d, mfn, "transient writable reference lost");
    return 0;
}

int pv_get_writable(struct pv_vcpu *v, mfn_t mfn)
{
    struct pv_domain *d = v->d;
    int rc;

    if (!frames_mfn_valid(d->f, mfn))
        return -EINVAL;
    rc = frame_get_and_type(d->f, mfn, d->id, FRAME_TYPE_WRITABLE,
                            pv_get_tf(v), &pv_type_ops, v);
    return rc ? (rc == -EPERM ? -EPERM : -EINVAL) : 0;
}

void pv_put_writable(struct pv_vcpu *v, mfn_t mfn)
{
    if (frame_put_and_type(v->d->f, mfn, FRAME_TYPE_WRITABLE, 0, &pv_type_ops,
                           v))
        pv_corrupt(v->d, mfn, "held writable reference lost");
}

static int mmu_machphys(struct pv_vcpu *v, uint64_t ptr, uint64_t pfn)
{
    struct pv_domain *d = v->d;
    mfn_t mfn = _mfn(ptr >> PAGE_SHIFT);

    if (!frames_mfn_valid(d->f, mfn) || frame_get(d->f, mfn, d->id))
        return -EINVAL;
    atomic_store(&d->m2p[mfn_x(mfn)], pfn);
    pv_mark_dirty(d, mfn);
    frame_put(d->f, mfn);
    return 0;
}

static bool own_domain(const struct pv_domain *d, domid_t dom)
{
    return dom == DOMID_SELF || dom == d->id;
}

static int mmu_one(struct pv_vcpu *v, const void *reqs, uint32_t i)
{
    const struct mmu_update *r = (const struct mmu_update *)reqs + i;

    switch (r->ptr & 7) {
    case MMU_NORMAL_PT_UPDATE:
    case MMU_PT_UPDATE_NO_TRANSLATE:
        return mmu_pt_update(v, r->ptr & ~7ULL, r->val, false);
    case MMU_PT_UPDATE_PRESERVE_AD:
        return mmu_pt_update(v, r->ptr & ~7ULL, r->val, true);
    case MMU_MACHPHYS_UPDATE:
        return mmu_machphys(v, r->ptr & ~7ULL, r->val);
    default:
        return -ENOSYS;
    }
}

/*
 * The batch loop of mmu_update and mmuext_op: drain first, then requests
 * [*pdone, count) until an error, a pending deferred put or a preemption
 * (checked before each request but the first).
 */
static int op_batch(struct pv_vcpu *v, bool own, const void *reqs,
                    uint32_t count, uint32_t *pdone,
                    int (*one)(struct pv_vcpu *, const void *, uint32_t))
{
    uint32_t start = *pdone, i;
    int rc = op_enter(v);

    if (rc != 1)
        return rc;
    rc = 0;
    if (!own)
        return op_exit(v, -EPERM);
    for (i = start; i < count; i++) {
        if (!mfn_eq(v->old_table, INVALID_MFN) ||
            (i > start && pv_preempt_check(v))) {
            rc = -ERESTART;
            break;
        }
        rc = one(v, reqs, i);
        if (rc)
            break;
        (*pdone)++;
    }
    return op_exit(v, rc);
}

int pv_mmu_update(struct pv_vcpu *v, const struct mmu_update *reqs,
                  uint32_t count, uint32_t *pdone, uint32_t foreigndom)
{
    return op_batch(
        v, own_domain(v->d, (domid_t)foreigndom) && !(foreigndom >> 16), reqs,
        count, pdone, mmu_one);
}

/* ------------------------------------------------------------ mmuext_op */

static int pin(struct pv_vcpu *v, mfn_t mfn, unsigned level)
{
    struct pv_domain *d = v->d;
    int rc;

    if (!frames_mfn_valid(d->f, mfn) || frame_get(d->f, mfn, d->id))
        return -EINVAL;
    rc = frame_get_type(d->f, mfn, FRAME_TYPE_PT(level),
                        FRAME_TF_PREEMPTIBLE | pv_get_tf(v), &pv_type_ops, v);
    if (rc) {
        if (rc == -EINTR)
            rc = -ERESTART;
        /* The pin's general ref goes, unless the tear-down owns it now. */
        if (!mfn_eq(v->old_table, mfn))
            frame_put(d->f, mfn);
        return rc;
    }
    if (frame_test_and_set_pinned(d->f, mfn)) {
        /* Already pinned: undo (a put of an L2+ may be long: defer it). */
        if (level == 1) {
            if (frame_put_and_type(d->f, mfn, FRAME_TYPE_L1, 0, &pv_type_ops,
                                   v))
                pv_corrupt(d, mfn, "pin undo without a type reference");
        } else {
            v->old_table = mfn;
            v->old_type = FRAME_TYPE_PT(level);
            v->old_partial = false;
        }
        return -EINVAL;
    }
    pv_mark_dirty(d, mfn); /* a page is dirtied when its pin is set */
    return 0;
}

static int unpin(struct pv_vcpu *v, mfn_t mfn)
{
    struct pv_domain *d = v->d;
    uint64_t type;
    int rc;

    if (!frames_mfn_valid(d->f, mfn) || frame_get(d->f, mfn, d->id))
        return -EINVAL;
    if (!frame_test_and_clear_pinned(d->f, mfn)) {
        frame_put(d->f, mfn);
        return -EINVAL;
    }
    /* The pin held a type reference: the type cannot change under it. */
    type = frame_type_word(d->f, mfn) & FRAME_TYPE_MASK;
    rc = frame_put_type(d->f, mfn, type, FRAME_TF_PREEMPTIBLE, &pv_type_ops, v);
    if (rc == 0) {
        frame_put(d->f, mfn); /* the pin's general reference */
    } else if (rc == -EINTR || rc == -ERESTART) {
        /* The pin's references now belong to the deferred put. */
        v->old_table = mfn;
        v->old_type = type;
        v->old_partial = rc == -ERESTART;
    } else {
        pv_corrupt(d, mfn, "unpin without a type reference");
    }
    frame_put(d->f, mfn); /* the lookup reference */
    pv_mark_dirty(d, mfn);
    return 0;
}

/*
 * Install a new (kernel or user) base pointer; the old one's put may be
 * long, so an interrupted put is deferred and -ERESTART makes the caller
 * re-issue (which then finds the base already installed).
 */
static int new_base(struct pv_vcpu *v, mfn_t *slot, mfn_t mfn, bool none_ok)
{
    struct pv_domain *d = v->d;
    mfn_t old = *slot;
    int rc;

    if (mfn_eq(mfn, old))
        return 0;
    if (!(none_ok && mfn_eq(mfn, INVALID_MFN))) {
        rc = pv_get_page_and_type(v, mfn, FRAME_TYPE_L4, PTF_PREEMPTIBLE);
        if (rc == -EINTR || rc == -ERESTART)
            return -ERESTART;
        if (rc)
            return rc;
    }
    *slot = mfn;
    pv_flush_local(v); /* a base switch flushes the TLB */
    if (mfn_eq(old, INVALID_MFN))
        return 0;
    rc = frame_put_type(d->f, old, FRAME_TYPE_L4, FRAME_TF_PREEMPTIBLE,
                        &pv_type_ops, v);
    if (rc == 0) {
        frame_put(d->f, old);
    } else if (rc == -EINTR || rc == -ERESTART) {
        v->old_table = old;
        v->old_type = FRAME_TYPE_L4;
        v->old_partial = rc == -ERESTART;
        return -ERESTART;
    } else {
        pv_corrupt(d, old, "base pointer without a type reference");
    }
    return 0;
}

/*
 * [va, va + len) lies in the guest's part of the address space: the lower
 * canonical half, or the upper half above the hypervisor's L4 slots.
 */
static bool guest_range_ok(uint64_t va, uint64_t len)
{
    const uint64_t lower_end = 1ULL << 47;
    const uint64_t hv_end =
        0xFFFF800000000000ULL + ((uint64_t)PV_HV_L4_NR << 39);

    if (va < lower_end)
        return range_check(va, len, lower_end) == 0;
    return va >= hv_end && range_check(va - hv_end, len, -hv_end) == 0;
}

/* CLEAR_PAGE / COPY_PAGE: write the frame through a transient writable
 * reference, as any guest write would need one. */
static int page_op(struct pv_vcpu *v, mfn_t dst, const mfn_t *src)
{
    struct pv_domain *d = v->d;
    int rc;

    if (src && (!frames_mfn_valid(d->f, *src) || frame_get(d->f, *src, d->id)))
        return -EINVAL;
    rc = frames_mfn_valid(d->f, dst)
             ? frame_get_and_type(d->f, dst, d->id, FRAME_TYPE_WRITABLE,
                                  pv_get_tf(v), &pv_type_ops, v)
             : -EINVAL;
    if (rc == 0) {
        if (src)
            memcpy(frames_ptr(d->f, dst), frames_ptr(d->f, *src), PAGE_SIZE);
        else
            memset(frames_ptr(d->f, dst), 0, PAGE_SIZE);
        pv_mark_dirty(d, dst);
        if (frame_put_and_type(d->f, dst, FRAME_TYPE_WRITABLE, 0, &pv_type_ops,
                               v))
            pv_corrupt(d, dst, "transient writable reference lost");
    }
    if (src)
        frame_put(d->f, *src);
    return rc ? -EINVAL : 0;
}

static int mmuext_one(struct pv_vcpu *v, const struct mmuext_op *op)
{
    mfn_t mfn = _mfn(op->arg1.mfn);

    switch (op->cmd) {
    case MMUEXT_PIN_L1_TABLE:
    case MMUEXT_PIN_L2_TABLE:
    case MMUEXT_PIN_L3_TABLE:
    case MMUEXT_PIN_L4_TABLE:
        return pin(v, mfn, op->cmd - MMUEXT_PIN_L1_TABLE + 1);
    case MMUEXT_UNPIN_TABLE:
        return unpin(v, mfn);
    case MMUEXT_NEW_BASEPTR:
        return new_base(v, &v->base, mfn, false);
    case MMUEXT_NEW_USER_BASEPTR:
        /* Xen's ABI: mfn 0 means "no user base". */
        return new_base(v, &v->user_base, op->arg1.mfn ? mfn : INVALID_MFN,
                        true);
    case MMUEXT_SET_LDT:
        if ((op->arg1.linear_addr & ~PAGE_MASK) ||
            op->arg2.nr_ents > PV_LDT_MAX_ENTS ||
            !guest_range_ok(op->arg1.linear_addr,
                            (uint64_t)op->arg2.nr_ents * 8))
            return -EINVAL;
        v->ldt_base = op->arg1.linear_addr;
        v->ldt_ents = op->arg2.nr_ents;
        return 0;
    case MMUEXT_CLEAR_PAGE:
        return page_op(v, mfn, NULL);
    case MMUEXT_COPY_PAGE: {
        mfn_t src = _mfn(op->arg2.src_mfn);

        return page_op(v, mfn, &src);
    }
    case MMUEXT_TLB_FLUSH_LOCAL:
    case MMUEXT_INVLPG_LOCAL:
        pv_flush_local(v);
        return 0;
    case MMUEXT_TLB_FLUSH_MULTI:
    case MMUEXT_INVLPG_MULTI:
        /* The vCPU mask is guest memory pv does not read: every vCPU
         * (a superset of those named) flushes. */
    case MMUEXT_TLB_FLUSH_ALL:
    case MMUEXT_INVLPG_ALL:
        pv_flush_all(v);
        return 0;
    default:
        return -ENOSYS;
    }
}

static int mmuext_at(struct pv_vcpu *v, const void *ops, uint32_t i)
{
    return mmuext_one(v, (const struct mmuext_op *)ops + i);
}

int pv_mmuext_op(struct pv_vcpu *v, const struct mmuext_op *ops, uint32_t count,
                 uint32_t *pdone, domid_t foreigndom)
{
    return op_batch(v, own_domain(v->d, foreigndom), ops, count, pdone,
                    mmuext_at);
}

/* ----------------------------------------------------- update_va_mapping */

/* The L1 that maps va under base, or INVALID_MFN. */
static mfn_t walk_to_l1(struct pv_domain *d, mfn_t base, uint64_t va)
{
    mfn_t t = base;

    for (unsigned level = 4; level > 1; level--) {
        uint64_t e;

        if (mfn_eq(t, INVALID_MFN) || !frames_mfn_valid(d->f, t) ||
            frame_owner(d->f, t) != d->id)
            return INVALID_MFN;
        e = pv_entry_load(pv_table(d, t),
                          (unsigned)(va >> (PAGE_SHIFT + 9 * (level - 1))) &
                              (PT_ENTRIES - 1));
        if (!(e & PTE_P))
            return INVALID_MFN;
        t = pte_mfn(e);
    }
    return t;
}

int pv_update_va_mapping(struct pv_vcpu *v, uint64_t va, uint64_t val,
                         uint64_t flags)
{
    struct pv_domain *d = v->d;
    mfn_t l1;
    int rc = op_enter(v);

    if (rc != 1)
        return rc;
    if (!guest_range_ok(va, PAGE_SIZE))
        return op_exit(v, -EINVAL);
    l1 = walk_to_l1(d, v->base, va);
    if (mfn_eq(l1, INVALID_MFN) && !(va >> 47))
        l1 = walk_to_l1(d, v->user_base, va);
    if (mfn_eq(l1, INVALID_MFN) || !frames_mfn_valid(d->f, l1))
        return op_exit(v, -EFAULT);
    if (frame_get(d->f, l1, d->id))
        return op_exit(v, -EFAULT);
    if (frame_lock(d->f, l1) == 0) {
        if (frame_type_level(frame_type_word(d->f, l1)) == 1)
            rc = pv_mod_entry(v, l1, 1,
                              (unsigned)(va >> PAGE_SHIFT) & (PT_ENTRIES - 1),
                              val, false);
        else
            rc = -EINVAL;
        frame_unlock(d->f, l1);
    } else {
        rc = -EINVAL;
    }
    frame_put(d->f, l1);
    if (rc == 0 && (flags & UVMF_FLUSHTYPE_MASK)) {
        /* UVMF_LOCAL: this vCPU; UVMF_ALL, and UVMF_MULTI (a mask in
         * guest memory): every vCPU, a superset of the ones named. */
        if ((flags & ~UVMF_FLUSHTYPE_MASK) == UVMF_LOCAL)
            pv_flush_local(v);
        else
            pv_flush_all(v);
    }
    return op_exit(v, rc);
}

/* ------------------------------------------------------------ memory_op */

static int remove_page(struct pv_domain *d, mfn_t mfn)
{
    if (!frames_mfn_valid(d->f, mfn) || frame_get(d->f, mfn, d->id))
        return -EINVAL;
    if (frame_put_alloc_ref(d->f, mfn)) {
        frame_put(d->f, mfn);
        return -EINVAL; /* already given back */
    }
    atomic_store(&d->m2p[mfn_x(mfn)], PV_M2P_INVALID);
    frame_put(d->f, mfn);
    return 0;
}

static int memop_one(struct pv_vcpu *v, unsigned op, struct pv_reservation *r,
                     uint64_t i)
{
    struct pv_domain *d = v->d;
    uint64_t n = 1ULL << r->extent_order, j, in = r->extent_start[i];
    mfn_t m;
    int rc;

    switch (op) {
    case XENMEM_increase_reservation:
    case XENMEM_populate_physmap:
        if (op == XENMEM_populate_physmap &&
            (in >= (1ULL << 40) || !IS_ALIGNED(in, n)))
            return -EINVAL;
        rc = frames_alloc(d->f, d->id, r->extent_order, &m);
        if (rc)
            return rc;
        if (op == XENMEM_populate_physmap)
            for (j = 0; j < n; j++)
                atomic_store(&d->m2p[mfn_x(m) + j], in + j);
        r->extent_start[i] = mfn_x(m);
        return 0;
    case XENMEM_decrease_reservation:
        if (in >= d->f->nr_frames || n > d->f->nr_frames - in)
            return -EINVAL;
        for (j = 0; j < n; j++) {
            rc = remove_page(d, _mfn(in + j));
            if (rc)
                return rc;
        }
        return 0;
    }
    return -ENOSYS;
}

long pv_memory_op(struct pv_vcpu *v, unsigned long *cmd,
                  struct pv_reservation *r)
{
    unsigned op = (unsigned)(*cmd & MEMOP_CMD_MASK);
    uint64_t start = *cmd >> MEMOP_EXTENT_SHIFT, i;

    if (op != XENMEM_increase_reservation &&
        op != XENMEM_decrease_reservation && op != XENMEM_populate_physmap)
        return -ENOSYS;
    if (!own_domain(v->d, r->domid))
        return -EPERM;
    /* Malformed: report "nothing from start on was done". */
    if (r->nr_extents > (~0U >> MEMOP_EXTENT_SHIFT) || start >= r->nr_extents ||
        r->extent_order > PV_MAX_EXTENT_ORDER || !r->extent_start)
        return (long)start;
    for (i = start; i < r->nr_extents; i++) {
        if (i > start && pv_preempt_check(v)) {
            *cmd = op | (i << MEMOP_EXTENT_SHIFT);
            return -ERESTART;
        }
        if (memop_one(v, op, r, i))
            break;
    }
    return (long)i;
}

/* ------------------------------------------------------------- teardown */

int pv_vcpu_destroy_pagetables(struct pv_vcpu *v)
{
    int rc = pv_drain(v);

    if (rc)
        return rc;
    rc = new_base(v, &v->base, INVALID_MFN, true);
    if (!rc)
        rc = new_base(v, &v->user_base, INVALID_MFN, true);
    if (!rc)
        rc = pv_drain(v);
    if (!rc)
        v->cont_pending = false;
    return rc;
}

/* Drop a pin (if pinned) then the allocation reference of mfn, via v. */
static int relinquish_frame(struct pv_vcpu *v, mfn_t mfn, bool *progress)
{
    struct pv_domain *d = v->d;
    uint64_t t = frame_type_word(d->f, mfn);
    int rc = 0;

    if (t & FRAME_TYPE_PINNED) {
        rc = unpin(v, mfn);
        *progress = true;
        if (rc == 0)
            rc = pv_drain(v);
        if (rc)
            return rc;
    }
    t = frame_type_word(d->f, mfn);
    if ((t & FRAME_TYPE_PARTIAL) && frame_get(d->f, mfn, d->id) == 0) {
        /* Nobody resumes it any more: clean it up as a deferred put. */
        v->old_table = mfn;
        v->old_type = t & FRAME_TYPE_MASK;
        v->old_partial = true;
        *progress = true;
        rc = pv_drain(v);
    }
    return rc;
}

int pv_domain_relinquish(struct pv_domain *d)
{
    struct pv_vcpu *v0;
    uint64_t m;
    int rc;

    if (!d->nr_vcpus)
        return -EINVAL;
    v0 = d->vcpus[0];
    for (unsigned i = 0; i < d->nr_vcpus; i++) {
        struct pv_vcpu *v = d->vcpus[i];

        rc = pv_vcpu_destroy_pagetables(v);
        if (rc)
            return rc;
    }
    /* Roots first, so that their children lose references before we
     * look at them (page tables form a forest: no linear entries). */
    for (unsigned level = 4; level >= 1 && level <= 4; level--) {
        for (m = 0; m < d->f->nr_frames; m++) {
            mfn_t mfn = _mfn(m);
            uint64_t t;
            bool progress = false;

            if (frame_owner(d->f, mfn) != d->id)
                continue;
            t = frame_type_word(d->f, mfn);
            if (frame_type_level(t) != level ||
                !(t & (FRAME_TYPE_PINNED | FRAME_TYPE_PARTIAL)))
                continue;
            rc = relinquish_frame(v0, mfn, &progress);
            if (rc)
                return rc;
            if (progress && pv_preempt_check(v0))
                return -ERESTART;
        }
    }
    for (m = 0; m < d->f->nr_frames; m++) {
        mfn_t mfn = _mfn(m);

        if (frame_owner(d->f, mfn) != d->id)
            continue;
        if (frame_get(d->f, mfn, d->id) == 0) {
            if (frame_put_alloc_ref(d->f, mfn) == 0)
                atomic_store(&d->m2p[m], PV_M2P_INVALID);
            frame_put(d->f, mfn);
        }
    }
    return 0;
}

/* ----------------------------------------------------- page-frame info */

int pv_pageframe_info(struct pv_domain *d, uint64_t *arr, unsigned num)
{
    if (num > PV_PFINFO_MAX)
        return -E2BIG;
    for (unsigned i = 0; i < num; i++) {
        mfn_t mfn = _mfn(arr[i]);
        uint64_t t, c;
        uint32_t type;

        if (!frames_mfn_valid(d->f, mfn) || frame_get(d->f, mfn, d->id)) {
            arr[i] = PV_PFINFO_XTAB;
            continue;
        }
        t = frame_type_word(d->f, mfn);
        c = atomic_load(&frames_get_frame(d->f, mfn)->count_info);
        type = frame_type_level(t) << PV_PFINFO_LTAB_SHIFT;
        /* P6: honest types. */
        if (t & FRAME_TYPE_PINNED)
            type |= PV_PFINFO_LPINTAB;
        else if (!(t & FRAME_TYPE_VALIDATED))
            type = PV_PFINFO_NOTAB;
        if (c & FRAME_BROKEN)
            type = PV_PFINFO_BROKEN;
        arr[i] = type;
        frame_put(d->f, mfn);
    }
    return 0;
}
