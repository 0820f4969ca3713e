/*
 * test_memslot_ranges.c - batches of ranges as one slot transaction
 * (memslot_populate_ranges, memslot_remove_ranges: what a reservation
 * hypercall with many extents uses): the view after each batch, one update
 * per batch, running out of slots, and failure injection at every
 * fallible step of both kinds of batch with the state compared before and
 * after.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "memfix.h"
#include "testlib.h"

#define G(x) (MEMFIX_GFN0 + (x))

static void check_all(struct memfix *f)
{
    struct kvmtest_shadow_slot sh[KVMTEST_SHADOW_SLOTS];
    struct memslot *s;
    uint32_t n, seen = 0;

    assert_int_equal(memslot_check(&f->ms), 0);
    assert_int_equal(dirty_check(&f->dirty), 0);
    assert_int_equal(p2m_check(&f->p2m), 0);
    assert_int_equal(frames_check(&f->frames), 0);
    /* M3: KVM's slots equal the view */
    kvmtest_shadow_get(sh);
    assert_int_equal(memslot_snapshot(&f->ms, &s, &n), 0);
    for (uint32_t i = 0; i < n; i++) {
        struct kvmtest_shadow_slot *k = &sh[s[i].id];
        assert_int_equal(k->gpa, gfn_x(s[i].base) << PAGE_SHIFT);
        assert_int_equal(k->size, s[i].npages << PAGE_SHIFT);
        assert_int_equal(k->flags, s[i].flags);
    }
    for (uint32_t id = 1; id < KVMTEST_SHADOW_SLOTS; id++)
        seen += sh[id].size != 0;
    assert_int_equal(seen, n);
    free(s);
}

/* Scattered runs: gfn G(16 * i) .. +8 backed by m0 + 8 * i .. +8. */
#define NRUNS 8
static void runs(uint64_t m0, struct memslot_range *r)
{
    for (unsigned i = 0; i < NRUNS; i++)
        r[i] = (struct memslot_range){_gfn(G(16 * i)), _mfn(m0 + 8 * i), 8};
}

static bool is_ram(struct memfix *f, uint64_t gfn)
{
    struct p2m_entry e;
    return p2m_lookup(&f->p2m, _gfn(gfn), &e) == 0 && p2m_is_ram(e.type);
}

static void test_batches(void **state)
{
    struct memfix f;
    struct memslot_range r[NRUNS], rm[3];
    uint64_t m0, u0;

    (void)state;
    assert_int_equal(
        memfix_init(&f, GUEST_STORE_LIST, NULL, kvmtest_fault_ops(), 256, 1024),
        0);
    m0 = mfn_x(f.first_mfn);
    assert_int_equal(memslot_set_log_dirty(&f.ms, true), 0);
    runs(m0, r);
    /* in reverse order: the batch sorts them; one update for all */
    for (unsigned i = 0; i < NRUNS / 2; i++) {
        struct memslot_range t = r[i];
        r[i] = r[NRUNS - 1 - i];
        r[NRUNS - 1 - i] = t;
    }
    u0 = f.ms.stats.updates;
    assert_int_equal(memslot_populate_ranges(&f.ms, r, NRUNS, P2M_RAM), 0);
    assert_int_equal(f.ms.stats.updates - u0, 1);
    assert_int_equal(memslot_count(&f.ms), NRUNS);
    check_all(&f);
    /* the holes between the runs filled with the frames that follow each
     * run: everything merges into one slot, in one update */
    struct memslot_range fill[NRUNS - 1];
    for (unsigned i = 0; i + 1 < NRUNS; i++)
        fill[i] = (struct memslot_range){_gfn(G(16 * i + 8)),
                                         _mfn(m0 + 64 + 8 * i), 8};
    /* frames must be consecutive for a merge: these are not, so the
     * count grows to 2 * NRUNS - 1 */
    u0 = f.ms.stats.updates;
    assert_int_equal(memslot_populate_ranges(&f.ms, fill, NRUNS - 1, P2M_RAM),
                     0);
    assert_int_equal(f.ms.stats.updates - u0, 1);
    assert_int_equal(memslot_count(&f.ms), 2 * NRUNS - 1);
    check_all(&f);
    /* overlapping populate: -EEXIST, nothing changed */
    struct memslot_range bad[2] = {{_gfn(G(200)), _mfn(m0 + 200), 4},
                                   {_gfn(G(3)), _mfn(m0 + 210), 2}};
    assert_int_equal(memslot_populate_ranges(&f.ms, bad, 2, P2M_RAM), -EEXIST);
    assert_false(is_ram(&f, G(200)));
    assert_int_equal(memslot_count(&f.ms), 2 * NRUNS - 1);
    check_all(&f);
    /* remove three scattered ranges (two overlapping) at once */
    rm[0] = (struct memslot_range){_gfn(G(2)), INVALID_MFN, 2};
    rm[1] = (struct memslot_range){_gfn(G(50)), INVALID_MFN, 4};
    rm[2] = (struct memslot_range){_gfn(G(52)), INVALID_MFN, 4};
    u0 = f.ms.stats.updates;
    assert_int_equal(memslot_remove_ranges(&f.ms, rm, 3), 0);
    assert_int_equal(f.ms.stats.updates - u0, 1);
    assert_false(is_ram(&f, G(2)));
    assert_false(is_ram(&f, G(3)));
    assert_true(is_ram(&f, G(4)));
    for (uint64_t g = G(50); g < G(56); g++)
        assert_false(is_ram(&f, g));
    assert_true(is_ram(&f, G(56)));
    assert_true(p2m_mapcache_test_and_clear(&f.p2m));
    check_all(&f);
    /* argument errors */
    assert_int_equal(memslot_remove_ranges(&f.ms, rm, 0), -EINVAL);
    rm[0].nr = 0;
    assert_int_equal(memslot_remove_ranges(&f.ms, rm, 1), -EFAULT);
    test_note("%" PRIu64 " updates, %" PRIu64 " ioctls, %u slots",
              f.ms.stats.updates, f.ms.stats.ioctls, memslot_count(&f.ms));
    memfix_fini(&f);
}

/* Slot exhaustion: a batch that would need more slots fails cleanly. */
static void test_out_of_slots(void **state)
{
    struct memfix f;
    struct memslot_range r[NRUNS];

    (void)state;
    assert_int_equal(
        memfix_init(&f, GUEST_STORE_LIST, NULL, kvmtest_fault_ops(), 256, 1024),
        0);
    runs(mfn_x(f.first_mfn), r);
    f.ms.test_slot_limit = NRUNS - 1;
    assert_int_equal(memslot_populate_ranges(&f.ms, r, NRUNS, P2M_RAM),
                     -ENOSPC);
    assert_int_equal(memslot_count(&f.ms), 0);
    for (unsigned i = 0; i < NRUNS; i++)
        assert_false(is_ram(&f, gfn_x(r[i].gfn)));
    check_all(&f);
    f.ms.test_slot_limit = NRUNS;
    assert_int_equal(memslot_populate_ranges(&f.ms, r, NRUNS, P2M_RAM), 0);
    /* punching a hole in a slot needs one more */
    struct memslot_range h = {_gfn(G(2)), INVALID_MFN, 1};
    assert_int_equal(memslot_remove_ranges(&f.ms, &h, 1), -ENOSPC);
    assert_true(is_ram(&f, G(2)));
    check_all(&f);
    memfix_fini(&f);
}

/* ---- failure injection ----------------------------------------------------
 */

struct snap {
    struct memslot *slots;
    uint32_t nr;
    uint64_t p2m[256];
};

static void snap_take(struct memfix *f, struct snap *s)
{
    assert_int_equal(memslot_snapshot(&f->ms, &s->slots, &s->nr), 0);
    for (unsigned i = 0; i < 256; i++) {
        struct p2m_entry e;
        assert_int_equal(p2m_lookup(&f->p2m, _gfn(G(i)), &e), 0);
        s->p2m[i] = e.type == P2M_INVALID ? 0 : (mfn_x(e.mfn) << 4) | e.type;
    }
}

static void snap_equal(const struct snap *a, const struct snap *b)
{
    assert_int_equal(a->nr, b->nr);
    assert_memory_equal(a->slots, b->slots, a->nr * sizeof(*a->slots));
    assert_memory_equal(a->p2m, b->p2m, sizeof(a->p2m));
}

static void base_init(struct memfix *f)
{
    struct memslot_range r[NRUNS];

    assert_int_equal(
        memfix_init(f, GUEST_STORE_LIST, NULL, kvmtest_fault_ops(), 256, 1024),
        0);
    runs(mfn_x(f->first_mfn), r);
    assert_int_equal(memslot_set_log_dirty(&f->ms, true), 0);
    assert_int_equal(memslot_populate_ranges(&f->ms, r, NRUNS, P2M_RAM), 0);
}

static int op_populate(struct memfix *f)
{
    uint64_t m0 = mfn_x(f->first_mfn);
    struct memslot_range r[3] = {{_gfn(G(8)), _mfn(m0 + 100), 8},
                                 {_gfn(G(130)), _mfn(m0 + 120), 4},
                                 {_gfn(G(200)), _mfn(m0 + 130), 2}};
    return memslot_populate_ranges(&f->ms, r, 3, P2M_RAM);
}

static int op_remove(struct memfix *f)
{
    struct memslot_range r[3] = {{_gfn(G(2)), INVALID_MFN, 2},
                                 {_gfn(G(16)), INVALID_MFN, 8},
                                 {_gfn(G(100)), INVALID_MFN, 3}};
    return memslot_remove_ranges(&f->ms, r, 3);
}

static void test_failure_injection(void **state)
{
    int (*ops[2])(struct memfix *) = {op_populate, op_remove};
    uint64_t injected = 0;

    (void)state;
    for (unsigned o = 0; o < 2; o++) {
        for (unsigned fam = 0; fam < 3; fam++) {
            for (uint64_t nth = 1;; nth++) {
                struct memfix f;
                struct snap before, after;
                bool fired;
                int rc;

                base_init(&f);
                snap_take(&f, &before);
                if (fam == 0)
                    f.ms.test_fail_alloc = nth;
                else
                    kvmtest_fault_arm(fam == 1 ? KVMTEST_OP_SET_REGION
                                               : KVMTEST_OP_GET_LOG,
                                      nth, -ENOMEM);
                rc = ops[o](&f);
                if (fam == 0) {
                    fired = f.ms.test_fail_alloc == 0;
                    f.ms.test_fail_alloc = 0;
                } else {
                    fired = kvmtest_fault_fired();
                    kvmtest_fault_disarm();
                }
                if (!fired) {
                    assert_int_equal(rc, 0);
                    check_all(&f);
                    free(before.slots);
                    memfix_fini(&f);
                    break;
                }
                injected++;
                assert_true(rc < 0);
                snap_take(&f, &after);
                snap_equal(&before, &after);
                check_all(&f);
                free(before.slots);
                free(after.slots);
                memfix_fini(&f);
            }
        }
    }
    test_note("%" PRIu64 " injected failures in batch updates: every one left"
              " slots, KVM's slots and the p2m as before",
              injected);
    assert_true(injected >= 6);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_batches),
        cmocka_unit_test(test_out_of_slots),
        cmocka_unit_test(test_failure_injection),
    };
    test_require_kvm();
    return cmocka_run_group_tests(tests, NULL, NULL);
}
