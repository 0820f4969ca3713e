/*
 * bench_ioreq.c - the device-model path's costs, each against a baseline
 * measured in the same run:
 *  - an I/O request's round trip (ioreq_access() to memvisor-dm-test, a
 *    register read: IOREQ out, the device model's thread, IORESP back, the
 *    waiting thread woken) against a bare SOCK_SEQPACKET round trip
 *    between two processes;
 *  - a mapcache hit (hold + release of a cached page) and a miss (a bucket
 *    not cached: evict, map 16 pages of the memfd) against a bare
 *    mmap + munmap of one page of the same memfd;
 *  - the invalidation at the end of a hypercall (MAP + INVALIDATE to every
 *    server, wait for every INVAL_ACK) with 1, 4 and 16 device-model
 *    processes, against the request round trip.
 * Run: `make bench`, or build-bench/bench/ioreq/bench-ioreq (it finds
 * memvisor-dm-test in the build tree's dm/ or in MEMVISOR_DM_DIR).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../bench.h"
#include "ioreq/ioreq.h"
#include "mapcache.h"

#define ROUNDS 7
#define NR_GFNS 256

static char dm_exe[PATH_MAX + 64];

static int find_dm(void)
{
    char self[PATH_MAX];
    const char *env = getenv("MEMVISOR_DM_DIR");
    ssize_t n;

    if (env) {
        snprintf(dm_exe, sizeof(dm_exe), "%s/memvisor-dm-test", env);
        return access(dm_exe, X_OK);
    }
    n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (n < 0)
        return -1;
    self[n] = 0;
    *strrchr(self, '/') = 0;
    snprintf(dm_exe, sizeof(dm_exe), "%s/../../dm/memvisor-dm-test", self);
    return access(dm_exe, X_OK);
}

/* ---- baseline: a bare seqpacket round trip between processes ---- */
static double bare_socket_rtt_ns(int iters)
{
    int sv[2];
    uint8_t msg[48] = {0};
    double s[ROUNDS];
    pid_t pid;

    if (socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv))
        return -1;
    pid = fork();
    if (pid == 0) {
        close(sv[0]);
        for (;;) {
            ssize_t n = recv(sv[1], msg, sizeof(msg), 0);
            if (n <= 0)
                _exit(0);
            if (send(sv[1], msg, (size_t)n, 0) != n)
                _exit(1);
        }
    }
    close(sv[1]);
    for (int r = 0; r < ROUNDS; r++) {
        uint64_t t0 = now_ns();
        for (int i = 0; i < iters; i++) {
            if (send(sv[0], msg, 40, 0) != 40 || recv(sv[0], msg, sizeof(msg), 0) != 40)
                return -1;
        }
        s[r] = (double)(now_ns() - t0) / iters;
    }
    close(sv[0]);
    waitpid(pid, NULL, 0);
    return median(s, ROUNDS);
}

/* ---- an ioreq domain with n test devices ---- */
struct world {
    struct frames f;
    struct p2m p2m;
    struct ioreq_domain io;
    pid_t pids[IOREQ_MAX_SERVERS];
    unsigned n;
};

static int world_init(struct world *w, unsigned n)
{
    mfn_t m;

    memset(w, 0, sizeof(*w));
    if (frames_init(&w->f, 2 * NR_GFNS) || frames_domain_add(&w->f, 1, NR_GFNS) ||
        p2m_init(&w->p2m, &w->f, 1, P2M_HVM, NR_GFNS))
        return -1;
    for (uint64_t g = 0; g < NR_GFNS; g++)
        if (frames_alloc(&w->f, 1, 0, &m) ||
            p2m_populate(&w->p2m, _gfn(g), m, P2M_RAM))
            return -1;
    if (ioreq_domain_init(&w->io, &w->f, &w->p2m, NULL, NULL, 1, NULL))
        return -1;
    for (unsigned i = 0; i < n; i++) {
        int sv[2];
        char fdtxt[16], port[16];
        if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv))
            return -1;
        snprintf(fdtxt, sizeof(fdtxt), "%d", sv[1]);
        snprintf(port, sizeof(port), "%#x", 0x5000 + 0x40 * i);
        pid_t pid = fork();
        if (pid == 0) {
            const char *argv[] = {dm_exe, "--fd", fdtxt, "--port", port, NULL};
            fcntl(sv[1], F_SETFD, 0);
            execv(dm_exe, (char *const *)(uintptr_t)argv);
            _exit(127);
        }
        close(sv[1]);
        w->pids[w->n++] = pid;
        if (ioreq_attach(&w->io, sv[0]) < 0)
            return -1;
    }
    return 0;
}

static void world_fini(struct world *w)
{
    ioreq_domain_fini(&w->io);
    for (unsigned i = 0; i < w->n; i++)
        waitpid(w->pids[i], NULL, 0);
    p2m_fini(&w->p2m);
    frames_fini(&w->f);
}

static double ioreq_rtt_ns(struct world *w, int iters)
{
    double s[ROUNDS];

    for (int r = 0; r < ROUNDS; r++) {
        uint64_t t0 = now_ns();
        for (int i = 0; i < iters; i++) {
            uint64_t d = 0;
            if (ioreq_access(&w->io, 0, DM_RANGE_PIO, 0x5014, 4, false, &d))
                return -1;
        }
        s[r] = (double)(now_ns() - t0) / iters;
    }
    return median(s, ROUNDS);
}

/* One invalidation: a gfn leaves, the end-of-hypercall wait, it returns. */
static double inval_ns(struct world *w, int iters)
{
    double s[ROUNDS];

    for (int r = 0; r < ROUNDS; r++) {
        uint64_t total = 0;
        for (int i = 0; i < iters; i++) {
            uint64_t g = (uint64_t)(i % NR_GFNS);
            struct p2m_entry e;
            if (p2m_lookup(&w->p2m, _gfn(g), &e) ||
                p2m_remove(&w->p2m, _gfn(g), NULL))
                return -1;
            uint64_t t0 = now_ns();
            if (ioreq_end_hypercall(&w->io))
                return -1;
            total += now_ns() - t0;
            if (p2m_populate(&w->p2m, _gfn(g), e.mfn, P2M_RAM) ||
                ioreq_sync_map(&w->io))
                return -1;
        }
        s[r] = (double)total / iters;
    }
    return median(s, ROUNDS);
}

/* ---- mapcache against a bare mmap ---- */
static void mapcache_costs(double *bare, double *hit, double *miss)
{
    enum { FR = 4096, IT = 20000 };
    int fd = memfd_create("bench-mc", 0);
    struct mapcache mc;
    struct mapcache_ref ref;
    double s[ROUNDS];
    volatile uint8_t sink = 0;

    if (fd < 0 || ftruncate(fd, (off_t)FR * 4096))
        exit(1);
    for (int r = 0; r < ROUNDS; r++) {
        uint64_t t0 = now_ns();
        for (int i = 0; i < IT; i++) {
            uint8_t *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED,
                              fd, (off_t)(i % FR) * 4096);
            sink += p[0];
            munmap(p, 4096);
        }
        s[r] = (double)(now_ns() - t0) / IT;
    }
    *bare = median(s, ROUNDS);
    /* hits: a small working set that stays cached */
    if (mapcache_init(&mc, fd, FR, FR, 64, NULL, NULL) ||
        mapcache_set(&mc, 0, 0, FR))
        exit(1);
    for (int r = 0; r < ROUNDS; r++) {
        uint64_t t0 = now_ns();
        for (int i = 0; i < IT; i++) {
            if (mapcache_hold(&mc, (uint64_t)(i % 64), 0, 8, &ref))
                exit(1);
            sink += *(uint8_t *)ref.ptr;
            mapcache_release(&mc, &ref);
        }
        s[r] = (double)(now_ns() - t0) / IT;
    }
    *hit = median(s, ROUNDS);
    mapcache_fini(&mc);
    /* misses: a cache of one entry, every hold in another bucket */
    if (mapcache_init(&mc, fd, FR, FR, 1, NULL, NULL) ||
        mapcache_set(&mc, 0, 0, FR))
        exit(1);
    for (int r = 0; r < ROUNDS; r++) {
        uint64_t t0 = now_ns();
        for (int i = 0; i < IT / 10; i++) {
            uint64_t g = (uint64_t)(i % (FR / MAPCACHE_BUCKET_PAGES)) *
                         MAPCACHE_BUCKET_PAGES;
            if (mapcache_hold(&mc, g, 0, 8, &ref))
                exit(1);
            sink += *(uint8_t *)ref.ptr;
            mapcache_release(&mc, &ref);
        }
        s[r] = (double)(now_ns() - t0) / (IT / 10);
    }
    *miss = median(s, ROUNDS);
    mapcache_fini(&mc);
    close(fd);
    (void)sink;
}

int main(void)
{
    struct world w;
    double sock, rtt, bare, hit, miss;

    signal(SIGPIPE, SIG_IGN);
    if (find_dm()) {
        fprintf(stderr, "bench-ioreq: memvisor-dm-test not found (set "
                        "MEMVISOR_DM_DIR)\n");
        return 1;
    }
    sock = bare_socket_rtt_ns(20000);
    if (world_init(&w, 1)) {
        fprintf(stderr, "bench-ioreq: cannot start a device model\n");
        return 1;
    }
    rtt = ioreq_rtt_ns(&w, 20000);
    world_fini(&w);
    printf("I/O request round trip: %.1f us; bare seqpacket round trip %.1f "
           "us; ratio %.2fx\n",
           rtt / 1000, sock / 1000, rtt / sock);
    mapcache_costs(&bare, &hit, &miss);
    printf("mapcache hit (hold+release): %.0f ns, %.3fx a bare mmap+munmap of "
           "one page (%.0f ns)\n",
           hit, hit / bare, bare);
    printf("mapcache miss (evict, map a 16-page bucket): %.0f ns, %.2fx a bare "
           "mmap+munmap\n",
           miss, miss / bare);
    const unsigned counts[] = {1, 4, 16};
    for (unsigned k = 0; k < 3; k++) {
        if (world_init(&w, counts[k])) {
            fprintf(stderr, "bench-ioreq: cannot start %u device models\n",
                    counts[k]);
            return 1;
        }
        double inv = inval_ns(&w, 300);
        world_fini(&w);
        printf("invalidation with %2u servers: %.1f us (%.2fx an I/O request "
               "round trip, %.2fx a bare socket round trip)\n",
               counts[k], inv / 1000, inv / rtt, inv / sock);
    }
    return 0;
}
