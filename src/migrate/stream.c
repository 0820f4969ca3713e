/*
 * stream.c - the stream's channel, writer, reader and record checks
 * (stream.h).
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "lib/errmsg.h"
#include "migrate/stream.h"

#ifdef MEMVISOR_HAVE_ZSTD
#include <zstd.h>
#endif

/* ---- CRC-32C (Castagnoli, reflected polynomial 0x82F63B78): the SSE4.2
 * instruction where the CPU has it, else four bits at a time. */
static const uint32_t crc_nibble[16] = {
    0x00000000, 0x105ec76f, 0x20bd8ede, 0x30e349b1, 0x417b1dbc, 0x5125dad3,
    0x61c69362, 0x7198540d, 0x82f63b78, 0x92a8fc17, 0xa24bb5a6, 0xb21572c9,
    0xc38d26c4, 0xd3d3e1ab, 0xe330a81a, 0xf36e6f75,
};

static uint32_t crc_soft(uint32_t crc, const uint8_t *p, size_t len)
{
    while (len--) {
        crc ^= *p++;
        crc = (crc >> 4) ^ crc_nibble[crc & 15];
        crc = (crc >> 4) ^ crc_nibble[crc & 15];
    }
    return crc;
}

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) static uint32_t
crc_hw(uint32_t crc, const uint8_t *p, size_t len)
{
    uint64_t c = crc;

    while (len >= 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        c = __builtin_ia32_crc32di(c, v);
        p += 8;
        len -= 8;
    }
    return crc_soft((uint32_t)c, p, len);
}
#endif

uint32_t stream_crc32c(uint32_t crc, const void *buf, size_t len)
{
    crc = ~crc;
    if (len == 0)
        return ~crc;
#if defined(__x86_64__)
    if (__builtin_cpu_supports("sse4.2"))
        return ~crc_hw(crc, buf, len);
#endif
    return ~crc_soft(crc, buf, len);
}

/* ---- channel -------------------------------------------------------- */

void stream_chan_fd(struct stream_chan *c, int fd)
{
    memset(c, 0, sizeof(*c));
    c->fd = fd;
}

void stream_chan_mem(struct stream_chan *c, const void *buf, size_t len)
{
    memset(c, 0, sizeof(*c));
    c->fd = -1;
    c->mem = buf;
    c->mem_len = len;
}

static int chan_write(struct stream_chan *c, const void *buf, size_t len)
{
    const uint8_t *p = buf;

    if (c->fail_after && c->records >= c->fail_after)
        return -ECONNABORTED;
    if (c->fd < 0)
        return -EINVAL;
    while (len) {
        /* a socket whose peer left is an error, never SIGPIPE */
        ssize_t n = c->not_socket ? write(c->fd, p, len)
                                  : send(c->fd, p, len, MSG_NOSIGNAL);

        if (n < 0 && errno == ENOTSOCK && !c->not_socket) {
            c->not_socket = true;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        if (n == 0)
            return -EIO;
        p += n;
        len -= (size_t)n;
        /* others may read the count while this thread writes (a parallel
         * save's progress) */
        __atomic_store_n(&c->bytes, c->bytes + (uint64_t)n, __ATOMIC_RELAXED);
    }
    return 0;
}

static int chan_read(struct stream_chan *c, void *buf, size_t len)
{
    uint8_t *p = buf;

    if (c->fd < 0) {
        if (c->mem_len - c->mem_pos < len)
            return -EPIPE;
        memcpy(buf, c->mem + c->mem_pos, len);
        c->mem_pos += len;
        c->bytes += len;
        return 0;
    }
    while (len) {
        ssize_t n = read(c->fd, p, len);

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        if (n == 0)
            return -EPIPE;
        p += n;
        len -= (size_t)n;
        c->bytes += (uint64_t)n;
    }
    return 0;
}

/* ---- writer --------------------------------------------------------- */

bool stream_zstd_available(void)
{
#ifdef MEMVISOR_HAVE_ZSTD
    return true;
#else
    return false;
#endif
}

int stream_writer_init(struct stream_writer *w, struct stream_chan *c,
                       bool zstd)
{
    memset(w, 0, sizeof(*w));
    w->chan = c;
    if (!zstd)
        return 0;
#ifdef MEMVISOR_HAVE_ZSTD
    w->zcap = ZSTD_compressBound(STREAM_REC_MAX);
    w->zbuf = malloc(w->zcap);
    w->zctx = ZSTD_createCCtx();
    if (!w->zbuf || !w->zctx) {
        stream_writer_fini(w);
        return -ENOMEM;
    }
    w->zstd = true;
    return 0;
#else
    return -ENOTSUP;
#endif
}

void stream_writer_fini(struct stream_writer *w)
{
#ifdef MEMVISOR_HAVE_ZSTD
    ZSTD_freeCCtx(w->zctx);
#endif
    free(w->zbuf);
    w->zbuf = NULL;
    w->zctx = NULL;
}

int stream_write_header(struct stream_writer *w, uint32_t flags)
{
    struct stream_image_header h;

    memset(&h, 0, sizeof(h));
    memcpy(h.magic, STREAM_MAGIC, 8);
    h.major = STREAM_VERSION_MAJOR;
    h.minor = (flags & (STREAM_IMG_PARALLEL | STREAM_IMG_CHANNEL))
                  ? STREAM_VERSION_MINOR_PARALLEL
                  : STREAM_VERSION_MINOR;
    h.arch = STREAM_ARCH_X86_64;
    h.page_shift = STREAM_PAGE_SHIFT;
    h.flags = flags | (w->zstd ? STREAM_IMG_ZSTD : 0);
    h.crc = stream_crc32c(0, &h, offsetof(struct stream_image_header, crc));
    return chan_write(w->chan, &h, sizeof(h));
}

int stream_write_record(struct stream_writer *w, uint32_t type, const void *b0,
                        size_t l0, const void *b1, size_t l1, const void *b2,
                        size_t l2)
{
    static const uint8_t zeros[8];
    struct stream_record_header h = {.type = type};
    size_t len = l0 + l1 + l2;
    int r;

    if (len > STREAM_REC_MAX)
        return -E2BIG;
    w->raw_bytes += len;
#ifdef MEMVISOR_HAVE_ZSTD
    if (w->zstd && type == STREAM_REC_PAGE_DATA) {
        ZSTD_inBuffer in;
        ZSTD_outBuffer out = {w->zbuf, w->zcap, 0};
        const void *bs[3] = {b0, b1, b2};
        size_t ls[3] = {l0, l1, l2};
        size_t z = 0;

        ZSTD_CCtx_reset(w->zctx, ZSTD_reset_session_only);
        ZSTD_CCtx_setParameter(w->zctx, ZSTD_c_compressionLevel, 1);
        ZSTD_CCtx_setPledgedSrcSize(w->zctx, len);
        for (int i = 0; i < 3; i++) {
            in = (ZSTD_inBuffer){bs[i], ls[i], 0};
            z = ZSTD_compressStream2(w->zctx, &out, &in,
                                     i == 2 ? ZSTD_e_end : ZSTD_e_continue);
            if (ZSTD_isError(z))
                return -EIO;
        }
        if (z != 0)
            return -EIO;
        h.flags = STREAM_REC_F_ZSTD;
        h.length = (uint32_t)out.pos;
        h.crc = stream_crc32c(0, &h, 12);
        h.crc = stream_crc32c(h.crc, w->zbuf, out.pos);
        if ((r = chan_write(w->chan, &h, sizeof(h))) < 0 ||
            (r = chan_write(w->chan, w->zbuf, out.pos)) < 0 ||
            (r = chan_write(w->chan, zeros, (8 - out.pos % 8) % 8)) < 0)
            return r;
        w->chan->records++;
        return 0;
    }
#endif
    h.length = (uint32_t)len;
    h.crc = stream_crc32c(0, &h, 12);
    h.crc = stream_crc32c(h.crc, b0, l0);
    h.crc = stream_crc32c(h.crc, b1, l1);
    h.crc = stream_crc32c(h.crc, b2, l2);
    if ((r = chan_write(w->chan, &h, sizeof(h))) < 0 ||
        (l0 && (r = chan_write(w->chan, b0, l0)) < 0) ||
        (l1 && (r = chan_write(w->chan, b1, l1)) < 0) ||
        (l2 && (r = chan_write(w->chan, b2, l2)) < 0) ||
        (r = chan_write(w->chan, zeros, (8 - len % 8) % 8)) < 0)
        return r;
    w->chan->records++;
    return 0;
}

/* ---- reader --------------------------------------------------------- */

const char *stream_record_name(uint32_t type)
{
    switch (type) {
    case STREAM_REC_END: return "END";
    case STREAM_REC_DOMAIN: return "DOMAIN";
    case STREAM_REC_PAGE_DATA: return "PAGE_DATA";
    case STREAM_REC_PV_P2M_FRAMES: return "PV_P2M_FRAMES";
    case STREAM_REC_SHARED_INFO: return "SHARED_INFO";
    case STREAM_REC_PV_VCPU: return "PV_VCPU";
    case STREAM_REC_DEVICE: return "DEVICE";
    case STREAM_REC_HVM_PLATFORM: return "HVM_PLATFORM";
    case STREAM_REC_HVM_VCPU: return "HVM_VCPU";
    case STREAM_REC_ROUND: return "ROUND";
    case STREAM_REC_CHANNELS: return "CHANNELS";
    case STREAM_REC_CHANNEL: return "CHANNEL";
    case STREAM_REC_BARRIER: return "BARRIER";
    default: return "unknown";
    }
}

void stream_reader_init(struct stream_reader *r, struct stream_chan *c)
{
    memset(r, 0, sizeof(*r));
    r->chan = c;
    r->phase = STREAM_PH_HEADER;
}

void stream_reader_fini(struct stream_reader *r)
{
#ifdef MEMVISOR_HAVE_ZSTD
    ZSTD_freeDCtx(r->zctx);
#endif
    free(r->buf);
    free(r->zbuf);
    r->buf = r->zbuf = NULL;
    r->zctx = NULL;
}

static int read_err(int rc, char *err, size_t errlen, const char *what)
{
    if (rc == -EPIPE)
        errf(err, errlen, "the stream ended inside %s", what);
    else
        errf(err, errlen, "reading %s: %s", what, strerror(-rc));
    return rc;
}

int stream_read_header(struct stream_reader *r, char *err, size_t errlen)
{
    struct stream_image_header *h = &r->hdr;
    int rc;

    if (r->phase != STREAM_PH_HEADER) {
        errf(err, errlen, "image header read twice");
        return -EINVAL;
    }
    if ((rc = chan_read(r->chan, h, sizeof(*h))) < 0)
        return read_err(rc, err, errlen, "the image header");
    if (memcmp(h->magic, STREAM_MAGIC, 8) != 0) {
        errf(err, errlen, "not a memvisor stream (bad magic)");
        return -EPROTO;
    }
    if (h->crc != stream_crc32c(0, h, offsetof(struct stream_image_header, crc))) {
        errf(err, errlen, "image header checksum mismatch");
        return -EPROTO;
    }
    if (h->major != STREAM_VERSION_MAJOR) {
        errf(err, errlen, "stream version %u.%u: this memvisor reads %u.x",
             h->major, h->minor, STREAM_VERSION_MAJOR);
        return -EPROTO;
    }
    if (h->arch != STREAM_ARCH_X86_64 || h->page_shift != STREAM_PAGE_SHIFT) {
        errf(err, errlen, "stream for arch %u with %u-bit pages: not x86-64/4K",
             h->arch, h->page_shift);
        return -EPROTO;
    }
    if ((h->flags & ~STREAM_IMG_FLAGS_KNOWN) || h->reserved) {
        errf(err, errlen, "unknown image header flags %#x", h->flags);
        return -EPROTO;
    }
    if ((h->flags & STREAM_IMG_PARALLEL) && (h->flags & STREAM_IMG_CHANNEL)) {
        errf(err, errlen, "image header flags %#x: both PARALLEL and CHANNEL",
             h->flags);
        return -EPROTO;
    }
    r->parallel = h->flags & STREAM_IMG_PARALLEL;
    r->channel = h->flags & STREAM_IMG_CHANNEL;
    if ((h->flags & STREAM_IMG_ZSTD) && !stream_zstd_available()) {
        errf(err, errlen, "the stream is zstd-compressed; this memvisor "
                          "was built without zstd");
        return -ENOTSUP;
    }
    r->phase = STREAM_PH_START;
    return 0;
}

/* May a record of this type come now?  Advances the phase. */
static int order_check(struct stream_reader *r, uint32_t type, char *err,
                       size_t errlen)
{
    const char *name = stream_record_name(type);

    switch (r->phase) {
    case STREAM_PH_HEADER:
        errf(err, errlen, "record before the image header");
        return -EPROTO;
    case STREAM_PH_START:
        if (type != (r->channel ? STREAM_REC_CHANNEL : STREAM_REC_DOMAIN))
            break;
        return 0; /* the body's check moves the phase on */
    case STREAM_PH_CHANNELS:
        if (type != STREAM_REC_CHANNELS)
            break;
        return 0;
    case STREAM_PH_MEMORY: {
        /* the record that ends the memory phase of the main connection */
        uint32_t tail = r->dom.kind == STREAM_DOMAIN_HVM
                            ? STREAM_REC_HVM_PLATFORM
                            : STREAM_REC_SHARED_INFO;

        if (r->final_barrier) {
            /* after the final BARRIER: the main connection's tail, an
             * extra connection's END */
            if (type == (r->channel ? STREAM_REC_END : tail)) {
                r->phase = r->channel ? STREAM_PH_DONE : STREAM_PH_VCPUS;
                return 0;
            }
            errf(err, errlen, "record %s (%#x) after the final BARRIER", name,
                 type);
            return -EPROTO;
        }
        if (type == STREAM_REC_PAGE_DATA)
            return 0;
        if (type == STREAM_REC_BARRIER && (r->parallel || r->channel))
            return 0;
        if (r->channel)
            break;
        if (type == STREAM_REC_ROUND)
            return 0;
        if (type == tail && r->parallel) {
            errf(err, errlen, "%s before the final BARRIER", name);
            return -EPROTO;
        }
        if (r->dom.kind == STREAM_DOMAIN_HVM) {
            if (type == STREAM_REC_HVM_PLATFORM) {
                r->phase = STREAM_PH_VCPUS;
                return 0;
            }
            break;
        }
        if (type == STREAM_REC_PV_P2M_FRAMES && !r->have_p2m_frames) {
            r->have_p2m_frames = true;
            return 0;
        }
        if (type == STREAM_REC_SHARED_INFO) {
            r->phase = STREAM_PH_VCPUS;
            return 0;
        }
        break;
    }
    case STREAM_PH_VCPUS:
        if (type == (r->dom.kind == STREAM_DOMAIN_HVM ? STREAM_REC_HVM_VCPU
                                                      : STREAM_REC_PV_VCPU))
            return 0; /* the id is checked by the body's parser */
        break;
    case STREAM_PH_DEVICES:
        if (type == STREAM_REC_DEVICE)
            return 0;
        if (type == STREAM_REC_END) {
            r->phase = STREAM_PH_DONE;
            return 0;
        }
        break;
    case STREAM_PH_DONE:
        errf(err, errlen, "record %s after END", name);
        return -EPROTO;
    }
    errf(err, errlen, "record %s (%#x) out of order", name, type);
    return -EPROTO;
}

static bool type_known(uint32_t type)
{
    return type <= STREAM_REC_DEVICE || type == STREAM_REC_ROUND ||
           type == STREAM_REC_HVM_PLATFORM || type == STREAM_REC_HVM_VCPU ||
           type == STREAM_REC_CHANNELS || type == STREAM_REC_CHANNEL ||
           type == STREAM_REC_BARRIER;
}

static int ensure_buf(uint8_t **buf)
{
    if (!*buf)
        *buf = malloc(STREAM_REC_MAX + 8);
    return *buf ? 0 : -ENOMEM;
}

int stream_read_record(struct stream_reader *r, char *err, size_t errlen)
{
    struct stream_record_header h;
    uint32_t pad, crc;
    uint8_t padb[8];
    int rc;

    if (r->phase == STREAM_PH_HEADER || r->phase == STREAM_PH_DONE) {
        errf(err, errlen, r->phase == STREAM_PH_DONE ? "read past END"
                                                     : "no image header read");
        return -EINVAL;
    }
    if (r->chan->read_fail_after && r->chan->records >= r->chan->read_fail_after) {
        errf(err, errlen, "the connection was cut (test)");
        return -ECONNABORTED;
    }
    for (;;) {
        if ((rc = chan_read(r->chan, &h, sizeof(h))) < 0)
            return read_err(rc, err, errlen, "a record header");
        if (h.length > STREAM_REC_MAX) {
            errf(err, errlen, "record %#x: length %u over the limit %u", h.type,
                 h.length, STREAM_REC_MAX);
            return -EPROTO;
        }
        if (h.flags & ~STREAM_REC_F_KNOWN) {
            errf(err, errlen, "record %#x: unknown flags %#x", h.type, h.flags);
            return -EPROTO;
        }
        if ((h.flags & STREAM_REC_F_ZSTD) && !(r->hdr.flags & STREAM_IMG_ZSTD)) {
            errf(err, errlen, "record %#x compressed in an uncompressed stream",
                 h.type);
            return -EPROTO;
        }
        if ((rc = ensure_buf(&r->buf)) < 0)
            return rc;
        pad = (8 - h.length % 8) % 8;
        if ((rc = chan_read(r->chan, r->buf, h.length)) < 0 ||
            (rc = chan_read(r->chan, padb, pad)) < 0)
            return read_err(rc, err, errlen, "a record body");
        crc = stream_crc32c(0, &h, 12);
        crc = stream_crc32c(crc, r->buf, h.length);
        if (crc != h.crc) {
            errf(err, errlen, "record %s (%#x, %u bytes): checksum mismatch",
                 stream_record_name(h.type), h.type, h.length);
            return -EPROTO;
        }
        for (uint32_t i = 0; i < pad; i++)
            if (padb[i]) {
                errf(err, errlen, "record %#x: non-zero padding", h.type);
                return -EPROTO;
            }
        if (!type_known(h.type)) {
            if (h.type & STREAM_REC_OPTIONAL) {
                r->skipped++;
                continue;
            }
            errf(err, errlen, "unknown mandatory record type %#x", h.type);
            return -EPROTO;
        }
        break;
    }
    if ((rc = order_check(r, h.type, err, errlen)) < 0)
        return rc;
    r->chan->records++;
    r->type = h.type;
    r->body = r->buf;
    r->len = h.length;
    if (h.flags & STREAM_REC_F_ZSTD) {
#ifdef MEMVISOR_HAVE_ZSTD
        unsigned long long sz = ZSTD_getFrameContentSize(r->buf, h.length);
        size_t got;

        if (sz == ZSTD_CONTENTSIZE_ERROR || sz == ZSTD_CONTENTSIZE_UNKNOWN ||
            sz > STREAM_REC_MAX) {
            errf(err, errlen, "record %s: bad compressed frame",
                 stream_record_name(h.type));
            return -EPROTO;
        }
        if ((rc = ensure_buf(&r->zbuf)) < 0)
            return rc;
        if (!r->zctx && !(r->zctx = ZSTD_createDCtx()))
            return -ENOMEM;
        got = ZSTD_decompressDCtx(r->zctx, r->zbuf, STREAM_REC_MAX, r->buf,
                                  h.length);
        if (ZSTD_isError(got) || got != sz) {
            errf(err, errlen, "record %s: corrupt compressed data",
                 stream_record_name(h.type));
            return -EPROTO;
        }
        r->body = r->zbuf;
        r->len = (uint32_t)got;
#else
        return -ENOTSUP;
#endif
    }
    if (h.type == STREAM_REC_DOMAIN) {
        if ((rc = stream_parse_domain(r->body, r->len, &r->dom, err, errlen)) < 0)
            return rc;
        r->phase = r->parallel ? STREAM_PH_CHANNELS : STREAM_PH_MEMORY;
    } else if (h.type == STREAM_REC_CHANNELS) {
        if ((rc = stream_parse_channels(r->body, r->len, &r->chans, err,
                                        errlen)) < 0)
            return rc;
        r->phase = STREAM_PH_MEMORY;
    } else if (h.type == STREAM_REC_CHANNEL) {
        if ((rc = stream_parse_channel(r->body, r->len, &r->me, err, errlen)) <
            0)
            return rc;
        r->phase = STREAM_PH_MEMORY;
    } else if (h.type == STREAM_REC_BARRIER) {
        struct stream_barrier b;

        if (r->len != sizeof(b)) {
            errf(err, errlen, "BARRIER of %u bytes (want %zu)", r->len,
                 sizeof(b));
            return -EPROTO;
        }
        memcpy(&b, r->body, sizeof(b));
        if (b.round != r->barrier.round + 1 ||
            (b.flags & ~STREAM_BARRIER_FINAL)) {
            errf(err, errlen, "BARRIER of round %u (flags %#x) where round %u "
                              "was due",
                 b.round, b.flags, r->barrier.round + 1);
            return -EPROTO;
        }
        if (b.pages > STREAM_PAGES_LIMIT) {
            errf(err, errlen, "BARRIER of round %u: %llu pages", b.round,
                 (unsigned long long)b.pages);
            return -EPROTO;
        }
        r->barrier = b;
        r->final_barrier = b.flags & STREAM_BARRIER_FINAL;
    } else if (h.type == STREAM_REC_PV_VCPU) {
        struct stream_pv_vcpu v;

        if ((rc = stream_parse_vcpu(r->body, r->len, &r->dom, &v, err,
                                    errlen)) < 0)
            return rc;
        if (v.id != r->next_vcpu) {
            errf(err, errlen, "PV_VCPU for vCPU %u where %u was due", v.id,
                 r->next_vcpu);
            return -EPROTO;
        }
        if (++r->next_vcpu == r->dom.nr_vcpus)
            r->phase = STREAM_PH_DEVICES;
    } else if (h.type == STREAM_REC_HVM_PLATFORM) {
        if ((rc = stream_parse_hvm_platform(r->body, r->len, &r->dom, NULL,
                                            err, errlen)) < 0)
            return rc;
    } else if (h.type == STREAM_REC_HVM_VCPU) {
        uint32_t id;

        if ((rc = stream_parse_hvm_vcpu(r->body, r->len, &r->dom, NULL, err,
                                        errlen)) < 0)
            return rc;
        memcpy(&id, r->body, 4);
        if (id != r->next_vcpu) {
            errf(err, errlen, "HVM_VCPU for vCPU %u where %u was due", id,
                 r->next_vcpu);
            return -EPROTO;
        }
        if (++r->next_vcpu == r->dom.nr_vcpus)
            r->phase = STREAM_PH_DEVICES;
    } else if (h.type == STREAM_REC_SHARED_INFO && r->len != 4096) {
        errf(err, errlen, "SHARED_INFO of %u bytes (not one page)", r->len);
        return -EPROTO;
    } else if (h.type == STREAM_REC_END && r->len != 0) {
        errf(err, errlen, "END with a body of %u bytes", r->len);
        return -EPROTO;
    }
    return 0;
}

/* ---- record bodies -------------------------------------------------- */

int stream_parse_domain(const void *body, uint32_t len,
                        struct stream_domain *out, char *err, size_t errlen)
{
    struct stream_domain d;

    if (len != sizeof(d)) {
        errf(err, errlen, "DOMAIN of %u bytes (want %zu)", len, sizeof(d));
        return -EPROTO;
    }
    memcpy(&d, body, sizeof(d));
    if (d.kind == STREAM_DOMAIN_HVM &&
        (d.p2m_va || d.start_info_va || d.start_info_pfn ||
         d.nr_pages > (STREAM_HVM_RAM_MAX >> STREAM_PAGE_SHIFT) ||
         d.nr_pages <= (STREAM_HVM_HIGH_START >> STREAM_PAGE_SHIFT))) {
        errf(err, errlen, "DOMAIN: an HVM domain of %llu pages, or with PV "
                          "addresses", (unsigned long long)d.nr_pages);
        return -EPROTO;
    }
    if (d.kind != STREAM_DOMAIN_PV64 && d.kind != STREAM_DOMAIN_HVM) {
        errf(err, errlen, "unknown domain kind %u", d.kind);
        return -EPROTO;
    }
    if (d.nr_vcpus == 0 || d.nr_vcpus > STREAM_VCPUS_MAX) {
        errf(err, errlen, "DOMAIN: %u vCPUs (1..%u)", d.nr_vcpus,
             STREAM_VCPUS_MAX);
        return -EPROTO;
    }
    if (d.nr_pages == 0 || d.nr_pages > STREAM_PAGES_LIMIT) {
        errf(err, errlen, "DOMAIN: %llu pages", (unsigned long long)d.nr_pages);
        return -EPROTO;
    }
    if (d.start_info_pfn >= d.nr_pages || d.reserved) {
        errf(err, errlen, "DOMAIN: start_info pfn %llu outside %llu pages",
             (unsigned long long)d.start_info_pfn,
             (unsigned long long)d.nr_pages);
        return -EPROTO;
    }
    *out = d;
    return 0;
}

int stream_parse_hvm_platform(const void *body, uint32_t len,
                              const struct stream_domain *dom,
                              struct stream_hvm_platform *out, char *err,
                              size_t errlen)
{
    struct stream_hvm_platform *p;

    if (len != sizeof(*p)) {
        errf(err, errlen, "HVM_PLATFORM of %u bytes (want %zu)", len,
             sizeof(*p));
        return -EPROTO;
    }
    p = malloc(sizeof(*p));
    if (!p)
        return -ENOMEM;
    memcpy(p, body, sizeof(*p));
    if (dom->kind != STREAM_DOMAIN_HVM ||
        p->ram_end != dom->nr_pages << STREAM_PAGE_SHIFT) {
        errf(err, errlen, "HVM_PLATFORM: RAM end %#llx for %llu pages",
             (unsigned long long)p->ram_end,
             (unsigned long long)dom->nr_pages);
        free(p);
        return -EPROTO;
    }
    if (p->uart.rx_len > STREAM_HVM_UART_RXQ || p->uart.thr_ipending > 1 ||
        p->uart.reserved || p->reserved[0] || p->reserved[1]) {
        errf(err, errlen, "HVM_PLATFORM: bad serial port state or reserved "
                          "fields");
        free(p);
        return -EPROTO;
    }
    if (out)
        *out = *p;
    free(p);
    return 0;
}

int stream_parse_hvm_vcpu(const void *body, uint32_t len,
                          const struct stream_domain *dom,
                          struct stream_hvm_vcpu *out, char *err, size_t errlen)
{
    struct stream_hvm_vcpu *v;
    int rc = -EPROTO;

    if (len != sizeof(*v)) {
        errf(err, errlen, "HVM_VCPU of %u bytes (want %zu)", len, sizeof(*v));
        return -EPROTO;
    }
    v = malloc(sizeof(*v));
    if (!v)
        return -ENOMEM;
    memcpy(v, body, sizeof(*v));
    if (dom->kind != STREAM_DOMAIN_HVM || v->id >= dom->nr_vcpus)
        errf(err, errlen, "HVM_VCPU: vCPU %u of %u", v->id, dom->nr_vcpus);
    else if (v->flags & ~STREAM_HVM_VCPU_FLAGS_KNOWN)
        errf(err, errlen, "HVM_VCPU %u: unknown flags %#x", v->id, v->flags);
    else if (v->mp_state > STREAM_HVM_MP_STATE_MAX)
        errf(err, errlen, "HVM_VCPU %u: MP state %u", v->id, v->mp_state);
    else if (v->nr_msrs > STREAM_HVM_MSRS_MAX)
        errf(err, errlen, "HVM_VCPU %u: %u MSRs (at most %u)", v->id,
             v->nr_msrs, STREAM_HVM_MSRS_MAX);
    else
        rc = 0;
    for (uint32_t i = 0; rc == 0 && i < STREAM_HVM_MSRS_MAX; i++)
        if (v->msrs[i].reserved ||
            (i >= v->nr_msrs && (v->msrs[i].index || v->msrs[i].value))) {
            errf(err, errlen, "HVM_VCPU %u: MSR slot %u not clean", v->id, i);
            rc = -EPROTO;
        }
    if (rc == 0 && out)
        *out = *v;
    free(v);
    return rc;
}

int stream_parse_pages(const void *body, uint32_t len, uint64_t nr_pages,
                       struct stream_pages *out, char *err, size_t errlen)
{
    struct stream_page_data h;
    const uint8_t *b = body;
    uint64_t data = 0;

    if (len < sizeof(h)) {
        errf(err, errlen, "PAGE_DATA of %u bytes", len);
        return -EPROTO;
    }
    memcpy(&h, b, sizeof(h));
    if (h.count == 0 || h.count > STREAM_PAGES_MAX || h.reserved) {
        errf(err, errlen, "PAGE_DATA: count %u (1..%u)", h.count,
             STREAM_PAGES_MAX);
        return -EPROTO;
    }
    if (len < sizeof(h) + 8ULL * h.count) {
        errf(err, errlen, "PAGE_DATA: %u pfn words in %u bytes", h.count, len);
        return -EPROTO;
    }
    for (uint32_t i = 0; i < h.count; i++) {
        uint64_t w = stream_u64(b + sizeof(h), i);
        unsigned t = stream_word_type(w);
        uint64_t pfn = w & STREAM_PFN_MASK;

        if (w & STREAM_PFN_RSVD_MASK) {
            errf(err, errlen, "PAGE_DATA: reserved bits in word %u", i);
            return -EPROTO;
        }
        if (pfn >= nr_pages) {
            errf(err, errlen, "PAGE_DATA: pfn %#llx outside the domain's %llu "
                              "pages",
                 (unsigned long long)pfn, (unsigned long long)nr_pages);
            return -EPROTO;
        }
        /* known: NOTAB, L1..L4, pinned L1..L4, XTAB */
        if (!(t == STREAM_TYPE_NOTAB || t == STREAM_TYPE_XTAB ||
              ((t & STREAM_TYPE_LEVEL_MASK) >= 1 &&
               (t & STREAM_TYPE_LEVEL_MASK) <= 4))) {
            errf(err, errlen, "PAGE_DATA: pfn %#llx has unknown type %#x",
                 (unsigned long long)pfn, t);
            return -EPROTO;
        }
        if (t == STREAM_TYPE_XTAB && (w & STREAM_PFN_ZERO)) {
            errf(err, errlen, "PAGE_DATA: pfn %#llx: XTAB marked zero",
                 (unsigned long long)pfn);
            return -EPROTO;
        }
        if (stream_type_has_data(t) && !(w & STREAM_PFN_ZERO))
            data++;
    }
    if ((uint64_t)len != sizeof(h) + 8ULL * h.count + 4096ULL * data) {
        errf(err, errlen, "PAGE_DATA: %u bytes for %u words and %llu pages",
             len, h.count, (unsigned long long)data);
        return -EPROTO;
    }
    out->count = h.count;
    out->words = (const uint64_t *)(const void *)(b + sizeof(h));
    out->data = b + sizeof(h) + 8ULL * h.count;
    return 0;
}

int stream_parse_p2m_frames(const void *body, uint32_t len, uint64_t nr_pages,
                            uint64_t *nr, const uint8_t **pfns, char *err,
                            size_t errlen)
{
    const uint8_t *b = body;
    uint64_t n, want = (nr_pages + 511) / 512;

    if (len < 8) {
        errf(err, errlen, "PV_P2M_FRAMES of %u bytes", len);
        return -EPROTO;
    }
    n = stream_u64(b, 0);
    if (n != want || len != 8 + 8 * n) {
        errf(err, errlen, "PV_P2M_FRAMES: %llu frames in %u bytes (want %llu)",
             (unsigned long long)n, len, (unsigned long long)want);
        return -EPROTO;
    }
    for (uint64_t i = 0; i < n; i++)
        if (stream_u64(b + 8, i) >= nr_pages) {
            errf(err, errlen, "PV_P2M_FRAMES: frame %llu at pfn %#llx outside "
                              "the domain",
                 (unsigned long long)i,
                 (unsigned long long)stream_u64(b + 8, i));
            return -EPROTO;
        }
    *nr = n;
    *pfns = b + 8;
    return 0;
}

int stream_parse_vcpu(const void *body, uint32_t len,
                      const struct stream_domain *dom,
                      struct stream_pv_vcpu *out, char *err, size_t errlen)
{
    struct stream_pv_vcpu v;

    if (len != sizeof(v)) {
        errf(err, errlen, "PV_VCPU of %u bytes (want %zu)", len, sizeof(v));
        return -EPROTO;
    }
    memcpy(&v, body, sizeof(v));
    if (v.id >= dom->nr_vcpus) {
        errf(err, errlen, "PV_VCPU: vCPU %u of %u", v.id, dom->nr_vcpus);
        return -EPROTO;
    }
    if (v.flags & ~STREAM_VCPU_FLAGS_KNOWN) {
        errf(err, errlen, "PV_VCPU %u: unknown flags %#x", v.id, v.flags);
        return -EPROTO;
    }
    if (v.gpr[15] || ((v.flags & STREAM_VCPU_UP) &&
                      !(v.flags & STREAM_VCPU_INITIALISED))) {
        errf(err, errlen, "PV_VCPU %u: up but not initialised", v.id);
        return -EPROTO;
    }
    if ((v.base_pfn != STREAM_PFN_NONE && v.base_pfn >= dom->nr_pages) ||
        (v.user_base_pfn != STREAM_PFN_NONE &&
         v.user_base_pfn >= dom->nr_pages)) {
        errf(err, errlen, "PV_VCPU %u: base pointer outside the domain", v.id);
        return -EPROTO;
    }
    if ((v.flags & STREAM_VCPU_INITIALISED) && v.base_pfn == STREAM_PFN_NONE) {
        errf(err, errlen, "PV_VCPU %u: initialised without a base pointer",
             v.id);
        return -EPROTO;
    }
    for (unsigned i = 0; i < 256; i++)
        for (unsigned k = 0; k < 7; k++)
            if (v.traps[i].reserved[k]) {
                errf(err, errlen, "PV_VCPU %u: reserved bytes in trap %u",
                     v.id, i);
                return -EPROTO;
            }
    *out = v;
    return 0;
}

static bool token_zero(const uint8_t *t)
{
    for (unsigned i = 0; i < STREAM_TOKEN_LEN; i++)
        if (t[i])
            return false;
    return true;
}

int stream_parse_channels(const void *body, uint32_t len,
                          struct stream_channels *out, char *err,
                          size_t errlen)
{
    struct stream_channels c;

    if (len != sizeof(c)) {
        errf(err, errlen, "CHANNELS of %u bytes (want %zu)", len, sizeof(c));
        return -EPROTO;
    }
    memcpy(&c, body, sizeof(c));
    if (c.nr < 2 || c.nr > STREAM_CHANNELS_MAX || c.reserved ||
        token_zero(c.token)) {
        errf(err, errlen, "CHANNELS: %u connections (2..%u), reserved %#x, "
                          "or no token",
             c.nr, STREAM_CHANNELS_MAX, c.reserved);
        return -EPROTO;
    }
    *out = c;
    return 0;
}

int stream_parse_channel(const void *body, uint32_t len,
                         struct stream_channel *out, char *err, size_t errlen)
{
    struct stream_channel c;

    if (len != sizeof(c)) {
        errf(err, errlen, "CHANNEL of %u bytes (want %zu)", len, sizeof(c));
        return -EPROTO;
    }
    memcpy(&c, body, sizeof(c));
    if (c.nr < 2 || c.nr > STREAM_CHANNELS_MAX || c.index == 0 ||
        c.index >= c.nr || token_zero(c.token)) {
        errf(err, errlen, "CHANNEL: connection %u of %u, or no token", c.index,
             c.nr);
        return -EPROTO;
    }
    *out = c;
    return 0;
}

int stream_parse_device(const void *body, uint32_t len,
                        struct stream_device *out, const uint8_t **state,
                        uint32_t *state_len, char *err, size_t errlen)
{
    if (len < sizeof(*out)) {
        errf(err, errlen, "DEVICE of %u bytes", len);
        return -EPROTO;
    }
    memcpy(out, body, sizeof(*out));
    if (out->reserved) {
        errf(err, errlen, "DEVICE: reserved field set");
        return -EPROTO;
    }
    *state = (const uint8_t *)body + sizeof(*out);
    *state_len = len - (uint32_t)sizeof(*out);
    return 0;
}

int stream_check(struct stream_chan *c, uint64_t *records, char *err,
                 size_t errlen)
{
    struct stream_reader r;
    int rc;

    *records = 0;
    stream_reader_init(&r, c);
    if ((rc = stream_read_header(&r, err, errlen)) < 0)
        goto out;
    while (r.phase != STREAM_PH_DONE) {
        if ((rc = stream_read_record(&r, err, errlen)) < 0)
            goto out;
        ++*records;
        if (r.type == STREAM_REC_PAGE_DATA) {
            struct stream_pages p;
            if ((rc = stream_parse_pages(r.body, r.len,
                                         r.channel ? STREAM_PAGES_LIMIT
                                                   : r.dom.nr_pages,
                                         &p, err, errlen)) < 0)
                goto out;
        } else if (r.type == STREAM_REC_PV_P2M_FRAMES) {
            uint64_t n;
            const uint8_t *pf;
            if ((rc = stream_parse_p2m_frames(r.body, r.len, r.dom.nr_pages,
                                              &n, &pf, err, errlen)) < 0)
                goto out;
        } else if (r.type == STREAM_REC_DEVICE) {
            struct stream_device dv;
            const uint8_t *st;
            uint32_t sl;
            if ((rc = stream_parse_device(r.body, r.len, &dv, &st, &sl, err,
                                          errlen)) < 0)
                goto out;
        }
    }
    rc = 0;
out:
    stream_reader_fini(&r);
    return rc;
}
