/*
 * work_balloon.c - balloon churn.  Each vCPU holds a set of checked pages;
 * every round it picks some, unmaps them (by the three entry methods in
 * turn), gives their frames back (decrease_reservation), checks that the
 * pfns are gone (a read faults, giving the same frames back again is
 * refused), then takes frames back: populate_physmap on the same pfns, or
 * increase_reservation plus MMU_MACHPHYS_UPDATE; maps them, checks they come
 * back scrubbed (all zero), and writes them again.  The reservation
 * (XENMEM_current_reservation) must be the same after every round.
 *
 * Options: pages=<per vCPU> (default 256), rounds=<n> (default 8),
 * batch=<max pages per round> (default 32).
 */
#include "guest.h"

enum {
    B_ROUNDS,
    B_OUT,
    B_POPULATED,
    B_INCREASED,
    B_SCRUBBED,
    B_GONE_FAULTS,
    B_DOUBLE_REFUSED,
    B_REMAP_REFUSED,
    B_VERIFIED,
};
static const char *const balloon_counters[] = {
    "rounds",      "out",         "in-populate",         "in-increase",
    "scrubbed-ok", "gone-faults", "double-free-refused", "remap-refused",
    "verified",    NULL};

#define MAX_BATCH 64

static long reservation(struct kernel *k, unsigned cmd, uint64_t *extents,
                        uint64_t n)
{
    (void)k;
    struct xen_memory_reservation r = {
        .extent_start = (uint64_t)(uintptr_t)extents,
        .nr_extents = n,
        .extent_order = 0,
        .domid = DOMID_SELF,
    };
    return hc_memory_op(cmd, &r);
}

static long current_reservation(void)
{
    uint16_t dom = DOMID_SELF;
    return hc_memory_op(XENMEM_current_reservation, &dom);
}

static int balloon_run(struct kernel *k, struct vcpu *v)
{
    uint64_t want = cmdline_num(k, "pages", 256);
    uint64_t rounds = cmdline_num(k, "rounds", 8);
    uint64_t batch_max = cmdline_num(k, "batch", 32);
    if (batch_max > MAX_BATCH)
        batch_max = MAX_BATCH;
    if (batch_max == 0)
        batch_max = 1;
    uint64_t n = work_alloc_pages(k, v, want);
    uint64_t *pfns = work_pfns[v->id];
    unsigned method = v->id % PTE_METHODS;

    for (uint64_t i = 0; i < n; i++)
        check_fill(mm_va(pfns[i]), pfns[i], 0, 0x80 + v->id);
    if (n < 2) {
        vfail(v, "balloon", "no pages");
        goto out;
    }
    long resv0 = current_reservation();

    for (uint64_t round = 0; round < rounds && !v->fails; round++) {
        uint64_t idx[MAX_BATCH], ext[MAX_BATCH], ext2[MAX_BATCH];
        uint64_t b = 1 + krand_below(&v->rng, batch_max < n ? batch_max : n);
        /* Distinct indexes: a random start and a stride coprime to n is
         * overkill; consecutive from a random start is enough. */
        uint64_t start = krand_below(&v->rng, n);
        for (uint64_t j = 0; j < b; j++)
            idx[j] = (start + j) % n;

        /* Out: verify, unmap, give back. */
        for (uint64_t j = 0; j < b; j++) {
            uint64_t pfn = pfns[idx[j]];
            uint64_t *page = mm_va(pfn);
            enum check_result r =
                check_verify(page, pfn, page[2], 0x80 + v->id, NULL);
            if (r != CHECK_OK)
                vfail(v, "balloon", "pfn %lu before balloon-out: %s", pfn,
                      check_result_name(r));
            ext[j] = k->p2m[pfn];
            long rc = mm_set_physmap_pte(k, pfn, 0, (enum pte_method)method);
            method = (method + 1) % PTE_METHODS;
            if (rc) {
                vfail(v, "balloon", "unmapping pfn %lu: %ld", pfn, rc);
                goto out_unbalanced;
            }
        }
        spin_lock(&k->balloon_lock);
        long rc = reservation(k, XENMEM_decrease_reservation, ext, b);
        if (rc != (long)b) {
            spin_unlock(&k->balloon_lock);
            vfail(v, "balloon", "decrease_reservation of %lu: %ld", b, rc);
            goto out_unbalanced;
        }
        v->c[B_OUT] += b;
        for (uint64_t j = 0; j < b; j++) {
            ext2[j] = ext[j];
            k->p2m[pfns[idx[j]]] = INVALID_P2M;
        }
        /* Gone: the va faults, and the frames cannot be given back twice. */
        uint64_t val;
        uint64_t pr = probe_read64(physmap_va(pfns[idx[0]]), &val);
        if (pr && PROBE_VECTOR(pr) == 14)
            v->c[B_GONE_FAULTS]++;
        else
            vfail(v, "balloon",
                  "ballooned-out pfn %lu still readable (%lx), its entry %lx",
                  pfns[idx[0]], pr, *mm_physmap_ptep(k, pfns[idx[0]]));
        rc = reservation(k, XENMEM_decrease_reservation, ext2, b);
        if (rc == 0)
            v->c[B_DOUBLE_REFUSED]++;
        else
            vfail(v, "balloon", "second decrease of the same %lu frames: %ld",
                  b, rc);

        /* Mapping a frame given back: refused (it is not ours any more). */
        rc = mm_set_physmap_pte(k, pfns[idx[0]], pte_make(ext2[0], PTE_DATA),
                                (enum pte_method)method);
        if (rc) {
            v->c[B_REMAP_REFUSED]++;
        } else {
            vfail(v, "balloon",
                  "frame %lx mapped again after it was given "
                  "back",
                  ext2[0]);
            (void)mm_set_physmap_pte(k, pfns[idx[0]], 0, PTE_BY_UVA);
        }
        spin_unlock(&k->balloon_lock);

        /* In: populate_physmap on the same pfns, or increase_reservation
         * and set the m2p ourselves, on alternate rounds. */
        bool by_increase = round % 2 == 1;
        for (uint64_t j = 0; j < b; j++)
            ext[j] = pfns[idx[j]];
        spin_lock(&k->balloon_lock);
        rc = reservation(k,
                         by_increase ? XENMEM_increase_reservation
                                     : XENMEM_populate_physmap,
                         ext, b);
        spin_unlock(&k->balloon_lock);
        if (rc != (long)b) {
            vfail(v, "balloon", "%s of %lu: %ld",
                  by_increase ? "increase_reservation" : "populate_physmap", b,
                  rc);
            goto out_unbalanced;
        }
        if (by_increase) {
            struct mmu_update m2p[MAX_BATCH];
            for (uint64_t j = 0; j < b; j++) {
                m2p[j].ptr = (ext[j] << GUEST_PAGE_SHIFT) | MMU_MACHPHYS_UPDATE;
                m2p[j].val = pfns[idx[j]];
            }
            unsigned done = 0;
            rc = hc_mmu_update(m2p, (unsigned)b, &done);
            if (rc || done != b)
                vfail(v, "balloon", "MMU_MACHPHYS_UPDATE: %ld (done %u)", rc,
                      done);
            v->c[B_INCREASED] += b;
        } else {
            v->c[B_POPULATED] += b;
        }
        for (uint64_t j = 0; j < b; j++) {
            uint64_t pfn = pfns[idx[j]];
            k->p2m[pfn] = ext[j];
            rc = mm_set_physmap_pte(k, pfn, pte_make(ext[j], PTE_DATA),
                                    (enum pte_method)method);
            method = (method + 1) % PTE_METHODS;
            if (rc) {
                vfail(v, "balloon", "mapping new frame %lx at pfn %lu: %ld",
                      ext[j], pfn, rc);
                goto out_unbalanced;
            }
            uint64_t *page = mm_va(pfn);
            if (check_is_zero(page))
                v->c[B_SCRUBBED]++;
            else
                vfail(v, "balloon", "new frame %lx (pfn %lu) not scrubbed",
                      ext[j], pfn);
            check_fill(page, pfn, round + 1, 0x80 + v->id);
        }

        long resv = current_reservation();
        if (resv0 >= 0 && resv >= 0 && k->nr_vcpus == 1 && resv != resv0)
            vfail(v, "balloon", "reservation %ld after round, %ld before", resv,
                  resv0);
        v->c[B_ROUNDS]++;
    }
    for (uint64_t i = 0; i < n; i++) {
        uint64_t *page = mm_va(pfns[i]);
        enum check_result r =
            check_verify(page, pfns[i], page[2], 0x80 + v->id, NULL);
        v->c[B_VERIFIED]++;
        if (r != CHECK_OK)
            vfail(v, "balloon", "pfn %lu at the end: %s", pfns[i],
                  check_result_name(r));
    }
out:
    work_free_pages(k, v, n);
    return 0;
out_unbalanced:
    /* Some pfns are unmapped or have no frame: keep them all out of the
     * allocator rather than hand out broken pages. */
    kprintf(k, "balloon: vcpu %u keeps its %lu pages after the failure\n",
            v->id, n);
    return -1;
}

const struct workload work_balloon = {
    .name = "balloon",
    .run = balloon_run,
    .counters = balloon_counters,
};
