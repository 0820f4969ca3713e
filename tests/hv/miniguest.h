/*
 * miniguest.h - what the hv tests that run the small guest of miniguest.S
 * share: its PV kernel image (an ELF with Xen's notes, linked at
 * MINIGUEST_VA, its hypercall page one page above) and a domain builder
 * that fails the test with the builder's reason.
 */
#ifndef MEMVISOR_TESTS_MINIGUEST_H
#define MEMVISOR_TESTS_MINIGUEST_H

#include <stddef.h>
#include <stdint.h>

#include "elfgen.h"

#define MINIGUEST_VA 0xffffffff80000000ULL

/* Build the image into buf (ELFGEN_MAX bytes); returns its size. */
size_t miniguest_image(uint8_t *buf);

struct hv;
struct domain;
/* hv_domain_create() of image img (n bytes), not started; a failure fails
 * the calling cmocka test with the builder's message. */
struct domain *hvtest_create(struct hv *hv, const uint8_t *img, size_t n,
                             const char *cmdline, unsigned vcpus,
                             uint64_t mem_mib);

#endif
