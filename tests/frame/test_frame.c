/*
 * Pool, allocator, ownership and general references (frame.h), table-driven
 * with frames_check() after every step.
 */
#include <errno.h>
#include <string.h>

#include "frame/frame.h"
#include "testlib.h"

static void check(struct frames *f)
{
    assert_int_equal(frames_check(f), 0);
}

static void test_alloc_free_scrub(void **state)
{
    struct frames f;
    mfn_t a, b;
    uint8_t *p;

    (void)state;
    assert_int_equal(frames_init(&f, 64), 0);
    assert_int_equal(frames_domain_add(&f, 1, 8), 0);
    assert_int_equal(frames_domain_add(&f, 1, 8), -EEXIST);
    assert_int_equal(frames_alloc(&f, 2, 0, &a), -ESRCH);
    assert_int_equal(frames_alloc(&f, 1, 0, &a), 0);
    check(&f);
    assert_int_equal(frame_owner(&f, a), 1);
    assert_int_equal(frame_count(&f, a), 1);
    p = frames_ptr(&f, a);
    memset(p, 0xAB, PAGE_SIZE);
    assert_int_equal(frame_put_alloc_ref(&f, a), 0);
    assert_int_equal(frame_put_alloc_ref(&f, a), -EINVAL);
    check(&f);
    assert_int_equal(frame_owner(&f, a), DOMID_NONE);
    assert_int_equal(frames_domain_tot(&f, 1), 0);
    /* Contiguous order-0 allocations, scrubbed memory. */
    assert_int_equal(frames_alloc(&f, 1, 0, &a), 0);
    assert_int_equal(frames_alloc(&f, 1, 0, &b), 0);
    assert_int_equal(mfn_x(b), mfn_x(a) + 1);
    check(&f);
    for (unsigned i = 0; i < 64; i++)
        assert_int_equal(((uint8_t *)f.base)[i * PAGE_SIZE + 17], 0);
    frames_fini(&f);
}

static void test_budget_and_order(void **state)
{
    struct frames f;
    mfn_t m;

    (void)state;
    assert_int_equal(frames_init(&f, 64), 0);
    assert_int_equal(frames_domain_add(&f, 3, 20), 0);
    assert_int_equal(frames_alloc(&f, 3, 4, &m), 0);
    assert_true(IS_ALIGNED(mfn_x(m), 16));
    assert_int_equal(frames_alloc(&f, 3, 3, &m), -ENOMEM); /* 16 + 8 > 20 */
    assert_int_equal(frames_alloc(&f, 3, 2, &m), 0);
    assert_true(IS_ALIGNED(mfn_x(m), 4));
    assert_int_equal(frames_alloc(&f, 3, 0, &m), -ENOMEM);
    assert_int_equal(frames_alloc(&f, 3, FRAME_MAX_ORDER + 1, &m), -EINVAL);
    assert_int_equal(frames_domain_remove(&f, 3), -EBUSY);
    check(&f);
    frames_fini(&f);
}

static void test_general_refs(void **state)
{
    struct frames f;
    mfn_t m;

    (void)state;
    assert_int_equal(frames_init(&f, 16), 0);
    assert_int_equal(frames_domain_add(&f, 1, 16), 0);
    assert_int_equal(frames_domain_add(&f, 2, 16), 0);
    assert_int_equal(frames_alloc(&f, 1, 0, &m), 0);
    assert_int_equal(frame_get(&f, m, 2), -EPERM);
    assert_int_equal(frame_count(&f, m), 1);
    assert_int_equal(frame_get(&f, m, 1), 0);
    assert_int_equal(frame_get(&f, _mfn(16), 1), -ENOENT);
    assert_int_equal(frame_put_alloc_ref(&f, m), 0);
    /* Still referenced: still owned, not free. */
    assert_int_equal(frame_owner(&f, m), 1);
    check(&f);
    frame_put(&f, m);
    assert_int_equal(frame_owner(&f, m), DOMID_NONE);
    assert_int_equal(frame_get(&f, m, 1), -ENOENT);
    check(&f);
    assert_int_equal(frames_domain_remove(&f, 1), 0);
    frames_fini(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_alloc_free_scrub),
        cmocka_unit_test(test_budget_and_order),
        cmocka_unit_test(test_general_refs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
