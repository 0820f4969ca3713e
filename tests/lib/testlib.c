#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "testlib.h"

uint64_t test_seed(uint64_t fallback)
{
    const char *s = getenv("MEMVISOR_SEED");
    uint64_t seed = s ? strtoull(s, NULL, 0) : fallback;

    if (!seed)
        seed = 1;
    test_note("seed %" PRIu64 " (set MEMVISOR_SEED to repeat)", seed);
    return seed;
}

uint64_t test_scale(uint64_t n)
{
    const char *s = getenv("MEMVISOR_TEST_SCALE");
    double k = s ? strtod(s, NULL) : 1.0;

    if (k <= 0)
        k = 1.0;
    return (uint64_t)((double)n * k) ?: 1;
}

/* Every line of the note becomes its own TAP comment line. */
void test_note(const char *fmt, ...)
{
    va_list ap;
    char *text = NULL, *p, *nl;
    int n;

    va_start(ap, fmt);
    n = vasprintf(&text, fmt, ap);
    va_end(ap);
    if (n < 0) {
        printf("# (note lost: out of memory)\n");
        fflush(stdout);
        return;
    }
    p = text;
    do {
        nl = strchr(p, '\n');
        printf("# %.*s\n", (int)(nl ? nl - p : (long)strlen(p)), p);
        p = nl ? nl + 1 : NULL;
    } while (p && *p);
    free(text);
    fflush(stdout);
}

int test_have_kvm(void)
{
    int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);

    if (fd < 0) {
        test_note("SKIP: /dev/kvm absent or not usable: KVM tests did NOT run");
        fprintf(stderr, "\n*** SKIPPING KVM TESTS: /dev/kvm is not usable ***\n\n");
        return 0;
    }
    close(fd);
    return 1;
}
