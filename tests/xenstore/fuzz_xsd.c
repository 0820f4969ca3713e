/*
 * fuzz_xsd.c - libFuzzer target: the xenstore protocol (xenstore/xsd.h) on
 * arbitrary request bytes, fed in pieces of the sizes the first bytes say
 * (as a guest fills its ring), the out queue drained as a guest would read
 * it.  After every piece the store's invariants (xsd_check()) must hold.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "xenstore/xsd.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct xsd *x = malloc(sizeof(*x));
    size_t at = 0;
    unsigned piece = 7;

    if (!x)
        return 0;
    xsd_init(x, 3, 65536);
    if (size)
        piece = 1 + data[0] % 64;
    while (at < size) {
        size_t n = size - at < piece ? size - at : piece;

        (void)xsd_feed(x, (const char *)data + at, n);
        at += n;
        if (xsd_check(x) != 0)
            abort();
        if (at & 1)
            xsd_out_take(x, x->out_len / 2 + 1);
    }
    if (xsd_check(x) != 0)
        abort();
    free(x);
    return 0;
}
