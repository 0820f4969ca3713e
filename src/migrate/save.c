/*
 * save.c - the save state machine (migrate.h): live rounds, the final
 * round, normalisation.
 */
#include <errno.h>
#include <stddef.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

struct save {
    const struct migrate_source *src;
    const struct migrate_save_opts *o;
    struct stream_writer w;
    struct migrate_stats *st;
    enum save_state state; /* the round kind is decided here alone */
    unsigned round;
    uint64_t nr;
    uint64_t *todo;     /* pfns to send this round */
    uint64_t *deferred; /* pfns deferred to a later round */
    uint8_t *sent_type; /* type last sent (0xff: never) */
    uint64_t t0;
    /* one batch */
    uint64_t pfns[STREAM_PAGES_MAX], mfns[STREAM_PAGES_MAX];
    uint64_t words[STREAM_PAGES_MAX];
    uint32_t info[STREAM_PAGES_MAX];
    uint8_t *data; /* STREAM_PAGES_MAX pages */
    unsigned n;
    char *err;
    size_t errlen;
};

/*
 * Normalise one page-table page of level `level` from src into dst: every
 * present entry's frame becomes its pfn; the hypervisor's L4 slots become
 * zero.  -ERANGE (with the entry in err) if an entry names a frame outside
 * the domain's pseudo-physical map.
 */
static int normalise(struct save *s, uint64_t pfn, unsigned level,
                     const uint64_t *src, uint64_t *dst)
{
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
            errf(s->err, s->errlen,
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
static int normalise_start_info(struct save *s, uint64_t *si)
{
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
            errf(s->err, s->errlen,
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

static void defer(struct save *s, uint64_t pfn, struct migrate_round *r)
{
    bitmap_set(s->deferred, pfn);
    r->deferred++;
    s->st->deferred++;
}

/* Send the batch of s->n pfns as one PAGE_DATA record. */
static int flush_batch(struct save *s, struct migrate_round *r)
{
    bool final = s->state == SAVE_FINAL;
    unsigned nw = 0, nd = 0;
    int rc;

    if (s->n == 0)
        return 0;
    /* frames first: a pfn without one is deferred (live) or XTAB (final) */
    {
        uint64_t m[STREAM_PAGES_MAX];
        unsigned k = 0;
        for (unsigned i = 0; i < s->n; i++)
            if (s->mfns[i] != MIGRATE_NO_MFN)
                m[k++] = s->mfns[i];
        if (k && (rc = s->src->types(s->src->arg, m, k, s->info)) < 0) {
            errf(s->err, s->errlen, "page types: %s", strerror(-rc));
            return rc;
        }
        /* spread info over the batch (XTAB for those with no frame) */
        for (unsigned i = s->n; i-- > 0;) {
            if (s->mfns[i] == MIGRATE_NO_MFN)
                continue;
            s->info[i] = s->info[--k];
        }
    }
    for (unsigned i = 0; i < s->n; i++) {
        uint64_t pfn = s->pfns[i];
        unsigned t, level;
        uint64_t *dst = (uint64_t *)(void *)(s->data + 4096ULL * nd);
        const uint64_t *pg;

        if (s->mfns[i] == MIGRATE_NO_MFN) {
            if (!final) {
                defer(s, pfn, r);
                continue;
            }
            s->words[nw++] = ((uint64_t)STREAM_TYPE_XTAB << 60) | pfn;
            s->sent_type[pfn] = STREAM_TYPE_XTAB;
            continue;
        }
        t = (s->info[i] >> 28) & 0xf;
        if (t == 0xf || t == 0xd || t == 0xe) { /* XTAB BROKEN XALLOC */
            if (!final) {
                defer(s, pfn, r);
                continue;
            }
            if (t != 0xf) {
                errf(s->err, s->errlen, "pfn %#llx: frame type %#x",
                     (unsigned long long)pfn, t);
                return -ERANGE;
            }
            s->words[nw++] = ((uint64_t)STREAM_TYPE_XTAB << 60) | pfn;
            s->sent_type[pfn] = STREAM_TYPE_XTAB;
            continue;
        }
        level = t & STREAM_TYPE_LEVEL_MASK;
        if (s->src->hole && s->src->hole(s->src->arg, s->mfns[i])) {
            s->words[nw++] = ((uint64_t)t << 60) | STREAM_PFN_ZERO | pfn;
            r->zero++;
            s->st->zero_pages++;
            s->sent_type[pfn] = (uint8_t)t;
            continue;
        }
        pg = s->src->page(s->src->arg, s->mfns[i]);
        if (level >= 1 && level <= 4) {
            rc = normalise(s, pfn, level, pg, dst);
            if (rc == -ERANGE && (!final || s->o->test_no_final_rule)) {
                defer(s, pfn, r);
                continue;
            }
            if (rc < 0)
                return rc; /* the final-round rule */
        } else {
            memcpy(dst, pg, 4096);
            if (s->src->dom.kind == STREAM_DOMAIN_PV64 &&
                pfn == s->src->dom.start_info_pfn &&
                (rc = normalise_start_info(s, dst)) < 0) {
                if (!final || s->o->test_no_final_rule) {
                    defer(s, pfn, r);
                    continue;
                }
                return rc;
            }
        }
        if (page_zero(dst)) {
            s->words[nw++] = ((uint64_t)t << 60) | STREAM_PFN_ZERO | pfn;
            r->zero++;
            s->st->zero_pages++;
        } else {
            s->words[nw++] = ((uint64_t)t << 60) | pfn;
            nd++;
        }
        s->sent_type[pfn] = (uint8_t)t;
    }
    s->n = 0;
    if (nw == 0)
        return 0;
    {
        struct stream_page_data h = {.count = nw};
        rc = stream_write_record(&s->w, STREAM_REC_PAGE_DATA, &h, sizeof(h),
                                 s->words, 8ULL * nw, s->data, 4096ULL * nd);
    }
    if (rc < 0) {
        errf(s->err, s->errlen, "writing page data: %s", strerror(-rc));
        return rc;
    }
    r->pages += nw;
    s->st->pages += nw;
    return 0;
}

static int add_page(struct save *s, uint64_t pfn, struct migrate_round *r)
{
    uint64_t mfn;

    if (s->src->pfn_to_mfn(s->src->arg, pfn, &mfn) < 0)
        mfn = MIGRATE_NO_MFN;
    s->pfns[s->n] = pfn;
    s->mfns[s->n] = mfn;
    if (++s->n == STREAM_PAGES_MAX)
        return flush_batch(s, r);
    return 0;
}

/* Progress: the throughput of the round so far (of the last round at its
 * start), and the downtime the pages left would cost at that rate. */
static void report(struct save *s, uint64_t left, uint64_t bytes0,
                   uint64_t t0)
{
    uint64_t dt = now_ns() - t0, bps = s->st->bandwidth;
    struct migrate_progress p = {
        .round = s->round,
        .final = s->state == SAVE_FINAL,
        .pages_left = left,
    };

    if (dt > 10000000ULL && s->w.chan->bytes > bytes0)
        bps = (s->w.chan->bytes - bytes0) * 1000000000ULL / dt;
    p.bytes_per_s = bps;
    p.est_downtime_ms = bps ? left * 4096 * 1000 / bps : 0;
    if (s->o->progress)
        s->o->progress(s->o->progress_arg, &p);
}

/* One round: send every pfn marked in todo (and clear it). */
static int send_round(struct save *s)
{
    struct migrate_round *r = &s->st->round[s->round - 1];
    uint64_t bytes0 = s->w.chan->bytes, t = now_ns();
    uint64_t left = bitmap_weight(s->todo, s->nr), done = 0;
    struct stream_round rec;
    int rc;

    memset(r, 0, sizeof(*r));
    r->round = s->round;
    r->final = s->state == SAVE_FINAL;
    r->start_ns = t - s->t0;
    rec = (struct stream_round){s->round, r->final ? STREAM_ROUND_FINAL : 0,
                                left};
    if ((rc = stream_write_record(&s->w, STREAM_REC_ROUND, &rec, sizeof(rec),
                                  NULL, 0, NULL, 0)) < 0) {
        errf(s->err, s->errlen, "writing: %s", strerror(-rc));
        return rc;
    }
    report(s, left, bytes0, t);
    for (uint64_t w = 0; w < (s->nr + 63) / 64; w++) {
        uint64_t bits = s->todo[w];

        s->todo[w] = 0;
        while (bits) {
            uint64_t pfn = w * 64 + (uint64_t)__builtin_ctzll(bits);

            bits &= bits - 1;
            if ((rc = add_page(s, pfn, r)) < 0)
                return rc;
            if ((++done & 0xffff) == 0)
                report(s, left - done, bytes0, t);
        }
    }
    if ((rc = flush_batch(s, r)) < 0)
        return rc;
    r->ns = now_ns() - t;
    r->bytes = s->w.chan->bytes - bytes0;
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
    int rc = stream_write_record(&s->w, STREAM_REC_DEVICE, dv, sizeof(*dv),
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
    if ((rc = stream_write_record(&s->w, STREAM_REC_HVM_PLATFORM, p,
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
        if ((rc = stream_write_record(&s->w, STREAM_REC_HVM_VCPU, v,
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
        (rc = stream_write_record(&s->w, STREAM_REC_SHARED_INFO, si, 4096,
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
        if ((rc = stream_write_record(&s->w, STREAM_REC_PV_VCPU, &v, sizeof(v),
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
    if ((rc = stream_write_record(&s->w, STREAM_REC_END, NULL, 0, NULL, 0, NULL,
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
    if ((rc = stream_write_header(&s->w, s->o->live ? STREAM_IMG_LIVE : 0)) <
            0 ||
        (rc = stream_write_record(&s->w, STREAM_REC_DOMAIN, &src->dom,
                                  sizeof(src->dom), NULL, 0, NULL, 0)) < 0) {
        errf(s->err, s->errlen, "writing: %s", strerror(-rc));
        return rc;
    }
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
    else if ((rc = stream_write_record(&s->w, STREAM_REC_PV_P2M_FRAMES,
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
    s->data = malloc(4096ULL * STREAM_PAGES_MAX);
    if (!s->todo || !s->deferred || !s->sent_type || !s->data)
        goto out;
    memset(s->sent_type, 0xff, s->nr);
    stats->mem_bytes = 2 * ((s->nr + 63) / 64 * 8) + s->nr +
                       4096ULL * STREAM_PAGES_MAX + sizeof(*s);
    if ((rc = stream_writer_init(&s->w, chan, opts->zstd)) < 0) {
        errf(err, errlen, "zstd: %s", strerror(-rc));
        goto out;
    }
    stats->mem_bytes += s->w.zcap;
    rc = run(s);
    if (rc < 0)
        s->state = SAVE_FAILED;
    stats->bytes = chan->bytes;
    stats->raw_bytes = s->w.raw_bytes;
    stats->total_ns = now_ns() - s->t0;
    stream_writer_fini(&s->w);
out:
    bitmap_free(s->todo);
    bitmap_free(s->deferred);
    free(s->sent_type);
    free(s->data);
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
        "\"round\":[",
        s->total_ns / 1e6, s->downtime_ns / 1e6, (unsigned long long)s->bytes,
        (unsigned long long)s->raw_bytes, (unsigned long long)s->pages,
        (unsigned long long)s->zero_pages, (unsigned long long)s->deferred,
        s->rounds, (unsigned long long)s->bandwidth,
        (unsigned long long)s->quiesce_tries,
        (unsigned long long)s->mem_bytes, s->devices);
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
