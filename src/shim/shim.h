/*
 * shim.h - the ring-0 shim: memvisor's own code and tables inside every PV
 * address space.
 *
 * A PV guest kernel and its user space both run in ring 3; ring 0 belongs
 * to the shim, mapped in L4 slot 256 (the first of the hypervisor's slots
 * 256-271, which the guest can never map or change).  Slot 256 is also the
 * one slot an emulating KVM keeps from ring 3, so the guest cannot even
 * read it there; on hardware KVM the shim's entries are supervisor-only.
 *
 * Owns, per domain: the shim image frame (shim.S, two-instruction paths),
 * the IDT, the GDT, one page per vCPU (TSS, SYSCALL entry, shim stack) and
 * the page tables of slot 256 (one L3, one L2, one L1).  All frames belong
 * to the hypervisor's own frame domain (never to the guest), so no guest
 * page-table entry can ever refer to them.
 *
 * How an event flows: the guest traps (exception, `int $4` hypercall,
 * SYSCALL) into a vector stub, which does `out %al, $(SHIM_PORT_BASE + n)`.
 * memvisor sees KVM_EXIT_IO on that port, reads the CPU's frame on the
 * vCPU's shim stack (shim_event_read()), does the work, writes the frame to
 * return through and points RSP/RIP at it (shim_resume()); the stub's
 * `iretq` then returns to ring 3.  The shim executes no other instruction,
 * in particular never one of those that fail in emulated ring 0
 * (docs/quirks.md); CR3 is loaded only by memvisor (KVM_SET_SREGS).
 *
 * Virtual layout of slot 256 (SHIM_VA_BASE = 0xffff800000000000):
 *   +0x0000   shim image (read-only, executable)
 *   +0x1000   IDT (256 gates)
 *   +0x2000   GDT (SHIM_SEL_* below, then one TSS descriptor per vCPU)
 *   +0x10000 + 0x1000*i   vCPU i's page: TSS at +0, SYSCALL entry at
 *             +0x80 (LSTAR), saved user RSP at +0xf8, touch list at
 *             +0x100, stack up to +0x1000
 * and slot 257 (SHIM_VA_DIRECTMAP) maps the whole frame pool, supervisor
 * only, in 2 MiB pages: the touch loop writes through it.
 *
 * Touching: the KVM below shadows the guest's page tables and notices only
 * writes the guest makes; entries memvisor writes from the host (pv's
 * mmu_update, update_va_mapping, writable-page-table emulation) would stay
 * invisible.  After such a hypercall memvisor lists the machine addresses
 * of the changed entries (shim_touch()); the vCPU runs the shim's touch
 * loop, which stores each entry's own value back from ring 0 (the KVM
 * traps the store and drops its shadow of that entry), reloads CR3, and
 * hands over again (SHIM_ENTRY_TOUCH_DONE), when memvisor restores the
 * guest's registers and returns to it.
 *
 * Invariants:
 *  S1. Every shim page-table entry is supervisor-only (U=0); the IDT and
 *      GDT pages are not executable; the image is read-only.
 *  S2. The image contains only the instructions in shim.S (tests/shim
 *      disassembles it against the list of failing instructions).
 *  S3. shim_resume() writes only inside vCPU i's own page.
 *
 * Locking: a vCPU's page is touched only by that vCPU's thread (while the
 * vCPU is out of KVM_RUN); the rest is written once by shim_init().
 *
 * Errors: -ENOMEM (frames), -EINVAL (bad vCPU count or frame position).
 */
#ifndef MEMVISOR_SHIM_SHIM_H
#define MEMVISOR_SHIM_SHIM_H

#include <stdbool.h>
#include <stdint.h>

#include "frame/frame.h"
#include "kvm/kvm.h"
#include "lib/compiler.h"
#include "lib/types.h"

#define SHIM_L4_SLOT 256
#define SHIM_VA_BASE 0xffff800000000000ULL
#define SHIM_VA_CODE (SHIM_VA_BASE + 0x0000)
#define SHIM_VA_IDT (SHIM_VA_BASE + 0x1000)
#define SHIM_VA_GDT (SHIM_VA_BASE + 0x2000)
#define SHIM_VA_PERCPU(i) (SHIM_VA_BASE + 0x10000 + 0x1000ULL * (i))
#define SHIM_MAX_VCPUS 64
#define SHIM_VA_DIRECTMAP 0xffff808000000000ULL /* slot 257 */
#define SHIM_DIRECTMAP_MAX_L2 8                  /* pools up to 8 GiB */

/* Offsets in the image (shim.S). */
#define SHIM_OFF_START 0x000
#define SHIM_OFF_RESUME 0x008
#define SHIM_OFF_VECTORS 0x040
#define SHIM_OFF_TOUCH 0x300
#define SHIM_OFF_PERCPU 0x400
#define SHIM_PERCPU_TEMPLATE_SIZE 0x100
/* Offsets in a vCPU's page. */
#define SHIM_PERCPU_SYSCALL 0x80
#define SHIM_PERCPU_SAVED_RSP 0xf8
#define SHIM_PERCPU_TOUCH 0x100 /* touch list, SHIM_TOUCH_MAX entries */
#define SHIM_TOUCH_MAX 448     /* up to +0xf00; the stack needs 48 bytes */
#define SHIM_TOUCH_PAGE 1ULL   /* list flag: the whole page, not an entry */
#define SHIM_PERCPU_STACK_TOP 0x1000

/* Entries: 0..31 are the CPU's exception vectors (4 is the hypercall
 * vector, reached by `int $4` from the hypercall page). */
#define SHIM_PORT_BASE 0xc0
#define SHIM_NR_ENTRIES 64
#define SHIM_ENTRY_HYPERCALL 4
#define SHIM_ENTRY_IRQ 32     /* every vector >= 32 */
#define SHIM_ENTRY_SYSCALL 33 /* SYSCALL that entered ring 0 (hardware) */
#define SHIM_ENTRY_TOUCH_DONE 34 /* the touch loop finished */

/* Real selectors.  The guest sees Xen's flat selectors instead (the hv
 * layer translates); these are never shown to it. */
#define SHIM_SEL_CS0 0x08
#define SHIM_SEL_DS0 0x10
#define SHIM_SEL_CS32_3 0x1b
#define SHIM_SEL_DS3 0x23
#define SHIM_SEL_CS3 0x2b
#define SHIM_SEL_TSS(i) (0x30 + 16 * (i))

/* RFLAGS bits the guest may not set in a frame it returns through. */
#define SHIM_RFLAGS_FIXED 0x2ULL
#define SHIM_RFLAGS_IF 0x200ULL
#define SHIM_RFLAGS_IOPL 0x3000ULL
#define SHIM_RFLAGS_GUEST_MASK 0x00000000003f0fd5ULL /* CF PF AF ZF SF TF IF DF OF NT RF AC ID (no IOPL/VM/VIF/VIP) */

struct shim {
    struct frames *frames;
    domid_t owner; /* the hypervisor's frame domain */
    unsigned nr_vcpus;
    mfn_t image, idt, gdt, l3, l2, l1;
    mfn_t percpu[SHIM_MAX_VCPUS];
    mfn_t dm_l3, dm_l2[SHIM_DIRECTMAP_MAX_L2];
    unsigned nr_dm_l2;
};

/* The frame a CPU pushes on the shim stack, and iretq pops. */
struct shim_frame {
    uint64_t rip, cs, rflags, rsp, ss;
};

/* One decoded event. */
struct shim_event {
    unsigned entry;      /* SHIM_ENTRY_* or vector */
    bool has_error;
    uint64_t error;
    struct shim_frame frame; /* where the guest was */
};

int __must_check shim_init(struct shim *s, struct frames *f, domid_t owner,
                           unsigned nr_vcpus);
void shim_fini(struct shim *s);

/* The values of L4 slots 256 and 257 in every PV root page table. */
uint64_t shim_l4e(const struct shim *s);
uint64_t shim_l4e_directmap(const struct shim *s);
/* Prepare regs to run the touch loop over n (<= SHIM_TOUCH_MAX) machine
 * addresses of page-table entries (or of pages, with SHIM_TOUCH_PAGE); the
 * return frame stays where shim_resume() put it. */
void shim_touch(struct shim *s, unsigned i, const uint64_t *maddrs, unsigned n,
                struct kvm_vcpu_regs *regs);

/* The image itself, and whether vector n pushes an error code. */
const uint8_t *shim_image(uint64_t *size);
bool shim_vector_has_error(unsigned vector);

/* Registers for vCPU i before its first run: ring 0 at the start stub,
 * with the frame returning to ring 3 at rip/rsp; LSTAR and friends.
 * cr3 is the root page table's machine address. */
void shim_vcpu_sregs(const struct shim *s, unsigned i, uint64_t cr3,
                     struct kvm_vcpu_sregs *sregs);
/* MSR index/value pairs to set (LSTAR, STAR, SFMASK, CSTAR); returns n. */
unsigned shim_vcpu_msrs(const struct shim *s, unsigned i, uint32_t idx[8],
                        uint64_t val[8]);
void shim_vcpu_start(struct shim *s, unsigned i, const struct shim_frame *to,
                     struct kvm_vcpu_regs *regs);

/* Check S1-S3 and the tables: the image unchanged, every IDT gate at its
 * stub with the right DPL, every slot-256/257 entry supervisor-only, the
 * TSS stack pointers in place.  0 or -EUCLEAN. */
int __must_check shim_check(const struct shim *s);

/* Is (port, size, direction) a shim event?  Returns the entry or -1. */
int shim_port_entry(uint16_t port, uint8_t size, bool out);
/* Read the event for vCPU i whose shim stack pointer is rsp.  -EINVAL if
 * rsp is not where a shim stub leaves it (a shim bug or a corrupted CPU
 * state: the caller crashes the domain). */
int __must_check shim_event_read(struct shim *s, unsigned i, unsigned entry,
                                 uint64_t rsp, struct shim_event *ev);
/* Prepare regs so that the next KVM_RUN returns to `to` (ring 3). */
void shim_resume(struct shim *s, unsigned i, const struct shim_frame *to,
                 struct kvm_vcpu_regs *regs);
/* The user RSP the hardware SYSCALL entry saved (SHIM_ENTRY_SYSCALL). */
uint64_t shim_saved_rsp(struct shim *s, unsigned i);

#endif
