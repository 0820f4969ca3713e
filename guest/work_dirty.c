/*
 * work_dirty.c - the memory dirtier: each vCPU owns a set of pages, each
 * page holds its own pfn and a counter (check.h).  Every pass verifies every
 * page against the previous pass, then rewrites it whole with the next
 * counter.  A page that comes back stale, misplaced or torn is a failure.
 *
 * Options: pages=<per vCPU> (default 1024; more than WORK_MAX_PAGES keeps
 * the pfn list in pages of its own, up to DIRTY_LIST_MAX of them),
 * passes=<n> (default 8; 0 runs until the domain is stopped, printing
 * progress every 16 passes), inject-lost-write=<pass> (the check's own
 * test: drop one write).
 *
 * Paced runs, for comparisons with the PVH workload guest (guest/pvh),
 * need tsc_khz=<kHz> (the guest has no clock of its own to calibrate):
 * rate=<MiB/s> rewrites pages at that rate per vCPU (a backlog after a pause
 * is capped at 10 ms, not caught up in a burst); rate=0 fills the pages
 * once and then only spins (idle); hb=<ms> makes vCPU 0 print
 * `dirty: hb <n> t=<us> dirtied=<pages> gap=<us> bad=<n>` that often, gap
 * being the longest stretch between two steps of its loop since the last
 * heartbeat: the pause the guest saw.
 */
#include "guest.h"

enum { D_PASSES, D_PAGES, D_WRITTEN, D_VERIFIED, D_BAD };
static const char *const dirty_counters[] = {"passes",   "pages", "written",
                                             "verified", "bad",   NULL};

#define DIRTY_LIST_MAX 1024 /* list pages per vCPU: 512 pfns each */
#define PFNS_PER_PAGE 512
static uint64_t list_pfns[MAX_VCPUS][DIRTY_LIST_MAX];

/* Pfn i of vCPU v's set: in work_pfns, or in its list pages. */
static uint64_t set_pfn(struct vcpu *v, uint64_t nlist, uint64_t i)
{
    if (!nlist)
        return work_pfns[v->id][i];
    return mm_va(list_pfns[v->id][i / PFNS_PER_PAGE])[i % PFNS_PER_PAGE];
}

/* Allocates up to want pages; *nlist gets the number of list pages (0 when
 * work_pfns holds the set). */
static uint64_t set_alloc(struct kernel *k, struct vcpu *v, uint64_t want,
                          uint64_t *nlist)
{
    *nlist = 0;
    if (want <= WORK_MAX_PAGES)
        return work_alloc_pages(k, v, want);
    uint64_t lists = (want + PFNS_PER_PAGE - 1) / PFNS_PER_PAGE;
    if (lists > DIRTY_LIST_MAX)
        lists = DIRTY_LIST_MAX;
    for (; *nlist < lists; (*nlist)++) {
        uint64_t pfn = mm_alloc(k);
        if (pfn == INVALID_P2M)
            break;
        list_pfns[v->id][*nlist] = pfn;
    }
    if (want > *nlist * PFNS_PER_PAGE)
        want = *nlist * PFNS_PER_PAGE;
    uint64_t got = 0;
    for (; got < want; got++) {
        uint64_t pfn = mm_alloc(k);
        if (pfn == INVALID_P2M)
            break;
        mm_va(list_pfns[v->id][got / PFNS_PER_PAGE])[got % PFNS_PER_PAGE] = pfn;
    }
    return got;
}

static void set_free(struct kernel *k, struct vcpu *v, uint64_t n,
                     uint64_t nlist)
{
    if (!nlist) {
        work_free_pages(k, v, n);
        return;
    }
    for (uint64_t i = 0; i < n; i++)
        mm_free(k, set_pfn(v, nlist, i));
    for (uint64_t i = 0; i < nlist; i++)
        mm_free(k, list_pfns[v->id][i]);
}

/* ---- pacing and heartbeats ------------------------------------------- */

struct pace {
    bool on;                /* rate= given */
    uint64_t pps;           /* pages per second; 0: idle */
    uint64_t hz;            /* TSC ticks per second */
    uint64_t base, due;     /* pages due since base (rebased every 10 s) */
    uint64_t backlog;       /* pages: at most 10 ms behind */
    uint64_t t0, last, gap; /* the guest-visible pause */
    uint64_t hb_tsc, next_hb, hb_n, written;
};

/* One step of the loop: the gap since the last step, and a heartbeat when
 * one is due (vCPU 0). */
static void pace_tick(struct kernel *k, struct vcpu *v, struct pace *p)
{
    if (!p->hz)
        return;
    uint64_t now = rdtsc();
    if (now - p->last > p->gap)
        p->gap = now - p->last;
    p->last = now;
    if (p->hb_tsc && v->id == 0 && now >= p->next_hb) {
        kprintf(k, "dirty: hb %lu t=%lu dirtied=%lu gap=%lu bad=%lu\n",
                ++p->hb_n, (now - p->t0) / (p->hz / 1000000), p->written,
                p->gap / (p->hz / 1000000), v->c[D_BAD]);
        p->gap = 0;
        p->next_hb += p->hb_tsc;
        if (p->next_hb <= now)
            p->next_hb = now + p->hb_tsc;
        p->last = rdtsc(); /* the line's own time is no gap */
    }
}

/* Waits until the next page is due (rate=), or for ever (rate=0). */
static void pace_wait(struct kernel *k, struct vcpu *v, struct pace *p)
{
    for (;;) {
        pace_tick(k, v, p);
        if (!p->on)
            return;
        uint64_t now = p->last;
        if (now - p->base > 10 * p->hz) {
            p->base = now;
            p->due = 0;
        }
        uint64_t want = (now - p->base) * p->pps / p->hz;
        if (want > p->due + p->backlog)
            p->due = want - p->backlog;
        if (want > p->due) {
            p->due++;
            return;
        }
        __asm__ volatile("pause");
    }
}

static bool pace_init(struct kernel *k, struct vcpu *v, struct pace *p)
{
    uint64_t none = ~0ull;
    uint64_t rate = cmdline_num(k, "rate", none);
    uint64_t hb = cmdline_num(k, "hb", 0);
    uint64_t khz = cmdline_num(k, "tsc_khz", 0);
    *p = (struct pace){0};
    if (rate == none && !hb)
        return true;
    if (khz < 100000 || khz > 10000000) {
        vfail(v, "dirty", "rate= and hb= need tsc_khz= (got %lu)", khz);
        return false;
    }
    p->hz = khz * 1000;
    p->on = rate != none;
    p->pps = p->on ? rate * 1024 * 1024 / 4096 : 0;
    p->backlog = p->pps / 100 + 1;
    p->t0 = p->base = p->last = rdtsc();
    p->hb_tsc = hb * khz;
    p->next_hb = p->t0 + p->hb_tsc;
    return true;
}

/* ---- the dirtier ------------------------------------------------------ */

static uint64_t verify_all(struct vcpu *v, uint64_t n, uint64_t nlist,
                           uint64_t counter)
{
    uint64_t bad = 0;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t pfn = set_pfn(v, nlist, i);
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
    struct pace pace;
    if (!pace_init(k, v, &pace))
        return 0;
    uint64_t nlist;
    uint64_t n = set_alloc(k, v, want, &nlist);
    v->c[D_PAGES] = n;
    if (n < want)
        kprintf(k, "dirty: vcpu %u got %lu of %lu pages\n", v->id, n, want);

    for (uint64_t i = 0; i < n; i++) {
        uint64_t pfn = set_pfn(v, nlist, i);
        check_fill(mm_va(pfn), pfn, 0, v->id);
        v->c[D_WRITTEN]++;
    }
    if (pace.hz && v->id == 0)
        kprintf(k,
                "dirty: filled %lu pages, rate %ld MiB/s, heartbeat %lu ms\n",
                n, pace.on ? (long)(pace.pps * 4096 / (1024 * 1024)) : -1L,
                pace.hb_tsc / (pace.hz / 1000));
    pace.last = rdtsc();
    if (pace.on && !pace.pps) /* idle: never returns while the guest runs */
        for (;;) {
            pace_tick(k, v, &pace);
            __asm__ volatile("pause");
        }
    for (uint64_t pass = 1; passes == 0 || pass < passes; pass++) {
        for (uint64_t i = 0; i < n; i++) {
            uint64_t pfn = set_pfn(v, nlist, i);
            uint64_t *page = mm_va(pfn);
            unsigned word;
            if (pace.hz)
                pace_wait(k, v, &pace);
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
            pace.written++;
        }
        v->c[D_PASSES]++;
        if (passes == 0 && pass % 16 == 0)
            kprintf(k, "dirty: vcpu %u pass %lu bad=%lu\n", v->id, pass,
                    v->c[D_BAD]);
    }
    v->c[D_PASSES]++;
    verify_all(v, n, nlist, passes ? passes - 1 : 0);
    set_free(k, v, n, nlist);
    return 0;
}

const struct workload work_dirty = {
    .name = "dirty",
    .run = dirty_run,
    .counters = dirty_counters,
};
