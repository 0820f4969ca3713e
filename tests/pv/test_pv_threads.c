/*
 * vCPU threads of one PV domain race MMU operations on shared page tables:
 * pins and unpins of shared L2s, L3 entries hooking them in, writable and
 * read-only mappings of shared frames (including the shared L1s, which
 * makes writable and page-table uses collide), with random preemption.
 * Every result must be a clean error or success; after the threads join,
 * pv_audit() must find every count exact.  Runs under TSan as well.
 */
#include <inttypes.h>
#include <pthread.h>

#include "pvenv.h"

#define NS1 4
#define NS2 2
#define ND 6

static struct pvenv E;

struct shared {
    mfn_t s1[NS1], s2[NS2], d[ND];
    mfn_t q[PVENV_VCPUS], w[PVENV_VCPUS]; /* per vCPU: an L3 and an L1 */
    uint64_t iters, seed;
    _Atomic uint64_t ops, errors, bad;
};

static struct shared S;

struct worker {
    unsigned id;
};

static int reissue_ext(struct pv_vcpu *v, unsigned cmd, uint64_t arg)
{
    uint32_t done = 0;
    int rc;

    while ((rc = pvenv_ext1(v, cmd, arg, &done)) == -ERESTART)
        ;
    return rc;
}

static int reissue_upd(struct pv_vcpu *v, mfn_t t, unsigned idx, uint64_t val)
{
    uint32_t done = 0;
    int rc;

    while ((rc = pvenv_upd1(v, t, idx, val, &done)) == -ERESTART)
        ;
    return rc;
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct pv_vcpu *v = &E.v[w->id];
    uint64_t rng = S.seed * 31 + w->id, ops = 0, errors = 0, bad = 0;

    for (uint64_t i = 0; i < S.iters; i++) {
        unsigned what = (unsigned)test_rand_below(&rng, 5);
        unsigned k = (unsigned)test_rand_below(&rng, 8);
        int rc;

        pv_vcpu_set_preempt(v, 1 + test_rand_below(&rng, 600), true);
        switch (what) {
        case 0:
            rc = reissue_ext(v, MMUEXT_PIN_L2_TABLE,
                             mfn_x(S.s2[test_rand_below(&rng, NS2)]));
            break;
        case 1:
            rc = reissue_ext(v, MMUEXT_UNPIN_TABLE,
                             mfn_x(S.s2[test_rand_below(&rng, NS2)]));
            break;
        case 2:
            rc = reissue_upd(v, S.q[w->id], k,
                             test_rand_below(&rng, 3)
                                 ? pvenv_pte(S.s2[test_rand_below(&rng, NS2)],
                                             PT_FLAGS)
                                 : 0);
            break;
        case 3: {
            /* Map a data frame or a shared L1, RW or RO, or unmap. */
            uint64_t r = test_rand_below(&rng, ND + NS1);
            mfn_t m = r < ND ? S.d[r] : S.s1[r - ND];
            uint64_t fl = test_rand_below(&rng, 2) ? PTE_P | PTE_RW : PTE_P;

            if (!test_rand_below(&rng, 4))
                fl = 0;
            rc = reissue_upd(v, S.w[w->id], k, fl ? pvenv_pte(m, fl) : 0);
            /* Our own RW mapping keeps the frame writable. */
            if (rc == 0 && (fl & PTE_RW) && r < ND &&
                pv_vcpu_tlb_fill(v, m) != 0)
                bad++;
            break;
        }
        default:
            rc = reissue_ext(v, MMUEXT_TLB_FLUSH_LOCAL, 0);
            break;
        }
        ops++;
        if (rc)
            errors++;
        if (rc && rc != -EINVAL && rc != -EBUSY) {
            if (!bad)
                test_note("vCPU %u: operation %u gave %d", w->id, what, rc);
            bad++;
        }
    }
    pv_vcpu_set_preempt(v, 0, false);
    S.ops += ops;
    S.errors += errors;
    S.bad += bad;
    return NULL;
}

static void test_threads_race(void **state)
{
    pthread_t th[PVENV_VCPUS];
    struct worker w[PVENV_VCPUS];

    (void)state;
    pvenv_init(&E, 256);
    S.seed = test_seed(7);
    S.iters = test_scale(3000);
    for (unsigned i = 0; i < ND; i++)
        S.d[i] = pvenv_page(&E);
    for (unsigned i = 0; i < NS1; i++) {
        S.s1[i] = pvenv_page(&E);
        pvenv_pt(&E, S.s1[i])[i] = pvenv_pte(S.d[i], PTE_P);
    }
    for (unsigned i = 0; i < NS2; i++) {
        S.s2[i] = pvenv_page(&E);
        for (unsigned j = 0; j < 2; j++)
            pvenv_pt(&E, S.s2[i])[200 + j] =
                pvenv_pte(S.s1[(i + j) % NS1], PT_FLAGS);
    }
    for (unsigned t = 0; t < PVENV_VCPUS; t++) {
        S.q[t] = pvenv_page(&E);
        S.w[t] = pvenv_page(&E);
        assert_int_equal(pvenv_ext(&E, &E.v[t], MMUEXT_PIN_L3_TABLE,
                                   mfn_x(S.q[t])), 0);
        assert_int_equal(pvenv_ext(&E, &E.v[t], MMUEXT_PIN_L1_TABLE,
                                   mfn_x(S.w[t])), 0);
    }
    pvenv_check(&E);
    for (unsigned t = 0; t < PVENV_VCPUS; t++) {
        w[t].id = t;
        assert_int_equal(pthread_create(&th[t], NULL, worker_main, &w[t]), 0);
    }
    for (unsigned t = 0; t < PVENV_VCPUS; t++)
        assert_int_equal(pthread_join(th[t], NULL), 0);
    test_note("%u vCPU threads ran %" PRIu64 " operations (%" PRIu64
              " refused cleanly)", PVENV_VCPUS, (uint64_t)S.ops,
              (uint64_t)S.errors);
    assert_int_equal(S.bad, 0);
    pvenv_check(&E);
    pvenv_fini(&E);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_threads_race),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
