/*
 * work_flushbench.c - what a type change that needs a cross-vCPU TLB flush
 * costs the guest (bench/pv/bench-flush runs it with 0, 1, 2 and 4 other
 * vCPUs running).
 *
 * vCPU 0, per round, on one frame X of its own: makes X's physmap entry
 * read-only by mmu_update with no flush flag (X's last writable reference
 * goes: the hypervisor stamps it), pins X as an L1 table (writable -> L1:
 * every vCPU not flushed since the stamp must flush before the pin
 * returns), unpins X and makes it writable again.  It times the pin alone,
 * with rdtsc, and prints the median, 10th and 90th percentile in TSC
 * cycles.  Every other vCPU spins in the guest meanwhile (loads only, no
 * hypercall, no exit of its own), so each pin finds it in guest mode and
 * not flushed since: it is kicked, and the pin waits for it.
 *
 * Options: rounds=<n> (default 1000, at most FB_MAX_ROUNDS).
 * Output: `flushbench: others=<n> rounds=<n> pin-cycles median=<c> p10=<c>
 * p90=<c> unpin-cycles median=<c>`.
 */
#include "guest.h"

#define FB_MAX_ROUNDS 4096

static const char *const flushbench_counters[] = {"rounds", "spins", NULL};

static uint64_t pin_cycles[FB_MAX_ROUNDS], unpin_cycles[FB_MAX_ROUNDS];
static volatile uint32_t fb_stop;

static void sort(uint64_t *a, uint64_t n)
{
    for (uint64_t i = 1; i < n; i++) {
        uint64_t x = a[i], j = i;

        for (; j > 0 && a[j - 1] > x; j--)
            a[j] = a[j - 1];
        a[j] = x;
    }
}

static long set_physmap_rw(struct kernel *k, uint64_t pfn, bool rw)
{
    uint64_t pte = pte_make(k->p2m[pfn], PTE_DATA);

    if (!rw)
        pte &= ~_PAGE_RW;
    /* No flush flag: the flush under test is the one the pin causes. */
    return mm_set_entry(k, k->l1_mfn[pfn >> 9], k->l1_va[pfn >> 9],
                        (unsigned)(pfn & 511), pte, PTE_BY_MMU_UPDATE);
}

static int flushbench_run(struct kernel *k, struct vcpu *v)
{
    uint64_t rounds = cmdline_num(k, "rounds", 1000), pfn, mfn, r;
    long rc;

    if (rounds > FB_MAX_ROUNDS)
        rounds = FB_MAX_ROUNDS;
    if (v->id != 0) {
        barrier_wait(k);
        while (!__atomic_load_n(&fb_stop, __ATOMIC_ACQUIRE))
            v->c[1]++;
        barrier_wait(k);
        return 0;
    }
    fb_stop = 0;
    pfn = mm_alloc(k);
    if (pfn == INVALID_P2M) {
        vfail(v, "flushbench", "no free page");
        barrier_wait(k);
        fb_stop = 1;
        barrier_wait(k);
        return 0;
    }
    mfn = k->p2m[pfn];
    barrier_wait(k); /* the others spin from here */
    for (r = 0; r < rounds; r++) {
        uint64_t t0, t1, t2;

        if ((rc = set_physmap_rw(k, pfn, false)) != 0) {
            vfail(v, "flushbench", "read-only map: %ld", rc);
            break;
        }
        t0 = rdtsc();
        rc = mm_pin(mfn, 1);
        t1 = rdtsc();
        if (rc != 0) {
            vfail(v, "flushbench", "pin: %ld", rc);
            break;
        }
        rc = mm_unpin(mfn);
        t2 = rdtsc();
        if (rc != 0) {
            vfail(v, "flushbench", "unpin: %ld", rc);
            break;
        }
        if ((rc = set_physmap_rw(k, pfn, true)) != 0) {
            vfail(v, "flushbench", "writable map: %ld", rc);
            break;
        }
        pin_cycles[r] = t1 - t0;
        unpin_cycles[r] = t2 - t1;
        v->c[0]++;
    }
    __atomic_store_n(&fb_stop, 1, __ATOMIC_RELEASE);
    barrier_wait(k);
    if (r == rounds && rounds) {
        sort(pin_cycles, rounds);
        sort(unpin_cycles, rounds);
        kprintf(k,
                "flushbench: others=%u rounds=%lu pin-cycles median=%lu "
                "p10=%lu p90=%lu unpin-cycles median=%lu\n",
                k->nr_vcpus - 1, rounds, pin_cycles[rounds / 2],
                pin_cycles[rounds / 10], pin_cycles[rounds * 9 / 10],
                unpin_cycles[rounds / 2]);
    }
    mm_free(k, pfn);
    return 0;
}

const struct workload work_flushbench = {
    .name = "flushbench",
    .run = flushbench_run,
    .counters = flushbench_counters,
};
