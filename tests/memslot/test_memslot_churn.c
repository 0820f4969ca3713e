/*
 * test_memslot_churn.c - slot churn under a writing vCPU with dirty logging
 * on: splits and merges (read-only ranges, tracking), moves away and back,
 * deletes and recreates, while a ring-3 guest writes the iteration number
 * into random pages and the host harvests.  After each quiesced iteration:
 * every page holding the iteration's value was handed out (no lost dirty
 * bit), and every page handed out holds it unless a move marked it (no
 * stale data).  Bitmap and ring modes; and once with the harvest before a
 * slot change switched off, to show the test catches the loss.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lib/bitmap.h"
#include "memfix.h"
#include "testlib.h"

#define NP 1024
#define G(x) (MEMFIX_GFN0 + (x))
#define SCRATCH 2048 /* moves go to G(SCRATCH + x) and back */

/* "touched" pages (moved, made read-only, recreated) may be handed out
 * with an older value (a move marks its target; a store dropped on retry);
 * they are still checked for loss.  Other pages handed out with an older
 * value are counted as stale. */

struct churn {
    struct memfix f;
    struct memslot_tracker t;
    uint64_t iteration;
    uint64_t *seen, *touched;
    uint64_t checked, stale, stale_running, lost, wrong;
    uint64_t ops[5], refused;
};

static int accept_write(struct memslot_tracker *t, gpa_t gpa, const void *b,
                        uint32_t len)
{
    (void)t;
    (void)gpa;
    (void)b;
    (void)len;
    return 0;
}

/* The churn never removes a tracked page (it untracks first): splits,
 * merges and moves around tracked pages must not be heard as removals. */
static void no_removal(struct memslot_tracker *t, gfn_t gfn, uint64_t nr)
{
    (void)t;
    (void)gfn;
    (void)nr;
    fail_msg("a removal was announced for a gfn that stayed");
}

static int consume(gfn_t chunk, uint64_t bits, void *opaque)
{
    struct churn *c = opaque;

    while (bits) {
        uint64_t g = gfn_x(chunk) + (uint64_t)__builtin_ctzll(bits);
        bits &= bits - 1;
        if (g < G(0) || g >= G(NP))
            continue; /* a move's scratch target */
        uint64_t *p = memfix_host(&c->f, g);
        if (!p)
            continue; /* removed meanwhile */
        uint64_t v = __atomic_load_n(p, __ATOMIC_RELAXED);
        bitmap_set(c->seen, g - G(0));
        c->checked++;
        if (v > c->iteration)
            c->wrong++;
    }
    return 0;
}

static void harvest(struct churn *c)
{
    assert_int_equal(dirty_sync(&c->f.dirty), 0);
    assert_int_equal(dirty_harvest(&c->f.dirty, _gfn(0), c->f.nr_gfns, consume, c), 0);
}

static void random_op(struct churn *c, uint64_t *seed)
{
    struct memfix *f = &c->f;
    uint64_t s = test_rand_below(seed, NP - 16), len = 1 + test_rand_below(seed, 15);
    unsigned op = (unsigned)test_rand_below(seed, 5);
    int rc = 0;

    c->ops[op]++;

    switch (op) {
    case 0: /* split by a read-only range, later merge back */
        rc = memslot_set_type(&f->ms, _gfn(G(s)), len, P2M_RAM_RO);
        if (!rc)
            rc = memslot_set_type(&f->ms, _gfn(G(s)), len, P2M_RAM);
        /* a store marked dirty but not retired when the range turned
         * read-only is dropped on retry: its page may be seen, unchanged */
        bitmap_set_range(c->touched, s, len);
        break;
    case 1: /* tracking: split, then merge */
        if (memslot_is_tracked(&f->ms, _gfn(G(s))))
            rc = memslot_untrack(&f->ms, _gfn(G(s)), &c->t);
        else
            rc = memslot_track(&f->ms, _gfn(G(s)), &c->t);
        break;
    case 2: /* move away and back (refused over tracked pages) */
        rc = memslot_move(&f->ms, _gfn(G(s)), _gfn(G(SCRATCH + s)), len);
        if (rc == -EBUSY) {
            c->refused++;
            rc = 0;
            break;
        }
        if (!rc)
            rc = memslot_move(&f->ms, _gfn(G(SCRATCH + s)), _gfn(G(s)), len);
        bitmap_set_range(c->touched, s, len);
        break;
    case 3: { /* delete and recreate with the same frames */
        struct p2m_entry e[16];
        assert_int_equal(p2m_lookup_range(&f->p2m, _gfn(G(s)), len, e), 0);
        for (uint64_t i = 0; i < len; i++)
            if (memslot_is_tracked(&f->ms, _gfn(G(s + i))))
                assert_int_equal(memslot_untrack(&f->ms, _gfn(G(s + i)), &c->t), 0);
        rc = memslot_remove(&f->ms, _gfn(G(s)), len);
        for (uint64_t i = 0; i < len && !rc; i++)
            rc = memslot_populate(&f->ms, _gfn(G(s + i)), e[i].mfn, 1, e[i].type);
        bitmap_set_range(c->touched, s, len);
        break;
    }
    case 4:
        harvest(c);
        break;
    }
    assert_int_equal(rc, 0);
}

static void run_churn(const struct kvm_vm_config *cfg, uint64_t iterations,
                      uint64_t ops_per_iter, bool skip_flush, struct churn *c)
{
    struct memfix *f = &c->f;
    uint64_t seed = test_seed(0xc4u);

    memset(c, 0, sizeof(*c));
    c->t.write = accept_write;
    c->t.removed = no_removal;
    assert_int_equal(memfix_init(f, GUEST_DIRTY_WRITER, cfg, NULL, NP, 4096), 0);
    /* four runs of frames in reverse order: gfn != mfn, four slots */
    for (uint64_t q = 0; q < 4; q++)
        assert_int_equal(memslot_populate(&f->ms, _gfn(G(q * NP / 4)),
                                          _mfn(mfn_x(f->first_mfn) + (3 - q) * NP / 4),
                                          NP / 4, P2M_RAM), 0);
    assert_int_equal(memslot_set_log_dirty(&f->ms, true), 0);
    f->ms.test_skip_flush = skip_flush;
    c->seen = bitmap_alloc(NP);
    c->touched = bitmap_alloc(NP);
    assert_true(c->seen && c->touched);

    struct kvmtest_args *a = kvmtest_args(f->vm);
    a->base = memfix_gva(G(0));
    a->npages = NP;
    a->seed = seed;
    a->writes_per_sync = 256;
    a->iteration = 1;
    assert_int_equal(memfix_start(f), 0);
    for (uint64_t it = 1; it <= iterations; it++) {
        c->iteration = it;
        memset(c->seen, 0, BITMAP_WORDS(NP) * 8);
        memset(c->touched, 0, BITMAP_WORDS(NP) * 8);
        for (uint64_t k = 0; k < ops_per_iter; k++) {
            random_op(c, &seed);
            usleep(100);
        }
        assert_int_equal(kvmtest_runner_stop(&f->runner), 0);
        harvest(c);
        for (uint64_t i = 0; i < NP; i++) {
            uint64_t v = __atomic_load_n((uint64_t *)memfix_host(f, G(i)), __ATOMIC_RELAXED);
            if (v == it && !bitmap_test(c->seen, i))
                c->lost++;
            if (v > it)
                c->wrong++;
            if (bitmap_test(c->seen, i) && v != it && !bitmap_test(c->touched, i)) {
                c->stale++;
            }
        }
        a->iteration = it + 1;
        kvmtest_runner_resume(&f->runner);
        assert_int_equal(memslot_check(&f->ms), 0);
    }
    assert_int_equal(kvmtest_runner_stop(&f->runner), 0);
    assert_int_equal(memfix_stop(f), 0);
    assert_int_equal(memslot_check(&f->ms), 0);
    assert_int_equal(dirty_check(&f->dirty), 0);
    assert_int_equal(p2m_check(&f->p2m), 0);
    test_note("%s%s: %" PRIu64 " iterations, %" PRIu64 " guest writes, %" PRIu64
              " slot updates (%" PRIu64 " ioctls, %" PRIu64 " pauses, %" PRIu64
              " flushes), %" PRIu64 " pages checked, %" PRIu64 " lost, %" PRIu64
              " stale, %" PRIu64 " stores to pages without RAM dropped",
              f->dirty.mode == KVM_DIRTY_RING ? "ring" : "bitmap+clear",
              skip_flush ? " (harvest before slot change switched off)" : "",
              iterations, a->writes, f->ms.stats.updates, f->ms.stats.ioctls,
              f->ms.stats.pauses, f->ms.stats.flushes, c->checked, c->lost,
              c->stale, f->mmio_unbacked);
    free(c->seen);
    free(c->touched);
    memfix_fini(f);
}

static struct kvm_vm_config config(bool ring)
{
    struct kvm_vm_config cfg;
    assert_int_equal(kvmtest_vm_config(&cfg, ring, 4096 * 16), 0);
    return cfg;
}

static void test_churn_bitmap(void **state)
{
    static struct churn c;
    struct kvm_vm_config cfg = config(false);

    (void)state;
    run_churn(&cfg, test_scale(25), 20, false, &c);
    assert_int_equal(c.lost, 0);
    assert_int_equal(c.wrong, 0);
    assert_int_equal(c.stale, 0);
}

static void test_churn_ring(void **state)
{
    static struct churn c;
    struct kvm_vm_config cfg = config(true);

    (void)state;
    if (cfg.dirty_mode != KVM_DIRTY_RING) {
        test_note("this KVM has no dirty ring (KVM_CAP_DIRTY_LOG_RING)");
        skip(); /* TAP "ok N # SKIP": a skip, never a pass */
    }
    run_churn(&cfg, test_scale(25), 20, false, &c);
    assert_int_equal(c.lost, 0);
    assert_int_equal(c.wrong, 0);
}

/* Without the harvest before a slot changes, KVM's log of a split or
 * deleted slot is dropped with it, and the test sees lost pages. */
static void test_churn_without_flush_loses(void **state)
{
    static struct churn c;
    struct kvm_vm_config cfg = config(false);

    (void)state;
    run_churn(&cfg, 10, 20, true, &c);
    assert_true(c.lost > 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_churn_bitmap),
        cmocka_unit_test(test_churn_ring),
        cmocka_unit_test(test_churn_without_flush_loses),
    };
    test_require_kvm();
    return cmocka_run_group_tests(tests, NULL, NULL);
}
