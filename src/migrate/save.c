/*
 * save.c - the save state machine (migrate.h): live rounds, the final
 * round, normalisation.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>

#include "lib/errmsg.h"
#include "lib/bitmap.h"
#include "migrate/migrate.h"
#include "xen/xen.h"

#define PTE_P 1ULL
#define PTE_ADDR_MASK 0x000FFFFFFFFFF000ULL
#define HV_L4_FIRST 256
#define HV_L4_NR 16

static uint64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

enum save_state { SAVE_SETUP, SAVE_LIVE, SAVE_FINAL, SAVE_DONE, SAVE_FAILED };

/* The unit of a round that a lane takes at a time: 4 bitmap words, 256
 * pfns.  A bitmap word belongs to one lane per round, so the lanes never
 * share a word of todo or deferred. */
#define SAVE_CHUNK_WORDS 4

struct save;

/* One connection: its writer, a batch being filled, this round's counts. */
struct lane {
    struct save *s;
    unsigned idx; /* 0: the main connection */
    struct stream_writer w;
    uint64_t pfns[STREAM_PAGES_MAX], mfns[STREAM_PAGES_MAX];
    uint64_t words[STREAM_PAGES_MAX];
    uint32_t info[STREAM_PAGES_MAX];
    uint8_t *data; /* STREAM_PAGES_MAX pages */
    unsigned n;
    struct migrate_round r; /* this round: pages, zero, deferred */
    int rc;
    char err[512];
    pthread_t th;
};

struct save {
    const struct migrate_source *src;
    const struct migrate_save_opts *o;
    struct migrate_stats *st;
    enum save_state state; /* the round kind is decided here alone */
    unsigned round;
    uint64_t nr;
    uint64_t *todo;     /* pfns to send this round */
    uint64_t *deferred; /* pfns deferred to a later round */
    uint8_t *sent_type; /* type last sent (0xff: never) */
    uint64_t t0;
    bool devs_quiesced; /* the device models are quiesced (FINAL) */
    unsigned nlanes;    /* connections: 1, or a parallel stream's */
    struct lane *lanes;
    struct stream_writer *w; /* the main connection's (lanes[0].w) */
    /* this round, shared by the lanes */
    _Atomic uint64_t cursor; /* next bitmap word to take */
    _Atomic uint64_t done;   /* pages taken */
    atomic_bool stop;        /* a lane failed: the others stop */
    atomic_int failed;       /* the first lane that failed + 1 */
    uint64_t left, bytes0, rt0; /* for progress */
    char *err;
    size_t errlen;
};

/*
 * Normalise one page-table page of level `level` from src into dst: every
 * present entry's frame becomes its pfn; the hypervisor's L4 slots become
 * zero.  -ERANGE (with the entry in err) if an entry names a frame outside
 * the domain's pseudo-physical map.
 */
static int normalise(struct lane *l, uint64_t pfn, unsigned level,
                     const uint64_t *src, uint64_t *dst)
{
    struct save *s = l->s;

    for (unsigned i = 0; i < 512; i++) {
        uint64_t e = __atomic_load_n(&src[i], __ATOMIC_RELAXED), p;

        if (level == 4 && i >= HV_L4_FIRST && i < HV_L4_FIRST + HV_L4_NR) {
            dst[i] = 0;
            continue;
        }
        if (!(e & PTE_P)) {
            dst[i] = e;
            continue;
        }
        if (s->src->mfn_to_pfn(s->src->arg, (e & PTE_ADDR_MASK) >> 12, &p) <
            0) {
            errf(l->err, sizeof(l->err),
                 "pfn %#llx (L%u) entry %u = %#llx names mfn %#llx outside the "
                 "domain",
                 (unsigned long long)pfn, level, i, (unsigned long long)e,
                 (unsigned long long)((e & PTE_ADDR_MASK) >> 12));
            return -ERANGE;
        }
        dst[i] = (e & ~PTE_ADDR_MASK) | (p << 12);
    }
    return 0;
}

/* start_info names the xenstore and console ring pages by mfn: in the
 * stream, by pfn (0 stays 0: none). */
static int normalise_start_info(struct lane *l, uint64_t *si)
{
    struct save *s = l->s;
    static const unsigned at[2] = {
        offsetof(struct start_info, store_mfn) / 8,
        offsetof(struct start_info, console.domU.mfn) / 8,
    };

    for (unsigned k = 0; k < 2; k++) {
        uint64_t p;

        if (!si[at[k]])
            continue;
        if (s->src->mfn_to_pfn(s->src->arg, si[at[k]], &p) < 0 ||
            p == STREAM_PFN_SHARED_INFO) {
            errf(l->err, sizeof(l->err),
                 "start_info names ring mfn %#llx outside the domain",
                 (unsigned long long)si[at[k]]);
            return -ERANGE;
        }
        si[at[k]] = p;
    }
    return 0;
}

static bool page_zero(const uint64_t *p)
{
    for (unsigned i = 0; i < 512; i++)
        if (p[i])
            return false;
    return true;
}

static void defer(struct lane *l, uint64_t pfn)
{
    bitmap_set(l->s->deferred, pfn); /* the lane's own word (chunks) */
    l->r.deferred++;
}

/* Send the lane's batch of l->n pfns as one PAGE_DATA record. */
static int flush_batch(struct lane *l)
{
    struct save *s = l->s;
    bool final = s->state == SAVE_FINAL;
    unsigned nw = 0, nd = 0;
    int rc;

    if (l->n == 0)
        return 0;
    /* frames first: a pfn without one is deferred (live) or XTAB (final) */
    {
        uint64_t m[STREAM_PAGES_MAX];
        unsigned k = 0;
        for (unsigned i = 0; i < l->n; i++)
            if (l->mfns[i] != MIGRATE_NO_MFN)
                m[k++] = l->mfns[i];
        if (k && (rc = s->src->types(s->src->arg, m, k, l->info)) < 0) {
            errf(l->err, sizeof(l->err), "page types: %s", strerror(-rc));
            return rc;
        }
        /* spread info over the batch (XTAB for those with no frame) */
        for (unsigned i = l->n; i-- > 0;) {
            if (l->mfns[i] == MIGRATE_NO_MFN)
                continue;
            l->info[i] = l->info[--k];
        }
    }
    for (unsigned i = 0; i < l->n; i++) {
        uint64_t pfn = l->pfns[i];
        unsigned t, level;
        uint64_t *dst = (uint64_t *)(void *)(l->data + 4096ULL * nd);
        const uint64_t *pg;

        if (l->mfns[i] == MIGRATE_NO_MFN) {
            if (!final) {
                defer(l, pfn);
                continue;
            }
            l->words[nw++] = ((uint64_t)STREAM_TYPE_XTAB << 60) | pfn;
            s->sent_type[pfn] = STREAM_TYPE_XTAB;
            continue;
        }
        t = (l->info[i] >> 28) & 0xf;
        if (t == 0xf || t == 0xd || t == 0xe) { /* XTAB BROKEN XALLOC */
            if (!final) {
                defer(l, pfn);
                continue;
            }
            if (t != 0xf) {
                errf(l->err, sizeof(l->err), "pfn %#llx: frame type %#x",
                     (unsigned long long)pfn, t);
                return -ERANGE;
            }
            l->words[nw++] = ((uint64_t)STREAM_TYPE_XTAB << 60) | pfn;
            s->sent_type[pfn] = STREAM_TYPE_XTAB;
            continue;
        }
        level = t & STREAM_TYPE_LEVEL_MASK;
        if (s->src->hole && s->src->hole(s->src->arg, l->mfns[i])) {
            l->words[nw++] = ((uint64_t)t << 60) | STREAM_PFN_ZERO | pfn;
            l->r.zero++;
            s->sent_type[pfn] = (uint8_t)t;
            continue;
        }
        pg = s->src->page(s->src->arg, l->mfns[i]);
        if (level >= 1 && level <= 4) {
            rc = normalise(l, pfn, level, pg, dst);
            if (rc == -ERANGE && (!final || s->o->test_no_final_rule)) {
                defer(l, pfn);
                continue;
            }
            if (rc < 0)
                return rc; /* the final-round rule */
        } else {
            memcpy(dst, pg, 4096);
            if (s->src->dom.kind == STREAM_DOMAIN_PV64 &&
                pfn == s->src->dom.start_info_pfn &&
                (rc = normalise_start_info(l, dst)) < 0) {
                if (!final || s->o->test_no_final_rule) {
                    defer(l, pfn);
                    continue;
                }
                return rc;
            }
        }
        if (page_zero(dst)) {
            l->words[nw++] = ((uint64_t)t << 60) | STREAM_PFN_ZERO | pfn;
            l->r.zero++;
        } else {
            l->words[nw++] = ((uint64_t)t << 60) | pfn;
            nd++;
        }
        s->sent_type[pfn] = (uint8_t)t;
    }
    l->n = 0;
    if (nw == 0)
        return 0;
    {
        struct stream_page_data h = {.count = nw};
        rc = stream_write_record(&l->w, STREAM_REC_PAGE_DATA, &h, sizeof(h),
                                 l->words, 8ULL * nw, l->data, 4096ULL * nd);
    }
    if (rc < 0) {
        errf(l->err, sizeof(l->err), "writing page data%s: %s",
             l->idx ? " (an extra connection)" : "", strerror(-rc));
        return rc;
    }
    l->r.pages += nw;
    return 0;
}

static int add_page(struct lane *l, uint64_t pfn)
{
    struct save *s = l->s;
    uint64_t mfn;

    if (s->src->pfn_to_mfn(s->src->arg, pfn, &mfn) < 0)
        mfn = MIGRATE_NO_MFN;
    l->pfns[l->n] = pfn;
    l->mfns[l->n] = mfn;
    if (++l->n == STREAM_PAGES_MAX)
        return flush_batch(l);
    return 0;
}

/* Bytes on every connection so far (the lanes write meanwhile). */
static uint64_t wire_bytes(const struct save *s)
{
    uint64_t b = 0;

    for (unsigned i = 0; i < s->nlanes; i++)
        b += __atomic_load_n(&s->lanes[i].w.chan->bytes, __ATOMIC_RELAXED);
    return b;
}

/* Progress: the throughput of the round so far (of the last round at its
 * start), and the downtime the pages left would cost at that rate. */
static void report(struct save *s, uint64_t left, uint64_t bytes0,
                   uint64_t t0)
{
    uint64_t dt = now_ns() - t0, bps = s->st->bandwidth, b = wire_bytes(s);
    struct migrate_progress p = {
        .round = s->round,
        .final = s->state == SAVE_FINAL,
        .pages_left = left,
    };

    if (dt > 10000000ULL && b > bytes0)
        bps = (b - bytes0) * 1000000000ULL / dt;
    p.bytes_per_s = bps;
    p.est_downtime_ms = bps ? left * 4096 * 1000 / bps : 0;
    if (s->o->progress)
        s->o->progress(s->o->progress_arg, &p);
}

/* A parallel stream: shut every connection down, so that a lane blocked
 * writing (its peer waiting at a barrier for the lane that failed) wakes
 * with an error, and the destination sees the end at once. */
static void cut_lanes(struct save *s)
{
    for (unsigned i = 0; i < s->nlanes; i++)
        if (s->lanes[i].w.chan->fd >= 0)
            (void)shutdown(s->lanes[i].w.chan->fd, SHUT_RDWR);
}

/* One lane's share of a round: chunks of todo until none is left, then
 * its batch, its BARRIER (a parallel stream), and an extra connection's
 * END after the final one. */
static int lane_round(struct lane *l)
{
    struct save *s = l->s;
    uint64_t nwords = (s->nr + 63) / 64;
    int rc;

    for (;;) {
        uint64_t w0 = atomic_fetch_add(&s->cursor, SAVE_CHUNK_WORDS), w1;

        if (w0 >= nwords)
            break;
        w1 = w0 + SAVE_CHUNK_WORDS < nwords ? w0 + SAVE_CHUNK_WORDS : nwords;
        for (uint64_t w = w0; w < w1; w++) {
            uint64_t bits = s->todo[w];

            s->todo[w] = 0;
            while (bits) {
                uint64_t pfn = w * 64 + (uint64_t)__builtin_ctzll(bits), d;

                bits &= bits - 1;
                if (atomic_load_explicit(&s->stop, memory_order_relaxed)) {
                    errf(l->err, sizeof(l->err), "another connection failed");
                    return -ECANCELED;
                }
                if ((rc = add_page(l, pfn)) < 0)
                    return rc;
                d = atomic_fetch_add_explicit(&s->done, 1,
                                              memory_order_relaxed) + 1;
                if (l->idx == 0 && (d & 0xffff) == 0)
                    report(s, s->left > d ? s->left - d : 0, s->bytes0,
                           s->rt0);
            }
        }
    }
    if ((rc = flush_batch(l)) < 0)
        return rc;
    if (s->nlanes > 1) {
        struct stream_barrier b = {
            .round = s->round,
            .flags = s->state == SAVE_FINAL ? STREAM_BARRIER_FINAL : 0,
            .pages = l->r.pages,
        };
        if ((rc = stream_write_record(&l->w, STREAM_REC_BARRIER, &b,
                                      sizeof(b), NULL, 0, NULL, 0)) < 0 ||
            (l->idx && s->state == SAVE_FINAL &&
             (rc = stream_write_record(&l->w, STREAM_REC_END, NULL, 0, NULL,
                                       0, NULL, 0)) < 0)) {
            errf(l->err, sizeof(l->err), "writing%s: %s",
                 l->idx ? " (an extra connection)" : "", strerror(-rc));
            return rc;
        }
    }
    return 0;
}

static void *lane_thread(void *arg)
{
    struct lane *l = arg;
    struct save *s = l->s;
    int expect = 0;

    l->rc = lane_round(l);
    if (l->rc < 0) {
        atomic_store(&s->stop, true);
        if (atomic_compare_exchange_strong(&s->failed, &expect,
                                           (int)l->idx + 1) &&
            s->nlanes > 1)
            cut_lanes(s);
    }
    return NULL;
}

/* One round: send every pfn marked in todo (and clear it), over every
 * lane. */
static int send_round(struct save *s)
{
    struct migrate_round *r = &s->st->round[s->round - 1];
    uint64_t bytes0 = wire_bytes(s), t = now_ns();
    uint64_t left = bitmap_weight(s->todo, s->nr);
    struct stream_round rec;
    unsigned started = 1;
    int rc, f;

    memset(r, 0, sizeof(*r));
    r->round = s->round;
    r->final = s->state == SAVE_FINAL;
    r->start_ns = t - s->t0;
    rec = (struct stream_round){s->round, r->final ? STREAM_ROUND_FINAL : 0,
                                left};
    if ((rc = stream_write_record(s->w, STREAM_REC_ROUND, &rec, sizeof(rec),
                                  NULL, 0, NULL, 0)) < 0) {
        errf(s->err, s->errlen, "writing: %s", strerror(-rc));
        return rc;
    }
    report(s, left, bytes0, t);
    atomic_store(&s->cursor, 0);
    atomic_store(&s->done, 0);
    atomic_store(&s->stop, false);
    atomic_store(&s->failed, 0);
    s->left = left;
    s->bytes0 = bytes0;
    s->rt0 = t;
    for (unsigned i = 0; i < s->nlanes; i++) {
        memset(&s->lanes[i].r, 0, sizeof(s->lanes[i].r));
        s->lanes[i].rc = 0;
        s->lanes[i].err[0] = 0;
    }
    for (; started < s->nlanes; started++) {
        int e = pthread_create(&s->lanes[started].th, NULL, lane_thread,
                               &s->lanes[started]);
        if (e) {
            struct lane *l = &s->lanes[started];

            errf(l->err, sizeof(l->err), "starting a sender thread: %s",
                 strerror(e));
            l->rc = -e;
            atomic_store(&s->stop, true);
            f = 0;
            atomic_compare_exchange_strong(&s->failed, &f, (int)started + 1);
            break;
        }
    }
    lane_thread(&s->lanes[0]);
    for (unsigned i = 1; i < started; i++)
        pthread_join(s->lanes[i].th, NULL);
    for (unsigned i = 0; i < s->nlanes; i++) {
        const struct migrate_round *lr = &s->lanes[i].r;

        r->pages += lr->pages;
        r->zero += lr->zero;
        r->deferred += lr->deferred;
        s->st->pages += lr->pages;
        s->st->zero_pages += lr->zero;
        s->st->deferred += lr->deferred;
    }
    if ((f = atomic_load(&s->failed)) > 0) {
        struct lane *l = &s->lanes[f - 1];

        errf(s->err, s->errlen, "%s", l->err[0] ? l->err : strerror(-l->rc));
        return l->rc;
    }
    r->ns = now_ns() - t;
    r->bytes = wire_bytes(s) - bytes0;
    s->st->rounds = s->round;
    return 0;
}

/* Pause at a clean point (FINAL's entry). */
static int pause_quiesced(struct save *s)
{
    for (unsigned i = 0; i < MIGRATE_QUIESCE_TRIES; i++) {
        int rc = s->src->pause(s->src->arg);

        s->st->quiesce_tries++;
        if (rc != -EAGAIN)
            return rc;
        nanosleep(&(struct timespec){0, 200000}, NULL);
    }
    return -EAGAIN;
}

static int emit_device(void *ctx, const struct stream_device *dv,
                       const void *state, uint32_t len)
{
    struct save *s = ctx;
    int rc = stream_write_record(s->w, STREAM_REC_DEVICE, dv, sizeof(*dv),
                                 state, len, NULL, 0);

    if (rc < 0)
        errf(s->err, s->errlen, "writing: %s", strerror(-rc));
    else
        s->st->devices++;
    return rc;
}

/* HVM: the platform, then each vCPU. */
static int write_hvm_tail(struct save *s)
{
    struct stream_hvm_platform *p = calloc(1, sizeof(*p));
    struct stream_hvm_vcpu *v = calloc(1, sizeof(*v));
    int rc;

    if (!p || !v) {
        rc = -ENOMEM;
        goto out;
    }
    if ((rc = s->src->hvm_platform(s->src->arg, p)) < 0) {
        errf(s->err, s->errlen, "the platform's state: %s", strerror(-rc));
        goto out;
    }
    if ((rc = stream_write_record(s->w, STREAM_REC_HVM_PLATFORM, p,
                                  sizeof(*p), NULL, 0, NULL, 0)) < 0) {
        errf(s->err, s->errlen, "writing: %s", strerror(-rc));
        goto out;
    }
    for (unsigned i = 0; i < s->src->dom.nr_vcpus; i++) {
        memset(v, 0, sizeof(*v));
        if ((rc = s->src->hvm_vcpu(s->src->arg, i, v)) < 0) {
            errf(s->err, s->errlen, "vCPU %u: %s", i, strerror(-rc));
            goto out;
        }
        v->id = i;
        if ((rc = stream_write_record(s->w, STREAM_REC_HVM_VCPU, v,
                                      sizeof(*v), NULL, 0, NULL, 0)) < 0) {
            errf(s->err, s->errlen, "writing: %s", strerror(-rc));
            goto out;
        }
    }
out:
    free(p);
    free(v);
    return rc;
}

static int write_tail(struct save *s)
{
    uint8_t si[4096];
    int rc;

    if (s->src->dom.kind == STREAM_DOMAIN_HVM) {
        if ((rc = write_hvm_tail(s)) < 0)
            return rc;
        goto devices;
    }
    if ((rc = s->src->shared_info(s->src->arg, si)) < 0 ||
        (rc = stream_write_record(s->w, STREAM_REC_SHARED_INFO, si, 4096,
                                  NULL, 0, NULL, 0)) < 0) {
        errf(s->err, s->errlen, "shared info: %s", strerror(-rc));
        return rc;
    }
    for (unsigned i = 0; i < s->src->dom.nr_vcpus; i++) {
        struct stream_pv_vcpu v;
        uint64_t *bases[2] = {&v.base_pfn, &v.user_base_pfn};

        memset(&v, 0, sizeof(v));
        if ((rc = s->src->vcpu(s->src->arg, i, &v)) < 0) {
            errf(s->err, s->errlen, "vCPU %u: %s", i, strerror(-rc));
            return rc;
        }
        v.id = i;
        for (unsigned k = 0; k < 2; k++) {
            uint64_t pfn;

            if (*bases[k] == STREAM_PFN_NONE)
                continue;
            if (s->src->mfn_to_pfn(s->src->arg, *bases[k], &pfn) < 0 ||
                pfn == STREAM_PFN_SHARED_INFO) {
                errf(s->err, s->errlen, "vCPU %u: base pointer mfn %#llx "
                                        "outside the domain",
                     i, (unsigned long long)*bases[k]);
                return -ERANGE;
            }
            *bases[k] = pfn;
        }
        if ((rc = stream_write_record(s->w, STREAM_REC_PV_VCPU, &v, sizeof(v),
                                      NULL, 0, NULL, 0)) < 0) {
            errf(s->err, s->errlen, "writing: %s", strerror(-rc));
            return rc;
        }
    }
devices:
    /* DEVICE records: the device models' state, taken while paused */
    if (s->src->devices &&
        (rc = s->src->devices(s->src->arg, emit_device, s, s->err,
                              s->errlen)) < 0)
        return rc;
    if ((rc = stream_write_record(s->w, STREAM_REC_END, NULL, 0, NULL, 0, NULL,
                                  0)) < 0) {
        errf(s->err, s->errlen, "writing: %s", strerror(-rc));
        return rc;
    }
    return 0;
}

/* FINAL: mark what changed type since it was last sent (or was never
 * sent), plus the deferred pages. */
static int mark_final(struct save *s)
{
    uint64_t pfns[256], mfns[256];
    uint32_t info[256];
    unsigned n = 0;
    int rc;

    for (uint64_t w = 0; w < (s->nr + 63) / 64; w++)
        s->todo[w] |= s->deferred[w];
    memset(s->deferred, 0, (s->nr + 63) / 64 * 8);
    for (uint64_t pfn = 0; pfn <= s->nr; pfn++) {
        uint64_t mfn;

        if (pfn < s->nr) {
            if (bitmap_test(s->todo, pfn))
                continue;
            if (s->src->pfn_to_mfn(s->src->arg, pfn, &mfn) < 0) {
                if (s->sent_type[pfn] != STREAM_TYPE_XTAB)
                    bitmap_set(s->todo, pfn);
                continue;
            }
            pfns[n] = pfn;
            mfns[n++] = mfn;
        }
        if (n == 256 || (pfn == s->nr && n)) {
            if ((rc = s->src->types(s->src->arg, mfns, n, info)) < 0)
                return rc;
            for (unsigned i = 0; i < n; i++)
                if (s->sent_type[pfns[i]] != ((info[i] >> 28) & 0xf) &&
                    (!s->o->test_no_type_resend ||
                     s->sent_type[pfns[i]] == 0xff))
                    bitmap_set(s->todo, pfns[i]);
            n = 0;
        }
    }
    return 0;
}

/* A parallel stream: CHANNELS on the main connection, each extra
 * connection's header and CHANNEL, all naming the stream by one token. */
static int open_lanes(struct save *s)
{
    struct stream_channels cs = {.nr = s->nlanes};
    int rc;

    if (getrandom(cs.token, sizeof(cs.token), 0) != sizeof(cs.token)) {
        uint64_t t = now_ns() ^ ((uint64_t)(uintptr_t)s << 17);
        memcpy(cs.token, &t, 8);
        memcpy(cs.token + 8, &s->t0, 8);
    }
    cs.token[0] |= 1; /* never all zero */
    if ((rc = stream_write_record(s->w, STREAM_REC_CHANNELS, &cs, sizeof(cs),
                                  NULL, 0, NULL, 0)) < 0) {
        errf(s->err, s->errlen, "writing: %s", strerror(-rc));
        return rc;
    }
    for (unsigned i = 1; i < s->nlanes; i++) {
        struct stream_channel c = {.index = i, .nr = s->nlanes};
        struct stream_writer *w = &s->lanes[i].w;

        memcpy(c.token, cs.token, sizeof(c.token));
        if ((rc = stream_write_header(w, STREAM_IMG_CHANNEL)) < 0 ||
            (rc = stream_write_record(w, STREAM_REC_CHANNEL, &c, sizeof(c),
                                      NULL, 0, NULL, 0)) < 0) {
            errf(s->err, s->errlen, "writing to connection %u: %s", i,
                 strerror(-rc));
            return rc;
        }
    }
    return 0;
}

static int run(struct save *s)
{
    const struct migrate_source *src = s->src;
    unsigned max_rounds = s->o->max_rounds ? s->o->max_rounds : 8;
    uint64_t target_ms = s->o->downtime_ms ? s->o->downtime_ms : 300;
    uint64_t nframes = (src->dom.nr_pages + 511) / 512;
    uint64_t *p2mf;
    uint64_t tp = 0;
    int rc;

    if (max_rounds > MIGRATE_MAX_ROUNDS)
        max_rounds = MIGRATE_MAX_ROUNDS;
    /* SETUP */
    if ((rc = stream_write_header(
             s->w, (s->o->live ? STREAM_IMG_LIVE : 0) |
                       (s->nlanes > 1 ? STREAM_IMG_PARALLEL : 0))) < 0 ||
        (rc = stream_write_record(s->w, STREAM_REC_DOMAIN, &src->dom,
                                  sizeof(src->dom), NULL, 0, NULL, 0)) < 0) {
        errf(s->err, s->errlen, "writing: %s", strerror(-rc));
        return rc;
    }
    if (s->nlanes > 1 && (rc = open_lanes(s)) < 0)
        return rc;
    p2mf = malloc(8 * nframes);
    if (!p2mf)
        return -ENOMEM;
    if (src->dom.kind == STREAM_DOMAIN_HVM) {
        free(p2mf); /* an HVM guest's p2m is memvisor's, not in the stream */
        goto p2m_done;
    }
    rc = src->p2m_frames(src->arg, p2mf, nframes);
    if (rc < 0)
        errf(s->err, s->errlen, "the guest's p2m list: %s", strerror(-rc));
    else if ((rc = stream_write_record(s->w, STREAM_REC_PV_P2M_FRAMES,
                                       &nframes, 8, p2mf, 8 * nframes, NULL,
                                       0)) < 0)
        errf(s->err, s->errlen, "writing: %s", strerror(-rc));
    free(p2mf);
    if (rc < 0)
        return rc;
p2m_done:
    bitmap_set_range(s->todo, 0, s->nr);

    if (s->o->live) {
        /* the first harvest empties what was logged before we began */
        uint64_t *scratch = bitmap_alloc(s->nr);
        if (!scratch)
            return -ENOMEM;
        rc = src->harvest(src->arg, scratch);
        bitmap_free(scratch);
        if (rc < 0) {
            errf(s->err, s->errlen, "dirty log: %s", strerror(-rc));
            return rc;
        }
        s->state = SAVE_LIVE;
        for (s->round = 1;; s->round++) {
            struct migrate_round *r = &s->st->round[s->round - 1];
            uint64_t left, est_ms;

            if ((rc = send_round(s)) < 0)
                return rc;
            if (r->ns)
                s->st->bandwidth = r->bytes * 1000000000ULL / r->ns;
            if ((rc = src->harvest(src->arg, s->todo)) < 0) {
                errf(s->err, s->errlen, "dirty log: %s", strerror(-rc));
                return rc;
            }
            for (uint64_t w = 0; w < (s->nr + 63) / 64; w++)
                s->todo[w] |= s->deferred[w];
            memset(s->deferred, 0, (s->nr + 63) / 64 * 8);
            left = bitmap_weight(s->todo, s->nr);
            r->dirtied = left;
            est_ms = s->st->bandwidth
                         ? left * 4096 * 1000 / s->st->bandwidth
                         : UINT64_MAX;
            bool last = est_ms <= target_ms || s->round >= max_rounds;

            if (s->o->test_between_rounds)
                s->o->test_between_rounds(s->o->test_arg, s->round, last);
            if (last)
                break;
        }
        s->round++;
    } else {
        s->round = 1;
    }

    /* FINAL */
    if ((rc = pause_quiesced(s)) < 0) {
        errf(s->err, s->errlen, rc == -EAGAIN
                                    ? "the domain never reached a clean pause"
                                    : "pausing: %s",
             strerror(-rc));
        return rc;
    }
    tp = now_ns();
    s->st->paused_at_ns = tp;
    s->state = SAVE_FINAL;
    /* the device models too, before the harvest: what they wrote so far is
     * in the dirty log, and they write nothing after it */
    if (src->devices_quiesce && !s->o->test_no_device_quiesce) {
        if ((rc = src->devices_quiesce(src->arg, true, s->err, s->errlen)) <
            0)
            goto resume;
        s->st->devices_quiesced = (unsigned)rc;
        s->devs_quiesced = true;
    }
    if ((rc = src->harvest(src->arg, s->todo)) < 0) {
        errf(s->err, s->errlen, "dirty log: %s", strerror(-rc));
        goto resume;
    }
    if ((rc = mark_final(s)) < 0) {
        errf(s->err, s->errlen, "page types: %s", strerror(-rc));
        goto resume;
    }
    if ((rc = send_round(s)) < 0)
        goto resume;
    if ((rc = write_tail(s)) < 0)
        goto resume;
    s->state = SAVE_DONE;
    s->st->downtime_ns = now_ns() - tp;
    if (s->o->leave_paused)
        return 0;
resume:
    if (s->devs_quiesced)
        (void)!src->devices_quiesce(src->arg, false, NULL, 0);
    src->resume(src->arg);
    return rc;
}

int migrate_save(const struct migrate_source *src, struct stream_chan *chan,
                 const struct migrate_save_opts *opts,
                 struct migrate_stats *stats, char *err, size_t errlen)
{
    struct save *s = calloc(1, sizeof(*s));
    int rc = -ENOMEM;

    memset(stats, 0, sizeof(*stats));
    if (!s)
        return -ENOMEM;
    s->src = src;
    s->o = opts;
    s->st = stats;
    s->err = err;
    s->errlen = errlen;
    s->nr = src->dom.nr_pages;
    s->t0 = now_ns();
    s->state = SAVE_SETUP;
    if (err && errlen)
        err[0] = '\0';
    s->todo = bitmap_alloc(s->nr);
    s->deferred = bitmap_alloc(s->nr);
    s->sent_type = malloc(s->nr);
    s->nlanes = 1 + opts->nr_extra;
    if (opts->nr_extra >= STREAM_CHANNELS_MAX) {
        errf(err, errlen, "%u connections: at most %u", s->nlanes,
             STREAM_CHANNELS_MAX);
        rc = -EINVAL;
        goto out;
    }
    s->lanes = calloc(s->nlanes, sizeof(*s->lanes));
    if (!s->todo || !s->deferred || !s->sent_type || !s->lanes)
        goto out;
    memset(s->sent_type, 0xff, s->nr);
    stats->mem_bytes = 2 * ((s->nr + 63) / 64 * 8) + s->nr + sizeof(*s);
    for (unsigned i = 0; i < s->nlanes; i++) {
        struct lane *l = &s->lanes[i];

        l->s = s;
        l->idx = i;
        l->data = malloc(4096ULL * STREAM_PAGES_MAX);
        if (!l->data) {
            rc = -ENOMEM;
            goto fini;
        }
        if ((rc = stream_writer_init(&l->w, i ? opts->extra[i - 1] : chan,
                                     opts->zstd)) < 0) {
            errf(err, errlen, "zstd: %s", strerror(-rc));
            goto fini;
        }
        stats->mem_bytes += 4096ULL * STREAM_PAGES_MAX + sizeof(*l) +
                            l->w.zcap;
    }
    s->w = &s->lanes[0].w;
    rc = run(s);
    if (rc < 0)
        s->state = SAVE_FAILED;
    stats->bytes = wire_bytes(s);
    for (unsigned i = 0; i < s->nlanes; i++)
        stats->raw_bytes += s->lanes[i].w.raw_bytes;
    stats->connections = s->nlanes;
    stats->total_ns = now_ns() - s->t0;
fini:
    for (unsigned i = 0; i < s->nlanes; i++) {
        stream_writer_fini(&s->lanes[i].w);
        free(s->lanes[i].data);
    }
out:
    bitmap_free(s->todo);
    bitmap_free(s->deferred);
    free(s->sent_type);
    free(s->lanes);
    free(s);
    return rc;
}

int migrate_stats_json(const struct migrate_stats *s, char *buf, size_t len)
{
    size_t n = 0;
    int k;

#define PUT(...)                                                               \
    do {                                                                       \
        k = snprintf(buf + n, n < len ? len - n : 0, __VA_ARGS__);             \
        if (k < 0)                                                             \
            return -EINVAL;                                                    \
        n += (size_t)k;                                                        \
    } while (0)
    PUT("{\"total_ms\":%.3f,\"downtime_ms\":%.3f,\"bytes\":%llu,"
        "\"raw_bytes\":%llu,\"pages\":%llu,\"zero_pages\":%llu,"
        "\"deferred\":%llu,\"rounds\":%u,\"bandwidth\":%llu,"
        "\"quiesce_tries\":%llu,\"mem_bytes\":%llu,\"devices\":%u,"
        "\"connections\":%u,\"devices_quiesced\":%u,\"round\":[",
        s->total_ns / 1e6, s->downtime_ns / 1e6, (unsigned long long)s->bytes,
        (unsigned long long)s->raw_bytes, (unsigned long long)s->pages,
        (unsigned long long)s->zero_pages, (unsigned long long)s->deferred,
        s->rounds, (unsigned long long)s->bandwidth,
        (unsigned long long)s->quiesce_tries,
        (unsigned long long)s->mem_bytes, s->devices,
        s->connections ? s->connections : 1, s->devices_quiesced);
    for (unsigned i = 0; i < s->rounds && i <= MIGRATE_MAX_ROUNDS; i++) {
        const struct migrate_round *r = &s->round[i];
        PUT("%s{\"round\":%u,\"final\":%s,\"pages\":%llu,\"zero\":%llu,"
            "\"deferred\":%llu,\"dirtied\":%llu,\"bytes\":%llu,"
            "\"start_ms\":%.3f,\"ms\":%.3f}",
            i ? "," : "", r->round, r->final ? "true" : "false",
            (unsigned long long)r->pages, (unsigned long long)r->zero,
            (unsigned long long)r->deferred, (unsigned long long)r->dirtied,
            (unsigned long long)r->bytes, r->start_ns / 1e6, r->ns / 1e6);
    }
    PUT("]}");
#undef PUT
    return n < len ? (int)n : -ENOSPC;
}
