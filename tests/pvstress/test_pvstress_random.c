/*
 * Randomized operations over several PV domains on the real frame table.
 *
 * Three domains with three vCPUs each share a small pool.  Each step picks
 * a vCPU.  If its previous call was preempted, it re-issues that call (the
 * continuation); otherwise it issues a new random call:
 *  - mmuext_op batches: pin L1..L4, unpin, new (user) base pointer,
 *    clear/copy page, TLB flushes, an unknown command;
 *  - mmu_update batches: normal, preserve-A/D, machphys, unknown command;
 *  - update_va_mapping;
 *  - populate_physmap, increase/decrease_reservation;
 *  - page-frame info;
 *  - a write through a writable mapping (a TLB fill that a later type
 *    change must flush).
 * One call in three is preempted at a random check (the hook), so several
 * vCPUs of a domain interleave resumable continuations on shared tables.
 * Rarely, a domain dies with calls in flight: pv_domain_relinquish() (itself
 * preempted) must leave no frame behind, and the domain starts again.
 *
 * Frames have a preferred level (by mfn % 8: data three times, L1 twice,
 * L2, L3, L4) that most new entries and pins follow, so that deep valid
 * trees form and get torn apart; the rest is noise that the entry rules
 * must refuse.
 *
 * After EVERY step: frames_check(), pv_audit() of the domain that acted,
 * the honest-type check of any page-frame info answer, and, whenever the
 * domain is quiescent, the reference model (pvworld.h).
 *
 * Reproduce: MEMVISOR_SEED=<seed> (printed); MEMVISOR_TEST_SCALE scales the
 * number of steps; MEMVISOR_TRACE=<step> [MEMVISOR_WATCH=<mfn>] prints the
 * calls leading to a step.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pvworld.h"
#include "testlib.h"

#define NDOMS 3
#define NVCPUS 3
#define POOL 64
#define BUDGET 12

struct gen {
    struct world *w;
    uint64_t rng;
    mfn_t owned[POOL];
    unsigned nr_owned;
};

static unsigned rnd(struct gen *g, unsigned n)
{
    return (unsigned)test_rand_below(&g->rng, n);
}

static unsigned pref_level(mfn_t m)
{
    unsigned k = (unsigned)(mfn_x(m) % 8);

    return k < 3 ? 0 : k < 5 ? 1 : k - 3;
}

/* A frame: mostly one of the domain's, preferably of the wanted level. */
static mfn_t pick(struct gen *g, int want_level)
{
    unsigned i, start;

    if (!g->nr_owned || rnd(g, 20) == 0)
        return _mfn(rnd(g, POOL + 2)); /* anything, even out of range */
    start = rnd(g, g->nr_owned);
    if (want_level >= 0 && rnd(g, 8) != 0)
        for (i = 0; i < g->nr_owned; i++) {
            mfn_t m = g->owned[(start + i) % g->nr_owned];

            if (pref_level(m) == (unsigned)want_level)
                return m;
        }
    return g->owned[start];
}

/* Mostly a frame that is pinned now, so that trees come and go. */
static mfn_t pick_pinned(struct gen *g)
{
    unsigned start = g->nr_owned ? rnd(g, g->nr_owned) : 0, i;

    if (rnd(g, 4))
        for (i = 0; i < g->nr_owned; i++) {
            mfn_t m = g->owned[(start + i) % g->nr_owned];

            if (frame_type_word(&g->w->f, m) & FRAME_TYPE_PINNED)
                return m;
        }
    return pick(g, -1);
}

static unsigned pick_index(struct gen *g)
{
    unsigned r = rnd(g, 40);

    if (r == 0)
        return PV_HV_L4_FIRST + rnd(g, PV_HV_L4_NR); /* hypervisor slot */
    if (r == 1)
        return PT_ENTRIES - 1;
    return rnd(g, 3);
}

static uint64_t pick_entry(struct gen *g, mfn_t table)
{
    unsigned lvl = pref_level(table), r = rnd(g, 100);
    uint64_t e;
    mfn_t t;

    if (r < 20)
        return 0;
    if (r < 23)
        return test_rand(&g->rng) & ~PTE_P; /* not present: anything goes */
    t = pick(g, lvl ? (int)lvl - 1 : 0);
    e = (mfn_x(t) << PAGE_SHIFT) | PTE_P;
    if (rnd(g, 2))
        e |= PTE_RW;
    if (rnd(g, 2))
        e |= PTE_US;
    if (rnd(g, 4) == 0)
        e |= PTE_A | PTE_D;
    switch (rnd(g, 30)) {
    case 0:
        e |= PTE_PSE;
        break;
    case 1:
        e |= PTE_PCD;
        break;
    case 2:
        e |= PTE_G;
        break;
    case 3:
        e |= PTE_NX;
        break;
    case 4:
        e |= 1ULL << 51;
        break; /* beyond any frame */
    case 5:
        e |= PTE_AVAIL;
        break;
    default:
        break;
    }
    return e;
}

static void new_call(struct gen *g, unsigned d, unsigned v)
{
    struct world *w = g->w;
    struct call *c = world_call(w, d, v);
    unsigned r = rnd(g, 100), n, i;
    mfn_t m;

    if (r < 30) { /* mmu_update batch */
        n = 1 + rnd(g, 3);
        for (i = 0; i < n; i++) {
            unsigned k = rnd(g, 20);

            m = pick(g, (int)(1 + rnd(g, 4)));
            if (k == 0)
                call_mmu(c, m, 0, MMU_MACHPHYS_UPDATE, rnd(g, 4 * POOL));
            else
                call_mmu(c, m, pick_index(g),
                         k < 5    ? MMU_PT_UPDATE_PRESERVE_AD
                         : k == 5 ? 5 /* unknown command */
                                  : MMU_NORMAL_PT_UPDATE,
                         pick_entry(g, m));
        }
    } else if (r < 62) { /* mmuext batch */
        n = 1 + rnd(g, 2);
        for (i = 0; i < n; i++) {
            unsigned k = rnd(g, 10);

            if (k < 4) {
                unsigned lvl = 1 + rnd(g, 4);

                m = pick(g, (int)lvl);
                if (rnd(g, 6))
                    lvl = pref_level(m) ? pref_level(m) : lvl;
                call_ext(c, MMUEXT_PIN_L1_TABLE + lvl - 1, m);
            } else if (k < 8) {
                call_ext(c, MMUEXT_UNPIN_TABLE, pick_pinned(g));
            } else if (k < 9) {
                call_ext(c, MMUEXT_NEW_BASEPTR, pick(g, 4));
            } else {
                static const unsigned other[] = {MMUEXT_TLB_FLUSH_LOCAL,
                                                 MMUEXT_TLB_FLUSH_ALL,
                                                 99,
                                                 MMUEXT_CLEAR_PAGE,
                                                 MMUEXT_COPY_PAGE,
                                                 MMUEXT_NEW_USER_BASEPTR,
                                                 MMUEXT_NEW_USER_BASEPTR};
                unsigned cmd = other[rnd(g, ARRAY_SIZE(other))];

                call_ext(c, cmd,
                         pick(g, cmd == MMUEXT_NEW_USER_BASEPTR ? 4 : 0));
                if (cmd == MMUEXT_COPY_PAGE)
                    c->ext[c->count - 1].arg2.src_mfn = mfn_x(pick(g, -1));
                if (cmd == MMUEXT_NEW_USER_BASEPTR && !rnd(g, 4))
                    c->ext[c->count - 1].arg1.mfn = 0; /* no user base */
            }
        }
    } else if (r < 70) {
        c->kind = CALL_UVA;
        c->va = ((uint64_t)rnd(g, 2) << 39) | ((uint64_t)rnd(g, 2) << 30) |
                ((uint64_t)rnd(g, 2) << 21) | ((uint64_t)rnd(g, 3) << 12);
        c->val = pick_entry(g, _mfn(1)); /* an L1 entry */
        c->flags = rnd(g, 2) ? UVMF_INVLPG : UVMF_NONE;
    } else if (r < 80) {
        n = 1 + rnd(g, 2);
        for (i = 0; i < n; i++)
            call_mem(c,
                     rnd(g, 3) ? XENMEM_populate_physmap
                               : XENMEM_increase_reservation,
                     rnd(g, 10) ? 0 : 1, rnd(g, 4 * POOL));
    } else if (r < 92) {
        n = 1 + rnd(g, 2);
        for (i = 0; i < n; i++)
            call_mem(c, XENMEM_decrease_reservation, 0, mfn_x(pick(g, -1)));
    } else if (r < 96) {
        c->kind = CALL_TLB;
        c->count = 1;
        c->in[0] = mfn_x(pick(g, 0));
    } else {
        c->kind = CALL_PFINFO;
        c->count = 1 + rnd(g, W_MAX_BATCH);
        for (i = 0; i < c->count; i++)
            c->in[i] = mfn_x(pick(g, -1));
    }
}

/*
 * MEMVISOR_TRACE=<step>: print the 60 calls up to that step (a failure
 * names its step), each with its result, and with MEMVISOR_WATCH=<mfn>
 * that frame's words after each of them.
 */
static void trace_call(struct world *w, uint64_t s, unsigned d, unsigned v,
                       uint64_t pn, const struct call *c,
                       const struct call *after, int rc)
{
    const char *watch = getenv("MEMVISOR_WATCH");

    printf("# step %" PRIu64 " d%u v%u preempt %" PRIu64 " kind %d rc %d "
           "done %u:",
           s, d + 1, v, pn, c->kind, rc, after->done);
    for (unsigned i = 0; i < c->count; i++) {
        if (c->kind == CALL_MMU)
            printf(" [mmu %#" PRIx64 "[%u] cmd %u = %#" PRIx64 "]",
                   c->mmu[i].ptr >> PAGE_SHIFT,
                   (unsigned)((c->mmu[i].ptr & ~PAGE_MASK) >> 3),
                   (unsigned)(c->mmu[i].ptr & 7), c->mmu[i].val);
        else if (c->kind == CALL_MMUEXT)
            printf(" [ext %u %#" PRIx64 "]", c->ext[i].cmd, c->ext[i].arg1.mfn);
        else if (c->kind == CALL_MEMORY)
            printf(" [mem %lu %#" PRIx64 " -> %#" PRIx64 "]", c->cmd, c->in[i],
                   after->extents[i]);
        else if (c->kind == CALL_PFINFO)
            printf(" [pfinfo %#" PRIx64 "]", c->in[i]);
        else if (c->kind == CALL_TLB)
            printf(" [tlb fill %#" PRIx64 "]", c->in[i]);
    }
    if (c->kind == CALL_UVA)
        printf(" [uva %#" PRIx64 " = %#" PRIx64 "]", c->va, c->val);
    printf("\n");
    if (watch) {
        mfn_t m = _mfn(strtoull(watch, NULL, 0));
        const struct frame *pg = frames_get_frame(&w->f, m);

        if (frames_mfn_valid(&w->f, m))
            printf("#    mfn %#" PRIx64 " owner %u count %#" PRIx64
                   " type %#" PRIx64 " nr_validated %u partial_flags %u\n",
                   mfn_x(m), frame_owner(&w->f, m), (uint64_t)pg->count_info,
                   (uint64_t)pg->type_info, pg->nr_validated,
                   pg->partial_flags);
    }
}

/* Run steps random steps; with stop, return at the first failure. */
static void run(struct world *w, struct gen *g, uint64_t steps, bool stop,
                uint64_t *at)
{
    const char *trace = getenv("MEMVISOR_TRACE");
    uint64_t trace_to = trace ? strtoull(trace, NULL, 0) : 0, s;
    unsigned d, v;

    for (s = 0; s < steps; s++) {
        struct call copy;
        uint64_t pn;
        int rc;

        d = rnd(g, NDOMS);
        v = rnd(g, NVCPUS);
        if (rnd(g, 2000) == 0) {
            /* Rarely: the domain dies with calls in flight, and restarts. */
            world_teardown(w, d, rnd(g, 2) ? 0 : 1 + rnd(g, 50));
            if (w->failures && !*at)
                *at = s + 1;
            if (w->failures && stop)
                return;
            continue;
        }
        if (!world_pending(w, d, v)) {
            g->nr_owned = world_owned(w, d, g->owned, POOL);
            new_call(g, d, v);
        }
        copy = w->dom[d].call[v];
        pn = rnd(g, 3) ? 0 : 1 + rnd(g, 4);
        rc = world_step(w, d, v, pn);
        if (trace && s + 60 > trace_to && s <= trace_to)
            trace_call(w, s, d, v, pn, &copy, &w->dom[d].call[v], rc);
        if (frames_check(&w->f))
            world_fail(w, "step %" PRIu64 ": frames_check failed", s);
        world_check_dom(w, d);
        if (w->failures && !*at)
            *at = s + 1;
        if (w->failures && stop)
            return;
    }
    /* Finish every continuation, then check everything once more. */
    for (d = 0; d < NDOMS; d++)
        for (v = 0; v < NVCPUS; v++)
            (void)world_run(w, d, v);
    world_check(w);
}

static void test_random(void **state)
{
    struct world *w = calloc(1, sizeof(*w));
    struct gen g = {.w = w};
    uint64_t seed = test_seed(0x5eed2026), steps, at = 0;
    struct timespec t0, t1;

    (void)state;
    assert_non_null(w);
    g.rng = seed;
    assert_int_equal(world_init(w, POOL, NDOMS, NVCPUS, BUDGET), 0);
    steps = test_scale(1000000);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    run(w, &g, steps, false, &at);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    test_note("seed %" PRIu64 ": %" PRIu64 " operations (calls issued, %" PRIu64
              " of them preempted and re-issued), %" PRIu64 " audits, %" PRIu64
              " model checks, %" PRIu64 " audit failures, %.1f s",
              seed, w->steps, w->restarts, w->audits, w->model_checks,
              w->failures,
              (double)(t1.tv_sec - t0.tv_sec) +
                  (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);
    test_note("%.1f page tables per audit on average, %" PRIu64
              " resting partial frames met by the model, %" PRIu64
              " domain teardowns with calls in flight",
              (double)w->audit_tables / (double)(w->audits ? w->audits : 1),
              w->partial_seen, w->teardowns);
    for (unsigned k = 1; k < CALL_KINDS; k++)
        test_note("call kind %u: %" PRIu64 " succeeded, %" PRIu64 " refused", k,
                  w->ok_by_kind[k], w->err_by_kind[k]);
    if (w->failures)
        test_note("first failure at step %" PRIu64 " (MEMVISOR_SEED=%" PRIu64
                  " MEMVISOR_TRACE=%" PRIu64 "): %s",
                  at - 1, seed, at - 1, w->first_failure);
    assert_int_equal(w->failures, 0);
    assert_true(w->steps >= steps);
    assert_int_equal(world_fini(w), 0);
    free(w);
}

/*
 * The same random walk with one rule switched off must find a violation
 * (a test that cannot fail is not a test).  Stops at the first one.
 */
static void catches(const char *name, void (*set)(struct pv_rules *))
{
    struct world *w = calloc(1, sizeof(*w));
    struct gen g = {.w = w, .rng = 0x5eed2026};
    uint64_t at = 0;

    assert_non_null(w);
    assert_int_equal(world_init(w, POOL, NDOMS, NVCPUS, BUDGET), 0);
    if (set)
        for (unsigned d = 0; d < NDOMS; d++)
            set(&world_pv(w, d)->rules);
    else
        w->f.free_hook = NULL; /* freed frames keep stale translations */
    run(w, &g, 200000, true, &at);
    test_note("with %s switched off: %s after %" PRIu64 " operations%s%.200s",
              name, w->failures ? "violation found" : "NOTHING found", at,
              w->failures ? ": " : "", w->first_failure);
    assert_true(w->failures > 0);
    (void)world_fini(w);
    free(w);
}

static void off_partial_ref(struct pv_rules *r)
{
    r->no_partial_ref = true;
}

static void off_cleanup_put(struct pv_rules *r)
{
    r->cleanup_put_always = true;
}

static void off_deferred(struct pv_rules *r)
{
    r->no_deferred_partial = true;
}

static void test_random_catches(void **state)
{
    (void)state;
    catches("rules.no_partial_ref", off_partial_ref);
    catches("rules.cleanup_put_always", off_cleanup_put);
    catches("rules.no_deferred_partial", off_deferred);
    catches("the free-time flush of writable translations", NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_random),
        cmocka_unit_test(test_random_catches),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
