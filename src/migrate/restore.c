/*
 * restore.c - building a domain from a stream (migrate.h): frames
 * populated on demand, page tables localised as they arrive, then
 * finish(): m2p, the guest's p2m list, pins, vCPUs.
 */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "lib/errmsg.h"
#include "migrate/migrate.h"

#define PTE_P 1ULL
#define PTE_ADDR_MASK 0x000FFFFFFFFFF000ULL

static uint64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

struct restore;

/* One connection being read: the main one (idx 0) or an extra one of a
 * parallel stream, each on its own thread. */
struct conn {
    struct restore *s;
    unsigned idx;
    struct stream_chan *chan;
    struct stream_chan own; /* an extra connection's channel */
    struct stream_reader r;
    uint64_t round_pages; /* pfn words this round (checked at BARRIER) */
    uint64_t pages, localised_tables, populated_early, records;
    int rc;
    char err[512];
    pthread_t th;
    bool started;
};

struct restore {
    const struct migrate_target *t;
    const struct migrate_restore_opts *o;
    struct migrate_restore_stats *st;
    uint64_t nr;
    uint64_t *p2m;     /* written under pop, read with atomic loads */
    uint64_t *written; /* pfns whose frame holds data (others: zero) */
    uint8_t *types;
    uint64_t *p2m_frames;
    uint64_t nr_p2m_frames;
    uint8_t shared_info[4096];
    struct stream_pv_vcpu *vcpus;
    struct stream_hvm_platform *hvm_platform; /* HVM: once arrived */
    struct stream_hvm_vcpu *hvm_vcpus;
    bool have_platform;
    uint32_t kind; /* the DOMAIN record's */
    pthread_mutex_t pop; /* populate */
    /* a parallel stream */
    unsigned nconn;
    struct conn conns[STREAM_CHANNELS_MAX];
    pthread_mutex_t mu;
    pthread_cond_t cv;
    unsigned arrived; /* at the barrier of the round being applied */
    uint64_t gen;     /* barriers passed */
    bool round_final; /* the final flag of the round being applied */
    uint32_t taken;   /* connection indices that presented themselves */
    uint64_t *seen;   /* pfns applied this round, over every connection */
    bool failed;
    int fail_rc;
    char fail_err[560];
    char *err;
    size_t errlen;
};

static int frame_of(struct conn *c, uint64_t pfn, uint64_t *mfn, bool early)
{
    struct restore *s = c->s;
    uint64_t m = __atomic_load_n(&s->p2m[pfn], __ATOMIC_ACQUIRE);
    int rc = 0;

    if (m != MIGRATE_NO_MFN) {
        *mfn = m;
        return 0;
    }
    pthread_mutex_lock(&s->pop);
    m = __atomic_load_n(&s->p2m[pfn], __ATOMIC_RELAXED);
    if (m == MIGRATE_NO_MFN) {
        if ((rc = s->t->populate(s->t->arg, pfn, &m)) < 0)
            errf(c->err, sizeof(c->err), "pfn %#llx: no frame: %s",
                 (unsigned long long)pfn, strerror(-rc));
        else {
            __atomic_store_n(&s->p2m[pfn], m, __ATOMIC_RELEASE);
            c->populated_early += early;
        }
    }
    pthread_mutex_unlock(&s->pop);
    *mfn = m;
    return rc;
}

/* Localise a normalised page-table page in place: pfn -> this side's mfn,
 * populating pfns that have not arrived yet. */
static int localise(struct conn *c, uint64_t pfn, unsigned level,
                    uint64_t *pt)
{
    struct restore *s = c->s;

    for (unsigned i = 0; i < 512; i++) {
        uint64_t e = pt[i], p, mfn;
        int rc;

        if (!(e & PTE_P))
            continue;
        p = (e & PTE_ADDR_MASK) >> 12;
        if (p == STREAM_PFN_SHARED_INFO) {
            mfn = s->t->shared_info_mfn(s->t->arg);
        } else if (p >= s->nr) {
            errf(c->err, sizeof(c->err),
                 "pfn %#llx (L%u) entry %u names pfn %#llx outside the domain",
                 (unsigned long long)pfn, level, i, (unsigned long long)p);
            return -ERANGE;
        } else if ((rc = frame_of(c, p, &mfn, true)) < 0) {
            return rc;
        }
        pt[i] = (e & ~PTE_ADDR_MASK) | (mfn << 12);
    }
    c->localised_tables++;
    return 0;
}

static int page_data(struct conn *c)
{
    struct restore *s = c->s;
    struct stream_pages p;
    const uint8_t *data;
    int rc;

    if ((rc = stream_parse_pages(c->r.body, c->r.len, s->nr, &p, c->err,
                                 sizeof(c->err))) < 0)
        return rc;
    data = p.data;
    c->round_pages += p.count;
    for (uint32_t i = 0; i < p.count; i++) {
        uint64_t w = stream_word(&p, i), pfn = w & STREAM_PFN_MASK, mfn;
        unsigned t = stream_word_type(w), level = t & STREAM_TYPE_LEVEL_MASK;
        uint64_t bit = 1ULL << (pfn % 64), *wr = &s->written[pfn / 64];
        uint64_t *dst;

        if (s->kind == STREAM_DOMAIN_HVM && level >= 1 && level <= 4) {
            errf(c->err, sizeof(c->err),
                 "pfn %#llx: a page table in an HVM stream",
                 (unsigned long long)pfn);
            return -EPROTO;
        }
        /* a parallel stream sends a pfn once per round over all its
         * connections: a second copy could land in either order */
        if (s->seen && !s->o->test_no_barrier &&
            (__atomic_fetch_or(&s->seen[pfn / 64], bit, __ATOMIC_RELAXED) &
             bit)) {
            errf(c->err, sizeof(c->err),
                 "PAGE_DATA: pfn %#llx sent twice in round %u",
                 (unsigned long long)pfn, c->r.barrier.round + 1);
            return -EPROTO;
        }
        __atomic_store_n(&s->types[pfn], (uint8_t)t, __ATOMIC_RELAXED);
        c->pages++;
        if (t == STREAM_TYPE_XTAB)
            continue; /* no page here (the frame, if any, stays zeroed) */
        if ((rc = frame_of(c, pfn, &mfn, false)) < 0)
            return rc;
        dst = s->t->page(s->t->arg, mfn);
        if (w & STREAM_PFN_ZERO) {
            /* a new frame is scrubbed already: touch it only to undo data
             * an earlier round wrote */
            if (__atomic_fetch_and(wr, ~bit, __ATOMIC_RELAXED) & bit)
                memset(dst, 0, 4096);
            continue;
        }
        __atomic_fetch_or(wr, bit, __ATOMIC_RELAXED);
        memcpy(dst, data, 4096);
        data += 4096;
        if (level >= 1 && level <= 4 &&
            (rc = localise(c, pfn, level, dst)) < 0)
            return rc;
    }
    return 0;
}

/* The first failure of a parallel stream stops every connection: their
 * reads end (shutdown), their barrier waits return. */
static void fail(struct restore *s, struct conn *c, int rc)
{
    pthread_mutex_lock(&s->mu);
    if (!s->failed) {
        s->failed = true;
        s->fail_rc = rc;
        snprintf(s->fail_err, sizeof(s->fail_err), "%s%s",
                 c->idx ? "an extra connection: " : "",
                 c->err[0] ? c->err : strerror(-rc));
        for (unsigned i = 0; s->nconn > 1 && i < s->nconn; i++)
            if (s->conns[i].chan && s->conns[i].chan->fd >= 0)
                (void)shutdown(s->conns[i].chan->fd, SHUT_RD);
    }
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

/* A connection's BARRIER: its page count checked, then it waits for every
 * connection to reach the same round's BARRIER (the round's pages are all
 * applied) before it applies anything of the next round. */
static int barrier(struct conn *c)
{
    struct restore *s = c->s;
    const struct stream_barrier *b = &c->r.barrier;
    bool final = b->flags & STREAM_BARRIER_FINAL;
    int rc = 0;

    if (b->pages != c->round_pages) {
        errf(c->err, sizeof(c->err),
             "BARRIER of round %u counts %llu pages where %llu came", b->round,
             (unsigned long long)b->pages,
             (unsigned long long)c->round_pages);
        return -EPROTO;
    }
    c->round_pages = 0;
    if (s->o->test_no_barrier)
        return 0;
    pthread_mutex_lock(&s->mu);
    if (s->failed)
        rc = -ECANCELED;
    else if (s->arrived && s->round_final != final) {
        errf(c->err, sizeof(c->err),
             "the connections disagree whether round %u is the last",
             b->round);
        rc = -EPROTO;
    } else {
        s->round_final = final;
        if (++s->arrived == s->nconn) {
            memset(s->seen, 0, (s->nr + 63) / 64 * 8);
            s->arrived = 0;
            s->gen++;
            pthread_cond_broadcast(&s->cv);
        } else {
            uint64_t g = s->gen;

            while (s->gen == g && !s->failed)
                pthread_cond_wait(&s->cv, &s->mu);
            if (s->gen == g)
                rc = -ECANCELED;
        }
    }
    pthread_mutex_unlock(&s->mu);
    if (rc == -ECANCELED && !c->err[0])
        errf(c->err, sizeof(c->err), "another connection failed");
    return rc;
}

/* An extra connection: its header and CHANNEL (the stream's token, an
 * index not taken), then page data and barriers until END. */
static int conn_run(struct conn *c)
{
    struct restore *s = c->s;
    const struct stream_reader *m = &s->conns[0].r;
    int rc;

    if ((rc = stream_read_header(&c->r, c->err, sizeof(c->err))) < 0)
        return rc;
    if (!c->r.channel) {
        errf(c->err, sizeof(c->err), "not a connection of a parallel stream "
                                     "(no CHANNEL flag)");
        return -EPROTO;
    }
    if ((c->r.hdr.flags & STREAM_IMG_ZSTD) &&
        !(m->hdr.flags & STREAM_IMG_ZSTD)) {
        errf(c->err, sizeof(c->err), "compressed, the stream is not");
        return -EPROTO;
    }
    if ((rc = stream_read_record(&c->r, c->err, sizeof(c->err))) < 0)
        return rc;
    c->records++;
    if (memcmp(c->r.me.token, m->chans.token, STREAM_TOKEN_LEN) != 0 ||
        c->r.me.nr != m->chans.nr) {
        errf(c->err, sizeof(c->err), "CHANNEL names another stream");
        return -EPROTO;
    }
    pthread_mutex_lock(&s->mu);
    if (s->taken & (1u << c->r.me.index))
        rc = -EPROTO;
    s->taken |= 1u << c->r.me.index;
    pthread_mutex_unlock(&s->mu);
    if (rc < 0) {
        errf(c->err, sizeof(c->err), "CHANNEL %u presented twice",
             c->r.me.index);
        return rc;
    }
    while (c->r.phase != STREAM_PH_DONE) {
        if ((rc = stream_read_record(&c->r, c->err, sizeof(c->err))) < 0)
            return rc;
        c->records++;
        if (c->r.type == STREAM_REC_PAGE_DATA)
            rc = page_data(c);
        else if (c->r.type == STREAM_REC_BARRIER)
            rc = barrier(c);
        if (rc < 0)
            return rc;
    }
    return 0;
}

static void *conn_thread(void *arg)
{
    struct conn *c = arg;

    c->rc = conn_run(c);
    if (c->rc < 0)
        fail(c->s, c, c->rc);
    return NULL;
}

/* CHANNELS on the main connection: the extra connections are taken (the
 * caller's accept), each read on its own thread. */
static int open_conns(struct restore *s)
{
    struct conn *m = &s->conns[0];
    unsigned n = m->r.chans.nr;
    int rc;

    if (!s->o->accept) {
        errf(m->err, sizeof(m->err), "a parallel stream of %u connections: "
                                     "this receiver reads one",
             n);
        return -ENOTSUP;
    }
    s->seen = calloc((s->nr + 63) / 64, 8);
    if (!s->seen)
        return -ENOMEM;
    s->st->mem_bytes += (s->nr + 63) / 64 * 8 +
                        (n - 1) * (2ULL * (STREAM_REC_MAX + 8) + sizeof(*m));
    for (unsigned i = 1; i < n; i++) {
        struct conn *c = &s->conns[i];
        int fd = s->o->accept(s->o->accept_arg, m->err, sizeof(m->err));

        if (fd < 0)
            return fd;
        c->s = s;
        c->idx = i;
        stream_chan_fd(&c->own, fd);
        c->chan = &c->own;
        stream_reader_init(&c->r, c->chan);
        pthread_mutex_lock(&s->mu);
        s->nconn = i + 1; /* fail() shuts this one down too from now on */
        pthread_mutex_unlock(&s->mu);
        if ((rc = pthread_create(&c->th, NULL, conn_thread, c)) != 0) {
            errf(m->err, sizeof(m->err), "a reader thread: %s", strerror(rc));
            return -rc;
        }
        c->started = true;
    }
    return 0;
}

/* The main connection's records, up to END (with a parallel stream's
 * extra connections read meanwhile). */
static int read_main(struct restore *s, bool *created)
{
    const struct migrate_target *t = s->t;
    struct conn *m = &s->conns[0];
    int rc;

    if ((rc = stream_read_header(&m->r, m->err, sizeof(m->err))) < 0)
        return rc;
    if (m->r.channel) {
        errf(m->err, sizeof(m->err), "an extra connection of a parallel "
                                     "stream where its main one was due");
        return -EPROTO;
    }
    while (m->r.phase != STREAM_PH_DONE) {
        if ((rc = stream_read_record(&m->r, m->err, sizeof(m->err))) < 0)
            return rc;
        m->records++;
        switch (m->r.type) {
        case STREAM_REC_DOMAIN:
            s->nr = m->r.dom.nr_pages;
            s->p2m = malloc(8 * s->nr);
            s->types = malloc(s->nr);
            s->written = calloc((s->nr + 63) / 64, 8);
            s->vcpus = calloc(m->r.dom.nr_vcpus, sizeof(*s->vcpus));
            if (!s->p2m || !s->types || !s->vcpus || !s->written)
                return -ENOMEM;
            s->kind = m->r.dom.kind;
            if (m->r.dom.kind == STREAM_DOMAIN_HVM) {
                s->hvm_platform = calloc(1, sizeof(*s->hvm_platform));
                s->hvm_vcpus = calloc(m->r.dom.nr_vcpus, sizeof(*s->hvm_vcpus));
                if (!s->hvm_platform || !s->hvm_vcpus)
                    return -ENOMEM;
            }
            s->st->mem_bytes = 8 * s->nr + s->nr + (s->nr + 63) / 64 * 8 +
                               m->r.dom.nr_vcpus * sizeof(*s->vcpus) +
                               2ULL * (STREAM_REC_MAX + 8);
            memset(s->p2m, 0xff, 8 * s->nr);
            memset(s->types, STREAM_TYPE_XTAB, s->nr);
            if ((rc = t->create(t->arg, &m->r.dom, m->err, sizeof(m->err))) <
                0)
                return rc;
            *created = true;
            break;
        case STREAM_REC_CHANNELS:
            if ((rc = open_conns(s)) < 0)
                return rc;
            break;
        case STREAM_REC_BARRIER:
            if ((rc = barrier(m)) < 0)
                return rc;
            break;
        case STREAM_REC_PV_P2M_FRAMES: {
            const uint8_t *pf;
            if ((rc = stream_parse_p2m_frames(m->r.body, m->r.len, s->nr,
                                              &s->nr_p2m_frames, &pf, m->err,
                                              sizeof(m->err))) < 0)
                return rc;
            s->p2m_frames = malloc(8 * s->nr_p2m_frames);
            if (!s->p2m_frames)
                return -ENOMEM;
            memcpy(s->p2m_frames, pf, 8 * s->nr_p2m_frames);
            break;
        }
        case STREAM_REC_PAGE_DATA:
            if ((rc = page_data(m)) < 0)
                return rc;
            break;
        case STREAM_REC_SHARED_INFO:
            memcpy(s->shared_info, m->r.body, 4096);
            break;
        case STREAM_REC_PV_VCPU: {
            struct stream_pv_vcpu v;
            if ((rc = stream_parse_vcpu(m->r.body, m->r.len, &m->r.dom, &v,
                                        m->err, sizeof(m->err))) < 0)
                return rc;
            s->vcpus[v.id] = v;
            break;
        }
        case STREAM_REC_HVM_PLATFORM:
            if ((rc = stream_parse_hvm_platform(m->r.body, m->r.len,
                                                &m->r.dom, s->hvm_platform,
                                                m->err, sizeof(m->err))) < 0)
                return rc;
            s->have_platform = true;
            break;
        case STREAM_REC_HVM_VCPU: {
            uint32_t id;

            memcpy(&id, m->r.body, 4); /* checked below and by the reader */
            if (id >= m->r.dom.nr_vcpus)
                return -EPROTO;
            if ((rc = stream_parse_hvm_vcpu(m->r.body, m->r.len, &m->r.dom,
                                            &s->hvm_vcpus[id], m->err,
                                            sizeof(m->err))) < 0)
                return rc;
            break;
        }
        case STREAM_REC_DEVICE: {
            struct stream_device dv;
            const uint8_t *state;
            uint32_t len;
            if ((rc = stream_parse_device(m->r.body, m->r.len, &dv, &state,
                                          &len, m->err, sizeof(m->err))) < 0)
                return rc;
            if (!t->device) {
                errf(m->err, sizeof(m->err),
                     "device-model state (kind %u, instance %u): no device "
                     "model to restore it into",
                     dv.kind, dv.instance);
                return -ENOTSUP;
            }
            if ((rc = t->device(t->arg, &dv, state, len, m->err,
                                sizeof(m->err))) < 0)
                return rc;
            s->st->devices++;
            break;
        }
        default:
            break; /* ROUND, END */
        }
    }
    return 0;
}

static int run(struct restore *s)
{
    const struct migrate_target *t = s->t;
    struct conn *m = &s->conns[0];
    bool created = false;
    int rc = read_main(s, &created);

    if (rc < 0)
        fail(s, m, rc);
    for (unsigned i = 1; i < STREAM_CHANNELS_MAX; i++)
        if (s->conns[i].started) {
            pthread_join(s->conns[i].th, NULL);
            s->conns[i].started = false;
        }
    if (s->failed) {
        /* the first failure tells why (a broken extra connection ends
         * the main one's reads too) */
        errf(s->err, s->errlen, "%s", s->fail_err);
        return s->fail_rc;
    }
    if (!created)
        return -EPROTO; /* unreachable: the reader demands DOMAIN first */
    if (m->r.dom.kind == STREAM_DOMAIN_HVM) {
        struct migrate_restored st = {
            .dom = m->r.dom,
            .p2m = s->p2m,
            .types = s->types,
            .hvm_platform = s->hvm_platform,
            .hvm_vcpus = s->hvm_vcpus,
        };

        if (!s->have_platform)
            return -EPROTO; /* unreachable: the reader's order */
        return t->finish(t->arg, &st, s->err, s->errlen);
    }
    if (!s->p2m_frames) {
        errf(s->err, s->errlen, "no PV_P2M_FRAMES record");
        return -EPROTO;
    }
    /* base pointers: pfn -> mfn (they must name frames that arrived as
     * L4 tables) */
    for (unsigned i = 0; i < m->r.dom.nr_vcpus; i++) {
        uint64_t *b[2] = {&s->vcpus[i].base_pfn, &s->vcpus[i].user_base_pfn};
        for (unsigned k = 0; k < 2; k++) {
            if (*b[k] == STREAM_PFN_NONE)
                continue;
            if ((s->types[*b[k]] & STREAM_TYPE_LEVEL_MASK) != 4 ||
                s->p2m[*b[k]] == MIGRATE_NO_MFN) {
                errf(s->err, s->errlen,
                     "vCPU %u: base pointer pfn %#llx did not arrive as an "
                     "L4 table",
                     i, (unsigned long long)*b[k]);
                return -EPROTO;
            }
            *b[k] = s->p2m[*b[k]];
        }
    }
    {
        struct migrate_restored st = {
            .dom = m->r.dom,
            .p2m = s->p2m,
            .types = s->types,
            .p2m_frames = s->p2m_frames,
            .nr_p2m_frames = s->nr_p2m_frames,
            .shared_info = s->shared_info,
            .vcpus = s->vcpus,
        };
        for (uint64_t i = 0; i < s->nr_p2m_frames; i++)
            if (s->types[s->p2m_frames[i]] != STREAM_TYPE_NOTAB) {
                errf(s->err, s->errlen,
                     "the guest's p2m list frame at pfn %#llx is not a plain "
                     "page",
                     (unsigned long long)s->p2m_frames[i]);
                return -EPROTO;
            }
        return t->finish(t->arg, &st, s->err, s->errlen);
    }
}

int migrate_restore_opts(const struct migrate_target *dst,
                         struct stream_chan *chan,
                         const struct migrate_restore_opts *opts,
                         struct migrate_restore_stats *stats, char *err,
                         size_t errlen)
{
    static const struct migrate_restore_opts none;
    struct restore *s = calloc(1, sizeof(*s));
    uint64_t t0 = now_ns();
    int rc;

    memset(stats, 0, sizeof(*stats));
    if (!s)
        return -ENOMEM;
    if (err && errlen)
        err[0] = '\0';
    s->t = dst;
    s->o = opts ? opts : &none;
    s->st = stats;
    s->err = err;
    s->errlen = errlen;
    s->nconn = 1;
    s->conns[0].s = s;
    s->conns[0].chan = chan;
    pthread_mutex_init(&s->pop, NULL);
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    stream_reader_init(&s->conns[0].r, chan);
    rc = run(s);
    if (rc < 0) {
        if (err && errlen && !err[0])
            errf(err, errlen, "%s", strerror(-rc));
        if (s->p2m) /* DOMAIN was read: create may have made something */
            dst->abort(dst->arg);
    }
    for (unsigned i = 0; i < s->nconn; i++) {
        struct conn *c = &s->conns[i];

        stats->pages += c->pages;
        stats->localised_tables += c->localised_tables;
        stats->populated_early += c->populated_early;
        stats->records += c->records;
        stats->bytes += c->chan->bytes;
        stream_reader_fini(&c->r);
        if (i)
            close(c->own.fd);
    }
    stats->connections = s->nconn;
    stats->ns = now_ns() - t0;
    pthread_mutex_destroy(&s->pop);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    free(s->p2m);
    free(s->written);
    free(s->types);
    free(s->p2m_frames);
    free(s->vcpus);
    free(s->hvm_platform);
    free(s->hvm_vcpus);
    free(s->seen);
    free(s);
    return rc;
}

int migrate_restore(const struct migrate_target *dst, struct stream_chan *chan,
                    struct migrate_restore_stats *stats, char *err,
                    size_t errlen)
{
    return migrate_restore_opts(dst, chan, NULL, stats, err, errlen);
}
