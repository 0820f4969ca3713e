/*
 * elf.h - bounded parsing of a PV kernel image: an ELF64 x86-64 executable
 * with Xen's ELF notes.
 *
 * Every byte of the image is untrusted.  elf_parse() reads only inside
 * [image, image + size), checks every offset and size with range_check(),
 * and either fills a struct elf_kernel or returns an error with a one-line
 * reason in kernel->error.  The loader (builder.c) then copies only the
 * checked segments.
 *
 * Rules (each refusal is -EINVAL unless noted):
 *  E1. ELF64, little-endian, version 1, ET_EXEC, EM_X86_64; header sizes as
 *      the ELF spec says; at most ELF_MAX_PHDRS program headers.
 *  E2. Every PT_LOAD: filesz <= memsz, file range inside the image,
 *      [vaddr, vaddr + memsz) non-wrapping, canonical and in the guest
 *      kernel's half (>= 2^47 is not required: any canonical range below the
 *      hypervisor slots or above them, never inside 256..271).
 *  E3. Notes: name "Xen", each note inside its PT_NOTE segment, 4-byte
 *      aligned sizes; numeric notes of 4 or 8 bytes; strings bounded.
 *      ENTRY and HYPERCALL_PAGE (if present) must lie inside a loaded
 *      segment; VIRT_BASE must not exceed the lowest segment address.
 *  E4. The loaded range is at most ELF_MAX_SPAN bytes (-E2BIG).
 *  E5. With a PADDR_OFFSET note (which needs VIRT_BASE), a segment loads at
 *      p_paddr - PADDR_OFFSET + VIRT_BASE, as Xen loads it (Linux's per-CPU
 *      segment has p_vaddr 0); without one, at p_vaddr.
 *
 * Errors: -EINVAL (malformed, reason in error), -E2BIG (too large),
 * -ENOEXEC (not an x86-64 ELF executable, or no Xen notes).
 */
#ifndef MEMVISOR_BOOT_ELF_H
#define MEMVISOR_BOOT_ELF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lib/compiler.h"

#define ELF_MAX_PHDRS 64
#define ELF_MAX_SEGMENTS 16
#define ELF_MAX_SPAN (256ULL << 20)

struct elf_segment {
    uint64_t vaddr, memsz;
    uint64_t offset, filesz;
    bool writable, exec;
};

struct elf_kernel {
    struct elf_segment seg[ELF_MAX_SEGMENTS];
    unsigned nr_seg;
    uint64_t vstart, vend;      /* span of the loaded segments */
    uint64_t entry;             /* XEN_ELFNOTE_ENTRY, else e_entry */
    uint64_t virt_base;         /* XEN_ELFNOTE_VIRT_BASE, else vstart */
    uint64_t hypercall_page;    /* 0 if absent */
    bool has_hypercall_page;
    bool has_xen_notes;
    char guest_os[32];
    char xen_version[32];
    char loader[32];
    char features[128];
    char error[128];
};

int __must_check elf_parse(const uint8_t *image, size_t size,
                           struct elf_kernel *k);

#endif
