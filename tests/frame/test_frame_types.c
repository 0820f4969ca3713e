/*
 * The type state machine of frame.h with scripted validate/devalidate ops:
 * every transition, the one-validator rule, partial progress and its
 * general reference, clean-up puts, the F9 ordering of the type_changed
 * hook, the entry lock and the pin bit.  frames_check() after every step.
 */
#include <errno.h>

#include "frame/frame.h"
#include "testlib.h"

static const struct frame_type_ops ops;

struct script {
    struct frames *f;
    int validate_rc[4];   /* returned by successive validations */
    int devalidate_rc[4]; /* returned by successive devalidations */
    unsigned nval, ndeval;
    unsigned last_vflags, last_dflags;
    bool owns;    /* teardown_owns() answer */
    int inner_rc; /* a nested preemptible get during validation */
    bool try_inner;
    uint64_t seen_type; /* type word when type_changed ran */
    unsigned changes;
};

static int s_validate(void *ctx, mfn_t mfn, uint64_t type, unsigned flags)
{
    struct script *s = ctx;

    if (s->try_inner)
        s->inner_rc =
            frame_get_type(s->f, mfn, type, FRAME_TF_PREEMPTIBLE, &ops, s);
    s->last_vflags = flags;
    return s->validate_rc[s->nval++ % 4];
}

static int s_devalidate(void *ctx, mfn_t mfn, uint64_t type, unsigned flags)
{
    struct script *s = ctx;

    (void)mfn;
    (void)type;
    s->last_dflags = flags;
    return s->devalidate_rc[s->ndeval++ % 4];
}

static bool s_owns(void *ctx, mfn_t mfn)
{
    (void)mfn;
    return ((struct script *)ctx)->owns;
}

static void s_changed(void *ctx, mfn_t mfn, uint64_t old_type,
                      uint64_t new_type)
{
    struct script *s = ctx;

    (void)old_type;
    (void)new_type;
    s->seen_type = frame_type_word(s->f, mfn);
    s->changes++;
}

static const struct frame_type_ops ops = {s_validate, s_devalidate, s_owns,
                                          s_changed};

static struct frames F;
static struct script S;

static mfn_t setup(void)
{
    mfn_t m;

    assert_int_equal(frames_init(&F, 16), 0);
    assert_int_equal(frames_domain_add(&F, 1, 16), 0);
    assert_int_equal(frames_alloc(&F, 1, 0, &m), 0);
    S = (struct script){.f = &F};
    return m;
}

static void check(void)
{
    assert_int_equal(frames_check(&F), 0);
}

static uint64_t tw(mfn_t m)
{
    return frame_type_word(&F, m);
}

static uint64_t tc(mfn_t m)
{
    return tw(m) & FRAME_TYPE_COUNT_MASK;
}

static void test_writable_and_type_change(void **state)
{
    mfn_t m = setup();

    (void)state;
    BUILD_BUG_ON(sizeof(struct frame) > 32);
    test_note("struct frame is %zu bytes: %.2f%% of the memory it describes",
              sizeof(struct frame), 100.0 * sizeof(struct frame) / PAGE_SIZE);
    assert_int_equal(frame_get(&F, m, 1), 0);
    assert_int_equal(frame_get_type(&F, m, FRAME_TYPE_WRITABLE, 0, &ops, &S),
                     0);
    assert_int_equal(S.changes, 1); /* none -> writable */
    assert_int_equal(frame_get_type(&F, m, FRAME_TYPE_WRITABLE, 0, &ops, &S),
                     0);
    assert_int_equal(tc(m), 2);
    assert_true(tw(m) & FRAME_TYPE_VALIDATED);
    check();
    /* F7: no type change while in use. */
    assert_int_equal(frame_get_type(&F, m, FRAME_TYPE_L1, 0, &ops, &S),
                     -EINVAL);
    assert_int_equal(frame_put_type(&F, m, FRAME_TYPE_WRITABLE, 0, &ops, &S),
                     0);
    assert_int_equal(frame_put_type(&F, m, FRAME_TYPE_WRITABLE, 0, &ops, &S),
                     0);
    /* Stale type at count 0. */
    assert_true((tw(m) & FRAME_TYPE_MASK) == FRAME_TYPE_WRITABLE);
    assert_int_equal(frame_put_type(&F, m, FRAME_TYPE_WRITABLE, 0, &ops, &S),
                     -EUCLEAN);
    check();
    assert_int_equal(frame_get_type(&F, m, FRAME_TYPE_L1, 0, &ops, &S), 0);
    assert_int_equal(S.nval, 1);
    assert_true((tw(m) & FRAME_TYPE_MASK) == FRAME_TYPE_L1);
    frame_put(&F, m);
    check();
    frames_fini(&F);
}

static void test_validate_once(void **state)
{
    mfn_t m = setup();

    (void)state;
    assert_int_equal(frame_get_type(&F, m, FRAME_TYPE_L2, 0, &ops, &S), 0);
    assert_int_equal(frame_get_type(&F, m, FRAME_TYPE_L2, 0, &ops, &S), 0);
    assert_int_equal(S.nval, 1); /* F8: only on 0 -> 1 */
    assert_int_equal(tc(m), 2);
    assert_int_equal(frame_put_type(&F, m, FRAME_TYPE_L2, 0, &ops, &S), 0);
    assert_int_equal(S.ndeval, 0);
    assert_int_equal(frame_put_type(&F, m, FRAME_TYPE_L2, 0, &ops, &S), 0);
    assert_int_equal(S.ndeval, 1); /* F8: only on 1 -> 0 */
    assert_false(tw(m) & FRAME_TYPE_VALIDATED);
    check();
    /* Same type again: validated afresh, no type change. */
    S.changes = 0;
    assert_int_equal(frame_get_type(&F, m, FRAME_TYPE_L2, 0, &ops, &S), 0);
    assert_int_equal(S.nval, 2);
    assert_int_equal(S.changes, 0);
    assert_int_equal(frame_put_type(&F, m, FRAME_TYPE_L2, 0, &ops, &S), 0);
    check();
    frames_fini(&F);
}

static void test_partial_validation(void **state)
{
    mfn_t m = setup();

    (void)state;
    /* -EINTR: nothing done, back to count 0. */
    S.validate_rc[0] = -EINTR;
    assert_int_equal(
        frame_get_type(&F, m, FRAME_TYPE_L3, FRAME_TF_PREEMPTIBLE, &ops, &S),
        -EINTR);
    assert_int_equal(tc(m), 0);
    check();
    /* -ERESTART: partial, which owns count 1 and a general reference. */
    S.validate_rc[1] = -ERESTART;
    assert_int_equal(
        frame_get_type(&F, m, FRAME_TYPE_L3, FRAME_TF_PREEMPTIBLE, &ops, &S),
        -ERESTART);
    assert_true(tw(m) & FRAME_TYPE_PARTIAL);
    assert_int_equal(tc(m), 1);
    assert_int_equal(frame_count(&F, m), 2);
    check();
    /* A full put has no reference to drop on a partial frame. */
    assert_int_equal(frame_put_type(&F, m, FRAME_TYPE_L3, 0, &ops, &S),
                     -EUCLEAN);
    /* Resume: RESUME flag, the partial's general ref goes. */
    S.validate_rc[2] = 0;
    assert_int_equal(
        frame_get_type(&F, m, FRAME_TYPE_L3, FRAME_TF_PREEMPTIBLE, &ops, &S),
        0);
    assert_true(S.last_vflags & FRAME_TF_RESUME);
    assert_false(tw(m) & FRAME_TYPE_PARTIAL);
    assert_int_equal(frame_count(&F, m), 1);
    check();
    /* Devalidation -EINTR: validated again, reference still held. */
    S.devalidate_rc[0] = -EINTR;
    assert_int_equal(
        frame_put_type(&F, m, FRAME_TYPE_L3, FRAME_TF_PREEMPTIBLE, &ops, &S),
        -EINTR);
    assert_true(tw(m) & FRAME_TYPE_VALIDATED);
    assert_int_equal(tc(m), 1);
    /* -ERESTART: partial; a clean-up put finishes it. */
    S.devalidate_rc[1] = -ERESTART;
    assert_int_equal(
        frame_put_type(&F, m, FRAME_TYPE_L3, FRAME_TF_PREEMPTIBLE, &ops, &S),
        -ERESTART);
    assert_true(tw(m) & FRAME_TYPE_PARTIAL);
    assert_int_equal(frame_count(&F, m), 2);
    check();
    S.devalidate_rc[2] = 0;
    assert_int_equal(
        frame_put_type(&F, m, FRAME_TYPE_L3, FRAME_TF_PARTIAL_SET, &ops, &S),
        0);
    assert_true(S.last_dflags & FRAME_TF_RESUME);
    assert_int_equal(tc(m), 0);
    assert_int_equal(frame_count(&F, m), 1);
    /* A clean-up put on a frame nobody left partial: a no-op. */
    assert_int_equal(
        frame_put_type(&F, m, FRAME_TYPE_L3, FRAME_TF_PARTIAL_SET, &ops, &S),
        0);
    assert_int_equal(S.ndeval, 3);
    /* ...unless the rule is switched off (test-only): then an underflow. */
    assert_int_equal(
        frame_put_type(&F, m, FRAME_TYPE_L3,
                       FRAME_TF_PARTIAL_SET | FRAME_TF_TEST_LEGACY_PUT, &ops,
                       &S),
        -EUCLEAN);
    check();
    frames_fini(&F);
}

static void test_failed_validation(void **state)
{
    mfn_t m = setup();

    (void)state;
    S.validate_rc[0] = -EINVAL;
    assert_int_equal(frame_get_type(&F, m, FRAME_TYPE_L2, 0, &ops, &S),
                     -EINVAL);
    assert_int_equal(tw(m), 0); /* forgotten entirely */
    check();
    /* A failure whose tear-down the caller queued keeps the progress. */
    S.validate_rc[1] = -EINVAL;
    S.owns = true;
    assert_int_equal(frame_get_type(&F, m, FRAME_TYPE_L2, 0, &ops, &S),
                     -EINVAL);
    assert_true(tw(m) & FRAME_TYPE_PARTIAL);
    assert_int_equal(frame_count(&F, m), 2);
    check();
    assert_int_equal(
        frame_put_type(&F, m, FRAME_TYPE_L2, FRAME_TF_PARTIAL_SET, &ops, &S),
        0);
    assert_int_equal(tc(m), 0);
    assert_int_equal(frame_count(&F, m), 1);
    check();
    frames_fini(&F);
}

static void test_one_validator(void **state)
{
    mfn_t m = setup();

    (void)state;
    S.try_inner = true;
    S.inner_rc = 1;
    assert_int_equal(frame_get_type(&F, m, FRAME_TYPE_L2, 0, &ops, &S), 0);
    assert_int_equal(S.inner_rc, -EINTR); /* F8: someone validates */
    assert_int_equal(tc(m), 1);
    check();
    frames_fini(&F);
}

/* F9: the hook sees the new type committed; the test switch shows the
 * pre-XSA-401 order, where it ran before anyone owned the new type. */
static void test_safety_after_commit(void **state)
{
    mfn_t m = setup();

    (void)state;
    assert_int_equal(frame_get_type(&F, m, FRAME_TYPE_L1, 0, &ops, &S), 0);
    assert_int_equal(S.changes, 1);
    assert_true((S.seen_type & FRAME_TYPE_MASK) == FRAME_TYPE_L1);
    assert_int_equal(S.seen_type & FRAME_TYPE_COUNT_MASK, 1);
    assert_int_equal(frame_put_type(&F, m, FRAME_TYPE_L1, 0, &ops, &S), 0);
    assert_int_equal(frame_get_type(&F, m, FRAME_TYPE_WRITABLE,
                                    FRAME_TF_TEST_SAFETY_FIRST, &ops, &S),
                     0);
    assert_true((S.seen_type & FRAME_TYPE_MASK) == FRAME_TYPE_L1);
    assert_int_equal(S.seen_type & FRAME_TYPE_COUNT_MASK, 0);
    assert_int_equal(frame_put_type(&F, m, FRAME_TYPE_WRITABLE, 0, &ops, &S),
                     0);
    check();
    frames_fini(&F);
}

static void test_lock_and_pin(void **state)
{
    mfn_t m = setup();

    (void)state;
    assert_int_equal(frame_lock(&F, m), -EINVAL); /* no type */
    assert_int_equal(frame_get_type(&F, m, FRAME_TYPE_WRITABLE, 0, &ops, &S),
                     0);
    assert_int_equal(frame_lock(&F, m), -EINVAL); /* not a page table */
    assert_int_equal(frame_put_type(&F, m, FRAME_TYPE_WRITABLE, 0, &ops, &S),
                     0);
    assert_int_equal(frame_get(&F, m, 1), 0);
    assert_int_equal(frame_get_type(&F, m, FRAME_TYPE_L4, 0, &ops, &S), 0);
    assert_int_equal(frame_lock(&F, m), 0);
    assert_true(tw(m) & FRAME_TYPE_LOCKED);
    assert_int_equal(tc(m), 2);
    frame_unlock(&F, m);
    assert_int_equal(tc(m), 1);
    assert_false(frame_test_and_set_pinned(&F, m));
    assert_true(frame_test_and_set_pinned(&F, m));
    check();
    assert_true(frame_test_and_clear_pinned(&F, m));
    assert_false(frame_test_and_clear_pinned(&F, m));
    assert_int_equal(frame_put_and_type(&F, m, FRAME_TYPE_L4, 0, &ops, &S), 0);
    assert_int_equal(frame_count(&F, m), 1);
    assert_int_equal(frame_put_alloc_ref(&F, m), 0);
    assert_int_equal(frame_owner(&F, m), DOMID_NONE);
    check();
    /* get_and_type drops the general ref on failure. */
    assert_int_equal(frames_alloc(&F, 1, 0, &m), 0);
    assert_int_equal(
        frame_get_and_type(&F, m, 1, FRAME_TYPE_WRITABLE, 0, &ops, &S), 0);
    assert_int_equal(frame_get_and_type(&F, m, 1, FRAME_TYPE_L1, 0, &ops, &S),
                     -EINVAL);
    assert_int_equal(frame_count(&F, m), 2);
    assert_int_equal(
        frame_get_and_type(&F, m, 2, FRAME_TYPE_WRITABLE, 0, &ops, &S), -EPERM);
    check();
    frames_fini(&F);
}

static unsigned freed;

static void on_free(void *arg, mfn_t mfn, domid_t owner)
{
    (void)arg;
    assert_int_equal(owner, 1);
    assert_int_equal(frame_owner(&F, mfn), 1); /* not yet reusable */
    freed++;
}

/* F13: a put names its type; a put of another type changes nothing, and
 * never spins on a locked table (the stale self-map case: a writable put
 * of a table the putter itself holds locked). */
static void test_put_checks_type(void **state)
{
    mfn_t m = setup();

    (void)state;
    assert_int_equal(frame_get(&F, m, 1), 0);
    assert_int_equal(frame_get_type(&F, m, FRAME_TYPE_L1, 0, &ops, &S), 0);
    assert_int_equal(frame_lock(&F, m), 0);
    assert_int_equal(tc(m), 2);
    /* Returns at once (a spin would hang this test). */
    assert_int_equal(frame_put_type(&F, m, FRAME_TYPE_WRITABLE, 0, &ops, &S),
                     -EUCLEAN);
    assert_int_equal(frame_put_type(&F, m, FRAME_TYPE_L2, 0, &ops, &S),
                     -EUCLEAN);
    assert_int_equal(tc(m), 2);
    assert_true(tw(m) & FRAME_TYPE_VALIDATED);
    frame_unlock(&F, m);
    assert_int_equal(tc(m), 1);
    assert_int_equal(frame_put_type(&F, m, FRAME_TYPE_L1, 0, &ops, &S), 0);
    assert_int_equal(tc(m), 0);
    /* A writable count is not decremented by a page-table put either. */
    assert_int_equal(frame_get_type(&F, m, FRAME_TYPE_WRITABLE, 0, &ops, &S),
                     0);
    assert_int_equal(frame_put_type(&F, m, FRAME_TYPE_L1, 0, &ops, &S),
                     -EUCLEAN);
    assert_int_equal(tc(m), 1);
    assert_int_equal(frame_put_type(&F, m, FRAME_TYPE_WRITABLE, 0, &ops, &S),
                     0);
    frame_put(&F, m);
    check();
    frames_fini(&F);
}

/* F12: the last writable reference and a free stamp the frame with the
 * TLB clock as it then reads; other puts leave the stamp alone. */
static void test_tlbflush_stamp(void **state)
{
    mfn_t m = setup();

    (void)state;
    atomic_store(&F.tlb_clock, 41);
    assert_int_equal(frame_get_type(&F, m, FRAME_TYPE_WRITABLE, 0, &ops, &S),
                     0);
    assert_int_equal(frame_get_type(&F, m, FRAME_TYPE_WRITABLE, 0, &ops, &S),
                     0);
    assert_int_equal(frame_put_type(&F, m, FRAME_TYPE_WRITABLE, 0, &ops, &S),
                     0);
    assert_int_equal(frame_tlbflush_stamp(&F, m), 0); /* one writer left */
    atomic_store(&F.tlb_clock, 42);
    assert_int_equal(frame_put_type(&F, m, FRAME_TYPE_WRITABLE, 0, &ops, &S),
                     0);
    assert_int_equal(frame_tlbflush_stamp(&F, m), 42);
    atomic_store(&F.tlb_clock, 50);
    assert_int_equal(frame_get_type(&F, m, FRAME_TYPE_L1, 0, &ops, &S), 0);
    assert_int_equal(frame_put_type(&F, m, FRAME_TYPE_L1, 0, &ops, &S), 0);
    assert_int_equal(frame_tlbflush_stamp(&F, m), 42); /* not writable */
    assert_int_equal(frame_put_alloc_ref(&F, m), 0);   /* freed */
    assert_int_equal(frame_tlbflush_stamp(&F, m), 50);
    check();
    frames_fini(&F);
}

static void test_free_hook(void **state)
{
    mfn_t m = setup();

    (void)state;
    F.free_hook = on_free;
    freed = 0;
    assert_int_equal(frame_get(&F, m, 1), 0);
    assert_int_equal(frame_put_alloc_ref(&F, m), 0);
    assert_int_equal(freed, 0);
    frame_put(&F, m);
    assert_int_equal(freed, 1);
    check();
    frames_fini(&F);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_writable_and_type_change),
        cmocka_unit_test(test_validate_once),
        cmocka_unit_test(test_partial_validation),
        cmocka_unit_test(test_failed_validation),
        cmocka_unit_test(test_one_validator),
        cmocka_unit_test(test_safety_after_commit),
        cmocka_unit_test(test_lock_and_pin),
        cmocka_unit_test(test_put_checks_type),
        cmocka_unit_test(test_tlbflush_stamp),
        cmocka_unit_test(test_free_hook),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
