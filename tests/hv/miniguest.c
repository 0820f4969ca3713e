/*
 * miniguest.c - miniguest.h.
 */
#include "miniguest.h"

#include "hv/hv.h"
#include "testlib.h"

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

struct domain *hvtest_create(struct hv *hv, const uint8_t *img, size_t n,
                             const char *cmdline, unsigned vcpus,
                             uint64_t mem_mib)
{
    struct hv_domain_config cfg = {
        .image = img,
        .image_size = n,
        .mem_mib = mem_mib,
        .nr_vcpus = vcpus,
        .cmdline = cmdline,
        .console_fd = -1,
    };
    struct domain *d = NULL;
    char err[256] = "";
    int r = hv_domain_create(hv, &cfg, &d, err, sizeof(err));

    if (r < 0)
        print_error("create: %d %s\n", r, err);
    assert_int_equal(r, 0);
    return d;
}
