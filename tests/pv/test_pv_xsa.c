/*
 * The preemption and ordering bugs that Xen fixed in XSA-299 and XSA-401,
 * as deterministic multi-vCPU scenarios driven by the preemption hook.
 * Each runs twice: with the rule (the audit passes after every step), and
 * with the rule switched off (struct pv_rules), where the audit or the
 * corruption counter must catch the damage - never a crash.
 */
#include <inttypes.h>

#include "pvenv.h"

static struct pvenv E;
static unsigned audit_failures;

/* After each step: with the rule, everything adds up; without, count. */
static void step(bool off)
{
    if (!off) {
        pvenv_check(&E);
        return;
    }
    if (pvenv_audit(&E) || frames_check(&E.f))
        audit_failures++;
}

/* Teardown after a run with a rule off: nothing is checked. */
static void fini_dirty(void)
{
    int rc;

    for (unsigned i = 0; i < PVENV_VCPUS; i++)
        pv_vcpu_set_preempt(&E.v[i], 0, false);
    E.d.rules = (struct pv_rules){0};
    while ((rc = pv_domain_relinquish(&E.d)) == -ERESTART)
        ;
    pv_domain_fini(&E.d);
    frames_fini(&E.f);
}

static uint64_t tcount(mfn_t m)
{
    return frame_type_word(&E.f, m) & FRAME_TYPE_COUNT_MASK;
}

static bool partial(mfn_t m)
{
    return frame_type_word(&E.f, m) & FRAME_TYPE_PARTIAL;
}

/*
 * The common start of xen.md 1.9 items 1 and 2: A is an L3 whose entry 3
 * points at B, an L2 with L1 children at 0..3; C is a pinned L4, D a
 * pinned L3.
 *  V0 pins A, then unpins it and is preempted while demoting below entry 3
 *     (B fully demoted, A partial with nr_validated 3, V0's deferred put).
 *  V1 hooks A into C, resuming A's promotion, and is preempted half-way
 *     through B (B partial, A's entry 3 partial).
 */
struct s299 {
    mfn_t a, b, c, d, l1[4];
};

static void xsa299_start(struct s299 *s, struct pv_rules rules)
{
    bool off = rules.no_partial_ref || rules.cleanup_put_always ||
               rules.no_deferred_partial || rules.safety_before_commit;
    uint32_t done = 0;

    audit_failures = 0;
    pvenv_init(&E, 128);
    E.d.rules = rules;
    E.no_check = off;
    s->a = pvenv_page(&E);
    s->b = pvenv_page(&E);
    s->c = pvenv_page(&E);
    s->d = pvenv_page(&E);
    for (unsigned k = 0; k < 4; k++) {
        s->l1[k] = pvenv_page(&E);
        pvenv_pt(&E, s->b)[k] = pvenv_pte(s->l1[k], PT_FLAGS);
    }
    pvenv_pt(&E, s->a)[3] = pvenv_pte(s->b, PT_FLAGS);
    assert_int_equal(pvenv_ext(&E, &E.v[2], MMUEXT_PIN_L4_TABLE,
                               mfn_x(s->c)), 0);
    assert_int_equal(pvenv_ext(&E, &E.v[2], MMUEXT_PIN_L3_TABLE,
                               mfn_x(s->d)), 0);
    assert_int_equal(pvenv_ext(&E, &E.v[0], MMUEXT_PIN_L3_TABLE,
                               mfn_x(s->a)), 0);
    step(off);

    /* V0 unpins A: 508 checks down to entry 3, 511 inside B, then it is
     * preempted before entry 2. */
    pv_vcpu_set_preempt(&E.v[0], 508 + 511 + 1, false);
    assert_int_equal(pvenv_ext1(&E.v[0], MMUEXT_UNPIN_TABLE, mfn_x(s->a),
                                &done), -ERESTART);
    assert_int_equal(done, 1); /* the unpin itself counts as done */
    assert_true(partial(s->a) && mfn_eq(E.v[0].old_table, s->a) &&
                E.v[0].old_partial);
    assert_int_equal(frames_get_frame(&E.f, s->a)->nr_validated, 3);
    assert_int_equal(tcount(s->b), 0);
    step(off);

    /* V1 hooks A into C: A resumes at entry 3, B stops before entry 2. */
    pv_vcpu_set_preempt(&E.v[1], 2, false);
    done = 0;
    assert_int_equal(pvenv_upd1(&E.v[1], s->c, 0, pvenv_pte(s->a, PT_FLAGS),
                                &done), -ERESTART);
    assert_true(partial(s->a) && partial(s->b));
    assert_int_equal(frames_get_frame(&E.f, s->b)->nr_validated, 2);
    assert_true(frames_get_frame(&E.f, s->a)->partial_flags &
                FRAME_PARTIAL_SET);
    step(off);
}

/* V0's continuation: its deferred put (A's clean-up) drains. */
static void v0_resume(struct s299 *s)
{
    uint32_t done = 1;

    assert_int_equal(pvenv_ext1(&E.v[0], MMUEXT_UNPIN_TABLE, mfn_x(s->a),
                                &done), 0);
    assert_true(mfn_eq(E.v[0].old_table, INVALID_MFN));
}

/*
 * xen.md 1.9 item 1: V2 validates B through D and drops it again, then
 * gives B back (decrease_reservation).  The partial entry A[3] must keep B
 * allocated; without that rule B is freed and handed to another domain
 * while A still refers to it.
 */
static void xsa299_freed_child(struct pv_rules rules, bool off)
{
    struct s299 s;
    uint64_t ext;
    struct pv_reservation r = {.extent_start = &ext, .nr_extents = 1,
                               .domid = DOMID_SELF};
    unsigned long cmd = XENMEM_decrease_reservation;
    mfn_t m;
    bool reassigned = false;

    xsa299_start(&s, rules);
    assert_int_equal(pvenv_upd(&E, &E.v[2], s.d, 0,
                               pvenv_pte(s.b, PT_FLAGS)), 0);
    assert_true(!partial(s.b) && tcount(s.b) == 1);
    step(off);
    assert_int_equal(pvenv_upd(&E, &E.v[2], s.d, 0, 0), 0);
    assert_int_equal(tcount(s.b), 0);
    step(off);
    ext = mfn_x(s.b);
    assert_int_equal(pv_memory_op(&E.v[2], &cmd, &r), 1);
    step(off);
    /* Another domain allocates everything it can get. */
    while (frames_alloc(&E.f, OTHER, 0, &m) == 0)
        reassigned |= mfn_eq(m, s.b);
    step(off);
    if (off) {
        assert_true(reassigned);
        assert_int_equal(frame_owner(&E.f, s.b), OTHER);
    } else {
        assert_false(reassigned);
        assert_int_equal(frame_owner(&E.f, s.b), DOM);
    }
    v0_resume(&s);
    step(off);
    if (!off) {
        /* A's clean-up dropped the last reference: B is free now. */
        assert_int_equal(frame_owner(&E.f, s.b), DOMID_NONE);
        pvenv_fini(&E);
    } else {
        assert_true(audit_failures > 0);
        assert_true(atomic_load(&E.d.corruption) > 0);
        test_note("rule off: B went to domain %u while A[3] still referred "
                  "to it; %u audit failures", OTHER, audit_failures);
        fini_dirty();
    }
}

static void test_xsa299_freed_child(void **state)
{
    (void)state;
    xsa299_freed_child((struct pv_rules){0}, false);
    xsa299_freed_child((struct pv_rules){.no_partial_ref = true}, true);
}

/*
 * xen.md 1.9 item 2: V2 finishes B through D and keeps it; V0's clean-up
 * of A then reaches A[3].  A clean-up put must be a no-op on a B that is no
 * longer partial; without that rule V0 drops D's type reference on B.
 */
static void xsa299_cleanup_put(struct pv_rules rules, bool off)
{
    struct s299 s;
    uint32_t done = 0;

    xsa299_start(&s, rules);
    assert_int_equal(pvenv_upd(&E, &E.v[2], s.d, 0,
                               pvenv_pte(s.b, PT_FLAGS)), 0);
    assert_true(!partial(s.b) && tcount(s.b) == 1);
    step(off);
    v0_resume(&s);
    step(off);
    if (off) {
        assert_int_equal(tcount(s.b), 0); /* D[0] lost its type ref */
        assert_true(audit_failures > 0);
        test_note("rule off: the clean-up put devalidated B under D[0]; "
                  "%u audit failures", audit_failures);
        fini_dirty();
        return;
    }
    assert_int_equal(tcount(s.b), 1);
    /* V1's re-issue now validates A afresh under C. */
    assert_int_equal(pvenv_upd1(&E.v[1], s.c, 0, pvenv_pte(s.a, PT_FLAGS),
                                &done), 0);
    assert_int_equal(tcount(s.b), 2);
    step(off);
    pvenv_fini(&E);
}

static void test_xsa299_cleanup_put(void **state)
{
    (void)state;
    xsa299_cleanup_put((struct pv_rules){0}, false);
    xsa299_cleanup_put((struct pv_rules){.cleanup_put_always = true}, true);
}

/*
 * xen.md 1.9 item 3: V0 and V1 pin the same L2 A whose entry 3 is invalid.
 * V0 is preempted, V1 resumes and fails at entry 3 (its deferred put owns
 * A's clean-up), V0 re-issues and fails the same way: both hold a deferred
 * put of A, with one partial type reference between them.  The second
 * drain must be a clean-up no-op; without the partial distinction it
 * underflows the type count.
 */
static void xsa299_double_deferred(struct pv_rules rules, bool off)
{
    mfn_t a, l1[3];
    uint32_t done0 = 0, done1 = 0;

    audit_failures = 0;
    pvenv_init(&E, 64);
    E.d.rules = rules;
    E.no_check = off;
    a = pvenv_page(&E);
    for (unsigned k = 0; k < 3; k++) {
        l1[k] = pvenv_page(&E);
        pvenv_pt(&E, a)[k] = pvenv_pte(l1[k], PT_FLAGS);
    }
    pvenv_pt(&E, a)[3] = pvenv_pte(pvenv_page(&E), PT_FLAGS | PTE_PSE);

    pv_vcpu_set_preempt(&E.v[0], 1, false);
    assert_int_equal(pvenv_ext1(&E.v[0], MMUEXT_PIN_L2_TABLE, mfn_x(a),
                                &done0), -ERESTART);
    assert_true(partial(a));
    assert_int_equal(frames_get_frame(&E.f, a)->nr_validated, 1);
    step(off);
    /* V1 resumes A and fails at entry 3: its result waits for the drain. */
    assert_int_equal(pvenv_ext1(&E.v[1], MMUEXT_PIN_L2_TABLE, mfn_x(a),
                                &done1), -ERESTART);
    assert_true(mfn_eq(E.v[1].old_table, a) && E.v[1].old_partial);
    assert_true(partial(a));
    step(off);
    /* V0's continuation fails at entry 3 too. */
    assert_int_equal(pvenv_ext1(&E.v[0], MMUEXT_PIN_L2_TABLE, mfn_x(a),
                                &done0), -ERESTART);
    assert_true(mfn_eq(E.v[0].old_table, a) && E.v[0].old_partial);
    step(off);
    /* Both drain; each then sees its held-back result. */
    assert_int_equal(pvenv_ext1(&E.v[1], MMUEXT_PIN_L2_TABLE, mfn_x(a),
                                &done1), -EINVAL);
    assert_int_equal(tcount(a), 0);
    step(off);
    assert_int_equal(pvenv_ext1(&E.v[0], MMUEXT_PIN_L2_TABLE, mfn_x(a),
                                &done0), -EINVAL);
    step(off);
    if (off) {
        assert_true(atomic_load(&E.d.corruption) > 0);
        assert_true(audit_failures > 0);
        test_note("rule off: second deferred put underflowed (%s)",
                  E.d.corruption_msg);
        fini_dirty();
        return;
    }
    assert_int_equal(frame_count(&E.f, a), 1); /* allocation only */
    pvenv_fini(&E);
}

static void test_xsa299_double_deferred(void **state)
{
    (void)state;
    xsa299_double_deferred((struct pv_rules){0}, false);
    xsa299_double_deferred((struct pv_rules){.no_deferred_partial = true},
                           true);
}

/*
 * xen.md 1.9 item 4 (XSA-401): V0 pins P, a frame whose stale type is
 * writable, as an L1.  Inside the window of the type change (the hook),
 * V1 maps P writable, writes through it (a writable translation) and
 * unmaps it.  With the flush after the commit, V1's mapping is refused;
 * with the flush first, the commit succeeds (ABA) and V1 keeps a writable
 * translation of a page table.
 */
struct x401 {
    mfn_t p, y;
    bool armed;
    int map_rc, fill_rc;
};

static void x401_hook(void *arg, mfn_t mfn, uint64_t old_type,
                      uint64_t new_type)
{
    struct x401 *x = arg;
    uint32_t done = 0;

    if (!x->armed || !mfn_eq(mfn, x->p) || old_type != FRAME_TYPE_WRITABLE ||
        new_type != FRAME_TYPE_L1)
        return;
    x->armed = false;
    x->map_rc = pvenv_upd1(&E.v[1], x->y, 0, pvenv_pte(x->p, PTE_P | PTE_RW),
                           &done);
    if (x->map_rc)
        return;
    x->fill_rc = pv_vcpu_tlb_fill(&E.v[1], x->p);
    done = 0;
    assert_int_equal(pvenv_upd1(&E.v[1], x->y, 0, 0, &done), 0);
}

static void xsa401(struct pv_rules rules, bool off)
{
    struct x401 x = {.map_rc = 1, .fill_rc = 1};

    audit_failures = 0;
    pvenv_init(&E, 64);
    E.d.rules = rules;
    E.no_check = off;
    x.p = pvenv_page(&E);
    x.y = pvenv_page(&E);
    assert_int_equal(pvenv_ext(&E, &E.v[1], MMUEXT_PIN_L1_TABLE, mfn_x(x.y)),
                     0);
    /* P was writable and still has a translation in V1's TLB. */
    assert_int_equal(pvenv_upd(&E, &E.v[1], x.y, 0,
                               pvenv_pte(x.p, PTE_P | PTE_RW)), 0);
    assert_int_equal(pv_vcpu_tlb_fill(&E.v[1], x.p), 0);
    assert_int_equal(pvenv_upd(&E, &E.v[1], x.y, 0, 0), 0);
    step(off);
    E.d.hooks.type_changed = x401_hook;
    E.d.hooks.arg = &x;
    x.armed = true;
    assert_int_equal(pvenv_ext(&E, &E.v[0], MMUEXT_PIN_L1_TABLE, mfn_x(x.p)),
                     0);
    assert_false(x.armed);
    step(off);
    E.d.hooks.type_changed = NULL;
    if (off) {
        assert_int_equal(x.map_rc, 0);
        assert_int_equal(x.fill_rc, 0);
        assert_true(audit_failures > 0);
        test_note("rule off: a writable translation of an L1 survived");
        fini_dirty();
        return;
    }
    assert_int_equal(x.map_rc, -EBUSY);
    pvenv_fini(&E);
}

static void test_xsa401(void **state)
{
    (void)state;
    xsa401((struct pv_rules){0}, false);
    xsa401((struct pv_rules){.safety_before_commit = true}, true);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_xsa299_freed_child),
        cmocka_unit_test(test_xsa299_cleanup_put),
        cmocka_unit_test(test_xsa299_double_deferred),
        cmocka_unit_test(test_xsa401),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
