/*
 * PV page tables, table-driven: every entry rule at every level, writable
 * and page-table exclusion, pin/unpin, base pointers, mmu_update commands,
 * memory_op reservations with continuations, the honest page-frame info,
 * update_va_mapping, preemption at every point of a tree's life, and
 * teardown.  pv_audit() and frames_check() run after every step.
 */
#include <inttypes.h>
#include <string.h>

#include "pvenv.h"

static struct pvenv E;

/* What an entry under test points at. */
enum target {
    T_DATA,        /* a fresh frame of the domain */
    T_OTHER,       /* a frame of another domain */
    T_BAD,         /* beyond the pool: not RAM */
    T_FREE,        /* inside the pool, not allocated */
    T_PINNED_L1,   /* a frame pinned as L1 */
    T_WRITABLE,    /* a frame mapped RW by a pinned L1 */
    T_SELF,        /* the table itself */
    T_PINNED_SAME, /* a pinned table of the same level (linear) */
};

struct rule {
    unsigned level;
    unsigned idx;
    enum target target;
    uint64_t flags;
    int expect;
    const char *what;
};

#define RW_ (PTE_P | PTE_RW)
static const struct rule rules[] = {
    {1, 5, T_DATA, PTE_P | PTE_RW | PTE_US | PTE_A | PTE_D, 0, "L1 RW data"},
    {1, 5, T_DATA, PTE_P, 0, "L1 RO data"},
    {1, 5, T_DATA, PTE_P | PTE_PWT, -EINVAL, "L1 PWT"},
    {1, 5, T_DATA, PTE_P | PTE_PCD, -EINVAL, "L1 PCD"},
    {1, 5, T_DATA, PTE_P | PTE_PSE, -EINVAL, "L1 PAT"},
    {1, 5, T_DATA, PTE_P | PTE_G | PTE_NX | PTE_AVAIL | PTE_AVAIL_HIGH, 0,
     "L1 G NX AVAIL"},
    {1, 5, T_DATA, PTE_PWT | PTE_PSE | PTE_RW, 0, "L1 not present, junk"},
    {1, 5, T_OTHER, PTE_P, -EPERM, "L1 foreign frame"},
    {1, 5, T_BAD, PTE_P, -EINVAL, "L1 not RAM"},
    {1, 5, T_FREE, PTE_P, -EINVAL, "L1 free frame"},
    {1, 5, T_PINNED_L1, RW_, -EBUSY, "L1 RW of a page table"},
    {1, 5, T_PINNED_L1, PTE_P, 0, "L1 RO of a page table"},
    {1, 5, T_SELF, PTE_P, 0, "L1 RO self map"},
    {1, 5, T_SELF, RW_, -EBUSY, "L1 RW self map"},
    {2, 5, T_DATA, PT_FLAGS, 0, "L2 -> L1"},
    {2, 5, T_DATA, PT_FLAGS | PTE_NX | PTE_AVAIL | PTE_AVAIL_HIGH, 0,
     "L2 NX AVAIL"},
    {2, 5, T_DATA, PT_FLAGS | PTE_PSE, -EINVAL, "L2 PSE"},
    {2, 5, T_DATA, PT_FLAGS | PTE_G, -EINVAL, "L2 G"},
    {2, 5, T_DATA, PT_FLAGS | PTE_PCD, -EINVAL, "L2 PCD"},
    {2, 5, T_DATA, PTE_PSE | PTE_G, 0, "L2 not present, junk"},
    {2, 5, T_WRITABLE, PT_FLAGS, -EINVAL, "L2 -> writable frame"},
    {2, 5, T_PINNED_SAME, PTE_P, -EINVAL, "L2 linear (RO)"},
    {2, 5, T_SELF, PTE_P, -EINVAL, "L2 self map"},
    {2, 5, T_OTHER, PT_FLAGS, -EPERM, "L2 foreign frame"},
    {2, 5, T_BAD, PT_FLAGS, -EINVAL, "L2 not RAM"},
    {3, 5, T_DATA, PT_FLAGS, 0, "L3 -> L2"},
    {3, 5, T_DATA, PT_FLAGS | PTE_PSE, -EINVAL, "L3 PSE (1 GiB page)"},
    {3, 5, T_PINNED_SAME, PTE_P, -EINVAL, "L3 linear (RO)"},
    {3, 5, T_SELF, PTE_P, -EINVAL, "L3 self map"},
    {3, 5, T_PINNED_L1, PTE_P, -EINVAL, "L3 -> an L1"},
    {4, 5, T_DATA, PT_FLAGS, 0, "L4 -> L3"},
    {4, 5, T_DATA, PT_FLAGS | PTE_PSE, -EINVAL, "L4 PSE"},
    {4, 5, T_PINNED_SAME, PTE_P, -EINVAL, "L4 linear (RO)"},
    {4, 5, T_SELF, PTE_P, -EINVAL, "L4 self map"},
    {4, 256, T_BAD, PT_FLAGS | PTE_PSE, 0, "L4 hypervisor slot ignored"},
    {4, 271, T_SELF, PT_FLAGS, 0, "L4 hypervisor slot 271 ignored"},
    {4, 272, T_SELF, PTE_P, -EINVAL, "L4 slot 272 is the guest's"},
};

static mfn_t make_target(enum target t, unsigned level, mfn_t table)
{
    mfn_t m, y;

    switch (t) {
    case T_DATA:
        return pvenv_page(&E);
    case T_OTHER:
        return pvenv_page_of(&E, OTHER);
    case T_BAD:
        return _mfn(E.f.nr_frames + 5);
    case T_FREE:
        m = pvenv_page(&E);
        assert_int_equal(frame_put_alloc_ref(&E.f, m), 0);
        return m;
    case T_PINNED_L1:
        m = pvenv_page(&E);
        assert_int_equal(pvenv_ext(&E, &E.v[0], MMUEXT_PIN_L1_TABLE, mfn_x(m)),
                         0);
        return m;
    case T_WRITABLE:
        m = pvenv_page(&E);
        y = pvenv_page(&E);
        pvenv_pt(&E, y)[0] = pvenv_pte(m, RW_);
        assert_int_equal(pvenv_ext(&E, &E.v[0], MMUEXT_PIN_L1_TABLE, mfn_x(y)),
                         0);
        return m;
    case T_SELF:
        return table;
    case T_PINNED_SAME:
        m = pvenv_page(&E);
        assert_int_equal(
            pvenv_ext(&E, &E.v[0], MMUEXT_PIN_L1_TABLE + level - 1, mfn_x(m)),
            0);
        return m;
    }
    return INVALID_MFN;
}

static const uint32_t pfinfo_l[] = {0, PV_PFINFO_L1TAB, PV_PFINFO_L2TAB,
                                    PV_PFINFO_L3TAB, PV_PFINFO_L4TAB};

static uint32_t pfinfo(mfn_t m)
{
    uint64_t a = mfn_x(m);

    assert_int_equal(pv_pageframe_info(&E.d, &a, 1), 0);
    return (uint32_t)a;
}

/* Pin a table holding the entry under test, then unpin; the same rule
 * again through mmu_update on a validated table of that level. */
static void test_entry_rules(void **state)
{
    (void)state;
    for (unsigned r = 0; r < ARRAY_SIZE(rules); r++) {
        const struct rule *x = &rules[r];
        unsigned pin = MMUEXT_PIN_L1_TABLE + x->level - 1;
        mfn_t t, target, u;
        int rc;

        pvenv_init(&E, 64);
        t = pvenv_page(&E);
        target = make_target(x->target, x->level, t);
        pvenv_pt(&E, t)[x->idx] = pvenv_pte(target, x->flags);
        pvenv_check(&E);
        rc = pvenv_ext(&E, &E.v[0], pin, mfn_x(t));
        if (rc != x->expect)
            test_note("rule '%s': pin gave %d", x->what, rc);
        assert_int_equal(rc, x->expect);
        pvenv_check(&E);
        if (rc == 0) {
            assert_int_equal(pfinfo(t), pfinfo_l[x->level] | PV_PFINFO_LPINTAB);
            if (x->level == 4)
                for (unsigned i = 0; i < PV_HV_L4_NR; i++)
                    assert_true(pvenv_pt(&E, t)[256 + i] == E.d.hv_l4[i]);
            assert_int_equal(
                pvenv_ext(&E, &E.v[0], MMUEXT_UNPIN_TABLE, mfn_x(t)), 0);
            pvenv_check(&E);
            assert_int_equal(pfinfo(t), PV_PFINFO_NOTAB); /* honest */
        } else {
            assert_int_equal(pfinfo(t), PV_PFINFO_NOTAB);
        }
        /* The same entry written into a validated, pinned table. */
        if (x->target != T_SELF) {
            u = pvenv_page(&E);
            assert_int_equal(pvenv_ext(&E, &E.v[0], pin, mfn_x(u)), 0);
            rc = pvenv_upd(&E, &E.v[0], u, x->idx, pvenv_pte(target, x->flags));
            if (x->level == 4 && x->idx >= 256 && x->idx < 272)
                assert_int_equal(rc, -EINVAL); /* never via an update */
            else
                assert_int_equal(rc, x->expect);
            pvenv_check(&E);
        }
        pvenv_fini(&E);
    }
    test_note("%zu entry rules, each by pin and by mmu_update",
              ARRAY_SIZE(rules));
}

/* Invariant 2: a frame is a page table or writable, never both. */
static void test_writable_excludes_table(void **state)
{
    mfn_t l1, p, l2;

    (void)state;
    pvenv_init(&E, 64);
    l1 = pvenv_page(&E);
    p = pvenv_page(&E);
    assert_int_equal(pvenv_ext(&E, &E.v[0], MMUEXT_PIN_L1_TABLE, mfn_x(l1)), 0);
    assert_int_equal(pvenv_upd(&E, &E.v[0], l1, 0, pvenv_pte(p, RW_)), 0);
    pvenv_check(&E);
    assert_true((frame_type_word(&E.f, p) & FRAME_TYPE_MASK) ==
                FRAME_TYPE_WRITABLE);
    /* Mapped writable: cannot become any page table. */
    for (unsigned lv = 1; lv <= 4; lv++)
        assert_int_equal(
            pvenv_ext(&E, &E.v[0], MMUEXT_PIN_L1_TABLE + lv - 1, mfn_x(p)),
            -EINVAL);
    pvenv_check(&E);
    /* Read-only now: the type can change. */
    assert_int_equal(pvenv_upd(&E, &E.v[0], l1, 0, pvenv_pte(p, PTE_P)), 0);
    pvenv_check(&E);
    assert_int_equal(pvenv_ext(&E, &E.v[0], MMUEXT_PIN_L1_TABLE, mfn_x(p)), 0);
    pvenv_check(&E);
    /* A page table cannot be mapped writable... */
    assert_int_equal(pvenv_upd(&E, &E.v[0], l1, 1, pvenv_pte(p, RW_)), -EBUSY);
    /* ...nor turned writable by a flag-only change of its RO mapping. */
    assert_int_equal(pvenv_upd(&E, &E.v[0], l1, 0, pvenv_pte(p, RW_)), -EBUSY);
    pvenv_check(&E);
    /* A validated table referenced from an L2 is not pinned, still L1. */
    l2 = pvenv_page(&E);
    pvenv_pt(&E, l2)[3] = pvenv_pte(p, PT_FLAGS);
    assert_int_equal(pvenv_ext(&E, &E.v[0], MMUEXT_PIN_L2_TABLE, mfn_x(l2)), 0);
    assert_int_equal(pvenv_ext(&E, &E.v[0], MMUEXT_UNPIN_TABLE, mfn_x(p)), 0);
    assert_int_equal(pfinfo(p), PV_PFINFO_L1TAB);
    assert_int_equal(pvenv_ext(&E, &E.v[0], MMUEXT_UNPIN_TABLE, mfn_x(p)),
                     -EINVAL); /* not pinned */
    pvenv_check(&E);
    pvenv_fini(&E);
}

static void test_pin_twice_and_foreign(void **state)
{
    mfn_t l1, l3, o;
    struct mmuext_op op = {.cmd = MMUEXT_PIN_L1_TABLE};
    uint32_t done = 0;

    (void)state;
    pvenv_init(&E, 64);
    l1 = pvenv_page(&E);
    l3 = pvenv_page(&E);
    o = pvenv_page_of(&E, OTHER);
    assert_int_equal(pvenv_ext(&E, &E.v[0], MMUEXT_PIN_L1_TABLE, mfn_x(l1)), 0);
    assert_int_equal(pvenv_ext(&E, &E.v[0], MMUEXT_PIN_L1_TABLE, mfn_x(l1)),
                     -EINVAL);
    assert_int_equal(pvenv_ext(&E, &E.v[0], MMUEXT_PIN_L3_TABLE, mfn_x(l3)), 0);
    /* Already pinned L3: the undo is a deferred put, drained before the
     * result is seen. */
    assert_int_equal(pvenv_ext(&E, &E.v[1], MMUEXT_PIN_L3_TABLE, mfn_x(l3)),
                     -EINVAL);
    assert_true(mfn_eq(E.v[1].old_table, INVALID_MFN));
    pvenv_check(&E);
    assert_int_equal(pvenv_ext(&E, &E.v[0], MMUEXT_PIN_L2_TABLE, mfn_x(o)),
                     -EINVAL);
    assert_int_equal(
        pvenv_ext(&E, &E.v[0], MMUEXT_PIN_L2_TABLE, E.f.nr_frames + 1),
        -EINVAL);
    assert_int_equal(pvenv_ext(&E, &E.v[0], 99, 0), -ENOSYS);
    op.arg1.mfn = mfn_x(l3);
    assert_int_equal(pv_mmuext_op(&E.v[0], &op, 1, &done, OTHER), -EPERM);
    assert_int_equal(pvenv_ext(&E, &E.v[0], MMUEXT_TLB_FLUSH_ALL, 0), 0);
    pvenv_check(&E);
    pvenv_fini(&E);
}

/* A tree: L4 -> nl3 L3s -> nl2 L2s each -> nl1 L1s each -> data frames. */
struct tree {
    mfn_t l4;
    mfn_t data[64];
    unsigned ndata;
};

static void build_tree(struct tree *t, unsigned nl3, unsigned nl2, unsigned nl1)
{
    t->ndata = 0;
    t->l4 = pvenv_page(&E);
    for (unsigned a = 0; a < nl3; a++) {
        mfn_t l3 = pvenv_page(&E);

        pvenv_pt(&E, t->l4)[a * 3] = pvenv_pte(l3, PT_FLAGS);
        for (unsigned b = 0; b < nl2; b++) {
            mfn_t l2 = pvenv_page(&E);

            pvenv_pt(&E, l3)[511 - b] = pvenv_pte(l2, PT_FLAGS);
            for (unsigned c = 0; c < nl1; c++) {
                mfn_t l1 = pvenv_page(&E), d = pvenv_page(&E);

                pvenv_pt(&E, l2)[c * 100] = pvenv_pte(l1, PT_FLAGS);
                pvenv_pt(&E, l1)[7] = pvenv_pte(d, c & 1 ? PTE_P : RW_);
                pvenv_pt(&E, l1)[8] = pvenv_pte(d, PTE_P);
                if (t->ndata < ARRAY_SIZE(t->data))
                    t->data[t->ndata++] = d;
            }
        }
    }
}

/*
 * Preemption everywhere: pin, base switch, unpin and base drop of a tree
 * with the hook firing every n checks, for many n; the audit runs at every
 * preemption point (each -ERESTART leaves a consistent, partial state).
 */
static void test_preempt_everywhere(void **state)
{
    static const uint64_t every[] = {1, 2, 3, 5, 17, 100, 511, 512, 513, 1500};
    uint64_t restarts = 0;

    (void)state;
    for (unsigned k = 0; k < ARRAY_SIZE(every); k++) {
        struct tree t;

        pvenv_init(&E, 256);
        build_tree(&t, 2, 2, 3);
        pv_vcpu_set_preempt(&E.v[0], every[k], true);
        assert_int_equal(
            pvenv_ext(&E, &E.v[0], MMUEXT_PIN_L4_TABLE, mfn_x(t.l4)), 0);
        assert_int_equal(
            pvenv_ext(&E, &E.v[0], MMUEXT_NEW_BASEPTR, mfn_x(t.l4)), 0);
        assert_int_equal(pfinfo(t.l4), PV_PFINFO_L4TAB | PV_PFINFO_LPINTAB);
        assert_int_equal(
            pvenv_ext(&E, &E.v[0], MMUEXT_UNPIN_TABLE, mfn_x(t.l4)), 0);
        pvenv_check(&E);
        assert_int_equal(pfinfo(t.l4), PV_PFINFO_L4TAB); /* base holds it */
        /* Switch to an empty L4: the old tree's put is preempted and
         * deferred, then drained by the following operations. */
        assert_int_equal(
            pvenv_ext(&E, &E.v[0], MMUEXT_NEW_BASEPTR, mfn_x(pvenv_page(&E))),
            0);
        while (!mfn_eq(E.v[0].old_table, INVALID_MFN)) {
            assert_int_equal(pvenv_ext(&E, &E.v[0], MMUEXT_TLB_FLUSH_LOCAL, 0),
                             0);
        }
        pvenv_check(&E);
        assert_int_equal(pfinfo(t.l4), PV_PFINFO_NOTAB);
        for (unsigned i = 0; i < t.ndata; i++)
            assert_true((frame_type_word(&E.f, t.data[i]) &
                         FRAME_TYPE_COUNT_MASK) == 0);
        restarts += E.restarts;
        pvenv_fini(&E);
    }
    test_note("%zu preemption periods, %" PRIu64 " preemption points audited",
              ARRAY_SIZE(every), restarts);
    assert_true(restarts > 1000);
}

static void test_mmu_update_commands(void **state)
{
    mfn_t l1, p, q, w;
    struct mmu_update u[3];
    uint32_t done = 0;
    uint64_t *e;

    (void)state;
    pvenv_init(&E, 64);
    l1 = pvenv_page(&E);
    p = pvenv_page(&E);
    q = pvenv_page(&E);
    assert_int_equal(pvenv_ext(&E, &E.v[0], MMUEXT_PIN_L1_TABLE, mfn_x(l1)), 0);
    e = pvenv_pt(&E, l1);
    /* Preserve A/D: the bits "hardware" set meanwhile survive. */
    assert_int_equal(pvenv_upd(&E, &E.v[0], l1, 9, pvenv_pte(p, PTE_P)), 0);
    e[9] |= PTE_A | PTE_D;
    u[0] = (struct mmu_update){(mfn_x(l1) << 12) + 9 * 8 +
                                   MMU_PT_UPDATE_PRESERVE_AD,
                               pvenv_pte(p, PTE_P | PTE_US)};
    assert_int_equal(pv_mmu_update(&E.v[0], u, 1, &done, DOMID_SELF), 0);
    assert_true(e[9] == pvenv_pte(p, PTE_P | PTE_US | PTE_A | PTE_D));
    /* Flag-only changes take the fast path: counts unchanged. */
    assert_int_equal(
        pvenv_upd(&E, &E.v[0], l1, 9, pvenv_pte(p, PTE_P | PTE_NX | PTE_G)), 0);
    pvenv_check(&E);
    /* Machphys update. */
    u[0] = (struct mmu_update){(mfn_x(q) << 12) + MMU_MACHPHYS_UPDATE, 0x1234};
    done = 0;
    assert_int_equal(pv_mmu_update(&E.v[0], u, 1, &done, DOMID_SELF), 0);
    assert_true(atomic_load(&E.d.m2p[mfn_x(q)]) == 0x1234);
    u[0].ptr = (mfn_x(pvenv_page_of(&E, OTHER)) << 12) + MMU_MACHPHYS_UPDATE;
    done = 0;
    assert_int_equal(pv_mmu_update(&E.v[0], u, 1, &done, DOMID_SELF), -EINVAL);
    /* Unknown command, foreign domain. */
    u[0].ptr = (mfn_x(l1) << 12) + 5;
    done = 0;
    assert_int_equal(pv_mmu_update(&E.v[0], u, 1, &done, DOMID_SELF), -ENOSYS);
    assert_int_equal(pv_mmu_update(&E.v[0], u, 1, &done, OTHER), -EPERM);
    assert_int_equal(pv_mmu_update(&E.v[0], u, 1, &done, 1u << 16), -EPERM);
    /* A batch stops at the first error; *pdone says where. */
    u[0] = (struct mmu_update){(mfn_x(l1) << 12) + 10 * 8, pvenv_pte(q, RW_)};
    u[1] = (struct mmu_update){(mfn_x(l1) << 12) + 11 * 8,
                               pvenv_pte(q, RW_ | PTE_PCD)};
    u[2] = (struct mmu_update){(mfn_x(l1) << 12) + 12 * 8, pvenv_pte(q, RW_)};
    done = 0;
    assert_int_equal(pv_mmu_update(&E.v[0], u, 3, &done, DOMID_SELF), -EINVAL);
    assert_int_equal(done, 1);
    pvenv_check(&E);
    /* Continuation: preempted between requests, *pdone is cumulative. */
    u[1].val = pvenv_pte(q, PTE_P);
    done = 1;
    pv_vcpu_set_preempt(&E.v[0], 1, true);
    assert_int_equal(pv_mmu_update(&E.v[0], u, 3, &done, DOMID_SELF),
                     -ERESTART);
    assert_int_equal(done, 2);
    pvenv_check(&E);
    assert_int_equal(pv_mmu_update(&E.v[0], u, 3, &done, DOMID_SELF), 0);
    assert_int_equal(done, 3);
    pv_vcpu_set_preempt(&E.v[0], 0, false);
    pvenv_check(&E);
    /* An update of a frame that is no page table in use is a plain
     * write, and leaves the frame's stale table type writable. */
    w = pvenv_page(&E);
    assert_int_equal(pvenv_ext(&E, &E.v[0], MMUEXT_PIN_L1_TABLE, mfn_x(w)), 0);
    assert_int_equal(pvenv_ext(&E, &E.v[0], MMUEXT_UNPIN_TABLE, mfn_x(w)), 0);
    assert_int_equal(pvenv_upd(&E, &E.v[0], w, 3, 0xdead000), 0);
    assert_true(pvenv_pt(&E, w)[3] == 0xdead000);
    assert_true((frame_type_word(&E.f, w) & FRAME_TYPE_MASK) ==
                FRAME_TYPE_WRITABLE);
    /* A frame of another domain is refused. */
    assert_int_equal(pvenv_upd(&E, &E.v[0], pvenv_page_of(&E, OTHER), 0, 0),
                     -EPERM);
    pvenv_check(&E);
    pvenv_fini(&E);
}

/* Replacing an L2..L4 entry defers the old child's put; the call reports
 * success only once the deferred put has drained, re-issue by re-issue. */
static void test_deferred_put(void **state)
{
    struct tree t;
    uint32_t done = 0;
    mfn_t l3;
    unsigned calls = 0;
    int rc;

    (void)state;
    pvenv_init(&E, 128);
    build_tree(&t, 1, 2, 3);
    assert_int_equal(pvenv_ext(&E, &E.v[0], MMUEXT_PIN_L4_TABLE, mfn_x(t.l4)),
                     0);
    l3 = pte_mfn(pvenv_pt(&E, t.l4)[0]);
    pv_vcpu_set_preempt(&E.v[0], 300, true);
    while ((rc = pvenv_upd1(&E.v[0], t.l4, 0, 0, &done)) == -ERESTART) {
        calls++;
        assert_int_equal(done, 1); /* the update itself is done */
        pvenv_check(&E);
    }
    assert_int_equal(rc, 0);
    assert_true(calls >= 2);
    assert_true(mfn_eq(E.v[0].old_table, INVALID_MFN));
    assert_int_equal(frame_type_word(&E.f, l3) & FRAME_TYPE_COUNT_MASK, 0);
    test_note("old L3 put drained over %u re-issues", calls);
    pvenv_check(&E);
    pvenv_fini(&E);
}

static void test_base_pointers(void **state)
{
    struct tree t;
    mfn_t l3;

    (void)state;
    pvenv_init(&E, 128);
    build_tree(&t, 1, 1, 2);
    l3 = pvenv_page(&E);
    /* Only an L4 can be a base. */
    assert_int_equal(pvenv_ext(&E, &E.v[0], MMUEXT_PIN_L3_TABLE, mfn_x(l3)), 0);
    assert_int_equal(pvenv_ext(&E, &E.v[0], MMUEXT_NEW_BASEPTR, mfn_x(l3)),
                     -EINVAL);
    assert_int_equal(pvenv_ext(&E, &E.v[0], MMUEXT_NEW_BASEPTR, mfn_x(t.l4)),
                     0);
    assert_int_equal(pvenv_ext(&E, &E.v[0], MMUEXT_NEW_BASEPTR, mfn_x(t.l4)),
                     0);
    assert_int_equal(pvenv_ext(&E, &E.v[1], MMUEXT_NEW_BASEPTR, mfn_x(t.l4)),
                     0);
    assert_int_equal(
        pvenv_ext(&E, &E.v[1], MMUEXT_NEW_USER_BASEPTR, mfn_x(t.l4)), 0);
    pvenv_check(&E);
    assert_int_equal(frame_type_word(&E.f, t.l4) & FRAME_TYPE_COUNT_MASK, 3);
    assert_int_equal(pvenv_ext(&E, &E.v[1], MMUEXT_NEW_USER_BASEPTR, 0), 0);
    assert_true(mfn_eq(E.v[1].user_base, INVALID_MFN));
    pvenv_check(&E);
    pvenv_fini(&E);
}

static void test_update_va_mapping(void **state)
{
    struct tree t;
    mfn_t p;
    uint64_t va;

    (void)state;
    pvenv_init(&E, 128);
    build_tree(&t, 1, 1, 1);
    p = pvenv_page(&E);
    assert_int_equal(pvenv_ext(&E, &E.v[0], MMUEXT_NEW_BASEPTR, mfn_x(t.l4)),
                     0);
    /* L4[0] -> L3[511] -> L2[0] -> L1[20] */
    va = (511ULL << 30) | (20ULL << 12);
    assert_int_equal(
        pv_update_va_mapping(&E.v[0], va, pvenv_pte(p, RW_), UVMF_INVLPG), 0);
    pvenv_check(&E);
    assert_true((frame_type_word(&E.f, p) & FRAME_TYPE_COUNT_MASK) == 1);
    assert_int_equal(pv_vcpu_tlb_fill(&E.v[0], p), 0);
    assert_int_equal(pv_update_va_mapping(&E.v[0], va, 0, UVMF_TLB_FLUSH), 0);
    assert_int_equal(pv_update_va_mapping(&E.v[0], va + (1ULL << 21), 0, 0),
                     -EFAULT);
    assert_int_equal(pv_update_va_mapping(&E.v[0], 1ULL << 47, 0, 0), -EINVAL);
    assert_int_equal(pv_update_va_mapping(&E.v[0], 0xFFFF801234567000ULL, 0, 0),
                     -EINVAL); /* hypervisor's */
    assert_int_equal(pv_update_va_mapping(&E.v[1], va, 0, 0), -EFAULT);
    pvenv_check(&E);
    pvenv_fini(&E);
}

static void test_memory_op(void **state)
{
    uint64_t ext[8];
    struct pv_reservation r = {.extent_start = ext,
                               .nr_extents = 4,
                               .extent_order = 0,
                               .domid = DOMID_SELF};
    unsigned long cmd;
    long n;
    uint64_t before;

    (void)state;
    pvenv_init(&E, 128);
    for (unsigned i = 0; i < 4; i++)
        ext[i] = 0x100 + i;
    cmd = XENMEM_populate_physmap;
    assert_int_equal(pv_memory_op(&E.v[0], &cmd, &r), 4);
    for (unsigned i = 0; i < 4; i++) {
        assert_int_equal(frame_owner(&E.f, _mfn(ext[i])), DOM);
        assert_true(atomic_load(&E.d.m2p[ext[i]]) == 0x100 + i);
    }
    pvenv_check(&E);
    /* Decrease with a continuation in the middle. */
    before = frames_domain_tot(&E.f, DOM);
    cmd = XENMEM_decrease_reservation;
    pv_vcpu_set_preempt(&E.v[0], 2, false);
    n = pv_memory_op(&E.v[0], &cmd, &r);
    assert_int_equal(n, -ERESTART);
    assert_int_equal(cmd >> MEMOP_EXTENT_SHIFT, 2);
    assert_int_equal(cmd & MEMOP_CMD_MASK, XENMEM_decrease_reservation);
    pvenv_check(&E);
    assert_int_equal(pv_memory_op(&E.v[0], &cmd, &r), 4);
    assert_int_equal(frames_domain_tot(&E.f, DOM), before - 4);
    pvenv_check(&E);
    /* A second decrease of the same frames does nothing. */
    cmd = XENMEM_decrease_reservation;
    assert_int_equal(pv_memory_op(&E.v[0], &cmd, &r), 0);
    /* Increase: mfns out; order 2 extents are aligned runs. */
    r.nr_extents = 2;
    r.extent_order = 2;
    cmd = XENMEM_increase_reservation;
    assert_int_equal(pv_memory_op(&E.v[0], &cmd, &r), 2);
    assert_true(IS_ALIGNED(ext[0], 4) && IS_ALIGNED(ext[1], 4));
    pvenv_check(&E);
    /* Malformed requests return the start index. */
    r.extent_order = PV_MAX_EXTENT_ORDER + 1;
    cmd = XENMEM_increase_reservation | (1UL << MEMOP_EXTENT_SHIFT);
    assert_int_equal(pv_memory_op(&E.v[0], &cmd, &r), 1);
    r.extent_order = 0;
    cmd = XENMEM_increase_reservation | (5UL << MEMOP_EXTENT_SHIFT);
    assert_int_equal(pv_memory_op(&E.v[0], &cmd, &r), 5);
    cmd = 2; /* XENMEM_maximum_ram_page: not a reservation */
    assert_int_equal(pv_memory_op(&E.v[0], &cmd, &r), -ENOSYS);
    r.domid = OTHER;
    cmd = XENMEM_increase_reservation;
    assert_int_equal(pv_memory_op(&E.v[0], &cmd, &r), -EPERM);
    /* A domain's own frames only; budget exhaustion stops the loop. */
    r.domid = DOM;
    ext[0] = mfn_x(pvenv_page_of(&E, OTHER));
    r.nr_extents = 1;
    cmd = XENMEM_decrease_reservation;
    assert_int_equal(pv_memory_op(&E.v[0], &cmd, &r), 0);
    pvenv_check(&E);
    pvenv_fini(&E);
}

static void test_pageframe_info(void **state)
{
    uint64_t a[3];
    mfn_t l2, l1;

    (void)state;
    pvenv_init(&E, 64);
    l2 = pvenv_page(&E);
    l1 = pvenv_page(&E);
    pvenv_pt(&E, l2)[0] = pvenv_pte(l1, PT_FLAGS);
    a[0] = mfn_x(l2);
    a[1] = mfn_x(pvenv_page_of(&E, OTHER));
    a[2] = E.f.nr_frames;
    assert_int_equal(pv_pageframe_info(&E.d, a, 3), 0);
    assert_true(a[0] == PV_PFINFO_NOTAB && a[1] == PV_PFINFO_XTAB &&
                a[2] == PV_PFINFO_XTAB);
    assert_int_equal(pv_pageframe_info(&E.d, a, PV_PFINFO_MAX + 1), -E2BIG);
    /* Partial: neither validated nor pinned, so a plain page. */
    pv_vcpu_set_preempt(&E.v[0], 1, false);
    assert_int_equal(
        pvenv_ext1(&E.v[0], MMUEXT_PIN_L2_TABLE, mfn_x(l2), (uint32_t[]){0}),
        -ERESTART);
    assert_true(frame_type_word(&E.f, l2) & FRAME_TYPE_PARTIAL);
    assert_int_equal(pfinfo(l2), PV_PFINFO_NOTAB);
    assert_int_equal(pfinfo(l1), PV_PFINFO_L1TAB);
    pvenv_check(&E);
    assert_int_equal(pvenv_ext(&E, &E.v[0], MMUEXT_PIN_L2_TABLE, mfn_x(l2)), 0);
    assert_int_equal(pfinfo(l2), PV_PFINFO_L2TAB | PV_PFINFO_LPINTAB);
    assert_int_equal(pvenv_ext(&E, &E.v[0], MMUEXT_UNPIN_TABLE, mfn_x(l2)), 0);
    /* Stale type L2, count 0: a plain page, as is its former child. */
    assert_int_equal(pfinfo(l2), PV_PFINFO_NOTAB);
    assert_int_equal(pfinfo(l1), PV_PFINFO_NOTAB);
    pvenv_check(&E);
    pvenv_fini(&E);
}

/* Teardown with partial frames nobody will resume, pins and bases. */
static void test_relinquish(void **state)
{
    struct tree t, u;

    (void)state;
    pvenv_init(&E, 256);
    build_tree(&t, 2, 2, 2);
    build_tree(&u, 1, 2, 2);
    assert_int_equal(pvenv_ext(&E, &E.v[0], MMUEXT_NEW_BASEPTR, mfn_x(t.l4)),
                     0);
    assert_int_equal(pvenv_ext(&E, &E.v[1], MMUEXT_PIN_L4_TABLE, mfn_x(t.l4)),
                     0);
    pv_vcpu_set_preempt(&E.v[2], 700, false);
    assert_int_equal(
        pvenv_ext1(&E.v[2], MMUEXT_PIN_L4_TABLE, mfn_x(u.l4), (uint32_t[]){0}),
        -ERESTART);
    pvenv_check(&E);
    pv_vcpu_set_preempt(&E.v[0], 50, true);
    pvenv_fini(&E); /* relinquish re-issued until done, all frames freed */
}

/* SET_LDT, CLEAR_PAGE, COPY_PAGE. */
static void test_mmuext_misc(void **state)
{
    struct mmuext_op op = {
        .cmd = MMUEXT_SET_LDT, .arg1.linear_addr = 0x10000, .arg2.nr_ents = 16};
    uint32_t done = 0;
    mfn_t a, b, l1;

    (void)state;
    pvenv_init(&E, 64);
    assert_int_equal(pv_mmuext_op(&E.v[0], &op, 1, &done, DOMID_SELF), 0);
    assert_true(E.v[0].ldt_base == 0x10000 && E.v[0].ldt_ents == 16);
    static const uint64_t bad_ldt[][2] = {
        {0x10008, 1},                   /* not page aligned */
        {0x10000, PV_LDT_MAX_ENTS + 1}, /* too many entries */
        {(1ULL << 47) - 4096, 1024},    /* leaves the lower half */
        {0xFFFF800000000000ULL, 1},     /* hypervisor slots */
        {0xFFFF87FFFFFFF000ULL, 1},
        {0xFFFFFFFFFFFFF000ULL, 1024}, /* wraps */
    };
    for (unsigned i = 0; i < ARRAY_SIZE(bad_ldt); i++) {
        op.arg1.linear_addr = bad_ldt[i][0];
        op.arg2.nr_ents = (uint32_t)bad_ldt[i][1];
        done = 0;
        assert_int_equal(pv_mmuext_op(&E.v[0], &op, 1, &done, DOMID_SELF),
                         -EINVAL);
    }
    op.arg1.linear_addr =
        0xFFFF880000000000ULL; /* first guest address above them */
    op.arg2.nr_ents = PV_LDT_MAX_ENTS;
    done = 0;
    assert_int_equal(pv_mmuext_op(&E.v[0], &op, 1, &done, DOMID_SELF), 0);
    /* Copy and clear need the destination writable. */
    a = pvenv_page(&E);
    b = pvenv_page(&E);
    l1 = pvenv_page(&E);
    memset(pvenv_pt(&E, a), 0x5A, PAGE_SIZE);
    op = (struct mmuext_op){.cmd = MMUEXT_COPY_PAGE,
                            .arg1.mfn = mfn_x(b),
                            .arg2.src_mfn = mfn_x(a)};
    done = 0;
    assert_int_equal(pv_mmuext_op(&E.v[0], &op, 1, &done, DOMID_SELF), 0);
    assert_int_equal(memcmp(pvenv_pt(&E, a), pvenv_pt(&E, b), PAGE_SIZE), 0);
    assert_int_equal(pvenv_ext(&E, &E.v[0], MMUEXT_CLEAR_PAGE, mfn_x(a)), 0);
    assert_true(pvenv_pt(&E, a)[100] == 0);
    assert_int_equal(pvenv_ext(&E, &E.v[0], MMUEXT_PIN_L1_TABLE, mfn_x(l1)), 0);
    assert_int_equal(pvenv_ext(&E, &E.v[0], MMUEXT_CLEAR_PAGE, mfn_x(l1)),
                     -EINVAL);
    op.arg1.mfn = mfn_x(l1);
    done = 0;
    assert_int_equal(pv_mmuext_op(&E.v[0], &op, 1, &done, DOMID_SELF), -EINVAL);
    op.arg1.mfn = mfn_x(b);
    op.arg2.src_mfn = mfn_x(pvenv_page_of(&E, OTHER));
    done = 0;
    assert_int_equal(pv_mmuext_op(&E.v[0], &op, 1, &done, DOMID_SELF), -EINVAL);
    pvenv_check(&E);
    pvenv_fini(&E);
}

/* The audit fails, and its first finding is at `where` and says both. */
static void audit_names(mfn_t where, const char *what, const char *rule)
{
    struct pv_audit_report rep;

    assert_int_equal(pv_audit(&E.d, &rep), -EUCLEAN);
    test_note("audit: mfn %#llx: %s", (unsigned long long)mfn_x(rep.first_mfn),
              rep.first);
    assert_true(mfn_eq(rep.first_mfn, where));
    assert_non_null(strstr(rep.first, what));
    assert_non_null(strstr(rep.first, rule));
}

/* The auditor itself: each kind of damage, made by hand on a healthy
 * domain, must be reported; undoing it must make the audit pass again. */
static void test_audit_catches(void **state)
{
    struct tree t;
    mfn_t l1, l2, d, o;
    uint64_t *e, saved;
    struct frame *pg;

    (void)state;
    pvenv_init(&E, 128);
    build_tree(&t, 1, 1, 1);
    assert_int_equal(pvenv_ext(&E, &E.v[0], MMUEXT_NEW_BASEPTR, mfn_x(t.l4)),
                     0);
    l2 = pte_mfn(pvenv_pt(&E, pte_mfn(pvenv_pt(&E, t.l4)[0]))[511]);
    l1 = pte_mfn(pvenv_pt(&E, l2)[0]);
    d = t.data[0];
    o = pvenv_page_of(&E, OTHER);
    pvenv_check(&E);

    /* A general reference nobody holds. */
    assert_int_equal(frame_get(&E.f, d, DOM), 0);
    assert_int_equal(pvenv_audit(&E), -EUCLEAN);
    frame_put(&E.f, d);
    pvenv_check(&E);
    /* An entry written behind the hypervisor's back. */
    e = &pvenv_pt(&E, l1)[30];
    *e = pvenv_pte(d, PTE_P);
    assert_int_equal(pvenv_audit(&E), -EUCLEAN);
    *e = 0;
    pvenv_check(&E);
    /* An L2 entry retargeted at another domain's frame. */
    e = &pvenv_pt(&E, l2)[0];
    saved = *e;
    *e = pvenv_pte(o, PT_FLAGS);
    assert_int_equal(pvenv_audit(&E), -EUCLEAN);
    *e = saved;
    pvenv_check(&E);
    /* A writable translation of a page table. */
    atomic_store(&E.v[1].wtlb[3], mfn_x(l1));
    assert_int_equal(pvenv_audit(&E), -EUCLEAN);
    atomic_store(&E.v[1].wtlb[3], PV_WTLB_EMPTY);
    pvenv_check(&E);
    /* A hypervisor slot overwritten. */
    e = &pvenv_pt(&E, t.l4)[PV_HV_L4_FIRST + 2];
    saved = *e;
    *e = 0;
    assert_int_equal(pvenv_audit(&E), -EUCLEAN);
    *e = saved;
    pvenv_check(&E);
    /* A lock left behind, a pin bit without its references. */
    pg = frames_get_frame(&E.f, l2);
    atomic_fetch_or(&pg->type_info, FRAME_TYPE_LOCKED);
    assert_int_equal(pvenv_audit(&E), -EUCLEAN);
    atomic_fetch_and(&pg->type_info, ~FRAME_TYPE_LOCKED);
    atomic_fetch_or(&pg->type_info, FRAME_TYPE_PINNED);
    assert_int_equal(pvenv_audit(&E), -EUCLEAN);
    atomic_fetch_and(&pg->type_info, ~FRAME_TYPE_PINNED);
    pvenv_check(&E);
    /* A base pointer the frame does not know about. */
    E.v[2].base = t.l4;
    assert_int_equal(pvenv_audit(&E), -EUCLEAN);
    E.v[2].base = INVALID_MFN;
    pvenv_check(&E);
    /*
     * What a stale writable translation leaves in a validated L1: a
     * writable map of the live L4, and a writable self-map.  The audit
     * names the entry and the rule, not only a count on the target.
     */
    e = &pvenv_pt(&E, l1)[31];
    *e = pvenv_pte(t.l4, PTE_P | PTE_RW);
    audit_names(l1, "maps mfn", "(L4) writable: validation refuses");
    *e = pvenv_pte(l1, PTE_P | PTE_RW);
    audit_names(l1, "maps its own table writable", "validation refuses");
    *e = 0;
    pvenv_check(&E);
    pvenv_fini(&E);
}

static unsigned dirty_calls;

static void count_dirty(void *arg, mfn_t mfn)
{
    (void)arg;
    (void)mfn;
    dirty_calls++;
}

/* Log-dirty learns about validation, pin, unpin and machphys updates. */
static void test_mark_dirty(void **state)
{
    mfn_t l2, l1;
    struct mmu_update u;
    uint32_t done = 0;

    (void)state;
    pvenv_init(&E, 64);
    E.d.hooks.mark_dirty = count_dirty;
    l2 = pvenv_page(&E);
    l1 = pvenv_page(&E);
    pvenv_pt(&E, l2)[0] = pvenv_pte(l1, PT_FLAGS);
    dirty_calls = 0;
    assert_int_equal(pvenv_ext(&E, &E.v[0], MMUEXT_PIN_L2_TABLE, mfn_x(l2)), 0);
    assert_int_equal(dirty_calls, 3); /* validate l2, validate l1, pin */
    assert_int_equal(pvenv_ext(&E, &E.v[0], MMUEXT_UNPIN_TABLE, mfn_x(l2)), 0);
    assert_int_equal(dirty_calls, 4);
    u = (struct mmu_update){(mfn_x(l1) << 12) + MMU_MACHPHYS_UPDATE, 7};
    assert_int_equal(pv_mmu_update(&E.v[0], &u, 1, &done, DOMID_SELF), 0);
    assert_int_equal(dirty_calls, 5);
    E.d.hooks.mark_dirty = NULL;
    pvenv_fini(&E);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_entry_rules),
        cmocka_unit_test(test_writable_excludes_table),
        cmocka_unit_test(test_pin_twice_and_foreign),
        cmocka_unit_test(test_preempt_everywhere),
        cmocka_unit_test(test_mmu_update_commands),
        cmocka_unit_test(test_deferred_put),
        cmocka_unit_test(test_base_pointers),
        cmocka_unit_test(test_update_va_mapping),
        cmocka_unit_test(test_memory_op),
        cmocka_unit_test(test_pageframe_info),
        cmocka_unit_test(test_relinquish),
        cmocka_unit_test(test_mark_dirty),
        cmocka_unit_test(test_audit_catches),
        cmocka_unit_test(test_mmuext_misc),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
