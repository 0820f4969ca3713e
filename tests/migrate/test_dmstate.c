/*
 * test_dmstate.c - device-model state through a migration stream, on real
 * KVM (argv[1] the guest kernel, argv[2] the test device model): a guest
 * with the test device attached has two of the device's registers set; a
 * live save carries the device's state (one DEVICE record); the restored
 * domain keeps it until a fresh test device attaches, which then reads
 * back the registers the source's had.  A restored domain with no device
 * model attached refuses to hand the state over (-ENODEV, and says which).
 *
 * Device models quiesced at the final pause: the test device has a
 * deferred DMA in flight (1.5 s to go) when a save pauses the guest; the
 * QUIESCE makes it write now, its page in the dirty log before the final
 * harvest, and the destination has the write.  With the quiesce switched
 * off (test_no_device_quiesce) the write lands at the source after the
 * save and the destination never sees it: the same check fails.  A save
 * that fails after the quiesce resumes the device model: a copy runs
 * (not EBUSY) and a new deferred DMA completes.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "../ioreq/dmproc.h"
#include "frame/frame.h"
#include "hv/hv.h"
#include "ioreq/ioreq.h"
#include "migrate/migrate.h"
#include "testlib.h"

#define PORT 0x5000
#define REG_SRC 0x00
#define REG_DST 0x04
#define REG_LEN 0x08
#define REG_VAL 0x0c
#define REG_CMD 0x10
#define REG_STATUS 0x14
#define REG_DELAY 0x1c
#define REG_DMA_STATE 0x20
#define DMA_WORD 0x5eedf00du

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

/* A plain data page of the guest, not its p2m list, from the top (a free
 * page of the guest kernel's); *mfn its frame: a PV guest gives its
 * devices machine addresses, so the device's gfns are mfns. */
static uint64_t data_pfn(struct migrate_source *src, uint64_t *frame)
{
    uint64_t p2mf[8], n = (src->dom.nr_pages + 511) / 512;

    assert_true(n <= 8);
    assert_int_equal(src->p2m_frames(src->arg, p2mf, n), 0);
    for (uint64_t pfn = src->dom.nr_pages - 1; pfn > 0; pfn--) {
        uint64_t mfn;
        uint32_t info;
        bool listed = false;

        for (uint64_t i = 0; i < n; i++)
            listed |= p2mf[i] == pfn;
        if (listed || pfn == src->dom.start_info_pfn ||
            src->pfn_to_mfn(src->arg, pfn, &mfn) < 0 ||
            src->types(src->arg, &mfn, 1, &info) < 0 || info)
            continue;
        *frame = mfn;
        return pfn;
    }
    fail_msg("no plain page");
    return 0;
}

static bool all_word(const uint8_t *p)
{
    for (unsigned i = 0; i < 4096; i += 4) {
        uint32_t w;
        memcpy(&w, p + i, 4);
        if (w != DMA_WORD)
            return false;
    }
    return true;
}

static const uint8_t *page_of(struct hv *hv, struct domain *d, uint64_t pfn)
{
    uint64_t mfn;

    assert_int_equal(hv_domain_p2m_lookup(d, pfn, &mfn), 0);
    return frames_ptr(&hv->frames, _mfn(mfn));
}

/* A deferred DMA in flight at the final pause of an offline save; then
 * the save restored.  Whether the destination has the DMA's write. */
static bool dma_case(bool quiesce)
{
    struct hv hv;
    struct domain *d, *d2;
    struct migrate_source src;
    struct migrate_stats st;
    struct migrate_restore_stats rs;
    struct migrate_save_opts o = {.leave_paused = true,
                                  .test_no_device_quiesce = !quiesce};
    struct stream_chan c;
    char err[256];
    pid_t pid;
    uint64_t pfn, mfn, t0;
    bool there;
    int fd = memfd_create("stream", 0);

    assert_true(fd >= 0);
    assert_int_equal(hv_init(&hv, 4 * (16 << 8) + 2048), 0);
    d = guest(&hv);
    assert_int_equal(dmproc_start(hv_domain_ioreq(d), dm_exe, NULL, &pid), 0);
    assert_int_equal(hv_domain_source_init(d, &src), 0);
    pfn = data_pfn(&src, &mfn);
    (void)reg(d, REG_DST, true, mfn);
    (void)reg(d, REG_LEN, true, 4096);
    (void)reg(d, REG_VAL, true, DMA_WORD);
    (void)reg(d, REG_DELAY, true, 1500);
    (void)reg(d, REG_CMD, true, 4);
    assert_int_equal(reg(d, REG_STATUS, false, 0), 0);
    assert_int_equal(reg(d, REG_DMA_STATE, false, 0), 1); /* in flight */
    stream_chan_fd(&c, fd);
    if (migrate_save(&src, &c, &o, &st, err, sizeof(err)) < 0)
        fail_msg("save: %s", err);
    hv_domain_source_fini(&src);
    assert_int_equal(st.devices_quiesced, quiesce ? 1 : 0);
    test_note("%s: after the save the DMA is %s", quiesce ? "quiesced" :
              "not quiesced", reg(d, REG_DMA_STATE, false, 0) == 2 ?
              "done" : "still pending");
    d2 = restore(&hv, fd, &rs);
    /* the DMA's write has landed at the source by now, or soon */
    t0 = (uint64_t)(test_now_s() * 1000);
    while (reg(d, REG_DMA_STATE, false, 0) != 2 &&
           (uint64_t)(test_now_s() * 1000) - t0 < 10000)
        test_sleep_ms(20);
    assert_true(all_word(page_of(&hv, d, pfn)));
    there = all_word(page_of(&hv, d2, pfn));
    test_note("pfn %#llx at the destination: %s", (unsigned long long)pfn,
              there ? "the DMA's write" : "without the DMA's write (lost)");
    hv_domain_shutdown(d, 0);
    hv_domain_resume(d);
    hv_domain_wait(d);
    hv_domain_destroy(d);
    hv_domain_destroy(d2);
    (void)dmproc_wait(pid, 10000);
    hv_fini(&hv);
    close(fd);
    return there;
}

static void test_dm_quiesce(void **state)
{
    (void)state;
    assert_true(dma_case(true));
    /* the rule switched off: the write comes after the final harvest */
    assert_false(dma_case(false));
}

/* A save that fails after the quiesce: the device model is resumed. */
static void test_dm_quiesce_undone(void **state)
{
    struct hv hv;
    struct domain *d;
    struct migrate_source src;
    struct migrate_stats st;
    struct migrate_save_opts o = {0};
    struct stream_chan c;
    char err[256];
    pid_t pid;
    uint64_t mfn, t0;
    int fd = memfd_create("stream", 0), rc;

    (void)state;
    assert_true(fd >= 0);
    assert_int_equal(hv_init(&hv, 2 * (16 << 8) + 2048), 0);
    d = guest(&hv);
    assert_int_equal(dmproc_start(hv_domain_ioreq(d), dm_exe, NULL, &pid), 0);
    assert_int_equal(hv_domain_source_init(d, &src), 0);
    (void)data_pfn(&src, &mfn);
    (void)reg(d, REG_DST, true, mfn);
    (void)reg(d, REG_LEN, true, 4096);
    (void)reg(d, REG_VAL, true, DMA_WORD);
    (void)reg(d, REG_DELAY, true, 1500);
    (void)reg(d, REG_CMD, true, 4);
    stream_chan_fd(&c, fd);
    c.fail_after = 3; /* DOMAIN, P2M frames, ROUND: the page data fails */
    rc = migrate_save(&src, &c, &o, &st, err, sizeof(err));
    hv_domain_source_fini(&src);
    test_note("the save failed after the quiesce: %s", err);
    assert_true(rc < 0);
    assert_int_equal(st.devices_quiesced, 1);
    /* quiesced, the DMA ran at once */
    assert_int_equal(reg(d, REG_DMA_STATE, false, 0), 2);
    /* resumed: a copy runs (EBUSY while quiesced), a new DMA completes */
    (void)reg(d, REG_SRC, true, mfn);
    (void)reg(d, REG_CMD, true, 1);
    assert_int_equal(reg(d, REG_STATUS, false, 0), 0);
    (void)reg(d, REG_DELAY, true, 10);
    (void)reg(d, REG_CMD, true, 4);
    t0 = (uint64_t)(test_now_s() * 1000);
    while (reg(d, REG_DMA_STATE, false, 0) != 2 &&
           (uint64_t)(test_now_s() * 1000) - t0 < 5000)
        test_sleep_ms(10);
    assert_int_equal(reg(d, REG_DMA_STATE, false, 0), 2);
    hv_domain_shutdown(d, 0);
    hv_domain_wait(d);
    hv_domain_destroy(d);
    (void)dmproc_wait(pid, 10000);
    hv_fini(&hv);
    close(fd);
}

int main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dm_state),
        cmocka_unit_test(test_dm_quiesce),
        cmocka_unit_test(test_dm_quiesce_undone),
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
