/*
 * hypercall.h - calling the hypervisor: stub N of the hypercall page, with
 * Xen's x86-64 register convention (rdi, rsi, rdx, r10, r8 -> rax).  The
 * page is filled by the domain builder; the guest only calls into it.
 */
#ifndef MEMVISOR_GUEST_HYPERCALL_H
#define MEMVISOR_GUEST_HYPERCALL_H

#include <stdint.h>

#include "xen/xen.h"

extern char hypercall_page[4096];

/* Any hypercall by number (the hostile workload calls numbers that are not
 * constants).  The hypervisor may clobber rcx, r11 and the argument
 * registers. */
static inline long hypercall(unsigned nr, uint64_t a1, uint64_t a2, uint64_t a3,
                             uint64_t a4, uint64_t a5)
{
    register uint64_t r10 __asm__("r10") = a4;
    register uint64_t r8 __asm__("r8") = a5;
    void *stub = hypercall_page + (uint64_t)(nr % XEN_HYPERCALL_NR_STUBS) *
                                      XEN_HYPERCALL_STUB_SIZE;
    long ret;
    __asm__ volatile("call *%[stub]"
                     : "=a"(ret), "+D"(a1), "+S"(a2), "+d"(a3), "+r"(r10),
                       "+r"(r8)
                     : [stub] "r"(stub)
                     : "rcx", "r9", "r11", "memory", "cc");
    return ret;
}

static inline long hc_console_write(const char *s, unsigned len)
{
    return hypercall(__HYPERVISOR_console_io, CONSOLEIO_write, len,
                     (uint64_t)(uintptr_t)s, 0, 0);
}

static inline long hc_mmu_update(const struct mmu_update *req, unsigned count,
                                 unsigned *done)
{
    return hypercall(__HYPERVISOR_mmu_update, (uint64_t)(uintptr_t)req, count,
                     (uint64_t)(uintptr_t)done, DOMID_SELF, 0);
}

static inline long hc_mmuext_op(const struct mmuext_op *op, unsigned count,
                                unsigned *done)
{
    return hypercall(__HYPERVISOR_mmuext_op, (uint64_t)(uintptr_t)op, count,
                     (uint64_t)(uintptr_t)done, DOMID_SELF, 0);
}

static inline long hc_update_va_mapping(uint64_t va, uint64_t pte,
                                        uint64_t flags)
{
    return hypercall(__HYPERVISOR_update_va_mapping, va, pte, flags, 0, 0);
}

static inline long hc_memory_op(unsigned cmd, void *arg)
{
    return hypercall(__HYPERVISOR_memory_op, cmd, (uint64_t)(uintptr_t)arg, 0,
                     0, 0);
}

static inline long hc_sched_op(int cmd, void *arg)
{
    return hypercall(__HYPERVISOR_sched_op, (uint64_t)cmd,
                     (uint64_t)(uintptr_t)arg, 0, 0, 0);
}

static inline long hc_vcpu_op(int cmd, unsigned vcpu, void *arg)
{
    return hypercall(__HYPERVISOR_vcpu_op, (uint64_t)cmd, vcpu,
                     (uint64_t)(uintptr_t)arg, 0, 0);
}

static inline long hc_xen_version(int cmd, void *arg)
{
    return hypercall(__HYPERVISOR_xen_version, (uint64_t)cmd,
                     (uint64_t)(uintptr_t)arg, 0, 0, 0);
}

static inline long hc_set_trap_table(const struct trap_info *t)
{
    return hypercall(__HYPERVISOR_set_trap_table, (uint64_t)(uintptr_t)t, 0, 0,
                     0, 0);
}

static inline long hc_callback_op(int cmd, void *arg)
{
    return hypercall(__HYPERVISOR_callback_op, (uint64_t)cmd,
                     (uint64_t)(uintptr_t)arg, 0, 0, 0);
}

static inline long hc_stack_switch(uint64_t ss, uint64_t sp)
{
    return hypercall(__HYPERVISOR_stack_switch, ss, sp, 0, 0, 0);
}

static inline long hc_vm_assist(unsigned cmd, unsigned type)
{
    return hypercall(__HYPERVISOR_vm_assist, cmd, type, 0, 0, 0);
}

#endif
