/*
 * klib.h - the guest kernel's small library: strings, a formatter, the
 * command-line parser and a PRNG.
 *
 * Pure functions with no state of their own, built both into the
 * freestanding guest and into the host unit test (test_guest.c).  Names carry
 * a k prefix so that the host build never clashes with the C library.
 *
 * Contract:
 *  1. kvsnprintf() never writes more than size bytes and always terminates
 *     the buffer when size > 0; it returns the length it would have written.
 *     Conversions: %s %c %d %i %u %x %p %%, with l/ll/z length modifiers, a
 *     field width and the 0 and - flags.
 *  2. The command line is words separated by spaces: bare words (workload
 *     names) and key=value options; cmdline_get() and cmdline_has() never
 *     read past the terminating NUL or past MAX_GUEST_CMDLINE bytes.
 *  3. krand() is xorshift64*: deterministic for a given seed, never 0 state.
 */
#ifndef MEMVISOR_GUEST_KLIB_H
#define MEMVISOR_GUEST_KLIB_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

void *kmemset(void *dst, int c, size_t n);
void *kmemcpy(void *dst, const void *src, size_t n);
int kmemcmp(const void *a, const void *b, size_t n);
size_t kstrnlen(const char *s, size_t max);
int kstrncmp(const char *a, const char *b, size_t n);

int kvsnprintf(char *buf, size_t size, const char *fmt, va_list ap);
int ksnprintf(char *buf, size_t size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* The value of the first "key=value" word as a number (decimal or 0x hex),
 * or def when the key is absent or malformed. */
uint64_t cmdline_get(const char *cmdline, size_t max, const char *key,
                     uint64_t def);
/* Whether the bare word appears on the command line. */
bool cmdline_has(const char *cmdline, size_t max, const char *word);

struct krand {
    uint64_t state;
};
void krand_seed(struct krand *r, uint64_t seed);
uint64_t krand(struct krand *r);
/* Uniform in [0, bound) for bound > 0. */
uint64_t krand_below(struct krand *r, uint64_t bound);

#endif
