/*
 * elfgen.h - crafts small PV kernel ELF images in memory for the ELF and
 * builder tests: one PT_LOAD (code at vaddr), one PT_NOTE with Xen notes.
 */
#ifndef MEMVISOR_TESTS_ELFGEN_H
#define MEMVISOR_TESTS_ELFGEN_H

#include <stddef.h>
#include <stdint.h>

#define ELFGEN_MAX 16384

struct elfgen {
    uint64_t vaddr;          /* of the PT_LOAD */
    const uint8_t *code;     /* copied at the segment's start */
    size_t code_len;
    uint64_t memsz;          /* >= file size */
    uint64_t entry, virt_base, hypercall_page;
    /* offsets of interesting fields in the produced image, for mutation */
    size_t off_phdr_load, off_phdr_note, off_notes, off_entry_note;
};

/* Writes the image to buf (ELFGEN_MAX bytes); returns its size. */
size_t elfgen_build(struct elfgen *g, uint8_t *buf);

#endif
