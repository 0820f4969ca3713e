/*
 * test_ioreq_guest.c - the PV guest kernel (guest/pvkernel, argv[1]) drives
 * the test device (memvisor-dm-test, argv[2], a child process attached by a
 * socket pair) with its `dev` workload on 2 vCPUs: port I/O forwarded from
 * its ring 3, page tracking of a page it then gives back, and a deferred
 * DMA into a page it gives back, which must have finished when the
 * hypercall returns.  With the vCPU's wait for acknowledgements switched
 * off that check must fail.  Hostile device models (never acknowledges,
 * dies at its first request): memvisor stays up, the domain is not
 * crashed by memvisor, the server is cut off with a clear reason, the
 * guest sees its device fail and ends on its own.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "dmproc.h"
#include "hv/hv.h"
#include "ioreq/ioreq.h"
#include "testlib.h"

static const char *image_path, *dm_exe, *block_exe, *memvisor_exe;
static uint8_t *image;
static size_t image_size;

struct run {
    int status;
    char con[65536];
    char reason[IOREQ_REASON_MAX];
    enum ioreq_state state;
    struct ioreq_stats st;
    bool crashed_by_memvisor;
    double secs;
};

/* Start prog --fd N extra... as a child and attach it to d. */
static pid_t start_child(struct domain *d, const char *prog, const char *a1,
                         const char *a2)
{
    int sv[2];
    char fdtxt[16];
    pid_t pid;

    assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv),
                     0);
    snprintf(fdtxt, sizeof(fdtxt), "%d", sv[1]);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        const char *argv[] = {prog, "--fd", fdtxt, a1, a2, NULL};
        fcntl(sv[1], F_SETFD, 0);
        execv(prog, (char *const *)(uintptr_t)argv);
        _exit(127);
    }
    close(sv[1]);
    assert_true(hv_domain_attach_dm(d, sv[0], pid) >= 0);
    return pid;
}

static void run_dev_mmio(const char *flag, bool no_wait, bool block, bool mmio,
                         bool iomem_any, struct run *out)
{
    struct hv hv;
    struct domain *d = NULL;
    char err[256];
    struct hv_domain_config cfg = {
        .image = image,
        .image_size = image_size,
        .mem_mib = 64,
        .nr_vcpus = 2,
        .cmdline = mmio    ? "dev rounds=3 block=1 mmio=1"
                   : block ? "dev rounds=3 block=1"
                           : "dev rounds=3",
        .console_fd = -1,
    };
    char path[] = "/tmp/memvisor-guestblkXXXXXX";
    pid_t pid, bpid = -1;
    int fd = -1;
    double t0;

    memset(out, 0, sizeof(*out));
    assert_int_equal(hv_init(&hv, (64 << 8) + 4096), 0);
    if (hv_domain_create(&hv, &cfg, &d, err, sizeof(err)) < 0)
        fail_msg("create: %s", err);
    if (no_wait)
        hv_domain_test_no_inval_wait(d);
    if (iomem_any)
        hv_domain_test_iomem_any(d);
    /* the device models, child processes on socket pairs */
    pid = mmio ? start_child(d, dm_exe, "--mmio", "0xf0000000")
               : start_child(d, dm_exe, flag, NULL);
    if (block) {
        static uint8_t zero[1 << 20];
        fd = mkstemp(path);
        assert_true(fd >= 0);
        assert_int_equal(write(fd, zero, sizeof(zero)), (long)sizeof(zero));
        bpid = start_child(d, block_exe, "--file", path);
    }
    t0 = test_now_s();
    assert_int_equal(hv_domain_start(d), 0);
    while (!hv_domain_stopped(d) && test_now_s() - t0 < 100)
        test_sleep_ms(20);
    out->status = hv_domain_wait(d);
    out->secs = test_now_s() - t0;
    hv_domain_console(d, out->con, sizeof(out->con));
    out->crashed_by_memvisor = hv_domain_crash_text(d)[0] != 0;
    assert_int_equal(ioreq_server_info(hv_domain_ioreq(d), 0, &out->state,
                                       NULL, out->reason, sizeof(out->reason)),
                     0);
    ioreq_get_stats(hv_domain_ioreq(d), &out->st);
    hv_domain_destroy(d);
    hv_fini(&hv);
    (void)dmproc_wait(pid, 5000);
    if (bpid > 0)
        (void)dmproc_wait(bpid, 5000);
    if (fd >= 0) {
        close(fd);
        unlink(path);
    }
}

static void run_dev(const char *flag, bool no_wait, bool block,
                    struct run *out)
{
    run_dev_mmio(flag, no_wait, block, false, false, out);
}

static void show(const char *what, const struct run *r)
{
    const char *line = strstr(r->con, "\ndev: ");
    const char *last = NULL;
    for (const char *p = line; p; p = strstr(p + 1, "\ndev: "))
        if (strncmp(p + 6, "start", 5) && strncmp(p + 6, "pass", 4))
            last = p;
    test_note("%s: status %d in %.2f s; %llu requests (%llu failed), %llu "
              "invalidations (vCPUs waited %.1f ms in all), %llu tracked "
              "stores, %llu pages reported dirty; server %s%s%s",
              what, r->status, r->secs, (unsigned long long)r->st.ioreqs,
              (unsigned long long)r->st.failed_ioreqs,
              (unsigned long long)r->st.invalidations,
              r->st.inval_wait_ns / 1e6,
              (unsigned long long)r->st.track_writes,
              (unsigned long long)r->st.dirty_pages,
              r->state == IOREQ_LIVE ? "live" : "cut: ",
              r->state == IOREQ_LIVE ? "" : r->reason, "");
    if (last) {
        const char *end = strchr(last + 1, '\n');
        test_note("  %.*s", (int)(end ? end - last - 1 : 200), last + 1);
    }
}

static void test_dev(void **state)
{
    static struct run r;
    (void)state;

    run_dev_mmio(NULL, false, true, true, false, &r);
    show("dev", &r);
    if (r.status != 0 || !strstr(r.con, "dev: pass") ||
        !strstr(r.con, "guest: pass")) {
        test_note_lines("console", r.con);
        fail_msg("dev workload failed (console above)");
    }
    assert_int_equal(r.state, IOREQ_LIVE);
    assert_true(r.st.invalidations >= 6);
    assert_true(r.st.track_writes >= 3 * 64);
    assert_true(r.st.dirty_pages > 0);
    assert_non_null(strstr(r.con, "block-ops=9"));
    assert_non_null(strstr(r.con, "mmio-ops=3 mmio-refused=3"));
}

/* pv's I/O-memory rule off: any frame outside the pool is mappable, and
 * the guest's check that an unclaimed one is refused fails. */
static void test_iomem_rule_off(void **state)
{
    static struct run r;
    (void)state;

    run_dev_mmio(NULL, false, true, true, true, &r);
    show("dev, any I/O memory mappable", &r);
    assert_true(r.status != 0);
    assert_non_null(strstr(r.con, "an I/O frame nobody claims was mappable"));
}

/* The vCPU does not wait for INVAL_ACK: the guest must see its DMA still
 * pending after giving the page back. */
static void test_dev_rule_off(void **state)
{
    static struct run r;
    (void)state;

    run_dev(NULL, true, false, &r);
    show("dev, acks not awaited", &r);
    assert_true(r.status != 0);
    assert_non_null(strstr(r.con, "DMA into the frame still pending"));
}

static void hostile(const char *flag, const char *needle)
{
    static struct run r;

    run_dev(flag, false, false, &r);
    show(flag, &r);
    /* memvisor is up (we are here), did not crash the domain; the guest
     * saw its device fail and reported it */
    assert_false(r.crashed_by_memvisor);
    assert_int_equal(r.state, IOREQ_CUT);
    assert_non_null(strstr(r.reason, needle));
    assert_true(r.status != 0 && r.status != 70);
    assert_non_null(strstr(r.con, "dev: FAIL"));
}

static void test_never_acks(void **state)
{
    (void)state;
    hostile("--never-ack", "no INVAL_ACK");
}

static void test_dies(void **state)
{
    (void)state;
    hostile("--crash-on-io", "closed its socket");
}

/* `memvisor run --device test --device block:FILE`: the command starts
 * the device models as children; an unknown device is a usage error. */
static void test_cli(void **state)
{
    char path[] = "/tmp/memvisor-cliblkXXXXXX", cmd[1024];
    static char out[65536];
    int status;
    (void)state;

    assert_int_equal(test_make_file(path, 1 << 20), 0);
    snprintf(cmd, sizeof(cmd),
             "%s run %s --vcpus 2 --cmdline 'dev block=1 rounds=2' "
             "--device test --device block:%s 2>&1",
             memvisor_exe, image_path, path);
    status = test_run_cmd(cmd, out, sizeof(out));
    unlink(path);
    if (status != 0 || !strstr(out, "dev: pass") ||
        !strstr(out, "memvisor: devices: 2 attached, 0 cut off")) {
        test_note_lines("memvisor run", out);
        fail_msg("memvisor run with devices failed (output above)");
    }
    snprintf(cmd, sizeof(cmd), "%s run %s --device floppy 2>&1", memvisor_exe,
             image_path);
    assert_int_equal(test_run_cmd(cmd, out, sizeof(out)), 2);
    assert_non_null(strstr(out, "unknown device \"floppy\""));
}

static int load(void **state)
{
    (void)state;
    image = test_load_file(image_path, &image_size);
    return image ? 0 : -1;
}

static int unload(void **state)
{
    (void)state;
    free(image);
    return 0;
}

int main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dev),
        cmocka_unit_test(test_dev_rule_off),
        cmocka_unit_test(test_iomem_rule_off),
        cmocka_unit_test(test_never_acks),
        cmocka_unit_test(test_dies),
        cmocka_unit_test(test_cli),
    };

    if (argc < 5) {
        fprintf(stderr,
                "usage: test_ioreq_guest PVKERNEL DM-TEST DM-BLOCK MEMVISOR\n");
        return 2;
    }
    memvisor_exe = argv[4];
    image_path = argv[1];
    dm_exe = argv[2];
    block_exe = argv[3];
    signal(SIGPIPE, SIG_IGN);
    test_require_kvm();
    return cmocka_run_group_tests(tests, load, unload);
}
