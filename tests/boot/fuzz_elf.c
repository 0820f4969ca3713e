/*
 * fuzz_elf.c - libFuzzer target: elf_parse() on arbitrary bytes.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "boot/elf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct elf_kernel k;
    uint8_t *copy = malloc(size ? size : 1);

    if (!copy)
        return 0;
    memcpy(copy, data, size);
    if (elf_parse(copy, size, &k) == 0 && k.nr_seg == 0)
        abort();
    free(copy);
    return 0;
}
