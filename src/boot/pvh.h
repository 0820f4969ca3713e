/*
 * pvh.h - PVH direct boot: a kernel ELF with Xen's PHYS32_ENTRY note,
 * loaded by physical address into an HVM domain's memory, with the
 * start-of-day structure (include/xen/arch-x86/hvm/start_info.h) that its
 * 32-bit entry point finds in %ebx, as Xen's docs/misc/pvh.pandoc and
 * QEMU's `-kernel` load it.
 *
 * Every byte of the image is untrusted: pvh_parse() reads only inside
 * [image, image + size), with every offset and size checked, and either
 * fills a struct pvh_kernel or returns an error with a one-line reason.
 *
 * Rules (each refusal is -EINVAL unless noted):
 *  PH1. ELF32 (EM_386) or ELF64 (EM_X86_64), little-endian, version 1,
 *       ET_EXEC, header and program-header sizes as the ELF spec says, at
 *       most ELF_MAX_PHDRS program headers; anything else -ENOEXEC.
 *  PH2. Every PT_LOAD: filesz <= memsz, file range inside the image,
 *       [paddr, paddr + memsz) below 4 GiB; at most ELF_MAX_SEGMENTS; the
 *       loaded span at most ELF_MAX_SPAN (-E2BIG).
 *  PH3. Notes (PT_NOTE segments, 4-byte aligned fields, each inside its
 *       segment): the "Xen" note PHYS32_ENTRY (4 or 8 bytes) is the entry
 *       point; it must be below 4 GiB and inside a loaded segment.  No
 *       such note: -ENOEXEC ("no PVH entry note").  The Xen PV entry note
 *       (XEN_ELFNOTE_ENTRY) is recorded: such a kernel can also boot PV.
 *
 * The guest-physical layout pvh_build() makes (docs/hvm.md):
 *   [0, 0x9fc00)            RAM (start_info, module list, memory map and
 *                           command line in [PVH_INFO_GPA, PVH_INFO_END))
 *   [0x9fc00, 0xa0000)      reserved: the MultiProcessor tables
 *                           (boot/mptable.h), in the last KiB of base
 *                           memory, where a kernel without ACPI finds them
 *   [0xa0000, 0x100000)     reserved, not RAM (the PC's hole)
 *   [0x100000, ram_end)     RAM: the segments at their physical addresses,
 *                           the module (initramfs) page-aligned at the top
 * Every segment must lie inside RAM and outside the info pages, the
 * module above the highest segment (-ENOSPC when it does not fit).
 * Every byte goes to guest memory through the caller's write function
 * (for an HVM domain the dirty-logging accessor), the bss as zeros.
 */
#ifndef MEMVISOR_BOOT_PVH_H
#define MEMVISOR_BOOT_PVH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "boot/elf.h"
#include "lib/compiler.h"

#define PVH_INFO_GPA 0x1000ULL
#define PVH_INFO_END 0x3000ULL
#define PVH_MPTABLE_GPA 0x9fc00ULL
#define PVH_LOW_END 0xa0000ULL
#define PVH_HIGH_START 0x100000ULL
#define PVH_CMDLINE_MAX 4096
#define PVH_MEMMAP_MAX 3

struct pvh_segment {
    uint64_t paddr, memsz;
    uint64_t offset, filesz;
};

struct pvh_kernel {
    struct pvh_segment seg[ELF_MAX_SEGMENTS];
    unsigned nr_seg;
    uint64_t pstart, pend; /* span of the loaded segments */
    uint32_t entry;        /* PHYS32_ENTRY */
    unsigned elf_class;    /* 32 or 64 */
    bool has_pv_entry;     /* also a Xen PV kernel (XEN_ELFNOTE_ENTRY) */
    char error[128];
};

int __must_check pvh_parse(const uint8_t *image, size_t size,
                           struct pvh_kernel *k);

/* Write len bytes at guest-physical gpa: 0 or -errno. */
typedef int (*pvh_write_fn)(void *opaque, uint64_t gpa, const void *src,
                            uint64_t len);

struct pvh_params {
    const uint8_t *image; /* parsed by pvh_parse() into the kernel */
    size_t size;
    uint64_t ram_end;      /* RAM is [0, 0xa0000) and [1 MiB, ram_end) */
    const char *cmdline;   /* NULL: empty */
    const uint8_t *module; /* NULL: none */
    size_t module_size;
    unsigned nr_cpus;      /* the processors the MP tables list (1 ..
                              MPTABLE_MAX_CPUS) */
};

/* Where pvh_build() put things (guest-physical). */
struct pvh_layout {
    uint64_t start_info, modlist, memmap, cmdline;
    uint64_t module, module_size; /* 0, 0: none */
    uint64_t mptable, mptable_size;
    uint32_t entry;
    unsigned memmap_entries;
};

/* Load the kernel and write the start-of-day structures.  -EINVAL (layout
 * refused, or nr_cpus out of range; reason in err), -ENOSPC (the module does not fit), -E2BIG
 * (command line longer than PVH_CMDLINE_MAX - 1), or the write's -errno. */
int __must_check pvh_build(const struct pvh_kernel *k,
                           const struct pvh_params *p, pvh_write_fn write,
                           void *opaque, struct pvh_layout *out, char *err,
                           size_t errlen);

#endif
