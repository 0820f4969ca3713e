/* pt.c - page-table entry rules as the guest expects them (see pt.h). */
#include "pt.h"

bool pte_is_legal_guest(uint64_t pte, unsigned level, unsigned slot, bool owned,
                        bool is_table, unsigned maxphys_bits)
{
    if (!pte_present(pte))
        return !(level == 4 && l4_slot_is_hypervisor(slot) && pte);
    if (level == 4 && l4_slot_is_hypervisor(slot))
        return false;
    if (level > 1 && (pte & _PAGE_PSE))
        return false;
    if (maxphys_bits < 52 && (pte & PTE_ADDR_MASK) >> maxphys_bits)
        return false;
    if (!owned)
        return false;
    if (level == 1 && is_table && (pte & _PAGE_RW))
        return false;
    return true;
}
