/*
 * test_mempath.c - a PV domain's memory path on real KVM: its VM presents
 * only its own frames (and the shim's) through p2m and memslot; ballooning
 * is a slot transaction; every write memvisor makes to guest memory goes
 * through the one dirty-logging accessor.
 *
 *  - writers: each kind of write memvisor makes (a hypercall result, a
 *    page-table entry by mmu_update, by update_va_mapping, vcpu_info by
 *    iret) is issued on a domain that has not run, and the next harvest
 *    must report that gfn; with the accessor bypassed
 *    (hv_domain_test_no_dirty_accessor()) it must not, which shows the
 *    check catches a writer that goes around it.
 *  - defence in depth: a page-table entry of one domain is made, behind
 *    validation's back, to point at another domain's frame; the guest's
 *    first load through it exits (no slot there) and crashes that domain
 *    alone; the other domain's frame is unchanged and it runs to its end.
 *  - balloon churn of a 1 GiB guest (the guest's `balloon` workload on 2
 *    vCPUs): the slots it uses after boot and after the churn are printed,
 *    and the VM presents exactly the frames the domain owns.
 *  - slot exhaustion: with the domain held to the slots it has, ballooning
 *    out of the middle of a slot fails with -ENOSPC in the guest, which
 *    reports it; the domain is not crashed and the process goes on.
 *  - dirty cycles: while the guest churns page tables and dirties memory
 *    (`ptchurn`, then `dirty`), the test pauses it every few tens of ms,
 *    harvests, and compares every page of the domain with its content at
 *    the previous cycle: a page that changed and was not reported is a
 *    lost write (DESIGN invariant 6: exact while paused); with the
 *    accessor bypassed the same check must find lost pages (memvisor's
 *    writes to vcpu_info in shared_info, among others).  There is no
 *    channel through which the guest could learn what the log reported,
 *    so the comparison is made host-side, on the guest's memory itself.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "miniguest.h"
#include "hv/hv.h"
#include "testlib.h"
#include "xen/xen.h"

#define VA MINIGUEST_VA
#define PTE_ADDR 0x000ffffffffff000ULL

static const char *pvkernel_path;

static uint8_t *load_pvkernel(size_t *size)
{
    uint8_t *img = test_load_file(pvkernel_path, size);

    assert_non_null(img);
    return img;
}

static void note_console(struct domain *d)
{
    static char con[16384];
    char *p, *nl;

    hv_domain_console(d, con, sizeof(con));
    for (p = con; p && *p; p = nl ? nl + 1 : NULL) {
        nl = strchr(p, '\n');
        test_note("  %.*s", (int)(nl ? nl - p : (long)strlen(p)), p);
    }
}

/* ---- 1. every writer goes through the accessor --------------------------- */

#define MAX_GFNS 4096

/* Harvest; is gfn among the pages handed out? */
static bool harvest_has(struct domain *d, uint64_t gfn, uint64_t *pages)
{
    static uint64_t gfns[MAX_GFNS];
    uint64_t n = 0;
    bool found = false;

    assert_int_equal(hv_domain_dirty_harvest_gfns(d, gfns, MAX_GFNS, &n), 0);
    for (uint64_t i = 0; i < n && i < MAX_GFNS; i++)
        found |= gfns[i] == gfn;
    if (pages)
        *pages = n;
    return found;
}

struct wctx {
    struct domain *d;
    struct hv_domain_layout lay;
    uint64_t si_maddr, l1e_maddr, l1e; /* start_info page and its L1 entry */
    uint64_t scratch;                  /* guest va for request arrays */
};

static long hcall(struct wctx *w, unsigned nr, uint64_t a0, uint64_t a1,
                  uint64_t a2, uint64_t a3, uint64_t rsp)
{
    const uint64_t a[6] = {a0, a1, a2, a3, 0, 0};
    return hv_domain_test_hypercall(w->d, 0, nr, a, VA, rsp);
}

/* A hypercall result written into the guest (gm_copy_to). */
static uint64_t w_result(struct wctx *w)
{
    uint64_t v = 0x1234;
    assert_int_equal(hv_domain_test_poke(w->d, w->scratch, &v, sizeof(v)), 0);
    return w->si_maddr >> 12;
}

/* mmu_update of the L1 entry that maps start_info (same value). */
static uint64_t w_mmu_update(struct wctx *w)
{
    struct mmu_update u = {.ptr = w->l1e_maddr | MMU_NORMAL_PT_UPDATE,
                           .val = w->l1e};
    uint64_t pages;

    assert_int_equal(hv_domain_test_poke(w->d, w->scratch, &u, sizeof(u)), 0);
    (void)harvest_has(w->d, 0, &pages); /* the request itself is a write */
    assert_int_equal(
        hcall(w, __HYPERVISOR_mmu_update, w->scratch, 1, 0, DOMID_SELF, 0), 0);
    return w->l1e_maddr >> 12;
}

/* update_va_mapping of start_info's va (same value). */
static uint64_t w_update_va_mapping(struct wctx *w)
{
    assert_int_equal(hcall(w, __HYPERVISOR_update_va_mapping,
                           w->lay.start_info_va, w->l1e, 0, 0, 0),
                     0);
    return w->l1e_maddr >> 12;
}

/* iret: memvisor writes vcpu_info's event mask (shared_info). */
static uint64_t w_vcpu_info(struct wctx *w)
{
    struct iret_context c = {
        .rip = VA,
        .cs = FLAT_KERNEL_CS,
        .rflags = 0x200,
        .rsp = w->scratch,
        .ss = FLAT_KERNEL_SS,
    };
    uint64_t pages;

    assert_int_equal(hv_domain_test_poke(w->d, w->scratch, &c, sizeof(c)), 0);
    (void)harvest_has(w->d, 0, &pages);
    (void)hcall(w, __HYPERVISOR_iret, 0, 0, 0, 0, w->scratch);
    return w->lay.shared_info_mfn;
}

static const struct writer {
    const char *name;
    uint64_t (*fn)(struct wctx *w);
} writers[] = {
    {"hypercall result (gm_copy_to)", w_result},
    {"page-table entry by mmu_update", w_mmu_update},
    {"page-table entry by update_va_mapping", w_update_va_mapping},
    {"vcpu_info (shared_info) by iret", w_vcpu_info},
};

static void test_writers(void **state)
{
    static uint8_t img[ELFGEN_MAX];
    size_t n = miniguest_image(img);
    unsigned caught = 0;
    (void)state;

    for (unsigned bypass = 0; bypass < 2; bypass++) {
        for (size_t i = 0; i < ARRAY_SIZE(writers); i++) {
            struct hv hv;
            struct wctx w = {0};
            uint64_t maddr, pages, gfn;
            bool found;

            assert_int_equal(hv_init(&hv, 8192), 0);
            w.d = hvtest_create(&hv, img, n, "hello-mini", 1, 8);
            hv_domain_test_layout(w.d, &w.lay);
            assert_int_equal(hv_domain_test_translate(w.d, w.lay.start_info_va,
                                                      &maddr, &w.l1e_maddr,
                                                      &w.l1e),
                             0);
            w.si_maddr = maddr & PTE_ADDR;
            w.scratch = w.lay.start_info_va + 3072;
            if (bypass)
                hv_domain_test_no_dirty_accessor(w.d);
            (void)harvest_has(w.d, 0, &pages); /* what the build wrote */
            gfn = writers[i].fn(&w);
            found = harvest_has(w.d, gfn, &pages);
            test_note("%s%s: gfn %#" PRIx64 " %s (%" PRIu64
                      " pages handed out)",
                      writers[i].name, bypass ? ", accessor bypassed" : "", gfn,
                      found ? "reported" : "NOT reported", pages);
            if (bypass)
                caught += !found;
            else
                assert_true(found);
            hv_domain_destroy(w.d);
            hv_fini(&hv);
        }
    }
    /* the check fails for every writer that goes around the accessor */
    assert_int_equal(caught, ARRAY_SIZE(writers));
}

/* ---- 2. defence in depth ---------------------------------------------- */

static void test_other_domain_unreachable(void **state)
{
    static uint8_t img[ELFGEN_MAX];
    static uint8_t before[4096];
    size_t n = miniguest_image(img);
    struct hv hv;
    struct domain *a, *b;
    struct hv_domain_layout la, lb;
    uint64_t a_maddr, a_l1e_maddr, a_l1e, b_maddr, unused1, unused2;
    uint32_t slots, shim_slots;
    uint64_t frames;
    char con[4096], msg[200];
    (void)state;

    assert_int_equal(hv_init(&hv, 8192), 0);
    a = hvtest_create(&hv, img, n, "hello-mini", 1, 8);
    b = hvtest_create(&hv, img, n, "still-here", 1, 8);
    /* each VM presents exactly its domain's frames */
    hv_domain_slots(a, &slots, &shim_slots, &frames);
    test_note("domain a: %u slots (+%u of the shim) presenting %" PRIu64
              " frames; it owns %" PRIu64,
              slots, shim_slots, frames,
              frames_domain_tot(&hv.frames, hv_domain_id(a)));
    assert_int_equal(frames, frames_domain_tot(&hv.frames, hv_domain_id(a)));
    hv_domain_test_layout(a, &la);
    hv_domain_test_layout(b, &lb);
    assert_int_equal(hv_domain_test_translate(a, la.start_info_va, &a_maddr,
                                              &a_l1e_maddr, &a_l1e),
                     0);
    assert_int_equal(hv_domain_test_translate(b, lb.start_info_va, &b_maddr,
                                              &unused1, &unused2),
                     0);
    b_maddr &= PTE_ADDR;
    memcpy(before, (uint8_t *)hv.frames.base + b_maddr, sizeof(before));
    /* The hole: a's entry for its start_info now names b's start_info
     * frame, as if validation had let it through. */
    assert_int_equal(hv_domain_test_raw_store(&hv, a_l1e_maddr,
                                              b_maddr | (a_l1e & ~PTE_ADDR)),
                     0);
    assert_int_equal(hv_domain_start(a), 0);
    assert_int_equal(hv_domain_wait(a), 70);
    test_note("domain a: %s", hv_domain_crash_text(a));
    assert_non_null(
        strstr(hv_domain_crash_text(a), "not this domain's memory"));
    assert_memory_equal(before, (uint8_t *)hv.frames.base + b_maddr,
                        sizeof(before));
    /* undo the hole so that a's teardown finds its own entry */
    assert_int_equal(hv_domain_test_raw_store(&hv, a_l1e_maddr, a_l1e), 0);
    assert_int_equal(hv_domain_audit(a, msg, sizeof(msg), NULL, NULL), 0);
    hv_domain_destroy(a);
    /* b runs on to its end */
    assert_int_equal(hv_domain_start(b), 0);
    assert_int_equal(hv_domain_wait(b), 0);
    hv_domain_console(b, con, sizeof(con));
    assert_non_null(strstr(con, "still-here"));
    assert_int_equal(hv_domain_audit(b, msg, sizeof(msg), NULL, NULL), 0);
    hv_domain_destroy(b);
    hv_fini(&hv);
}

/* ---- 3. balloon churn: slots of a 1 GiB guest ---------------------------- */

static void test_balloon_slots(void **state)
{
    size_t size;
    uint8_t *img = load_pvkernel(&size);
    struct hv hv;
    struct domain *d;
    uint32_t slots0, slots1, shim_slots;
    uint64_t frames0, frames1;
    struct hv_domain_stats st;
    char msg[200];
    int rc;
    (void)state;

    assert_int_equal(hv_init(&hv, (1024 << 8) + 8192), 0);
    d = hvtest_create(&hv, img, size, "balloon pages=1024 rounds=16 batch=64",
                      2, 1024);
    hv_domain_slots(d, &slots0, &shim_slots, &frames0);
    assert_int_equal(hv_domain_start(d), 0);
    rc = hv_domain_wait(d);
    if (rc != 0) {
        test_note("exit %d: %s", rc, hv_domain_crash_text(d));
        note_console(d);
    }
    assert_int_equal(rc, 0);
    hv_domain_slots(d, &slots1, &shim_slots, &frames1);
    hv_domain_stats(d, &st);
    test_note("1 GiB guest, 2 vCPUs: %u slots after boot (%" PRIu64
              " frames), %u after balloon churn (%" PRIu64
              " frames, %llu memory_op calls); the shim: %u slots",
              slots0, frames0, slots1, frames1,
              (unsigned long long)st.hypercalls[__HYPERVISOR_memory_op],
              shim_slots);
    assert_int_equal(frames1, frames_domain_tot(&hv.frames, hv_domain_id(d)));
    assert_int_equal(hv_domain_audit(d, msg, sizeof(msg), NULL, NULL), 0);
    hv_domain_destroy(d);
    hv_fini(&hv);
    free(img);
}

/* ---- 4. slot exhaustion ----------------------------------------------------
 */

static void test_slot_exhaustion(void **state)
{
    size_t size;
    uint8_t *img = load_pvkernel(&size);
    struct hv hv;
    struct domain *d;
    uint32_t slots, shim_slots;
    uint64_t frames;
    char con[16384], msg[200];
    int rc;
    (void)state;

    assert_int_equal(hv_init(&hv, (64 << 8) + 4096), 0);
    d = hvtest_create(&hv, img, size, "balloon pages=64 rounds=2 batch=8", 1,
                      64);
    hv_domain_slots(d, &slots, &shim_slots, &frames);
    /* no slot beyond those it has: balloon out of a slot's middle needs one */
    hv_domain_test_slot_limit(d, slots);
    assert_int_equal(hv_domain_start(d), 0);
    rc = hv_domain_wait(d);
    hv_domain_console(d, con, sizeof(con));
    test_note("held to %u slots: exit %d", slots, rc);
    note_console(d);
    assert_true(rc != 70); /* not crashed */
    assert_true(rc != 0);  /* the guest saw the error and failed its check */
    assert_non_null(strstr(con, "decrease_reservation"));
    assert_non_null(strstr(con, "-28")); /* -ENOSPC */
    assert_int_equal(hv_domain_audit(d, msg, sizeof(msg), NULL, NULL), 0);
    hv_domain_destroy(d);
    hv_fini(&hv);
    free(img);
}

/* ---- 5. harvest cycles while page tables churn ----------------------------
 */

static uint64_t page_hash(const uint8_t *p)
{
    const uint64_t *w = (const uint64_t *)(const void *)p;
    uint64_t h = 0xcbf29ce484222325ULL;

    for (unsigned i = 0; i < 512; i++)
        h = (h ^ __atomic_load_n(&w[i], __ATOMIC_RELAXED)) * 0x100000001b3ULL;
    return h;
}

/* Harvest cycles over a run of ptchurn then dirty; returns the pages that
 * changed between two cycles and were not reported. */
static uint64_t dirty_cycles(bool bypass)
{
    size_t size;
    uint8_t *img = load_pvkernel(&size);
    struct hv hv;
    struct domain *d;
    uint64_t nf, *hash, *gfns, cycles = 0, changed = 0, reported = 0, lost = 0;
    uint8_t *rep;
    domid_t id;
    char msg[200];
    int rc;

    assert_int_equal(hv_init(&hv, (64 << 8) + 4096), 0);
    nf = hv.frames.nr_frames;
    d = hvtest_create(&hv, img, size, "ptchurn dirty pages=512 passes=16", 2,
                      64);
    id = hv_domain_id(d);
    if (bypass)
        hv_domain_test_no_dirty_accessor(d);
    hash = calloc(nf, sizeof(*hash));
    gfns = calloc(nf, sizeof(*gfns));
    rep = calloc(nf, 1);
    assert_true(hash && gfns && rep);
    {
        uint64_t n;
        assert_int_equal(hv_domain_dirty_harvest_gfns(d, gfns, nf, &n), 0);
    }
    for (uint64_t m = 0; m < nf; m++)
        if (frame_owner(&hv.frames, _mfn(m)) == id)
            hash[m] = page_hash((uint8_t *)hv.frames.base + (m << 12));
    assert_int_equal(hv_domain_start(d), 0);
    for (bool last = false; !last;) {
        uint64_t n = 0;

        test_sleep_ms(40);
        last = hv_domain_stopped(d);
        if (!last)
            hv_domain_pause(d);
        else
            (void)hv_domain_wait(d);
        assert_int_equal(hv_domain_dirty_harvest_gfns(d, gfns, nf, &n), 0);
        assert_true(n <= nf);
        memset(rep, 0, nf);
        for (uint64_t i = 0; i < n; i++)
            rep[gfns[i]] = 1;
        reported += n;
        for (uint64_t m = 0; m < nf; m++) {
            uint64_t h;

            if (frame_owner(&hv.frames, _mfn(m)) != id)
                continue;
            h = page_hash((uint8_t *)hv.frames.base + (m << 12));
            if (h != hash[m]) {
                changed++;
                if (!rep[m]) {
                    if (lost < 8)
                        test_note("cycle %" PRIu64 ": mfn %#" PRIx64
                                  " changed, not reported",
                                  cycles, m);
                    lost++;
                }
            }
            hash[m] = h;
        }
        cycles++;
        if (!last)
            hv_domain_resume(d);
    }
    rc = hv_domain_wait(d);
    test_note("%s%" PRIu64 " harvest cycles while the guest ran ptchurn, "
              "then dirty: %" PRIu64 " pages changed between cycles, %" PRIu64
              " reported, %" PRIu64 " lost",
              bypass ? "accessor bypassed: " : "", cycles, changed, reported,
              lost);
    if (rc != 0)
        note_console(d);
    assert_int_equal(rc, 0);
    assert_true(cycles >= 2 && changed > 0);
    assert_int_equal(hv_domain_audit(d, msg, sizeof(msg), NULL, NULL), 0);
    hv_domain_destroy(d);
    hv_fini(&hv);
    free(hash);
    free(gfns);
    free(rep);
    free(img);
    return lost;
}

static void test_dirty_cycles(void **state)
{
    (void)state;
    assert_int_equal(dirty_cycles(false), 0);
}

/* The same with memvisor's writes unlogged: the check must see lost pages
 * (the writes the KVM does not see: hypercall results, vcpu_info, and on
 * nested paging the page-table entries, which no touch loop stores back
 * there). */
/* Which page memvisor alone writes within one cycle depends on timing (a
 * guest store to the same page in that cycle reports it anyway): up to
 * three runs, at least one of which must lose a page. */
static void test_dirty_cycles_bypassed(void **state)
{
    uint64_t lost = 0;
    unsigned runs = 0;

    (void)state;
    while (!lost && runs < 3) {
        lost = dirty_cycles(true);
        runs++;
    }
    test_note("accessor bypassed: %" PRIu64 " pages lost in run %u of at "
              "most 3",
              lost, runs);
    assert_true(lost > 0);
}

int main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_writers),
        cmocka_unit_test(test_other_domain_unreachable),
        cmocka_unit_test(test_balloon_slots),
        cmocka_unit_test(test_slot_exhaustion),
        cmocka_unit_test(test_dirty_cycles),
        cmocka_unit_test(test_dirty_cycles_bypassed),
    };
    if (argc < 2) {
        fprintf(stderr, "usage: %s <pvkernel>\n", argv[0]);
        return 2;
    }
    pvkernel_path = argv[1];
    test_require_kvm();
    if (getenv("MEMVISOR_TEST_FILTER"))
        cmocka_set_test_filter(getenv("MEMVISOR_TEST_FILTER"));
    return cmocka_run_group_tests(tests, NULL, NULL);
}
