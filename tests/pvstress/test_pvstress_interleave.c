/*
 * Systematic interleavings of resumable hypercalls.
 *
 * A scenario is an initial state (a 2..4-level tree, some pins) and, per
 * vCPU (2 or 3), a list of calls.  A schedule says, step by step, which
 * vCPU issues (or re-issues) its call next and whether the preemption hook
 * stops that call, and after how many preemption checks.  The explorer
 * enumerates EVERY schedule up to a preemption bound by depth-first search
 * with replay: each schedule runs from a fresh pool.
 *
 * Preemption points: a step first runs unpreempted with the hook counting
 * its checks (N).  Its alternatives preempt at every k-th check (a call
 * that was preempted and drains its deferred put before returning is
 * preempted again k checks later) for k in {1, 2, N-1, 511j, 511j+1}: a
 * table walk makes one check per entry, and every scenario keeps its
 * entries in slots 0..2, so these land just before and after the present
 * entries of each table in both directions (validation walks up from slot
 * 0, devalidation down from slot 511).
 *
 * After every step: frames_check() and pv_audit(); at quiescent points the
 * reference model (pvworld.h); at the end every call is completed and all
 * of it is checked again.  Each scenario then runs with the test-only rule
 * switch that its sequence is about turned off, and the explorer must find
 * a schedule that breaks an invariant: otherwise the test fails.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pvworld.h"
#include "testlib.h"

#define MAX_FR 16
#define MAX_OPS 4
#define MAX_DEPTH 256
#define MAX_CAND 16

enum rule { RULE_NONE, RULE_PARTIAL_REF, RULE_CLEANUP_PUT, RULE_DEFERRED };

struct scenario {
    const char *name;
    unsigned nr_vcpus;
    void (*setup)(struct world *w, mfn_t *fr);
    /* Build call j of vCPU v; false when v has no more calls. */
    bool (*op)(struct call *c, const mfn_t *fr, unsigned v, unsigned j);
    enum rule rule; /* the rule this scenario guards */
    unsigned bound; /* preemption bound */
};

/* ------------------------------------------------------------ helpers */

static void populate(struct world *w, mfn_t *fr, unsigned n)
{
    for (unsigned i = 0; i < n; i += W_MAX_BATCH) {
        struct call *c = world_call(w, 0, 0);
        unsigned k, m = MIN(W_MAX_BATCH, n - i);

        for (k = 0; k < m; k++)
            call_mem(c, XENMEM_populate_physmap, 0, i + k);
        if (world_run(w, 0, 0) != 0)
            world_fail(w, "setup: populate failed");
        for (k = 0; k < m; k++)
            fr[i + k] = _mfn(c->extents[k]);
    }
}

/* The guest fills a table it has not pinned yet: a plain store. */
static void set_entry(struct world *w, mfn_t table, unsigned i, mfn_t target,
                      uint64_t flags)
{
    uint64_t *pt = frames_ptr(&w->f, table);

    pt[i] = (mfn_x(target) << PAGE_SHIFT) | flags;
}

static void setup_run(struct world *w, unsigned cmd, mfn_t m)
{
    call_ext(world_call(w, 0, 0), cmd, m);
    if (world_run(w, 0, 0) != 0)
        world_fail(w, "setup: mmuext %u on %#" PRIx64 " failed", cmd, mfn_x(m));
}

#define PRW (PTE_P | PTE_RW | PTE_US)
#define PRO (PTE_P | PTE_US)

/* Frame names of the three-level scenarios. */
enum { P, A, B0, B, C0, C1, C2, C3, D, Q, NR_FR3 };

/*
 * L4 P (pinned, empty), L3 A (pinned): A[0] -> L2 B0 -> L1 C3,
 * A[1] -> L2 B -> L1s C0, C1, C2; L3 D (pinned, empty).  Xen's XSA-299
 * write-ups use exactly this shape (A[x] -> B with x = 1).
 */
static void setup_tree(struct world *w, mfn_t *fr)
{
    populate(w, fr, NR_FR3);
    set_entry(w, fr[A], 0, fr[B0], PRW);
    set_entry(w, fr[A], 1, fr[B], PRW);
    set_entry(w, fr[B0], 0, fr[C3], PRW);
    set_entry(w, fr[B], 0, fr[C0], PRW);
    set_entry(w, fr[B], 1, fr[C1], PRW);
    set_entry(w, fr[B], 2, fr[C2], PRW);
    setup_run(w, MMUEXT_PIN_L4_TABLE, fr[P]);
    setup_run(w, MMUEXT_PIN_L3_TABLE, fr[A]);
    setup_run(w, MMUEXT_PIN_L3_TABLE, fr[D]);
}

/*
 * XSA-299, first sequence: V0 unpins A (preempted below x: B demoted, A
 * partial); V1 hooks A into P, resuming A's promotion, preempted inside B
 * (A[1] partial); V2 validates B through D, drops that again and balloons
 * B out.  If a partially promoted entry held no general reference, B would
 * be freed while A[1] still points at it.
 */
static bool op_freed_child(struct call *c, const mfn_t *fr, unsigned v,
                           unsigned j)
{
    switch (v * MAX_OPS + j) {
    case 0 * MAX_OPS + 0:
        call_ext(c, MMUEXT_UNPIN_TABLE, fr[A]);
        return true;
    case 1 * MAX_OPS + 0:
        call_mmu(c, fr[P], 0, MMU_NORMAL_PT_UPDATE,
                 (mfn_x(fr[A]) << PAGE_SHIFT) | PRW);
        return true;
    case 2 * MAX_OPS + 0:
        call_mmu(c, fr[D], 0, MMU_NORMAL_PT_UPDATE,
                 (mfn_x(fr[B]) << PAGE_SHIFT) | PRW);
        return true;
    case 2 * MAX_OPS + 1:
        call_mmu(c, fr[D], 0, MMU_NORMAL_PT_UPDATE, 0);
        return true;
    case 2 * MAX_OPS + 2:
        call_mem(c, XENMEM_decrease_reservation, 0, mfn_x(fr[B]));
        return true;
    default:
        return false;
    }
}

/*
 * Second sequence: V0 unpins A (B demoted); V1 re-promotes A, preempted
 * inside B; V2 takes a full reference on B from D.  V0's resumed clean-up
 * put must not drop B's only type reference: it must be a no-op because B
 * is no longer partial.
 */
static bool op_cleanup_put(struct call *c, const mfn_t *fr, unsigned v,
                           unsigned j)
{
    if (v == 2 && j == 0) {
        call_mmu(c, fr[D], 0, MMU_NORMAL_PT_UPDATE,
                 (mfn_x(fr[B]) << PAGE_SHIFT) | PRW);
        return true;
    }
    if (v == 2)
        return false;
    return op_freed_child(c, fr, v, j);
}

/*
 * Third sequence: two vCPUs pin the same L2 A whose entry 2 is invalid
 * (PSE).  Both can end up owning A's tear-down as a deferred put while
 * only one reference exists behind it; each must know it owns a clean-up
 * of a partial frame, not a full type reference.  V1 then drops an
 * unrelated base pointer so that it keeps issuing calls.
 */
enum { L2A, L1C0, L1C1, L1C2, NR_FR2 };

static void setup_bad_l2(struct world *w, mfn_t *fr)
{
    populate(w, fr, NR_FR2);
    set_entry(w, fr[L2A], 0, fr[L1C0], PRW);
    set_entry(w, fr[L2A], 1, fr[L1C1], PRW);
    set_entry(w, fr[L2A], 2, fr[L1C2], PRW | PTE_PSE);
}

static bool op_double_deferred(struct call *c, const mfn_t *fr, unsigned v,
                               unsigned j)
{
    if (j == 0) {
        call_ext(c, MMUEXT_PIN_L2_TABLE, fr[L2A]);
        return true;
    }
    if (j == 1) {
        call_ext(c, MMUEXT_PIN_L1_TABLE, fr[L1C0 + v]);
        return true;
    }
    return false;
}

/*
 * A resumed child that turns out invalid: P[0] -> L3 A, A[0] -> L2 B0 ->
 * L1 C3, A[1] is a PSE entry (invalid at L3).  V0 makes P its base
 * pointer (preempted inside A: A partial, P's entry 0 marked partial); V1
 * pins P, resuming P and A, and A fails at entry 1.  P's tear-down then
 * puts its partial entry 0 in clean-up mode on A, which is no longer
 * partial (its failed validation reset it): that put must be a no-op.
 */
static void setup_bad_l3(struct world *w, mfn_t *fr)
{
    populate(w, fr, NR_FR3);
    set_entry(w, fr[P], 0, fr[A], PRW);
    set_entry(w, fr[A], 0, fr[B0], PRW);
    set_entry(w, fr[B0], 0, fr[C3], PRW);
    set_entry(w, fr[A], 1, fr[B], PRW | PTE_PSE);
}

static bool op_bad_l3(struct call *c, const mfn_t *fr, unsigned v, unsigned j)
{
    if (j > 0)
        return false;
    call_ext(c, v == 0 ? MMUEXT_NEW_BASEPTR : MMUEXT_PIN_L4_TABLE, fr[P]);
    return true;
}

/*
 * Pins, base pointers and entry updates on one 4-level tree from two
 * vCPUs: V0 pins P as L4 and unpins it; V1 makes P its base pointer, hooks
 * A in a second slot of P and moves its base to Q.
 */
static void setup_four(struct world *w, mfn_t *fr)
{
    populate(w, fr, NR_FR3);
    set_entry(w, fr[P], 0, fr[A], PRW);
    set_entry(w, fr[A], 0, fr[B0], PRW);
    set_entry(w, fr[B0], 0, fr[C3], PRW);
    set_entry(w, fr[A], 1, fr[B], PRW);
    set_entry(w, fr[B], 0, fr[C0], PRO);
    setup_run(w, MMUEXT_PIN_L3_TABLE, fr[D]);
}

static bool op_four(struct call *c, const mfn_t *fr, unsigned v, unsigned j)
{
    switch (v * MAX_OPS + j) {
    case 0 * MAX_OPS + 0:
        call_ext(c, MMUEXT_PIN_L4_TABLE, fr[P]);
        return true;
    case 0 * MAX_OPS + 1:
        call_ext(c, MMUEXT_UNPIN_TABLE, fr[P]);
        return true;
    case 1 * MAX_OPS + 0:
        call_ext(c, MMUEXT_NEW_BASEPTR, fr[P]);
        return true;
    case 1 * MAX_OPS + 1:
        call_mmu(c, fr[P], 2, MMU_NORMAL_PT_UPDATE,
                 (mfn_x(fr[D]) << PAGE_SHIFT) | PRO);
        return true;
    case 1 * MAX_OPS + 2:
        call_ext(c, MMUEXT_NEW_BASEPTR, fr[Q]);
        return true;
    default:
        return false;
    }
}

/* ------------------------------------------------------------ explorer */

struct explorer {
    const struct scenario *sc;
    bool rule_off;
    bool stop_at_violation;
    /* the decision stack: two decisions per step (vCPU, preemption) */
    unsigned choice[2 * MAX_DEPTH], nopts[2 * MAX_DEPTH];
    uint64_t cand[MAX_DEPTH][MAX_CAND];
    unsigned nd; /* decisions made in the current schedule */
    uint64_t schedules, steps, violations;
    char first[768];
    char trace[2048];
};

static unsigned candidates(uint64_t n, uint64_t *out)
{
    uint64_t c[MAX_CAND * 2];
    unsigned nc = 0, no = 0, i, j;

    c[nc++] = 1;
    c[nc++] = 2;
    if (n > 1)
        c[nc++] = n - 1;
    for (j = 1; j * 511 <= n && nc + 2 < ARRAY_SIZE(c); j++) {
        c[nc++] = j * 511;
        c[nc++] = j * 511 + 1;
    }
    for (i = 0; i < nc; i++) {
        bool dup = false;

        if (c[i] < 1 || c[i] > n)
            continue;
        for (j = 0; j < no; j++)
            dup |= out[j] == c[i];
        if (!dup && no < MAX_CAND)
            out[no++] = c[i];
    }
    return no;
}

/* The next decision: replay the stored one or take option 0. */
static unsigned decide(struct explorer *x, unsigned nopts)
{
    unsigned i = x->nd++;

    x->nopts[i] = nopts;
    return x->choice[i];
}

static void set_rule(struct pv_domain *d, enum rule r)
{
    d->rules.no_partial_ref = r == RULE_PARTIAL_REF;
    d->rules.cleanup_put_always = r == RULE_CLEANUP_PUT;
    d->rules.no_deferred_partial = r == RULE_DEFERRED;
}

/* Run one schedule; returns the number of failures it found. */
static uint64_t run_schedule(struct explorer *x, unsigned prefix)
{
    const struct scenario *sc = x->sc;
    struct world *w = calloc(1, sizeof(*w));
    mfn_t fr[MAX_FR];
    unsigned next[W_MAX_VCPUS] = {0}, preempts = 0, depth = 0, v, i;
    size_t tl = 0;
    uint64_t fails;

    if (!w || world_init(w, 32, 1, sc->nr_vcpus, 24) != 0) {
        free(w);
        return 1;
    }
    sc->setup(w, fr);
    world_check(w);
    if (w->failures)
        snprintf(x->first, sizeof(x->first), "setup: %.500s", w->first_failure);
    if (x->rule_off)
        set_rule(world_pv(w, 0), sc->rule);
    x->nd = 0;
    x->trace[0] = 0;
    for (;;) {
        unsigned runnable[W_MAX_VCPUS], nr = 0, a, b;
        struct call *c;
        int rc;

        for (v = 0; v < sc->nr_vcpus; v++) {
            if (!world_pending(w, 0, v)) {
                c = world_call(w, 0, v);
                if (!sc->op(c, fr, v, next[v]))
                    continue;
                next[v]++;
            }
            runnable[nr++] = v;
        }
        if (!nr || depth >= MAX_DEPTH)
            break;
        a = decide(x, nr);
        v = runnable[a];
        /* The preemption decision: options known once option 0 ran. */
        i = x->nd;
        b = i < prefix ? x->choice[i] : 0;
        x->nd++;
        if (b == 0) {
            rc = world_step(w, 0, v, UINT64_MAX);
            if (i >= prefix)
                x->nopts[i] =
                    1 + (preempts < sc->bound
                             ? candidates(w->last_checks, x->cand[depth])
                             : 0);
        } else {
            rc = world_step(w, 0, v, x->cand[depth][b - 1]);
            if (rc == -ERESTART)
                preempts++;
        }
        if (tl < sizeof(x->trace) - 40)
            tl += (size_t)snprintf(x->trace + tl, sizeof(x->trace) - tl,
                                   " v%u%s", v,
                                   b                 ? ""
                                   : rc == -ERESTART ? "(r)"
                                                     : "");
        if (b && tl < sizeof(x->trace) - 40)
            tl += (size_t)snprintf(x->trace + tl, sizeof(x->trace) - tl,
                                   "/k%" PRIu64 "%s", x->cand[depth][b - 1],
                                   rc == -ERESTART ? "" : "(no-op)");
        x->steps++;
        world_check(w);
        depth++;
    }
    for (v = 0; v < sc->nr_vcpus; v++)
        (void)world_run(w, 0, v);
    world_check(w);
    fails = world_fini(w);
    if (fails && !x->violations++)
        snprintf(x->first, sizeof(x->first), "schedule%.500s: %.200s", x->trace,
                 w->first_failure);
    free(w);
    return fails;
}

/* Depth-first over every schedule; returns the violating schedules. */
static uint64_t explore(struct explorer *x)
{
    unsigned prefix = 0;

    memset(x->choice, 0, sizeof(x->choice));
    for (;;) {
        int i;

        run_schedule(x, prefix);
        x->schedules++;
        if (x->violations && x->stop_at_violation)
            break;
        for (i = (int)x->nd - 1; i >= 0; i--)
            if (x->choice[i] + 1 < x->nopts[i])
                break;
        if (i < 0)
            break;
        x->choice[i]++;
        memset(&x->choice[i + 1], 0,
               sizeof(x->choice[0]) * (2 * MAX_DEPTH - (unsigned)i - 1));
        prefix = (unsigned)i + 1;
    }
    return x->violations;
}

/*
 * Replay one schedule given as text ("v0/k1023 v1/k1 v2 v0"), printing
 * each step and the frames' words: MEMVISOR_SCHEDULE=<text>
 * MEMVISOR_SCENARIO=<name> [MEMVISOR_RULE_OFF=1].  The trace a violation
 * prints is in this format.
 */
static void replay_text(const struct scenario *sc, const char *text,
                        bool rule_off)
{
    struct world *w = calloc(1, sizeof(*w));
    mfn_t fr[MAX_FR];
    unsigned next[W_MAX_VCPUS] = {0};
    const char *p = text;

    assert_non_null(w);
    assert_int_equal(world_init(w, 32, 1, sc->nr_vcpus, 24), 0);
    sc->setup(w, fr);
    if (rule_off)
        set_rule(world_pv(w, 0), sc->rule);
    while (*p) {
        unsigned v;
        unsigned long long k = 0;
        int used = 0, rc;

        while (*p == ' ')
            p++;
        if (sscanf(p, "v%u%n", &v, &used) != 1 || v >= sc->nr_vcpus)
            break;
        p += used;
        if (sscanf(p, "/k%llu%n", &k, &used) == 1)
            p += used;
        while (*p && *p != ' ')
            p++;
        if (!world_pending(w, 0, v) &&
            !sc->op(world_call(w, 0, v), fr, v, next[v]++))
            continue;
        rc = world_step(w, 0, v, k);
        world_check(w);
        test_note("v%u k%llu -> rc %d, failures %" PRIu64, v, k, rc,
                  w->failures);
        for (uint64_t m = 0; m < w->f.nr_frames; m++) {
            const struct frame *pg = frames_get_frame(&w->f, _mfn(m));

            if (frame_owner(&w->f, _mfn(m)) == 1)
                test_note("   mfn %#" PRIx64 ": count %#" PRIx64
                          " type %#" PRIx64 " nr_validated %u flags %u",
                          m, (uint64_t)pg->count_info, (uint64_t)pg->type_info,
                          pg->nr_validated, pg->partial_flags);
        }
    }
    for (unsigned v = 0; v < sc->nr_vcpus; v++)
        (void)world_run(w, 0, v);
    world_check(w);
    world_fini(w);
    test_note("end: %" PRIu64 " failures%s%s", w->failures,
              w->failures ? ": " : "", w->first_failure);
    free(w);
}

static const char *const rule_name[] = {
    [RULE_NONE] = "none",
    [RULE_PARTIAL_REF] = "rules.no_partial_ref (XSA-299 partial reference)",
    [RULE_CLEANUP_PUT] = "rules.cleanup_put_always (no-op clean-up put)",
    [RULE_DEFERRED] = "rules.no_deferred_partial (deferred put mode)",
};

static void run_scenario(const struct scenario *sc)
{
    struct explorer *x = calloc(1, sizeof(*x));

    assert_non_null(x);
    if (getenv("MEMVISOR_SCHEDULE")) {
        const char *name = getenv("MEMVISOR_SCENARIO");

        if (name && !strcmp(name, sc->name))
            replay_text(sc, getenv("MEMVISOR_SCHEDULE"),
                        getenv("MEMVISOR_RULE_OFF") != NULL);
        free(x);
        return;
    }
    x->sc = sc;
    explore(x);
    test_note("%s: %u vCPUs, preemption bound %u: %" PRIu64
              " schedules explored, %" PRIu64 " steps, %" PRIu64
              " violating schedules",
              sc->name, sc->nr_vcpus, sc->bound, x->schedules, x->steps,
              x->violations);
    if (x->violations)
        test_note("%s: first violation: %s", sc->name, x->first);
    assert_int_equal(x->violations, 0);
    if (sc->rule != RULE_NONE) {
        uint64_t schedules;

        memset(x, 0, sizeof(*x));
        x->sc = sc;
        x->rule_off = true;
        x->stop_at_violation = true;
        explore(x);
        schedules = x->schedules;
        test_note("%s with %s switched off: violation found after %" PRIu64
                  " schedules",
                  sc->name, rule_name[sc->rule], schedules);
        if (x->violations)
            test_note("%s: %s", sc->name, x->first);
        assert_true(x->violations > 0);
    }
    free(x);
}

static const struct scenario scenarios[] = {
    {"xsa299-freed-child", 3, setup_tree, op_freed_child, RULE_PARTIAL_REF, 2},
    {"cleanup-put-revalidated", 3, setup_tree, op_cleanup_put, RULE_CLEANUP_PUT,
     2},
    {"double-deferred-put", 2, setup_bad_l2, op_double_deferred, RULE_DEFERRED,
     3},
    {"pin-base-update", 2, setup_four, op_four, RULE_NONE, 2},
    {"resumed-child-invalid", 2, setup_bad_l3, op_bad_l3, RULE_NONE, 3},
};

static void test_freed_child(void **state)
{
    (void)state;
    run_scenario(&scenarios[0]);
}

static void test_cleanup_put(void **state)
{
    (void)state;
    run_scenario(&scenarios[1]);
}

static void test_double_deferred(void **state)
{
    (void)state;
    run_scenario(&scenarios[2]);
}

static void test_pin_base_update(void **state)
{
    (void)state;
    run_scenario(&scenarios[3]);
}

static void test_resumed_child_invalid(void **state)
{
    (void)state;
    run_scenario(&scenarios[4]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_freed_child),
        cmocka_unit_test(test_cleanup_put),
        cmocka_unit_test(test_double_deferred),
        cmocka_unit_test(test_pin_base_update),
        cmocka_unit_test(test_resumed_child_invalid),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
