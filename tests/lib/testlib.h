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
/* Every line of text as a TAP comment, under a "what:" line (cmocka's own
 * failure messages go to stderr, which logs may cut short). */
void test_note_lines(const char *what, const char *text);
/* The whole file at path, malloc'ed (*size bytes), or NULL. */
uint8_t *test_load_file(const char *path, size_t *size);
/* A new file from the mkstemp() template tmpl (rewritten), bytes long
 * (zeros): 0 or -errno. */
int test_make_file(char *tmpl, size_t bytes);
/* Run a shell command; its output (stdout, and stderr if the command
 * redirects it) in out (NUL-terminated, cut at len - 1 bytes): its exit
 * status (0-255), or -1 if it did not exit normally or could not start. */
int test_run_cmd(const char *cmd, char *out, size_t len);
/* Monotonic seconds, and a sleep in milliseconds (polling, never as
 * synchronisation). */
double test_now_s(void);
void test_sleep_ms(unsigned ms);

/*
 * Skips are skips.  cmocka 1.1.5 prints a skip() as "not ok N # SKIP",
 * which TAP readers (meson among them) count as a failure.  Every program
 * that links this library has its standard output rewritten from the
 * first line on (a constructor: it cannot be forgotten, and it must come
 * before cmocka's plan): such a line becomes "ok N # SKIP ...", the TAP of
 * a skipped subtest.  Nothing else is changed.
 */

/*
 * KVM.  KVM is usable when kvm_sys_open() succeeds on /dev/kvm (it opens,
 * speaks API version 12, has user memory) and MEMVISOR_TEST_NO_KVM is unset
 * (or "0"); set it to 1 to take the no-KVM path on a machine with KVM.
 *
 * test_require_kvm(): first thing in main() of a program whose every test
 * needs KVM.  Without KVM it prints the TAP plan "1..0 # SKIP <reason>" (a
 * program skipped, counted as such) and exits 0; with KVM it prints the
 * flavour as a TAP comment ("# kvm: KVM-PVM, shadow MMU") and returns.
 *
 * test_have_kvm(): for one subtest of a program whose other subtests do not
 * need KVM: 1 if usable (the flavour is printed once), else 0 with a loud
 * note; the subtest then calls skip().
 *
 * test_kvm_flavour(): the flavour of the usable KVM (kvm_sys_flavour());
 * NULL if sysfs does not say (then a test whose expectation depends on the
 * flavour skips that expectation, and says so).
 */
struct kvm_flavour;
void test_require_kvm(void);
int test_have_kvm(void);
const struct kvm_flavour *test_kvm_flavour(void);
/* test_kvm_flavour()'s name, or "unknown flavour". */
const char *test_kvm_flavour_name(void);

#endif
