/*
 * test_hvm.c - HVM domains on real KVM (docs/hvm.md): the PVH test stub
 * (pvhstub.S) boots and reports on the serial port; the memory path's
 * invariants (hvm.h HV1-HV3) hold after every memslot transaction,
 * including a randomized sequence of them; memvisor's own writes and the
 * guest's are in the dirty log, and with the dirty-logging accessor
 * switched off memvisor's are not (the test catches it); a p2m change
 * made behind memslot's back is caught by the checker; accesses nobody
 * claims are answered and counted, the guest goes on; the exit port's
 * status and keyboard input on the serial port reach the run, polled and
 * by the receiver's interrupt (IRQ 4 through the in-kernel IOAPIC); a
 * guest saved live mid-run and restored into a new domain carries on with
 * its memory counters and serial output intact.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "hv/hv.h"
#include "migrate/migrate.h"
#include "testlib.h"

#define MEM_MIB 16
#define POOL_FRAMES ((MEM_MIB << 8) + 4096)

static const char *stub_path;

struct hvm_fix {
    struct hv hv;
    struct domain *d;
    uint8_t *image;
    size_t size;
    uint8_t module[5000];
};

static void fix_create(struct hvm_fix *x, const char *cmdline, bool module)
{
    char err[256] = "";
    struct hv_domain_config cfg = {
        .kind = HV_DOMAIN_HVM,
        .mem_mib = MEM_MIB,
        .nr_vcpus = 1,
        .cmdline = cmdline,
        .console_fd = -1,
    };
    uint64_t seed = 0x1234;

    x->image = test_load_file(stub_path, &x->size);
    assert_non_null(x->image);
    for (size_t i = 0; i < sizeof(x->module); i++)
        x->module[i] = (uint8_t)test_rand(&seed);
    cfg.image = x->image;
    cfg.image_size = x->size;
    if (module) {
        cfg.module = x->module;
        cfg.module_size = sizeof(x->module);
    }
    assert_int_equal(hv_init(&x->hv, POOL_FRAMES), 0);
    int r = hv_domain_create(&x->hv, &cfg, &x->d, err, sizeof(err));
    if (r < 0)
        test_note("create: %s", err);
    assert_int_equal(r, 0);
    assert_true(hv_domain_is_hvm(x->d));
}

static void fix_destroy(struct hvm_fix *x)
{
    hv_domain_destroy(x->d);
    hv_fini(&x->hv);
    free(x->image);
}

static void expect_clean(struct domain *d, const char *when)
{
    char msg[256];
    int r = hv_domain_hvm_check(d, msg, sizeof(msg));

    if (r < 0)
        test_note("checker after %s: %s", when, msg);
    assert_int_equal(r, 0);
}

/* Harvest the log; is every gfn of [gfn, gfn + nr) in it? */
static uint64_t harvest(struct domain *d, uint64_t *gfns, uint64_t max)
{
    uint64_t n = 0;

    assert_int_equal(hv_domain_dirty_harvest_gfns(d, gfns, max, &n), 0);
    assert_true(n <= max);
    return n;
}

static bool has(const uint64_t *gfns, uint64_t n, uint64_t gfn)
{
    for (uint64_t i = 0; i < n; i++)
        if (gfns[i] == gfn)
            return true;
    return false;
}

static bool console_has(struct domain *d, const char *s)
{
    static char buf[8192];

    hv_domain_console(d, buf, sizeof(buf));
    return strstr(buf, s) != NULL;
}

/* Starts the stub (`count` mode) and waits for its tick n. */
static void start_to_tick(struct hvm_fix *x, unsigned n)
{
    char line[32];

    snprintf(line, sizeof(line), "pvh: tick %08x ok\n", n);
    assert_int_equal(hv_domain_start(x->d), 0);
    while (!console_has(x->d, line)) {
        assert_false(hv_domain_stopped(x->d));
        test_sleep_ms(10);
    }
}

static void run_to_end(struct hvm_fix *x, int want)
{
    assert_int_equal(hv_domain_start(x->d), 0);
    int st = hv_domain_wait(x->d);
    if (st != want) {
        static char buf[8192];

        hv_domain_console(x->d, buf, sizeof(buf));
        test_note_lines("console", buf);
        test_note_lines("crash", hv_domain_crash_text(x->d));
    }
    assert_int_equal(st, want);
}

/* Boot, serial output, memory path, both writers in the dirty log. */
static void test_boot(void **state)
{
    struct hvm_fix x;
    struct hv_hvm_boot b;
    struct hv_domain_stats st;
    static uint64_t gfns[8192];
    uint64_t n, differ = 0, mfn, sum = 0;
    char line[128];

    (void)state;
    fix_create(&x, "hello hvm", true);
    expect_clean(x.d, "create");
    assert_int_equal(hv_domain_hvm_boot(x.d, &b), 0);
    assert_int_equal(b.start_info, 0x1000);
    assert_int_equal(b.entry, 0x100000);
    assert_int_equal(b.ram_end, MEM_MIB << 20);
    assert_int_equal(b.module_size, sizeof(x.module));
    /* gfn != mfn in general */
    for (uint64_t g = 0; g < (MEM_MIB << 8); g++)
        if (hv_domain_hvm_gfn(x.d, g, &mfn) == 0 && mfn != g)
            differ++;
    test_note("%llu of %u gfns map another mfn", (unsigned long long)differ,
              MEM_MIB << 8);
    assert_true(differ > 0);
    assert_int_equal(hv_domain_hvm_gfn(x.d, 0xa0, &mfn), -ENOENT); /* hole */
    /* the loader's writes (memvisor's) are logged: kernel, info, module */
    n = harvest(x.d, gfns, 8192);
    assert_true(has(gfns, n, 0x100));
    assert_true(has(gfns, n, 0x1));
    for (uint64_t g = b.module >> 12; g <= (b.module + b.module_size - 1) >> 12;
         g++)
        assert_true(has(gfns, n, g));
    test_note("%llu pages logged by the loader", (unsigned long long)n);

    run_to_end(&x, 0);
    expect_clean(x.d, "the run");
    for (size_t i = 0; i < sizeof(x.module); i++)
        sum += x.module[i];
    assert_true(console_has(x.d, "pvh: magic ok version 00000001\n"));
    assert_true(console_has(x.d, "pvh: cmdline hello hvm\n"));
    snprintf(line, sizeof(line), "pvh: memmap 00000003 ram-top %08x\n",
             MEM_MIB << 20);
    assert_true(console_has(x.d, line));
    snprintf(line, sizeof(line), "pvh: modules 00000001 size %08zx sum %08llx\n",
             sizeof(x.module), (unsigned long long)(sum & 0xffffffffu));
    assert_true(console_has(x.d, line));
    assert_true(console_has(x.d, "pvh: unclaimed mmio ffffffff port 000000ff\n"));
    assert_true(console_has(x.d, "pvh: done\n"));
    hv_domain_stats(x.d, &st);
    assert_int_equal(st.mmio_unclaimed, 2); /* a load and a store */
    assert_int_equal(st.pio_unclaimed, 1);
    assert_true(st.uart_tx > 200);
    /* the guest's stores (KVM's log): 64 pages at 2 MiB */
    n = harvest(x.d, gfns, 8192);
    for (uint64_t g = 0x200; g < 0x240; g++)
        assert_true(has(gfns, n, g));
    /* memvisor's write after the run: in the log, alone */
    assert_int_equal(hv_domain_hvm_write(x.d, 0x300123, "abc", 3), 0);
    n = harvest(x.d, gfns, 8192);
    assert_int_equal(n, 1);
    assert_int_equal(gfns[0], 0x300);
    {
        char back[3];

        assert_int_equal(hv_domain_hvm_read(x.d, 0x300123, back, 3), 0);
        assert_memory_equal(back, "abc", 3);
    }
    assert_int_equal(hv_domain_hvm_write(x.d, 0xa0000, "x", 1), -EFAULT);
    assert_int_equal(hv_domain_hvm_write(x.d, MEM_MIB << 20, "x", 1), -EFAULT);
    expect_clean(x.d, "memvisor's writes");
    fix_destroy(&x);
}

/* The accessor switched off: memvisor's write is made but not logged,
 * and the harvest shows it (the check above would fail). */
static void test_unlogged_write_caught(void **state)
{
    struct hvm_fix x;
    static uint64_t gfns[8192];
    uint64_t n;

    (void)state;
    fix_create(&x, "", false);
    (void)harvest(x.d, gfns, 8192);
    hv_domain_test_no_dirty_accessor(x.d);
    assert_int_equal(hv_domain_hvm_write(x.d, 0x300123, "abc", 3), 0);
    n = harvest(x.d, gfns, 8192);
    assert_false(has(gfns, n, 0x300));
    fix_destroy(&x);
}

/* Random slot transactions (read-only, read-write, remove, restore), the
 * checker after each; then a p2m change behind memslot's back, caught. */
static void test_txn_checked(void **state)
{
    struct hvm_fix x;
    uint64_t seed = test_seed(0x5eed13), ops = test_scale(300), done = 0;
    uint64_t nr_gfns = (uint64_t)MEM_MIB << 8;
    char msg[256];

    (void)state;
    fix_create(&x, "", false);
    for (uint64_t i = 0; i < ops; i++) {
        uint64_t gfn = test_rand_below(&seed, nr_gfns);
        uint64_t nr = 1 + test_rand_below(&seed, 64);
        int op = (int)test_rand_below(&seed, 4);
        int r;

        if (gfn + nr > nr_gfns)
            nr = nr_gfns - gfn;
        r = hv_domain_hvm_test_txn(x.d, op, gfn, nr);
        if (r == -ENOENT)
            continue; /* a type change over removed gfns: refused whole */
        assert_int_equal(r, 0);
        done++;
        expect_clean(x.d, "a transaction");
    }
    /* everything back, writable: the whole RAM presented again */
    assert_int_equal(hv_domain_hvm_test_txn(x.d, HV_HVM_TXN_RESTORE, 0, nr_gfns), 0);
    expect_clean(x.d, "the restore");
    test_note("%llu transactions of %llu tried, checked after each",
              (unsigned long long)done, (unsigned long long)ops);
    assert_true(done > ops / 4);
    /* the rule broken: a gfn mapped in the p2m but not presented */
    assert_int_equal(hv_domain_hvm_test_txn(x.d, HV_HVM_TXN_REMOVE, 0x400, 1), 0);
    expect_clean(x.d, "removing gfn 0x400");
    assert_int_equal(hv_domain_hvm_test_txn(x.d, HV_HVM_TXN_RAW_P2M, 0x400, 1), 0);
    assert_int_equal(hv_domain_hvm_check(x.d, msg, sizeof(msg)), -EUCLEAN);
    test_note("the checker: %s", msg);
    fix_destroy(&x);
}

/* The exit port's value is the run's status. */
static void test_exit_status(void **state)
{
    struct hvm_fix x;

    (void)state;
    fix_create(&x, "status", false);
    run_to_end(&x, 42);
    assert_true(console_has(x.d, "pvh: done\n"));
    fix_destroy(&x);
}

/* Keyboard input through the UART's receiver. */
static void test_echo(void **state)
{
    struct hvm_fix x;
    const char *in = "typed on COM1\n";
    size_t done = 0;

    (void)state;
    fix_create(&x, "echo", false);
    assert_int_equal(hv_domain_start(x.d), 0);
    while (done < strlen(in))
        done += hv_domain_console_input(x.d, in + done, strlen(in) - done);
    assert_int_equal(hv_domain_wait(x.d), 0);
    assert_true(console_has(x.d, "pvh: echo typed on COM1\n"));
    expect_clean(x.d, "the echo run");
    fix_destroy(&x);
}

/* The receiver's interrupt: IRQ 4 through the in-kernel IOAPIC to the
 * guest's handler, one byte at a time (several interrupts). */
static void test_irq(void **state)
{
    struct hvm_fix x;
    const char *in = "by irq\n";
    static char buf[8192];
    const char *p;
    unsigned long n;

    (void)state;
    fix_create(&x, "irq", false);
    assert_int_equal(hv_domain_start(x.d), 0);
    while (!console_has(x.d, "pvh: irq "))
        test_sleep_ms(5);
    for (size_t i = 0; i < strlen(in); i++) {
        while (hv_domain_console_input(x.d, in + i, 1) != 1)
            test_sleep_ms(1);
        test_sleep_ms(20);
    }
    assert_int_equal(hv_domain_wait(x.d), 0);
    hv_domain_console(x.d, buf, sizeof(buf));
    p = strstr(buf, "pvh: irq by irq interrupts ");
    if (!p)
        test_note_lines("console", buf);
    assert_non_null(p);
    n = strtoul(p + strlen("pvh: irq by irq interrupts "), NULL, 16);
    test_note("%lu receiver interrupts for %zu bytes", n, strlen(in));
    assert_true(n >= 2 && n <= strlen(in));
    assert_non_null(strstr(p, "bad-iir 00000000\n"));
    expect_clean(x.d, "the interrupt run");
    fix_destroy(&x);
}

/* The tick lines of a console, in order: how many, and whether they are
 * 1, 2, 3 ... with no gap and no repeat (first: the number of the first). */
static unsigned ticks(const char *con, unsigned *first, unsigned *last,
                      bool *in_order)
{
    unsigned n = 0, prev = 0;
    const char *p = con;

    *in_order = true;
    *first = *last = 0;
    while ((p = strstr(p, "pvh: tick ")) != NULL) {
        unsigned v = (unsigned)strtoul(p + strlen("pvh: tick "), NULL, 16);

        if (n == 0)
            *first = v;
        else if (v != prev + 1)
            *in_order = false;
        prev = v;
        n++;
        p++;
    }
    *last = prev;
    return n;
}

/* Saves x->d (running or paused) into a memory file with opts o, keeps
 * its console in con, destroys it, and restores the stream into a new
 * domain of x->hv, checked and not started. */
static struct domain *move_domain(struct hvm_fix *x,
                                  const struct migrate_save_opts *o,
                                  char *con, size_t conlen)
{
    struct migrate_source src;
    struct migrate_target tgt;
    struct migrate_stats st;
    struct migrate_restore_stats rs;
    struct stream_chan c;
    struct domain *d2;
    char err[256] = "";
    int fd = memfd_create("hvm-stream", 0), rc;

    assert_true(fd >= 0);
    assert_int_equal(hv_domain_source_init(x->d, &src), 0);
    stream_chan_fd(&c, fd);
    rc = migrate_save(&src, &c, o, &st, err, sizeof(err));
    if (rc < 0)
        test_note("save: %s", err);
    assert_int_equal(rc, 0);
    hv_domain_source_fini(&src);
    test_note("saved: %u rounds, %llu pages (%llu zero), %llu bytes, "
              "downtime %.1f ms",
              st.rounds, (unsigned long long)st.pages,
              (unsigned long long)st.zero_pages, (unsigned long long)st.bytes,
              st.downtime_ns / 1e6);
    hv_domain_console(x->d, con, conlen);
    hv_domain_shutdown(x->d, 0);
    hv_domain_destroy(x->d);
    x->d = NULL;

    lseek(fd, 0, SEEK_SET);
    stream_chan_fd(&c, fd);
    assert_int_equal(hv_domain_target_init(&x->hv, -1, &tgt), 0);
    rc = migrate_restore(&tgt, &c, &rs, err, sizeof(err));
    d2 = hv_domain_target_fini(&tgt);
    if (rc < 0)
        test_note("restore: %s", err);
    assert_int_equal(rc, 0);
    assert_non_null(d2);
    assert_true(hv_domain_is_hvm(d2));
    test_note("restored: %llu records, %llu pages in %.1f ms",
              (unsigned long long)rs.records, (unsigned long long)rs.pages,
              rs.ns / 1e6);
    expect_clean(d2, "the restore");
    close(fd);
    return d2;
}

/* A guest's armed TSC deadline survives save and restore: KVM ignores the
 * deadline MSR unless the LAPIC's timer is in TSC-deadline mode, and
 * setting the LAPIC clears it, so the restore must set it after the LAPIC
 * (with it among the other MSRs, before the LAPIC, it reads back 0). */
static void test_deadline_restored(void **state)
{
    const uint64_t deadline = 1ULL << 62; /* far away: never fires */
    struct migrate_save_opts o = {.leave_paused = true};
    static char con[16384];
    struct hvm_fix x;
    struct domain *d2;
    uint64_t got = 0;

    (void)state;
    fix_create(&x, "count", false);
    start_to_tick(&x, 1);
    hv_domain_pause(x.d);
    assert_int_equal(hv_domain_hvm_test_tsc_deadline(x.d, 0, deadline, &got),
                     0);
    hv_domain_resume(x.d); /* the save pauses it again, and keeps it so */
    if (got != deadline) {
        test_note("this KVM keeps no TSC deadline (read %#llx back)",
                  (unsigned long long)got);
        hv_domain_shutdown(x.d, 0);
        fix_destroy(&x);
        skip();
    }
    d2 = move_domain(&x, &o, con, sizeof(con));
    got = 0;
    assert_int_equal(hv_domain_hvm_test_tsc_deadline(d2, 0, 0, &got), 0);
    test_note("TSC deadline %#llx saved, %#llx after the restore",
              (unsigned long long)deadline, (unsigned long long)got);
    assert_true(got == deadline);
    hv_domain_destroy(d2);
    hv_fini(&x.hv);
    free(x.image);
}

/* The vcpus snapshot of a running stub: one vCPU, no kvm-clock yet; then
 * with kvm-clock enabled on a page the test fills as a hostile guest
 * would (a shift of 100, which KVM never writes): the snapshot still
 * answers, without the guest's clock, and without undefined behaviour
 * (UBSan would end the test); with the page as KVM wrote it, the guest's
 * clock and KVM's agree within a second. */
static void test_vcpus_snapshot(void **state)
{
    const uint64_t page = 0x300000; /* RAM the stub does not use */
    struct hv_hvm_vcpus *v = malloc(sizeof(*v));
    uint8_t bad[32] = {0};
    struct hvm_fix x;

    (void)state;
    assert_non_null(v);
    fix_create(&x, "count", false);
    start_to_tick(&x, 1);
    assert_int_equal(hv_domain_hvm_vcpus(x.d, v), 0);
    assert_int_equal(v->nr_vcpus, 1);
    assert_false(v->vcpu[0].kvmclock);
    assert_true(v->vcpu[0].tsc > 0);
    /* kvm-clock on: KVM fills the page when the vCPU next enters */
    hv_domain_pause(x.d);
    assert_int_equal(hv_domain_hvm_test_set_msr(x.d, 0, 0x4b564d01u, page | 1),
                     0);
    hv_domain_resume(x.d);
    test_sleep_ms(200);
    assert_int_equal(hv_domain_hvm_vcpus(x.d, v), 0);
    assert_true(v->vcpu[0].kvmclock);
    test_note("kvm-clock: guest %lld ns, KVM %llu ns",
              (long long)v->vcpu[0].guest_ns,
              (unsigned long long)v->clock_ns);
    assert_true(v->vcpu[0].guest_ns > 0);
    assert_true(llabs(v->vcpu[0].guest_ns - (long long)v->clock_ns) <
                1000000000LL);
    /* the page rewritten by "the guest", between KVM's updates */
    hv_domain_pause(x.d);
    bad[28] = 100; /* tsc_shift */
    bad[24] = 1;   /* tsc_to_system_mul */
    assert_int_equal(hv_domain_hvm_write(x.d, page, bad, sizeof(bad)), 0);
    assert_int_equal(hv_domain_hvm_vcpus(x.d, v), 0);
    assert_false(v->vcpu[0].kvmclock);
    hv_domain_resume(x.d);
    hv_domain_shutdown(x.d, 0);
    assert_int_equal(hv_domain_wait(x.d), 0);
    free(v);
    fix_destroy(&x);
}

/* Saved live at the 3rd tick, restored into a new domain: the guest's
 * per-page counters, registers and serial port carry on; every tick line
 * appears exactly once across the two consoles. */
static void test_save_restore(void **state)
{
    struct hvm_fix x;
    struct migrate_save_opts o = {.live = true, .leave_paused = true};
    struct domain *d2;
    static char con1[16384], con2[16384];
    unsigned f1, l1;
    bool ord1;
    int rc;

    (void)state;
    fix_create(&x, "count", false);
    start_to_tick(&x, 3);
    d2 = move_domain(&x, &o, con1, sizeof(con1));
    assert_int_equal(hv_domain_start(d2), 0);
    rc = hv_domain_wait(d2);
    hv_domain_console(d2, con2, sizeof(con2));
    if (rc != 0) {
        test_note_lines("before", con1);
        test_note_lines("after", con2);
        test_note_lines("crash", hv_domain_crash_text(d2));
    }
    assert_int_equal(rc, 0);
    assert_null(strstr(con2, "bad page"));
    assert_non_null(strstr(con2, "pvh: done\n"));
    /* the two consoles joined (the pause may have cut a line in two):
     * ticks 1..20, each once, in order */
    {
        static char both[32768];
        unsigned first, last, n;
        bool ord;

        (void)ticks(con1, &f1, &l1, &ord1);
        snprintf(both, sizeof(both), "%s%s", con1, con2);
        n = ticks(both, &first, &last, &ord);
        test_note("%u ticks before the save, %u in all across the restore",
                  l1, n);
        assert_true(l1 >= 3);
        assert_true(ord);
        assert_int_equal(first, 1);
        assert_int_equal(n, 20);
        assert_int_equal(last, 20);
    }
    expect_clean(d2, "the restored run");
    hv_domain_destroy(d2);
    hv_fini(&x.hv);
    free(x.image);
}

int main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_boot),
        cmocka_unit_test(test_unlogged_write_caught),
        cmocka_unit_test(test_txn_checked),
        cmocka_unit_test(test_exit_status),
        cmocka_unit_test(test_echo),
        cmocka_unit_test(test_irq),
        cmocka_unit_test(test_save_restore),
        cmocka_unit_test(test_deadline_restored),
        cmocka_unit_test(test_vcpus_snapshot),
    };
    if (argc < 2) {
        fprintf(stderr, "usage: %s <pvhstub>\n", argv[0]);
        return 2;
    }
    stub_path = argv[1];
    test_require_kvm();
    return cmocka_run_group_tests(tests, NULL, NULL);
}
