/*
 * bench_migrate.c - live migration of the PV guest kernel on real KVM:
 * total time, downtime, bytes and rounds for 256 MiB and 1 GiB guests on
 * 2 vCPUs, idle and running the dirtier with two working sets, each
 * migrated over loopback TCP from one hypervisor object to another (two
 * pools, two KVM VMs; the destination restores on its own thread, as
 * `memvisor receive` would in its own process).
 *
 * Downtime is given twice: from the final pause until the stream's END
 * was written, and until the destination's vCPUs started (after its
 * restore validated and pinned everything).
 *
 * Baselines measured in the same run: memcpy of 256 MiB, and 256 MiB
 * through a loopback TCP connection between two threads.  Throughput is
 * guest memory moved per second of total time, and wire bytes per second,
 * each as a ratio to both baselines.  The extra memory each side
 * allocates is the engine's own account (migrate.h): a few bits per guest
 * page plus bounded buffers, never a copy of guest memory.
 *
 * Every case runs twice in a row: page data over one connection, and over
 * two (a parallel stream, docs/stream.md: a sender thread per connection
 * at the source, a reader thread per connection at the destination); a
 * line after the pair gives the two-connection run's total time, downtime
 * and throughput as ratios to the one-connection run's.
 *
 * Run: make bench, or build-bench/bench/migrate/bench-migrate [PVKERNEL]
 * [--quick] (256 MiB only; the kernel defaults to guest/pvkernel of the
 * same build tree).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../bench.h"
#include "hv/hv.h"
#include "migrate/migrate.h"

static uint8_t *image;
static size_t image_size;

static uint8_t *load(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    uint8_t *b;
    long n;

    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    b = malloc((size_t)n);
    if (b && fread(b, 1, (size_t)n, f) != (size_t)n) {
        free(b);
        b = NULL;
    }
    fclose(f);
    *size = (size_t)n;
    return b;
}

/* A connected loopback TCP pair: *a connects, *b accepted. */
static int tcp_pair(int *a, int *b)
{
    struct sockaddr_in sa = {.sin_family = AF_INET};
    socklen_t len = sizeof(sa);
    int l = socket(AF_INET, SOCK_STREAM, 0), one = 1;

    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (l < 0 || bind(l, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
        listen(l, 1) < 0 || getsockname(l, (struct sockaddr *)&sa, &len) < 0)
        return -errno;
    *a = socket(AF_INET, SOCK_STREAM, 0);
    if (*a < 0 || connect(*a, (struct sockaddr *)&sa, sizeof(sa)) < 0)
        return -errno;
    *b = accept(l, NULL, NULL);
    close(l);
    if (*b < 0)
        return -errno;
    setsockopt(*a, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return 0;
}

#define BASE_BYTES (256ULL << 20)

static double bench_memcpy(void)
{
    uint8_t *a = malloc(BASE_BYTES), *b = malloc(BASE_BYTES);
    double t[3];

    memset(a, 1, BASE_BYTES);
    memset(b, 2, BASE_BYTES);
    for (int i = 0; i < 3; i++) {
        uint64_t t0 = now_ns();
        memcpy(b, a, BASE_BYTES);
        t[i] = (double)BASE_BYTES / ((double)(now_ns() - t0) / 1e9);
    }
    free(a);
    free(b);
    return median(t, 3);
}

static void *tcp_sink(void *arg)
{
    int fd = *(int *)arg;
    char *buf = malloc(1 << 20);

    while (read(fd, buf, 1 << 20) > 0)
        ;
    free(buf);
    return NULL;
}

static double bench_tcp(void)
{
    char *buf = malloc(1 << 20);
    double t[3];

    memset(buf, 3, 1 << 20);
    for (int i = 0; i < 3; i++) {
        int a, b;
        pthread_t th;
        uint64_t t0;

        if (tcp_pair(&a, &b) < 0)
            return 0;
        pthread_create(&th, NULL, tcp_sink, &b);
        t0 = now_ns();
        for (uint64_t sent = 0; sent < BASE_BYTES; sent += 1 << 20)
            if (write(a, buf, 1 << 20) != 1 << 20)
                break;
        close(a);
        pthread_join(th, NULL);
        t[i] = (double)BASE_BYTES / ((double)(now_ns() - t0) / 1e9);
        close(b);
    }
    free(buf);
    return median(t, 3);
}

struct dst {
    struct hv hv;
    int fd;
    int extra[2]; /* a parallel stream's second connection, taken once */
    unsigned nextra;
    int rc;
    char err[256];
    struct migrate_restore_stats rs;
    struct domain *d;
    uint64_t running_at;
};

static int take_extra(void *arg, char *err, size_t errlen)
{
    struct dst *x = arg;

    if (!x->nextra) {
        snprintf(err, errlen, "no more connections");
        return -ENOENT;
    }
    return x->extra[--x->nextra];
}

static void *receiver(void *arg)
{
    struct dst *x = arg;
    struct migrate_target tgt;
    struct stream_chan c;
    struct migrate_restore_opts ro = {.accept = take_extra, .accept_arg = x};

    x->rc = hv_domain_target_init(&x->hv, -1, &tgt);
    if (x->rc < 0)
        return NULL;
    stream_chan_fd(&c, x->fd);
    x->rc = migrate_restore_opts(&tgt, &c, &ro, &x->rs, x->err,
                                 sizeof(x->err));
    x->d = hv_domain_target_fini(&tgt);
    /* the guest runs again here: the end of the downtime */
    if (x->rc == 0 && (x->rc = hv_domain_start(x->d)) == 0)
        x->running_at = now_ns();
    return NULL;
}

static int wait_start(struct domain *d)
{
    char con[4096];
    uint64_t t0 = now_ns();

    while (now_ns() - t0 < 60000000000ULL) {
        hv_domain_console(d, con, sizeof(con));
        if (strstr(con, "dirty: start"))
            return 0;
        usleep(5000);
    }
    return -ETIMEDOUT;
}

struct result {
    double total_ms, downtime_ms, running_ms, guest_bps;
};

static int one(uint64_t mib, const char *load_name, const char *cmdline,
               double mcpy, double tcp, unsigned nconn, struct result *res)
{
    struct hv src;
    static struct dst x;
    struct domain *d;
    struct migrate_source ms;
    struct migrate_stats st;
    struct migrate_save_opts o = {.live = true, .leave_paused = true};
    struct stream_chan c, ex;
    struct stream_chan *exp[1] = {&ex};
    int exa = -1;
    struct hv_domain_config cfg = {
        .image = image,
        .image_size = image_size,
        .mem_mib = mib,
        .nr_vcpus = 2,
        .cmdline = cmdline,
        .console_fd = -1,
    };
    char err[256];
    pthread_t th;
    int a, rc;
    double total_s, guest_bps, wire_bps;

    memset(&x, 0, sizeof(x));
    if (hv_init(&src, (mib << 8) + 4096) < 0 ||
        hv_init(&x.hv, (mib << 8) + 4096) < 0)
        return -ENOMEM;
    err[0] = 0;
    if ((rc = hv_domain_create(&src, &cfg, &d, err, sizeof(err))) < 0 ||
        (rc = hv_domain_start(d)) < 0 || (rc = wait_start(d)) < 0) {
        fprintf(stderr, "bench-migrate: guest: %s (%s)\n",
                err[0] ? err : "it did not start", strerror(-rc));
        return -EIO;
    }
    usleep(200000); /* the working set is written once at least */
    if (tcp_pair(&a, &x.fd) < 0)
        return -EIO;
    if (nconn == 2) {
        int b;

        if (tcp_pair(&exa, &b) < 0)
            return -EIO;
        x.extra[x.nextra++] = b; /* the engine closes it */
        stream_chan_fd(&ex, exa);
        o.extra = exp;
        o.nr_extra = 1;
    }
    pthread_create(&th, NULL, receiver, &x);
    if ((rc = hv_domain_source_init(d, &ms)) < 0)
        return rc;
    stream_chan_fd(&c, a);
    rc = migrate_save(&ms, &c, &o, &st, err, sizeof(err));
    hv_domain_source_fini(&ms);
    shutdown(a, SHUT_WR);
    if (exa >= 0)
        shutdown(exa, SHUT_WR);
    pthread_join(th, NULL);
    close(a);
    if (exa >= 0)
        close(exa);
    close(x.fd);
    if (rc < 0 || x.rc < 0) {
        fprintf(stderr, "bench-migrate: %s / %s\n", err, x.err);
        return rc < 0 ? rc : x.rc;
    }
    hv_domain_shutdown(d, 0);
    hv_domain_resume(d);
    hv_domain_wait(d);
    hv_domain_destroy(d);
    hv_domain_destroy(x.d);
    hv_fini(&src);
    hv_fini(&x.hv);

    total_s = (double)st.total_ns / 1e9;
    guest_bps = (double)(mib << 20) / total_s;
    wire_bps = (double)st.bytes / total_s;
    res->total_ms = st.total_ns / 1e6;
    res->downtime_ms = st.downtime_ns / 1e6;
    res->running_ms = (double)(x.running_at - st.paused_at_ns) / 1e6;
    res->guest_bps = guest_bps;
    printf("%5llu MiB %-6s %u conn  total %8.1f ms  downtime %6.1f ms (%6.1f ms to "
           "running)  %2u rounds  "
           "%8.1f MiB on the wire  guest %6.0f MiB/s (%.3f x memcpy, "
           "%.3f x TCP)  wire %6.0f MiB/s (%.3f x TCP)  extra memory: "
           "source %.1f MiB, destination %.1f MiB\n",
           (unsigned long long)mib, load_name, nconn, st.total_ns / 1e6,
           st.downtime_ns / 1e6,
           (double)(x.running_at - st.paused_at_ns) / 1e6, st.rounds, (double)st.bytes / (1 << 20),
           guest_bps / (1 << 20), guest_bps / mcpy, guest_bps / tcp,
           wire_bps / (1 << 20), wire_bps / tcp,
           (double)st.mem_bytes / (1 << 20),
           (double)x.rs.mem_bytes / (1 << 20));
    fflush(stdout);
    return 0;
}

int main(int argc, char **argv)
{
    static const struct {
        const char *name, *cmdline;
    } loads[] = {
        {"idle", "dirty pages=1 passes=0"},
        {"8M", "dirty pages=1024 passes=0"},   /* 4 MiB per vCPU */
        {"64M", "dirty pages=8192 passes=0"},  /* 32 MiB per vCPU */
    };
    uint64_t sizes[] = {256, 1024};
    unsigned nsizes = 2;
    double mcpy, tcp;
    char def[4096];
    const char *path = def;

    /* the kernel defaults to guest/pvkernel of the same build tree */
    snprintf(def, sizeof(def), "%s", argv[0]);
    if (strrchr(def, '/'))
        *strrchr(def, '/') = 0;
    strncat(def, "/../../guest/pvkernel", sizeof(def) - strlen(def) - 1);
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--quick"))
            nsizes = 1;
        else
            path = argv[i];
    }
    image = load(path, &image_size);
    if (!image) {
        fprintf(stderr, "bench-migrate: %s: cannot read\n", path);
        return 2;
    }
    mcpy = bench_memcpy();
    tcp = bench_tcp();
    printf("baselines (median of 3, 256 MiB): memcpy %.0f MiB/s, loopback "
           "TCP %.0f MiB/s\n",
           mcpy / (1 << 20), tcp / (1 << 20));
    printf("guest: 2 vCPUs; load: idle, or the dirtier rewriting a working "
           "set of 8 or 64 MiB in a loop; downtime target 300 ms, at most 8 "
           "live rounds; over loopback TCP, no compression\n");
    for (unsigned s = 0; s < nsizes; s++)
        for (unsigned l = 0; l < 3; l++) {
            struct result r1, r2;

            if (one(sizes[s], loads[l].name, loads[l].cmdline, mcpy, tcp, 1,
                    &r1) < 0 ||
                one(sizes[s], loads[l].name, loads[l].cmdline, mcpy, tcp, 2,
                    &r2) < 0)
                return 1;
            printf("%5llu MiB %-6s 2 vs 1 connection: total %.3f x, downtime "
                   "%.3f x (to running %.3f x), guest throughput %.3f x\n",
                   (unsigned long long)sizes[s], loads[l].name,
                   r2.total_ms / r1.total_ms, r2.downtime_ms / r1.downtime_ms,
                   r2.running_ms / r1.running_ms, r2.guest_bps / r1.guest_bps);
            fflush(stdout);
        }
    return 0;
}
