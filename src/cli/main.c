/*
 * main.c - the memvisor command.
 *
 *   memvisor run <image> [--mem MiB] [--vcpus N] [--cmdline "..."]
 *                        [--control PATH] [--audit-every MS]
 *   memvisor demo
 *
 * run: boots the PV kernel image, the guest console on stdout; the exit
 * status is the guest's (0 after a poweroff, the shutdown reason
 * otherwise, 70 if the domain crashed, 2 for a usage or load error, 69 if
 * /dev/kvm is missing or cannot be opened).  The arguments and the image
 * are checked before /dev/kvm is opened, so a bad image is refused with its
 * reason on any machine.
 * --control serves the control socket (docs/control.md) while it runs;
 * --paused starts the guest paused (a "resume" request lets it go).
 * --audit-every pauses the guest every MS milliseconds and audits the frame
 * table (the result goes to stderr; a failed audit makes the exit status 71).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "boot/elf.h"
#include "cli/control.h"
#include "hv/hv.h"

#define EXIT_USAGE 2
#define EXIT_NO_KVM 69 /* EX_UNAVAILABLE: no usable /dev/kvm */
#define EXIT_AUDIT 71
#define POOL_SLACK_FRAMES 4096
#define MAX_IMAGE (64u << 20)

struct run_opts {
    const char *image;
    uint64_t mem_mib;
    unsigned vcpus;
    const char *cmdline;
    const char *control;
    unsigned audit_ms;
    bool paused; /* start paused: resume through the control socket */
};

static void usage(FILE *f)
{
    fprintf(f, "usage: memvisor run <image> [--mem MiB] [--vcpus N] "
               "[--cmdline \"...\"] [--control PATH] [--audit-every MS] "
               "[--paused]\n"
               "       memvisor demo\n");
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

static int run(const struct run_opts *o)
{
    struct hv hv;
    struct domain *d;
    struct control *ctl = NULL;
    uint8_t *image = NULL;
    size_t size = 0;
    char err[256];
    unsigned audits = 0, audit_failures = 0;
    int r, status;

    if (o->paused && !o->control) {
        fprintf(stderr, "memvisor: --paused needs --control\n");
        return EXIT_USAGE;
    }
    r = read_file(o->image, &image, &size);
    if (r < 0) {
        fprintf(stderr, "memvisor: %s: %s\n", o->image, strerror(-r));
        return EXIT_USAGE;
    }
    {
        /* The image is refused here, before KVM is needed; the domain
         * builder parses it again. */
        static struct elf_kernel k;

        if (elf_parse(image, size, &k) < 0) {
            fprintf(stderr, "memvisor: %s: loading the kernel: %s\n", o->image,
                    k.error);
            free(image);
            return EXIT_USAGE;
        }
    }
    if (!kvm_usable()) {
        free(image);
        return EXIT_NO_KVM;
    }
    r = hv_init(&hv, (o->mem_mib << 8) + POOL_SLACK_FRAMES);
    if (r < 0) {
        fprintf(stderr, "memvisor: cannot start: %s\n", strerror(-r));
        free(image);
        return EXIT_USAGE;
    }
    struct hv_domain_config cfg = {
        .image = image,
        .image_size = size,
        .mem_mib = o->mem_mib,
        .nr_vcpus = o->vcpus,
        .cmdline = o->cmdline,
        .console_fd = STDOUT_FILENO,
    };
    r = hv_domain_create(&hv, &cfg, &d, err, sizeof(err));
    free(image);
    if (r < 0) {
        fprintf(stderr, "memvisor: %s\n", err);
        hv_fini(&hv);
        return EXIT_USAGE;
    }
    if (o->paused)
        hv_domain_pause(d);
    if (o->control) {
        r = control_start(&ctl, o->control, d, o->paused ? 1 : 0);
        if (r < 0) {
            fprintf(stderr, "memvisor: control socket %s: %s\n", o->control,
                    strerror(-r));
            hv_domain_destroy(d);
            hv_fini(&hv);
            return EXIT_USAGE;
        }
    }
    r = hv_domain_start(d);
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
    if (o->audit_ms) {
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
    if (ctl)
        control_stop(ctl);
    hv_domain_destroy(d);
    hv_fini(&hv);
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
    struct run_opts o = {.mem_mib = 64, .vcpus = 1, .cmdline = ""};
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
        } else if (!strcmp(a, "--cmdline") && has_val) {
            o.cmdline = argv[++i];
        } else if (!strcmp(a, "--control") && has_val) {
            o.control = argv[++i];
        } else if (!strcmp(a, "--audit-every") && has_val &&
                   !parse_u64(argv[i + 1], &v) && v > 0 && v < 600000) {
            o.audit_ms = (unsigned)v;
            i++;
        } else if (!strcmp(a, "--paused")) {
            o.paused = true;
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
    if (argc >= 2 && !strcmp(argv[1], "run"))
        return cmd_run(argc - 2, argv + 2);
    if (argc >= 2 && !strcmp(argv[1], "demo"))
        return cmd_demo();
    usage(argc >= 2 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))
              ? stdout
              : stderr);
    return argc >= 2 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))
               ? 0
               : EXIT_USAGE;
}
