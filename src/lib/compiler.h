/*
 * compiler.h - small language helpers used everywhere.
 *
 * Owns nothing.  Every fallible function in memvisor returns 0 or -errno and
 * is marked __must_check so that an ignored error is a build failure.
 */
#ifndef MEMVISOR_LIB_COMPILER_H
#define MEMVISOR_LIB_COMPILER_H

#include <stddef.h>
#include <stdint.h>

#define __must_check __attribute__((warn_unused_result))
#define __unused __attribute__((unused))
#define __packed __attribute__((packed))
/* a switch case that continues into the next (gcc and clang) */
#define fallthrough __attribute__((fallthrough))
#define __printf(a, b) __attribute__((format(printf, a, b)))
#define likely(x) __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define container_of(ptr, type, member)                                        \
    ((type *)(void *)((char *)(ptr) - offsetof(type, member)))

#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))
#define DIV_ROUND_UP(n, d) (((n) + (d) - 1) / (d))
#define IS_ALIGNED(x, a) (((x) & ((__typeof__(x))(a) - 1)) == 0)
#define ALIGN_UP(x, a) (((x) + ((__typeof__(x))(a) - 1)) & ~((__typeof__(x))(a) - 1))
#define ALIGN_DOWN(x, a) ((x) & ~((__typeof__(x))(a) - 1))

#define BUILD_BUG_ON(cond) _Static_assert(!(cond), #cond)

/*
 * BUG_ON is for hypervisor-internal corruption that must not go on (a frame
 * count underflow, a lock released twice).  Nothing a guest, a device model
 * or a stream byte can do may reach one.
 */
void lib_bug(const char *file, int line, const char *cond)
    __attribute__((noreturn));
#define BUG_ON(cond)                                                           \
    do {                                                                       \
        if (unlikely(cond))                                                    \
            lib_bug(__FILE__, __LINE__, #cond);                                \
    } while (0)

#endif
