/*
 * check.h - self-checking page contents: every page a workload writes holds
 * its own pfn and counter and a body derived from them, so a reader can tell
 * a page that is stale (an older counter), misplaced (another pfn: a mapping
 * points at the wrong frame) or torn (header and body disagree).
 *
 * Layout of a checked page (512 64-bit words):
 *   w[0]  CHECK_MAGIC ^ pfn      w[1]  pfn
 *   w[2]  counter                w[3]  tag (the writer: vCPU, workload)
 *   w[4..511]  check_word(pfn, counter, tag, i)
 *
 * Pure functions, built into the guest and the host unit test.
 */
#ifndef MEMVISOR_GUEST_CHECK_H
#define MEMVISOR_GUEST_CHECK_H

#include <stdbool.h>
#include <stdint.h>

#define CHECK_WORDS 512
#define CHECK_MAGIC 0x6d656d7669736f72ULL /* "memvisor" */

enum check_result {
    CHECK_OK = 0,
    CHECK_BAD_MAGIC,   /* not a checked page of this pfn */
    CHECK_BAD_PFN,     /* a page of another pfn */
    CHECK_BAD_COUNTER, /* stale or from the future */
    CHECK_BAD_TAG,
    CHECK_BAD_BODY, /* header right, body torn */
};

static inline uint64_t check_word(uint64_t pfn, uint64_t counter, uint64_t tag,
                                  unsigned i)
{
    uint64_t x = (pfn << 24) ^ (counter * 0x9E3779B97F4A7C15ULL) ^ (tag << 56) ^
                 ((uint64_t)i * 0xD6E8FEB86659FD93ULL);
    return x ^ (x >> 29);
}

void check_fill(uint64_t *page, uint64_t pfn, uint64_t counter, uint64_t tag);
/* Verifies the page against (pfn, counter, tag); *bad_word (may be NULL)
 * gets the index of the first word that differs. */
enum check_result check_verify(const uint64_t *page, uint64_t pfn,
                               uint64_t counter, uint64_t tag,
                               unsigned *bad_word);
/* Whether all 512 words are zero (a freshly scrubbed frame). */
bool check_is_zero(const uint64_t *page);
const char *check_result_name(enum check_result r);

#endif
