/*
 * test_hvm_dm.c - device models serving an HVM guest, on real KVM: the
 * PVH workload guest (guest/pvh, argv[1]) in its device mode (dev.h)
 * drives the test device (memvisor-dm-test, argv[2]) by port I/O and
 * MMIO, and the block device (memvisor-dm-block, argv[3]), both child
 * processes attached by socket pairs, from its ring 3 under its own page
 * tables; a p2m where gfn != mfn, so the device models map by the p2m.
 *
 *  - dev: fill, copy, checksum, deferred DMA, page tracking of a page the
 *    guest stores to, the same registers by MMIO, block I/O: every result
 *    checked by the guest; the device-written pages (which the guest only
 *    reads) are in the dirty log, by gfn; the domain's invariants hold.
 *    With the device models' dirty reports dropped (the rule off) those
 *    pages are missing from the log: the check above fails.
 *  - claims: ranges the platform serves itself (the serial port, the
 *    LAPIC page) and MMIO inside RAM are refused.
 *  - invalidate: a gfn under a device's deferred DMA is taken out of the
 *    p2m while the guest runs: the transaction returns (and the guest
 *    runs on) only after the device model acknowledged, so its DMA has
 *    landed; with the wait for acknowledgements off, the check fails.
 *    A device model that never acknowledges is cut off after the timeout
 *    and the guest runs on.
 *  - hostile: a device model that dies at its first request, one that
 *    answers with garbage: memvisor cuts it off with a clear reason, the
 *    guest sees its device answer all ones, reports it and runs on to its
 *    last heartbeat and its own end (status 1: its verdict).
 *  - track-gone: a page the guest keeps watched: its neighbours taken out
 *    and put back announce nothing to the device, the page itself once.
 *  - cli: `memvisor run --hvm --device test:mmio=GPA --device block:FILE`.
 *  - migrate: a live save while the device fills a page at every
 *    heartbeat (one fill made after the first round sent the page),
 *    restored into a new domain whose new device model gets the saved
 *    state: the guest finds the device's last fill and its registers at
 *    every heartbeat, and the test finds the device-written pages equal to
 *    the source's at its final pause.  With the device's DIRTY reports
 *    dropped at the source, the page filled after the first round is
 *    stale at the destination (and the guest finds its last fill gone).  A
 *    deferred DMA in flight at the final pause arrives (the quiesce runs
 *    it first); with the quiesce off the guest at the destination finds
 *    it never came.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "dmproc.h"
#include "hv/hv.h"
#include "ioreq/ioreq.h"
#include "migrate/migrate.h"
#include "testlib.h"

#define MEM_MIB 32
#define POOL_FRAMES ((MEM_MIB << 8) + 8192)
#define DEV_MMIO "0xf0000000"

static const char *image_path, *dm_exe, *block_exe, *memvisor_exe;
static uint8_t *image;
static size_t image_size;

struct fix {
    struct hv hv;
    struct domain *d;
    pid_t pids[2];
    unsigned nr_pids;
    char blk_path[64];
    int blk_fd;
};

static void fix_create(struct fix *x, const char *cmdline)
{
    char err[256] = "";
    struct hv_domain_config cfg = {
        .kind = HV_DOMAIN_HVM,
        .image = image,
        .image_size = image_size,
        .mem_mib = MEM_MIB,
        .nr_vcpus = 1,
        .cmdline = cmdline,
        .console_fd = -1,
    };
    int r;

    memset(x, 0, sizeof(*x));
    x->blk_fd = -1;
    assert_int_equal(hv_init(&x->hv, POOL_FRAMES), 0);
    r = hv_domain_create(&x->hv, &cfg, &x->d, err, sizeof(err));
    if (r < 0)
        test_note("create: %s", err);
    assert_int_equal(r, 0);
    assert_true(hv_domain_is_hvm(x->d));
}

/* Start prog --fd N a1 a2 a3 a4 as a child and attach it: the attach's
 * result (the server index or -errno). */
static int start_child(struct fix *x, const char *prog, const char *a1,
                       const char *a2, const char *a3, const char *a4)
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
        const char *argv[] = {prog, "--fd", fdtxt, a1, a2, a3, a4, NULL};
        fcntl(sv[1], F_SETFD, 0);
        execv(prog, (char *const *)(uintptr_t)argv);
        _exit(127);
    }
    close(sv[1]);
    assert_true(x->nr_pids < 2);
    x->pids[x->nr_pids++] = pid;
    return hv_domain_attach_dm(x->d, sv[0], pid);
}

static void start_block(struct fix *x)
{
    static uint8_t zero[1 << 20];

    snprintf(x->blk_path, sizeof(x->blk_path), "/tmp/memvisor-hvmblkXXXXXX");
    x->blk_fd = mkstemp(x->blk_path);
    assert_true(x->blk_fd >= 0);
    assert_int_equal(write(x->blk_fd, zero, sizeof(zero)), (long)sizeof(zero));
    assert_true(start_child(x, block_exe, "--file", x->blk_path, NULL, NULL) >=
                0);
}

static void fix_destroy(struct fix *x)
{
    hv_domain_destroy(x->d);
    hv_fini(&x->hv);
    for (unsigned i = 0; i < x->nr_pids; i++)
        (void)dmproc_wait(x->pids[i], 5000);
    if (x->blk_fd >= 0) {
        close(x->blk_fd);
        unlink(x->blk_path);
    }
}

static const char *console(struct fix *x)
{
    static char buf[65536];

    hv_domain_console(x->d, buf, sizeof(buf));
    return buf;
}

/* Wait (at most secs) until the console has a whole line (its newline
 * arrived) with s; where s starts, or NULL. */
static const char *wait_console(struct fix *x, const char *s, double secs)
{
    double t0 = test_now_s();

    for (;;) {
        const char *p = strstr(console(x), s);
        if (p && strchr(p, '\n'))
            return p;
        if (test_now_s() - t0 >= secs || hv_domain_stopped(x->d))
            return NULL;
        test_sleep_ms(2);
    }
}

static int run_to_end(struct fix *x, double *secs)
{
    double t0 = test_now_s();
    int st;

    while (!hv_domain_stopped(x->d) && test_now_s() - t0 < 100)
        test_sleep_ms(20);
    if (!hv_domain_stopped(x->d))
        hv_domain_shutdown(x->d, 99);
    st = hv_domain_wait(x->d);
    if (secs)
        *secs = test_now_s() - t0;
    return st;
}

static void expect_clean(struct domain *d, const char *when)
{
    char msg[256];
    int r = hv_domain_hvm_check(d, msg, sizeof(msg));

    if (r < 0)
        test_note("checker after %s: %s", when, msg);
    assert_int_equal(r, 0);
}

static void show_stats(struct fix *x, const char *what, double secs)
{
    struct ioreq_stats st;
    struct hv_domain_stats ds;

    ioreq_get_stats(hv_domain_ioreq(x->d), &st);
    hv_domain_stats(x->d, &ds);
    test_note("%s: %.2f s; %" PRIu64 " requests (%" PRIu64 " failed; port "
              "%" PRIu64 ", MMIO %" PRIu64 " forwarded), %" PRIu64
              " invalidations, %" PRIu64 " tracked stores, %" PRIu64
              " pages reported dirty; servers %" PRIu64 " live %" PRIu64 " cut",
              what, secs, st.ioreqs, st.failed_ioreqs, ds.pio_forwarded,
              ds.mmio_forwarded, st.invalidations, st.track_writes,
              st.dirty_pages, st.live, st.cut);
}

/* The gfns the guest says only the devices write ("device-written gfns
 * a b c ..."): how many (at most max). */
static unsigned device_gfns(const char *con, uint64_t *out, unsigned max)
{
    const char *p = strstr(con, "dev: device-written gfns");
    unsigned n = 0;

    if (!p)
        return 0;
    p += strlen("dev: device-written gfns");
    while (n < max && *p == ' ') {
        char *end;
        out[n] = strtoull(p + 1, &end, 16);
        if (end == p + 1)
            break;
        n++;
        p = end;
    }
    return n;
}

struct dev_run {
    int status;
    unsigned nr_gfns, logged;
    uint64_t gfns[8];
    struct ioreq_stats st;
    struct hv_domain_stats ds;
    char con[65536];
};

/* The guest's device mode with both devices, port I/O and MMIO; the
 * device-written gfns looked up in the log harvested after the run. */
static void run_dev(bool drop_dirty, struct dev_run *out)
{
    static uint64_t logged[MEM_MIB << 8];
    struct fix x;
    uint64_t n = 0;
    double secs;

    memset(out, 0, sizeof(*out));
    fix_create(&x, "dev=3 dev_mmio=" DEV_MMIO " dev_block=1 dev_hb=1 mem=4 "
                   "secs=1 hb=100");
    if (drop_dirty)
        hv_domain_test_dm_drop_dirty(x.d);
    assert_int_equal(start_child(&x, dm_exe, "--mmio", DEV_MMIO, NULL, NULL),
                     0);
    start_block(&x);
    /* the loader's writes out of the way: from here on the log is the
     * guest's stores and the devices' reports */
    assert_int_equal(
        hv_domain_dirty_harvest_gfns(x.d, logged, MEM_MIB << 8, &n), 0);
    assert_int_equal(hv_domain_start(x.d), 0);
    out->status = run_to_end(&x, &secs);
    show_stats(&x, drop_dirty ? "dev, DIRTY reports dropped" : "dev", secs);
    snprintf(out->con, sizeof(out->con), "%s", console(&x));
    ioreq_get_stats(hv_domain_ioreq(x.d), &out->st);
    hv_domain_stats(x.d, &out->ds);
    expect_clean(x.d, "the run");
    assert_int_equal(
        hv_domain_dirty_harvest_gfns(x.d, logged, MEM_MIB << 8, &n), 0);
    out->nr_gfns = device_gfns(out->con, out->gfns, 8);
    for (unsigned i = 0; i < out->nr_gfns; i++) {
        bool found = false;
        uint64_t mfn = 0;
        for (uint64_t k = 0; k < n && !found; k++)
            found = logged[k] == out->gfns[i];
        out->logged += found;
        assert_int_equal(hv_domain_hvm_gfn(x.d, out->gfns[i], &mfn), 0);
        test_note("device-written gfn %#" PRIx64 " (mfn %#" PRIx64 "): %s",
                  out->gfns[i], mfn, found ? "in the dirty log" : "NOT logged");
    }
    test_note("%" PRIu64 " pages in the log after the run", n);
    fix_destroy(&x);
}

static void test_dev(void **state)
{
    static struct dev_run r;
    (void)state;

    run_dev(false, &r);
    if (r.status != 0 || !strstr(r.con, "dev: pass") ||
        !strstr(r.con, "pvh-workload: done")) {
        test_note_lines("console", r.con);
        fail_msg("the guest's device mode failed (console above)");
    }
    assert_non_null(strstr(r.con, "dev: rounds=3 ops=9 dma=3 watched=192 "
                                  "mmio-ops=6 block-ops=6"));
    assert_non_null(strstr(r.con, "failures=0"));
    {
        const char *rt = strstr(r.con, "dev: round trip");
        assert_non_null(rt);
        test_note("%.*s", (int)strcspn(rt, "\r\n"), rt);
    }
    assert_true(r.st.live == 2 && r.st.cut == 0);
    assert_int_equal(r.st.failed_ioreqs, 0);
    assert_int_equal(r.st.track_writes, 3 * 64);
    assert_true(r.ds.mmio_forwarded >= 3 * 9);
    assert_true(r.ds.pio_forwarded > 0);
    assert_true(r.st.dirty_pages > 0);
    /* DESIGN invariant 6: the devices' writes are in the log */
    assert_int_equal(r.nr_gfns, 5);
    assert_int_equal(r.logged, r.nr_gfns);
}

/* The rule off: the devices' reports are dropped; the same check finds
 * their pages missing from the log (a migration would not resend them). */
static void test_dev_dirty_rule_off(void **state)
{
    static struct dev_run r;
    (void)state;

    run_dev(true, &r);
    assert_int_equal(r.nr_gfns, 5);
    test_note("with DIRTY reports dropped: %u of %u device-written pages "
              "logged",
              r.logged, r.nr_gfns);
    assert_true(r.logged < r.nr_gfns);
}

/* Claims of what the platform serves itself, or of RAM, are refused. */
static void test_claims(void **state)
{
    struct fix x;
    (void)state;

    fix_create(&x, "dev=1");
    /* COM1 */
    assert_int_equal(start_child(&x, dm_exe, "--port", "0x3f8", NULL, NULL),
                     -EINVAL);
    /* the LAPIC's page */
    assert_true(start_child(&x, dm_exe, "--port", "0x6000", "--mmio",
                            "0xfee00000") < 0);
    fix_destroy(&x);
    fix_create(&x, "dev=1");
    /* inside the guest's RAM space */
    assert_true(start_child(&x, dm_exe, "--mmio", "0x100000", NULL, NULL) < 0);
    /* and a good one still attaches */
    assert_int_equal(start_child(&x, dm_exe, "--mmio", DEV_MMIO, NULL, NULL),
                     0);
    fix_destroy(&x);
}

struct inval_run {
    int status;
    bool landed;
    double txn_ms;
    struct ioreq_stats st;
    char reason[IOREQ_REASON_MAX];
    enum ioreq_state state;
    char con[65536];
};

/* The device's deferred DMA (1.5 s) to a gfn, which the test takes out of
 * the p2m meanwhile and puts back; has the DMA landed when the removal
 * returned? */
static void run_inval(bool no_wait, const char *dm_flag, struct inval_run *out)
{
    struct fix x;
    const char *p;
    unsigned gfn;
    uint32_t word = 0;
    double t0;

    memset(out, 0, sizeof(*out));
    fix_create(&x, "dev=1 dev_delay=1500 mem=4 secs=1 hb=100");
    if (no_wait)
        hv_domain_test_no_inval_wait(x.d);
    assert_int_equal(start_child(&x, dm_exe, dm_flag, NULL, NULL, NULL), 0);
    assert_int_equal(hv_domain_start(x.d), 0);
    p = wait_console(&x, "dev: dma pending gfn 0x", 30);
    assert_non_null(p);
    assert_int_equal(sscanf(p, "dev: dma pending gfn 0x%x", &gfn), 1);
    hv_domain_pause(x.d);
    t0 = test_now_s();
    assert_int_equal(hv_domain_hvm_test_txn(x.d, HV_HVM_TXN_REMOVE, gfn, 1), 0);
    out->txn_ms = (test_now_s() - t0) * 1e3;
    expect_clean(x.d, "the removal");
    assert_int_equal(hv_domain_hvm_test_txn(x.d, HV_HVM_TXN_RESTORE, gfn, 1),
                     0);
    expect_clean(x.d, "the restore");
    assert_int_equal(hv_domain_hvm_read(x.d, (uint64_t)gfn << 12, &word, 4), 0);
    out->landed = word == 0xd0d00000u;
    test_note("gfn %#x removed in %.1f ms (the guest paused), back in its own "
              "frame: first word %#x: the DMA has %s",
              gfn, out->txn_ms, word, out->landed ? "landed" : "NOT landed");
    hv_domain_resume(x.d);
    out->status = run_to_end(&x, NULL);
    snprintf(out->con, sizeof(out->con), "%s", console(&x));
    ioreq_get_stats(hv_domain_ioreq(x.d), &out->st);
    assert_int_equal(ioreq_server_info(hv_domain_ioreq(x.d), 0, &out->state,
                                       NULL, out->reason, sizeof(out->reason)),
                     0);
    test_note("invalidations %" PRIu64 " (vCPUs waited %.1f ms), server %s %s; "
              "guest status %d",
              out->st.invalidations, out->st.inval_wait_ns / 1e6,
              out->state == IOREQ_LIVE ? "live" : "cut:", out->reason,
              out->status);
    expect_clean(x.d, "the run");
    fix_destroy(&x);
}

static void test_invalidate(void **state)
{
    static struct inval_run r;
    (void)state;

    run_inval(false, NULL, &r);
    if (!r.landed)
        test_note_lines("console", r.con);
    assert_true(r.landed);
    assert_true(r.st.invalidations >= 1);
    assert_int_equal(r.state, IOREQ_LIVE);
    if (r.status != 0 || !strstr(r.con, "dev: pass")) {
        test_note_lines("console", r.con);
        fail_msg("the guest's device mode failed (console above)");
    }
}

/* DESIGN invariant 8 off: the removal returns before the device model
 * acknowledged, with its DMA into the old frame still to come. */
static void test_invalidate_rule_off(void **state)
{
    static struct inval_run r;
    (void)state;

    run_inval(true, NULL, &r);
    assert_true(r.st.invalidations >= 1);
    assert_false(r.landed);
}

/* A device model that never acknowledges: cut off at the timeout, the
 * removal returns, the guest runs on and sees its device fail. */
static void test_never_acks(void **state)
{
    static struct inval_run r;
    (void)state;

    run_inval(false, "--never-ack", &r);
    assert_int_equal(r.state, IOREQ_CUT);
    assert_non_null(strstr(r.reason, "no INVAL_ACK"));
    assert_true(r.txn_ms >= 1500);
    assert_non_null(strstr(r.con, "dev: FAIL"));
    assert_non_null(strstr(r.con, "pvh-workload: done"));
    assert_int_equal(r.status, 1);
}

static void hostile(const char *flag, const char *needle)
{
    struct fix x;
    enum ioreq_state st;
    char reason[IOREQ_REASON_MAX];
    const char *con, *f;
    unsigned after = 0;
    double secs;
    int status;

    fix_create(&x, "dev=2 dev_hb=1 mem=4 secs=1 hb=100");
    assert_int_equal(start_child(&x, dm_exe, flag, NULL, NULL, NULL), 0);
    assert_int_equal(hv_domain_start(x.d), 0);
    status = run_to_end(&x, &secs);
    show_stats(&x, flag, secs);
    con = console(&x);
    assert_int_equal(ioreq_server_info(hv_domain_ioreq(x.d), 0, &st, NULL,
                                       reason, sizeof(reason)),
                     0);
    test_note("server: %s", reason);
    f = strstr(con, "dev: FAIL");
    /* heartbeats after the failure: the guest ran on (guest time: a
     * loaded host may make them fewer than secs/hb) */
    for (const char *p = f ? strstr(f, "\nhb ") : NULL; p;
         p = strstr(p + 1, "\nhb "))
        after++;
    test_note("%u heartbeats after the guest saw its device fail", after);
    if (st != IOREQ_CUT || !strstr(reason, needle) || status != 1 || !f ||
        after < 3 || !strstr(con, "pvh-workload: done") ||
        hv_domain_crash_text(x.d)[0]) {
        test_note_lines("console", con);
        test_note_lines("crash", hv_domain_crash_text(x.d));
        fail_msg("%s: expected the server cut (%s), the guest on to its "
                 "end with status 1 (got %d, state %d)",
                 flag, needle, status, (int)st);
    }
    expect_clean(x.d, "the run");
    fix_destroy(&x);
}

static void test_dies(void **state)
{
    (void)state;
    hostile("--crash-on-io", "closed its socket");
}

static void test_garbage(void **state)
{
    (void)state;
    hostile("--garbage-on-io", "malformed");
}

struct mig_run {
    int status;
    unsigned hb_at_save;
    unsigned nr_gfns, differ; /* device-written pages; of them, not equal
                                 at the destination to the source's at its
                                 final pause */
    struct migrate_stats st;
    char con1[65536], con2[65536];
};

struct hook_arg {
    struct fix *x;
    unsigned waited;
};

static unsigned last_hb(const char *con)
{
    unsigned n = 0;

    for (const char *p = strstr(con, "\nhb "); p; p = strstr(p + 1, "\nhb "))
        n = (unsigned)strtoul(p + 4, NULL, 10);
    return n;
}

/* After the first live round's harvest: let two heartbeats pass, so the
 * device fills its page (a DMA) after that page was sent; only the
 * dirty log can make the migration send it again. */
static void between_rounds(void *arg, unsigned round, bool final_next)
{
    struct hook_arg *h = arg;
    unsigned n = last_hb(console(h->x));
    double t0 = test_now_s();

    (void)final_next;
    if (round != 1)
        return;
    while (last_hb(console(h->x)) < n + 2 && test_now_s() - t0 < 10)
        test_sleep_ms(5);
    h->waited = last_hb(console(h->x)) - n;
}

/* Live save of the guest in its device mode (a fill by the device at
 * every heartbeat, its registers holding a witness), restore into a new
 * domain with a new device model given the saved state; the guest checks
 * at every heartbeat that the device's last fill and its registers came
 * along. */
enum mig_mode { MIG_HB, MIG_HB_DROP_DIRTY, MIG_DMA, MIG_DMA_NO_QUIESCE };

static void run_migrate(enum mig_mode mode, struct mig_run *out)
{
    struct fix x;
    struct migrate_source src;
    struct migrate_target tgt;
    struct migrate_restore_stats rs;
    struct hook_arg h = {.x = &x};
    bool dma = mode == MIG_DMA || mode == MIG_DMA_NO_QUIESCE;
    struct migrate_save_opts o = {
        .live = true,
        .leave_paused = true,
        .test_between_rounds = dma ? NULL : between_rounds,
        .test_arg = &h,
        .test_no_device_quiesce = mode == MIG_DMA_NO_QUIESCE,
    };
    struct stream_chan c;
    struct domain *d2;
    static uint8_t before[8][4096], after[4096];
    uint64_t gfns[8];
    char err[256] = "";
    int fd = memfd_create("hvm-dm-stream", 0), rc;

    memset(out, 0, sizeof(*out));
    assert_true(fd >= 0);
    fix_create(&x, dma ? "dev=1 dev_delay=1500 mem=4 secs=1 hb=100"
                       : "dev=1 dev_hb=1 mem=4 secs=3 hb=100");
    if (mode == MIG_HB_DROP_DIRTY)
        hv_domain_test_dm_drop_dirty(x.d);
    assert_int_equal(start_child(&x, dm_exe, NULL, NULL, NULL, NULL), 0);
    assert_int_equal(hv_domain_start(x.d), 0);
    /* heartbeats: past the rounds; DMA: while the device's deferred DMA
     * (1.5 s) waits, so that the final pause finds it in flight (the save
     * takes a few 100 ms; the test checks it took less) */
    assert_non_null(wait_console(&x, dma ? "dev: dma pending" : "\nhb 3 ", 30));
    assert_int_equal(hv_domain_source_init(x.d, &src), 0);
    stream_chan_fd(&c, fd);
    rc = migrate_save(&src, &c, &o, &out->st, err, sizeof(err));
    if (rc < 0)
        test_note("save: %s", err);
    assert_int_equal(rc, 0);
    hv_domain_source_fini(&src);
    snprintf(out->con1, sizeof(out->con1), "%s", console(&x));
    /* the pages only the device writes, as the source has them at its
     * final pause (it stays paused: leave_paused) */
    out->nr_gfns = device_gfns(out->con1, gfns, 8);
    for (unsigned i = 0; i < out->nr_gfns; i++)
        assert_int_equal(
            hv_domain_hvm_read(x.d, gfns[i] << 12, before[i], 4096), 0);
    out->hb_at_save = last_hb(out->con1);
    test_note("saved at heartbeat %u (%u heartbeats after the first round): "
              "%u rounds, %llu pages in %.1f ms, downtime %.1f ms, %u device "
              "states, %u device models quiesced",
              out->hb_at_save, h.waited, out->st.rounds,
              (unsigned long long)out->st.pages, out->st.total_ns / 1e6,
              out->st.downtime_ns / 1e6, out->st.devices,
              out->st.devices_quiesced);
    if (dma) /* the final pause came while the DMA still waited */
        assert_true(out->st.total_ns < 1500000000ULL);
    hv_domain_shutdown(x.d, 0);
    hv_domain_destroy(x.d);

    lseek(fd, 0, SEEK_SET);
    stream_chan_fd(&c, fd);
    assert_int_equal(hv_domain_target_init(&x.hv, -1, &tgt), 0);
    rc = migrate_restore(&tgt, &c, &rs, err, sizeof(err));
    d2 = hv_domain_target_fini(&tgt);
    if (rc < 0)
        test_note("restore: %s", err);
    assert_int_equal(rc, 0);
    assert_non_null(d2);
    x.d = d2;
    for (unsigned i = 0; i < out->nr_gfns; i++) {
        assert_int_equal(hv_domain_hvm_read(d2, gfns[i] << 12, after, 4096), 0);
        if (memcmp(before[i], after, 4096)) {
            out->differ++;
            test_note("gfn %#llx at the destination: first byte %#x, the "
                      "source's at its final pause %#x",
                      (unsigned long long)gfns[i], after[0], before[i][0]);
        }
    }
    /* its device model, given the state the stream carried */
    assert_int_equal(hv_domain_dm_pending(d2), 1);
    assert_int_equal(start_child(&x, dm_exe, NULL, NULL, NULL, NULL), 0);
    rc = hv_domain_dm_restore_states(d2, err, sizeof(err));
    if (rc < 0)
        test_note("device states: %s", err);
    assert_int_equal(rc, 0);
    assert_int_equal(hv_domain_start(d2), 0);
    out->status = run_to_end(&x, NULL);
    snprintf(out->con2, sizeof(out->con2), "%s", console(&x));
    expect_clean(d2, "the restored run");
    fix_destroy(&x);
    close(fd);
}

static void test_migrate(void **state)
{
    static struct mig_run r;
    (void)state;

    run_migrate(MIG_HB, &r);
    if (r.status != 0 || strstr(r.con2, "dev: FAIL") ||
        !strstr(r.con2, "dev: done") || !strstr(r.con2, "failures=0")) {
        test_note_lines("source", r.con1);
        test_note_lines("destination", r.con2);
        fail_msg("the guest's device checks failed after the migration");
    }
    assert_true(r.st.devices == 1);
    assert_true(r.st.devices_quiesced == 1);
    /* DESIGN invariant 9 for the pages only the device wrote */
    assert_int_equal(r.nr_gfns, 5);
    assert_int_equal(r.differ, 0);
    test_note("destination: %s", strstr(r.con2, "dev: done"));
}

/* A deferred DMA (1.5 s) in flight at the final pause: the quiesce makes the
 * device write it (and report it) before the last harvest, so the page and
 * the device's "done" state reach the destination. */
static void test_migrate_dma_in_flight(void **state)
{
    static struct mig_run r;
    (void)state;

    run_migrate(MIG_DMA, &r);
    if (r.status != 0 || !strstr(r.con2, "dev: pass")) {
        test_note_lines("source", r.con1);
        test_note_lines("destination", r.con2);
        fail_msg("the DMA in flight at the final pause did not arrive");
    }
    assert_true(r.st.devices_quiesced == 1);
}

/* The quiesce off: the DMA is still waiting at the final harvest; the
 * device's saved state says pending, the page never comes, and the guest
 * at the destination says so. */
static void test_migrate_no_quiesce(void **state)
{
    static struct mig_run r;
    const char *f;
    (void)state;

    run_migrate(MIG_DMA_NO_QUIESCE, &r);
    f = strstr(r.con2, "dev: FAIL");
    test_note("destination: %.*s", f ? (int)strcspn(f, "\r\n") : 4,
              f ? f : "none");
    assert_non_null(f);
    assert_non_null(strstr(f, "deferred DMA"));
    assert_int_equal(r.status, 1);
}

/* The device's DIRTY reports dropped at the source: the page it filled
 * after the first round is not sent again, and the guest at the
 * destination finds its last fill gone. */
static void test_migrate_dirty_rule_off(void **state)
{
    static struct mig_run r;
    const char *f;
    (void)state;

    run_migrate(MIG_HB_DROP_DIRTY, &r);
    f = strstr(r.con2, "dev: FAIL");
    test_note("with DIRTY dropped: %u of %u device-written pages differ at "
              "the destination; the guest there: %.*s",
              r.differ, r.nr_gfns, f ? (int)strcspn(f, "\r\n") : 4,
              f ? f : "none");
    assert_int_equal(r.nr_gfns, 5);
    /* the check test_migrate makes fails: the page the device filled after
     * the first round is stale at the destination (the guest sees it too
     * unless the pause fell between its check and its next fill) */
    assert_true(r.differ > 0);
}

/* Wait until the guest printed n more heartbeats. */
static void wait_heartbeats(struct fix *x, unsigned n)
{
    char want[32];

    snprintf(want, sizeof(want), "\nhb %u ", last_hb(console(x)) + n);
    assert_non_null(wait_console(x, want, 30));
}

/* Page tracking's removal notice on an HVM domain: the guest keeps a page
 * watched; its neighbours taken out and put back (the slots around the
 * watched page split and merge) announce nothing; the watched page taken
 * out announces its removal to the device once (memslot M7). */
static void test_track_gone(void **state)
{
    struct fix x;
    const char *p, *con;
    unsigned gfn;
    int status;
    (void)state;

    fix_create(&x, "dev=1 dev_watch=1 mem=4 secs=2 hb=100");
    assert_int_equal(start_child(&x, dm_exe, NULL, NULL, NULL, NULL), 0);
    assert_int_equal(hv_domain_start(x.d), 0);
    p = wait_console(&x, "dev: watching gfn 0x", 30);
    assert_non_null(p);
    assert_int_equal(sscanf(p, "dev: watching gfn 0x%x", &gfn), 1);
    for (int k = -1; k <= 1; k += 2) {
        assert_int_equal(
            hv_domain_hvm_test_txn(x.d, HV_HVM_TXN_REMOVE, gfn + k, 1), 0);
        expect_clean(x.d, "a neighbour's removal");
        assert_int_equal(
            hv_domain_hvm_test_txn(x.d, HV_HVM_TXN_RESTORE, gfn + k, 1), 0);
        expect_clean(x.d, "a neighbour's return");
    }
    wait_heartbeats(&x, 3);
    assert_null(strstr(console(&x), "removal notices at"));
    test_note("gfn %#x watched: its two neighbours out and back, 3 "
              "heartbeats later the device heard no removal",
              gfn);
    assert_int_equal(hv_domain_hvm_test_txn(x.d, HV_HVM_TXN_REMOVE, gfn, 1), 0);
    assert_int_equal(hv_domain_hvm_test_txn(x.d, HV_HVM_TXN_RESTORE, gfn, 1),
                     0);
    expect_clean(x.d, "the watched page's removal and return");
    status = run_to_end(&x, NULL);
    con = console(&x);
    p = strstr(con, "removal notices at");
    if (status != 0 || !p || strstr(p + 1, "removal notices at") ||
        !strstr(con, "dev: watched page: 1 removal notices")) {
        test_note_lines("console", con);
        fail_msg("expected one removal notice after the watched page left");
    }
    test_note("%.*s", (int)strcspn(strstr(con, "dev: watched page"), "\r\n"),
              strstr(con, "dev: watched page"));
    fix_destroy(&x);
}

/* `memvisor run --hvm --device test:mmio=GPA --device block:FILE`: the
 * command starts both device models as its children for an HVM guest. */
static void test_cli(void **state)
{
    char path[] = "/tmp/memvisor-hvmcliXXXXXX", cmd[2048];
    static char out[65536];
    int status;
    (void)state;

    assert_int_equal(test_make_file(path, 1 << 20), 0);
    snprintf(
        cmd, sizeof(cmd),
        "%s run --hvm --kernel %s --mem 32 --cmdline 'dev=2 dev_mmio=" DEV_MMIO
        " dev_block=1 mem=4 secs=1' --device test:mmio=" DEV_MMIO
        " --device block:%s 2>&1",
        memvisor_exe, image_path, path);
    status = test_run_cmd(cmd, out, sizeof(out));
    unlink(path);
    if (status != 0 || !strstr(out, "dev: pass") ||
        !strstr(out, "mmio-ops=4 block-ops=4") ||
        !strstr(out, "memvisor: devices: 2 attached, 0 cut off")) {
        test_note_lines("memvisor run", out);
        fail_msg("memvisor run --hvm with devices failed (output above)");
    }
    test_note("%.*s", (int)strcspn(strstr(out, "memvisor: devices"), "\n"),
              strstr(out, "memvisor: devices"));
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
        cmocka_unit_test(test_dev_dirty_rule_off),
        cmocka_unit_test(test_claims),
        cmocka_unit_test(test_invalidate),
        cmocka_unit_test(test_invalidate_rule_off),
        cmocka_unit_test(test_never_acks),
        cmocka_unit_test(test_dies),
        cmocka_unit_test(test_garbage),
        cmocka_unit_test(test_migrate),
        cmocka_unit_test(test_migrate_dirty_rule_off),
        cmocka_unit_test(test_migrate_dma_in_flight),
        cmocka_unit_test(test_migrate_no_quiesce),
        cmocka_unit_test(test_track_gone),
        cmocka_unit_test(test_cli),
    };

    if (argc < 5) {
        fprintf(stderr,
                "usage: test_hvm_dm PVH-WORKLOAD DM-TEST DM-BLOCK MEMVISOR\n");
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
