/*
 * test_hv.c - the hypervisor end to end on real KVM with a tiny PV kernel
 * (miniguest.S) built into the test: boot through the builder, the
 * hypercall page, bounces to the guest's handlers, the iret hypercall,
 * writable-page-table emulation, and each thing a guest must not do shown
 * refused; a crashing domain stops alone while another one runs on;
 * malformed kernels refused at load with a reason.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "miniguest.h"
#include "hv/hv.h"
#include "testlib.h"
#include "xen/xen.h"

#define VA MINIGUEST_VA

static struct domain *create(struct hv *hv, const uint8_t *img, size_t n,
                             const char *cmdline, unsigned vcpus)
{
    return hvtest_create(hv, img, n, cmdline, vcpus, 8);
}

static void test_refusals(void **state)
{
    static uint8_t img[ELFGEN_MAX];
    struct hv hv;
    struct domain *d;
    struct hv_domain_stats st;
    char con[4096], msg[200];
    size_t n = miniguest_image(img);
    static const char *const expect[] = {
        "hello-mini",
        "mini: efault",
        "mini: rw-refused",
        "mini: slot-refused",
        "mini: cr3-refused",
        "mini: shim-read-refused",
        "mini: ptstore-refused",
        "mini: l1store-emulated",
    };
    (void)state;

    assert_int_equal(hv_init(&hv, 8192), 0);
    d = create(&hv, img, n, "hello-mini", 1);
    assert_int_equal(hv_domain_start(d), 0);
    assert_int_equal(hv_domain_wait(d), 0);
    hv_domain_console(d, con, sizeof(con));
    test_note("console: %s", con);
    for (size_t i = 0; i < ARRAY_SIZE(expect); i++) {
        if (!strstr(con, expect[i]))
            print_error("missing \"%s\"\n", expect[i]);
        assert_non_null(strstr(con, expect[i]));
    }
    hv_domain_stats(d, &st);
    assert_int_equal(st.bounces[13], 1);    /* mov to CR3 */
    assert_int_equal(st.bounces[14], 2);    /* shim read, L4 store */
    assert_int_equal(st.wpt_emulated, 1);   /* the L1 store */
    assert_int_equal(st.hypercalls[23], 3); /* iret, once per bounce */
    assert_true(st.dirty_marked > 0);
    assert_int_equal(hv_domain_audit(d, msg, sizeof(msg), NULL, NULL), 0);
    hv_domain_destroy(d);
    hv_fini(&hv);
}

static void test_crash_isolated(void **state)
{
    static uint8_t img[ELFGEN_MAX];
    struct hv hv;
    struct domain *bad, *good;
    char con[4096], msg[200];
    size_t n = miniguest_image(img);
    (void)state;

    assert_int_equal(hv_init(&hv, 8192), 0);
    bad = create(&hv, img, n, "crash", 1);
    good = create(&hv, img, n, "still-here", 1);
    /* both run at once: the good one paused mid-boot while the other dies */
    assert_int_equal(hv_domain_start(good), 0);
    hv_domain_pause(good);
    assert_int_equal(hv_domain_start(bad), 0);
    assert_int_equal(hv_domain_wait(bad), 70);
    test_note("crash report: %s", hv_domain_crash_text(bad));
    assert_non_null(strstr(hv_domain_crash_text(bad), "no handler"));
    assert_non_null(strstr(hv_domain_crash_text(bad), "vector 6"));
    assert_int_equal(hv_domain_audit(bad, msg, sizeof(msg), NULL, NULL), 0);
    hv_domain_destroy(bad);
    /* the other domain runs on to its poweroff */
    assert_int_equal(hv_domain_audit(good, msg, sizeof(msg), NULL, NULL), 0);
    hv_domain_resume(good);
    assert_int_equal(hv_domain_wait(good), 0);
    hv_domain_console(good, con, sizeof(con));
    assert_non_null(strstr(con, "still-here"));
    hv_domain_destroy(good);
    hv_fini(&hv);
}

/*
 * iret with a frame that would resume at a non-canonical rip crashes the
 * domain, as Xen's do_iret does, even with a failsafe callback registered:
 * that callback is for failed segment loads, never an exception handler
 * of the guest's (it used to be delivered to the guest's vector 33, so
 * the test registers a handler there).
 */
static void test_bad_iret_crashes(void **state)
{
    static uint8_t img[ELFGEN_MAX];
    struct hv hv;
    struct domain *d;
    struct hv_domain_layout lay;
    size_t n = miniguest_image(img);
    struct iret_context c = {
        .rip = 0x0000800000000000ULL, /* non-canonical */
        .cs = FLAT_KERNEL_CS,
        .rflags = 0x200,
        .ss = FLAT_KERNEL_SS,
    };
    const uint64_t cb[6] = {VA, VA + 16, VA + 32, 0, 0, 0};
    const uint64_t none[6] = {0};
    struct trap_info traps[2] = {
        {.vector = 33, .cs = FLAT_KERNEL_CS, .address = VA + 48},
        {0},
    };
    uint64_t frame, table[6] = {0};
    (void)state;

    assert_int_equal(hv_init(&hv, 8192), 0);
    d = create(&hv, img, n, "hello-mini", 1);
    hv_domain_test_layout(d, &lay);
    frame = lay.start_info_va + 3072;
    c.rsp = frame;
    assert_int_equal(hv_domain_test_hypercall(d, 0, __HYPERVISOR_set_callbacks,
                                              cb, VA, frame),
                     0);
    table[0] = frame + 256;
    assert_int_equal(hv_domain_test_poke(d, table[0], traps, sizeof(traps)),
                     0);
    assert_int_equal(hv_domain_test_hypercall(d, 0, __HYPERVISOR_set_trap_table,
                                              table, VA, frame),
                     0);
    assert_int_equal(hv_domain_test_poke(d, frame, &c, sizeof(c)), 0);
    assert_string_equal(hv_domain_crash_text(d), "");
    (void)hv_domain_test_hypercall(d, 0, __HYPERVISOR_iret, none, VA, frame);
    test_note("crash report: %s", hv_domain_crash_text(d));
    assert_non_null(strstr(hv_domain_crash_text(d), "iret"));
    hv_domain_destroy(d);
    hv_fini(&hv);
}

static void test_bad_images(void **state)
{
    static uint8_t img[ELFGEN_MAX];
    struct hv hv;
    struct hv_domain_config cfg = {
        .mem_mib = 8, .nr_vcpus = 1, .console_fd = -1};
    struct domain *d = NULL;
    char err[256];
    size_t n = miniguest_image(img);
    (void)state;

    assert_int_equal(hv_init(&hv, 8192), 0);
    /* not an ELF */
    cfg.image = (const uint8_t *)"garbage";
    cfg.image_size = 7;
    assert_int_equal(hv_domain_create(&hv, &cfg, &d, err, sizeof(err)),
                     -ENOEXEC);
    test_note("garbage -> %s", err);
    /* truncated */
    cfg.image = img;
    cfg.image_size = n - 4096;
    assert_int_equal(hv_domain_create(&hv, &cfg, &d, err, sizeof(err)),
                     -EINVAL);
    test_note("truncated -> %s", err);
    /* too little memory for the start-of-day region */
    cfg.image_size = n;
    cfg.mem_mib = 1;
    assert_int_equal(hv_domain_create(&hv, &cfg, &d, err, sizeof(err)),
                     -ENOMEM);
    test_note("1 MiB -> %s", err);
    /* vCPU count out of range */
    cfg.mem_mib = 8;
    cfg.nr_vcpus = 1000;
    assert_int_equal(hv_domain_create(&hv, &cfg, &d, err, sizeof(err)),
                     -EINVAL);
    /* nothing leaked: a good domain still fits and the pool is clean */
    cfg.nr_vcpus = 1;
    cfg.cmdline = "after-errors";
    assert_int_equal(hv_domain_create(&hv, &cfg, &d, err, sizeof(err)), 0);
    assert_int_equal(hv_domain_start(d), 0);
    assert_int_equal(hv_domain_wait(d), 0);
    hv_domain_destroy(d);
    hv_fini(&hv);
}

static double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

/* Costs: the guest's timeline is split by the hypervisor's counters. */
static void test_costs(void **state)
{
    static uint8_t img[ELFGEN_MAX];
    struct hv hv;
    struct domain *d;
    struct hv_domain_stats st;
    size_t n = miniguest_image(img);
    double t0, t1, t2;
    (void)state;

    assert_int_equal(hv_init(&hv, 8192), 0);
    d = create(&hv, img, n, "bench", 1);
    t0 = now_us();
    assert_int_equal(hv_domain_start(d), 0);
    /* wait for the hypercall phase to end: 2000 xen_version calls */
    do {
        struct timespec ts = {0, 200000};
        nanosleep(&ts, NULL);
        hv_domain_stats(d, &st);
    } while (st.hypercalls[17] < 2000 && !hv_domain_stopped(d));
    t1 = now_us();
    assert_int_equal(hv_domain_wait(d), 0);
    t2 = now_us();
    hv_domain_stats(d, &st);
    assert_int_equal(st.hypercalls[17], 2000);
    assert_int_equal(st.bounces[13], 1000);
    test_note("forwarded hypercall (xen_version) round trip: %.1f us "
              "(2000 calls, boot included)",
              (t1 - t0) / 2000);
    test_note("exception bounce to the guest kernel and its iret hypercall "
              "back: %.1f us (1000 #GP from mov to CR3)",
              (t2 - t1) / 1000);
    hv_domain_destroy(d);
    hv_fini(&hv);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_crash_isolated),
        cmocka_unit_test(test_bad_iret_crashes),
        cmocka_unit_test(test_bad_images),
        cmocka_unit_test(test_costs),
    };
    test_require_kvm();
    return cmocka_run_group_tests(tests, NULL, NULL);
}
