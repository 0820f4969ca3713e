/*
 * restore.c - building a domain from a stream (migrate.h): frames
 * populated on demand, page tables localised as they arrive, then
 * finish(): m2p, the guest's p2m list, pins, vCPUs.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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

struct restore {
    const struct migrate_target *t;
    struct stream_reader r;
    struct migrate_restore_stats *st;
    uint64_t nr;
    uint64_t *p2m;
    uint64_t *written; /* pfns whose frame holds data (others: zero) */
    uint8_t *types;
    uint64_t *p2m_frames;
    uint64_t nr_p2m_frames;
    uint8_t shared_info[4096];
    struct stream_pv_vcpu *vcpus;
    struct stream_hvm_platform *hvm_platform; /* HVM: once arrived */
    struct stream_hvm_vcpu *hvm_vcpus;
    bool have_platform;
    char *err;
    size_t errlen;
};

static int frame_of(struct restore *s, uint64_t pfn, uint64_t *mfn)
{
    int rc;

    if (s->p2m[pfn] != MIGRATE_NO_MFN) {
        *mfn = s->p2m[pfn];
        return 0;
    }
    if ((rc = s->t->populate(s->t->arg, pfn, mfn)) < 0) {
        errf(s->err, s->errlen, "pfn %#llx: no frame: %s",
             (unsigned long long)pfn, strerror(-rc));
        return rc;
    }
    s->p2m[pfn] = *mfn;
    return 0;
}

/* Localise a normalised page-table page in place: pfn -> this side's mfn,
 * populating pfns that have not arrived yet. */
static int localise(struct restore *s, uint64_t pfn, unsigned level,
                    uint64_t *pt)
{
    for (unsigned i = 0; i < 512; i++) {
        uint64_t e = pt[i], p, mfn;
        int rc;

        if (!(e & PTE_P))
            continue;
        p = (e & PTE_ADDR_MASK) >> 12;
        if (p == STREAM_PFN_SHARED_INFO) {
            mfn = s->t->shared_info_mfn(s->t->arg);
        } else if (p >= s->nr) {
            errf(s->err, s->errlen,
                 "pfn %#llx (L%u) entry %u names pfn %#llx outside the domain",
                 (unsigned long long)pfn, level, i, (unsigned long long)p);
            return -ERANGE;
        } else {
            if (s->p2m[p] == MIGRATE_NO_MFN)
                s->st->populated_early++;
            if ((rc = frame_of(s, p, &mfn)) < 0)
                return rc;
        }
        pt[i] = (e & ~PTE_ADDR_MASK) | (mfn << 12);
    }
    s->st->localised_tables++;
    return 0;
}

static int page_data(struct restore *s)
{
    struct stream_pages p;
    const uint8_t *data;
    int rc;

    if ((rc = stream_parse_pages(s->r.body, s->r.len, s->nr, &p, s->err,
                                 s->errlen)) < 0)
        return rc;
    data = p.data;
    for (uint32_t i = 0; i < p.count; i++) {
        uint64_t w = stream_word(&p, i), pfn = w & STREAM_PFN_MASK, mfn;
        unsigned t = stream_word_type(w), level = t & STREAM_TYPE_LEVEL_MASK;
        uint64_t *dst;

        if (s->r.dom.kind == STREAM_DOMAIN_HVM && level >= 1 && level <= 4) {
            errf(s->err, s->errlen, "pfn %#llx: a page table in an HVM stream",
                 (unsigned long long)pfn);
            return -EPROTO;
        }
        s->types[pfn] = (uint8_t)t;
        s->st->pages++;
        if (t == STREAM_TYPE_XTAB)
            continue; /* no page here (the frame, if any, stays zeroed) */
        if ((rc = frame_of(s, pfn, &mfn)) < 0)
            return rc;
        dst = s->t->page(s->t->arg, mfn);
        if (w & STREAM_PFN_ZERO) {
            /* a new frame is scrubbed already: touch it only to undo data
             * an earlier round wrote */
            if (s->written[pfn / 64] & (1ULL << (pfn % 64)))
                memset(dst, 0, 4096);
            s->written[pfn / 64] &= ~(1ULL << (pfn % 64));
            continue;
        }
        s->written[pfn / 64] |= 1ULL << (pfn % 64);
        memcpy(dst, data, 4096);
        data += 4096;
        if (level >= 1 && level <= 4 &&
            (rc = localise(s, pfn, level, dst)) < 0)
            return rc;
    }
    return 0;
}

static int run(struct restore *s)
{
    const struct migrate_target *t = s->t;
    bool created = false;
    int rc;

    if ((rc = stream_read_header(&s->r, s->err, s->errlen)) < 0)
        return rc;
    while (s->r.phase != STREAM_PH_DONE) {
        if ((rc = stream_read_record(&s->r, s->err, s->errlen)) < 0)
            return rc;
        s->st->records++;
        switch (s->r.type) {
        case STREAM_REC_DOMAIN:
            s->nr = s->r.dom.nr_pages;
            s->p2m = malloc(8 * s->nr);
            s->types = malloc(s->nr);
            s->written = calloc((s->nr + 63) / 64, 8);
            s->vcpus = calloc(s->r.dom.nr_vcpus, sizeof(*s->vcpus));
            if (!s->p2m || !s->types || !s->vcpus || !s->written)
                return -ENOMEM;
            if (s->r.dom.kind == STREAM_DOMAIN_HVM) {
                s->hvm_platform = calloc(1, sizeof(*s->hvm_platform));
                s->hvm_vcpus = calloc(s->r.dom.nr_vcpus, sizeof(*s->hvm_vcpus));
                if (!s->hvm_platform || !s->hvm_vcpus)
                    return -ENOMEM;
            }
            s->st->mem_bytes = 8 * s->nr + s->nr + (s->nr + 63) / 64 * 8 +
                               s->r.dom.nr_vcpus * sizeof(*s->vcpus) +
                               2ULL * (STREAM_REC_MAX + 8);
            memset(s->p2m, 0xff, 8 * s->nr);
            memset(s->types, STREAM_TYPE_XTAB, s->nr);
            if ((rc = t->create(t->arg, &s->r.dom, s->err, s->errlen)) < 0)
                return rc;
            created = true;
            break;
        case STREAM_REC_PV_P2M_FRAMES: {
            const uint8_t *pf;
            if ((rc = stream_parse_p2m_frames(s->r.body, s->r.len, s->nr,
                                              &s->nr_p2m_frames, &pf, s->err,
                                              s->errlen)) < 0)
                return rc;
            s->p2m_frames = malloc(8 * s->nr_p2m_frames);
            if (!s->p2m_frames)
                return -ENOMEM;
            memcpy(s->p2m_frames, pf, 8 * s->nr_p2m_frames);
            break;
        }
        case STREAM_REC_PAGE_DATA:
            if ((rc = page_data(s)) < 0)
                return rc;
            break;
        case STREAM_REC_SHARED_INFO:
            memcpy(s->shared_info, s->r.body, 4096);
            break;
        case STREAM_REC_PV_VCPU: {
            struct stream_pv_vcpu v;
            if ((rc = stream_parse_vcpu(s->r.body, s->r.len, &s->r.dom, &v,
                                        s->err, s->errlen)) < 0)
                return rc;
            s->vcpus[v.id] = v;
            break;
        }
        case STREAM_REC_HVM_PLATFORM:
            if ((rc = stream_parse_hvm_platform(s->r.body, s->r.len,
                                                &s->r.dom, s->hvm_platform,
                                                s->err, s->errlen)) < 0)
                return rc;
            s->have_platform = true;
            break;
        case STREAM_REC_HVM_VCPU: {
            uint32_t id;

            memcpy(&id, s->r.body, 4); /* checked below and by the reader */
            if (id >= s->r.dom.nr_vcpus)
                return -EPROTO;
            if ((rc = stream_parse_hvm_vcpu(s->r.body, s->r.len, &s->r.dom,
                                            &s->hvm_vcpus[id], s->err,
                                            s->errlen)) < 0)
                return rc;
            break;
        }
        case STREAM_REC_DEVICE: {
            struct stream_device dv;
            const uint8_t *state;
            uint32_t len;
            if ((rc = stream_parse_device(s->r.body, s->r.len, &dv, &state,
                                          &len, s->err, s->errlen)) < 0)
                return rc;
            if (!t->device) {
                errf(s->err, s->errlen,
                     "device-model state (kind %u, instance %u): no device "
                     "model to restore it into",
                     dv.kind, dv.instance);
                return -ENOTSUP;
            }
            if ((rc = t->device(t->arg, &dv, state, len, s->err,
                                s->errlen)) < 0)
                return rc;
            s->st->devices++;
            break;
        }
        default:
            break; /* ROUND, END */
        }
    }
    if (!created)
        return -EPROTO; /* unreachable: the reader demands DOMAIN first */
    if (s->r.dom.kind == STREAM_DOMAIN_HVM) {
        struct migrate_restored st = {
            .dom = s->r.dom,
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
    for (unsigned i = 0; i < s->r.dom.nr_vcpus; i++) {
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
            .dom = s->r.dom,
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

int migrate_restore(const struct migrate_target *dst, struct stream_chan *chan,
                    struct migrate_restore_stats *stats, char *err,
                    size_t errlen)
{
    struct restore *s = calloc(1, sizeof(*s));
    uint64_t t0 = now_ns();
    int rc;

    memset(stats, 0, sizeof(*stats));
    if (!s)
        return -ENOMEM;
    if (err && errlen)
        err[0] = '\0';
    s->t = dst;
    s->st = stats;
    s->err = err;
    s->errlen = errlen;
    stream_reader_init(&s->r, chan);
    rc = run(s);
    if (rc < 0) {
        if (err && errlen && !err[0])
            errf(err, errlen, "%s", strerror(-rc));
        if (s->p2m) /* DOMAIN was read: create may have made something */
            dst->abort(dst->arg);
    }
    stats->bytes = chan->bytes;
    stats->ns = now_ns() - t0;
    stream_reader_fini(&s->r);
    free(s->p2m);
    free(s->written);
    free(s->types);
    free(s->p2m_frames);
    free(s->vcpus);
    free(s->hvm_platform);
    free(s->hvm_vcpus);
    free(s);
    return rc;
}
