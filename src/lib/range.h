/*
 * range.h - the one overflow-checked (address, length) helper.
 *
 * Every (address, length) that comes from a guest, a device model or a
 * stream passes through range_check() before it is used: the range must be
 * non-wrapping and lie within [0, limit).  Errors: -EFAULT when it does not.
 */
#ifndef MEMVISOR_LIB_RANGE_H
#define MEMVISOR_LIB_RANGE_H

#include <errno.h>
#include <stdint.h>

#include "lib/compiler.h"

static inline __must_check int range_check(uint64_t addr, uint64_t len,
                                           uint64_t limit)
{
    uint64_t end;

    if (__builtin_add_overflow(addr, len, &end))
        return -EFAULT;
    if (end > limit)
        return -EFAULT;
    return 0;
}

/* Multiply count * size without overflow; -EOVERFLOW if it would. */
static inline __must_check int range_mul(uint64_t count, uint64_t size,
                                         uint64_t *out)
{
    if (__builtin_mul_overflow(count, size, out))
        return -EOVERFLOW;
    return 0;
}

#endif
