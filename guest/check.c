/* check.c - self-checking page contents (see check.h). */
#include "check.h"

void check_fill(uint64_t *page, uint64_t pfn, uint64_t counter, uint64_t tag)
{
    page[0] = CHECK_MAGIC ^ pfn;
    page[1] = pfn;
    page[2] = counter;
    page[3] = tag;
    for (unsigned i = 4; i < CHECK_WORDS; i++)
        page[i] = check_word(pfn, counter, tag, i);
}

enum check_result check_verify(const uint64_t *page, uint64_t pfn,
                               uint64_t counter, uint64_t tag,
                               unsigned *bad_word)
{
    unsigned dummy;
    if (!bad_word)
        bad_word = &dummy;
    *bad_word = 0;
    if (page[1] != pfn) {
        *bad_word = 1;
        return page[0] == (CHECK_MAGIC ^ page[1]) ? CHECK_BAD_PFN
                                                  : CHECK_BAD_MAGIC;
    }
    if (page[0] != (CHECK_MAGIC ^ pfn))
        return CHECK_BAD_MAGIC;
    if (page[2] != counter) {
        *bad_word = 2;
        return CHECK_BAD_COUNTER;
    }
    if (page[3] != tag) {
        *bad_word = 3;
        return CHECK_BAD_TAG;
    }
    for (unsigned i = 4; i < CHECK_WORDS; i++) {
        if (page[i] != check_word(pfn, counter, tag, i)) {
            *bad_word = i;
            return CHECK_BAD_BODY;
        }
    }
    return CHECK_OK;
}

bool check_is_zero(const uint64_t *page)
{
    uint64_t acc = 0;
    for (unsigned i = 0; i < CHECK_WORDS; i++)
        acc |= page[i];
    return acc == 0;
}

const char *check_result_name(enum check_result r)
{
    switch (r) {
    case CHECK_OK:
        return "ok";
    case CHECK_BAD_MAGIC:
        return "bad-magic";
    case CHECK_BAD_PFN:
        return "wrong-pfn";
    case CHECK_BAD_COUNTER:
        return "stale-counter";
    case CHECK_BAD_TAG:
        return "wrong-tag";
    case CHECK_BAD_BODY:
        return "torn-body";
    }
    return "?";
}
