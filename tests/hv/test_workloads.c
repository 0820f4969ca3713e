/*
 * test_workloads.c - the guest kernel (guest/pvkernel, path in argv[1])
 * runs each workload to completion on 2 vCPUs: self-checks pass, the
 * frame-table audit is clean while the guest runs (taken with all vCPUs
 * paused, repeatedly) and after it stopped; console output checked.  Also:
 * while paused, no vCPU makes progress; with the touch loop or H4 (hv.h)
 * switched off, ptchurn fails.  A failure prints the exit status, the
 * counters, the crash report and the guest console as TAP comments on
 * stdout (cmocka's own message goes to stderr, which logs may cut short).
 * MEMVISOR_TEST_FILTER=<pattern> runs only the matching tests.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "hv/hv.h"
#include "kvm/kvm.h"
#include "testlib.h"

static const char *image_path;
static uint8_t *image;
static size_t image_size;

/* The domain's counters, as a TAP comment. */
static void note_stats(const struct hv_domain_stats *st)
{
    test_note(
        "  exits %llu, hypercalls mmu_update %llu mmuext_op %llu "
        "update_va_mapping %llu memory_op %llu iret %llu, unknown "
        "%llu, #GP %llu #PF %llu #UD %llu, wpt emulated %llu "
        "refused %llu, continuations %llu, spurious #PF %llu",
        (unsigned long long)st->exits, (unsigned long long)st->hypercalls[1],
        (unsigned long long)st->hypercalls[26],
        (unsigned long long)st->hypercalls[14],
        (unsigned long long)st->hypercalls[12],
        (unsigned long long)st->hypercalls[23],
        (unsigned long long)st->hypercalls_unknown,
        (unsigned long long)st->bounces[13],
        (unsigned long long)st->bounces[14], (unsigned long long)st->bounces[6],
        (unsigned long long)st->wpt_emulated,
        (unsigned long long)st->wpt_refused,
        (unsigned long long)st->continuations,
        (unsigned long long)st->spurious_faults);
}

static int load_image(void **state)
{
    (void)state;
    image = test_load_file(image_path, &image_size);
    return image ? 0 : -1;
}

static int free_image(void **state)
{
    (void)state;
    free(image);
    return 0;
}

/* A domain of the guest kernel, 64 MiB, in a new hv (not started). */
static struct domain *guest_domain(struct hv *hv, unsigned vcpus,
                                   const char *cmdline)
{
    struct domain *d = NULL;
    char err[256];
    struct hv_domain_config cfg = {
        .image = image,
        .image_size = image_size,
        .mem_mib = 64,
        .nr_vcpus = vcpus,
        .cmdline = cmdline,
        .console_fd = -1,
    };

    assert_int_equal(hv_init(hv, (64 << 8) + 4096), 0);
    if (hv_domain_create(hv, &cfg, &d, err, sizeof(err)) < 0)
        fail_msg("create: %s", err);
    return d;
}

static void run_opts(const char *workload, unsigned vcpus, uint64_t preempt)
{
    struct hv hv;
    struct domain *d;
    struct hv_domain_stats st;
    char cmdline[64], msg[200], want[64];
    static char con[65536];
    unsigned audits = 0;
    uint64_t frames = 0, tables = 0;
    double t0;
    int status;

    snprintf(cmdline, sizeof(cmdline), "%s", workload);
    d = guest_domain(&hv, vcpus, cmdline);
    if (preempt)
        hv_domain_test_preempt(d, preempt);
    t0 = test_now_s();
    assert_int_equal(hv_domain_start(d), 0);
    while (!hv_domain_stopped(d) && test_now_s() - t0 < 100) {
        test_sleep_ms(15);
        if (hv_domain_stopped(d))
            break;
        if (hv_domain_audit(d, msg, sizeof(msg), &frames, &tables) < 0) {
            test_note("audit while paused: %s", msg);
            hv_domain_destroy(d);
            hv_fini(&hv);
            fail_msg("audit while paused: %s", msg);
        }
        audits++;
    }
    status = hv_domain_wait(d);
    hv_domain_stats(d, &st);
    if (preempt)
        assert_true(st.continuations > 0);
    hv_domain_console(d, con, sizeof(con));
    if (status != 0) {
        test_note("%s: exit status %d", workload, status);
        note_stats(&st);
        test_note_lines("crash", hv_domain_crash_text(d));
        test_note_lines("console", con);
        hv_domain_destroy(d);
        hv_fini(&hv);
        fail_msg("%s: exit status %d (crash report and console above)",
                 workload, status);
    }
    snprintf(want, sizeof(want), "%s: pass", workload);
    if (!strstr(con, want) || !strstr(con, "guest: pass") ||
        strstr(con, "FAIL")) {
        note_stats(&st);
        test_note_lines("console", con);
        hv_domain_destroy(d);
        hv_fini(&hv);
        fail_msg("%s: the console lacks \"%s\" or shows FAIL (above)", workload,
                 want);
    }
    assert_int_equal(hv_domain_audit(d, msg, sizeof(msg), &frames, &tables), 0);
    hv_domain_stats(d, &st);
    assert_int_equal(st.touch_overflow, 0);
    {
        const char *line;
        char summary[512] = "";
        /* the workload's summary line "<w>: <counters>" before "pass" */
        char key[64];
        snprintf(key, sizeof(key), "\n%s: ", workload);
        /* the last "<w>: ..." line that is neither "start" nor "pass" */
        const char *found = NULL;
        for (const char *p = strstr(con, key); p; p = strstr(p + 1, key))
            if (strncmp(p + strlen(key), "start", 5) &&
                strncmp(p + strlen(key), "pass\n", 5))
                found = p;
        line = found;
        if (line) {
            const char *end = strchr(line + 1, '\n');
            size_t len = end ? (size_t)(end - line - 1) : strlen(line + 1);
            snprintf(summary, sizeof(summary), "%.*s", (int)MIN(len, 500),
                     line + 1);
        }
        test_note("%s on %u vCPUs: %.2f s, %u audits while paused + final "
                  "clean (%llu frames, %llu page tables)",
                  workload, vcpus, test_now_s() - t0, audits,
                  (unsigned long long)frames, (unsigned long long)tables);
        test_note("  guest: %s", summary);
        note_stats(&st);
    }
    hv_domain_destroy(d);
    hv_fini(&hv);
}

static void run(const char *workload, unsigned vcpus)
{
    run_opts(workload, vcpus, 0);
}

static void test_dirty(void **s)
{
    (void)s;
    run("dirty", 2);
}
/* Every preemption point of pv taken, every one a continuation through
 * the guest: the workloads still pass and the audits stay clean. */
static void test_ptchurn_preempted(void **s)
{
    (void)s;
    run_opts("ptchurn", 2, 16);
}
static void test_balloon_preempted(void **s)
{
    (void)s;
    run_opts("balloon", 2, 2);
}
static void test_ptchurn(void **s)
{
    (void)s;
    run("ptchurn", 2);
}
static void test_balloon(void **s)
{
    (void)s;
    run("balloon", 2);
}
static void test_hostile(void **s)
{
    (void)s;
    run("hostile", 2);
}
static void test_abi(void **s)
{
    (void)s;
    run("abi", 2);
}

/* While paused, the guest makes no progress: no exit at all. */
static void test_pause_stops_progress(void **state)
{
    struct hv hv;
    struct domain *d;
    struct hv_domain_stats a, b;
    (void)state;

    d = guest_domain(&hv, 2, "ptchurn dirty");
    assert_int_equal(hv_domain_start(d), 0);
    test_sleep_ms(30);
    for (int i = 0; i < 5 && !hv_domain_stopped(d); i++) {
        hv_domain_pause(d);
        hv_domain_stats(d, &a);
        test_sleep_ms(20);
        hv_domain_stats(d, &b);
        assert_int_equal(a.exits, b.exits);
        hv_domain_resume(d);
        test_sleep_ms(10);
    }
    assert_int_equal(hv_domain_wait(d), 0);
    hv_domain_destroy(d);
    hv_fini(&hv);
}

/* ptchurn with one rule switched off (off(d)) must fail, the console
 * showing `expect`. */
static void ptchurn_must_fail(const char *what, void (*off)(struct domain *),
                              uint64_t preempt, const char *expect)
{
    struct hv hv;
    struct domain *d;
    static char con[65536];
    int status;

    d = guest_domain(&hv, 2, "ptchurn");
    if (preempt)
        hv_domain_test_preempt(d, preempt);
    off(d);
    assert_int_equal(hv_domain_start(d), 0);
    status = hv_domain_wait(d);
    hv_domain_console(d, con, sizeof(con));
    test_note("%s: exit status %d, ptchurn %s", what, status,
              strstr(con, "ptchurn: FAIL") ? "FAILS" : "passes");
    if (status == 0 || !strstr(con, expect))
        test_note_lines("console", con);
    assert_int_not_equal(status, 0);
    assert_non_null(strstr(con, expect));
    hv_domain_destroy(d);
    hv_fini(&hv);
}

/* The touch loop switched off: with a shadow MMU (KVM-PVM, or hardware
 * KVM without nested paging) the guest's page-table changes made by
 * memvisor stay invisible to KVM's shadow and ptchurn's self-checks catch
 * stale translations.  With nested paging the hardware walks the guest's
 * tables in memory and sees those stores without the loop: there is
 * nothing for the rule to guard, and the subtest is skipped, saying so. */
static void test_no_touch_fails(void **state)
{
    const struct kvm_flavour *f = test_kvm_flavour();

    (void)state;
    if (!f) {
        test_note("the flavour is unknown: whether the touch loop is needed "
                  "cannot be told");
        skip();
    }
    if (!kvm_flavour_shadow_mmu(f)) {
        test_note("%s: host-side page-table stores are seen without the "
                  "touch loop; it is needed only with a shadow MMU",
                  kvm_flavour_name(f));
        skip();
    }
    test_note("%s: the touch loop is needed; without it ptchurn must fail",
              kvm_flavour_name(f));
    ptchurn_must_fail("without the touch loop", hv_domain_test_no_touch, 0,
                      "ptchurn: FAIL");
}

/* H4 (hv.h) switched off: a preempted call whose last request left a
 * deferred put (ptchurn's unpins) is not re-issued to pv once nothing is
 * left, so the vCPU's next update_va_mapping or emulated page-table store
 * is answered with the held-back result and never made; ptchurn checks
 * every entry it changes and fails. */
static void test_skip_empty_reissue_fails(void **state)
{
    (void)state;
    ptchurn_must_fail("continuations not re-issued when empty",
                      hv_domain_test_skip_empty_reissue, 16,
                      "made writable by");
}

/* The guest's writes reach the dirty log: the dirty workload writes 2048
 * pages per vCPU pass; harvested while it runs and after, the pages add
 * up to at least that; while paused, a second harvest finds nothing new. */
static void test_dirty_log(void **state)
{
    struct hv hv;
    struct domain *d;
    uint64_t pages, total = 0, harvests = 0, again;
    (void)state;

    d = guest_domain(&hv, 2, "dirty");
    assert_int_equal(hv_domain_dirty_harvest(d, &pages), 0); /* the build */
    test_note("build wrote %llu pages", (unsigned long long)pages);
    assert_int_equal(hv_domain_start(d), 0);
    while (!hv_domain_stopped(d)) {
        test_sleep_ms(10);
        hv_domain_pause(d);
        assert_int_equal(hv_domain_dirty_harvest(d, &pages), 0);
        assert_int_equal(hv_domain_dirty_harvest(d, &again), 0);
        assert_int_equal(again, 0); /* paused: the harvest was exact */
        hv_domain_resume(d);
        total += pages;
        harvests++;
    }
    assert_int_equal(hv_domain_wait(d), 0);
    assert_int_equal(hv_domain_dirty_harvest(d, &pages), 0);
    total += pages;
    test_note("dirty workload: %llu pages harvested in %llu harvests while "
              "running + 1 after",
              (unsigned long long)total, (unsigned long long)harvests);
    assert_true(total >= 2048);
    hv_domain_destroy(d);
    hv_fini(&hv);
}

int main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dirty),
        cmocka_unit_test(test_ptchurn),
        cmocka_unit_test(test_balloon),
        cmocka_unit_test(test_hostile),
        cmocka_unit_test(test_abi),
        cmocka_unit_test(test_pause_stops_progress),
        cmocka_unit_test(test_ptchurn_preempted),
        cmocka_unit_test(test_balloon_preempted),
        cmocka_unit_test(test_no_touch_fails),
        cmocka_unit_test(test_skip_empty_reissue_fails),
        cmocka_unit_test(test_dirty_log),
    };
    if (argc < 2) {
        fprintf(stderr, "usage: %s <pvkernel>\n", argv[0]);
        return 2;
    }
    test_require_kvm();
    image_path = argv[1];
    /* MEMVISOR_TEST_FILTER=<pattern> runs only the matching tests (to loop
     * one of them). */
    if (getenv("MEMVISOR_TEST_FILTER"))
        cmocka_set_test_filter(getenv("MEMVISOR_TEST_FILTER"));
    return cmocka_run_group_tests(tests, load_image, free_image);
}
