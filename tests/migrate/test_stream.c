/*
 * test_stream.c - the stream format: CRC-32C, a written stream read back
 * (plain and zstd), and the reader's refusals: bit flips (in every byte
 * of the first 256, every 17th after) and truncations (at every length up
 * to 256, every 31st after) of a valid stream, records out of order, unknown
 * mandatory records, HVM records out of place or malformed, bad versions, bad page words, bad vCPU
 * records; an unknown optional record is skipped.
 */
#include <errno.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include "migrate/stream.h"
#include "sample.h"
#include "testlib.h"

static int check_bytes(const uint8_t *b, size_t len, uint64_t *records,
                       char *err, size_t errlen)
{
    struct stream_chan c;

    stream_chan_mem(&c, b, len);
    err[0] = '\0';
    return stream_check(&c, records, err, errlen);
}

static void test_crc(void **state)
{
    (void)state;
    assert_int_equal(stream_crc32c(0, "123456789", 9), 0xE3069283u);
    /* in pieces, and the two paths agree on lengths not a multiple of 8 */
    assert_int_equal(stream_crc32c(stream_crc32c(0, "1234", 4), "56789", 5),
                     0xE3069283u);
    assert_int_equal(stream_crc32c(0, "", 0), 0);
}

static void roundtrip(bool zstd)
{
    size_t len;
    uint8_t *b = sample_stream(zstd, &len);
    uint64_t records;
    char err[256];

    assert_non_null(b);
    assert_int_equal(check_bytes(b, len, &records, err, sizeof(err)), 0);
    /* DOMAIN P2M ROUND PAGE_DATA SHARED_INFO VCPU VCPU DEVICE END */
    assert_int_equal(records, 9);
    free(b);
}

static void test_roundtrip(void **state)
{
    (void)state;
    roundtrip(false);
}

static void test_roundtrip_zstd(void **state)
{
    (void)state;
    if (!stream_zstd_available()) {
        skip();
        return;
    }
    roundtrip(true);
}

/* The page data reads back bit for bit, with the zero page elided. */
static void test_page_contents(void **state)
{
    size_t len;
    uint8_t *b = sample_stream(stream_zstd_available(), &len);
    struct stream_chan c;
    struct stream_reader r;
    struct stream_pages p;
    char err[256];
    bool seen = false;

    (void)state;
    assert_non_null(b);
    stream_chan_mem(&c, b, len);
    stream_reader_init(&r, &c);
    assert_int_equal(stream_read_header(&r, err, sizeof(err)), 0);
    while (r.phase != STREAM_PH_DONE) {
        assert_int_equal(stream_read_record(&r, err, sizeof(err)), 0);
        if (r.type != STREAM_REC_PAGE_DATA)
            continue;
        assert_int_equal(stream_parse_pages(r.body, r.len, 16, &p, err,
                                            sizeof(err)), 0);
        assert_int_equal(p.count, 4);
        assert_int_equal(stream_word(&p, 3) & STREAM_PFN_ZERO,
                         STREAM_PFN_ZERO);
        assert_int_equal(stream_word_type(stream_word(&p, 0)),
                         STREAM_TYPE_L4 | STREAM_TYPE_PINNED);
        /* 3 data pages: the third is all 0xa5 */
        for (unsigned i = 0; i < 4096; i++)
            assert_int_equal(p.data[2 * 4096 + i], 0xa5);
        seen = true;
    }
    assert_true(seen);
    stream_reader_fini(&r);
    free(b);
}

/* Every bit flipped, one at a time: refused, with a reason. */
static void test_every_flip(void **state)
{
    size_t len;
    uint8_t *b = sample_stream(false, &len);
    uint64_t records, ops = 0;
    char err[256];

    (void)state;
    assert_non_null(b);
    /* every byte of the headers (image, first records), then every 17th:
     * each byte is under a checksum, the stride keeps the test short */
    for (size_t i = 0; i < len; i += i < 256 ? 1 : 17)
        for (unsigned bit = 0; bit < 8; bit += 3) {
            b[i] ^= (uint8_t)(1u << bit);
            if (check_bytes(b, len, &records, err, sizeof(err)) == 0)
                fail_msg("flip of bit %u of byte %zu accepted", bit, i);
            assert_true(err[0] != '\0');
            b[i] ^= (uint8_t)(1u << bit);
            ops++;
        }
    test_note("%llu bit flips of a %zu-byte stream, all refused",
              (unsigned long long)ops, len);
    free(b);
}

/* Every truncation: refused ("ended"), never a crash. */
static void test_every_truncation(void **state)
{
    size_t len;
    uint8_t *b = sample_stream(stream_zstd_available(), &len);
    uint64_t records;
    char err[256];

    (void)state;
    assert_non_null(b);
    size_t cuts = 0;

    for (size_t n = 0; n < len; n += n < 256 ? 1 : 31, cuts++) {
        uint8_t *t = malloc(n ? n : 1);
        assert_non_null(t);
        memcpy(t, b, n);
        assert_int_not_equal(check_bytes(t, n, &records, err, sizeof(err)), 0);
        assert_true(err[0] != '\0');
        free(t);
    }
    test_note("%zu truncations of a %zu-byte stream refused", cuts, len);
    free(b);
}

/* ---- hand-made streams ---------------------------------------------- */

struct sbuf {
    uint8_t b[1 << 16];
    size_t n;
};

static void put_header(struct sbuf *s, uint16_t major, uint32_t flags)
{
    struct stream_image_header h;

    memset(&h, 0, sizeof(h));
    memcpy(h.magic, STREAM_MAGIC, 8);
    h.major = major;
    h.arch = STREAM_ARCH_X86_64;
    h.page_shift = 12;
    h.flags = flags;
    h.crc = stream_crc32c(0, &h, 28);
    memcpy(s->b + s->n, &h, sizeof(h));
    s->n += sizeof(h);
}

static void put_rec(struct sbuf *s, uint32_t type, const void *body,
                    uint32_t len)
{
    struct stream_record_header h = {.type = type, .length = len};

    h.crc = stream_crc32c(stream_crc32c(0, &h, 12), body, len);
    memcpy(s->b + s->n, &h, sizeof(h));
    s->n += sizeof(h);
    if (len)
        memcpy(s->b + s->n, body, len);
    s->n += len;
    while (s->n % 8)
        s->b[s->n++] = 0;
}

static const struct stream_domain dom2 = {
    .kind = STREAM_DOMAIN_PV64, .nr_vcpus = 1, .nr_pages = 8,
    .start_info_pfn = 0,
};

static void expect_refused(struct sbuf *s, const char *what)
{
    uint64_t records;
    char err[256];

    assert_int_not_equal(check_bytes(s->b, s->n, &records, err, sizeof(err)),
                         0);
    if (!strstr(err, what))
        fail_msg("error \"%s\" does not say \"%s\"", err, what);
}

static void minimal_tail(struct sbuf *s)
{
    uint8_t si[4096] = {0};
    struct stream_pv_vcpu v;

    memset(&v, 0, sizeof(v));
    v.base_pfn = STREAM_PFN_NONE;
    v.user_base_pfn = STREAM_PFN_NONE;
    put_rec(s, STREAM_REC_SHARED_INFO, si, sizeof(si));
    put_rec(s, STREAM_REC_PV_VCPU, &v, sizeof(v));
    put_rec(s, STREAM_REC_END, NULL, 0);
}

/* The smallest parallel stream of 2 connections: its main connection, or
 * its extra one. */
static void parallel_sample(struct sbuf *s, bool extra)
{
    struct stream_channels cs = {.nr = 2, .token = {1}};
    struct stream_channel ch = {.index = 1, .nr = 2, .token = {1}};
    struct stream_barrier b = {1, STREAM_BARRIER_FINAL, 0};

    s->n = 0;
    if (!extra) {
        put_header(s, 1, STREAM_IMG_PARALLEL);
        put_rec(s, STREAM_REC_DOMAIN, &dom2, sizeof(dom2));
        put_rec(s, STREAM_REC_CHANNELS, &cs, sizeof(cs));
        put_rec(s, STREAM_REC_BARRIER, &b, sizeof(b));
        minimal_tail(s);
        return;
    }
    put_header(s, 1, STREAM_IMG_CHANNEL);
    put_rec(s, STREAM_REC_CHANNEL, &ch, sizeof(ch));
    b.flags = 0;
    put_rec(s, STREAM_REC_BARRIER, &b, sizeof(b));
    b.round = 2;
    b.flags = STREAM_BARRIER_FINAL;
    put_rec(s, STREAM_REC_BARRIER, &b, sizeof(b));
    put_rec(s, STREAM_REC_END, NULL, 0);
}

static void test_refusals(void **state)
{
    static struct sbuf s;
    uint64_t records;
    char err[256];
    uint8_t body[8 + 8 + 4096];
    struct stream_page_data ph = {.count = 1};

    (void)state;
    /* minimal valid stream */
    s.n = 0;
    put_header(&s, 1, 0);
    put_rec(&s, STREAM_REC_DOMAIN, &dom2, sizeof(dom2));
    minimal_tail(&s);
    assert_int_equal(check_bytes(s.b, s.n, &records, err, sizeof(err)), 0);

    /* an unknown optional record is skipped */
    s.n = 0;
    put_header(&s, 1, 0);
    put_rec(&s, STREAM_REC_DOMAIN, &dom2, sizeof(dom2));
    put_rec(&s, STREAM_REC_OPTIONAL | 0x4242, "xyz", 3);
    minimal_tail(&s);
    assert_int_equal(check_bytes(s.b, s.n, &records, err, sizeof(err)), 0);

    s.n = 0;
    put_header(&s, 2, 0);
    expect_refused(&s, "version 2.0");

    s.n = 0;
    put_header(&s, 1, 0x100);
    expect_refused(&s, "unknown image header flags");

    s.n = 0;
    put_header(&s, 1, 0);
    put_rec(&s, 0x4242, "xyz", 3);
    expect_refused(&s, "unknown mandatory record");

    s.n = 0;
    put_header(&s, 1, 0);
    put_rec(&s, STREAM_REC_HVM_FIRST + 0x42, "xyz", 3);
    expect_refused(&s, "unknown mandatory record");

    s.n = 0;
    put_header(&s, 1, 0);
    put_rec(&s, STREAM_REC_HVM_PLATFORM, "xyz", 3);
    expect_refused(&s, "HVM_PLATFORM (0x100) out of order");

    s.n = 0;
    put_header(&s, 1, 0);
    put_rec(&s, STREAM_REC_DOMAIN,
            &(struct stream_domain){.kind = STREAM_DOMAIN_HVM, .nr_vcpus = 1,
                                    .nr_pages = 8},
            sizeof(struct stream_domain));
    expect_refused(&s, "an HVM domain of 8 pages");

    /* an HVM stream: no PV records, an HVM_PLATFORM of the right size and
     * RAM end only, then HVM_VCPU, not PV_VCPU */
    {
        static struct stream_hvm_platform plat;
        static struct stream_hvm_vcpu hv;
        static struct stream_pv_vcpu pvv;
        struct stream_domain hd = {.kind = STREAM_DOMAIN_HVM, .nr_vcpus = 1,
                                   .nr_pages = 4096};

        s.n = 0;
        put_header(&s, 1, 0);
        put_rec(&s, STREAM_REC_DOMAIN, &hd, sizeof(hd));
        put_rec(&s, STREAM_REC_SHARED_INFO, body, 4096);
        expect_refused(&s, "SHARED_INFO (0x4) out of order");

        s.n = 0;
        put_header(&s, 1, 0);
        put_rec(&s, STREAM_REC_DOMAIN, &hd, sizeof(hd));
        put_rec(&s, STREAM_REC_HVM_PLATFORM, &plat, sizeof(plat) - 8);
        expect_refused(&s, "HVM_PLATFORM of");

        plat.ram_end = 4096ULL << 12;
        plat.uart.rx_len = STREAM_HVM_UART_RXQ + 1;
        s.n = 0;
        put_header(&s, 1, 0);
        put_rec(&s, STREAM_REC_DOMAIN, &hd, sizeof(hd));
        put_rec(&s, STREAM_REC_HVM_PLATFORM, &plat, sizeof(plat));
        expect_refused(&s, "bad serial port state");

        plat.uart.rx_len = 3;
        hv.nr_msrs = STREAM_HVM_MSRS_MAX + 1;
        s.n = 0;
        put_header(&s, 1, 0);
        put_rec(&s, STREAM_REC_DOMAIN, &hd, sizeof(hd));
        put_rec(&s, STREAM_REC_HVM_PLATFORM, &plat, sizeof(plat));
        put_rec(&s, STREAM_REC_HVM_VCPU, &hv, sizeof(hv));
        expect_refused(&s, "MSRs (at most");

        hv.nr_msrs = 1;
        hv.msrs[1].index = 0x10; /* beyond nr_msrs */
        s.n = 0;
        put_header(&s, 1, 0);
        put_rec(&s, STREAM_REC_DOMAIN, &hd, sizeof(hd));
        put_rec(&s, STREAM_REC_HVM_PLATFORM, &plat, sizeof(plat));
        put_rec(&s, STREAM_REC_HVM_VCPU, &hv, sizeof(hv));
        expect_refused(&s, "not clean");

        hv.msrs[1].index = 0;
        hv.id = 1;
        s.n = 0;
        put_header(&s, 1, 0);
        put_rec(&s, STREAM_REC_DOMAIN, &hd, sizeof(hd));
        put_rec(&s, STREAM_REC_HVM_PLATFORM, &plat, sizeof(plat));
        put_rec(&s, STREAM_REC_HVM_VCPU, &hv, sizeof(hv));
        expect_refused(&s, "vCPU 1 of 1");

        hv.id = 0;
        s.n = 0;
        put_header(&s, 1, 0);
        put_rec(&s, STREAM_REC_DOMAIN, &hd, sizeof(hd));
        put_rec(&s, STREAM_REC_HVM_PLATFORM, &plat, sizeof(plat));
        put_rec(&s, STREAM_REC_PV_VCPU, &pvv, sizeof(pvv));
        expect_refused(&s, "PV_VCPU (0x5) out of order");

        /* and the minimal HVM stream is accepted */
        s.n = 0;
        put_header(&s, 1, 0);
        put_rec(&s, STREAM_REC_DOMAIN, &hd, sizeof(hd));
        put_rec(&s, STREAM_REC_HVM_PLATFORM, &plat, sizeof(plat));
        put_rec(&s, STREAM_REC_HVM_VCPU, &hv, sizeof(hv));
        put_rec(&s, STREAM_REC_END, NULL, 0);
        assert_int_equal(check_bytes(s.b, s.n, &records, err, sizeof(err)), 0);
    }

    s.n = 0;
    put_header(&s, 1, 0);
    put_rec(&s, STREAM_REC_SHARED_INFO, body, 4096);
    expect_refused(&s, "out of order");

    /* a page beyond the domain */
    s.n = 0;
    put_header(&s, 1, 0);
    put_rec(&s, STREAM_REC_DOMAIN, &dom2, sizeof(dom2));
    memcpy(body, &ph, 8);
    memcpy(body + 8, &(uint64_t){8}, 8);
    memset(body + 16, 0, 4096);
    put_rec(&s, STREAM_REC_PAGE_DATA, body, sizeof(body));
    minimal_tail(&s);
    expect_refused(&s, "outside the domain");

    /* an unknown page type */
    s.n = 0;
    put_header(&s, 1, 0);
    put_rec(&s, STREAM_REC_DOMAIN, &dom2, sizeof(dom2));
    memcpy(body + 8, &(uint64_t){(5ULL << 60) | 1}, 8);
    put_rec(&s, STREAM_REC_PAGE_DATA, body, sizeof(body));
    minimal_tail(&s);
    expect_refused(&s, "unknown type");

    /* a length that does not match the data pages */
    s.n = 0;
    put_header(&s, 1, 0);
    put_rec(&s, STREAM_REC_DOMAIN, &dom2, sizeof(dom2));
    memcpy(body + 8, &(uint64_t){STREAM_PFN_ZERO | 1}, 8);
    put_rec(&s, STREAM_REC_PAGE_DATA, body, sizeof(body));
    minimal_tail(&s);
    expect_refused(&s, "bytes for 1 words");

    /* a vCPU whose base pointer is outside the domain */
    {
        struct stream_pv_vcpu v;
        uint8_t si[4096] = {0};

        memset(&v, 0, sizeof(v));
        v.flags = STREAM_VCPU_INITIALISED;
        v.base_pfn = 99;
        v.user_base_pfn = STREAM_PFN_NONE;
        s.n = 0;
        put_header(&s, 1, 0);
        put_rec(&s, STREAM_REC_DOMAIN, &dom2, sizeof(dom2));
        put_rec(&s, STREAM_REC_SHARED_INFO, si, sizeof(si));
        put_rec(&s, STREAM_REC_PV_VCPU, &v, sizeof(v));
        put_rec(&s, STREAM_REC_END, NULL, 0);
        expect_refused(&s, "base pointer outside");
    }

    /* a record longer than the limit */
    {
        struct stream_record_header h = {.type = STREAM_REC_DOMAIN,
                                         .length = STREAM_REC_MAX + 1};
        s.n = 0;
        put_header(&s, 1, 0);
        memcpy(s.b + s.n, &h, sizeof(h));
        s.n += sizeof(h);
        expect_refused(&s, "over the limit");
    }

    /* parallel streams: the records and their order */
    {
        struct stream_channels cs = {.nr = 2, .token = {1}};
        struct stream_channel ch = {.index = 1, .nr = 2, .token = {1}};
        struct stream_barrier bf = {1, STREAM_BARRIER_FINAL, 0};
        struct stream_barrier b3 = {3, STREAM_BARRIER_FINAL, 0};

        /* the smallest valid main stream and extra connection */
        parallel_sample(&s, false);
        assert_int_equal(check_bytes(s.b, s.n, &records, err, sizeof(err)),
                         0);
        parallel_sample(&s, true);
        assert_int_equal(check_bytes(s.b, s.n, &records, err, sizeof(err)),
                         0);

        s.n = 0;
        put_header(&s, 1, STREAM_IMG_PARALLEL | STREAM_IMG_CHANNEL);
        expect_refused(&s, "both PARALLEL and CHANNEL");

        s.n = 0; /* a BARRIER in a stream on one connection */
        put_header(&s, 1, 0);
        put_rec(&s, STREAM_REC_DOMAIN, &dom2, sizeof(dom2));
        put_rec(&s, STREAM_REC_BARRIER, &bf, sizeof(bf));
        expect_refused(&s, "BARRIER (0xa) out of order");

        s.n = 0; /* CHANNELS missing */
        put_header(&s, 1, STREAM_IMG_PARALLEL);
        put_rec(&s, STREAM_REC_DOMAIN, &dom2, sizeof(dom2));
        put_rec(&s, STREAM_REC_BARRIER, &bf, sizeof(bf));
        expect_refused(&s, "out of order");

        s.n = 0; /* the tail before the final BARRIER */
        put_header(&s, 1, STREAM_IMG_PARALLEL);
        put_rec(&s, STREAM_REC_DOMAIN, &dom2, sizeof(dom2));
        put_rec(&s, STREAM_REC_CHANNELS, &cs, sizeof(cs));
        minimal_tail(&s);
        expect_refused(&s, "SHARED_INFO before the final BARRIER");

        s.n = 0; /* page data after it */
        put_header(&s, 1, STREAM_IMG_PARALLEL);
        put_rec(&s, STREAM_REC_DOMAIN, &dom2, sizeof(dom2));
        put_rec(&s, STREAM_REC_CHANNELS, &cs, sizeof(cs));
        put_rec(&s, STREAM_REC_BARRIER, &bf, sizeof(bf));
        memcpy(body, &ph, 8);
        memcpy(body + 8, &(uint64_t){1}, 8);
        put_rec(&s, STREAM_REC_PAGE_DATA, body, sizeof(body));
        expect_refused(&s, "after the final BARRIER");

        s.n = 0; /* a round skipped */
        put_header(&s, 1, STREAM_IMG_PARALLEL);
        put_rec(&s, STREAM_REC_DOMAIN, &dom2, sizeof(dom2));
        put_rec(&s, STREAM_REC_CHANNELS, &cs, sizeof(cs));
        put_rec(&s, STREAM_REC_BARRIER, &b3, sizeof(b3));
        expect_refused(&s, "round 1 was due");

        s.n = 0; /* one connection only, or no token */
        put_header(&s, 1, STREAM_IMG_PARALLEL);
        put_rec(&s, STREAM_REC_DOMAIN, &dom2, sizeof(dom2));
        cs.nr = 1;
        put_rec(&s, STREAM_REC_CHANNELS, &cs, sizeof(cs));
        expect_refused(&s, "1 connections");
        cs.nr = 2;
        memset(cs.token, 0, sizeof(cs.token));
        s.n = 0;
        put_header(&s, 1, STREAM_IMG_PARALLEL);
        put_rec(&s, STREAM_REC_DOMAIN, &dom2, sizeof(dom2));
        put_rec(&s, STREAM_REC_CHANNELS, &cs, sizeof(cs));
        expect_refused(&s, "no token");

        s.n = 0; /* an extra connection naming itself the main one */
        ch.index = 0;
        put_header(&s, 1, STREAM_IMG_CHANNEL);
        put_rec(&s, STREAM_REC_CHANNEL, &ch, sizeof(ch));
        expect_refused(&s, "connection 0 of 2");

        s.n = 0; /* an extra connection with a domain of its own */
        put_header(&s, 1, STREAM_IMG_CHANNEL);
        put_rec(&s, STREAM_REC_DOMAIN, &dom2, sizeof(dom2));
        expect_refused(&s, "DOMAIN (0x1) out of order");
    }

    /* END missing: the stream just stops */
    s.n = 0;
    put_header(&s, 1, 0);
    put_rec(&s, STREAM_REC_DOMAIN, &dom2, sizeof(dom2));
    expect_refused(&s, "ended");
}

/* `test_stream --corpus DIR` writes the sample streams that seed the fuzz
 * corpus (tests/fuzz/corpus/stream/). */
static int write_corpus(const char *dir)
{
    for (int z = 0; z < 2; z++) {
        size_t len;
        uint8_t *b = sample_stream(z, &len);
        char path[4096];
        FILE *fp;

        if (!b)
            return 1;
        snprintf(path, sizeof(path), "%s/sample-%s", dir, z ? "zstd" : "plain");
        fp = fopen(path, "wb");
        if (!fp || fwrite(b, 1, len, fp) != len)
            return 1;
        fclose(fp);
        free(b);
    }
    for (int x = 0; x < 2; x++) {
        static struct sbuf s;
        char path[4096];
        FILE *fp;

        parallel_sample(&s, x);
        snprintf(path, sizeof(path), "%s/sample-parallel-%s", dir,
                 x ? "extra" : "main");
        fp = fopen(path, "wb");
        if (!fp || fwrite(s.b, 1, s.n, fp) != s.n)
            return 1;
        fclose(fp);
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "--corpus") == 0)
        return write_corpus(argv[2]);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_crc),
        cmocka_unit_test(test_roundtrip),
        cmocka_unit_test(test_roundtrip_zstd),
        cmocka_unit_test(test_page_contents),
        cmocka_unit_test(test_every_flip),
        cmocka_unit_test(test_every_truncation),
        cmocka_unit_test(test_refusals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
