/*
 * stream.h - reading and writing memvisor streams (include/memvisor/
 * stream.h, docs/stream.md): a channel (a file, a socket, or bytes in
 * memory), the record writer, the record reader and the checks every
 * record body passes before anyone uses it.
 *
 * Owns: struct stream_chan (where bytes go or come from, and how many
 * went), struct stream_reader (the current record, its buffer, and the
 * order state of the stream read so far).
 *
 * Invariants:
 *  S1. Nothing the reader returns has not passed its checks: a record's
 *      length is bounded (STREAM_REC_MAX before and after decompression),
 *      its checksum matches, its type is known (an unknown optional record
 *      is skipped), its flags and reserved fields are as the format says,
 *      and it comes in the order the format allows.
 *  S2. stream_parse_*() check a body completely (lengths exact, counts and
 *      pfns in range, reserved bits zero) before filling anything out.
 *  S3. A stream byte can make any function here fail with a message;
 *      never crash, never read outside a buffer, never allocate more than
 *      STREAM_REC_MAX (twice with zstd) per reader.
 *
 * Locking: none; a channel, writer or reader is used by one thread.
 *
 * Errors: -EPROTO (a malformed stream; err says what), -EIO or the
 * transport's -errno (read/write failure), -EPIPE (the stream ended early),
 * -ENOMEM, -ENOTSUP (zstd asked for but not built in),
 * -ECONNABORTED (the test-only cut of stream_chan.fail_after).
 */
#ifndef MEMVISOR_MIGRATE_STREAM_H
#define MEMVISOR_MIGRATE_STREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lib/compiler.h"
#include "memvisor/stream.h"

uint32_t stream_crc32c(uint32_t crc, const void *buf, size_t len);

/* Where bytes go or come from: an fd (file or socket), or memory. */
struct stream_chan {
    int fd;               /* -1: memory */
    const uint8_t *mem;   /* reading from memory */
    size_t mem_len, mem_pos;
    uint64_t bytes;       /* moved so far */
    uint64_t records;     /* records moved so far */
    bool not_socket;      /* written with write(), not send() */
    /* Test only (fault injection): after this many records have been
     * written, every write fails with -ECONNABORTED (0: never). */
    uint64_t fail_after;
    /* Test only: after this many records have been read, reading fails
     * with -ECONNABORTED (0: never). */
    uint64_t read_fail_after;
};

void stream_chan_fd(struct stream_chan *c, int fd);
void stream_chan_mem(struct stream_chan *c, const void *buf, size_t len);

/* ---------------------------------------------------------------- writer */

struct stream_writer {
    struct stream_chan *chan;
    bool zstd;         /* compress PAGE_DATA bodies */
    void *zbuf;        /* compression buffer */
    size_t zcap;
    void *zctx;
    uint64_t raw_bytes; /* body bytes before compression */
};

/* zstd: compress page data (-ENOTSUP if memvisor was built without it). */
int __must_check stream_writer_init(struct stream_writer *w,
                                    struct stream_chan *c, bool zstd);
void stream_writer_fini(struct stream_writer *w);
int __must_check stream_write_header(struct stream_writer *w, uint32_t flags);
/* One record; the body is given as up to 3 pieces (NULL/0 for none). */
int __must_check stream_write_record(struct stream_writer *w, uint32_t type,
                                     const void *b0, size_t l0, const void *b1,
                                     size_t l1, const void *b2, size_t l2);
bool stream_zstd_available(void);

/* ---------------------------------------------------------------- reader */

enum stream_phase {
    STREAM_PH_HEADER,  /* nothing read */
    STREAM_PH_START,   /* header read: DOMAIN (CHANNEL on an extra
                          connection) next */
    STREAM_PH_CHANNELS, /* a parallel stream's DOMAIN read: CHANNELS next */
    STREAM_PH_MEMORY,  /* DOMAIN read: P2M_FRAMES, PAGE_DATA, ROUND (and
                          BARRIER in a parallel stream; an extra
                          connection: PAGE_DATA, BARRIER) */
    STREAM_PH_VCPUS,   /* SHARED_INFO read: PV_VCPU next */
    STREAM_PH_DEVICES, /* every vCPU read: DEVICE or END */
    STREAM_PH_DONE,    /* END read */
};

struct stream_reader {
    struct stream_chan *chan;
    struct stream_image_header hdr;
    enum stream_phase phase;
    struct stream_domain dom; /* once past STREAM_PH_START */
    bool have_p2m_frames;
    uint32_t next_vcpu;
    /* Parallel streams (the header's PARALLEL or CHANNEL flag). */
    bool parallel, channel;
    struct stream_channels chans; /* main: its CHANNELS record */
    struct stream_channel me;     /* extra: its CHANNEL record */
    struct stream_barrier barrier; /* the last BARRIER read (round 0:
                                      none yet) */
    bool final_barrier;           /* the final BARRIER was read */
    /* The current record. */
    uint32_t type;
    uint8_t *body;
    uint32_t len;
    uint8_t *buf, *zbuf;
    void *zctx;
    uint64_t skipped; /* unknown optional records skipped */
};

void stream_reader_init(struct stream_reader *r, struct stream_chan *c);
void stream_reader_fini(struct stream_reader *r);
int __must_check stream_read_header(struct stream_reader *r, char *err,
                                    size_t errlen);
/* The next record (r->type, r->body, r->len), checked for its length,
 * checksum, flags and place in the order; an END makes the phase DONE. */
int __must_check stream_read_record(struct stream_reader *r, char *err,
                                    size_t errlen);

/* ---------------------------------------------------------- record bodies */

struct stream_pages {
    uint32_t count;
    const uint64_t *words;   /* count pfn words (unaligned-safe copies are
                                taken by the accessor below) */
    const uint8_t *data;     /* pages with data, in word order */
};

static inline uint64_t stream_word(const struct stream_pages *p, uint32_t i)
{
    uint64_t w;
    __builtin_memcpy(&w, (const uint8_t *)p->words + 8 * (size_t)i, 8);
    return w;
}
static inline unsigned stream_word_type(uint64_t w)
{
    return (unsigned)(w >> STREAM_PFN_TYPE_SHIFT);
}
static inline bool stream_type_has_data(unsigned t)
{
    return t != STREAM_TYPE_XTAB;
}

int __must_check stream_parse_domain(const void *body, uint32_t len,
                                     struct stream_domain *out, char *err,
                                     size_t errlen);
/* Every pfn < nr_pages, every type known, the length exact. */
int __must_check stream_parse_pages(const void *body, uint32_t len,
                                    uint64_t nr_pages, struct stream_pages *out,
                                    char *err, size_t errlen);
/* pfns[] points into body (nr_frames entries, copies via stream_u64()). */
int __must_check stream_parse_p2m_frames(const void *body, uint32_t len,
                                         uint64_t nr_pages, uint64_t *nr,
                                         const uint8_t **pfns, char *err,
                                         size_t errlen);
int __must_check stream_parse_vcpu(const void *body, uint32_t len,
                                   const struct stream_domain *dom,
                                   struct stream_pv_vcpu *out, char *err,
                                   size_t errlen);
/* HVM records: lengths exact, reserved fields zero, counts bounded, the
 * vCPU id below nr_vcpus, RAM end matching the DOMAIN record (out may be
 * NULL: check only). */
int __must_check stream_parse_hvm_platform(const void *body, uint32_t len,
                                           const struct stream_domain *dom,
                                           struct stream_hvm_platform *out,
                                           char *err, size_t errlen);
int __must_check stream_parse_hvm_vcpu(const void *body, uint32_t len,
                                       const struct stream_domain *dom,
                                       struct stream_hvm_vcpu *out, char *err,
                                       size_t errlen);
/* A parallel stream's records (the reader checks them itself and keeps
 * the result in the reader; these are its checks). */
int __must_check stream_parse_channels(const void *body, uint32_t len,
                                       struct stream_channels *out, char *err,
                                       size_t errlen);
int __must_check stream_parse_channel(const void *body, uint32_t len,
                                      struct stream_channel *out, char *err,
                                      size_t errlen);
int __must_check stream_parse_device(const void *body, uint32_t len,
                                     struct stream_device *out,
                                     const uint8_t **state, uint32_t *state_len,
                                     char *err, size_t errlen);

static inline uint64_t stream_u64(const uint8_t *p, size_t i)
{
    uint64_t v;
    __builtin_memcpy(&v, p + 8 * i, 8);
    return v;
}

/* Read a whole stream and check every record (the fuzz target's view and
 * `memvisor restore --check`): 0 or the first error.  *records counts the
 * records read.  An extra connection of a parallel stream is checked on
 * its own (its pfns against STREAM_PAGES_LIMIT: it names no domain). */
int __must_check stream_check(struct stream_chan *c, uint64_t *records,
                              char *err, size_t errlen);

const char *stream_record_name(uint32_t type);

#endif
