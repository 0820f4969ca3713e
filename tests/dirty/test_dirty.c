/*
 * test_dirty.c - the dirty log, step by step with dirty_check() after each:
 * hypervisor writes through the accessor, KVM's bitmap pulled in and
 * re-protected per 64-page chunk for slots at any alignment, harvest as a
 * transaction (a failing consumer or clear puts its bits back), the memory
 * bound, and the checker catching corruption.
 */
#include <errno.h>
#include <inttypes.h>
#include <string.h>

#include "lib/bitmap.h"
#include "memfix.h"
#include "testlib.h"

#define G(x) (MEMFIX_GFN0 + (x))

struct take {
    uint64_t *map;   /* gfns handed out */
    int fail_at;     /* fail the n-th call (1-based), 0 never */
    int calls;
};

static int take(gfn_t chunk, uint64_t bits, void *opaque)
{
    struct take *t = opaque;

    if (++t->calls == t->fail_at)
        return -EIO;
    bitmap_atomic_or_word(t->map, gfn_x(chunk) / 64, bits);
    return 0;
}

static uint64_t take_all(struct memfix *f, uint64_t *map)
{
    struct take t = {.map = map};
    memset(map, 0, BITMAP_WORDS(f->nr_gfns) * 8);
    assert_int_equal(dirty_sync(&f->dirty), 0);
    assert_int_equal(dirty_harvest(&f->dirty, _gfn(0), f->nr_gfns, take, &t), 0);
    assert_int_equal(dirty_check(&f->dirty), 0);
    return bitmap_weight(map, f->nr_gfns);
}

static void guest_write(struct memfix *f, const uint64_t *gfns, uint32_t n)
{
    struct kvmtest_args *a = kvmtest_args(f->vm);
    uint64_t code, arg;

    a->nr_ops = n;
    for (uint32_t i = 0; i < n; i++)
    {
        a->ops[i].addr = memfix_gva(gfns[i]);
        a->ops[i].value = 0xabc + i;
        a->ops[i].len = 8;
    }
    assert_int_equal(kvmtest_vcpu_reset(f->vm, GUEST_STORE_LIST), 0);
    assert_int_equal(kvmtest_run_ucall(f->vm, &code, &arg), 0);
    assert_int_equal(code, KVMTEST_UCALL_DONE);
}

static void test_accessor_and_marks(void **state)
{
    struct memfix f;
    uint8_t buf[6000];
    uint64_t *map;

    (void)state;
    assert_int_equal(memfix_init(&f, GUEST_STORE_LIST, NULL, NULL, 64, 256), 0);
    map = bitmap_alloc(f.nr_gfns);
    assert_int_equal(memslot_populate(&f.ms, _gfn(G(0)), f.first_mfn, 32, P2M_RAM), 0);
    assert_int_equal(dirty_check(&f.dirty), 0);
    /* a write across a page boundary marks both pages, after writing */
    memset(buf, 0x5a, sizeof(buf));
    assert_int_equal(dirty_copy_to_guest(&f.dirty, _gpa((G(3) << 12) + 4000), buf, 200), 0);
    assert_true(dirty_test(&f.dirty, _gfn(G(3))));
    assert_true(dirty_test(&f.dirty, _gfn(G(4))));
    assert_false(dirty_test(&f.dirty, _gfn(G(5))));
    assert_int_equal(dirty_check(&f.dirty), 0);
    assert_int_equal(((uint8_t *)memfix_host(&f, G(4)))[103], 0x5a);
    uint8_t back[200];
    assert_int_equal(dirty_copy_from_guest(&f.dirty, back, _gpa((G(3) << 12) + 4000), 200), 0);
    assert_memory_equal(back, buf, 200);
    /* not RAM, out of range, wrapping: refused, nothing marked */
    assert_int_equal(dirty_copy_to_guest(&f.dirty, _gpa(G(40) << 12), buf, 8), -EFAULT);
    assert_int_equal(dirty_copy_to_guest(&f.dirty, _gpa(~0ULL - 4), buf, 8), -EFAULT);
    assert_int_equal(dirty_mark(&f.dirty, _gfn(f.nr_gfns - 1), 2), -EFAULT);
    assert_int_equal(take_all(&f, map), 2);
    assert_int_equal(take_all(&f, map), 0);
    /* marks */
    assert_int_equal(dirty_mark(&f.dirty, _gfn(G(60)), 10), 0);
    assert_int_equal(take_all(&f, map), 10);
    assert_true(bitmap_test(map, G(69)));
    bitmap_free(map);
    memfix_fini(&f);
}

/* Slots at unaligned bases: the 64-aligned clears land in the right slot,
 * and a page handed out is re-protected (its next write is logged again). */
static void test_unaligned_slots_clear(void **state)
{
    struct memfix f;
    uint64_t *map;
    uint64_t m0;

    (void)state;
    assert_int_equal(memfix_init(&f, GUEST_STORE_LIST, NULL, NULL, 256, 512), 0);
    map = bitmap_alloc(f.nr_gfns);
    m0 = mfn_x(f.first_mfn);
    /* slot A: gfn +3 .. +103 (frames 0..99); slot B: +103 .. +203 (frames 150..) */
    assert_int_equal(memslot_populate(&f.ms, _gfn(G(3)), _mfn(m0), 100, P2M_RAM), 0);
    assert_int_equal(memslot_populate(&f.ms, _gfn(G(103)), _mfn(m0 + 150), 100, P2M_RAM), 0);
    assert_int_equal(memslot_set_log_dirty(&f.ms, true), 0);
    assert_int_equal(f.dirty.nr_slots, 2);
    static const uint64_t w[] = {G(3), G(60), G(66), G(67), G(102), G(103), G(127), G(128), G(202)};
    for (int round = 0; round < 3; round++) {
        guest_write(&f, w, ARRAY_SIZE(w));
        assert_int_equal(take_all(&f, map), ARRAY_SIZE(w));
        for (unsigned i = 0; i < ARRAY_SIZE(w); i++)
            assert_true(bitmap_test(map, w[i]));
        /* cleared in KVM: nothing more without new writes */
        assert_int_equal(take_all(&f, map), 0);
    }
    test_note("%" PRIu64 " KVM_CLEAR_DIRTY_LOG calls for unaligned slots",
              f.dirty.stats.clear_calls);
    bitmap_free(map);
    memfix_fini(&f);
}

/* D2: a failing consumer (or clear) puts its chunk back; earlier chunks
 * stay handed out. */
static void test_harvest_transaction(void **state)
{
    struct memfix f;
    uint64_t *map, *rest;

    (void)state;
    assert_int_equal(memfix_init(&f, GUEST_STORE_LIST, NULL, kvmtest_fault_ops(), 256, 512), 0);
    map = bitmap_alloc(f.nr_gfns);
    rest = bitmap_alloc(f.nr_gfns);
    assert_int_equal(memslot_populate(&f.ms, _gfn(G(0)), f.first_mfn, 256, P2M_RAM), 0);
    assert_int_equal(memslot_set_log_dirty(&f.ms, true), 0);
    static const uint64_t w[] = {G(1), G(70), G(130), G(200)}; /* 4 chunks */
    guest_write(&f, w, ARRAY_SIZE(w));
    assert_int_equal(dirty_sync(&f.dirty), 0);

    /* the consumer fails on the second chunk */
    struct take t = {.map = map, .fail_at = 2};
    assert_int_equal(dirty_harvest(&f.dirty, _gfn(0), f.nr_gfns, take, &t), -EIO);
    assert_int_equal(dirty_check(&f.dirty), 0);
    assert_true(bitmap_test(map, G(1)));
    assert_false(dirty_test(&f.dirty, _gfn(G(1))));
    assert_true(dirty_test(&f.dirty, _gfn(G(70))));
    assert_true(dirty_test(&f.dirty, _gfn(G(130))));
    assert_true(dirty_test(&f.dirty, _gfn(G(200))));
    assert_int_equal(f.dirty.stats.put_back, 3); /* the batch's later chunks too */

    /* the clear fails: the bits go back too */
    kvmtest_fault_arm(KVMTEST_OP_CLEAR_LOG, 1, -ENOMEM);
    struct take t2 = {.map = rest};
    assert_int_equal(dirty_harvest(&f.dirty, _gfn(0), f.nr_gfns, take, &t2), -ENOMEM);
    kvmtest_fault_disarm();
    assert_true(dirty_test(&f.dirty, _gfn(G(70))));
    assert_int_equal(dirty_check(&f.dirty), 0);

    /* then everything else arrives, exactly once */
    assert_int_equal(take_all(&f, rest), 3);
    assert_true(bitmap_test(rest, G(70)) && bitmap_test(rest, G(130)) &&
                bitmap_test(rest, G(200)));
    bitmap_free(map);
    bitmap_free(rest);
    memfix_fini(&f);
}

/* D5 and the checker. */
static void test_memory_and_check(void **state)
{
    struct memfix f;

    (void)state;
    assert_int_equal(memfix_init(&f, GUEST_STORE_LIST, NULL, NULL, 256, 1000), 0);
    assert_int_equal(memslot_populate(&f.ms, _gfn(G(0)), f.first_mfn, 256, P2M_RAM), 0);
    assert_int_equal(memslot_set_log_dirty(&f.ms, true), 0);
    uint64_t bytes = dirty_memory_bytes(&f.dirty);
    test_note("dirty log: %" PRIu64 " bytes for %" PRIu64 " gfns (%.2f bits per gfn)",
              bytes, f.nr_gfns, 8.0 * (double)bytes / (double)f.nr_gfns);
    assert_true(bytes * 8 <= 2 * f.nr_gfns + 2 * 64 * (f.dirty.nr_slots + 1));
    assert_int_equal(dirty_check(&f.dirty), 0);
    /* a bit beyond nr_gfns (D4) */
    f.dirty.log[f.nr_gfns / 64] |= 1ULL << 63;
    assert_int_equal(dirty_check(&f.dirty), -EUCLEAN);
    f.dirty.log[f.nr_gfns / 64] &= ~(1ULL << 63);
    /* a slot table that disagrees with itself (D3) */
    dirty_lock(&f.dirty);
    struct dirty_slot *s = f.dirty.sorted[0];
    f.dirty.by_id[s->id] = NULL;
    dirty_unlock(&f.dirty);
    assert_int_equal(dirty_check(&f.dirty), -EUCLEAN);
    dirty_lock(&f.dirty);
    f.dirty.by_id[s->id] = s;
    dirty_unlock(&f.dirty);
    assert_int_equal(dirty_check(&f.dirty), 0);
    memfix_fini(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_accessor_and_marks),
        cmocka_unit_test(test_unaligned_slots_clear),
        cmocka_unit_test(test_harvest_transaction),
        cmocka_unit_test(test_memory_and_check),
    };
    test_require_kvm();
    return cmocka_run_group_tests(tests, NULL, NULL);
}
