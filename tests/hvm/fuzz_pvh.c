/*
 * fuzz_pvh.c - libFuzzer target: pvh_parse() on arbitrary bytes, and
 * pvh_build() of what parses into a 16 MiB fake guest (a write outside it
 * aborts).
 */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "boot/pvh.h"

#define RAM (16u << 20)

static int write_ram(void *opaque, uint64_t gpa, const void *src, uint64_t len)
{
    if (gpa > RAM || len > RAM - gpa)
        abort(); /* the loader wrote outside the RAM it was given */
    memcpy((uint8_t *)opaque + gpa, src, len);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static uint8_t *guest;
    struct pvh_kernel k;
    uint8_t *copy = malloc(size ? size : 1);

    if (!guest)
        guest = calloc(1, RAM);
    if (!copy || !guest) {
        free(copy);
        return 0;
    }
    memcpy(copy, data, size);
    if (pvh_parse(copy, size, &k) == 0) {
        struct pvh_params p = {copy, size, RAM, "fuzz", copy, size / 2,
                               1 + (unsigned)(size % 32)};
        struct pvh_layout l;
        char err[128];

        if (k.nr_seg == 0 || k.entry < k.pstart || k.entry >= k.pend)
            abort();
        (void)!pvh_build(&k, &p, write_ram, guest, &l, err, sizeof(err));
    }
    free(copy);
    return 0;
}
