/*
 * sample.c - a small valid stream, written through the stream writer to a
 * pipe-free memory file (open_memstream's fd is not available: a tmpfile).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "migrate/stream.h"
#include "sample.h"

uint8_t *sample_stream(bool zstd, size_t *len)
{
    struct stream_chan c;
    struct stream_writer w;
    struct stream_domain dom = {
        .kind = STREAM_DOMAIN_PV64, .nr_vcpus = 2, .nr_pages = 16,
        .p2m_va = 0xffffffff80100000ULL, .start_info_va = 0xffffffff80101000ULL,
        .start_info_pfn = 1,
    };
    uint64_t p2m[2] = {1, 0};
    uint8_t pages[3][4096];
    struct stream_page_data ph = {.count = 4};
    uint64_t words[4] = {
        ((uint64_t)(STREAM_TYPE_L4 | STREAM_TYPE_PINNED) << 60) | 2,
        ((uint64_t)STREAM_TYPE_L1 << 60) | 3,
        ((uint64_t)STREAM_TYPE_NOTAB << 60) | 4,
        ((uint64_t)STREAM_TYPE_NOTAB << 60) | STREAM_PFN_ZERO | 5,
    };
    struct stream_round rd = {.round = 1, .flags = 0, .pages = 4};
    struct stream_device dv = {.kind = 1, .instance = 0, .version = 1};
    uint8_t si[4096] = {0};
    uint8_t *buf = NULL;
    FILE *fp = tmpfile();
    long n;

    p2m[0] = 1;
    if (!fp)
        return NULL;
    memset(pages, 0, sizeof(pages));
    ((uint64_t *)(void *)pages[0])[0] = (3ULL << 12) | 0x67;
    ((uint64_t *)(void *)pages[1])[0] = (4ULL << 12) | 0x67;
    memset(pages[2], 0xa5, 4096);
    stream_chan_fd(&c, fileno(fp));
    if (stream_writer_init(&w, &c, zstd) < 0)
        goto out;
    if (stream_write_header(&w, 0) < 0 ||
        stream_write_record(&w, STREAM_REC_DOMAIN, &dom, sizeof(dom), NULL, 0,
                            NULL, 0) < 0 ||
        stream_write_record(&w, STREAM_REC_PV_P2M_FRAMES,
                            &(uint64_t){1}, 8, p2m, 8, NULL, 0) < 0 ||
        stream_write_record(&w, STREAM_REC_ROUND, &rd, sizeof(rd), NULL, 0,
                            NULL, 0) < 0 ||
        stream_write_record(&w, STREAM_REC_PAGE_DATA, &ph, sizeof(ph), words,
                            sizeof(words), pages, sizeof(pages)) < 0 ||
        stream_write_record(&w, STREAM_REC_SHARED_INFO, si, sizeof(si), NULL,
                            0, NULL, 0) < 0)
        goto fini;
    for (uint32_t i = 0; i < 2; i++) {
        struct stream_pv_vcpu v;

        memset(&v, 0, sizeof(v));
        v.id = i;
        v.flags = STREAM_VCPU_INITIALISED | STREAM_VCPU_UP |
                  STREAM_VCPU_KERNEL_MODE;
        v.base_pfn = 2;
        v.user_base_pfn = STREAM_PFN_NONE;
        v.rip = 0xffffffff80001000ULL;
        if (stream_write_record(&w, STREAM_REC_PV_VCPU, &v, sizeof(v), NULL, 0,
                                NULL, 0) < 0)
            goto fini;
    }
    if (stream_write_record(&w, STREAM_REC_DEVICE, &dv, sizeof(dv), "state", 5,
                            NULL, 0) < 0 ||
        stream_write_record(&w, STREAM_REC_END, NULL, 0, NULL, 0, NULL, 0) < 0)
        goto fini;
    n = ftell(fp);
    if (n <= 0 || fseek(fp, 0, SEEK_SET) < 0)
        goto fini;
    n = lseek(fileno(fp), 0, SEEK_END);
    lseek(fileno(fp), 0, SEEK_SET);
    buf = malloc((size_t)n);
    if (buf && read(fileno(fp), buf, (size_t)n) != n) {
        free(buf);
        buf = NULL;
    }
    *len = (size_t)n;
fini:
    stream_writer_fini(&w);
out:
    fclose(fp);
    return buf;
}
