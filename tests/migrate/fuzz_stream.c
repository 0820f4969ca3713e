/*
 * fuzz_stream.c - the stream reader on arbitrary bytes: every record is
 * read and every body parsed (stream_check()); any input must end in 0 or
 * a clear error, never a crash, and an error always comes with a message.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "migrate/stream.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct stream_chan c;
    uint64_t records;
    char err[256] = "";
    int rc;

    stream_chan_mem(&c, data, size);
    rc = stream_check(&c, &records, err, sizeof(err));
    if (rc < 0 && err[0] == '\0')
        abort(); /* an error without a reason */
    return 0;
}
