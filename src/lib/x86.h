/*
 * x86.h - facts of the x86-64 architecture that several modules need,
 * written once.
 *
 * Owns nothing.  Holds no policy: a rule of memvisor's own (a guest address
 * must also lie outside the hypervisor's range, say) is written at the call
 * site that needs it, next to its reason, not folded into these helpers.
 */
#ifndef MEMVISOR_LIB_X86_H
#define MEMVISOR_LIB_X86_H

#include <stdbool.h>
#include <stdint.h>

/*
 * Canonical virtual addresses (48-bit linear addresses, 4-level paging):
 * bits 63..47 all equal.  The lower half is [0, 2^47), the upper half is
 * [0xffff800000000000, 2^64); anything between is the non-canonical hole,
 * where a load, a store, a fetch or an iret raises #GP.
 */
#define X86_CANONICAL_LOWER_END 0x0000800000000000ULL
#define X86_CANONICAL_UPPER_START 0xffff800000000000ULL

static inline bool x86_canonical(uint64_t va)
{
    return va < X86_CANONICAL_LOWER_END || va >= X86_CANONICAL_UPPER_START;
}

/* va lies in the lower canonical half (the other half is the upper one,
 * or the hole). */
static inline bool x86_canonical_lower(uint64_t va)
{
    return va < X86_CANONICAL_LOWER_END;
}

#endif
