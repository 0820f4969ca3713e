/*
 * test_ioreq_track.c - page tracking and the dirty log with a real device
 * model (memvisor-dm-test) as the subscriber, on real KVM (the memslot
 * fixture: a VM whose guest runs a list of stores).
 *
 *  - every guest store to the watched page reaches the device in order with
 *    the right bytes (its hash over (gpa, len, bytes) of each store, and its
 *    shadow of the page, equal what the test computes);
 *  - ballooning a neighbour (slot split) and giving it back (merge) keep the
 *    subscription and announce nothing;
 *  - removing the watched page with the update made to fail at each
 *    fallible step (each allocation, each KVM_SET_USER_MEMORY_REGION) tells
 *    the device nothing; the removal that succeeds is announced once, after
 *    its commit;
 *  - the devices' writes to guest memory (the test device's fill, the block
 *    device's read) are in the dirty log, page by page, when the request
 *    that made them completes.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dmproc.h"
#include "ioreq/ioreq.h"
#include "memfix.h"
#include "testlib.h"

#define G(x) (MEMFIX_GFN0 + (x))
#define PORT 0x5000

static const char *dm_exe, *block_exe;

struct tfix {
    struct memfix f;
    struct ioreq_domain io;
    pid_t pid;
};

static void tfix_init(struct tfix *t)
{
    assert_int_equal(memfix_init(&t->f, GUEST_STORE_LIST, NULL,
                                 kvmtest_fault_ops(), 256, 1024),
                     0);
    assert_int_equal(memslot_populate(&t->f.ms, _gfn(G(0)), t->f.first_mfn,
                                      64, P2M_RAM),
                     0);
    assert_int_equal(ioreq_domain_init(&t->io, &t->f.frames, &t->f.p2m,
                                       &t->f.ms, &t->f.dirty, 1, NULL),
                     0);
    assert_int_equal(dmproc_start(&t->io, dm_exe, NULL, &t->pid), 0);
}

static void tfix_fini(struct tfix *t)
{
    ioreq_domain_fini(&t->io);
    (void)dmproc_wait(t->pid, 5000);
    memfix_fini(&t->f);
}

static int wr(struct tfix *t, unsigned off, uint32_t v)
{
    uint64_t d = v;
    return ioreq_access(&t->io, 0, DM_RANGE_PIO, PORT + off, 4, true, &d);
}

static uint32_t rd(struct tfix *t, unsigned off)
{
    uint64_t d = 0;
    (void)!ioreq_access(&t->io, 0, DM_RANGE_PIO, PORT + off, 4, false, &d);
    return (uint32_t)d;
}

static uint32_t fnv(uint32_t h, const void *p, size_t n)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 16777619u;
    return h;
}
#define FNV0 2166136261u

/* Poll a register until it equals want (the device hears asynchronously). */
static uint32_t rd_until(struct tfix *t, unsigned off, uint32_t want)
{
    uint32_t v = rd(t, off);
    for (int i = 0; i < 300 && v != want; i++) {
        test_sleep_ms(10);
        v = rd(t, off);
    }
    return v;
}

struct stores {
    uint64_t gpa[KVMTEST_MAX_OPS], val[KVMTEST_MAX_OPS];
    uint32_t n;
};

static void run_stores(struct tfix *t, const struct stores *s)
{
    struct kvmtest_args *a = kvmtest_args(t->f.vm);
    uint64_t code, arg;

    a->nr_ops = s->n;
    for (uint32_t i = 0; i < s->n; i++) {
        a->ops[i].addr = memfix_gva(s->gpa[i] >> PAGE_SHIFT) + (s->gpa[i] & 4095);
        a->ops[i].value = s->val[i];
        a->ops[i].len = 8;
    }
    assert_int_equal(kvmtest_vcpu_reset(t->f.vm, GUEST_STORE_LIST), 0);
    assert_int_equal(kvmtest_run_ucall(t->f.vm, &code, &arg), 0);
    assert_int_equal(code, KVMTEST_UCALL_DONE);
}

/* Stores to W and its neighbours; the hash the device must hold after
 * them, continuing from h (count stores to W added to *nw). */
static uint32_t stores_round(struct tfix *t, uint64_t W, uint32_t seed,
                             uint32_t h, uint32_t *nw)
{
    struct stores s = {.n = 40};
    uint64_t rng = seed | 1;

    for (uint32_t i = 0; i < s.n; i++) {
        uint64_t pick = test_rand_below(&rng, 4);
        uint64_t gfn = pick == 0 ? W - 1 : pick == 1 ? W + 1 : W;
        s.gpa[i] = (gfn << PAGE_SHIFT) + 8 * test_rand_below(&rng, 512);
        s.val[i] = test_rand(&rng);
    }
    run_stores(t, &s);
    for (uint32_t i = 0; i < s.n; i++) {
        uint32_t len = 8;
        if (s.gpa[i] >> PAGE_SHIFT != W)
            continue;
        h = fnv(h, &s.gpa[i], sizeof(s.gpa[i]));
        h = fnv(h, &len, sizeof(len));
        h = fnv(h, &s.val[i], 8);
        (*nw)++;
    }
    return h;
}

static void watch(struct tfix *t, uint64_t W)
{
    assert_int_equal(wr(t, 0x00, (uint32_t)W), 0);
    assert_int_equal(wr(t, 0x10, 5), 0);
    assert_int_equal(rd(t, 0x14), 0);
    for (int i = 0; i < 300 && !memslot_is_tracked(&t->f.ms, _gfn(W)); i++)
        test_sleep_ms(10);
    assert_true(memslot_is_tracked(&t->f.ms, _gfn(W)));
    assert_int_equal(rd_until(t, 0x38, 0), 0);
}

static void test_track(void **state)
{
    struct tfix t;
    const uint64_t W = G(10);
    uint32_t h = FNV0, nw = 0;
    (void)state;

    tfix_init(&t);
    watch(&t, W);
    for (uint32_t round = 0; round < 3; round++) {
        h = stores_round(&t, W, 0x100 + round, h, &nw);
        assert_int_equal(rd_until(&t, 0x28, nw), nw);
        assert_int_equal(rd(&t, 0x2c), h);
        assert_int_equal(rd(&t, 0x34), fnv(FNV0, memfix_host(&t.f, W), 4096));
    }
    test_note("track: %u stores to the watched page heard in order", nw);

    /* neighbours leave (a slot split, or the slot beside the watched one
     * deleted and recreated) and come back (merge): nothing announced */
    uint32_t slots0 = memslot_count(&t.f.ms);
    const uint64_t nbs[] = {W + 2, W - 1, W + 1};
    for (unsigned k = 0; k < 3; k++) {
        struct p2m_entry e;
        assert_int_equal(p2m_lookup(&t.f.p2m, _gfn(nbs[k]), &e), 0);
        assert_int_equal(memslot_remove(&t.f.ms, _gfn(nbs[k]), 1), 0);
        assert_int_equal(ioreq_end_hypercall(&t.io), 0);
        if (k == 0)
            assert_true(memslot_count(&t.f.ms) > slots0); /* split */
        assert_int_equal(memslot_populate(&t.f.ms, _gfn(nbs[k]), e.mfn, 1,
                                          P2M_RAM),
                         0);
        assert_int_equal(ioreq_sync_map(&t.io), 0);
        assert_int_equal(memslot_count(&t.f.ms), slots0); /* merged */
    }
    test_sleep_ms(50);
    assert_int_equal(rd(&t, 0x30), 0);
    assert_true(memslot_is_tracked(&t.f.ms, _gfn(W)));
    h = stores_round(&t, W, 0x200, h, &nw);
    assert_int_equal(rd_until(&t, 0x28, nw), nw);
    assert_int_equal(rd(&t, 0x2c), h);

    /* the watched page itself, failing at every fallible step first */
    unsigned fails = 0;
    for (int fam = 0; fam < 2; fam++) {
        for (uint64_t nth = 1;; nth++) {
            int rc;
            bool fired;
            if (fam == 0)
                t.f.ms.test_fail_alloc = nth;
            else
                kvmtest_fault_arm(KVMTEST_OP_SET_REGION, nth, -ENOMEM);
            rc = memslot_remove(&t.f.ms, _gfn(W), 1);
            if (fam == 0) {
                fired = t.f.ms.test_fail_alloc == 0;
                t.f.ms.test_fail_alloc = 0;
            } else {
                fired = kvmtest_fault_fired();
                kvmtest_fault_disarm();
            }
            if (!fired) {
                assert_int_equal(rc, 0);
                /* put it back for the next family */
                if (fam == 0) {
                    assert_int_equal(ioreq_end_hypercall(&t.io), 0);
                    assert_int_equal(rd_until(&t, 0x30, 1), 1);
                    assert_int_equal(memslot_populate(&t.f.ms, _gfn(W),
                                                      _mfn(mfn_x(t.f.first_mfn) + 10),
                                                      1, P2M_RAM),
                                     0);
                    assert_int_equal(ioreq_sync_map(&t.io), 0);
                    watch(&t, W);
                }
                break;
            }
            assert_true(rc < 0);
            fails++;
            assert_true(memslot_is_tracked(&t.f.ms, _gfn(W)));
        }
    }
    assert_int_equal(ioreq_end_hypercall(&t.io), 0);
    /* announced once for each successful removal, never for a failure */
    assert_int_equal(rd_until(&t, 0x30, 2), 2);
    test_sleep_ms(100);
    assert_int_equal(rd(&t, 0x30), 2);
    assert_false(memslot_is_tracked(&t.f.ms, _gfn(W)));
    test_note("track: %u failed removals announced nothing; 2 removals "
              "announced once each", fails);
    assert_true(fails >= 2);
    tfix_fini(&t);
}

/* memslot's rule off (removals announced before they are committed): a
 * removal that then fails is announced, and this test's check sees it. */
static void test_track_rule_off(void **state)
{
    struct tfix t;
    const uint64_t W = G(12);
    int rc;
    (void)state;

    tfix_init(&t);
    watch(&t, W);
    t.f.ms.test_announce_early = true;
    kvmtest_fault_arm(KVMTEST_OP_SET_REGION, 1, -ENOMEM);
    rc = memslot_remove(&t.f.ms, _gfn(W), 1);
    kvmtest_fault_disarm();
    assert_true(rc < 0);
    assert_true(memslot_is_tracked(&t.f.ms, _gfn(W)));
    /* the device was told of a removal that did not happen */
    assert_int_equal(rd_until(&t, 0x30, 1), 1);
    test_note("track, rule off: a failed removal was announced to the device");
    t.f.ms.test_announce_early = false;
    tfix_fini(&t);
}

static void test_dirty(void **state)
{
    struct tfix t;
    (void)state;

    tfix_init(&t);
    assert_int_equal(memslot_set_log_dirty(&t.f.ms, true), 0);
    assert_false(dirty_test(&t.f.dirty, _gfn(G(20))));
    /* fill 3 pages from G(20): the device reports them before answering */
    assert_int_equal(wr(&t, 0x04, (uint32_t)G(20)), 0);
    assert_int_equal(wr(&t, 0x08, 3 * 4096), 0);
    assert_int_equal(wr(&t, 0x0c, 0x3c), 0);
    assert_int_equal(wr(&t, 0x10, 2), 0);
    assert_int_equal(rd(&t, 0x14), 0);
    for (uint64_t g = G(20); g < G(23); g++)
        assert_true(dirty_test(&t.f.dirty, _gfn(g)));
    assert_false(dirty_test(&t.f.dirty, _gfn(G(23))));
    assert_int_equal(((uint8_t *)memfix_host(&t.f, G(22)))[4095], 0x3c);

    /* the block device: a read of 24 sectors into G(40).. marks 3 pages */
    char path[] = "/tmp/memvisor-trkblkXXXXXX";
    static uint8_t data[64 * 512];
    int fd = mkstemp(path);
    pid_t bpid;
    uint64_t d;
    assert_true(fd >= 0);
    memset(data, 0xb1, sizeof(data));
    assert_int_equal(write(fd, data, sizeof(data)), (long)sizeof(data));
    const char *extra[] = {"--file", path, NULL};
    assert_int_equal(dmproc_start(&t.io, block_exe, extra, &bpid), 1);
    for (uint64_t g = G(40); g < G(44); g++)
        assert_false(dirty_test(&t.f.dirty, _gfn(g)));
    d = 0;
    assert_int_equal(ioreq_access(&t.io, 0, DM_RANGE_PIO, 0x5100, 4, true, &d), 0);
    d = G(40);
    assert_int_equal(ioreq_access(&t.io, 0, DM_RANGE_PIO, 0x5104, 4, true, &d), 0);
    d = 24;
    assert_int_equal(ioreq_access(&t.io, 0, DM_RANGE_PIO, 0x5108, 4, true, &d), 0);
    d = 1;
    assert_int_equal(ioreq_access(&t.io, 0, DM_RANGE_PIO, 0x510c, 4, true, &d), 0);
    assert_int_equal(ioreq_access(&t.io, 0, DM_RANGE_PIO, 0x5110, 4, false, &d), 0);
    assert_int_equal(d, 0);
    for (uint64_t g = G(40); g < G(43); g++)
        assert_true(dirty_test(&t.f.dirty, _gfn(g)));
    assert_false(dirty_test(&t.f.dirty, _gfn(G(43))));
    assert_int_equal(((uint8_t *)memfix_host(&t.f, G(42)))[4095], 0xb1);
    tfix_fini(&t);
    (void)dmproc_wait(bpid, 5000);
    close(fd);
    unlink(path);
}

int main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_track),
        cmocka_unit_test(test_track_rule_off),
        cmocka_unit_test(test_dirty),
    };

    if (argc < 3) {
        fprintf(stderr, "usage: test_ioreq_track DM-TEST DM-BLOCK\n");
        return 2;
    }
    dm_exe = argv[1];
    block_exe = argv[2];
    signal(SIGPIPE, SIG_IGN);
    test_require_kvm();
    return cmocka_run_group_tests(tests, NULL, NULL);
}
