/*
 * test_dirty_log.c - the dirty_log_test algorithm on real KVM: a ring-3
 * guest writes the iteration number into random pages while the host
 * harvests concurrently; each harvested page's value is checked against
 * its dirty bit, while the vCPU runs and again after it stopped at a SYNC.
 * Bitmap (manual clear) and ring modes.  Zero lost pages.
 *
 * Rules: every write of iteration i happens between two SYNCs the host
 * waited for, so after the quiesced harvest of iteration i:
 *   - every page written so far was last handed out holding the value it
 *     holds now (else LOST: its last write was never reported);
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
    uint64_t *handed;    /* per page: the value it held when last handed out */
    /* rule-off test: clear KVM's log of the pages handed out by a harvest
     * after the consumer read them (the order the rule forbids) */
    bool late_clear;
    uint64_t *handed_now; /* pages handed out by the current harvest */
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
        bitmap_set(v->handed_now, g - MEMFIX_GFN0);
        v->handed[g - MEMFIX_GFN0] = val;
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

/* The late clear of the rule-off test: KVM_CLEAR_DIRTY_LOG of every page
 * the harvest handed out, after the consumer read it. */
static int clear_after_read(struct verify *v)
{
    struct memslot *slots;
    uint32_t nr;
    int rc = memslot_snapshot(&v->f->ms, &slots, &nr);

    if (rc)
        return rc;
    usleep(1000); /* the consumer works on the pages it read */
    for (uint32_t i = 0; i < nr && !rc; i++) {
        const struct memslot *sl = &slots[i];
        uint64_t b = gfn_x(sl->base), *mask;

        if (!(sl->flags & MEMSLOT_LOG) || b < MEMFIX_GFN0 ||
            b + sl->npages > MEMFIX_GFN0 + NPAGES)
            continue;
        mask = bitmap_alloc(sl->npages);
        if (!mask) {
            rc = -ENOMEM;
            break;
        }
        for (uint64_t k = 0; k < sl->npages; k++)
            if (bitmap_test(v->handed_now, b - MEMFIX_GFN0 + k))
                bitmap_set(mask, k);
        rc = kvm_vm_clear_dirty_log(&v->f->vm->vm, sl->id, 0,
                                    (uint32_t)sl->npages, mask);
        free(mask);
    }
    free(slots);
    return rc;
}

static int harvest(struct verify *v)
{
    int rc = dirty_sync(&v->f->dirty);
    if (rc)
        return rc;
    memset(v->handed_now, 0, BITMAP_WORDS(NPAGES) * 8);
    rc = dirty_harvest(&v->f->dirty, _gfn(MEMFIX_GFN0), NPAGES, consume, v);
    if (!rc && v->late_clear)
        rc = clear_after_read(v);
    return rc;
}

struct result {
    uint64_t checked, writes, lost, stale, stale_running, wrong, iterations;
    uint64_t ring_full, rereported;
};

static void run_dirty_log(const struct kvm_vm_config *cfg, uint64_t iterations,
                          bool late_clear, uint64_t writes_per_sync,
                          struct result *res)
{
    struct memfix f;
    struct verify v = {.f = &f, .late_clear = late_clear};
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
    /* the rule off: the harvest no longer clears before handing out; the
     * test clears after reading (clear_after_read) */
    f.dirty.test_skip_clear = late_clear;

    struct kvmtest_args *a = kvmtest_args(f.vm);
    a->base = memfix_gva(MEMFIX_GFN0);
    a->npages = NPAGES;
    a->seed = seed;
    a->writes_per_sync = writes_per_sync;
    a->iteration = 1;
    uint64_t cur = 1; /* the value the guest writes now */
    v.seen = bitmap_alloc(NPAGES);
    v.handed_now = bitmap_alloc(NPAGES);
    v.handed = calloc(NPAGES, sizeof(*v.handed));
    assert_non_null(v.seen);
    assert_non_null(v.handed_now);
    assert_non_null(v.handed);
    assert_int_equal(memfix_start(&f), 0);
    for (uint64_t it = 1; it <= iterations; it++) {
        v.iteration = cur;
        memset(v.seen, 0, BITMAP_WORDS(NPAGES) * 8);
        /* verify while running */
        v.quiesced = false;
        for (int k = 0; k < 3; k++) {
            usleep(2000);
            if (late_clear) {
                /* a new value from the guest's next SYNC on: a write that
                 * lands between a read and the late clear then changes
                 * the page */
                a->iteration = ++cur;
                v.iteration = cur;
            }
            assert_int_equal(harvest(&v), 0);
        }
        /* quiesce at a SYNC, harvest the rest, verify every page */
        assert_int_equal(kvmtest_runner_stop(&f.runner), 0);
        v.quiesced = true;
        assert_int_equal(harvest(&v), 0);
        for (uint64_t i = 0; i < NPAGES; i++) {
            uint64_t val = __atomic_load_n((uint64_t *)memfix_host(&f, MEMFIX_GFN0 + i), __ATOMIC_RELAXED);
            if (val && v.handed[i] != val)
                res->lost++;
            if (val > cur)
                res->wrong++;
        }
        a->iteration = ++cur;
        kvmtest_runner_resume(&f.runner);
    }
    assert_int_equal(kvmtest_runner_stop(&f.runner), 0);
    /* quiesced: harvest, then again with no write in between: the second
     * must hand out nothing (each write is handed out once) */
    v.iteration = cur; /* what the guest wrote since the last resume */
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
    free(v.handed_now);
    free(v.handed);
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

/* The checks: zero lost, nothing handed out twice, no value from the
 * future; exact: no page handed out after quiesce without the iteration's
 * value.  NULL, or the first check that fails. */
static const char *violation(const struct result *r, bool exact)
{
    if (!(r->writes > 0 && r->checked > 0))
        return "nothing written or checked";
    if (r->lost)
        return "lost writes";
    if (r->rereported)
        return "pages reported twice";
    if (r->wrong)
        return "values from the future";
    if (exact && r->stale)
        return "stale pages after quiesce";
    return NULL;
}

static void assert_nothing_lost(const char *mode, const struct result *r,
                                bool exact)
{
    const char *bad;

    report(mode, r);
    bad = violation(r, exact);
    if (bad)
        fail_msg("%s: %s", mode, bad);
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

/* The rule switched off: KVM_CLEAR_DIRTY_LOG re-protects a page before
 * the consumer reads it.  With the harvest's clear switched off
 * (dirty.test_skip_clear) and the pages cleared only after the consumer
 * read them, a guest write that lands between the read and the clear is
 * never reported: the lost-write check of the other tests (a page holding
 * the iteration's value was never handed out holding it) must fail. */
static void test_bitmap_without_clear_is_caught(void **state)
{
    struct kvm_vm_config cfg;
    struct result r;
    const char *bad;

    (void)state;
    assert_int_equal(kvmtest_vm_config(&cfg, false, 0), 0);
    assert_int_equal(cfg.dirty_mode, KVM_DIRTY_BITMAP_MANUAL);
    run_dirty_log(&cfg, 20, true, 16, &r);
    report("bitmap, cleared after the read", &r);
    bad = violation(&r, true);
    test_note("the checks say: %s", bad ? bad : "nothing wrong");
    assert_true(r.lost > 0);
    assert_non_null(bad);
    assert_string_equal(bad, "lost writes");
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
