/*
 * work_dirty.c - the memory dirtier: each vCPU owns a set of pages, each
 * page holds its own pfn and a counter (check.h).  Every pass verifies every
 * page against the previous pass, then rewrites it whole with the next
 * counter.  A page that comes back stale, misplaced or torn is a failure.
 *
 * Options: pages=<per vCPU> (default 1024), passes=<n> (default 8; 0 runs
 * until the domain is stopped, printing progress every 16 passes),
 * inject-lost-write=<pass> (the check's own test: drop one write).
 */
#include "guest.h"

enum { D_PASSES, D_PAGES, D_WRITTEN, D_VERIFIED, D_BAD };
static const char *const dirty_counters[] = {"passes",   "pages", "written",
                                             "verified", "bad",   NULL};

static uint64_t verify_all(struct vcpu *v, uint64_t n, uint64_t counter)
{
    uint64_t bad = 0;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t pfn = work_pfns[v->id][i];
        unsigned word;
        enum check_result r =
            check_verify(mm_va(pfn), pfn, counter, v->id, &word);
        v->c[D_VERIFIED]++;
        if (r != CHECK_OK) {
            if (bad < 8)
                vfail(v, "dirty", "pfn %lu counter %lu: %s at word %u (%lx)",
                      pfn, counter, check_result_name(r), word,
                      mm_va(pfn)[word]);
            bad++;
        }
    }
    v->c[D_BAD] += bad;
    return bad;
}

static int dirty_run(struct kernel *k, struct vcpu *v)
{
    uint64_t want = cmdline_num(k, "pages", 1024);
    uint64_t passes = cmdline_num(k, "passes", 8);
    /* inject-lost-write=<pass>: skip one page's write in that pass, as a
     * hypervisor that lost a write would; the next pass must see it. */
    uint64_t inject = cmdline_num(k, "inject-lost-write", 0);
    uint64_t n = work_alloc_pages(k, v, want);
    v->c[D_PAGES] = n;
    if (n < want)
        kprintf(k, "dirty: vcpu %u got %lu of %lu pages\n", v->id, n, want);

    for (uint64_t i = 0; i < n; i++) {
        check_fill(mm_va(work_pfns[v->id][i]), work_pfns[v->id][i], 0, v->id);
        v->c[D_WRITTEN]++;
    }
    for (uint64_t pass = 1; passes == 0 || pass < passes; pass++) {
        for (uint64_t i = 0; i < n; i++) {
            uint64_t pfn = work_pfns[v->id][i];
            uint64_t *page = mm_va(pfn);
            unsigned word;
            enum check_result r =
                check_verify(page, pfn, pass - 1, v->id, &word);
            v->c[D_VERIFIED]++;
            if (r != CHECK_OK) {
                v->c[D_BAD]++;
                if (v->c[D_BAD] <= 8)
                    vfail(v, "dirty", "pass %lu pfn %lu: %s at word %u", pass,
                          pfn, check_result_name(r), word);
            }
            if (pass == inject && i == n / 2 && v->id == 0)
                continue;
            check_fill(page, pfn, pass, v->id);
            v->c[D_WRITTEN]++;
        }
        v->c[D_PASSES]++;
        if (passes == 0 && pass % 16 == 0)
            kprintf(k, "dirty: vcpu %u pass %lu bad=%lu\n", v->id, pass,
                    v->c[D_BAD]);
    }
    v->c[D_PASSES]++;
    verify_all(v, n, passes ? passes - 1 : 0);
    work_free_pages(k, v, n);
    return 0;
}

const struct workload work_dirty = {
    .name = "dirty",
    .run = dirty_run,
    .counters = dirty_counters,
};
