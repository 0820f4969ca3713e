/*
 * miniguest.c - miniguest.h.
 */
#include "miniguest.h"

extern const uint8_t miniguest_begin[], miniguest_end[];

size_t miniguest_image(uint8_t *buf)
{
    struct elfgen g = {
        .vaddr = MINIGUEST_VA,
        .code = miniguest_begin,
        .code_len = (size_t)(miniguest_end - miniguest_begin),
        .memsz = (size_t)(miniguest_end - miniguest_begin),
        .entry = MINIGUEST_VA,
        .virt_base = MINIGUEST_VA,
        .hypercall_page = MINIGUEST_VA + 0x1000,
    };
    return elfgen_build(&g, buf);
}
