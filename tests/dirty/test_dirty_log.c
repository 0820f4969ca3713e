/*
 * test_dirty_log.c - the dirty_log_test algorithm on real KVM: a ring-3
 * guest writes the iteration number into random pages while the host
 * harvests concurrently; each harvested page's value is checked against
 * its dirty bit, while the vCPU runs and again after it stopped at a SYNC.
 * Bitmap (manual clear) and ring modes.  Zero lost pages.
 *
 * Rules: every write of iteration i happens between two SYNCs the host
 * waited for, so after the quiesced harvest of iteration i:
 *   - a page whose value is i was handed out in iteration i (else LOST);
 *   - a page handed out holds i (bitmap mode; the ring may report the page
 *     whose write had not retired at a ring-full exit: counted as stale).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "lib/bitmap.h"
#include "memfix.h"
#include "testlib.h"

#define NPAGES 4096

struct verify {
    struct memfix *f;
    uint64_t iteration;
    uint64_t *seen;      /* pages handed out this iteration */
    uint64_t checked, stale, wrong;
    bool quiesced;
    uint64_t stale_running; /* a write not yet retired when its page was
                               marked: reported again later, tolerated */
};

static int consume(gfn_t chunk, uint64_t bits, void *opaque)
{
    struct verify *v = opaque;

    while (bits) {
        uint64_t g = gfn_x(chunk) + (uint64_t)__builtin_ctzll(bits);
        bits &= bits - 1;
        if (g < MEMFIX_GFN0 || g >= MEMFIX_GFN0 + NPAGES) {
            v->wrong++;
            continue;
        }
        uint64_t *p = memfix_host(v->f, g);
        uint64_t val = __atomic_load_n(p, __ATOMIC_RELAXED);
        bitmap_set(v->seen, g - MEMFIX_GFN0);
        v->checked++;
        if (val != v->iteration) {
            if (v->quiesced)
                v->stale++;
            else
                v->stale_running++;
        }
        if (val > v->iteration)
            v->wrong++;
    }
    return 0;
}

static int harvest(struct verify *v)
{
    int rc = dirty_sync(&v->f->dirty);
    if (rc)
        return rc;
    return dirty_harvest(&v->f->dirty, _gfn(MEMFIX_GFN0), NPAGES, consume, v);
}

struct result {
    uint64_t checked, writes, lost, stale, stale_running, wrong, iterations;
    uint64_t ring_full, rereported;
};

static void run_dirty_log(const struct kvm_vm_config *cfg, uint64_t iterations,
                          bool skip_clear, uint64_t writes_per_sync,
                          struct result *res)
{
    struct memfix f;
    struct verify v = {.f = &f};
    uint64_t seed = test_seed(0x5eed);

    memset(res, 0, sizeof(*res));
    assert_int_equal(memfix_init(&f, GUEST_DIRTY_WRITER, cfg, NULL, NPAGES, NPAGES), 0);
    /* gfn != mfn: the second half of the frames backs the first half of
     * the region, so slots split where the mfns jump */
    uint64_t half = NPAGES / 2, m0 = mfn_x(f.first_mfn);
    assert_int_equal(memslot_populate(&f.ms, _gfn(MEMFIX_GFN0), _mfn(m0 + half),
                                      half, P2M_RAM), 0);
    assert_int_equal(memslot_populate(&f.ms, _gfn(MEMFIX_GFN0 + half), _mfn(m0),
                                      half, P2M_RAM), 0);
    assert_int_equal(memslot_set_log_dirty(&f.ms, true), 0);
    assert_int_equal(memslot_check(&f.ms), 0);
    f.dirty.test_skip_clear = skip_clear;

    struct kvmtest_args *a = kvmtest_args(f.vm);
    a->base = memfix_gva(MEMFIX_GFN0);
    a->npages = NPAGES;
    a->seed = seed;
    a->writes_per_sync = writes_per_sync;
    a->iteration = 1;
    v.seen = bitmap_alloc(NPAGES);
    assert_non_null(v.seen);
    assert_int_equal(memfix_start(&f), 0);
    for (uint64_t it = 1; it <= iterations; it++) {
        v.iteration = it;
        memset(v.seen, 0, BITMAP_WORDS(NPAGES) * 8);
        /* verify while running */
        v.quiesced = false;
        for (int k = 0; k < 3; k++) {
            usleep(2000);
            assert_int_equal(harvest(&v), 0);
        }
        /* quiesce at a SYNC, harvest the rest, verify every page */
        assert_int_equal(kvmtest_runner_stop(&f.runner), 0);
        v.quiesced = true;
        assert_int_equal(harvest(&v), 0);
        for (uint64_t i = 0; i < NPAGES; i++) {
            uint64_t val = __atomic_load_n((uint64_t *)memfix_host(&f, MEMFIX_GFN0 + i), __ATOMIC_RELAXED);
            if (val == it && !bitmap_test(v.seen, i))
                res->lost++;
            if (val > it)
                res->wrong++;
        }
        a->iteration = it + 1;
        kvmtest_runner_resume(&f.runner);
    }
    assert_int_equal(kvmtest_runner_stop(&f.runner), 0);
    /* quiesced: harvest, then again with no write in between: the second
     * must hand out nothing (each write is handed out once) */
    v.iteration = iterations + 1; /* what the guest wrote since the last resume */
    assert_int_equal(harvest(&v), 0);
    uint64_t before = v.checked;
    assert_int_equal(harvest(&v), 0);
    res->rereported = v.checked - before;
    v.checked = before;
    res->writes = a->writes;
    res->checked = v.checked;
    res->stale = v.stale;
    res->stale_running = v.stale_running;
    res->wrong += v.wrong;
    res->iterations = iterations;
    res->ring_full = f.vm->vcpu.nr_ring_full;
    assert_int_equal(memfix_stop(&f), 0);
    assert_int_equal(dirty_check(&f.dirty), 0);
    assert_int_equal(memslot_check(&f.ms), 0);
    free(v.seen);
    memfix_fini(&f);
}

static void report(const char *mode, const struct result *r)
{
    test_note("%s: %" PRIu64 " iterations, %" PRIu64 " guest writes, %" PRIu64
              " pages checked, %" PRIu64 " lost, %" PRIu64 " stale after "
              "quiesce, %" PRIu64 " not yet retired while running, %" PRIu64
              " ring-full exits, %" PRIu64 " reported twice",
              mode, r->iterations, r->writes, r->checked, r->lost, r->stale,
              r->stale_running, r->ring_full, r->rereported);
}

/* Zero lost, nothing handed out twice, no value from the future; exact:
 * no page handed out after quiesce without the iteration's value. */
static void assert_nothing_lost(const char *mode, const struct result *r,
                                bool exact)
{
    report(mode, r);
    assert_int_equal(r->lost, 0);
    assert_int_equal(r->rereported, 0);
    assert_int_equal(r->wrong, 0);
    if (exact)
        assert_int_equal(r->stale, 0);
    assert_true(r->writes > 0 && r->checked > 0);
}

static void test_bitmap(void **state)
{
    struct kvm_vm_config cfg;
    struct result r;

    (void)state;
    assert_int_equal(kvmtest_vm_config(&cfg, false, 0), 0);
    assert_int_equal(cfg.dirty_mode, KVM_DIRTY_BITMAP_MANUAL);
    run_dirty_log(&cfg, test_scale(100), false, 512, &r);
    assert_nothing_lost("bitmap+clear", &r, true);
}

static void test_ring(void **state)
{
    struct kvm_vm_config cfg;
    struct result r;

    (void)state;
    /* 512 entries, far fewer than the pages: ring-full exits happen */
    assert_int_equal(kvmtest_vm_config(&cfg, true, 512 * 16), 0);
    if (cfg.dirty_mode != KVM_DIRTY_RING) {
        test_note("this KVM has no dirty ring (KVM_CAP_DIRTY_LOG_RING)");
        skip(); /* TAP "ok N # SKIP": a skip, never a pass */
    }
    run_dirty_log(&cfg, test_scale(100), false, 4096, &r);
    assert_nothing_lost("ring", &r, false);
    assert_true(r.ring_full > 0);
    assert_true(r.stale <= r.ring_full + r.iterations);
}

/* The plain bitmap (KVM_GET_DIRTY_LOG clears and re-protects as it reads),
 * for a KVM without manual protect. */
static void test_bitmap_plain(void **state)
{
    struct kvm_vm_config cfg = {.dirty_mode = KVM_DIRTY_BITMAP};
    struct result r;

    (void)state;
    run_dirty_log(&cfg, test_scale(30), false, 512, &r);
    assert_nothing_lost("plain bitmap", &r, true);
}

/* The rule switched off: without KVM_CLEAR_DIRTY_LOG before the consumer
 * reads, pages stay writable and KVM keeps reporting pages that were not
 * written again (a write between a copy and a later clear would be lost).
 * The "reported twice" check of the other tests catches it. */
static void test_bitmap_without_clear_is_caught(void **state)
{
    struct kvm_vm_config cfg;
    struct result r;

    (void)state;
    assert_int_equal(kvmtest_vm_config(&cfg, false, 0), 0);
    run_dirty_log(&cfg, 4, true, 512, &r);
    report("bitmap, clear switched off", &r);
    assert_true(r.rereported > 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bitmap),
        cmocka_unit_test(test_ring),
        cmocka_unit_test(test_bitmap_plain),
        cmocka_unit_test(test_bitmap_without_clear_is_caught),
    };
    test_require_kvm();
    return cmocka_run_group_tests(tests, NULL, NULL);
}
