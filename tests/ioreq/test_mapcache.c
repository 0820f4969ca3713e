/*
 * test_mapcache.c - the device model's mapcache on a real memfd: a table
 * of operations with mapcache_check() after each, then random operations
 * (map changes, holds, releases, invalidations) against a reference model:
 * every hold must see the frame the map gives its gfn now (each frame is
 * stamped with its number), and an invalidation is acknowledged exactly
 * when the holds made before it are released.  The same random test with
 * held entries kept through changes (the rule off) must fail.  A threaded
 * part holds and releases from several threads while invalidations run.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "mapcache.h"
#include "testlib.h"

#define FRAMES 256
#define GFNS 96

static int make_pool(void)
{
    int fd = memfd_create("mc-test", 0);
    uint8_t *p;

    assert_true(fd >= 0);
    assert_int_equal(ftruncate(fd, FRAMES * 4096), 0);
    p = mmap(NULL, FRAMES * 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    assert_true(p != MAP_FAILED);
    for (uint64_t m = 0; m < FRAMES; m++)
        memcpy(p + m * 4096, &m, sizeof(m));
    munmap(p, FRAMES * 4096);
    return fd;
}

struct acks {
    uint64_t last, calls;
};

static void on_quiet(void *opaque, uint64_t gen)
{
    struct acks *a = opaque;
    a->last = gen;
    a->calls++;
}

static uint64_t stamp(const struct mapcache_ref *r)
{
    uint64_t v;
    memcpy(&v, (const uint8_t *)((uintptr_t)r->ptr & ~4095ULL), sizeof(v));
    return v;
}

static void test_table(void **state)
{
    struct mapcache mc;
    struct mapcache_ref a, b, c;
    struct acks ak = {0};
    int fd = make_pool();
    (void)state;

    assert_int_equal(mapcache_init(&mc, fd, FRAMES, GFNS, 2, on_quiet, &ak), 0);
    assert_int_equal(mapcache_set(&mc, 0, 100, 40), 0);
    assert_int_equal(mapcache_check(&mc), 0);
    /* hold gfn 3: frame 103 */
    assert_int_equal(mapcache_hold(&mc, 3, 8, 16, &a), 0);
    assert_int_equal(stamp(&a), 103);
    assert_int_equal(mapcache_check(&mc), 0);
    /* outside the map, across a page, beyond the guest */
    assert_int_equal(mapcache_hold(&mc, 50, 0, 8, &b), -ENOENT);
    assert_int_equal(mapcache_hold(&mc, 4, 4090, 8, &b), -EFAULT);
    assert_int_equal(mapcache_hold(&mc, GFNS, 0, 8, &b), -EFAULT);
    /* a second bucket, a third (cache of 2: the LRU unheld one goes) */
    assert_int_equal(mapcache_hold(&mc, 17, 0, 8, &b), 0);
    mapcache_release(&mc, &b);
    assert_int_equal(mapcache_hold(&mc, 33, 0, 8, &c), 0);
    assert_int_equal(stamp(&c), 133);
    mapcache_release(&mc, &c);
    assert_int_equal(mapcache_check(&mc), 0);
    assert_int_equal(mc.stats.evictions, 1);
    /* both held: full */
    assert_int_equal(mapcache_hold(&mc, 33, 0, 8, &c), 0);
    assert_int_equal(mapcache_hold(&mc, 20, 0, 8, &b), -EBUSY);
    mapcache_release(&mc, &c);
    /* gfn 3 moves to frame 7 while held: the held entry goes stale, a new
     * hold sees frame 7, the old holder keeps its mapping until release */
    assert_int_equal(mapcache_set(&mc, 3, 7, 1), 0);
    assert_int_equal(mapcache_hold(&mc, 3, 0, 8, &b), 0);
    assert_int_equal(stamp(&b), 7);
    assert_int_equal(stamp(&a), 103);
    assert_int_equal(mapcache_check(&mc), 0);
    /* invalidate with a (stale) hold and b held: deferred */
    assert_int_equal(mapcache_invalidate(&mc, 1), 0);
    assert_int_equal(mapcache_check(&mc), 0);
    mapcache_release(&mc, &a);
    assert_int_equal(ak.calls, 0);
    mapcache_release(&mc, &b);
    assert_int_equal(ak.calls, 1);
    assert_int_equal(ak.last, 1);
    assert_int_equal(mapcache_mapped(&mc), 0);
    /* nothing held: at once */
    assert_int_equal(mapcache_invalidate(&mc, 2), 1);
    assert_int_equal(mapcache_check(&mc), 0);
    mapcache_fini(&mc);
    close(fd);
}

#define MAX_HELD 6

/* Random operations against a reference; returns the number of stale
 * mappings handed out or acks given too early (0 is right). */
static uint64_t random_run(bool keep_held, uint64_t seed, uint64_t ops)
{
    struct mapcache mc;
    struct acks ak = {0};
    uint64_t ref[GFNS], rng = seed, bad = 0, gen = 0, pending_gen = 0;
    struct {
        struct mapcache_ref r;
        uint64_t gfn;
        uint64_t before_gen; /* held before invalidation gen <= this */
    } held[MAX_HELD];
    unsigned nheld = 0;
    int fd = make_pool();

    assert_int_equal(mapcache_init(&mc, fd, FRAMES, GFNS, 3, on_quiet, &ak), 0);
    mc.test_keep_held = keep_held;
    for (unsigned g = 0; g < GFNS; g++)
        ref[g] = MAPCACHE_NONE;
    for (uint64_t i = 0; i < ops; i++) {
        unsigned op = (unsigned)test_rand_below(&rng, 10);
        if (op < 3) { /* map change */
            uint64_t g = test_rand_below(&rng, GFNS);
            uint64_t n = 1 + test_rand_below(&rng, MIN(8, GFNS - g));
            uint64_t m = test_rand_below(&rng, 4) == 0
                             ? MAPCACHE_NONE
                             : test_rand_below(&rng, FRAMES - 8);
            assert_int_equal(mapcache_set(&mc, g, m, n), 0);
            for (uint64_t k = 0; k < n; k++)
                ref[g + k] = m == MAPCACHE_NONE ? m : m + k;
        } else if (op < 6 && nheld < MAX_HELD) { /* hold */
            uint64_t g = test_rand_below(&rng, GFNS);
            int r = mapcache_hold(&mc, g, 0, 8, &held[nheld].r);
            if (ref[g] == MAPCACHE_NONE) {
                if (r != -ENOENT) {
                    bad++;
                    if (r == 0)
                        mapcache_release(&mc, &held[nheld].r);
                }
            } else if (r == 0) {
                if (stamp(&held[nheld].r) != ref[g])
                    bad++; /* a stale mapping handed out */
                held[nheld].gfn = g;
                held[nheld].before_gen = gen;
                nheld++;
            } else if (r != -EBUSY) {
                bad++; /* the map has a frame, the cache would not map it */
            }
        } else if (op < 9 && nheld) { /* release */
            unsigned k = (unsigned)test_rand_below(&rng, nheld);
            mapcache_release(&mc, &held[k].r);
            held[k] = held[--nheld];
        } else { /* invalidate */
            gen++;
            int now = mapcache_invalidate(&mc, gen);
            if (now) {
                /* only right if nothing is held (every hold predates) */
                if (nheld && !keep_held)
                    bad++;
            } else {
                pending_gen = gen;
            }
        }
        /* C2: the ack arrives when no hold from before it remains */
        if (pending_gen && ak.last != pending_gen) {
            bool old_left = false;
            for (unsigned k = 0; k < nheld; k++)
                old_left |= held[k].before_gen < pending_gen;
            if (!old_left && !keep_held)
                bad++; /* owed and not given */
        }
        if (pending_gen && ak.last == pending_gen) {
            for (unsigned k = 0; k < nheld; k++)
                if (held[k].before_gen < pending_gen && !keep_held)
                    bad++; /* acknowledged while an old hold remains */
            pending_gen = 0;
        }
        if (!keep_held && mapcache_check(&mc) != 0)
            bad++;
    }
    while (nheld)
        mapcache_release(&mc, &held[--nheld].r);
    test_note("mapcache random (%s): %llu operations, seed %#llx, %llu hits, "
              "%llu misses, %llu evictions, %llu deferred acks, %llu bad",
              keep_held ? "held entries kept: rule off" : "rules on",
              (unsigned long long)ops, (unsigned long long)seed,
              (unsigned long long)mc.stats.hits,
              (unsigned long long)mc.stats.misses,
              (unsigned long long)mc.stats.evictions,
              (unsigned long long)mc.stats.deferred_acks,
              (unsigned long long)bad);
    mapcache_fini(&mc);
    close(fd);
    return bad;
}

static void test_random(void **state)
{
    (void)state;
    assert_int_equal(random_run(false, test_seed(0x6d6170), test_scale(50000)),
                     0);
}

static void test_random_rule_off(void **state)
{
    (void)state;
    assert_true(random_run(true, test_seed(0x6d6170), test_scale(50000)) > 0);
}

/* Threads hold and release while another invalidates and changes the map:
 * every hold sees its gfn's frame, and every invalidation is acked. */
struct thr {
    struct mapcache *mc;
    uint64_t seed, ops, bad;
    _Atomic bool *stop;
};

static void *holder(void *arg)
{
    struct thr *t = arg;
    for (uint64_t i = 0; i < t->ops; i++) {
        struct mapcache_ref r;
        uint64_t g = test_rand_below(&t->seed, GFNS / 2);
        if (mapcache_hold(t->mc, g, 0, 8, &r) == 0) {
            /* the map of gfns < GFNS/2 never changes: frame 100 + g */
            if (stamp(&r) != 100 + g)
                t->bad++;
            mapcache_release(t->mc, &r);
        }
    }
    return NULL;
}

static void test_threads(void **state)
{
    struct mapcache mc;
    struct acks ak = {0};
    pthread_t th[3];
    struct thr t[3];
    _Atomic bool stop = false;
    uint64_t ops = test_scale(20000), bad = 0;
    int fd = make_pool();
    (void)state;

    assert_int_equal(mapcache_init(&mc, fd, FRAMES, GFNS, 4, NULL, &ak), 0);
    assert_int_equal(mapcache_set(&mc, 0, 100, GFNS / 2), 0);
    for (int i = 0; i < 3; i++) {
        t[i] = (struct thr){&mc, 0x1234 + (uint64_t)i, ops, 0, &stop};
        assert_int_equal(pthread_create(&th[i], NULL, holder, &t[i]), 0);
    }
    for (uint64_t i = 0; i < ops / 10; i++) {
        (void)mapcache_invalidate(&mc, i + 1);
        assert_int_equal(mapcache_set(&mc, GFNS / 2 + i % 8,
                                      i % 3 ? 10 + i % 50 : MAPCACHE_NONE, 1),
                         0);
    }
    for (int i = 0; i < 3; i++) {
        pthread_join(th[i], NULL);
        bad += t[i].bad;
    }
    assert_int_equal(mapcache_check(&mc), 0);
    test_note("mapcache threads: 3 x %llu holds, %llu invalidations, %llu bad",
              (unsigned long long)ops, (unsigned long long)(ops / 10),
              (unsigned long long)bad);
    assert_int_equal(bad, 0);
    mapcache_fini(&mc);
    close(fd);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table),
        cmocka_unit_test(test_random),
        cmocka_unit_test(test_random_rule_off),
        cmocka_unit_test(test_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
