/*
 * miniguest.h - the small test guest of miniguest.S as a PV kernel image:
 * an ELF with Xen's notes, linked at MINIGUEST_VA, its hypercall page one
 * page above.  Shared by the hv tests that run it.
 */
#ifndef MEMVISOR_TESTS_MINIGUEST_H
#define MEMVISOR_TESTS_MINIGUEST_H

#include <stddef.h>
#include <stdint.h>

#include "elfgen.h"

#define MINIGUEST_VA 0xffffffff80000000ULL

/* Build the image into buf (ELFGEN_MAX bytes); returns its size. */
size_t miniguest_image(uint8_t *buf);

#endif
