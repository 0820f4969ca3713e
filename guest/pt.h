/*
 * pt.h - x86-64 page-table entries and the guest's virtual layout, as pure
 * functions (built into the guest and the host unit test).
 *
 * Layout of the guest kernel's address spaces:
 *   VIRT_BASE + pfn * 4 KiB   the physmap: every pfn of the guest mapped at a
 *                             fixed place (L4 slot 511, L3 slot 510: at most
 *                             PHYSMAP_MAX_PFNS pfns, one L2 of L1s); the
 *                             bootstrap region that the builder maps is its
 *                             start, the guest maps the rest itself.
 *   PRIVATE_BASE(slot)        a private region of an address space built by
 *                             a workload: L4 slot `slot` (1..255).
 * Every entry the guest writes has _PAGE_USER set: the guest kernel runs in
 * ring 3.
 *
 * Contract: pte_make() only builds entries; it never decides whether the
 * hypervisor will accept them.  pte_is_legal_guest() says what the PV rules
 * (docs/abi.md, the pv subsystem) let a guest install, and is what the
 * hostile workload violates on purpose.
 */
#ifndef MEMVISOR_GUEST_PT_H
#define MEMVISOR_GUEST_PT_H

#include <stdbool.h>
#include <stdint.h>

#define GUEST_PAGE_SHIFT 12
#define GUEST_PAGE_SIZE (1ULL << GUEST_PAGE_SHIFT)
#define PT_ENTRIES 512

#define _PAGE_PRESENT (1ULL << 0)
#define _PAGE_RW (1ULL << 1)
#define _PAGE_USER (1ULL << 2)
#define _PAGE_PWT (1ULL << 3)
#define _PAGE_PCD (1ULL << 4)
#define _PAGE_ACCESSED (1ULL << 5)
#define _PAGE_DIRTY (1ULL << 6)
#define _PAGE_PSE (1ULL << 7) /* PAT at L1 */
#define _PAGE_GLOBAL (1ULL << 8)
#define _PAGE_NX (1ULL << 63)
#define PTE_ADDR_MASK 0x000FFFFFFFFFF000ULL

/* Default flags: a data page, a page-table page in its parent. */
#define PTE_DATA                                                               \
    (_PAGE_PRESENT | _PAGE_RW | _PAGE_USER | _PAGE_ACCESSED | _PAGE_DIRTY)
#define PTE_TABLE (_PAGE_PRESENT | _PAGE_RW | _PAGE_USER | _PAGE_ACCESSED)

#define VIRT_BASE 0xFFFFFFFF80000000ULL
#define PHYSMAP_L4_SLOT 511
#define PHYSMAP_L3_SLOT 510
#define PHYSMAP_MAX_PFNS (512ULL * 512ULL)
#define PRIVATE_BASE(slot) ((uint64_t)(slot) << 39)

static inline uint64_t pte_make(uint64_t mfn, uint64_t flags)
{
    return ((mfn << GUEST_PAGE_SHIFT) & PTE_ADDR_MASK) | flags;
}

static inline uint64_t pte_mfn(uint64_t pte)
{
    return (pte & PTE_ADDR_MASK) >> GUEST_PAGE_SHIFT;
}

static inline bool pte_present(uint64_t pte)
{
    return pte & _PAGE_PRESENT;
}

/* Index of va in its level-n table, n = 1..4. */
static inline unsigned pt_index(uint64_t va, unsigned level)
{
    return (unsigned)((va >> (GUEST_PAGE_SHIFT + 9 * (level - 1))) & 511);
}

/* Canonical form of an address built from L4..L1 indexes. */
static inline uint64_t pt_va(unsigned l4, unsigned l3, unsigned l2, unsigned l1)
{
    uint64_t va = ((uint64_t)l4 << 39) | ((uint64_t)l3 << 30) |
                  ((uint64_t)l2 << 21) | ((uint64_t)l1 << 12);
    if (va & (1ULL << 47))
        va |= 0xFFFF000000000000ULL;
    return va;
}

static inline bool va_is_canonical(uint64_t va)
{
    uint64_t top = va >> 47;
    return top == 0 || top == 0x1FFFF;
}

/* L4 slots 256..271 belong to the hypervisor. */
static inline bool l4_slot_is_hypervisor(unsigned slot)
{
    return slot >= 256 && slot <= 271;
}

static inline uint64_t physmap_va(uint64_t pfn)
{
    return VIRT_BASE + (pfn << GUEST_PAGE_SHIFT);
}

static inline uint64_t physmap_pfn(uint64_t va)
{
    return (va - VIRT_BASE) >> GUEST_PAGE_SHIFT;
}

/* Machine address of entry idx of the table in frame mfn (mmu_update ptr). */
static inline uint64_t pt_entry_maddr(uint64_t mfn, unsigned idx)
{
    return (mfn << GUEST_PAGE_SHIFT) + (uint64_t)idx * 8;
}

/*
 * Whether a guest may install pte at level (1..4) of one of its tables,
 * given whether the target frame is owned by the guest (owned) and whether
 * it is in use as a page table (is_table), and for L4 the slot.  Mirrors
 * the PV entry rules: no PSE above L1, no reserved address bits (above
 * maxphys_bits), no writable mapping of a page table at L1, nothing in the
 * hypervisor's L4 slots, only owned frames.
 */
bool pte_is_legal_guest(uint64_t pte, unsigned level, unsigned slot, bool owned,
                        bool is_table, unsigned maxphys_bits);

#endif
