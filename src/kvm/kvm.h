/*
 * kvm.h - the only door to KVM: the system, VM and vCPU file descriptors,
 * every ioctl memvisor issues, and the mmaps that go with them.
 *
 * Owns: /dev/kvm (struct kvm_sys), one VM fd per domain (struct kvm_vm),
 * one fd, kvm_run mapping and optional dirty-ring mapping per vCPU
 * (struct kvm_vcpu).  Only src/kvm/kvm.c includes <linux/kvm.h>: this
 * header is self-contained.  Other modules see memvisor's own mirrors of
 * what they need -- registers (struct kvm_vcpu_regs, kvm_vcpu_sregs, same
 * fields and layout as KVM's, converted inside kvm.c), a decoded exit
 * (struct kvm_exit, kvm_vcpu_exit()), memory-slot flags (KVM_SLOT_*) --
 * and never issue an ioctl themselves.  KVM's own structures appear here
 * only as incomplete types: in struct kvm_ops (whose test doubles include
 * <linux/kvm.h> themselves), the kvm_run and dirty-ring mappings, and the
 * CPUID table, which callers pass along without looking inside.
 *
 * Operations table.  Every ioctl and mmap goes through a struct kvm_ops, one
 * function pointer per ioctl family.  kvm_ops_real() returns the table that
 * issues the real system calls; a test builds a wrapping table that forwards
 * to it and fails exactly the call it chooses (the test double for failure
 * injection).  Every op returns 0 (or a non-negative result) or -errno.
 *
 * Invariants:
 *  K1. A struct kvm_sys, kvm_vm or kvm_vcpu is either fully initialised
 *      (all fds open, all mappings in place) or all-zero with every fd -1;
 *      the open and create functions release what they took on failure.
 *  K2. vm->ring_bytes != 0 iff the dirty ring was enabled on the VM, which
 *      happened before the first vCPU was created; then every vCPU's ring is
 *      mapped and vcpu->ring_fetch counts the entries harvested so far.
 *  K3. vm->manual_protect is true iff KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 was
 *      enabled (without INITIALLY_SET); ring and bitmap modes exclude each
 *      other (KVM's rule on x86).
 *  K4. vcpu->run->immediate_exit is written only by kvm_vcpu_kick() (set) and
 *      by kvm_vcpu_run() in the vCPU's own thread (clear, after KVM_RUN
 *      returned), so a kick is never lost: either KVM_RUN has not yet
 *      started and returns -EINTR at once, or the signal interrupts it.
 *
 * Locking: none inside.  One thread at a time per kvm_vm for memory-slot
 * and dirty-log calls (the memslot and dirty modules serialise them); one
 * thread per vCPU calls kvm_vcpu_run() and the register calls;
 * kvm_vcpu_kick() and kvm_vcpu_ring_harvest() may be called from any thread
 * (ring harvest: one harvester per vCPU at a time).
 *
 * Flavours.  The same ioctls run on three kinds of KVM that differ in ways
 * a guest can see: KVM-PVM (module kvm_pvm: software virtualization, the
 * guest's ring 0 emulated, always a shadow MMU), and hardware KVM on AMD SVM
 * (kvm_amd) or Intel VMX (kvm_intel), each with nested paging (kvm_amd's
 * `npt`, kvm_intel's `ept` parameter) or with KVM's shadow MMU.  With a
 * shadow MMU, KVM reads a guest page table when it builds its shadow of it,
 * so a store the host makes to that table is seen only once KVM is made to
 * look again (docs/pv-on-kvm.md, the touch loop); with nested paging the
 * hardware walks the guest's tables in memory and sees it at once.
 * kvm_sys_flavour() says which one /dev/kvm is, from sysfs (the module
 * that is loaded, its parameters); it issues no ioctl.
 *
 * Errors: -errno from the kernel (-ENOMEM, -EINVAL, -EEXIST, -EFAULT,
 * -EINTR from a kicked KVM_RUN, -ENXIO dirty log in ring mode ...),
 * -EOPNOTSUPP when a needed capability is missing, -E2BIG for a ring larger
 * than KVM allows.
 */
#ifndef MEMVISOR_KVM_KVM_H
#define MEMVISOR_KVM_KVM_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lib/compiler.h"

/* KVM's ABI structures, complete only in kvm.c (and in test doubles of
 * struct kvm_ops, which include <linux/kvm.h>). */
struct kvm_run;
struct kvm_dirty_gfn;
struct kvm_cpuid2;
struct kvm_enable_cap;
struct kvm_userspace_memory_region;
struct kvm_dirty_log;
struct kvm_clear_dirty_log;
struct kvm_regs;
struct kvm_sregs;

/* General-purpose registers: struct kvm_regs's fields, in its order. */
struct kvm_vcpu_regs {
    uint64_t rax, rbx, rcx, rdx;
    uint64_t rsi, rdi, rsp, rbp;
    uint64_t r8, r9, r10, r11;
    uint64_t r12, r13, r14, r15;
    uint64_t rip, rflags;
};

/* One segment register: struct kvm_segment's fields. */
struct kvm_vcpu_segment {
    uint64_t base;
    uint32_t limit;
    uint16_t selector;
    uint8_t type;
    uint8_t present, dpl, db, s, l, g, avl;
    uint8_t unusable;
    uint8_t padding;
};

/* GDTR/IDTR: struct kvm_dtable's fields. */
struct kvm_vcpu_dtable {
    uint64_t base;
    uint16_t limit;
    uint16_t padding[3];
};

/* Special registers: struct kvm_sregs's fields (interrupt_bitmap: one bit
 * per vector, 256 vectors). */
struct kvm_vcpu_sregs {
    struct kvm_vcpu_segment cs, ds, es, fs, gs, ss;
    struct kvm_vcpu_segment tr, ldt;
    struct kvm_vcpu_dtable gdt, idt;
    uint64_t cr0, cr2, cr3, cr4, cr8;
    uint64_t efer;
    uint64_t apic_base;
    uint64_t interrupt_bitmap[4];
};

/* Memory-slot flags for kvm_vm_set_memory_region() (KVM's values). */
#define KVM_SLOT_LOG_DIRTY 1u /* KVM_MEM_LOG_DIRTY_PAGES */
#define KVM_SLOT_READONLY 2u  /* KVM_MEM_READONLY */

/* Why KVM_RUN returned 0, decoded by kvm_vcpu_exit(). */
enum kvm_exit_kind {
    KVM_XK_IO,             /* KVM_EXIT_IO: port access */
    KVM_XK_MMIO,           /* KVM_EXIT_MMIO: access without a slot */
    KVM_XK_HLT,            /* KVM_EXIT_HLT */
    KVM_XK_SHUTDOWN,       /* KVM_EXIT_SHUTDOWN (triple fault) */
    KVM_XK_INTERNAL_ERROR, /* KVM_EXIT_INTERNAL_ERROR */
    KVM_XK_FAIL_ENTRY,     /* KVM_EXIT_FAIL_ENTRY */
    KVM_XK_RING_FULL,      /* KVM_EXIT_DIRTY_RING_FULL */
    KVM_XK_INTR,           /* KVM_EXIT_INTR: signal (a kick) */
    KVM_XK_UNKNOWN,        /* KVM_EXIT_UNKNOWN */
    KVM_XK_OTHER,          /* anything else: see raw */
};

/* KVM_INTERNAL_ERROR_EMULATION, for kvm_exit.internal.suberror. */
#define KVM_SUBERROR_EMULATION 1u

struct kvm_exit {
    enum kvm_exit_kind kind;
    uint32_t raw; /* KVM's exit_reason (for kvm_exit_reason_name()) */
    union {
        struct { /* KVM_XK_IO */
            uint16_t port;
            uint8_t size;   /* bytes per access */
            bool out;       /* KVM_EXIT_IO_OUT */
            uint32_t count; /* accesses (rep) */
            uint8_t *data;  /* size * count bytes inside kvm_run */
        } io;
        struct { /* KVM_XK_MMIO */
            uint64_t addr;
            uint32_t len;
            bool is_write;
            uint8_t *data; /* kvm_run's 8 data bytes; a load fills them */
        } mmio;
        struct { /* KVM_XK_INTERNAL_ERROR */
            uint32_t suberror;
            uint32_t ndata; /* as KVM reports it; data holds up to 16 */
            uint64_t data[16];
        } internal;
        struct { /* KVM_XK_FAIL_ENTRY */
            uint64_t hardware_reason;
        } fail_entry;
    };
};

struct kvm_ops {
    /* open("/dev/kvm") */
    int (*open_dev)(void);
    /* /dev/kvm: KVM_GET_API_VERSION, KVM_CHECK_EXTENSION,
     * KVM_GET_VCPU_MMAP_SIZE, KVM_CREATE_VM (ioctls without a pointer). */
    int (*sys_ioctl)(int fd, unsigned long req, unsigned long arg);
    /* /dev/kvm: KVM_GET_SUPPORTED_CPUID */
    int (*get_supported_cpuid)(int fd, struct kvm_cpuid2 *cpuid);
    /* VM: KVM_ENABLE_CAP */
    int (*enable_cap)(int vmfd, const struct kvm_enable_cap *cap);
    /* VM: KVM_SET_USER_MEMORY_REGION */
    int (*set_user_memory_region)(int vmfd,
                                  const struct kvm_userspace_memory_region *r);
    /* VM: KVM_GET_DIRTY_LOG */
    int (*get_dirty_log)(int vmfd, struct kvm_dirty_log *log);
    /* VM: KVM_CLEAR_DIRTY_LOG */
    int (*clear_dirty_log)(int vmfd, struct kvm_clear_dirty_log *log);
    /* VM: KVM_RESET_DIRTY_RINGS; returns the number of entries reset */
    int (*reset_dirty_rings)(int vmfd);
    /* VM: KVM_CREATE_VCPU; returns the vCPU fd */
    int (*create_vcpu)(int vmfd, unsigned long id);
    /* VM: KVM_CREATE_IRQCHIP, KVM_SET_TSS_ADDR, KVM_SET_IDENTITY_MAP_ADDR,
     * KVM_IRQ_LINE, KVM_SIGNAL_MSI and other VM ioctls not listed above */
    int (*vm_ioctl)(int vmfd, unsigned long req, void *arg);
    /* vCPU: KVM_RUN */
    int (*run)(int vcpufd);
    /* vCPU: KVM_GET_REGS/KVM_SET_REGS (set: write true) */
    int (*regs)(int vcpufd, struct kvm_regs *regs, bool write);
    /* vCPU: KVM_GET_SREGS/KVM_SET_SREGS */
    int (*sregs)(int vcpufd, struct kvm_sregs *sregs, bool write);
    /* vCPU: KVM_SET_CPUID2 */
    int (*set_cpuid)(int vcpufd, const struct kvm_cpuid2 *cpuid);
    /* vCPU: KVM_GET_MSRS/KVM_SET_MSRS, KVM_GET/SET_FPU, KVM_GET/SET_LAPIC,
     * KVM_GET/SET_XCRS, KVM_GET/SET_VCPU_EVENTS ...; returns the ioctl's
     * non-negative result */
    int (*vcpu_ioctl)(int vcpufd, unsigned long req, void *arg);
    /* mmap(NULL, len, READ|WRITE, MAP_SHARED, fd, offset) of a vCPU fd */
    int (*map)(int fd, size_t len, uint64_t offset, void **out);
    void (*unmap)(void *addr, size_t len);
};

/* The table that issues the real system calls. */
const struct kvm_ops *kvm_ops_real(void);

/* What /dev/kvm offers; filled by kvm_sys_open(). */
struct kvm_caps {
    uint32_t nr_memslots;     /* KVM_CAP_NR_MEMSLOTS (user slots per VM) */
    bool readonly_mem;        /* KVM_CAP_READONLY_MEM */
    uint32_t manual_protect;  /* KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 mask */
    uint32_t dirty_ring_max;  /* max ring bytes, 0 if no ring */
    bool dirty_ring_acq_rel;  /* the ring cap is KVM_CAP_DIRTY_LOG_RING_ACQ_REL */
    bool irqchip;             /* KVM_CAP_IRQCHIP */
    bool immediate_exit;      /* KVM_CAP_IMMEDIATE_EXIT */
};

struct kvm_sys {
    const struct kvm_ops *ops;
    int fd;
    size_t run_size; /* KVM_GET_VCPU_MMAP_SIZE */
    struct kvm_caps caps;
};

/* How the VM logs dirty pages (fixed at VM creation, K2/K3). */
enum kvm_dirty_mode {
    KVM_DIRTY_BITMAP,        /* KVM_GET_DIRTY_LOG clears as it reads */
    KVM_DIRTY_BITMAP_MANUAL, /* GET copies, KVM_CLEAR_DIRTY_LOG re-protects */
    KVM_DIRTY_RING,          /* per-vCPU rings, KVM_RESET_DIRTY_RINGS */
};

struct kvm_vm {
    struct kvm_sys *sys;
    const struct kvm_ops *ops;
    int fd;
    enum kvm_dirty_mode dirty_mode;
    bool manual_protect;  /* K3 */
    uint32_t ring_bytes;  /* K2; 0 unless ring mode */
    uint32_t nr_vcpus;    /* created so far */
};

struct kvm_vcpu {
    struct kvm_vm *vm;
    int fd;
    uint32_t id;
    struct kvm_run *run;          /* mapped vcpu fd, sys->run_size bytes */
    struct kvm_dirty_gfn *ring;   /* ring mode: ring_entries entries */
    uint32_t ring_entries;
    uint32_t ring_fetch;          /* next entry to harvest (free-running) */
    pthread_t thread;             /* set by kvm_vcpu_bind_thread() */
    bool thread_bound;
    int kick_signal;
};

/* Open /dev/kvm through ops (NULL: kvm_ops_real()) and detect capabilities.
 * -EOPNOTSUPP if the API version is not 12 or KVM_CAP_USER_MEMORY lacks. */
int __must_check kvm_sys_open(struct kvm_sys *sys, const struct kvm_ops *ops);
void kvm_sys_close(struct kvm_sys *sys);
/* KVM_GET_SUPPORTED_CPUID into a malloc'ed table (*out; caller frees). */
int __must_check kvm_sys_supported_cpuid(struct kvm_sys *sys,
                                         struct kvm_cpuid2 **out);
/* KVM_GET_MSR_INDEX_LIST: listed[i] says whether KVM lists idx[i] among
 * the MSRs a VMM saves and restores (those a host-initiated write of the
 * value read back takes). */
int __must_check kvm_sys_msrs_listed(struct kvm_sys *sys, const uint32_t *idx,
                                     unsigned n, bool *listed);
/* Edit one register (0 eax, 1 ebx, 2 ecx, 3 edx) of the table's entry for
 * function/index: bits in clear go, bits in set come.  -ENOENT if the table
 * has no such entry. */
#define KVM_CPUID_ECX 2u
int __must_check kvm_cpuid_edit(struct kvm_cpuid2 *c, uint32_t function,
                                uint32_t index, unsigned reg, uint32_t set,
                                uint32_t clear);

struct kvm_vm_config {
    /* KVM_DIRTY_RING: ring_bytes must be a power of two, at least a page;
     * -EOPNOTSUPP if KVM lacks the ring (or manual protect for
     * KVM_DIRTY_BITMAP_MANUAL). */
    enum kvm_dirty_mode dirty_mode;
    uint32_t ring_bytes;
};

/* Pick the best mode KVM offers: the ring when want_ring and available,
 * else the bitmap with manual protect, else the plain bitmap. */
struct kvm_vm_config kvm_vm_config_default(const struct kvm_sys *sys,
                                           bool want_ring, uint32_t ring_bytes);

int __must_check kvm_vm_create(struct kvm_vm *vm, struct kvm_sys *sys,
                               const struct kvm_vm_config *cfg);
/* All vCPUs must have been destroyed. */
void kvm_vm_destroy(struct kvm_vm *vm);

/* KVM_SET_USER_MEMORY_REGION: slot id, flags (KVM_SLOT_LOG_DIRTY,
 * KVM_SLOT_READONLY), gpa, size in bytes (0 deletes), host address. */
int __must_check kvm_vm_set_memory_region(struct kvm_vm *vm, uint32_t slot,
                                          uint32_t flags, uint64_t gpa,
                                          uint64_t size, void *hva);
/* KVM_GET_DIRTY_LOG of one slot into bitmap (ALIGN_UP(npages,64)/8 bytes). */
int __must_check kvm_vm_get_dirty_log(struct kvm_vm *vm, uint32_t slot,
                                      uint64_t *bitmap);
/* KVM_CLEAR_DIRTY_LOG: first_page % 64 == 0; num_pages a multiple of 64
 * unless the range ends at the slot's end; bitmap bit i = first_page + i. */
int __must_check kvm_vm_clear_dirty_log(struct kvm_vm *vm, uint32_t slot,
                                        uint64_t first_page, uint32_t num_pages,
                                        uint64_t *bitmap);
/* KVM_RESET_DIRTY_RINGS; returns the number of entries reset or -errno. */
int __must_check kvm_vm_reset_dirty_rings(struct kvm_vm *vm);
/* KVM_CREATE_IRQCHIP. */
int __must_check kvm_vm_create_irqchip(struct kvm_vm *vm);
/* KVM_CREATE_PIT2 (after the irqchip; port 0x61 as a dummy speaker). */
int __must_check kvm_vm_create_pit2(struct kvm_vm *vm);
/* KVM_IRQ_LINE: set an in-kernel irqchip input (PIC and IOAPIC pin irq). */
int __must_check kvm_vm_irq_line(struct kvm_vm *vm, uint32_t irq, bool level);
/* KVM_SET_TSS_ADDR (three pages at gpa, for a VMX host's real-mode and
 * task-switch emulation) where KVM_CAP_SET_TSS_ADDR says it is needed;
 * 0 where it is not offered. */
int __must_check kvm_vm_set_tss_addr(struct kvm_vm *vm, uint32_t gpa);
/*
 * Saved state (HVM save and restore).  Each kind is one of KVM's own
 * structures, carried as opaque bytes of exactly kvm_state_bytes(kind):
 * what the ioctl fills is what a restore gives back.  -EOPNOTSUPP where
 * KVM lacks the capability (debug registers, XSAVE, XCRs).
 */
enum kvm_state_kind {
    KVM_ST_REGS,      /* vCPU: struct kvm_regs (KVM_GET/SET_REGS) */
    KVM_ST_SREGS,     /* vCPU: struct kvm_sregs */
    KVM_ST_DEBUGREGS, /* vCPU: struct kvm_debugregs */
    KVM_ST_FPU,       /* vCPU: struct kvm_fpu */
    KVM_ST_XSAVE,     /* vCPU: struct kvm_xsave (4 KiB) */
    KVM_ST_XCRS,      /* vCPU: struct kvm_xcrs */
    KVM_ST_LAPIC,     /* vCPU: struct kvm_lapic_state */
    KVM_ST_EVENTS,    /* vCPU: struct kvm_vcpu_events (set: with the NMI
                         pending and SIPI vector flagged valid) */
    KVM_ST_MP_STATE,  /* vCPU: struct kvm_mp_state */
    KVM_ST_PIC0,      /* VM: KVM_GET/SET_IRQCHIP, chip 0: the chip union */
    KVM_ST_PIC1,      /* VM: chip 1 (slave PIC) */
    KVM_ST_IOAPIC,    /* VM: chip 2 */
    KVM_ST_PIT2,      /* VM: struct kvm_pit_state2 */
    KVM_ST_CLOCK,     /* VM: struct kvm_clock_data (set: clock only) */
    KVM_ST_NR
};
#define KVM_ST_CHIP_BYTES 512
size_t kvm_state_bytes(enum kvm_state_kind kind);
/* Read (write false) or write a vCPU kind into/from buf of len bytes. */
int __must_check kvm_vcpu_state(struct kvm_vcpu *vcpu, enum kvm_state_kind kind,
                                void *buf, size_t len, bool write);
/* The same for a VM kind (PIC0 .. CLOCK). */
int __must_check kvm_vm_state(struct kvm_vm *vm, enum kvm_state_kind kind,
                              void *buf, size_t len, bool write);

/* Any other VM ioctl (KVM_SET_TSS_ADDR, KVM_SIGNAL_MSI, ...). */
int __must_check kvm_vm_ioctl(struct kvm_vm *vm, unsigned long req, void *arg);

/* KVM_CREATE_VCPU, map kvm_run and (ring mode) the dirty ring. */
int __must_check kvm_vcpu_create(struct kvm_vcpu *vcpu, struct kvm_vm *vm,
                                 uint32_t id);
void kvm_vcpu_destroy(struct kvm_vcpu *vcpu);

/*
 * Kicking.  kvm_kick_signal_install(signo) installs an empty handler
 * (without SA_RESTART) for signo, once per process, before any kick.  The
 * thread that will call kvm_vcpu_run() calls kvm_vcpu_bind_thread() first.
 * kvm_vcpu_kick() sets immediate_exit and sends the signal to that thread:
 * a KVM_RUN in progress or about to start returns -EINTR (K4).  A run loop
 * sets its own request flag before kicking and checks it after -EINTR.
 */
int __must_check kvm_kick_signal_install(int signo);
void kvm_vcpu_bind_thread(struct kvm_vcpu *vcpu, int signo);
void kvm_vcpu_kick(struct kvm_vcpu *vcpu);

/* KVM_RUN once.  0: kvm_vcpu_exit() says why it stopped; -EINTR:
 * kicked or interrupted (immediate_exit is cleared again); -EAGAIN: a
 * vCPU that had never run (an HVM application processor) waited in KVM
 * for its INIT or SIPI and took it: run it again; other -errno. */
int __must_check kvm_vcpu_run(struct kvm_vcpu *vcpu);
/* Decode the last exit (after kvm_vcpu_run() returned 0) from kvm_run;
 * io.data and mmio.data point into the mapping, valid until the next run. */
void kvm_vcpu_exit(const struct kvm_vcpu *vcpu, struct kvm_exit *ex);

int __must_check kvm_vcpu_get_regs(struct kvm_vcpu *vcpu,
                                   struct kvm_vcpu_regs *r);
int __must_check kvm_vcpu_set_regs(struct kvm_vcpu *vcpu,
                                   const struct kvm_vcpu_regs *r);
int __must_check kvm_vcpu_get_sregs(struct kvm_vcpu *vcpu,
                                    struct kvm_vcpu_sregs *s);
int __must_check kvm_vcpu_set_sregs(struct kvm_vcpu *vcpu,
                                    const struct kvm_vcpu_sregs *s);
int __must_check kvm_vcpu_set_cpuid(struct kvm_vcpu *vcpu,
                                    const struct kvm_cpuid2 *cpuid);
/* Set one MSR (KVM_SET_MSRS with one entry). */
int __must_check kvm_vcpu_set_msr(struct kvm_vcpu *vcpu, uint32_t index,
                                  uint64_t value);
int __must_check kvm_vcpu_get_msr(struct kvm_vcpu *vcpu, uint32_t index,
                                  uint64_t *value);
/* KVM_NMI: an NMI for the vCPU, delivered through its in-kernel LAPIC
 * (as QEMU's `nmi` command and `xl trigger nmi`); -ENXIO without one. */
int __must_check kvm_vcpu_nmi(struct kvm_vcpu *vcpu);
/* Whether KVM holds an exception, interrupt or NMI for the vCPU that it
 * has not delivered yet (KVM_GET_VCPU_EVENTS): changing RIP now would
 * deliver it at the new RIP. */
int __must_check kvm_vcpu_event_in_flight(struct kvm_vcpu *vcpu, bool *busy);
/* Any other vCPU ioctl (KVM_GET_FPU, KVM_SET_LAPIC, ...). */
int __must_check kvm_vcpu_ioctl(struct kvm_vcpu *vcpu, unsigned long req,
                                void *arg);

/*
 * Dirty ring harvest (ring mode).  Calls fn(slot, offset, opaque) for each
 * entry the kernel published since the last harvest, in ring order, and
 * marks it harvested; fn cannot fail (it records into a preallocated log).
 * Ignores nothing: fn validates slot/offset.  Returns the number of entries
 * harvested.  The caller then calls kvm_vm_reset_dirty_rings() before it
 * reads the pages (KVM's rule: reset before reading).
 */
typedef void (*kvm_ring_fn)(uint32_t slot, uint64_t offset, void *opaque);
uint32_t kvm_vcpu_ring_harvest(struct kvm_vcpu *vcpu, kvm_ring_fn fn,
                               void *opaque);

/* Which KVM /dev/kvm is (see "Flavours" above). */
enum kvm_flavour_kind {
    KVM_FLAVOUR_PVM, /* kvm_pvm: software virtualization, shadow MMU */
    KVM_FLAVOUR_SVM, /* kvm_amd: AMD SVM */
    KVM_FLAVOUR_VMX, /* kvm_intel: Intel VMX */
};

struct kvm_flavour {
    enum kvm_flavour_kind kind;
    /* NPT (SVM) or EPT (VMX) in use; false: KVM's shadow MMU (always so
     * on KVM-PVM). */
    bool nested_paging;
};

/*
 * The flavour of the KVM the process runs on, read from sysfs under
 * sysroot (NULL: "/"; tests pass a fake tree): kvm_pvm is looked for first
 * (/sys/module/kvm_pvm exists), then kvm_amd, then kvm_intel, whose
 * parameters/npt or parameters/ept reads "Y" or "1" when nested paging is
 * on.  -ENOENT if none of the three modules is there (or a hardware
 * module's paging parameter cannot be read), -EINVAL if that parameter
 * holds something else.
 */
int __must_check kvm_flavour_read(const char *sysroot, struct kvm_flavour *out);
/* kvm_flavour_read(NULL, out) for an open /dev/kvm (-EBADF if not open). */
int __must_check kvm_sys_flavour(const struct kvm_sys *sys,
                                 struct kvm_flavour *out);
/* "KVM-PVM, shadow MMU", "SVM, nested paging", "VMX, shadow MMU", ... */
const char *kvm_flavour_name(const struct kvm_flavour *f);
/* Whether the host's stores to guest page tables are seen only after KVM
 * looks at them again (a shadow MMU): the touch loop is needed. */
static inline bool kvm_flavour_shadow_mmu(const struct kvm_flavour *f)
{
    return !f->nested_paging;
}

/* Human-readable KVM exit reason (kvm_exit.raw), for logs and tests. */
const char *kvm_exit_reason_name(uint32_t reason);

/* Check K1-K3 on a VM and K1/K2 on a vCPU: 0 or -EUCLEAN. */
int __must_check kvm_vm_check(const struct kvm_vm *vm);
int __must_check kvm_vcpu_check(const struct kvm_vcpu *vcpu);

#endif
