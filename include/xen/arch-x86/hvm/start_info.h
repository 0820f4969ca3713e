/*
 * start_info.h - the PVH start-of-day structure (Xen's public
 * arch-x86/hvm/start_info.h, version 1): what a PVH kernel finds at the
 * physical address in %ebx when it enters at its XEN_ELFNOTE_PHYS32_ENTRY
 * point.  Every address is guest-physical, little endian; 0 means "not
 * present" (nothing is placed at physical address 0).
 */
#ifndef MEMVISOR_XEN_ARCH_X86_HVM_START_INFO_H
#define MEMVISOR_XEN_ARCH_X86_HVM_START_INFO_H

#include <stdint.h>

/* "xEn3" with the 0x80 bit of the "E" set. */
#define XEN_HVM_START_MAGIC_VALUE 0x336ec578u

/* The ELF note (name "Xen") holding the 32-bit physical entry point. */
#define XEN_ELFNOTE_PHYS32_ENTRY 18

struct hvm_start_info {
    uint32_t magic;         /* XEN_HVM_START_MAGIC_VALUE */
    uint32_t version;       /* 1: memmap_paddr and memmap_entries valid */
    uint32_t flags;         /* SIF_xxx */
    uint32_t nr_modules;    /* entries at modlist_paddr */
    uint64_t modlist_paddr; /* struct hvm_modlist_entry[nr_modules] */
    uint64_t cmdline_paddr; /* NUL-terminated ASCII */
    uint64_t rsdp_paddr;    /* ACPI RSDP, 0: none */
    /* version 1 and later */
    uint64_t memmap_paddr;   /* struct hvm_memmap_table_entry[] */
    uint32_t memmap_entries; /* 0: no map given */
    uint32_t reserved;       /* 0 */
};

struct hvm_modlist_entry {
    uint64_t paddr;
    uint64_t size;
    uint64_t cmdline_paddr; /* 0: none */
    uint64_t reserved;
};

struct hvm_memmap_table_entry {
    uint64_t addr;
    uint64_t size;
    uint32_t type; /* XEN_HVM_MEMMAP_TYPE_* (the E820 types) */
    uint32_t reserved;
};

#define XEN_HVM_MEMMAP_TYPE_RAM 1
#define XEN_HVM_MEMMAP_TYPE_RESERVED 2
#define XEN_HVM_MEMMAP_TYPE_ACPI 3
#define XEN_HVM_MEMMAP_TYPE_NVS 4
#define XEN_HVM_MEMMAP_TYPE_UNUSABLE 5
#define XEN_HVM_MEMMAP_TYPE_DISABLED 6
#define XEN_HVM_MEMMAP_TYPE_PMEM 7

_Static_assert(sizeof(struct hvm_start_info) == 56, "start_info v1 size");
_Static_assert(sizeof(struct hvm_modlist_entry) == 32, "modlist entry size");
_Static_assert(sizeof(struct hvm_memmap_table_entry) == 24, "memmap entry");

#endif
