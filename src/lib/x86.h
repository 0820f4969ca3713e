/*
 * x86.h - facts of the x86-64 architecture that several modules need,
 * written once.
 *
 * Owns nothing.  Holds no policy: a rule of memvisor's own (a guest address
 * must also lie outside the hypervisor's range, say) is written at the call
 * site that needs it, next to its reason, not folded into these helpers.
 */
#ifndef MEMVISOR_LIB_X86_H
#define MEMVISOR_LIB_X86_H

#include <stdbool.h>
#include <stdint.h>

/*
 * Canonical virtual addresses (48-bit linear addresses, 4-level paging):
 * bits 63..47 all equal.  The lower half is [0, 2^47), the upper half is
 * [0xffff800000000000, 2^64); anything between is the non-canonical hole,
 * where a load, a store, a fetch or an iret raises #GP.
 */
#define X86_CANONICAL_LOWER_END 0x0000800000000000ULL
#define X86_CANONICAL_UPPER_START 0xffff800000000000ULL

static inline bool x86_canonical(uint64_t va)
{
    return va < X86_CANONICAL_LOWER_END || va >= X86_CANONICAL_UPPER_START;
}

/* va lies in the lower canonical half (the other half is the upper one,
 * or the hole). */
static inline bool x86_canonical_lower(uint64_t va)
{
    return va < X86_CANONICAL_LOWER_END;
}

/* RFLAGS bits (Linux's names). */
#define X86_EFLAGS_FIXED 0x00000002ULL /* bit 1: always set */
#define X86_EFLAGS_CF 0x00000001ULL    /* carry */
#define X86_EFLAGS_ZF 0x00000040ULL    /* zero */
#define X86_EFLAGS_TF 0x00000100ULL    /* trap flag (single step) */
#define X86_EFLAGS_IF 0x00000200ULL    /* interrupts enabled */
#define X86_EFLAGS_NT 0x00004000ULL    /* nested task */
#define X86_EFLAGS_RF 0x00010000ULL    /* resume (no instruction breakpoint) */
#define X86_EFLAGS_VM 0x00020000ULL    /* virtual-8086 mode */
#define X86_EFLAGS_AC 0x00040000ULL    /* alignment check / SMAP override */

/* Control-register bits. */
#define X86_CR0_TS 0x00000008ULL  /* task switched: the next FPU use is #NM */
#define X86_CR3_PWT 0x00000008ULL /* root table write-through */

/* Page-fault error code bits (Linux's X86_PF_*). */
#define X86_PF_PROT 0x01ULL  /* 0: not present; 1: a protection fault */
#define X86_PF_WRITE 0x02ULL /* the access was a write */
#define X86_PF_USER 0x04ULL  /* from CPL 3 */
#define X86_PF_RSVD 0x08ULL  /* a reserved bit set in an entry */
#define X86_PF_INSTR 0x10ULL /* an instruction fetch */

/* Exception vectors (Linux's X86_TRAP_*). */
#define X86_TRAP_DE 0  /* divide error */
#define X86_TRAP_DB 1  /* debug */
#define X86_TRAP_NMI 2 /* non-maskable interrupt */
#define X86_TRAP_BP 3  /* breakpoint (int3) */
#define X86_TRAP_OF 4  /* overflow (into) */
#define X86_TRAP_BR 5  /* bound range exceeded */
#define X86_TRAP_UD 6  /* invalid opcode */
#define X86_TRAP_NM 7  /* device not available (CR0.TS) */
#define X86_TRAP_DF 8  /* double fault */
#define X86_TRAP_TS 10 /* invalid TSS */
#define X86_TRAP_NP 11 /* segment not present */
#define X86_TRAP_SS 12 /* stack-segment fault */
#define X86_TRAP_GP 13 /* general protection */
#define X86_TRAP_PF 14 /* page fault */
#define X86_TRAP_MF 16 /* x87 floating-point error */
#define X86_TRAP_AC 17 /* alignment check */
#define X86_TRAP_MC 18 /* machine check */
#define X86_TRAP_XF 19 /* SIMD floating-point error */

#endif
