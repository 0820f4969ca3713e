/*
 * guest.h - the PV guest kernel's internal interfaces: the kernel object,
 * vCPUs, console, traps and probes, memory management, the workloads.
 *
 * The guest kernel runs in ring 3 on the PV ABI of include/xen/xen.h only.
 * Its state hangs off one struct kernel and one struct vcpu per vCPU, found
 * from the stack: each vCPU's stack is STACK_SIZE-aligned and starts with a
 * pointer to its struct vcpu.  The kernel object, the stacks and the
 * workloads' per-vCPU arrays (work_pfns, hostile's state) are the only
 * globals: static storage in the image, because the kernel has no heap until
 * its physmap exists and the trap entry has no other way to find its state.
 *
 * Invariants:
 *  1. Every frame the guest maps is one its p2m list says it owns; a pfn whose
 *     p2m entry is INVALID_P2M is mapped nowhere.
 *  2. A frame in use as a page table is mapped read-only in the physmap
 *     before it is pinned or hooked into a table, and stays so until it is
 *     unpinned and unhooked.
 *  3. A pfn is in the allocator's free set only while it is mapped
 *     read-write in the physmap and referenced by nothing else.
 * Locking: k->lock serialises the allocator, k->console_lock the console;
 * each vCPU otherwise works on its own pfns and its own address spaces.
 */
#ifndef MEMVISOR_GUEST_GUEST_H
#define MEMVISOR_GUEST_GUEST_H

#include <stdbool.h>
#include <stdint.h>

#include "check.h"
#include "hypercall.h"
#include "klib.h"
#include "pt.h"

#define MAX_VCPUS 8
#define STACK_SIZE (16 * 1024)
#define INVALID_P2M (~0ULL)
#define NR_TRAP_VECTORS 32
#define VECTOR_EVENT 32
#define VECTOR_FAILSAFE 33

struct vcpu;

/* ---- probes: instructions that may fault, with a fixup (head.S) ---- */
/* A probe returns 0 when the instruction completed, else PROBE_FAULTED with
 * the vector in bits 0-7 and the error code in bits 8-39. */
#define PROBE_FAULTED (1ULL << 63)
#define PROBE_VECTOR(r) ((unsigned)((r)&0xff))
#define PROBE_ERRCODE(r) ((unsigned)(((r) >> 8) & 0xffffffff))

uint64_t probe_read64(uint64_t addr, uint64_t *out);
uint64_t probe_write64(uint64_t addr, uint64_t val);
uint64_t probe_write32(uint64_t addr, uint64_t val);
uint64_t probe_or64(uint64_t addr, uint64_t val);
uint64_t probe_xchg64(uint64_t addr, uint64_t val);
uint64_t probe_mov_to_cr3(uint64_t val);
uint64_t probe_mov_from_cr3(void);
uint64_t probe_mov_to_cr0(uint64_t val);
uint64_t probe_cli(void);
uint64_t probe_sti(void);
uint64_t probe_hlt(void);
uint64_t probe_inb(uint64_t port);
uint64_t probe_outb(uint64_t port, uint64_t val);
uint64_t probe_lgdt(const void *desc);
uint64_t probe_lidt(const void *desc);
uint64_t probe_ltr(uint64_t sel);
uint64_t probe_wrmsr(uint64_t msr, uint64_t val);
uint64_t probe_rdmsr(uint64_t msr);
uint64_t probe_invlpg(uint64_t addr);
uint64_t probe_wbinvd(void);
uint64_t probe_clts(void);
uint64_t probe_swapgs(void);
uint64_t probe_rdpmc(void);
uint64_t probe_mov_to_dr7(uint64_t val);
uint64_t probe_xsetbv(void);
uint64_t probe_int80(void);
uint64_t probe_ud2(void);
uint64_t probe_div0(void);
/* SYSCALL from guest kernel mode: not a hypercall entry (docs/abi.md). */
/* SYSCALL from kernel mode as a hypercall (number 63): its result. */
int64_t probe_syscall(void);
/* An x87 instruction: #NM while CR0.TS is set (fpu_taskswitch). */
uint64_t probe_fnop(void);
/* int3 with rax = marker: returns the probe code if bounced as #BP, the
 * hypercall result if the transport took it for one, marker if ignored. */
uint64_t probe_int3(uint64_t marker);
/* Calls addr with rax = rax_val and three argument registers; a fault on
 * the way returns the probe code (v->recover_*). */
uint64_t hypercall_raw(struct vcpu *v, uint64_t addr, uint64_t rax_val,
                       uint64_t a1, uint64_t a2, uint64_t a3);
/* The iret hypercall with cs, ss and rflags of the caller's choosing,
 * resuming at the next instruction on the same stack: returns the CPL and
 * IOPL it resumed with ((rflags & 0x3000) | (cs & 3)), or the probe code
 * if the hypervisor bounced a fault instead. */
uint64_t iret_probe(struct vcpu *v, uint64_t cs, uint64_t ss, uint64_t rflags);

/* Enters guest user mode (iret with a ring-3 cs) at user_rip with rdi = arg
 * and rsp = user_rsp; the user code ends with SYSCALL, which the hypervisor
 * bounces to the syscall callback in kernel mode, and this returns the
 * user's rax.  A fault on the way returns the probe code.  The caller points
 * stack_switch() at a free part of its stack first. */
uint64_t usermode_probe(struct vcpu *v, uint64_t user_rip, uint64_t user_rsp,
                        uint64_t arg);
/* User code for usermode_probe: rax = *(uint64_t *)rdi; syscall. */
extern char user_read_and_syscall[];
/* User code: cli (privileged), then SYSCALL if it was not refused. */
extern char user_cli[];
/* User code: xen_version(XENVER_version) through the hypercall page, then
 * SYSCALL with its result. */
extern char user_hypercall[];

/* ---- the kernel object ---- */
struct spinlock {
    volatile uint32_t v;
};
void spin_lock(struct spinlock *l);
void spin_unlock(struct spinlock *l);

#define NR_COUNTERS 24

struct vcpu {
    /* When set, a fault the exception table does not cover resumes at
     * recover_rip with rsp = recover_rsp and rax = the probe code (the
     * hostile workload's calls into code it does not control). */
    uint64_t recover_rip, recover_rsp;
    uint64_t user_return_rsp; /* where syscall_entry resumes the kernel */
    unsigned id;
    struct kernel *k;
    uint64_t stack_top;
    volatile uint32_t online;
    struct krand rng;
    uint64_t traps[NR_TRAP_VECTORS];
    uint64_t events, unexpected;
    uint64_t fails;
    uint64_t c[NR_COUNTERS]; /* the current workload's counters */
};

struct kernel {
    struct start_info *si;
    char cmdline[MAX_GUEST_CMDLINE];
    struct spinlock console_lock;
    struct spinlock lock;
    struct spinlock balloon_lock; /* frames given back are not reused
                                   * until their giver checked them gone */
    struct trap_info traps[NR_TRAP_VECTORS + 1];
    unsigned nr_vcpus;
    struct vcpu vcpus[MAX_VCPUS];
    struct shared_info *shared; /* NULL if not mapped */
    uint64_t maxphys_bits;

    /* memory */
    uint64_t nr_pages;
    uint64_t *p2m;
    uint64_t physmap_pfns; /* pfns [0, physmap_pfns) have an L1 slot */
    uint64_t l4_mfn, l3_mfn, l2_mfn;
    uint64_t *l4, *l3, *l2;
    uint64_t l1_mfn[PT_ENTRIES];
    uint64_t *l1_va[PT_ENTRIES];
    uint64_t free_bitmap[PHYSMAP_MAX_PFNS / 64]; /* bit set: pfn free */
    uint64_t free_count;
    uint64_t free_hint;
    uint64_t boot_free_start;
    uint64_t l1_built; /* L1 tables the guest added to the physmap */

    /* workload orchestration */
    volatile uint32_t barrier_count;
    volatile uint32_t barrier_gen;
    volatile uint32_t work_gen;
    int (*volatile work)(struct kernel *k, struct vcpu *v);
    uint64_t seed;
    struct vcpu_guest_context ap_ctx; /* VCPUOP_initialise's argument */
};

/* ---- console (kernel.c) ---- */
void kprintf(struct kernel *k, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void vfail(struct vcpu *v, const char *what, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
_Noreturn void guest_shutdown(unsigned reason);
void barrier_wait(struct kernel *k);
void vcpu_yield(void);

/* ---- memory (mm.c) ---- */
enum pte_method {
    PTE_BY_MMU_UPDATE, /* mmu_update on the entry's machine address */
    PTE_BY_UVA,        /* update_va_mapping on the virtual address */
    PTE_BY_DIRECT,     /* a plain store into the read-only L1: emulated */
    PTE_METHODS,
};
extern const char *const pte_method_name[PTE_METHODS];

int mm_init(struct kernel *k, uint64_t boot_rsp);
/* A free pfn, mapped read-write and zeroed, or INVALID_P2M. */
uint64_t mm_alloc(struct kernel *k);
void mm_free(struct kernel *k, uint64_t pfn);
uint64_t *mm_va(uint64_t pfn);
uint64_t *mm_physmap_ptep(struct kernel *k, uint64_t pfn);
uint64_t mm_physmap_pte_maddr(struct kernel *k, uint64_t pfn);
/* Sets the physmap entry of pfn and flushes its TLB entry everywhere. */
long mm_set_physmap_pte(struct kernel *k, uint64_t pfn, uint64_t pte,
                        enum pte_method how);
/* Writes entry idx of the table in frame mfn (mapped at table_va). */
long mm_set_entry(struct kernel *k, uint64_t mfn, uint64_t *table_va,
                  unsigned idx, uint64_t val, enum pte_method how);
long mm_flush_va(uint64_t va);
long mm_pin(uint64_t mfn, unsigned level);
long mm_unpin(uint64_t mfn);
long mm_new_baseptr(uint64_t mfn, bool user);
/* After a move to another memvisor: the frame numbers the kernel keeps
 * (its L4, the physmap's L3, L2 and L1s) read again from its p2m list and
 * its page tables, which the destination rewrote (work_moved.c). */
void mm_refresh_frames(struct kernel *k);
bool mm_owns_mfn(struct kernel *k, uint64_t mfn);

/* The TSC, ordered after earlier loads (native in ring 3 on every KVM). */
static inline uint64_t rdtsc(void)
{
    uint32_t lo, hi;

    __asm__ volatile("lfence; rdtsc" : "=a"(lo), "=d"(hi)::"memory");
    return ((uint64_t)hi << 32) | lo;
}

/* ---- workloads ---- */
/* Pfns a workload holds, per vCPU (the workloads run one after another). */
#define WORK_MAX_PAGES 8192
extern uint64_t work_pfns[MAX_VCPUS][WORK_MAX_PAGES];
uint64_t cmdline_num(struct kernel *k, const char *key, uint64_t def);
/* Allocates up to n pages into work_pfns[v->id]; returns how many. */
uint64_t work_alloc_pages(struct kernel *k, struct vcpu *v, uint64_t n);
void work_free_pages(struct kernel *k, struct vcpu *v, uint64_t n);

struct workload {
    const char *name;
    int (*run)(struct kernel *k, struct vcpu *v);
    const char *const *counters; /* names, NULL-terminated */
};
extern const struct workload work_abi, work_dirty, work_ptchurn, work_balloon,
    work_hostile, work_stale, work_flushbench, work_dev, work_moved;

static inline struct vcpu *this_vcpu(void)
{
    uint64_t sp;
    __asm__ volatile("mov %%rsp, %0" : "=r"(sp));
    return *(struct vcpu **)(sp & ~(uint64_t)(STACK_SIZE - 1));
}

#endif
