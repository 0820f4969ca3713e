/*
 * test_dmstate.c - device-model state through a migration stream, on real
 * KVM (argv[1] the guest kernel, argv[2] the test device model): a guest
 * with the test device attached has two of the device's registers set; a
 * live save carries the device's state (one DEVICE record); the restored
 * domain keeps it until a fresh test device attaches, which then reads
 * back the registers the source's had.  A restored domain with no device
 * model attached refuses to hand the state over (-ENODEV, and says which).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "../ioreq/dmproc.h"
#include "hv/hv.h"
#include "ioreq/ioreq.h"
#include "migrate/migrate.h"
#include "testlib.h"

#define PORT 0x5000
#define REG_VAL 0x0c
#define REG_DELAY 0x1c

static uint8_t *image;
static size_t image_size;
static const char *dm_exe;

static struct domain *guest(struct hv *hv)
{
    struct domain *d = NULL;
    char err[256], con[4096];
    struct hv_domain_config cfg = {
        .image = image,
        .image_size = image_size,
        .mem_mib = 16,
        .nr_vcpus = 2,
        .cmdline = "dirty pages=64 passes=0",
        .console_fd = -1,
    };
    double t0;

    if (hv_domain_create(hv, &cfg, &d, err, sizeof(err)) < 0)
        fail_msg("create: %s", err);
    assert_int_equal(hv_domain_start(d), 0);
    t0 = test_now_s();
    do {
        test_sleep_ms(5);
        hv_domain_console(d, con, sizeof(con));
    } while (!strstr(con, "dirty: start") && test_now_s() - t0 < 60);
    assert_non_null(strstr(con, "dirty: start"));
    return d;
}

static uint64_t reg(struct domain *d, unsigned off, bool write, uint64_t v)
{
    assert_int_equal(ioreq_access(hv_domain_ioreq(d), 0, DM_RANGE_PIO,
                                  PORT + off, 4, write, &v),
                     0);
    return v & 0xffffffffu;
}

static struct domain *restore(struct hv *hv, int fd,
                              struct migrate_restore_stats *rs)
{
    struct migrate_target tgt;
    struct stream_chan c;
    char err[256];
    struct domain *d;

    lseek(fd, 0, SEEK_SET);
    stream_chan_fd(&c, fd);
    assert_int_equal(hv_domain_target_init(hv, -1, &tgt), 0);
    if (migrate_restore(&tgt, &c, rs, err, sizeof(err)) < 0)
        fail_msg("restore: %s", err);
    d = hv_domain_target_fini(&tgt);
    assert_non_null(d);
    return d;
}

static void test_dm_state(void **state)
{
    struct hv hv;
    struct domain *d, *d2;
    struct migrate_source src;
    struct migrate_stats st;
    struct migrate_restore_stats rs;
    struct migrate_save_opts o = {.live = true, .leave_paused = true,
                                  .max_rounds = 2};
    struct stream_chan c;
    char err[256];
    pid_t pid[2];
    int fd = memfd_create("stream", 0), rc;

    (void)state;
    assert_true(fd >= 0);
    assert_int_equal(hv_init(&hv, 4 * (16 << 8) + 2048), 0);
    d = guest(&hv);
    assert_int_equal(dmproc_start(hv_domain_ioreq(d), dm_exe, NULL, &pid[0]),
                     0);
    (void)reg(d, REG_VAL, true, 0xc0ffee11);
    (void)reg(d, REG_DELAY, true, 77);

    assert_int_equal(hv_domain_source_init(d, &src), 0);
    stream_chan_fd(&c, fd);
    if (migrate_save(&src, &c, &o, &st, err, sizeof(err)) < 0)
        fail_msg("save: %s", err);
    hv_domain_source_fini(&src);
    assert_int_equal(st.devices, 1);

    d2 = restore(&hv, fd, &rs);
    assert_int_equal(rs.devices, 1);
    assert_int_equal(hv_domain_dm_pending(d2), 1);
    /* no device model attached yet: refused, and said so */
    assert_int_equal(hv_domain_dm_restore_states(d2, err, sizeof(err)),
                     -ENODEV);
    assert_non_null(strstr(err, "device model 0"));
    assert_int_equal(dmproc_start(hv_domain_ioreq(d2), dm_exe, NULL, &pid[1]),
                     0);
    /* before the state: the fresh device's registers are zero */
    assert_int_equal(reg(d2, REG_VAL, false, 0), 0);
    if ((rc = hv_domain_dm_restore_states(d2, err, sizeof(err))) < 0)
        fail_msg("device state: %s", err);
    assert_int_equal(hv_domain_dm_pending(d2), 0);
    assert_int_equal(reg(d2, REG_VAL, false, 0), 0xc0ffee11);
    assert_int_equal(reg(d2, REG_DELAY, false, 0), 77);
    test_note("the test device's registers moved with the domain: VAL "
              "%#x, DELAY %u",
              0xc0ffee11u, 77u);

    hv_domain_shutdown(d, 0);
    hv_domain_resume(d);
    hv_domain_wait(d);
    hv_domain_destroy(d);
    hv_domain_destroy(d2);
    for (unsigned i = 0; i < 2; i++)
        (void)dmproc_wait(pid[i], 10000);
    hv_fini(&hv);
    close(fd);
}

int main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dm_state),
    };

    if (argc < 3) {
        fprintf(stderr, "usage: %s <pvkernel> <memvisor-dm-test>\n", argv[0]);
        return 2;
    }
    dm_exe = argv[2];
    test_require_kvm();
    image = test_load_file(argv[1], &image_size);
    if (!image)
        return 1;
    return cmocka_run_group_tests(tests, NULL, NULL);
}
