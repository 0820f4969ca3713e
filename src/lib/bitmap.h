/*
 * bitmap.h - bitmaps of 64-bit words.
 *
 * A bitmap of n bits is DIV_ROUND_UP(n, 64) words, bit i in word i / 64 at
 * position i % 64 (the layout KVM_GET_DIRTY_LOG uses on x86-64).  The plain
 * functions need external locking; the bitmap_atomic_* ones may race with
 * each other (relaxed read-modify-writes; exchange for harvesting).
 * Errors: bitmap_alloc returns NULL when out of memory.
 */
#ifndef MEMVISOR_LIB_BITMAP_H
#define MEMVISOR_LIB_BITMAP_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "lib/compiler.h"

#define BITS_PER_WORD 64
#define BITMAP_WORDS(n) DIV_ROUND_UP((uint64_t)(n), BITS_PER_WORD)

uint64_t *bitmap_alloc(uint64_t nbits);
void bitmap_free(uint64_t *map);

static inline void bitmap_set(uint64_t *map, uint64_t i)
{
    map[i / 64] |= 1ULL << (i % 64);
}

static inline void bitmap_clear(uint64_t *map, uint64_t i)
{
    map[i / 64] &= ~(1ULL << (i % 64));
}

static inline bool bitmap_test(const uint64_t *map, uint64_t i)
{
    return (map[i / 64] >> (i % 64)) & 1;
}

void bitmap_set_range(uint64_t *map, uint64_t start, uint64_t len);
void bitmap_clear_range(uint64_t *map, uint64_t start, uint64_t len);
/* Number of set bits in [0, nbits). */
uint64_t bitmap_weight(const uint64_t *map, uint64_t nbits);
/* First set bit at or after start, or nbits if none. */
uint64_t bitmap_find_next(const uint64_t *map, uint64_t nbits, uint64_t start);
/* First clear bit at or after start, or nbits if none. */
uint64_t bitmap_find_next_zero(const uint64_t *map, uint64_t nbits,
                               uint64_t start);

static inline void bitmap_atomic_set(uint64_t *map, uint64_t i)
{
    atomic_fetch_or_explicit((_Atomic uint64_t *)&map[i / 64],
                             1ULL << (i % 64), memory_order_relaxed);
}

static inline bool bitmap_atomic_test(const uint64_t *map, uint64_t i)
{
    uint64_t w = atomic_load_explicit((const _Atomic uint64_t *)&map[i / 64],
                                      memory_order_relaxed);
    return (w >> (i % 64)) & 1;
}

static inline bool bitmap_atomic_test_and_clear(uint64_t *map, uint64_t i)
{
    uint64_t bit = 1ULL << (i % 64);
    return atomic_fetch_and_explicit((_Atomic uint64_t *)&map[i / 64], ~bit,
                                     memory_order_relaxed) &
           bit;
}

/* Take word w and leave it zero: the harvest primitive. */
static inline uint64_t bitmap_atomic_xchg_word(uint64_t *map, uint64_t w)
{
    return atomic_exchange_explicit((_Atomic uint64_t *)&map[w], 0,
                                    memory_order_acq_rel);
}

static inline void bitmap_atomic_or_word(uint64_t *map, uint64_t w,
                                         uint64_t bits)
{
    atomic_fetch_or_explicit((_Atomic uint64_t *)&map[w], bits,
                             memory_order_acq_rel);
}

#endif
