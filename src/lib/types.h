/*
 * types.h - typesafe frame numbers and addresses.
 *
 * An mfn (machine frame: a page of the frame pool), a gfn (a guest frame:
 * what the guest sees, the pfn of a PV guest) and a gpa (a guest-physical
 * byte address) are distinct one-member structs so that one can never be
 * passed where another is expected.  _mfn()/mfn_x() wrap and unwrap.
 */
#ifndef MEMVISOR_LIB_TYPES_H
#define MEMVISOR_LIB_TYPES_H

#include <stdbool.h>
#include <stdint.h>

#define PAGE_SHIFT 12
#define PAGE_SIZE (1ULL << PAGE_SHIFT)
#define PAGE_MASK (~(PAGE_SIZE - 1))

#define TYPESAFE(name)                                                         \
    typedef struct {                                                           \
        uint64_t name;                                                         \
    } name##_t;                                                                \
    static inline name##_t _##name(uint64_t v)                                 \
    {                                                                          \
        return (name##_t){v};                                                  \
    }                                                                          \
    static inline uint64_t name##_x(name##_t v)                                \
    {                                                                          \
        return v.name;                                                         \
    }                                                                          \
    static inline bool name##_eq(name##_t a, name##_t b)                       \
    {                                                                          \
        return a.name == b.name;                                               \
    }

TYPESAFE(mfn)
TYPESAFE(gfn)
TYPESAFE(gpa)

#undef TYPESAFE

#define INVALID_MFN _mfn(~0ULL)
#define INVALID_GFN _gfn(~0ULL)

static inline gfn_t gpa_to_gfn(gpa_t a)
{
    return _gfn(gpa_x(a) >> PAGE_SHIFT);
}

static inline gpa_t gfn_to_gpa(gfn_t g)
{
    return _gpa(gfn_x(g) << PAGE_SHIFT);
}

/* A domain id, as in Xen's ABI (DOMID_SELF and friends live in include/). */
typedef uint16_t domid_t;
#define DOMID_NONE ((domid_t)0xFFFF)

#endif
