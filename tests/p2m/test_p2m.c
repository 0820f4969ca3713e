/*
 * test_p2m.c - the p2m as a table of operations with expected results,
 * p2m_check() and frame counts after every step, for HVM and PV domains.
 */
#include <errno.h>

#include "p2m/p2m.h"
#include "testlib.h"

enum op { POP, REM, REP, LOOK };

struct step {
    enum op op;
    uint64_t gfn, mfn;
    enum p2m_type type;
    int rc;
    bool invalidate; /* mapcache flag expected after the step (then cleared) */
};

#define DOM 1
#define OTHER 2

static void run(enum p2m_kind kind, const struct step *steps, size_t n)
{
    struct frames f;
    struct p2m p;
    mfn_t m;

    uint64_t b; /* the table's mfn k is frame b + k (frame 0 is reserved) */

    assert_int_equal(frames_init(&f, 64), 0);
    assert_int_equal(frames_domain_add(&f, DOM, 32), 0);
    assert_int_equal(frames_domain_add(&f, OTHER, 32), 0);
    /* DOM owns the table's mfns 0..15, OTHER 16..31 */
    for (int i = 0; i < 16; i++) {
        assert_int_equal(frames_alloc(&f, DOM, 0, &m), 0);
        if (i == 0)
            b = mfn_x(m);
        assert_int_equal(mfn_x(m), b + (uint64_t)i);
    }
    for (int i = 0; i < 16; i++)
        assert_int_equal(frames_alloc(&f, OTHER, 0, &m), 0);
    assert_int_equal(p2m_init(&p, &f, DOM, kind, 40), 0);
    for (size_t i = 0; i < n; i++) {
        const struct step *s = &steps[i];
        struct p2m_entry e;
        uint64_t mfn = s->mfn < 64 ? s->mfn + b : s->mfn;
        /* PV: the table's gfn == mfn, shifted alike */
        uint64_t gfn = kind == P2M_PV && s->gfn < 32 ? s->gfn + b : s->gfn;
        uint64_t before = mfn < 64 ? frame_count(&f, _mfn(mfn)) : 0;
        int rc = 0;
        switch (s->op) {
        case POP:
            rc = p2m_populate(&p, _gfn(gfn), _mfn(mfn), s->type);
            break;
        case REM:
            rc = p2m_remove(&p, _gfn(gfn), &e);
            break;
        case REP:
            rc = p2m_replace(&p, _gfn(gfn), _mfn(mfn), s->type, &e);
            break;
        case LOOK:
            rc = p2m_lookup(&p, _gfn(gfn), &e);
            if (!rc) {
                assert_int_equal(e.type, s->type);
                if (s->type != P2M_INVALID)
                    assert_int_equal(mfn_x(e.mfn), mfn);
            }
            break;
        }
        if (rc != s->rc)
            fail_msg("step %zu: rc %d, expected %d", i, rc, s->rc);
        assert_int_equal(p2m_check(&p), 0);
        assert_int_equal(frames_check(&f), 0);
        assert_int_equal(p2m_mapcache_test_and_clear(&p), s->invalidate);
        if (s->op == POP && !rc && p2m_is_ram(s->type))
            assert_int_equal(frame_count(&f, _mfn(mfn)), before + 1);
        if (s->op == POP && rc && mfn < 64)
            assert_int_equal(frame_count(&f, _mfn(mfn)), before);
    }
    p2m_fini(&p);
    for (uint64_t i = 0; i < 32; i++) {
        assert_int_equal(frame_count(&f, _mfn(b + i)), 1); /* all refs dropped */
        assert_int_equal(frame_put_alloc_ref(&f, _mfn(b + i)), 0);
    }
    frames_fini(&f);
}

static void test_hvm(void **state)
{
    static const struct step steps[] = {
        {LOOK, 3, 0, P2M_INVALID, 0, false},
        {POP, 3, 7, P2M_RAM, 0, false},
        {LOOK, 3, 7, P2M_RAM, 0, false},
        {POP, 3, 8, P2M_RAM, -EEXIST, false},
        {POP, 4, 20, P2M_RAM, -EPERM, false},      /* not ours */
        {POP, 4, 40, P2M_RAM, -ENOENT, false},     /* free frame */
        {POP, 4, 1000, P2M_RAM, -ENOENT, false},   /* outside the pool */
        {POP, 40, 1, P2M_RAM, -EFAULT, false},     /* outside the table */
        {POP, 4, 1, P2M_INVALID, -EINVAL, false},
        {POP, 5, 0xfee00, P2M_MMIO, 0, false},     /* no reference */
        {REM, 5, 0, P2M_INVALID, 0, false},        /* MMIO: no invalidate */
        {POP, 4, 7, P2M_RAM_RO, 0, false},         /* one frame, two gfns */
        {REP, 3, 7, P2M_LOGDIRTY, 0, false},       /* type only: same frame */
        {REP, 3, 9, P2M_RAM, 0, true},             /* frame replaced */
        {REP, 3, 20, P2M_RAM, -EPERM, false},      /* fails: nothing changes */
        {LOOK, 3, 9, P2M_RAM, 0, false},
        {REP, 6, 9, P2M_RAM, -ENOENT, false},
        {REM, 3, 0, P2M_INVALID, 0, true},
        {REM, 3, 0, P2M_INVALID, -ENOENT, false},
        {REP, 4, 0xfee00, P2M_MMIO, 0, true},      /* RAM became MMIO */
        {POP, 31, 15, P2M_RAM, 0, false},
    };
    (void)state;
    run(P2M_HVM, steps, ARRAY_SIZE(steps));
}

static void test_pv(void **state)
{
    static const struct step steps[] = {
        {POP, 3, 3, P2M_RAM, 0, false},
        {POP, 4, 5, P2M_RAM, -EINVAL, false},      /* PV: gfn == mfn */
        {POP, 20, 20, P2M_RAM, -EPERM, false},     /* not owned */
        {REP, 3, 3, P2M_RAM_RO, 0, false},
        {REP, 3, 4, P2M_RAM, -EINVAL, false},
        {REM, 3, 0, P2M_INVALID, 0, true},
        {POP, 15, 15, P2M_LOGDIRTY, 0, false},
    };
    (void)state;
    run(P2M_PV, steps, ARRAY_SIZE(steps));
}

/* The checker catches a broken count (rule switched off by corrupting). */
static void test_check_catches(void **state)
{
    struct frames f;
    struct p2m p;
    mfn_t m;

    (void)state;
    assert_int_equal(frames_init(&f, 8), 0);
    assert_int_equal(frames_domain_add(&f, DOM, 8), 0);
    assert_int_equal(frames_alloc(&f, DOM, 0, &m), 0);
    assert_int_equal(p2m_init(&p, &f, DOM, P2M_PV, 8), 0);
    assert_int_equal(p2m_populate(&p, _gfn(mfn_x(m)), m, P2M_RAM), 0);
    p.nr_ram++;
    assert_int_equal(p2m_check(&p), -EUCLEAN);
    p.nr_ram--;
    p.table[5] = (6ULL << 4) | P2M_RAM; /* PV entry with gfn != mfn */
    assert_int_equal(p2m_check(&p), -EUCLEAN);
    p.table[5] = 0;
    assert_int_equal(p2m_check(&p), 0);
    p2m_fini(&p);
    assert_int_equal(frame_put_alloc_ref(&f, m), 0);
    frames_fini(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hvm),
        cmocka_unit_test(test_pv),
        cmocka_unit_test(test_check_catches),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
