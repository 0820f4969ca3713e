/*
 * Threads race general references and allocation on a shared pool: every
 * count word changes by compare-and-swap, so after all threads finish the
 * counts, ownership and free bitmap must add up (frames_check()).
 * Runs in the ASan build and the TSan build.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>

#include "frame/frame.h"
#include "testlib.h"

#define NTHREADS 4
#define NSHARED 32

struct ctx {
    struct frames f;
    mfn_t shared[NSHARED];
    uint64_t iters;
    uint64_t seed;
    _Atomic uint64_t ops;
};

struct worker {
    struct ctx *c;
    unsigned id;
};

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct ctx *c = w->c;
    uint64_t rng = c->seed + w->id * 7919, i, ops = 0;
    domid_t d = (domid_t)(2 + w->id);

    for (i = 0; i < c->iters; i++) {
        mfn_t m = c->shared[test_rand_below(&rng, NSHARED)];
        mfn_t own;

        /* Racing gets and puts on frames of domain 1. */
        if (frame_get(&c->f, m, 1) == 0) {
            frame_put(&c->f, m);
            ops += 2;
        }
        /* A wrong-owner get must never succeed. */
        if (frame_get(&c->f, m, d) == 0)
            return (void *)1;
        /* Private allocation churn through the same allocator. */
        if (frames_alloc(&c->f, d, 0, &own) == 0) {
            if (frame_put_alloc_ref(&c->f, own) != 0)
                return (void *)1;
            ops += 2;
        }
    }
    c->ops += ops;
    return NULL;
}

static void test_ref_race(void **state)
{
    static struct ctx c;
    pthread_t th[NTHREADS];
    struct worker w[NTHREADS];
    unsigned i;

    (void)state;
    assert_int_equal(frames_init(&c.f, 256), 0);
    assert_int_equal(frames_domain_add(&c.f, 1, NSHARED), 0);
    for (i = 0; i < NSHARED; i++)
        assert_int_equal(frames_alloc(&c.f, 1, 0, &c.shared[i]), 0);
    for (i = 0; i < NTHREADS; i++)
        assert_int_equal(frames_domain_add(&c.f, (domid_t)(2 + i), 16), 0);
    c.iters = test_scale(20000);
    c.seed = test_seed(42);
    c.ops = 0;
    for (i = 0; i < NTHREADS; i++) {
        w[i] = (struct worker){&c, i};
        assert_int_equal(pthread_create(&th[i], NULL, worker_main, &w[i]), 0);
    }
    for (i = 0; i < NTHREADS; i++) {
        void *r;
        assert_int_equal(pthread_join(th[i], &r), 0);
        assert_null(r);
    }
    test_note("%u threads ran %" PRIu64 " reference operations", NTHREADS,
              (uint64_t)c.ops);
    assert_int_equal(frames_check(&c.f), 0);
    for (i = 0; i < NSHARED; i++)
        assert_int_equal(frame_count(&c.f, c.shared[i]), 1);
    frames_fini(&c.f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ref_race),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
