/*
 * ioreq.c - device-model servers of a domain (ioreq.h).
 */
#include "ioreq/ioreq.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "lib/range.h"

#define LOOKUP_CHUNK 512

static uint64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static struct timespec deadline_in(int ms)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return ts;
}

/* ---- cutting a server off ----------------------------------------------- */

static void cut_locked(struct ioreq_server *s, const char *fmt, ...)
    __printf(2, 3);

static void cut_locked(struct ioreq_server *s, const char *fmt, ...)
{
    va_list ap;

    if (s->state == IOREQ_CUT)
        return;
    s->state = IOREQ_CUT;
    va_start(ap, fmt);
    vsnprintf(s->cut_reason, sizeof(s->cut_reason), fmt, ap);
    va_end(ap);
    if (s->child > 0 && !s->io->stopping) {
        /* I6: dead, not reaped (its parent reaps it), before we go on;
         * killed before its socket closes, so it cannot exit on its own
         * with a mapping in use */
        siginfo_t si;
        kill(s->child, SIGKILL);
        while (waitid(P_PID, (id_t)s->child, &si, WEXITED | WNOWAIT) < 0 &&
               errno == EINTR)
            ;
    }
    /* wakes the reader (its recv returns) and fails later sends */
    shutdown(s->fd, SHUT_RDWR);
    for (unsigned i = 0; i < IOREQ_MAX_VCPUS; i++)
        if (s->pend[i].id && !s->pend[i].done) {
            s->pend[i].done = true;
            s->pend[i].status = -EIO;
        }
    if (s->save.id && !s->save.done) {
        s->save.done = true;
        s->save.status = -EIO;
    }
    pthread_cond_broadcast(&s->io->cond);
}

int ioreq_set_child(struct ioreq_domain *io, unsigned server, pid_t pid)
{
    int r = 0;

    pthread_mutex_lock(&io->lock);
    if (server >= io->nr_servers || pid <= 0)
        r = -EINVAL;
    else
        io->servers[server]->child = pid;
    pthread_mutex_unlock(&io->lock);
    return r;
}

void ioreq_cut(struct ioreq_domain *io, unsigned server, const char *reason)
{
    pthread_mutex_lock(&io->lock);
    if (server < io->nr_servers)
        cut_locked(io->servers[server], "%s", reason);
    pthread_mutex_unlock(&io->lock);
}

/* One message to a server; a failure to send cuts it. */
static int send_locked(struct ioreq_server *s, const void *msg, size_t len,
                       int fd)
{
    int r;

    if (s->state != IOREQ_LIVE)
        return -EIO;
    pthread_mutex_lock(&s->send_lock);
    r = dm_msg_send(s->fd, msg, len, fd, s->io->cfg.timeout_ms);
    pthread_mutex_unlock(&s->send_lock);
    if (r == -ECONNRESET || r == -EPIPE)
        cut_locked(s, "the device model closed its socket (sending %s)",
                   dm_type_name(((const struct dm_hdr *)msg)->type));
    else if (r < 0)
        cut_locked(s, "sending %s failed: %s",
                   dm_type_name(((const struct dm_hdr *)msg)->type),
                   strerror(-r));
    return r;
}

/* ---- the announced map (I2) --------------------------------------------- */

struct runs {
    union {
        struct dm_map m;
        uint8_t raw[DM_MSG_MAX];
    } u;
};

static void runs_flush(struct runs *b, struct ioreq_server **to, unsigned n)
{
    uint32_t len;

    if (!b->u.m.nr_runs)
        return;
    len = (uint32_t)(sizeof(struct dm_map) +
                     b->u.m.nr_runs * sizeof(struct dm_map_run));
    dm_hdr_init(&b->u.m.h, DM_MAP, len);
    for (unsigned i = 0; i < n; i++)
        (void)send_locked(to[i], &b->u.m, len, -1);
    b->u.m.nr_runs = 0;
    b->u.m.reserved = 0;
}

static void runs_add(struct runs *b, uint64_t gfn, uint64_t mfn,
                     struct ioreq_server **to, unsigned n)
{
    struct dm_map_run *last =
        b->u.m.nr_runs ? &b->u.m.runs[b->u.m.nr_runs - 1] : NULL;

    if (last && last->gfn + last->nr == gfn &&
        ((mfn == DM_MFN_NONE && last->mfn == DM_MFN_NONE) ||
         (mfn != DM_MFN_NONE && last->mfn != DM_MFN_NONE &&
          last->mfn + last->nr == mfn))) {
        last->nr++;
        return;
    }
    if (b->u.m.nr_runs == DM_MAP_MAX_RUNS)
        runs_flush(b, to, n);
    b->u.m.runs[b->u.m.nr_runs++] = (struct dm_map_run){gfn, mfn, 1};
}

static unsigned live_servers(struct ioreq_domain *io,
                             struct ioreq_server **out)
{
    unsigned n = 0;

    for (unsigned i = 0; i < io->nr_servers; i++)
        if (io->servers[i]->state == IOREQ_LIVE)
            out[n++] = io->servers[i];
    return n;
}

/* Compare the p2m with what the servers were told; tell them the
 * difference. */
static int sync_locked(struct ioreq_domain *io)
{
    struct ioreq_server *to[IOREQ_MAX_SERVERS];
    unsigned n = live_servers(io, to);
    struct p2m_entry e[LOOKUP_CHUNK];
    struct runs *b = malloc(sizeof(*b));
    int r = 0;

    if (!b)
        return -ENOMEM;
    b->u.m.nr_runs = 0;
    b->u.m.reserved = 0;
    for (uint64_t g = 0; g < io->p2m->nr_gfns; g += LOOKUP_CHUNK) {
        uint64_t k = MIN((uint64_t)LOOKUP_CHUNK, io->p2m->nr_gfns - g);
        if ((r = p2m_lookup_range(io->p2m, _gfn(g), k, e)) < 0)
            break;
        for (uint64_t i = 0; i < k; i++) {
            uint64_t cur = p2m_is_ram(e[i].type) ? mfn_x(e[i].mfn)
                                                 : DM_MFN_NONE;
            if (cur == io->announced[g + i])
                continue;
            io->announced[g + i] = cur;
            runs_add(b, g + i, cur, to, n);
        }
    }
    runs_flush(b, to, n);
    free(b);
    return r;
}

/* The whole announced map, to one new server. */
static void announce_all_locked(struct ioreq_domain *io, struct ioreq_server *s)
{
    struct runs *b = malloc(sizeof(*b));

    if (!b) {
        cut_locked(s, "out of memory announcing the map");
        return;
    }
    b->u.m.nr_runs = 0;
    b->u.m.reserved = 0;
    for (uint64_t g = 0; g < io->p2m->nr_gfns; g++)
        if (io->announced[g] != DM_MFN_NONE)
            runs_add(b, g, io->announced[g], &s, 1);
    runs_flush(b, &s, 1);
    free(b);
}

int ioreq_sync_map(struct ioreq_domain *io)
{
    int r;

    if (!atomic_load(&io->attached))
        return 0;
    pthread_mutex_lock(&io->lock);
    r = io->nr_servers ? sync_locked(io) : 0;
    pthread_mutex_unlock(&io->lock);
    return r;
}

/* ---- page tracking: memslot's callbacks (vCPU threads) ------------------ */

static int track_write(struct memslot_tracker *t, gpa_t gpa, const void *bytes,
                       uint32_t len)
{
    struct ioreq_server *s = container_of(t, struct ioreq_server, tracker);
    struct ioreq_domain *io = s->io;
    struct dm_track_write m;

    pthread_mutex_lock(&io->lock);
    for (uint32_t off = 0; off < len && s->state == IOREQ_LIVE;) {
        uint32_t k = MIN(len - off, DM_TRACK_MAX_BYTES);
        memset(&m, 0, sizeof(m));
        dm_hdr_init(&m.h, DM_TRACK_WRITE, sizeof(m));
        m.gpa = gpa_x(gpa) + off;
        m.len = k;
        memcpy(m.bytes, (const uint8_t *)bytes + off, k);
        if (send_locked(s, &m, sizeof(m), -1) == 0) {
            s->nr_track_writes++;
            io->stats.track_writes++;
        }
        off += k;
    }
    pthread_mutex_unlock(&io->lock);
    return 0; /* the store lands; a shadowing device only observes */
}

static void track_gone(struct memslot_tracker *t, gfn_t gfn, uint64_t nr)
{
    struct ioreq_server *s = container_of(t, struct ioreq_server, tracker);
    struct ioreq_domain *io = s->io;
    struct dm_track_gone m;
    unsigned j = 0;

    pthread_mutex_lock(&io->lock);
    for (unsigned i = 0; i < s->nr_tracks; i++)
        if (s->tracks[i] < gfn_x(gfn) || s->tracks[i] - gfn_x(gfn) >= nr)
            s->tracks[j++] = s->tracks[i];
    s->nr_tracks = j;
    memset(&m, 0, sizeof(m));
    dm_hdr_init(&m.h, DM_TRACK_GONE, sizeof(m));
    m.gfn = gfn_x(gfn);
    m.nr = nr;
    (void)send_locked(s, &m, sizeof(m), -1);
    pthread_mutex_unlock(&io->lock);
}

/* A TRACK request, on the server's reader thread (no lock held). */
static void on_track(struct ioreq_server *s, const struct dm_track *m)
{
    struct ioreq_domain *io = s->io;
    struct dm_track_reply rep;
    bool have = false;
    int r;

    pthread_mutex_lock(&io->lock);
    for (unsigned i = 0; i < s->nr_tracks; i++)
        have |= s->tracks[i] == m->gfn;
    r = (m->on && !have && s->nr_tracks == IOREQ_MAX_TRACKS) ? -ENOSPC : 0;
    pthread_mutex_unlock(&io->lock);
    if (r == 0 && !io->ms)
        r = -ENODEV; /* a domain without KVM slots (unit tests) */
    else if (r == 0 && m->gfn >= io->p2m->nr_gfns)
        r = -EFAULT;
    else if (r == 0 && m->on)
        r = have ? -EEXIST : memslot_track(io->ms, _gfn(m->gfn), &s->tracker);
    else if (r == 0)
        r = have ? memslot_untrack(io->ms, _gfn(m->gfn), &s->tracker) : -ENOENT;

    pthread_mutex_lock(&io->lock);
    if (r == 0 && m->on) {
        s->tracks[s->nr_tracks++] = m->gfn;
    } else if (r == 0) {
        unsigned j = 0;
        for (unsigned i = 0; i < s->nr_tracks; i++)
            if (s->tracks[i] != m->gfn)
                s->tracks[j++] = s->tracks[i];
        s->nr_tracks = j;
    }
    memset(&rep, 0, sizeof(rep));
    dm_hdr_init(&rep.h, DM_TRACK_REPLY, sizeof(rep));
    rep.gfn = m->gfn;
    rep.on = m->on;
    rep.status = r;
    (void)send_locked(s, &rep, sizeof(rep), -1);
    pthread_mutex_unlock(&io->lock);
}

/* ---- the reader thread of a server -------------------------------------- */

/* I5: take one token, sleeping until one is there. */
static void throttle(struct ioreq_server *s)
{
    uint64_t rate = s->io->cfg.rate_per_sec, burst = rate / 10 + 1;

    for (;;) {
        uint64_t now = now_ns(), add = (now - s->refill_ns) * rate / 1000000000ULL;
        if (add) {
            s->tokens = MIN(burst, s->tokens + add);
            s->refill_ns = now;
        }
        if (s->tokens) {
            s->tokens--;
            return;
        }
        pthread_mutex_lock(&s->io->lock);
        s->nr_throttled++;
        pthread_mutex_unlock(&s->io->lock);
        struct timespec ts = {0, (long)(1000000000ULL / rate) + 1};
        nanosleep(&ts, NULL);
    }
}

/* One checked message from the server; false: cut it. */
static bool dispatch(struct ioreq_server *s, const void *buf, uint16_t type)
{
    struct ioreq_domain *io = s->io;
    bool ok = true;

    switch (type) {
    case DM_IORESP: {
        const struct dm_ioresp *m = buf;
        pthread_mutex_lock(&io->lock);
        ok = false;
        for (unsigned i = 0; i < IOREQ_MAX_VCPUS; i++) {
            struct ioreq_pending *p = &s->pend[i];
            if (p->id == m->id && !p->done && m->id) {
                p->done = true;
                p->data = m->data;
                p->status = m->status;
                ok = true;
                pthread_cond_broadcast(&io->cond);
            }
        }
        if (!ok)
            cut_locked(s, "IORESP %llu answers no request",
                       (unsigned long long)m->id);
        pthread_mutex_unlock(&io->lock);
        return true;
    }
    case DM_INVAL_ACK: {
        const struct dm_inval *m = buf;
        pthread_mutex_lock(&io->lock);
        if (m->gen > io->inval_gen || m->gen == 0) {
            cut_locked(s, "INVAL_ACK of generation %llu never sent",
                       (unsigned long long)m->gen);
        } else if (m->gen > s->acked_gen) {
            s->acked_gen = m->gen;
            pthread_cond_broadcast(&io->cond);
        }
        pthread_mutex_unlock(&io->lock);
        return true;
    }
    case DM_TRACK:
        on_track(s, buf);
        return true;
    case DM_DIRTY: {
        const struct dm_dirty *m = buf;
        for (uint32_t i = 0; i < m->nr_runs; i++) {
            const struct dm_dirty_run *r = &m->runs[i];
            if (range_check(r->gfn, r->nr, io->p2m->nr_gfns))
                return false;
            if (io->dirty && !io->cfg.test_drop_dirty &&
                dirty_mark(io->dirty, _gfn(r->gfn), r->nr) < 0)
                return false;
            pthread_mutex_lock(&io->lock);
            s->nr_dirty_pages += r->nr;
            io->stats.dirty_pages += r->nr;
            pthread_mutex_unlock(&io->lock);
        }
        return true;
    }
    case DM_STATE:
    case DM_RESTORED:
    case DM_QUIESCED: {
        const struct dm_state *st = buf;
        const struct dm_restored *rs = buf;
        uint64_t id = type == DM_STATE ? st->id : rs->id;
        uint16_t asked = type == DM_STATE      ? DM_SAVE
                         : type == DM_RESTORED ? DM_RESTORE
                                               : DM_QUIESCE;
        pthread_mutex_lock(&io->lock);
        if (!s->save.id || s->save.done || s->save.id != id ||
            s->save_type != asked) {
            cut_locked(s, "%s %llu answers no request", dm_type_name(type),
                       (unsigned long long)id);
        } else {
            if (type == DM_STATE) {
                memcpy(s->save_buf, st->bytes, st->len);
                s->save_len = st->len;
                s->save.status = 0;
            } else {
                s->save.status = rs->status;
            }
            s->save.done = true;
            pthread_cond_broadcast(&io->cond);
        }
        pthread_mutex_unlock(&io->lock);
        return true;
    }
    case DM_BYE:
        pthread_mutex_lock(&io->lock);
        cut_locked(s, "the device model said BYE");
        pthread_mutex_unlock(&io->lock);
        return true;
    default:
        return false; /* HELLO again: not in this state */
    }
}

static void *reader_main(void *arg)
{
    struct ioreq_server *s = arg;
    struct ioreq_domain *io = s->io;
    uint8_t *buf = malloc(DM_MSG_MAX);
    uint64_t tracks[IOREQ_MAX_TRACKS];
    unsigned nr_tracks;

    for (;;) {
        long n;
        int r;

        if (!buf) {
            pthread_mutex_lock(&io->lock);
            cut_locked(s, "out of memory");
            pthread_mutex_unlock(&io->lock);
            break;
        }
        n = dm_msg_recv(s->fd, buf, NULL, -1);
        pthread_mutex_lock(&io->lock);
        if (s->state != IOREQ_LIVE) {
            pthread_mutex_unlock(&io->lock);
            break;
        }
        if (n < 0) {
            cut_locked(s, "%s",
                       n == -ECONNRESET ? "the device model closed its socket"
                       : n == -EMSGSIZE ? "message longer than DM_MSG_MAX"
                                        : "socket error");
            pthread_mutex_unlock(&io->lock);
            break;
        }
        s->nr_msgs++;
        pthread_mutex_unlock(&io->lock);
        r = dm_msg_check(buf, (size_t)n, DM_FROM_DM);
        if (r == 0) {
            uint16_t type = ((const struct dm_hdr *)(const void *)buf)->type;
            throttle(s);
            if (dispatch(s, buf, type))
                continue;
            r = -EPROTO;
        }
        pthread_mutex_lock(&io->lock);
        if (r == -EBADMSG)
            cut_locked(s, "malformed message (%ld bytes)", n);
        else
            cut_locked(s, "message %s not allowed now",
                       dm_type_name(((const struct dm_hdr *)(const void *)buf)->type));
        pthread_mutex_unlock(&io->lock);
        break;
    }
    free(buf);
    /* its subscriptions end with it (no memslot call under io.lock) */
    pthread_mutex_lock(&io->lock);
    nr_tracks = s->nr_tracks;
    memcpy(tracks, s->tracks, nr_tracks * sizeof(tracks[0]));
    s->nr_tracks = 0;
    pthread_mutex_unlock(&io->lock);
    for (unsigned i = 0; i < nr_tracks; i++)
        (void)!memslot_untrack(io->ms, _gfn(tracks[i]), &s->tracker);
    return NULL;
}

/* ---- attach ------------------------------------------------------------- */

static bool ranges_overlap(const struct dm_range *a, const struct dm_range *b)
{
    return a->kind == b->kind && a->base < b->base + b->len &&
           b->base < a->base + a->len;
}

static int claim_check_locked(struct ioreq_domain *io,
                              const struct dm_hello *h, char *why, size_t len)
{
    uint64_t ram_end = io->p2m->nr_gfns << PAGE_SHIFT;

    for (uint32_t i = 0; i < h->nr_ranges; i++) {
        const struct dm_range *r = &h->ranges[i];
        if (r->kind == DM_RANGE_MMIO && r->base < ram_end) {
            snprintf(why, len, "MMIO range %#llx overlaps guest RAM space",
                     (unsigned long long)r->base);
            return -EINVAL;
        }
        for (unsigned j = 0; j < io->cfg.nr_reserved; j++)
            if (ranges_overlap(r, &io->cfg.reserved[j])) {
                snprintf(why, len, "%s range %#llx+%#llx overlaps the "
                         "platform's own %#llx+%#llx",
                         r->kind == DM_RANGE_PIO ? "port" : "MMIO",
                         (unsigned long long)r->base,
                         (unsigned long long)r->len,
                         (unsigned long long)io->cfg.reserved[j].base,
                         (unsigned long long)io->cfg.reserved[j].len);
                return -EINVAL;
            }
        for (uint32_t j = 0; j < i; j++)
            if (ranges_overlap(r, &h->ranges[j])) {
                snprintf(why, len, "ranges %u and %u overlap", j, i);
                return -EINVAL;
            }
        for (unsigned k = 0; k < io->nr_servers; k++)
            for (unsigned j = 0; j < io->servers[k]->nr_ranges; j++)
                if (ranges_overlap(r, &io->servers[k]->ranges[j])) {
                    snprintf(why, len, "range %u already claimed by %s", i,
                             io->servers[k]->name);
                    return -EBUSY;
                }
    }
    if (io->nr_servers == IOREQ_MAX_SERVERS) {
        snprintf(why, len, "the domain has %d servers", IOREQ_MAX_SERVERS);
        return -EBUSY;
    }
    return 0;
}

static void refuse(int sock, int err, const char *why)
{
    struct dm_refused m;

    memset(&m, 0, sizeof(m));
    dm_hdr_init(&m.h, DM_REFUSED, sizeof(m));
    m.error = err;
    snprintf(m.reason, sizeof(m.reason), "%s", why);
    (void)!dm_msg_send(sock, &m, sizeof(m), -1, 100);
}

int ioreq_attach(struct ioreq_domain *io, int sock)
{
    uint8_t *buf = malloc(DM_MSG_MAX);
    struct ioreq_server *s = NULL;
    const struct dm_hello *h = (const void *)buf;
    struct dm_welcome w;
    char why[DM_REASON_MAX] = "";
    long n;
    int r;

    if (!buf) {
        r = -ENOMEM;
        goto out_close;
    }
    /* a process just started (an exec, sanitizer start-up, a slow
     * machine) gets longer for its HELLO; no vCPU waits on it */
    n = dm_msg_recv(sock, buf, NULL, MAX(io->cfg.timeout_ms, IOREQ_HELLO_MS));
    if (n < 0) {
        r = (int)n;
        goto out_close;
    }
    if ((r = dm_msg_check(buf, (size_t)n, DM_FROM_DM)) < 0 ||
        h->h.type != DM_HELLO) {
        r = r < 0 ? r : -EPROTO;
        refuse(sock, r, "the first message must be a well-formed HELLO");
        goto out_close;
    }
    if (h->major != DM_PROTO_MAJOR) {
        snprintf(why, sizeof(why), "protocol %u.%u: this memvisor speaks %u.x",
                 h->major, h->minor, DM_PROTO_MAJOR);
        r = -EPROTONOSUPPORT;
        refuse(sock, r, why);
        goto out_close;
    }
    s = calloc(1, sizeof(*s));
    if (!s) {
        r = -ENOMEM;
        goto out_close;
    }
    s->io = io;
    s->fd = sock;
    s->state = IOREQ_LIVE;
    memcpy(s->name, h->name, sizeof(s->name));
    s->nr_ranges = h->nr_ranges;
    memcpy(s->ranges, h->ranges, h->nr_ranges * sizeof(struct dm_range));
    s->tracker.write = track_write;
    s->tracker.removed = track_gone;
    s->refill_ns = now_ns();
    s->tokens = io->cfg.rate_per_sec / 10 + 1;
    pthread_mutex_init(&s->send_lock, NULL);

    pthread_mutex_lock(&io->lock);
    if ((r = claim_check_locked(io, h, why, sizeof(why))) < 0) {
        pthread_mutex_unlock(&io->lock);
        refuse(sock, r, why);
        goto out_free;
    }
    /* the others first hear what changed, so all agree on `announced` */
    if ((r = sync_locked(io)) < 0) {
        pthread_mutex_unlock(&io->lock);
        refuse(sock, r, "cannot read the p2m");
        goto out_free;
    }
    s->id = io->nr_servers;
    s->acked_gen = io->inval_gen; /* it has mapped nothing yet */
    memset(&w, 0, sizeof(w));
    dm_hdr_init(&w.h, DM_WELCOME, sizeof(w));
    w.major = DM_PROTO_MAJOR;
    w.minor = DM_PROTO_MINOR;
    w.domid = io->domid;
    w.server = s->id;
    w.nr_vcpus = io->nr_vcpus;
    w.pool_bytes = io->frames->nr_frames << PAGE_SHIFT;
    w.nr_gfns = io->p2m->nr_gfns;
    if ((r = send_locked(s, &w, sizeof(w), io->frames->memfd)) == 0)
        announce_all_locked(io, s);
    if (s->state != IOREQ_LIVE) {
        pthread_mutex_unlock(&io->lock);
        r = r < 0 ? r : -EIO;
        goto out_free;
    }
    if ((r = -pthread_create(&s->reader, NULL, reader_main, s)) < 0) {
        pthread_mutex_unlock(&io->lock);
        goto out_free;
    }
    io->servers[io->nr_servers++] = s;
    io->stats.servers++;
    /* P6 from the first server on */
    p2m_hold_removed(io->p2m, !io->cfg.test_no_hold_removed);
    atomic_store(&io->attached, true);
    pthread_mutex_unlock(&io->lock);
    free(buf);
    return (int)s->id;

out_free:
    pthread_mutex_destroy(&s->send_lock);
    free(s);
out_close:
    close(sock);
    free(buf);
    return r;
}

/* ---- forwarding ---------------------------------------------------------- */

static struct ioreq_server *claimer_locked(struct ioreq_domain *io,
                                           unsigned kind, uint64_t addr,
                                           unsigned size)
{
    for (unsigned i = 0; i < io->nr_servers; i++) {
        struct ioreq_server *s = io->servers[i];
        for (unsigned j = 0; j < s->nr_ranges; j++) {
            const struct dm_range *r = &s->ranges[j];
            if (r->kind == kind && addr >= r->base &&
                addr - r->base < r->len && size <= r->len - (addr - r->base))
                return s;
        }
    }
    return NULL;
}

/* Wait until p is done or the server is cut; I3. */
static void wait_done_locked(struct ioreq_server *s, struct ioreq_pending *p,
                             const char *what)
{
    struct ioreq_domain *io = s->io;
    struct timespec dl = deadline_in(io->cfg.timeout_ms);

    while (!p->done && s->state == IOREQ_LIVE) {
        if (pthread_cond_timedwait(&io->cond, &io->lock, &dl) == ETIMEDOUT &&
            !p->done) {
            cut_locked(s, "no answer to %s within %d ms", what,
                       io->cfg.timeout_ms);
            break;
        }
    }
    if (!p->done) {
        p->done = true;
        p->status = -EIO;
    }
}

int ioreq_access(struct ioreq_domain *io, unsigned vcpu, unsigned kind,
                 uint64_t addr, unsigned size, bool write, uint64_t *data)
{
    struct ioreq_server *s;
    struct ioreq_pending *p;
    struct dm_ioreq m;
    int r;

    if (vcpu >= IOREQ_MAX_VCPUS || kind > DM_RANGE_MMIO ||
        (size != 1 && size != 2 && size != 4 && size != 8))
        return -EINVAL;
    pthread_mutex_lock(&io->lock);
    s = claimer_locked(io, kind, addr, size);
    if (!s) {
        io->stats.unclaimed++;
        pthread_mutex_unlock(&io->lock);
        return -ENOENT;
    }
    io->stats.ioreqs++;
    p = &s->pend[vcpu];
    *p = (struct ioreq_pending){.id = ++io->next_id};
    memset(&m, 0, sizeof(m));
    dm_hdr_init(&m.h, DM_IOREQ, sizeof(m));
    m.id = p->id;
    m.addr = addr;
    m.data = write ? *data : 0;
    m.vcpu = vcpu;
    m.kind = (uint8_t)kind;
    m.dir = write ? DM_DIR_WRITE : DM_DIR_READ;
    m.size = (uint8_t)size;
    if (send_locked(s, &m, sizeof(m), -1) == 0)
        wait_done_locked(s, p, "an I/O request");
    r = p->done && p->status == 0 && s->state == IOREQ_LIVE ? 0 : -EIO;
    if (p->done && p->status < 0)
        r = -EIO;
    if (r == 0 && !write)
        *data = size == 8 ? p->data : p->data & ((1ULL << (size * 8)) - 1);
    if (r < 0) {
        io->stats.failed_ioreqs++;
        if (!write)
            *data = size == 8 ? ~0ULL : (1ULL << (size * 8)) - 1;
    }
    s->nr_ioreqs++;
    p->id = 0;
    pthread_mutex_unlock(&io->lock);
    return r;
}

/* ---- invalidation (I1) -------------------------------------------------- */

int ioreq_end_hypercall(struct ioreq_domain *io)
{
    struct ioreq_server *to[IOREQ_MAX_SERVERS];
    struct dm_inval m;
    uint64_t target, t0, nr_held = 0;
    mfn_t *held = NULL;
    unsigned n;
    int r = 0;

    if (!atomic_load(&io->attached))
        return 0; /* never a server: nothing held, nobody maps anything */
    pthread_mutex_lock(&io->lock);
    if (!io->nr_servers) {
        /* nobody maps anything; an attach re-reads the p2m */
        (void)p2m_mapcache_take(io->p2m, &held, &nr_held);
        pthread_mutex_unlock(&io->lock);
        p2m_put_held(io->p2m, held, nr_held);
        return 0;
    }
    if (p2m_mapcache_take(io->p2m, &held, &nr_held)) {
        (void)sync_locked(io); /* I2; a failure cuts the servers it hit */
        target = ++io->inval_gen;
        io->stats.invalidations++;
        memset(&m, 0, sizeof(m));
        dm_hdr_init(&m.h, DM_INVALIDATE, sizeof(m));
        m.gen = target;
        n = live_servers(io, to);
        for (unsigned i = 0; i < n; i++)
            if (send_locked(to[i], &m, sizeof(m), -1) == 0)
                to[i]->nr_invals++;
    }
    if (io->cfg.test_no_wait_acks) {
        pthread_mutex_unlock(&io->lock);
        p2m_put_held(io->p2m, held, nr_held);
        return 0;
    }
    /* I1: also when another vCPU cleared the flag and sent the request */
    target = io->inval_gen;
    t0 = now_ns();
    n = live_servers(io, to);
    for (unsigned i = 0; i < n; i++) {
        struct ioreq_server *s = to[i];
        struct timespec dl = deadline_in(io->cfg.timeout_ms);
        while (s->state == IOREQ_LIVE && s->acked_gen < target) {
            if (pthread_cond_timedwait(&io->cond, &io->lock, &dl) ==
                    ETIMEDOUT &&
                s->acked_gen < target) {
                cut_locked(s, "no INVAL_ACK of generation %llu within %d ms",
                           (unsigned long long)target, io->cfg.timeout_ms);
                r = -ETIMEDOUT;
            }
        }
    }
    io->stats.inval_wait_ns += now_ns() - t0;
    pthread_mutex_unlock(&io->lock);
    /* P6: no device model maps them any more (or it was cut off) */
    p2m_put_held(io->p2m, held, nr_held);
    return r;
}

/* ---- device state ------------------------------------------------------- */

/* SAVE (out), RESTORE (in) or QUIESCE (on): one call, its answer awaited. */
static int state_call(struct ioreq_domain *io, unsigned server, uint16_t type,
                      void *out, uint32_t *out_len, const void *in,
                      uint32_t in_len, bool on)
{
    struct ioreq_server *s;
    union {
        struct dm_state m;
        struct dm_quiesce q;
        uint8_t raw[DM_MSG_MAX];
    } *u = malloc(sizeof(*u));
    size_t len;
    int r;

    if (!u)
        return -ENOMEM;
    if (in_len > DM_STATE_MAX) {
        free(u);
        return -EINVAL;
    }
    pthread_mutex_lock(&io->lock);
    if (server >= io->nr_servers) {
        r = -ENOENT;
        goto out;
    }
    s = io->servers[server];
    if (s->state != IOREQ_LIVE) {
        r = -EIO;
        goto out;
    }
    if (s->save.id && !s->save.done) {
        r = -EBUSY;
        goto out;
    }
    s->save = (struct ioreq_pending){.id = ++io->next_id};
    s->save_type = type;
    s->save_buf = out;
    memset(u, 0, sizeof(*u));
    if (type == DM_QUIESCE) {
        len = sizeof(u->q);
        dm_hdr_init(&u->q.h, type, (uint32_t)len);
        u->q.id = s->save.id;
        u->q.on = on;
    } else {
        len = sizeof(u->m) + in_len;
        dm_hdr_init(&u->m.h, type, (uint32_t)len);
        u->m.id = s->save.id;
        u->m.len = in_len;
        if (in_len)
            memcpy(u->m.bytes, in, in_len);
    }
    if (send_locked(s, u, len, -1) == 0)
        wait_done_locked(s, &s->save, dm_type_name(type));
    r = s->save.done ? s->save.status : -EIO;
    if (r > 0)
        r = -EIO;
    if (r == 0 && out_len)
        *out_len = s->save_len;
    s->save.id = 0;
    s->save_buf = NULL;
out:
    pthread_mutex_unlock(&io->lock);
    free(u);
    return r;
}

int ioreq_save(struct ioreq_domain *io, unsigned server, void *buf,
               uint32_t *len)
{
    if (!buf || !len)
        return -EINVAL;
    return state_call(io, server, DM_SAVE, buf, len, NULL, 0, false);
}

int ioreq_restore(struct ioreq_domain *io, unsigned server, const void *buf,
                  uint32_t len)
{
    return state_call(io, server, DM_RESTORE, NULL, NULL, buf, len, false);
}

int ioreq_quiesce(struct ioreq_domain *io, unsigned server, bool on)
{
    return state_call(io, server, DM_QUIESCE, NULL, NULL, NULL, 0, on);
}

/* ---- life ---------------------------------------------------------------- */

int ioreq_domain_init(struct ioreq_domain *io, struct frames *frames,
                      struct p2m *p2m, struct memslots *ms,
                      struct dirty_log *dirty, unsigned nr_vcpus,
                      const struct ioreq_config *cfg)
{
    pthread_condattr_t ca;

    memset(io, 0, sizeof(*io));
    atomic_init(&io->attached, false);
    if (nr_vcpus == 0 || nr_vcpus > IOREQ_MAX_VCPUS)
        return -EINVAL;
    io->frames = frames;
    io->p2m = p2m;
    io->ms = ms;
    io->dirty = dirty;
    io->domid = p2m->domid;
    io->nr_vcpus = nr_vcpus;
    if (cfg)
        io->cfg = *cfg;
    if (io->cfg.nr_reserved > IOREQ_MAX_RESERVED)
        return -EINVAL;
    if (io->cfg.timeout_ms <= 0)
        io->cfg.timeout_ms = 2000;
    if (!io->cfg.rate_per_sec)
        io->cfg.rate_per_sec = 100000;
    io->announced = malloc(p2m->nr_gfns * sizeof(uint64_t));
    if (!io->announced)
        return -ENOMEM;
    for (uint64_t g = 0; g < p2m->nr_gfns; g++)
        io->announced[g] = DM_MFN_NONE;
    pthread_mutex_init(&io->lock, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&io->cond, &ca);
    pthread_condattr_destroy(&ca);
    return 0;
}

void ioreq_domain_fini(struct ioreq_domain *io)
{
    if (!io->announced)
        return;
    pthread_mutex_lock(&io->lock);
    io->stopping = true;
    for (unsigned i = 0; i < io->nr_servers; i++)
        cut_locked(io->servers[i], "the domain is going away");
    pthread_mutex_unlock(&io->lock);
    for (unsigned i = 0; i < io->nr_servers; i++) {
        struct ioreq_server *s = io->servers[i];
        pthread_join(s->reader, NULL);
        close(s->fd);
        pthread_mutex_destroy(&s->send_lock);
        free(s);
    }
    io->nr_servers = 0;
    if (io->p2m->table) {
        mfn_t *held;
        uint64_t nr;
        p2m_hold_removed(io->p2m, false);
        (void)p2m_mapcache_take(io->p2m, &held, &nr);
        p2m_put_held(io->p2m, held, nr);
    }
    pthread_cond_destroy(&io->cond);
    pthread_mutex_destroy(&io->lock);
    free(io->announced);
    io->announced = NULL;
}

int ioreq_server_info(struct ioreq_domain *io, unsigned server,
                      enum ioreq_state *state, char *name, char *reason,
                      size_t reason_len)
{
    int r = 0;

    pthread_mutex_lock(&io->lock);
    if (server >= io->nr_servers) {
        r = -ENOENT;
    } else {
        struct ioreq_server *s = io->servers[server];
        if (state)
            *state = s->state;
        if (name)
            memcpy(name, s->name, DM_NAME_MAX);
        if (reason && reason_len)
            snprintf(reason, reason_len, "%s", s->cut_reason);
    }
    pthread_mutex_unlock(&io->lock);
    return r;
}

void ioreq_get_stats(struct ioreq_domain *io, struct ioreq_stats *out)
{
    pthread_mutex_lock(&io->lock);
    *out = io->stats;
    out->live = out->cut = 0;
    out->messages = out->throttled = 0;
    for (unsigned i = 0; i < io->nr_servers; i++) {
        out->messages += io->servers[i]->nr_msgs;
        out->throttled += io->servers[i]->nr_throttled;
        if (io->servers[i]->state == IOREQ_LIVE)
            out->live++;
        else
            out->cut++;
    }
    pthread_mutex_unlock(&io->lock);
}

int ioreq_server_ranges(struct ioreq_domain *io, unsigned server,
                        struct dm_range *out)
{
    int n = -ENOENT;

    pthread_mutex_lock(&io->lock);
    if (server < io->nr_servers) {
        n = (int)io->servers[server]->nr_ranges;
        memcpy(out, io->servers[server]->ranges, (size_t)n * sizeof(*out));
    }
    pthread_mutex_unlock(&io->lock);
    return n;
}
