/*
 * memvisor-dm-test - the test device: copies, fills and checksums guest
 * memory on request, runs one deferred DMA (for the stale-mapping test),
 * and offers a watched page through page tracking, keeping a shadow of the
 * guest's stores to it.
 *
 * Registers (32-bit port I/O at --port BASE, default 0x5000; see
 * docs/dm-protocol.md, "The test device"):
 *   0x00 SRC     gfn           0x04 DST    gfn
 *   0x08 LEN     bytes         0x0c VAL    fill byte / DMA word
 *   0x10 CMD     (write) 1 copy, 2 fill, 3 checksum, 4 deferred DMA,
 *                5 watch SRC, 6 unwatch SRC
 *   0x14 STATUS  0 or the errno of the last command
 *   0x18 RESULT  checksum (FNV-1a 32) of the last checksum command
 *   0x1c DELAY   ms before the deferred DMA runs
 *   0x20 DMA_STATE 0 idle, 1 pending, 2 done, 3 failed
 *   0x24 DMA_READ  the word the deferred DMA read before writing
 *   0x28 W_COUNT  stores to the watched page heard
 *   0x2c W_HASH   FNV-1a 32 over (gpa, len, bytes) of each, in order
 *   0x30 W_GONE   removal notices heard
 *   0x34 W_SUM    FNV-1a 32 of the shadow page
 *   0x38 W_STATUS the last TRACK_REPLY's status (0 ok, errno; ~0 while
 *                 a watch waits for it)
 *
 * Usage: memvisor-dm-test (--socket PATH | --fd N) [--port BASE]
 *          [--never-ack] [--inval-delay MS] [--crash-on-io]
 *          [--garbage-on-io] [--oversize-on-io] [--flood N] [--mmio GPA]
 * --mmio GPA also claims the page at GPA (MMIO; the same registers at the
 * same offsets), which a PV guest may then map (docs/abi.md).
 * --flood N sends N DIRTY reports right after attaching (a device model
 * flooding memvisor: its messages are rate-limited).
 *
 * QUIESCE: a deferred DMA still waiting runs at once (its page reported
 * dirty after the write, as always), and until the resume no copy or fill
 * runs (STATUS EBUSY) and a deferred DMA started meanwhile waits.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "dmlib.h"
#include "ioreq/wire.h"

#define PG 4096u

enum { HOSTILE_NONE, HOSTILE_CRASH, HOSTILE_GARBAGE, HOSTILE_OVERSIZE };

struct testdev {
    pthread_mutex_t lock;
    uint32_t regs[16];
    int hostile;
    /* deferred DMA */
    pthread_t worker;
    bool worker_started;
    struct mapcache_ref dma_ref;
    uint32_t dma_len, dma_val, dma_delay;
    uint64_t dma_gfn;
    pthread_cond_t cv; /* CLOCK_MONOTONIC */
    bool dma_now;      /* QUIESCE: the waiting DMA runs now */
    bool quiesced;     /* no DMA into guest memory until resumed */
    /* watched page */
    uint64_t watch_gfn;
    bool watching;
    uint8_t shadow[PG];
};

static uint32_t fnv(uint32_t h, const void *p, size_t n)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 16777619u;
    return h;
}
#define FNV0 2166136261u

static void *dma_worker(void *arg)
{
    struct dm_conn *c = arg;
    struct testdev *t = c->opaque;
    struct timespec dl;
    uint32_t word;

    clock_gettime(CLOCK_MONOTONIC, &dl);
    dl.tv_sec += t->dma_delay / 1000;
    dl.tv_nsec += (long)(t->dma_delay % 1000) * 1000000L;
    if (dl.tv_nsec >= 1000000000L) {
        dl.tv_sec++;
        dl.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&t->lock);
    while (!t->dma_now &&
           pthread_cond_timedwait(&t->cv, &t->lock, &dl) != ETIMEDOUT)
        ;
    while (t->quiesced) /* started while quiesced: wait for the resume */
        pthread_cond_wait(&t->cv, &t->lock);
    pthread_mutex_unlock(&t->lock);
    /* the mapping was taken when the request was accepted, as a device
     * resolves a descriptor's address: it is used now, however late */
    memcpy(&word, t->dma_ref.ptr, 4);
    for (uint32_t i = 0; i + 4 <= t->dma_len; i += 4)
        memcpy((uint8_t *)t->dma_ref.ptr + i, &t->dma_val, 4);
    /* and reported again now that it is written: a harvest between the
     * request and the write took the first report */
    (void)dm_report_dirty(c, t->dma_gfn, 1);
    /* done before the mapping goes: its release may send the INVAL_ACK
     * that lets the guest go on and look */
    pthread_mutex_lock(&t->lock);
    t->regs[0x24 / 4] = word;
    t->regs[0x20 / 4] = 2;
    pthread_mutex_unlock(&t->lock);
    mapcache_release(&c->mc, &t->dma_ref);
    return NULL;
}

static int run_cmd(struct dm_conn *c, struct testdev *t, uint32_t cmd)
{
    uint64_t src = t->regs[0], dst = t->regs[1];
    uint32_t len = t->regs[2], val = t->regs[3];
    static uint8_t buf[1u << 20];
    int r;

    if (len > sizeof(buf))
        return -EINVAL;
    if (t->quiesced && (cmd == 1 || cmd == 2))
        return -EBUSY; /* no DMA into guest memory while quiesced */
    switch (cmd) {
    case 1:
        if ((r = dm_copy_from(c, buf, src * PG, len)) < 0)
            return r;
        return dm_copy_to(c, dst * PG, buf, len);
    case 2:
        memset(buf, (int)(val & 0xff), len);
        return dm_copy_to(c, dst * PG, buf, len);
    case 3:
        if ((r = dm_copy_from(c, buf, src * PG, len)) < 0)
            return r;
        t->regs[0x18 / 4] = fnv(FNV0, buf, len);
        return 0;
    case 4:
        if (t->worker_started) {
            pthread_join(t->worker, NULL);
            t->worker_started = false;
        }
        if (len > PG || len < 4)
            return -EINVAL;
        if ((r = mapcache_hold(&c->mc, dst, 0, len, &t->dma_ref)) < 0)
            return r;
        t->dma_len = len;
        t->dma_val = val;
        t->dma_gfn = dst;
        t->dma_now = false;
        t->dma_delay = t->regs[0x1c / 4];
        t->regs[0x20 / 4] = 1;
        /* reported before the write: the page is written whatever happens */
        if ((r = dm_report_dirty(c, dst, 1)) < 0 ||
            (r = -pthread_create(&t->worker, NULL, dma_worker, c)) < 0) {
            mapcache_release(&c->mc, &t->dma_ref);
            t->regs[0x20 / 4] = 3;
            return r;
        }
        t->worker_started = true;
        return 0;
    case 5:
        if ((r = dm_copy_from(c, t->shadow, src * PG, PG)) < 0)
            return r;
        t->watch_gfn = src;
        t->watching = true;
        t->regs[0x38 / 4] = ~0u; /* until the TRACK_REPLY comes */
        return dm_track(c, src, true);
    case 6:
        return dm_track(c, src, false);
    }
    return -EINVAL;
}

static int dev_io(struct dm_conn *c, const struct dm_ioreq *rq, uint64_t *data)
{
    struct testdev *t = c->opaque;
    uint64_t off = rq->addr & 0x3f;
    int r = 0;

    if (t->hostile == HOSTILE_CRASH)
        _exit(3); /* dies with the request unanswered */
    if (t->hostile == HOSTILE_GARBAGE) {
        uint8_t junk[64];
        memset(junk, 0xa5, sizeof(junk));
        (void)dm_send_raw(c, junk, sizeof(junk));
    }
    if (t->hostile == HOSTILE_OVERSIZE) {
        /* a datagram longer than any message; dm_msg_send refuses to
         * build one, so write it directly */
        static uint8_t big[8192];
        struct dm_hdr *h = (void *)big;
        dm_hdr_init(h, DM_IORESP, sizeof(big));
        (void)!write(c->sock, big, sizeof(big));
    }
    if (rq->size != 4 || (off & 3))
        return -EINVAL;
    pthread_mutex_lock(&t->lock);
    if (rq->dir == DM_DIR_WRITE) {
        if (off == 0x10) {
            r = run_cmd(c, t, (uint32_t)rq->data);
            t->regs[0x14 / 4] = (uint32_t)-r;
        } else if (off < 0x10 || off == 0x1c) {
            t->regs[off / 4] = (uint32_t)rq->data;
        } else {
            r = -EINVAL;
        }
    } else {
        if (off == 0x34)
            t->regs[off / 4] = fnv(FNV0, t->shadow, PG);
        *data = t->regs[off / 4];
    }
    pthread_mutex_unlock(&t->lock);
    return r < 0 && off != 0x10 ? r : 0;
}

static void dev_track_reply(struct dm_conn *c, uint64_t gfn, bool on, int st)
{
    struct testdev *t = c->opaque;
    (void)gfn;
    pthread_mutex_lock(&t->lock);
    t->regs[0x38 / 4] = (uint32_t)-st;
    if (!on || st < 0)
        t->watching = false;
    pthread_mutex_unlock(&t->lock);
}

static void dev_track_write(struct dm_conn *c, uint64_t gpa,
                            const uint8_t *bytes, uint32_t len)
{
    struct testdev *t = c->opaque;
    uint32_t h;

    pthread_mutex_lock(&t->lock);
    h = t->regs[0x28 / 4] ? t->regs[0x2c / 4] : FNV0;
    h = fnv(h, &gpa, sizeof(gpa));
    h = fnv(h, &len, sizeof(len));
    h = fnv(h, bytes, len);
    t->regs[0x2c / 4] = h;
    t->regs[0x28 / 4]++;
    if (t->watching && gpa / PG == t->watch_gfn)
        memcpy(t->shadow + gpa % PG, bytes, len);
    pthread_mutex_unlock(&t->lock);
}

static void dev_track_gone(struct dm_conn *c, uint64_t gfn, uint64_t nr)
{
    struct testdev *t = c->opaque;

    pthread_mutex_lock(&t->lock);
    t->regs[0x30 / 4]++;
    if (t->watching && t->watch_gfn >= gfn && t->watch_gfn - gfn < nr)
        t->watching = false;
    pthread_mutex_unlock(&t->lock);
}

static int dev_save(struct dm_conn *c, void *buf, uint32_t *len)
{
    struct testdev *t = c->opaque;
    pthread_mutex_lock(&t->lock);
    memcpy(buf, t->regs, sizeof(t->regs));
    pthread_mutex_unlock(&t->lock);
    *len = sizeof(t->regs);
    return 0;
}

static int dev_restore(struct dm_conn *c, const void *buf, uint32_t len)
{
    struct testdev *t = c->opaque;
    if (len != sizeof(t->regs))
        return -EINVAL;
    pthread_mutex_lock(&t->lock);
    memcpy(t->regs, buf, sizeof(t->regs));
    pthread_mutex_unlock(&t->lock);
    return 0;
}

/* QUIESCE: the DMA in flight ends now (written, reported dirty), before
 * the answer; then nothing writes guest memory until the resume. */
static int dev_quiesce(struct dm_conn *c, bool on)
{
    struct testdev *t = c->opaque;
    bool join;

    pthread_mutex_lock(&t->lock);
    if (!on || t->quiesced) {
        /* a second QUIESCE finds nothing running (a DMA started since
         * waits for the resume) */
        t->quiesced = on;
        pthread_cond_broadcast(&t->cv);
        pthread_mutex_unlock(&t->lock);
        return 0;
    }
    t->dma_now = true;
    pthread_cond_broadcast(&t->cv);
    join = t->worker_started;
    t->worker_started = false;
    pthread_mutex_unlock(&t->lock);
    if (join)
        pthread_join(t->worker, NULL);
    pthread_mutex_lock(&t->lock);
    t->dma_now = false;
    t->quiesced = true;
    pthread_mutex_unlock(&t->lock);
    return 0;
}

static const struct dm_dev_ops ops = {
    .io = dev_io,
    .track_reply = dev_track_reply,
    .track_write = dev_track_write,
    .track_gone = dev_track_gone,
    .save = dev_save,
    .restore = dev_restore,
    .quiesce = dev_quiesce,
};

int main(int argc, char **argv)
{
    static struct testdev t;
    struct dm_conn c;
    struct dm_range ranges[2] = {
        {.kind = DM_RANGE_PIO, .base = 0x5000, .len = 64},
        {.kind = DM_RANGE_MMIO, .len = 4096},
    };
    uint32_t nr_ranges = 1;
    const char *path = NULL;
    int fd = -1, r, never_ack = 0, delay = 0, flood = 0;
    char why[DM_REASON_MAX];

    pthread_mutex_init(&t.lock, NULL);
    {
        pthread_condattr_t ca;

        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        pthread_cond_init(&t.cv, &ca);
        pthread_condattr_destroy(&ca);
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--socket") && v)
            path = argv[++i];
        else if (!strcmp(a, "--fd") && v)
            fd = atoi(argv[++i]);
        else if (!strcmp(a, "--port") && v)
            ranges[0].base = strtoull(argv[++i], NULL, 0);
        else if (!strcmp(a, "--mmio") && v) {
            ranges[1].base = strtoull(argv[++i], NULL, 0);
            nr_ranges = 2;
        }
        else if (!strcmp(a, "--never-ack"))
            never_ack = 1;
        else if (!strcmp(a, "--inval-delay") && v)
            delay = atoi(argv[++i]);
        else if (!strcmp(a, "--crash-on-io"))
            t.hostile = HOSTILE_CRASH;
        else if (!strcmp(a, "--garbage-on-io"))
            t.hostile = HOSTILE_GARBAGE;
        else if (!strcmp(a, "--oversize-on-io"))
            t.hostile = HOSTILE_OVERSIZE;
        else if (!strcmp(a, "--flood") && v)
            flood = atoi(argv[++i]);
        else {
            fprintf(stderr, "memvisor-dm-test: unknown argument %s\n", a);
            return 2;
        }
    }
    if (path) {
        fd = dm_connect(path);
        if (fd < 0) {
            fprintf(stderr, "memvisor-dm-test: %s: %s\n", path, strerror(-fd));
            return 1;
        }
    }
    if (fd < 0) {
        fprintf(stderr, "usage: memvisor-dm-test (--socket PATH | --fd N)\n");
        return 2;
    }
    r = dm_attach(&c, fd, "test", ranges, nr_ranges, 64, &ops, &t, why,
                  sizeof(why));
    if (r < 0) {
        fprintf(stderr, "memvisor-dm-test: attach: %s%s%s\n", strerror(-r),
                why[0] ? ": " : "", why);
        return 1;
    }
    c.test_never_ack = never_ack;
    c.test_inval_delay_ms = delay;
    for (int i = 0; i < flood; i++)
        if (dm_report_dirty(&c, (uint64_t)i % c.nr_gfns, 1) < 0)
            break;
    r = dm_serve(&c);
    if (t.worker_started)
        pthread_join(t.worker, NULL);
    dm_detach(&c);
    if (r < 0) {
        fprintf(stderr, "memvisor-dm-test: %s\n", strerror(-r));
        return 1;
    }
    return 0;
}
