/*
 * main.c - the memvisor command.
 *
 *   memvisor run <image> [--mem MiB] [--vcpus N] [--cmdline "..."]
 *                        [--control PATH] [--audit-every MS]
 *                        [--device test[:mmio=GPA]|block:PATH]... [--dm-socket PATH]
 *   memvisor demo
 *
 *   memvisor run --kernel <image> [--initrd FILE] [--append "..."]
 *                [--hvm|--pv] [...]
 *
 * --hvm boots the image by PVH as an HVM domain (docs/hvm.md), --pv as a PV
 * one; without either, an ELF with the PVH entry note and no Xen PV entry
 * note is HVM, anything else PV.
 *
 * run: boots the PV kernel image (with --initrd, a PV module: Linux's
 * initramfs), the guest console on stdout and keyboard input from stdin
 * into the console ring (Ctrl-] stops the guest: exit status 72); the exit
 * status is the guest's (0 after a poweroff, the shutdown reason
 * otherwise, 70 if the domain crashed, 2 for a usage or load error, 69 if
 * /dev/kvm is missing or cannot be opened).  The arguments and the image
 * are checked before /dev/kvm is opened, so a bad image is refused with its
 * reason on any machine.
 * --control serves the control socket (docs/control.md) while it runs;
 * --paused starts the guest paused (a "resume" request lets it go).
 * --device starts a device model as a child process (cli/devices.h);
 * --dm-socket lets device models started separately attach by that path.
 * --audit-every pauses the guest every MS milliseconds and audits the frame
 * table (the result goes to stderr; a failed audit makes the exit status 71).
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <termios.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "boot/elf.h"
#include "boot/pvh.h"
#include "cli/control.h"
#include "cli/devices.h"
#include "cli/xfer.h"
#include "ioreq/ioreq.h"
#include "hv/hv.h"
#include "migrate/migrate.h"

#define EXIT_USAGE 2
#define EXIT_NO_KVM 69 /* EX_UNAVAILABLE: no usable /dev/kvm */
#define EXIT_AUDIT 71
#define EXIT_DETACHED 72 /* the user stopped the guest with the detach key */
#define DETACH_KEY 0x1d  /* Ctrl-] */
#define EXIT_RESTORE 65 /* EX_DATAERR: the stream was refused */
#define POOL_SLACK_FRAMES 4096
#define MAX_IMAGE (128u << 20)

struct run_opts {
    const char *image;
    const char *initrd;
    uint64_t mem_mib;
    unsigned vcpus;
    const char *cmdline;
    const char *control;
    unsigned audit_ms;
    bool paused; /* start paused: resume through the control socket */
    const char *devices[CLI_MAX_DEVICES]; /* --device specs */
    unsigned nr_devices;
    const char *dm_socket;
    int kind; /* -1: from the image (docs/hvm.md), else enum hv_domain_kind */
};

/* Device models: started and attached before the guest runs. */
static int start_devices(const struct run_opts *o, struct cli_devices *ds)
{
    char err[256];
    int r;

    for (unsigned i = 0; i < o->nr_devices; i++) {
        if ((r = devices_start(ds, o->devices[i], err, sizeof(err))) < 0) {
            fprintf(stderr, "memvisor: %s\n", err);
            return r;
        }
    }
    if (o->dm_socket && (r = devices_listen(ds, o->dm_socket)) < 0) {
        fprintf(stderr, "memvisor: device-model socket %s: %s\n", o->dm_socket,
                strerror(-r));
        return r;
    }
    return 0;
}

static void report_devices(struct domain *d)
{
    struct ioreq_domain *io = hv_domain_ioreq(d);
    struct ioreq_stats st;

    if (!io)
        return;
    ioreq_get_stats(io, &st);
    if (!st.servers)
        return;
    fprintf(stderr,
            "memvisor: devices: %llu attached, %llu cut off; %llu I/O "
            "requests (%llu failed), %llu invalidations (vCPUs waited %.1f ms "
            "in all), %llu tracked stores, %llu pages written by devices\n",
            (unsigned long long)st.servers, (unsigned long long)st.cut,
            (unsigned long long)st.ioreqs,
            (unsigned long long)st.failed_ioreqs,
            (unsigned long long)st.invalidations, (double)st.inval_wait_ns / 1e6,
            (unsigned long long)st.track_writes,
            (unsigned long long)st.dirty_pages);
    for (unsigned i = 0; i < st.servers; i++) {
        enum ioreq_state s;
        char name[DM_NAME_MAX], why[IOREQ_REASON_MAX];
        if (ioreq_server_info(io, i, &s, name, why, sizeof(why)) == 0 &&
            s == IOREQ_CUT && strcmp(why, "the domain is going away"))
            fprintf(stderr, "memvisor: device %s was cut off: %s\n", name,
                    why);
    }
}

static void usage(FILE *f)
{
    fprintf(f, "usage: memvisor run <image> [--mem MiB] [--vcpus N] "
               "[--cmdline \"...\"] [--control PATH] [--audit-every MS] "
               "[--paused]\n"
               "                    [--device test[:mmio=GPA]|block:PATH]... "
               "[--dm-socket PATH]\n"
               "       memvisor run --kernel <image> [--initrd FILE] "
               "[--append \"...\"] [--hvm|--pv] [options as above]\n"
               "       memvisor demo\n"
               "       memvisor migrate --control PATH tcp:HOST:PORT|unix:PATH "
               "[--zstd] [--downtime MS] [--max-rounds N] [--offline]\n"
               "                        [--connections N]\n"
               "       memvisor receive --listen tcp:HOST:PORT|unix:PATH "
               "[--pool MiB] [--control PATH] [--audit-every MS] "
               "[--device ...]...\n"
               "       memvisor save --control PATH FILE [--zstd] [--live] "
               "[--stop]\n"
               "       memvisor restore FILE [--pool MiB] [--control PATH] "
               "[--audit-every MS] [--device ...]...\n");
}

static int read_file(const char *path, uint8_t **out, size_t *size)
{
    struct stat st;
    uint8_t *buf;
    size_t done = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);

    if (fd < 0)
        return -errno;
    if (fstat(fd, &st) < 0 || st.st_size <= 0 ||
        (uint64_t)st.st_size > MAX_IMAGE) {
        close(fd);
        return -EINVAL;
    }
    buf = malloc((size_t)st.st_size);
    if (!buf) {
        close(fd);
        return -ENOMEM;
    }
    while (done < (size_t)st.st_size) {
        ssize_t n = read(fd, buf + done, (size_t)st.st_size - done);
        if (n <= 0) {
            free(buf);
            close(fd);
            return n < 0 ? -errno : -EIO;
        }
        done += (size_t)n;
    }
    close(fd);
    *out = buf;
    *size = done;
    return 0;
}

/* Whether /dev/kvm can be used; if not, says so in one line (what is
 * missing, and how to get it) and returns false. */
static bool kvm_usable(void)
{
    struct kvm_sys sys;
    int e = -kvm_sys_open(&sys, NULL);

    /* Opened and answered KVM's API (the same test as the test suite's):
     * a /dev/kvm that opens but is not KVM is not usable either. */
    if (e == 0) {
        kvm_sys_close(&sys);
        return true;
    }
    if (e == ENOTTY || e == EINVAL || e == EOPNOTSUPP)
        fprintf(stderr, "memvisor: /dev/kvm is not KVM (it does not answer "
                        "KVM's API); load kvm_intel or kvm_amd, or check "
                        "what /dev/kvm is\n");
    else if (e == ENOENT || e == ENODEV || e == ENXIO)
        fprintf(stderr,
                "memvisor: /dev/kvm is missing: this machine's kernel offers "
                "no KVM (load kvm_intel or kvm_amd, with virtualization "
                "enabled in the firmware; `make demo` and `make check` use "
                "the test VM instead)\n");
    else if (e == EACCES || e == EPERM)
        fprintf(stderr,
                "memvisor: /dev/kvm: permission denied (run as root, add "
                "this user to the group that owns /dev/kvm, usually kvm, or "
                "fix the permissions on /dev/kvm)\n");
    else
        fprintf(stderr, "memvisor: /dev/kvm cannot be opened: %s\n",
                strerror(e));
    return false;
}

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* run_domain()'s ack_fd: a domain built from an image, or restored (from
 * a file, or over a connection that waits for the destination's word). */
#define RUN_FRESH (-2)
#define RUN_RESTORED_FILE (-1)
static int run_domain(struct hv *hvp, struct domain *d,
                      const struct run_opts *o, int ack_fd);

/*
 * Keyboard input for the guest's console ring (hvc0): a thread reads
 * stdin and hands the bytes to the domain, a terminal put in raw mode
 * meanwhile.  The detach key (Ctrl-]) stops the guest and the run exits
 * with EXIT_DETACHED.
 */
struct input {
    struct domain *d;
    pthread_t thread;
    bool started;
    atomic_bool stop, detached;
    bool tty;
    struct termios saved;
};

static void *input_thread(void *arg)
{
    struct input *in = arg;
    char buf[256];

    while (!atomic_load(&in->stop)) {
        struct pollfd p = {STDIN_FILENO, POLLIN, 0};
        ssize_t n;
        size_t done = 0;

        if (poll(&p, 1, 100) <= 0)
            continue;
        n = read(STDIN_FILENO, buf, sizeof(buf));
        if (n <= 0)
            break; /* end of input: the guest keeps running */
        for (ssize_t i = 0; i < n; i++) {
            if ((unsigned char)buf[i] == DETACH_KEY) {
                atomic_store(&in->detached, true);
                fprintf(stderr, "\r\nmemvisor: detach key: stopping the "
                                "guest\r\n");
                hv_domain_shutdown(in->d, 0);
                return NULL;
            }
        }
        /* the ring takes what fits; wait for the guest to read the rest */
        while (done < (size_t)n && !atomic_load(&in->stop)) {
            size_t k = hv_domain_console_input(in->d, buf + done,
                                               (size_t)n - done);
            done += k;
            if (!k) {
                struct timespec ts = {0, 10000000};
                if (hv_domain_stopped(in->d))
                    return NULL;
                nanosleep(&ts, NULL);
            }
        }
    }
    return NULL;
}

static void input_start(struct input *in, struct domain *d)
{
    in->d = d;
    atomic_init(&in->stop, false);
    atomic_init(&in->detached, false);
    if (isatty(STDIN_FILENO) && tcgetattr(STDIN_FILENO, &in->saved) == 0) {
        struct termios raw = in->saved;

        cfmakeraw(&raw);
        raw.c_oflag |= OPOST | ONLCR; /* memvisor's own lines stay lines */
        in->tty = tcsetattr(STDIN_FILENO, TCSANOW, &raw) == 0;
    }
    in->started = pthread_create(&in->thread, NULL, input_thread, in) == 0;
}

static void input_stop(struct input *in)
{
    atomic_store(&in->stop, true);
    if (in->started)
        pthread_join(in->thread, NULL);
    if (in->tty)
        (void)tcsetattr(STDIN_FILENO, TCSANOW, &in->saved);
}

static int run(const struct run_opts *o)
{
    struct hv hv;
    struct domain *d;
    uint8_t *image = NULL, *initrd = NULL;
    size_t size = 0, initrd_size = 0;
    char err[256];
    int r;

    if (o->paused && !o->control) {
        fprintf(stderr, "memvisor: --paused needs --control\n");
        return EXIT_USAGE;
    }
    r = read_file(o->image, &image, &size);
    if (r < 0) {
        fprintf(stderr, "memvisor: %s: %s\n", o->image, strerror(-r));
        return EXIT_USAGE;
    }
    if (o->initrd && (r = read_file(o->initrd, &initrd, &initrd_size)) < 0) {
        fprintf(stderr, "memvisor: %s: %s\n", o->initrd, strerror(-r));
        free(image);
        return EXIT_USAGE;
    }
    enum hv_domain_kind kind = HV_DOMAIN_PV;
    {
        /* The image is refused here, before KVM is needed; the domain
         * builder parses it again.  Without --hvm or --pv: an ELF with the
         * PVH entry note and no Xen PV entry note is HVM (docs/hvm.md). */
        static struct pvh_kernel pk;
        static struct elf_kernel k;
        int pr = pvh_parse(image, size, &pk);

        if (o->kind == HV_DOMAIN_HVM ||
            (o->kind < 0 && pr == 0 && !pk.has_pv_entry))
            kind = HV_DOMAIN_HVM;
        if (kind == HV_DOMAIN_HVM && pr < 0) {
            fprintf(stderr, "memvisor: %s: loading the kernel: %s\n", o->image,
                    pk.error);
            free(image);
            free(initrd);
            return EXIT_USAGE;
        }
        if (kind == HV_DOMAIN_PV && elf_parse(image, size, &k) < 0) {
            fprintf(stderr, "memvisor: %s: loading the kernel: %s\n", o->image,
                    k.error);
            free(image);
            free(initrd);
            return EXIT_USAGE;
        }
    }
    if (!kvm_usable()) {
        free(image);
        free(initrd);
        return EXIT_NO_KVM;
    }
    r = hv_init(&hv, (o->mem_mib << 8) + POOL_SLACK_FRAMES);
    if (r < 0) {
        fprintf(stderr, "memvisor: cannot start: %s\n", strerror(-r));
        free(image);
        free(initrd);
        return EXIT_USAGE;
    }
    struct hv_domain_config cfg = {
        .kind = kind,
        .image = image,
        .image_size = size,
        .mem_mib = o->mem_mib,
        .nr_vcpus = o->vcpus,
        .cmdline = o->cmdline,
        .module = initrd,
        .module_size = initrd_size,
        .console_fd = STDOUT_FILENO,
    };
    r = hv_domain_create(&hv, &cfg, &d, err, sizeof(err));
    free(image);
    free(initrd);
    if (r < 0) {
        fprintf(stderr, "memvisor: %s\n", err);
        hv_fini(&hv);
        return EXIT_USAGE;
    }
    return run_domain(&hv, d, o, RUN_FRESH);
}

/*
 * A PV guest's clock is memvisor's pvclock over the guest's TSC, which
 * memvisor takes to be the host's plus the fixed offset KVM applies.  A
 * host kernel that stopped trusting its TSC (it is then missing from the
 * available clocksources) makes KVM re-base the guest's TSC at every entry
 * instead; the guest's clock can then jump years ahead and its timers stop
 * (docs/pv-on-kvm.md, "Time").  Said once, at the start.
 */
static void warn_tsc(void)
{
    char buf[256] = "";
    FILE *f = fopen("/sys/devices/system/clocksource/clocksource0/"
                    "available_clocksource",
                    "r");

    if (!f)
        return;
    if (fgets(buf, sizeof(buf), f) && !strstr(buf, "tsc"))
        fprintf(stderr,
                "memvisor: warning: this host's kernel does not trust its "
                "TSC (available clocksources: %.*s); a PV guest's clock "
                "may jump (docs/pv-on-kvm.md, \"Time\")\n",
                (int)strcspn(buf, "\n"), buf);
    fclose(f);
}

/* Run a created domain to its end: device models (a restored domain's get
 * the states its stream carried, in --device order), control socket,
 * vCPUs (then, over a connection, the destination's word), audits, exit
 * status; destroys it and hv. */
static int run_domain(struct hv *hvp, struct domain *d,
                      const struct run_opts *o, int ack_fd)
{
    struct control *ctl = NULL;
    struct cli_devices devs;
    struct input in = {0};
    unsigned audits = 0, audit_failures = 0;
    char err[256];
    int r, status;

    if (!hv_domain_is_hvm(d))
        warn_tsc();
    devices_init(&devs, d);
    r = start_devices(o, &devs);
    if (r == 0 && ack_fd != RUN_FRESH &&
        (r = hv_domain_dm_restore_states(d, err, sizeof(err))) < 0)
        fprintf(stderr, "memvisor: restore failed: %s\n", err);
    else if (r < 0)
        snprintf(err, sizeof(err), "the device models did not start");
    if (r < 0) {
        if (ack_fd >= 0)
            xfer_ack(ack_fd, r, err); /* the source keeps the guest */
        devices_stop(&devs);
        hv_domain_destroy(d);
        devices_reap(&devs);
        hv_fini(hvp);
        return ack_fd == RUN_FRESH ? EXIT_USAGE : EXIT_RESTORE;
    }
    if (o->paused && ack_fd == RUN_FRESH)
        hv_domain_pause(d);
    if (o->control) {
        r = control_start(&ctl, o->control, d, o->paused ? 1 : 0);
        if (r < 0) {
            fprintf(stderr, "memvisor: control socket %s: %s\n", o->control,
                    strerror(-r));
            if (ack_fd >= 0)
                xfer_ack(ack_fd, r, "the destination's control socket");
            devices_stop(&devs);
            hv_domain_destroy(d);
            devices_reap(&devs);
            hv_fini(hvp);
            return EXIT_USAGE;
        }
    }
    r = hv_domain_start(d);
    if (ack_fd >= 0) /* the guest runs here now (or could not) */
        xfer_ack(ack_fd, r, "starting vCPUs");
    if (r == 0)
        input_start(&in, d);
    if (r < 0) {
        fprintf(stderr, "memvisor: starting vCPUs: %s\n", strerror(-r));
    } else if (o->audit_ms) {
        while (!hv_domain_stopped(d)) {
            char msg[200];
            sleep_ms(o->audit_ms);
            if (hv_domain_stopped(d))
                break;
            audits++;
            if (hv_domain_audit(d, msg, sizeof(msg), NULL, NULL) < 0) {
                audit_failures++;
                fprintf(stderr, "memvisor: audit while paused FAILED: %s\n",
                        msg);
            }
        }
    }
    status = hv_domain_wait(d);
    input_stop(&in);
    if (atomic_load(&in.detached))
        status = EXIT_DETACHED;
    if (status == 70)
        fprintf(stderr, "memvisor: domain crashed:\n%s",
                hv_domain_crash_text(d));
    {
        char msg[200];
        uint64_t frames = 0, tables = 0;
        int a = hv_domain_audit(d, msg, sizeof(msg), &frames, &tables);
        if (o->audit_ms || a < 0)
            fprintf(stderr,
                    "memvisor: audits while paused: %u (%u failed); final "
                    "audit: %s (%llu frames, %llu page tables)%s%s\n",
                    audits, audit_failures, a == 0 ? "clean" : "FAILED",
                    (unsigned long long)frames, (unsigned long long)tables,
                    a == 0 ? "" : ": ", a == 0 ? "" : msg);
        if (a < 0 || audit_failures)
            status = status ? status : EXIT_AUDIT;
    }
    if (o->audit_ms && !hv_domain_is_hvm(d)) {
        struct hv_domain_stats st;
        uint64_t calls = 0, bounces = 0;

        hv_domain_stats(d, &st);
        for (unsigned i = 0; i < HV_NR_HYPERCALLS; i++)
            calls += st.hypercalls[i];
        for (unsigned i = 0; i < 32; i++)
            bounces += st.bounces[i];
        fprintf(stderr,
                "memvisor: %llu exits, %llu hypercalls (%llu unknown numbers "
                "refused), %llu exceptions bounced to the guest, %llu "
                "page-table stores emulated and %llu refused, %llu "
                "continuations, %llu guest pages written by memvisor\n",
                (unsigned long long)st.exits, (unsigned long long)calls,
                (unsigned long long)st.hypercalls_unknown,
                (unsigned long long)bounces,
                (unsigned long long)st.wpt_emulated,
                (unsigned long long)st.wpt_refused,
                (unsigned long long)st.continuations,
                (unsigned long long)st.dirty_marked);
        fprintf(
            stderr,
            "memvisor: TLB flushes: %llu requests, %llu vCPUs kicked "
            "(waited %.1f ms in all), %llu spared by the stamp filter, "
            "%llu flushes made; %llu entries touched at once\n",
            (unsigned long long)st.flush_requests,
            (unsigned long long)st.flush_kicked, (double)st.flush_wait_ns / 1e6,
            (unsigned long long)st.flush_filtered,
            (unsigned long long)st.flushes, (unsigned long long)st.touched_now);
    }
    if (hv_domain_is_hvm(d) && o->audit_ms) {
        struct hv_domain_stats st;
        char last[128];

        hv_domain_stats(d, &st);
        hv_domain_hvm_unclaimed(d, last, sizeof(last));
        fprintf(stderr,
                "memvisor: HVM: %llu UART accesses (%llu bytes sent), %llu "
                "port and %llu MMIO accesses unclaimed%s%s, %llu and %llu "
                "forwarded to device models\n",
                (unsigned long long)st.uart_accesses,
                (unsigned long long)st.uart_tx,
                (unsigned long long)st.pio_unclaimed,
                (unsigned long long)st.mmio_unclaimed, last[0] ? ", last: " : "",
                last, (unsigned long long)st.pio_forwarded,
                (unsigned long long)st.mmio_forwarded);
    }
    report_devices(d);
    if (ctl)
        control_stop(ctl);
    devices_stop(&devs);
    hv_domain_destroy(d);
    devices_reap(&devs);
    hv_fini(hvp);
    return status;
}

static int parse_u64(const char *s, uint64_t *out)
{
    char *end;
    unsigned long long v;

    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno || *s == 0 || *end != 0)
        return -EINVAL;
    *out = v;
    return 0;
}

static int cmd_run(int argc, char **argv)
{
    struct run_opts o = {.mem_mib = 64, .vcpus = 1, .cmdline = "", .kind = -1};
    uint64_t v;

    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        bool has_val = i + 1 < argc;

        if (!strcmp(a, "--mem") && has_val && !parse_u64(argv[i + 1], &v) &&
            v > 0 && v <= 4096) {
            o.mem_mib = v;
            i++;
        } else if (!strcmp(a, "--vcpus") && has_val &&
                   !parse_u64(argv[i + 1], &v) && v > 0 && v <= HV_MAX_VCPUS) {
            o.vcpus = (unsigned)v;
            i++;
        } else if ((!strcmp(a, "--cmdline") || !strcmp(a, "--append")) &&
                   has_val) {
            o.cmdline = argv[++i];
        } else if (!strcmp(a, "--kernel") && has_val && !o.image) {
            o.image = argv[++i];
        } else if (!strcmp(a, "--initrd") && has_val) {
            o.initrd = argv[++i];
        } else if (!strcmp(a, "--control") && has_val) {
            o.control = argv[++i];
        } else if (!strcmp(a, "--audit-every") && has_val &&
                   !parse_u64(argv[i + 1], &v) && v > 0 && v < 600000) {
            o.audit_ms = (unsigned)v;
            i++;
        } else if (!strcmp(a, "--paused")) {
            o.paused = true;
        } else if (!strcmp(a, "--hvm") && o.kind < 0) {
            o.kind = HV_DOMAIN_HVM;
        } else if (!strcmp(a, "--pv") && o.kind < 0) {
            o.kind = HV_DOMAIN_PV;
        } else if (!strcmp(a, "--device") && has_val &&
                   o.nr_devices < CLI_MAX_DEVICES) {
            o.devices[o.nr_devices++] = argv[++i];
        } else if (!strcmp(a, "--dm-socket") && has_val) {
            o.dm_socket = argv[++i];
        } else if (a[0] != '-' && !o.image) {
            o.image = a;
        } else {
            usage(stderr);
            return EXIT_USAGE;
        }
    }
    if (!o.image) {
        usage(stderr);
        return EXIT_USAGE;
    }
    return run(&o);
}

/* ---- migration and snapshots (docs/control.md) ------------------------ */

#define DEFAULT_POOL_MIB 2048

static int parse_u64(const char *s, uint64_t *out);

/* Send one request to the control socket at path; print its progress
 * lines on stderr and the outcome on stdout.  0 if it succeeded. */
static int control_request(const char *path, const char *req, bool migrate)
{
    char err[256], buf[32768];
    size_t have = 0;
    char addr[256];
    bool tty = isatty(STDERR_FILENO), progressed = false;
    int fd;

    snprintf(addr, sizeof(addr), "unix:%s", path);
    fd = xfer_connect(addr, err, sizeof(err));
    if (fd < 0) {
        fprintf(stderr, "memvisor: control socket %s\n", err);
        return EXIT_USAGE;
    }
    if (write(fd, req, strlen(req)) < 0 || write(fd, "\n", 1) < 0) {
        fprintf(stderr, "memvisor: control socket: %s\n", strerror(errno));
        close(fd);
        return 1;
    }
    for (;;) {
        char *nl;
        ssize_t n = read(fd, buf + have, sizeof(buf) - 1 - have);

        if (n <= 0) {
            fprintf(stderr, "memvisor: the control socket closed\n");
            close(fd);
            return 1;
        }
        have += (size_t)n;
        buf[have] = 0;
        while ((nl = strchr(buf, '\n')) != NULL) {
            uint64_t round = 0, left = 0, bps = 0, est = 0;
            size_t used = (size_t)(nl - buf) + 1;

            *nl = 0;
            if (!strncmp(buf, "{\"progress\"", 11)) {
                const char *f = strstr(buf, "\"final\":true");
                (void)!control_u64(buf, "round", &round);
                (void)!control_u64(buf, "pages_left", &left);
                (void)!control_u64(buf, "bytes_per_s", &bps);
                (void)!control_u64(buf, "est_downtime_ms", &est);
                fprintf(stderr,
                        "%smemvisor: round %llu%s: %llu pages left, %.1f "
                        "MiB/s, estimated downtime %llu ms%s",
                        tty ? "\r" : "", (unsigned long long)round,
                        f ? " (final, paused)" : "", (unsigned long long)left,
                        (double)bps / (1 << 20), (unsigned long long)est,
                        tty ? "\033[K" : "\n");
                progressed = true;
            } else {
                char e[512];
                bool ok = !strncmp(buf, "{\"ok\":true", 10);

                if (progressed && tty)
                    fputc('\n', stderr);
                close(fd);
                if (!ok) {
                    if (!control_str(buf, "error", e, sizeof(e)))
                        snprintf(e, sizeof(e), "%.500s", buf);
                    fprintf(stderr, "memvisor: %s failed: %s (the guest "
                                    "runs on at the source)\n",
                            migrate ? "migration" : "save", e);
                    return 1;
                }
                {
                    const char *sum = strstr(buf, "\"summary\":");
                    uint64_t rounds = 0, bytes = 0, pages = 0;
                    double total = 0, down = 0;
                    const char *t = sum ? strstr(sum, "\"total_ms\":") : NULL;
                    const char *dn =
                        sum ? strstr(sum, "\"downtime_ms\":") : NULL;

                    if (t)
                        total = strtod(t + 11, NULL);
                    if (dn)
                        down = strtod(dn + 14, NULL);
                    if (sum) {
                        (void)!control_u64(sum, "rounds", &rounds);
                        (void)!control_u64(sum, "bytes", &bytes);
                        (void)!control_u64(sum, "pages", &pages);
                    }
                    const char *dr = strstr(buf, "\"downtime_to_running_ms\":");
                    double running = dr ? strtod(dr + 25, NULL) : 0;
                    char extra[96] = "";

                    if (migrate)
                        snprintf(extra, sizeof(extra),
                                 " (%.1f ms until the guest ran at the "
                                 "destination)",
                                 running);
                    printf("memvisor: %s: %.1f ms in all, downtime %.1f "
                           "ms%s, %llu rounds, %llu pages, %.1f MiB sent\n",
                           migrate ? "migrated" : "saved", total, down, extra,
                           (unsigned long long)rounds,
                           (unsigned long long)pages,
                           (double)bytes / (1 << 20));
                    printf("%s\n", buf);
                }
                return 0;
            }
            memmove(buf, buf + used, have - used);
            have -= used;
        }
        if (have == sizeof(buf) - 1)
            have = 0; /* an over-long line: drop it */
    }
}

static int json_escape_into(char *out, size_t len, const char *s)
{
    control_json_string(out, len, s);
    return strlen(out) + 1 < len ? 0 : -ENAMETOOLONG;
}

/* memvisor migrate|save --control PATH DEST [options] */
static int cmd_xfer(int argc, char **argv, bool migrate)
{
    const char *control = NULL, *dest = NULL;
    char req[1024], esc[600], abs_path[PATH_MAX];
    uint64_t v, downtime = 0, rounds = 0, cut = 0, cut_conn = 0, conns = 1;
    bool zstd = false, live = migrate, stop = false;

    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        bool has_val = i + 1 < argc;

        if (!strcmp(a, "--control") && has_val)
            control = argv[++i];
        else if (!strcmp(a, "--zstd"))
            zstd = true;
        else if (!strcmp(a, "--live"))
            live = true;
        else if (!strcmp(a, "--offline"))
            live = false;
        else if (!strcmp(a, "--stop") && !migrate)
            stop = true;
        else if (!strcmp(a, "--downtime") && has_val &&
                 !parse_u64(argv[i + 1], &v) && v > 0 && v < 3600000) {
            downtime = v;
            i++;
        } else if (!strcmp(a, "--max-rounds") && has_val &&
                   !parse_u64(argv[i + 1], &v) && v > 0 &&
                   v <= MIGRATE_MAX_ROUNDS) {
            rounds = v;
            i++;
        } else if (!strcmp(a, "--connections") && has_val && migrate &&
                   !parse_u64(argv[i + 1], &v) && v > 0 &&
                   v <= STREAM_CHANNELS_MAX) {
            conns = v;
            i++;
        } else if (!strcmp(a, "--test-cut-after") && has_val &&
                   !parse_u64(argv[i + 1], &v)) {
            cut = v;
            i++;
        } else if (!strcmp(a, "--test-cut-conn") && has_val &&
                   !parse_u64(argv[i + 1], &v)) {
            cut_conn = v;
            i++;
        } else if (a[0] != '-' && !dest)
            dest = a;
        else {
            usage(stderr);
            return EXIT_USAGE;
        }
    }
    if (!control || !dest) {
        usage(stderr);
        return EXIT_USAGE;
    }
    if (!migrate && dest[0] != '/') {
        /* the running memvisor opens the file: give it an absolute path */
        if (!getcwd(abs_path, sizeof(abs_path)) ||
            strlen(abs_path) + strlen(dest) + 2 > sizeof(abs_path)) {
            fprintf(stderr, "memvisor: %s: path too long\n", dest);
            return EXIT_USAGE;
        }
        strcat(abs_path, "/");
        strcat(abs_path, dest);
        dest = abs_path;
    }
    if (json_escape_into(esc, sizeof(esc), dest) < 0) {
        fprintf(stderr, "memvisor: %s: too long\n", dest);
        return EXIT_USAGE;
    }
    snprintf(req, sizeof(req),
             "{\"cmd\":\"%s\",\"%s\":%s,\"live\":%d,\"zstd\":%d,"
             "\"stop\":%d,\"downtime_ms\":%llu,\"max_rounds\":%llu,"
             "\"connections\":%llu%s%.0llu%s%.0llu}",
             migrate ? "migrate" : "save", migrate ? "to" : "file", esc, live,
             zstd, stop, (unsigned long long)downtime,
             (unsigned long long)rounds, (unsigned long long)conns,
             cut ? ",\"test_cut_after\":" : "", (unsigned long long)cut,
             cut_conn ? ",\"test_cut_conn\":" : "",
             (unsigned long long)cut_conn);
    return control_request(control, req, migrate);
}

/* Build the domain a stream on fd carries and run it (as `run` does);
 * with ack, tell the source how it went once the vCPUs started. */
/* A parallel stream's extra connections, on the listening socket. */
static int accept_extra(void *arg, char *err, size_t errlen)
{
    return xfer_accept(*(int *)arg, XFER_ACCEPT_TIMEOUT_MS, err, errlen);
}

static void close_listen(int lfd, const char *lpath)
{
    if (lfd < 0)
        return;
    close(lfd);
    if (lpath)
        unlink(lpath);
}

static int restore_and_run(int fd, int lfd, const char *lpath,
                           uint64_t pool_mib, const struct run_opts *o,
                           bool ack, uint64_t die_after)
{
    struct migrate_restore_opts ro = {.accept = lfd >= 0 ? accept_extra : NULL,
                                      .accept_arg = &lfd};
    struct hv hv;
    struct migrate_target tgt;
    struct migrate_restore_stats rs;
    struct stream_chan c;
    struct domain *d;
    char err[512];
    int r;

    r = hv_init(&hv, (pool_mib << 8) + POOL_SLACK_FRAMES);
    if (r < 0) {
        fprintf(stderr, "memvisor: cannot start: %s\n", strerror(-r));
        if (ack)
            xfer_ack(fd, r, "the destination cannot start");
        close_listen(lfd, lpath);
        return EXIT_USAGE;
    }
    if ((r = hv_domain_target_init(&hv, STDOUT_FILENO, &tgt)) < 0) {
        hv_fini(&hv);
        close_listen(lfd, lpath);
        return EXIT_USAGE;
    }
    stream_chan_fd(&c, fd);
    c.read_fail_after = die_after;
    r = migrate_restore_opts(&tgt, &c, &ro, &rs, err, sizeof(err));
    close_listen(lfd, lpath); /* no more connections */
    if (r < 0 && die_after) {
        /* test: a destination that dies in the middle, leaving the
         * source to find out by itself */
        fprintf(stderr, "memvisor: dying after %llu records (test)\n",
                (unsigned long long)die_after);
        _exit(137);
    }
    d = hv_domain_target_fini(&tgt);
    if (r < 0) {
        if (ack)
            xfer_ack(fd, r, err);
        fprintf(stderr, "memvisor: restore failed: %s\n", err);
        hv_fini(&hv);
        return EXIT_RESTORE;
    }
    fprintf(stderr,
            "memvisor: restored domain %u: %llu pages (%llu page tables "
            "localised), %llu device states, %llu records, %.1f MiB over %u "
            "connection%s in %.1f ms\n",
            hv_domain_id(d), (unsigned long long)rs.pages,
            (unsigned long long)rs.localised_tables,
            (unsigned long long)rs.devices, (unsigned long long)rs.records,
            (double)rs.bytes / (1 << 20), rs.connections,
            rs.connections == 1 ? "" : "s", (double)rs.ns / 1e6);
    return run_domain(&hv, d, o, ack ? fd : RUN_RESTORED_FILE);
}

/* memvisor restore FILE | receive --listen ADDR, [--pool MiB]
 * [--control PATH] [--audit-every MS] */
static int cmd_restore(int argc, char **argv, bool receive)
{
    struct run_opts o = {0};
    const char *src = NULL;
    uint64_t pool = DEFAULT_POOL_MIB, v, die_after = 0;
    char err[256];
    int fd, lfd = -1, st;

    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        bool has_val = i + 1 < argc;

        if (!strcmp(a, "--listen") && has_val && receive && !src)
            src = argv[++i];
        else if (!strcmp(a, "--pool") && has_val &&
                 !parse_u64(argv[i + 1], &v) && v > 0 && v <= 8192) {
            pool = v;
            i++;
        } else if (!strcmp(a, "--control") && has_val)
            o.control = argv[++i];
        else if (!strcmp(a, "--audit-every") && has_val &&
                 !parse_u64(argv[i + 1], &v) && v > 0 && v < 600000) {
            o.audit_ms = (unsigned)v;
            i++;
        } else if (!strcmp(a, "--device") && has_val &&
                   o.nr_devices < CLI_MAX_DEVICES) {
            o.devices[o.nr_devices++] = argv[++i];
        } else if (!strcmp(a, "--dm-socket") && has_val) {
            o.dm_socket = argv[++i];
        } else if (!strcmp(a, "--test-die-after") && has_val && receive &&
                   !parse_u64(argv[i + 1], &v)) {
            die_after = v;
            i++;
        } else if (a[0] != '-' && !receive && !src)
            src = a;
        else {
            usage(stderr);
            return EXIT_USAGE;
        }
    }
    if (!src) {
        usage(stderr);
        return EXIT_USAGE;
    }
    if (!kvm_usable())
        return EXIT_NO_KVM;
    if (!receive) {
        fd = open(src, O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            fprintf(stderr, "memvisor: %s: %s\n", src, strerror(errno));
            return EXIT_USAGE;
        }
        st = restore_and_run(fd, -1, NULL, pool, &o, false, 0);
        close(fd);
        return st;
    }
    lfd = xfer_listen(src, err, sizeof(err));
    if (lfd < 0) {
        fprintf(stderr, "memvisor: listen %s\n", err);
        return EXIT_USAGE;
    }
    fprintf(stderr, "memvisor: waiting for a migration on %s\n", src);
    fd = xfer_accept(lfd, -1, err, sizeof(err));
    if (fd < 0) {
        fprintf(stderr, "memvisor: %s\n", err);
        close(lfd);
        if (!strncmp(src, "unix:", 5))
            unlink(src + 5);
        return EXIT_USAGE;
    }
    /* the listening socket stays for a parallel stream's extra
     * connections until the stream is read (restore_and_run closes it) */
    st = restore_and_run(fd, lfd, !strncmp(src, "unix:", 5) ? src + 5 : NULL,
                         pool, &o, true, die_after);
    close(fd);
    return st;
}

/* The guest image: MEMVISOR_GUEST, else ../../guest/pvkernel relative to
 * this executable (build/src/cli/memvisor -> build/guest/pvkernel). */
static int guest_image(char *out, size_t len)
{
    const char *env = getenv("MEMVISOR_GUEST");
    char self[PATH_MAX];
    ssize_t n;
    char *slash;

    if (env && *env) {
        snprintf(out, len, "%s", env);
        return 0;
    }
    n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (n <= 0)
        return -ENOENT;
    self[n] = 0;
    for (int up = 0; up < 3; up++) {
        slash = strrchr(self, '/');
        if (!slash)
            return -ENOENT;
        *slash = 0;
    }
    if ((size_t)snprintf(out, len, "%s/guest/pvkernel", self) >= len)
        return -ENAMETOOLONG;
    return access(out, R_OK) == 0 ? 0 : -ENOENT;
}

static int cmd_demo(void)
{
    static const char *const workloads[] = {"dirty", "ptchurn", "balloon",
                                            "hostile", "abi"};
    char image[PATH_MAX];
    int worst = 0;

    if (guest_image(image, sizeof(image)) < 0) {
        fprintf(stderr, "memvisor demo: guest image not found (build it, or "
                        "set MEMVISOR_GUEST)\n");
        return EXIT_USAGE;
    }
    if (!kvm_usable())
        return EXIT_NO_KVM;
    printf("memvisor demo: the PV guest kernel %s on 2 vCPUs, 64 MiB, one\n"
           "workload at a time; the frame table is audited while each runs\n"
           "(guest paused) and after it stops.\n\n",
           image);
    for (size_t i = 0; i < sizeof(workloads) / sizeof(workloads[0]); i++) {
        char cmdline[64];
        struct run_opts o = {.image = image,
                             .mem_mib = 64,
                             .vcpus = 2,
                             .cmdline = cmdline,
                             .audit_ms = 200};
        int st;

        snprintf(cmdline, sizeof(cmdline), "%s", workloads[i]);
        printf("== memvisor run %s --mem 64 --vcpus 2 --cmdline \"%s\"\n",
               image, cmdline);
        fflush(stdout);
        st = run(&o);
        printf("== exit status %d\n\n", st);
        fflush(stdout);
        if (st && !worst)
            worst = st;
    }
    return worst;
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    /* a migration peer that goes away is an error, not a signal */
    signal(SIGPIPE, SIG_IGN);
    if (argc >= 2 && !strcmp(argv[1], "run"))
        return cmd_run(argc - 2, argv + 2);
    if (argc >= 2 && !strcmp(argv[1], "demo"))
        return cmd_demo();
    if (argc >= 2 && !strcmp(argv[1], "migrate"))
        return cmd_xfer(argc - 2, argv + 2, true);
    if (argc >= 2 && !strcmp(argv[1], "save"))
        return cmd_xfer(argc - 2, argv + 2, false);
    if (argc >= 2 && !strcmp(argv[1], "restore"))
        return cmd_restore(argc - 2, argv + 2, false);
    if (argc >= 2 && !strcmp(argv[1], "receive"))
        return cmd_restore(argc - 2, argv + 2, true);
    usage(argc >= 2 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))
              ? stdout
              : stderr);
    return argc >= 2 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))
               ? 0
               : EXIT_USAGE;
}
