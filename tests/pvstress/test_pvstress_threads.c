/*
 * Real threads race the frame table and the pv module on shared frames.
 *
 * One domain, four vCPUs, one thread each (a pv_vcpu is used by one thread
 * at a time).  Shared: a pinned L4 P, L3s A0 A1, L2s B0 B1, L1s C0..C3 and
 * data frames D0..D7, wired P -> A -> B -> C -> D.  Each thread, at random:
 *  - takes and drops general references on shared frames (frame_get/put);
 *  - takes a writable type reference on a shared frame (frame_get_and_type
 *    WRITABLE), records a writable translation (pv_vcpu_tlb_fill), drops
 *    the reference: racing the pins below, which must flush that
 *    translation only after their type reference commits (XSA-401);
 *  - pins and unpins A, B, C at their levels (mmuext_op, preemptible, the
 *    preemption hook set at random), so type counts go 0 <-> 1 from several
 *    threads, validating and devalidating concurrently;
 *  - rewrites entries of P, A, B and C (mmu_update), including RW mappings
 *    of data frames that other threads are pinning as L1s;
 *  - asks for page-frame info.
 * Every call is re-issued until it completes.  Counts and types change by
 * compare-and-swap only.  Every ROUND operations all threads meet at a
 * barrier, drop their transient references, and one thread runs pv_audit()
 * and frames_check() on the quiescent domain; once more at the end.
 * Suites unit and threads: it runs under ASan and under TSan.  A second
 * case replays, step by step, an interleaving that leaves a table partial
 * with nobody working on it (a legal quiescent state the model accounts
 * for).  A third case switches the XSA-401 ordering off and must see the
 * race.
 */
#include <errno.h>
#include <inttypes.h>
#include <time.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "frame/frame.h"
#include "pv/pv.h"
#include "testlib.h"

#define NTHREADS 4
#define ROUND 250

enum { P, A0, A1, B0, B1, C0, C1, C2, C3, D0, NR_SHARED = D0 + 8 };

struct ctx {
    struct frames f;
    struct pv_domain d;
    struct pv_vcpu v[NTHREADS];
    mfn_t fr[NR_SHARED];
    pthread_barrier_t bar;
    uint64_t seed, rounds;
    bool stop_at_failure;
    _Atomic uint64_t ops, preempted, refused, audits, pfinfo_checks, failures;
    /* model checks that found a shared table left partial */
    _Atomic uint64_t partial_checks;
    /* audits that found a vCPU with a writable view of a page table */
    _Atomic uint64_t stale_writable;
    char first[256];
    pthread_mutex_t first_lock;
};

struct worker {
    struct ctx *c;
    unsigned id;
};

static void note_fail(struct ctx *c, const char *what)
{
    pthread_mutex_lock(&c->first_lock);
    if (!c->failures++)
        snprintf(c->first, sizeof(c->first), "%s", what);
    pthread_mutex_unlock(&c->first_lock);
}

/* The index in fr[] of an mfn, or NR_SHARED. */
static unsigned shared_index(const struct ctx *c, uint64_t m)
{
    for (unsigned i = 0; i < NR_SHARED; i++)
        if (mfn_x(c->fr[i]) == m)
            return i;
    return NR_SHARED;
}

static void model_mark(struct ctx *c, unsigned t, unsigned lvl,
                       unsigned level[NR_SHARED]);

/*
 * The tables that entries [0, n) of table t (level lvl > 1) hold: each
 * present one is a table of level lvl - 1.
 */
static void model_mark_children(struct ctx *c, unsigned t, unsigned lvl,
                                unsigned n, unsigned level[NR_SHARED])
{
    const uint64_t *pt = frames_ptr(&c->f, c->fr[t]);

    for (unsigned e = 0; e < n && e < PT_ENTRIES; e++) {
        unsigned k;

        if (!(pt[e] & PTE_P) || (lvl == 4 && e >= PV_HV_L4_FIRST &&
                                 e < PV_HV_L4_FIRST + PV_HV_L4_NR))
            continue;
        k = shared_index(c, (pt[e] & PTE_ADDR_MASK) >> PAGE_SHIFT);
        if (k < NR_SHARED)
            model_mark(c, k, lvl - 1, level);
    }
}

/* Mark t as a table of level lvl and, below L1, every present child. */
static void model_mark(struct ctx *c, unsigned t, unsigned lvl,
                       unsigned level[NR_SHARED])
{
    if (level[t] == lvl)
        return;
    if (level[t]) {
        char msg[128];

        snprintf(msg, sizeof(msg),
                 "model: shared frame %u is reachable as an L%u and an L%u", t,
                 level[t], lvl);
        note_fail(c, msg);
    }
    level[t] = lvl;
    if (lvl > 1) /* an L1's entries map data: no type */
        model_mark_children(c, t, lvl, PT_ENTRIES, level);
}

/*
 * At a quiescent point: the page-frame info query against a model of the
 * types.  The model reads the tables in the pool: every table reachable
 * through present entries from the pinned L4 P, from any other pinned
 * table, or from the entries below the progress point of a table left
 * partial, is a table of its depth's level; every other shared frame is no
 * table (Xen's getpageframeinfo3 encoding, P6), partial ones included.
 * The pin bit, the partial flag, the level and the progress point come
 * from the frame table, which pv_audit() checks against the tables.
 *
 * A table left partial is a legal resting state (docs/frame.md): a call
 * preempted while validating a child (an mmu_update of an entry of a B
 * pinned as an L3, validating a C as an L2) is re-issued, but meanwhile
 * another vCPU unpinned the parent; the re-issue finds no page table to
 * update and completes without resuming the child.  Nobody works on the
 * child then, and its entries below nr_validated keep their targets
 * validated.  test_abandoned_partial replays that interleaving.
 */
static void model_check_pfinfo(struct ctx *c)
{
    unsigned level[NR_SHARED] = {0};
    uint64_t arr[NR_SHARED], want[NR_SHARED];
    char msg[256];
    bool partial = false;

    model_mark(c, P, 4, level);
    for (unsigned i = 0; i < NR_SHARED; i++) {
        uint64_t tw = frame_type_word(&c->f, c->fr[i]);

        if ((tw & FRAME_TYPE_PINNED) && frame_type_level(tw))
            model_mark(c, i, frame_type_level(tw), level);
    }
    for (unsigned i = 0; i < NR_SHARED; i++) {
        uint64_t tw = frame_type_word(&c->f, c->fr[i]);

        if (!(tw & FRAME_TYPE_PARTIAL))
            continue;
        partial = true;
        if (frame_type_level(tw) > 1)
            model_mark_children(c, i, frame_type_level(tw),
                                frames_get_frame(&c->f, c->fr[i])->nr_validated,
                                level);
    }
    for (unsigned i = 0; i < NR_SHARED; i++) {
        uint64_t tw = frame_type_word(&c->f, c->fr[i]);

        arr[i] = mfn_x(c->fr[i]);
        want[i] = (uint64_t)level[i] << PV_PFINFO_LTAB_SHIFT;
        if (level[i] && (tw & FRAME_TYPE_PINNED))
            want[i] |= PV_PFINFO_LPINTAB;
    }
    c->pfinfo_checks++;
    if (partial)
        c->partial_checks++;
    if (pv_pageframe_info(&c->d, arr, NR_SHARED) != 0) {
        note_fail(c, "model: pageframe info failed");
        return;
    }
    for (unsigned i = 0; i < NR_SHARED; i++) {
        if ((arr[i] & PV_PFINFO_LTAB_MASK) == want[i])
            continue;
        snprintf(msg, sizeof(msg),
                 "model: pageframe info of shared frame %u (mfn %#" PRIx64
                 ") is %#" PRIx64 ", model %#" PRIx64 " (type word %#" PRIx64
                 ")",
                 i, mfn_x(c->fr[i]), arr[i] & PV_PFINFO_LTAB_MASK, want[i],
                 frame_type_word(&c->f, c->fr[i]));
        note_fail(c, msg);
    }
}

static void audit(struct ctx *c)
{
    struct pv_audit_report rep;
    char msg[256];

    model_check_pfinfo(c);
    c->audits++;
    if (pv_audit(&c->d, &rep) != 0) {
        if (strstr(rep.first, "writable translation of a page table"))
            c->stale_writable++;
        snprintf(msg, sizeof(msg),
                 "pv_audit: %" PRIu64 " errors, first at %#" PRIx64 ": %.160s",
                 rep.errors, mfn_x(rep.first_mfn), rep.first);
        note_fail(c, msg);
    }
    if (frames_check(&c->f) != 0)
        note_fail(c, "frames_check failed");
}

static uint64_t pte(struct ctx *c, unsigned i, uint64_t flags)
{
    return (mfn_x(c->fr[i]) << PAGE_SHIFT) | flags;
}

/*
 * Issue one mmu_update (u) or mmuext_op (op) until it completes, arming
 * the preemption hook at random before each issue.
 */
static int issue(struct ctx *c, struct pv_vcpu *v, uint64_t *rng,
                 const struct mmu_update *u, const struct mmuext_op *op)
{
    uint32_t done = 0;
    int rc;

    do {
        pv_vcpu_set_preempt(
            v, test_rand_below(rng, 3) ? 0 : 1 + test_rand_below(rng, 600),
            true);
        rc = u ? pv_mmu_update(v, u, 1, &done, DOMID_SELF)
               : pv_mmuext_op(v, op, 1, &done, DOMID_SELF);
        if (rc == -ERESTART)
            c->preempted++;
    } while (rc == -ERESTART);
    pv_vcpu_set_preempt(v, 0, false);
    return rc;
}

static int ext(struct ctx *c, struct pv_vcpu *v, uint64_t *rng, unsigned cmd,
               mfn_t m)
{
    struct mmuext_op op = {.cmd = cmd, .arg1.mfn = mfn_x(m)};

    return issue(c, v, rng, NULL, &op);
}

static int mmu(struct ctx *c, struct pv_vcpu *v, uint64_t *rng, unsigned t,
               unsigned idx, uint64_t val)
{
    struct mmu_update u = {.ptr = frames_offset(c->fr[t]) + idx * 8ULL,
                           .val = val};

    return issue(c, v, rng, &u, NULL);
}

static void one_op(struct ctx *c, struct pv_vcpu *v, uint64_t *rng)
{
    unsigned r = (unsigned)test_rand_below(rng, 100);
    unsigned i = (unsigned)test_rand_below(rng, NR_SHARED);
    mfn_t m = c->fr[i];
    int rc = 0;

    if (c->stop_at_failure) {
        /*
         * Focus on the XSA-401 window: writes through writable mappings of
         * two data frames that no table maps race pins of the same frames
         * as L1s.
         */
        m = c->fr[D0 + 4 + (r & 1)];
        if (r < 60) {
            if (frame_get_and_type(&c->f, m, c->d.id, FRAME_TYPE_WRITABLE, 0,
                                   NULL, NULL) == 0) {
                /* -EBUSY is fine: a pin may win the race. */
                if (pv_vcpu_tlb_fill(v, m) != 0)
                    c->refused++;
                if (frame_put_and_type(&c->f, m, FRAME_TYPE_WRITABLE, 0, NULL,
                                       NULL) != 0)
                    note_fail(c, "writable put refused");
            }
        } else {
            if (ext(c, v, rng,
                    r < 80 ? MMUEXT_PIN_L1_TABLE : MMUEXT_UNPIN_TABLE, m))
                c->refused++;
        }
        c->ops++;
        return;
    }

    if (r < 15) {
        if (frame_get(&c->f, m, c->d.id) == 0)
            frame_put(&c->f, m);
        else
            note_fail(c, "general reference on a shared frame refused");
    } else if (r < 30) {
        rc = frame_get_and_type(&c->f, m, c->d.id, FRAME_TYPE_WRITABLE, 0, NULL,
                                NULL);
        if (rc == 0) {
            /* The guest writes through its mapping: a TLB entry. */
            if (pv_vcpu_tlb_fill(v, m) != 0)
                note_fail(c, "TLB fill refused under a writable reference");
            if (frame_put_and_type(&c->f, m, FRAME_TYPE_WRITABLE, 0, NULL,
                                   NULL) != 0)
                note_fail(c, "writable put refused");
        }
    } else if (r < 55) {
        static const unsigned lvl[] = {[A0] = 3, [A1] = 3, [B0] = 2, [B1] = 2,
                                       [C0] = 1, [C1] = 1, [C2] = 1, [C3] = 1};
        unsigned t = A0 + (unsigned)test_rand_below(rng, C3 - A0 + 1);
        unsigned l = lvl[t];

        /* Sometimes the wrong level, or a data frame as an L1. */
        if (test_rand_below(rng, 8) == 0)
            l = 1 + (unsigned)test_rand_below(rng, 3);
        if (test_rand_below(rng, 8) == 0)
            t = D0 + (unsigned)test_rand_below(rng, 8);
        if (test_rand_below(rng, 2))
            rc = ext(c, v, rng, MMUEXT_PIN_L1_TABLE + l - 1, c->fr[t]);
        else
            rc = ext(c, v, rng, MMUEXT_UNPIN_TABLE, c->fr[t]);
    } else if (r < 90) {
        unsigned k = (unsigned)test_rand_below(rng, 4), idx = k & 1;
        uint64_t val = 0;

        switch (k) {
        case 0: /* P[idx] -> A */
            if (test_rand_below(rng, 3))
                val = pte(c, A0 + (unsigned)test_rand_below(rng, 2),
                          PTE_P | PTE_RW | PTE_US);
            rc = mmu(c, v, rng, P, idx, val);
            break;
        case 1: /* A[idx] -> B */
            if (test_rand_below(rng, 3))
                val = pte(c, B0 + (unsigned)test_rand_below(rng, 2),
                          PTE_P | PTE_RW | PTE_US);
            rc = mmu(c, v, rng, A0 + (unsigned)test_rand_below(rng, 2), idx,
                     val);
            break;
        case 2: /* B[idx] -> C */
            if (test_rand_below(rng, 3))
                val = pte(c, C0 + (unsigned)test_rand_below(rng, 4),
                          PTE_P | PTE_RW | PTE_US);
            rc = mmu(c, v, rng, B0 + (unsigned)test_rand_below(rng, 2), idx,
                     val);
            break;
        default: /* C[idx] -> D, RW or RO; sometimes a C (an L1!) RW */
            if (test_rand_below(rng, 4)) {
                unsigned t = test_rand_below(rng, 6)
                                 ? D0 + (unsigned)test_rand_below(rng, 8)
                                 : C0 + (unsigned)test_rand_below(rng, 4);

                val = pte(c, t,
                          PTE_P | PTE_US |
                              (test_rand_below(rng, 2) ? PTE_RW : 0));
            }
            rc = mmu(c, v, rng, C0 + (unsigned)test_rand_below(rng, 4), idx,
                     val);
            break;
        }
    } else {
        uint64_t arr[4];

        for (unsigned k = 0; k < 4; k++)
            arr[k] = mfn_x(c->fr[test_rand_below(rng, NR_SHARED)]);
        if (pv_pageframe_info(&c->d, arr, 4) != 0)
            note_fail(c, "pageframe info failed");
    }
    if (rc)
        c->refused++;
    c->ops++;
}

static void *worker_main(void *arg)
{
    struct worker *wk = arg;
    struct ctx *c = wk->c;
    struct pv_vcpu *v = &c->v[wk->id];
    uint64_t rng = c->seed * 0x9E3779B97F4A7C15ULL + wk->id + 1;

    for (uint64_t round = 0; round < c->rounds; round++) {
        /* Short rounds in the XSA-401 case: a stale entry is short-lived. */
        for (unsigned i = 0; i < (c->stop_at_failure ? 8 : ROUND); i++)
            one_op(c, v, &rng);
        /* Quiescent barrier: every call has completed. */
        if (pthread_barrier_wait(&c->bar) == PTHREAD_BARRIER_SERIAL_THREAD)
            audit(c);
        pthread_barrier_wait(&c->bar);
        if (c->stop_at_failure && c->failures)
            break;
    }
    return NULL;
}

static void populate(struct ctx *c)
{
    uint64_t ext_[NR_SHARED];
    struct pv_reservation r = {
        .extent_start = ext_, .nr_extents = NR_SHARED, .domid = DOMID_SELF};
    unsigned long cmd = XENMEM_populate_physmap;
    long n;

    for (unsigned i = 0; i < NR_SHARED; i++)
        ext_[i] = i;
    do {
        n = pv_memory_op(&c->v[0], &cmd, &r);
    } while (n == -ERESTART);
    assert_int_equal(n, NR_SHARED);
    for (unsigned i = 0; i < NR_SHARED; i++)
        c->fr[i] = _mfn(ext_[i]);
}

/*
 * The shared tree of every run: P -> A0 -> B0 -> C0, C1; C0 -> D0..D3
 * (writable); P pinned as the L4.  Audited once before anything races.
 */
static struct ctx *ctx_new(void)
{
    struct ctx *c = calloc(1, sizeof(*c));
    uint64_t *pt, rng = 1;
    unsigned i;

    assert_non_null(c);
    assert_int_equal(frames_init(&c->f, 64), 0);
    assert_int_equal(frames_domain_add(&c->f, 1, 48), 0);
    assert_int_equal(pv_domain_init(&c->d, &c->f, 1), 0);
    for (i = 0; i < NTHREADS; i++)
        assert_int_equal(pv_vcpu_init(&c->v[i], &c->d), 0);
    pthread_mutex_init(&c->first_lock, NULL);
    populate(c);
    /* The guest fills its tables before pinning the root. */
    pt = frames_ptr(&c->f, c->fr[P]);
    pt[0] = pte(c, A0, PTE_P | PTE_RW | PTE_US);
    pt = frames_ptr(&c->f, c->fr[A0]);
    pt[0] = pte(c, B0, PTE_P | PTE_RW | PTE_US);
    pt = frames_ptr(&c->f, c->fr[B0]);
    pt[0] = pte(c, C0, PTE_P | PTE_RW | PTE_US);
    pt[1] = pte(c, C1, PTE_P | PTE_RW | PTE_US);
    pt = frames_ptr(&c->f, c->fr[C0]);
    for (i = 0; i < 4; i++)
        pt[i] = pte(c, D0 + i, PTE_P | PTE_RW | PTE_US);
    assert_int_equal(ext(c, &c->v[0], &rng, MMUEXT_PIN_L4_TABLE, c->fr[P]), 0);
    audit(c);
    return c;
}

/* Tear the domain down; with check, it must leave no frame behind. */
static void ctx_free(struct ctx *c, bool check)
{
    int rc;

    c->d.rules.safety_before_commit = false;
    do {
        rc = pv_domain_relinquish(&c->d);
    } while (rc == -ERESTART);
    if (check) {
        assert_int_equal(rc, 0);
        assert_int_equal(frames_check(&c->f), 0);
    }
    pv_domain_fini(&c->d);
    if (check)
        assert_int_equal(frames_domain_remove(&c->f, 1), 0);
    pthread_mutex_destroy(&c->first_lock);
    frames_fini(&c->f);
    free(c);
}

/*
 * One run: set up the shared tree, race the threads for rounds, audit.
 * With xsa401_off the type change runs its safety action (the flush of
 * writable translations) before its type reference commits, and a run
 * stops at the first audit failure.  Returns the failures (audit and
 * model); with xsa401_off, the audits that found a vCPU keeping a writable
 * translation of a page table (the failure that ordering prevents).
 */
static uint64_t run(uint64_t seed, uint64_t rounds, bool xsa401_off)
{
    struct ctx *c = ctx_new();
    pthread_t th[NTHREADS];
    struct worker wk[NTHREADS];
    uint64_t failures;
    unsigned i;

    c->d.rules.safety_before_commit = xsa401_off;
    c->stop_at_failure = xsa401_off;
    c->seed = seed;
    c->rounds = rounds;
    assert_int_equal(pthread_barrier_init(&c->bar, NULL, NTHREADS), 0);
    for (i = 0; i < NTHREADS; i++) {
        wk[i] = (struct worker){c, i};
        assert_int_equal(pthread_create(&th[i], NULL, worker_main, &wk[i]), 0);
    }
    for (i = 0; i < NTHREADS; i++)
        assert_int_equal(pthread_join(th[i], NULL), 0);
    pthread_barrier_destroy(&c->bar);
    audit(c);
    test_note("%s%u threads, seed %" PRIu64 ": %" PRIu64 " operations (%" PRIu64
              " refused by the rules, %" PRIu64 " preempted and "
              "re-issued), %" PRIu64 " audits and %" PRIu64 " page-frame "
              "info checks against the model at quiescent barriers (%" PRIu64
              " with a table left partial), %" PRIu64 " failures",
              xsa401_off ? "XSA-401 order off: " : "", NTHREADS, seed,
              (uint64_t)c->ops, (uint64_t)c->refused, (uint64_t)c->preempted,
              (uint64_t)c->audits, (uint64_t)c->pfinfo_checks,
              (uint64_t)c->partial_checks, (uint64_t)c->failures);
    if (c->failures)
        test_note("first failure: %s", c->first);
    /* XSA-401 off: what counts is the audit's own finding */
    failures = xsa401_off ? c->stale_writable : c->failures;
    ctx_free(c, !xsa401_off);
    return failures;
}

static void test_threads(void **state)
{
    (void)state;
    assert_int_equal(run(test_seed(0x7453), test_scale(400), false), 0);
}

/*
 * The interleaving that leaves a table partial with nobody working on it,
 * replayed step by step on two vCPUs (the threads produce it about once
 * in 15 runs of test_threads under TSan): the model must account for it.
 *   v0: pin B1 as an L3 (the wrong level: its entries then map L2s);
 *   v0: mmu_update B1[0] = C3, preempted while validating C3 as an L2,
 *       after its entry 0 (D4 as an L1): -ERESTART, C3 partial;
 *   v1: unpin B1 (it held nothing yet: no page table any more);
 *   v0: re-issues the update: B1 is writable now, a plain write, done.
 * C3 stays partial; D4 is a validated L1 held by C3's entry 0, and the
 * page-frame info says so.  The domain is quiescent: audit and model.
 */
static void test_abandoned_partial(void **state)
{
    struct ctx *c = ctx_new();
    struct mmu_update u = {.ptr = frames_offset(c->fr[B1]),
                           .val = pte(c, C3, PTE_P | PTE_RW | PTE_US)};
    struct mmuext_op pin = {.cmd = MMUEXT_PIN_L3_TABLE,
                            .arg1.mfn = mfn_x(c->fr[B1])};
    struct mmuext_op unpin = {.cmd = MMUEXT_UNPIN_TABLE,
                              .arg1.mfn = mfn_x(c->fr[B1])};
    uint64_t *c3 = frames_ptr(&c->f, c->fr[C3]), arr[3];
    uint32_t done = 0;

    (void)state;
    /* C3 is no table yet: the guest writes its entries directly. */
    c3[0] = pte(c, D0 + 4, PTE_P | PTE_RW | PTE_US);
    c3[1] = pte(c, D0 + 5, PTE_P | PTE_RW | PTE_US);
    assert_int_equal(pv_mmuext_op(&c->v[0], &pin, 1, &done, DOMID_SELF), 0);
    done = 0;
    pv_vcpu_set_preempt(&c->v[0], 1, false);
    assert_int_equal(pv_mmu_update(&c->v[0], &u, 1, &done, DOMID_SELF),
                     -ERESTART);
    pv_vcpu_set_preempt(&c->v[0], 0, false);
    assert_true(frame_type_word(&c->f, c->fr[C3]) & FRAME_TYPE_PARTIAL);
    done = 0;
    assert_int_equal(pv_mmuext_op(&c->v[1], &unpin, 1, &done, DOMID_SELF), 0);
    done = 0;
    assert_int_equal(pv_mmu_update(&c->v[0], &u, 1, &done, DOMID_SELF), 0);
    assert_int_equal(done, 1);
    assert_true(frame_type_word(&c->f, c->fr[C3]) & FRAME_TYPE_PARTIAL);

    arr[0] = mfn_x(c->fr[C3]);
    arr[1] = mfn_x(c->fr[D0 + 4]);
    arr[2] = mfn_x(c->fr[D0 + 5]);
    assert_int_equal(pv_pageframe_info(&c->d, arr, 3), 0);
    test_note("left partial: C3 (type word %#" PRIx64 ", progress %u); "
              "page-frame info C3 %#" PRIx64 ", D4 %#" PRIx64 ", D5 %#" PRIx64,
              frame_type_word(&c->f, c->fr[C3]),
              frames_get_frame(&c->f, c->fr[C3])->nr_validated, arr[0], arr[1],
              arr[2]);
    assert_int_equal(arr[0], PV_PFINFO_NOTAB);
    assert_int_equal(arr[1], PV_PFINFO_L1TAB);
    assert_int_equal(arr[2], PV_PFINFO_NOTAB);
    audit(c);
    if (c->failures)
        test_note("first failure: %s", c->first);
    assert_int_equal(c->failures, 0);
    assert_int_equal(c->partial_checks, 1);
    /* Teardown cleans the partial table up. */
    ctx_free(c, true);
}

/*
 * The race the XSA-401 ordering closes is real here: with the test-only
 * switch on, some run must leave a vCPU a writable translation of a page
 * table.  Under TSan the threads interleave differently and more slowly,
 * so only the ASan build asserts it.
 */
static void test_threads_catch_xsa401(void **state)
{
    uint64_t found = 0;
    unsigned attempt;
    struct timespec t0, t;

    (void)state;
#if defined(__SANITIZE_THREAD__)
    test_note("the race is timing-dependent: asserted in the ASan build only");
    skip(); /* TAP "ok N # SKIP": a skip, never a pass */
#endif
    /*
     * One run takes a few tens of milliseconds.  On a loaded machine the
     * threads rarely run at the same time, so keep trying for up to a
     * minute of wall time before calling the race unreproduced.
     */
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (attempt = 0; !found;) {
        found = run(0x401 + attempt++, 5000, true);
        clock_gettime(CLOCK_MONOTONIC, &t);
        if (attempt >= 20 && t.tv_sec - t0.tv_sec >= 60)
            break;
    }
    test_note("XSA-401 ordering switched off: %s after %u runs",
              found ? "violation found" : "NOTHING found", attempt);
    assert_true(found > 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_threads),
        cmocka_unit_test(test_abandoned_partial),
        cmocka_unit_test(test_threads_catch_xsa401),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
