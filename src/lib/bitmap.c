#include <stdlib.h>

#include "lib/bitmap.h"

uint64_t *bitmap_alloc(uint64_t nbits)
{
    uint64_t words = BITMAP_WORDS(nbits);

    return calloc(words ? words : 1, sizeof(uint64_t));
}

void bitmap_free(uint64_t *map)
{
    free(map);
}

static uint64_t mask_from(uint64_t bit)
{
    return ~0ULL << (bit % 64);
}

static uint64_t mask_upto(uint64_t end)
{
    return (end % 64) ? ~0ULL >> (64 - end % 64) : ~0ULL;
}

void bitmap_set_range(uint64_t *map, uint64_t start, uint64_t len)
{
    uint64_t end = start + len, w;

    if (!len)
        return;
    for (w = start / 64; w <= (end - 1) / 64; w++) {
        uint64_t m = ~0ULL;
        if (w == start / 64)
            m &= mask_from(start);
        if (w == (end - 1) / 64)
            m &= mask_upto(end);
        map[w] |= m;
    }
}

void bitmap_clear_range(uint64_t *map, uint64_t start, uint64_t len)
{
    uint64_t end = start + len, w;

    if (!len)
        return;
    for (w = start / 64; w <= (end - 1) / 64; w++) {
        uint64_t m = ~0ULL;
        if (w == start / 64)
            m &= mask_from(start);
        if (w == (end - 1) / 64)
            m &= mask_upto(end);
        map[w] &= ~m;
    }
}

uint64_t bitmap_weight(const uint64_t *map, uint64_t nbits)
{
    uint64_t n = 0, w;

    for (w = 0; w < nbits / 64; w++)
        n += (uint64_t)__builtin_popcountll(map[w]);
    if (nbits % 64)
        n += (uint64_t)__builtin_popcountll(map[w] & mask_upto(nbits));
    return n;
}

static uint64_t find_next(const uint64_t *map, uint64_t nbits, uint64_t start,
                          uint64_t invert)
{
    uint64_t w, word;

    if (start >= nbits)
        return nbits;
    w = start / 64;
    word = (map[w] ^ invert) & mask_from(start);
    for (;;) {
        if (word) {
            uint64_t bit = w * 64 + (uint64_t)__builtin_ctzll(word);
            return bit < nbits ? bit : nbits;
        }
        if (++w >= BITMAP_WORDS(nbits))
            return nbits;
        word = map[w] ^ invert;
    }
}

uint64_t bitmap_find_next(const uint64_t *map, uint64_t nbits, uint64_t start)
{
    return find_next(map, nbits, start, 0);
}

uint64_t bitmap_find_next_zero(const uint64_t *map, uint64_t nbits,
                               uint64_t start)
{
    return find_next(map, nbits, start, ~0ULL);
}
