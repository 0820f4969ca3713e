/*
 * dmlib.c - the device-model library (dmlib.h).
 */
#include "dmlib.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "ioreq/wire.h"

#define PG 4096ULL

int dm_connect(const char *path)
{
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    int fd;

    if (strlen(path) >= sizeof(a.sun_path))
        return -ENAMETOOLONG;
    strcpy(a.sun_path, path);
    fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
        int r = -errno;
        close(fd);
        return r;
    }
    return fd;
}

static int send_msg(struct dm_conn *c, const void *msg, size_t len)
{
    int r;

    pthread_mutex_lock(&c->send_lock);
    r = dm_msg_send(c->sock, msg, len, -1, -1);
    pthread_mutex_unlock(&c->send_lock);
    return r;
}

int dm_send_raw(struct dm_conn *c, const void *msg, size_t len)
{
    return send_msg(c, msg, len);
}

static void send_ack(struct dm_conn *c, uint64_t gen)
{
    struct dm_inval m;

    if (c->test_never_ack)
        return;
    memset(&m, 0, sizeof(m));
    dm_hdr_init(&m.h, DM_INVAL_ACK, sizeof(m));
    m.gen = gen;
    (void)send_msg(c, &m, sizeof(m));
}

static void on_quiet(void *opaque, uint64_t gen)
{
    send_ack(opaque, gen);
}

static int apply_map(struct dm_conn *c, const struct dm_map *m)
{
    for (uint32_t i = 0; i < m->nr_runs; i++) {
        const struct dm_map_run *r = &m->runs[i];
        int e = mapcache_set(&c->mc, r->gfn,
                             r->mfn == DM_MFN_NONE ? MAPCACHE_NONE : r->mfn,
                             r->nr);
        if (e < 0)
            return e;
    }
    return 0;
}

int dm_attach(struct dm_conn *c, int sock, const char *name,
              const struct dm_range *ranges, uint32_t nr_ranges,
              uint32_t mapcache_entries, const struct dm_dev_ops *ops,
              void *opaque, char *why, size_t why_len)
{
    union {
        struct dm_hello h;
        uint8_t raw[DM_MSG_MAX];
    } *u = calloc(1, sizeof(*u));
    const struct dm_welcome *w = (const void *)u->raw;
    const struct dm_refused *rf = (const void *)u->raw;
    size_t len = sizeof(struct dm_hello) + nr_ranges * sizeof(struct dm_range);
    int memfd = -1, r;
    long n;

    memset(c, 0, sizeof(*c));
    c->sock = sock;
    c->memfd = -1;
    c->ops = ops;
    c->opaque = opaque;
    pthread_mutex_init(&c->send_lock, NULL);
    if (why && why_len)
        why[0] = 0;
    if (!u)
        return -ENOMEM;
    if (nr_ranges > DM_MAX_RANGES || strlen(name) >= DM_NAME_MAX) {
        free(u);
        return -EINVAL;
    }
    dm_hdr_init(&u->h.h, DM_HELLO, (uint32_t)len);
    u->h.major = DM_PROTO_MAJOR;
    u->h.minor = DM_PROTO_MINOR;
    u->h.nr_ranges = nr_ranges;
    strcpy(u->h.name, name);
    memcpy(u->h.ranges, ranges, nr_ranges * sizeof(*ranges));
    if ((r = send_msg(c, u, len)) < 0)
        goto out;
    n = dm_msg_recv(sock, u->raw, &memfd, 10000);
    if (n < 0) {
        r = (int)n;
        goto out;
    }
    if ((r = dm_msg_check(u->raw, (size_t)n, DM_FROM_HV)) < 0)
        goto out;
    if (u->h.h.type == DM_REFUSED) {
        if (why && why_len)
            snprintf(why, why_len, "%s", rf->reason);
        r = -ECONNREFUSED;
        goto out;
    }
    if (u->h.h.type != DM_WELCOME || memfd < 0 || w->nr_gfns == 0) {
        r = -EPROTO;
        goto out;
    }
    c->domid = w->domid;
    c->server = w->server;
    c->nr_vcpus = w->nr_vcpus;
    c->pool_bytes = w->pool_bytes;
    c->nr_gfns = w->nr_gfns;
    c->memfd = memfd;
    memfd = -1;
    r = mapcache_init(&c->mc, c->memfd, c->pool_bytes / PG, c->nr_gfns,
                      mapcache_entries, on_quiet, c);
out:
    if (memfd >= 0)
        close(memfd);
    free(u);
    return r;
}

void dm_detach(struct dm_conn *c)
{
    mapcache_fini(&c->mc);
    if (c->memfd >= 0)
        close(c->memfd);
    if (c->sock >= 0)
        close(c->sock);
    c->memfd = c->sock = -1;
    pthread_mutex_destroy(&c->send_lock);
}

int dm_report_dirty(struct dm_conn *c, uint64_t gfn, uint64_t nr)
{
    /* One run: a union, since a struct ending in a flexible array may not
     * be nested in another struct in ISO C. */
    union {
        struct dm_dirty d;
        uint8_t raw[sizeof(struct dm_dirty) + sizeof(struct dm_dirty_run)];
    } m;

    memset(&m, 0, sizeof(m));
    dm_hdr_init(&m.d.h, DM_DIRTY, sizeof(m.raw));
    m.d.nr_runs = 1;
    m.d.runs[0].gfn = gfn;
    m.d.runs[0].nr = nr;
    /* a device's own threads report too (a DMA that ends on its own) */
    __atomic_fetch_add(&c->nr_dirty_msgs, 1, __ATOMIC_RELAXED);
    return send_msg(c, &m, sizeof(m.raw));
}

int dm_copy_from(struct dm_conn *c, void *dst, uint64_t gpa, uint64_t len)
{
    uint8_t *d = dst;

    while (len) {
        uint32_t off = (uint32_t)(gpa & (PG - 1));
        uint32_t k = (uint32_t)(len < PG - off ? len : PG - off);
        struct mapcache_ref ref;
        int r = mapcache_hold(&c->mc, gpa / PG, off, k, &ref);
        if (r < 0)
            return r;
        memcpy(d, ref.ptr, k);
        mapcache_release(&c->mc, &ref);
        d += k;
        gpa += k;
        len -= k;
    }
    return 0;
}

int dm_copy_to(struct dm_conn *c, uint64_t gpa, const void *src, uint64_t len)
{
    const uint8_t *s = src;
    uint64_t first = gpa / PG, pages = 0;
    int r = 0;

    while (len) {
        uint32_t off = (uint32_t)(gpa & (PG - 1));
        uint32_t k = (uint32_t)(len < PG - off ? len : PG - off);
        struct mapcache_ref ref;
        if ((r = mapcache_hold(&c->mc, gpa / PG, off, k, &ref)) < 0)
            break;
        memcpy(ref.ptr, s, k);
        mapcache_release(&c->mc, &ref);
        pages++;
        s += k;
        gpa += k;
        len -= k;
    }
    if (pages) { /* D2, also for the part written before an error */
        int e = dm_report_dirty(c, first, pages);
        if (!r)
            r = e;
    }
    return r;
}

int dm_track(struct dm_conn *c, uint64_t gfn, bool on)
{
    struct dm_track m;

    memset(&m, 0, sizeof(m));
    dm_hdr_init(&m.h, DM_TRACK, sizeof(m));
    m.gfn = gfn;
    m.on = on;
    return send_msg(c, &m, sizeof(m));
}

static int on_ioreq(struct dm_conn *c, const struct dm_ioreq *rq)
{
    struct dm_ioresp rs;
    uint64_t data = rq->dir == DM_DIR_WRITE ? rq->data : 0;
    int st = c->ops && c->ops->io ? c->ops->io(c, rq, &data) : -ENODEV;

    c->nr_ioreqs++;
    memset(&rs, 0, sizeof(rs));
    dm_hdr_init(&rs.h, DM_IORESP, sizeof(rs));
    rs.id = rq->id;
    rs.data = data;
    rs.status = st > 0 ? 0 : (st < -4095 ? -EIO : st);
    return send_msg(c, &rs, sizeof(rs));
}

static int on_state(struct dm_conn *c, const struct dm_state *m, uint16_t type)
{
    if (type == DM_SAVE) {
        union {
            struct dm_state s;
            uint8_t raw[DM_MSG_MAX];
        } *u = calloc(1, sizeof(*u));
        uint32_t len = 0;
        int r;
        if (!u)
            return -ENOMEM;
        r = c->ops && c->ops->save ? c->ops->save(c, u->s.bytes, &len) : 0;
        if (r < 0 || len > DM_STATE_MAX)
            len = 0; /* an empty state: the device has none to give */
        dm_hdr_init(&u->s.h, DM_STATE, (uint32_t)(sizeof(u->s) + len));
        u->s.id = m->id;
        u->s.len = len;
        r = send_msg(c, u, sizeof(u->s) + len);
        free(u);
        return r;
    }
    struct dm_restored rs;
    memset(&rs, 0, sizeof(rs));
    dm_hdr_init(&rs.h, DM_RESTORED, sizeof(rs));
    rs.id = m->id;
    rs.status = c->ops && c->ops->restore
                    ? c->ops->restore(c, m->bytes, m->len)
                    : (m->len ? -EINVAL : 0);
    if (rs.status > 0 || rs.status < -4095)
        rs.status = -EIO;
    return send_msg(c, &rs, sizeof(rs));
}

/* QUIESCE: the device's answer, after whatever DIRTY it sent. */
static int on_quiesce(struct dm_conn *c, const struct dm_quiesce *m)
{
    struct dm_restored rs;

    memset(&rs, 0, sizeof(rs));
    dm_hdr_init(&rs.h, DM_QUIESCED, sizeof(rs));
    rs.id = m->id;
    rs.status = c->ops && c->ops->quiesce ? c->ops->quiesce(c, m->on) : 0;
    if (rs.status > 0 || rs.status < -4095)
        rs.status = -EIO;
    return send_msg(c, &rs, sizeof(rs));
}

int dm_serve(struct dm_conn *c)
{
    uint8_t *buf = malloc(DM_MSG_MAX);
    int r = 0;

    if (!buf)
        return -ENOMEM;
    for (;;) {
        long n = dm_msg_recv(c->sock, buf, NULL, -1);
        const struct dm_hdr *h = (const void *)buf;
        if (n == -ECONNRESET) {
            r = 0;
            break;
        }
        if (n < 0) {
            r = (int)n;
            break;
        }
        if ((r = dm_msg_check(buf, (size_t)n, DM_FROM_HV)) < 0)
            break;
        switch (h->type) {
        case DM_MAP:
            r = apply_map(c, (const void *)buf);
            break;
        case DM_IOREQ:
            r = on_ioreq(c, (const void *)buf);
            break;
        case DM_INVALIDATE: {
            const struct dm_inval *m = (const void *)buf;
            c->nr_invals++;
            if (c->test_inval_delay_ms) {
                struct timespec ts = {c->test_inval_delay_ms / 1000,
                                      (c->test_inval_delay_ms % 1000) *
                                          1000000L};
                nanosleep(&ts, NULL);
            }
            if (c->ops && c->ops->invalidate)
                c->ops->invalidate(c);
            if (mapcache_invalidate(&c->mc, m->gen)) /* D1 */
                send_ack(c, m->gen);
            break;
        }
        case DM_TRACK_REPLY: {
            const struct dm_track_reply *m = (const void *)buf;
            if (c->ops && c->ops->track_reply)
                c->ops->track_reply(c, m->gfn, m->on, m->status);
            break;
        }
        case DM_TRACK_WRITE: {
            const struct dm_track_write *m = (const void *)buf;
            if (c->ops && c->ops->track_write)
                c->ops->track_write(c, m->gpa, m->bytes, m->len);
            break;
        }
        case DM_TRACK_GONE: {
            const struct dm_track_gone *m = (const void *)buf;
            if (c->ops && c->ops->track_gone)
                c->ops->track_gone(c, m->gfn, m->nr);
            break;
        }
        case DM_SAVE:
        case DM_RESTORE:
            r = on_state(c, (const void *)buf, h->type);
            break;
        case DM_QUIESCE:
            r = on_quiesce(c, (const void *)buf);
            break;
        case DM_BYE:
            free(buf);
            return 0;
        default:
            r = -EPROTO; /* WELCOME/REFUSED again */
            break;
        }
        if (r < 0)
            break;
    }
    free(buf);
    return r;
}
