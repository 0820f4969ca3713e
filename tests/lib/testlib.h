/*
 * testlib.h - helpers shared by the test programs.
 *
 * Tests are cmocka programs that print TAP (CMOCKA_MESSAGE_OUTPUT=TAP is set
 * by meson).  A test owns nothing of the exit code: cmocka does.
 * Randomized tests take their seed from MEMVISOR_SEED when set, print it, and
 * print how many operations they ran.
 */
#ifndef MEMVISOR_TESTLIB_H
#define MEMVISOR_TESTLIB_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
/* cmocka.h needs the four includes above. */
#include <cmocka.h>

#include "lib/compiler.h"

/* A seed for randomized tests: MEMVISOR_SEED or a fixed default; printed. */
uint64_t test_seed(uint64_t fallback);
/* xorshift64* */
static inline uint64_t test_rand(uint64_t *state)
{
    uint64_t x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return x * 0x2545F4914F6CDD1DULL;
}
/* Uniform in [0, n), n > 0. */
static inline uint64_t test_rand_below(uint64_t *state, uint64_t n)
{
    return test_rand(state) % n;
}
/* Multiply an operation budget by MEMVISOR_TEST_SCALE (default 1). */
uint64_t test_scale(uint64_t n);
/* A note that reaches the TAP log as a comment line. */
void test_note(const char *fmt, ...) __printf(1, 2);
/*
 * 1 if /dev/kvm can be opened read-write; otherwise prints a loud
 * "SKIP: /dev/kvm absent" note and returns 0.
 */
int test_have_kvm(void);

#endif
