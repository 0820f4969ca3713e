/*
 * xen/xen.h - the PV hypercall ABI memvisor implements: Xen's x86-64 public
 * ABI (numbers, argument structures, error values, boot structures), shared
 * by the hypervisor and the guest kernels.
 *
 * Contract:
 *  1. Every number and layout here is Xen's x86-64 PV ABI, so a guest written
 *     for Xen runs unchanged; the _Static_asserts at the end pin each layout
 *     (size and the offsets a guest or builder relies on).
 *  2. Freestanding: only <stdint.h>; no types, macros or names that clash
 *     with the C library or with src/lib (errno values are XEN_E*, the page
 *     size is XEN_PAGE_*, domain ids are plain uint16_t).
 *  3. Pointers inside structures are uint64_t guest-virtual addresses (a
 *     "guest handle"): the hypervisor never dereferences them directly, it
 *     copies through its checked guest-memory accessors.
 *  4. Anything memvisor adds to Xen's ABI is marked "memvisor:" here and in
 *     docs/abi.md, which describes each hypercall (arguments, errors,
 *     continuations) as memvisor implements it.
 *
 * Register convention (x86-64): call the stub at hypercall_page + nr * 32
 * with arguments in rdi, rsi, rdx, r10, r8 (r9); the result is in rax;
 * rcx and r11 are clobbered, argument registers may be.
 */
#ifndef MEMVISOR_XEN_XEN_H
#define MEMVISOR_XEN_XEN_H

#include <stdint.h>

/* ---------------------------------------------------------------------- */
/* Hypercall numbers (Xen's public xen.h).                                 */

#define __HYPERVISOR_set_trap_table 0
#define __HYPERVISOR_mmu_update 1
#define __HYPERVISOR_set_gdt 2
#define __HYPERVISOR_stack_switch 3
#define __HYPERVISOR_set_callbacks 4
#define __HYPERVISOR_fpu_taskswitch 5
#define __HYPERVISOR_sched_op_compat 6
#define __HYPERVISOR_platform_op 7
#define __HYPERVISOR_set_debugreg 8
#define __HYPERVISOR_get_debugreg 9
#define __HYPERVISOR_update_descriptor 10
#define __HYPERVISOR_memory_op 12
#define __HYPERVISOR_multicall 13
#define __HYPERVISOR_update_va_mapping 14
#define __HYPERVISOR_set_timer_op 15
#define __HYPERVISOR_event_channel_op_compat 16
#define __HYPERVISOR_xen_version 17
#define __HYPERVISOR_console_io 18
#define __HYPERVISOR_physdev_op_compat 19
#define __HYPERVISOR_grant_table_op 20
#define __HYPERVISOR_vm_assist 21
#define __HYPERVISOR_update_va_mapping_otherdomain 22
#define __HYPERVISOR_iret 23
#define __HYPERVISOR_vcpu_op 24
#define __HYPERVISOR_set_segment_base 25
#define __HYPERVISOR_mmuext_op 26
#define __HYPERVISOR_xsm_op 27
#define __HYPERVISOR_nmi_op 28
#define __HYPERVISOR_sched_op 29
#define __HYPERVISOR_callback_op 30
#define __HYPERVISOR_xenoprof_op 31
#define __HYPERVISOR_event_channel_op 32
#define __HYPERVISOR_physdev_op 33
#define __HYPERVISOR_hvm_op 34
#define __HYPERVISOR_sysctl 35
#define __HYPERVISOR_domctl 36

/* The hypercall page: one 4 KiB page of 32-byte stubs, stub N at N * 32. */
#define XEN_HYPERCALL_STUB_SIZE 32
#define XEN_HYPERCALL_NR_STUBS 128 /* 4096 / 32 */

/* ---------------------------------------------------------------------- */
/* Error values: Xen returns negative Linux-like errno values.             */

#define XEN_EPERM 1
#define XEN_ENOENT 2
#define XEN_ESRCH 3
#define XEN_EINTR 4
#define XEN_EIO 5
#define XEN_ENXIO 6
#define XEN_E2BIG 7
#define XEN_ENOEXEC 8
#define XEN_EBADF 9
#define XEN_ECHILD 10
#define XEN_EAGAIN 11
#define XEN_ENOMEM 12
#define XEN_EACCES 13
#define XEN_EFAULT 14
#define XEN_EBUSY 16
#define XEN_EEXIST 17
#define XEN_EXDEV 18
#define XEN_ENODEV 19
#define XEN_EINVAL 22
#define XEN_ENFILE 23
#define XEN_EMFILE 24
#define XEN_ENOSPC 28
#define XEN_EMLINK 31
#define XEN_EDOM 33
#define XEN_ERANGE 34
#define XEN_EDEADLK 35
#define XEN_ENAMETOOLONG 36
#define XEN_ENOLCK 37
#define XEN_ENOSYS 38
#define XEN_ENODATA 61
#define XEN_ETIME 62
#define XEN_EBADMSG 74
#define XEN_EOVERFLOW 75
#define XEN_EILSEQ 84
#define XEN_ERESTART 85 /* internal: never returned to a guest */
#define XEN_ENOTSOCK 88
#define XEN_EOPNOTSUPP 95
#define XEN_EADDRINUSE 98
#define XEN_EADDRNOTAVAIL 99
#define XEN_ENOBUFS 105
#define XEN_EISCONN 106
#define XEN_ENOTCONN 107
#define XEN_ETIMEDOUT 110

/* ---------------------------------------------------------------------- */
/* Domain ids, pages, x86-64 PV address-space layout.                       */

#define XEN_PAGE_SHIFT 12
#define XEN_PAGE_SIZE (1ULL << XEN_PAGE_SHIFT)

#define DOMID_FIRST_RESERVED 0x7FF0U
#define DOMID_SELF 0x7FF0U
#define DOMID_IO 0x7FF1U
#define DOMID_XEN 0x7FF2U
#define DOMID_COW 0x7FF3U
#define DOMID_INVALID 0x7FF4U
#define DOMID_IDLE 0x7FFFU

/* The hypervisor's range: L4 slots 256..271, never mappable by a guest. */
#define HYPERVISOR_VIRT_START 0xFFFF800000000000ULL
#define HYPERVISOR_VIRT_END 0xFFFF880000000000ULL
#define XEN_L4_FIRST_HV_SLOT 256
#define XEN_L4_LAST_HV_SLOT 271

/* Flat selectors of Xen's GDT, as x86-64 PV guests use them. */
#define FLAT_RING3_CS32 0xe023
#define FLAT_RING3_CS64 0xe033
#define FLAT_RING3_DS32 0xe02b
#define FLAT_RING3_DS64 0x0000
#define FLAT_RING3_SS32 0xe02b
#define FLAT_RING3_SS64 0xe02b
#define FLAT_KERNEL_CS FLAT_RING3_CS64
#define FLAT_KERNEL_DS FLAT_RING3_DS64
#define FLAT_KERNEL_SS FLAT_RING3_SS64
#define FLAT_USER_CS FLAT_RING3_CS64
#define FLAT_USER_DS FLAT_RING3_DS64
#define FLAT_USER_SS FLAT_RING3_SS64

/* ---------------------------------------------------------------------- */
/* set_trap_table(struct trap_info *table): a virtual IDT, ended by an
 * entry whose address is 0.  flags bits 0-1: the lowest ring allowed to
 * raise the vector with INT n (3 = user); bit 2 (TI_SET_IF): mask events
 * on entry, as an interrupt gate. */
struct trap_info {
    uint8_t vector;
    uint8_t flags;
    uint16_t cs;
    uint32_t pad;
    uint64_t address;
};
#define TI_GET_DPL(_ti) ((_ti)->flags & 3)
#define TI_GET_IF(_ti) ((_ti)->flags & 4)
#define TI_SET_DPL(_ti, _dpl) ((_ti)->flags |= (_dpl))
#define TI_SET_IF(_ti, _if) ((_ti)->flags |= ((!!(_if)) << 2))

/* ---------------------------------------------------------------------- */
/* mmu_update(struct mmu_update *reqs, unsigned count, unsigned *done,
 *            unsigned foreigndom).  ptr[1:0] = command, ptr & ~7 = machine
 * address of the entry (or of the frame for MACHPHYS_UPDATE). */
#define MMU_NORMAL_PT_UPDATE 0
#define MMU_MACHPHYS_UPDATE 1
#define MMU_PT_UPDATE_PRESERVE_AD 2
#define MMU_PT_UPDATE_NO_TRANSLATE 3
#define MMU_UPDATE_PREEMPTED (~(~0U >> 1)) /* bit 31 of count */

struct mmu_update {
    uint64_t ptr;
    uint64_t val;
};

/* ---------------------------------------------------------------------- */
/* mmuext_op(struct mmuext_op *ops, unsigned count, unsigned *done,
 *           unsigned foreigndom). */
#define MMUEXT_PIN_L1_TABLE 0
#define MMUEXT_PIN_L2_TABLE 1
#define MMUEXT_PIN_L3_TABLE 2
#define MMUEXT_PIN_L4_TABLE 3
#define MMUEXT_UNPIN_TABLE 4
#define MMUEXT_NEW_BASEPTR 5
#define MMUEXT_TLB_FLUSH_LOCAL 6
#define MMUEXT_INVLPG_LOCAL 7
#define MMUEXT_TLB_FLUSH_MULTI 8
#define MMUEXT_INVLPG_MULTI 9
#define MMUEXT_TLB_FLUSH_ALL 10
#define MMUEXT_INVLPG_ALL 11
#define MMUEXT_FLUSH_CACHE 12
#define MMUEXT_SET_LDT 13
#define MMUEXT_NEW_USER_BASEPTR 15
#define MMUEXT_CLEAR_PAGE 16
#define MMUEXT_COPY_PAGE 17
#define MMUEXT_FLUSH_CACHE_GLOBAL 18
#define MMUEXT_MARK_SUPER 19
#define MMUEXT_UNMARK_SUPER 20

struct mmuext_op {
    uint32_t cmd;
    uint32_t pad;
    union {
        uint64_t mfn;         /* (UN)PIN_*, NEW_(USER_)BASEPTR, *_PAGE */
        uint64_t linear_addr; /* INVLPG_*, SET_LDT */
    } arg1;
    union {
        uint32_t nr_ents;  /* SET_LDT */
        uint64_t vcpumask; /* *_MULTI: guest address of a vCPU bitmap */
        uint64_t src_mfn;  /* COPY_PAGE */
    } arg2;
};

/* update_va_mapping(unsigned long va, uint64_t pte, unsigned long flags) */
#define UVMF_NONE 0UL
#define UVMF_TLB_FLUSH 1UL
#define UVMF_INVLPG 2UL
#define UVMF_FLUSHTYPE_MASK 3UL
#define UVMF_MULTI 0UL
#define UVMF_LOCAL 0UL
#define UVMF_ALL 4UL

/* ---------------------------------------------------------------------- */
/* memory_op(unsigned cmd, void *arg).  cmd bits 0-5 are the command; the
 * bits above MEMOP_EXTENT_SHIFT carry the continuation's start extent. */
#define XENMEM_increase_reservation 0
#define XENMEM_decrease_reservation 1
#define XENMEM_maximum_ram_page 2
#define XENMEM_current_reservation 3
#define XENMEM_maximum_reservation 4
#define XENMEM_machphys_mfn_list 5
#define XENMEM_machphys_mapping 12 /* arg: {v_start, v_end, max_mfn} */
#define XENMEM_populate_physmap 6
#define XENMEM_add_to_physmap 7
#define XENMEM_memory_map 9
#define XENMEM_machine_memory_map 10
#define XENMEM_exchange 11
#define XENMEM_maximum_gpfn 14
#define MEMOP_EXTENT_SHIFT 6
#define MEMOP_CMD_MASK ((1U << MEMOP_EXTENT_SHIFT) - 1)

struct xen_memory_reservation {
    uint64_t extent_start; /* guest address of a xen_pfn_t array */
    uint64_t nr_extents;
    uint32_t extent_order;
    uint32_t mem_flags; /* XENMEMF_*: address bits 0-7, node above */
    uint16_t domid;
    uint16_t pad[3];
};

/* ---------------------------------------------------------------------- */
/* multicall(struct multicall_entry *calls, unsigned nr) */
struct multicall_entry {
    uint64_t op;
    uint64_t result;
    uint64_t args[6];
};

/* ---------------------------------------------------------------------- */
/* console_io(int cmd, int count, char *buffer) */
#define CONSOLEIO_write 0
#define CONSOLEIO_read 1

/* vm_assist(unsigned cmd, unsigned type) */
#define VMASST_CMD_enable 0
#define VMASST_CMD_disable 1
#define VMASST_TYPE_4gb_segments 0
#define VMASST_TYPE_4gb_segments_notify 1
#define VMASST_TYPE_writable_pagetables 2
#define VMASST_TYPE_pae_extended_cr3 3
#define VMASST_TYPE_architectural_iopl 4
#define VMASST_TYPE_runstate_update_flag 5
#define VMASST_TYPE_m2p_strict 32

/* set_segment_base(unsigned which, unsigned long base) */
#define SEGBASE_FS 0
#define SEGBASE_GS_USER 1
#define SEGBASE_GS_KERNEL 2
#define SEGBASE_GS_USER_SEL 3

/* ---------------------------------------------------------------------- */
/* xen_version(int cmd, void *arg) */
#define XENVER_version 0 /* returns major << 16 | minor */
#define XENVER_extraversion 1
#define XENVER_compile_info 2
#define XENVER_capabilities 3
#define XENVER_changeset 4
#define XENVER_platform_parameters 5
#define XENVER_get_features 6
#define XENVER_pagesize 7
#define XENVER_guest_handle 8
#define XENVER_commandline 9
#define XENVER_build_id 10

#define XEN_EXTRAVERSION_LEN 16
#define XEN_CAPABILITIES_INFO_LEN 1024
#define XEN_CHANGESET_INFO_LEN 64

struct xen_platform_parameters {
    uint64_t virt_start;
};

struct xen_feature_info {
    uint32_t submap_idx;
    uint32_t submap;
};

/* Feature bits (XENVER_get_features, submap 0). */
#define XENFEAT_writable_page_tables 0
#define XENFEAT_writable_descriptor_tables 1
#define XENFEAT_auto_translated_physmap 2
#define XENFEAT_supervisor_mode_kernel 3
#define XENFEAT_pae_pgdir_above_4gb 4
#define XENFEAT_mmu_pt_update_preserve_ad 5
#define XENFEAT_highmem_assist 6
#define XENFEAT_gnttab_map_avail_bits 7
#define XENFEAT_hvm_callback_vector 8
#define XENFEAT_hvm_safe_pvclock 9
#define XENFEAT_hvm_pirqs 10
#define XENFEAT_dom0 11

/* ---------------------------------------------------------------------- */
/* sched_op(int cmd, void *arg) */
#define SCHEDOP_yield 0
#define SCHEDOP_block 1
#define SCHEDOP_shutdown 2
#define SCHEDOP_poll 3
#define SCHEDOP_remote_shutdown 4
#define SCHEDOP_shutdown_code 5
#define SCHEDOP_watchdog 6
#define SCHEDOP_pin_override 7

#define SHUTDOWN_poweroff 0
#define SHUTDOWN_reboot 1
#define SHUTDOWN_suspend 2
#define SHUTDOWN_crash 3
#define SHUTDOWN_watchdog 4
#define SHUTDOWN_soft_reset 5

struct sched_shutdown {
    uint32_t reason; /* SHUTDOWN_* */
};

/* ---------------------------------------------------------------------- */
/* callback_op(int cmd, void *arg) and set_callbacks(event, failsafe,
 * syscall) */
#define CALLBACKTYPE_event 0
#define CALLBACKTYPE_failsafe 1
#define CALLBACKTYPE_syscall 2
#define CALLBACKTYPE_sysenter_deprecated 3
#define CALLBACKTYPE_nmi 4
#define CALLBACKTYPE_sysenter 5
#define CALLBACKTYPE_syscall32 7
#define CALLBACKF_mask_events (1U << 0)

#define CALLBACKOP_register 0
#define CALLBACKOP_unregister 1

struct callback_register {
    uint16_t type;
    uint16_t flags;
    uint32_t pad;
    uint64_t address;
};

struct callback_unregister {
    uint16_t type;
    uint16_t unused;
};

/* ---------------------------------------------------------------------- */
/* vcpu_op(int cmd, unsigned vcpuid, void *arg) */
#define VCPUOP_initialise 0 /* arg: struct vcpu_guest_context */
#define VCPUOP_up 1
#define VCPUOP_down 2
#define VCPUOP_is_up 3
#define VCPUOP_get_runstate_info 4
#define VCPUOP_register_runstate_memory_area 5
#define VCPUOP_set_periodic_timer 6
#define VCPUOP_stop_periodic_timer 7
#define VCPUOP_set_singleshot_timer 8
#define VCPUOP_stop_singleshot_timer 9
#define VCPUOP_register_vcpu_info 10
#define VCPUOP_send_nmi 11
#define VCPUOP_get_physid 12

/* event_channel_op(int cmd, void *arg) */
#define EVTCHNOP_bind_interdomain 0
#define EVTCHNOP_bind_virq 1
#define EVTCHNOP_bind_pirq 2
#define EVTCHNOP_close 3
#define EVTCHNOP_send 4
#define EVTCHNOP_status 5
#define EVTCHNOP_alloc_unbound 6
#define EVTCHNOP_bind_ipi 7
#define EVTCHNOP_bind_vcpu 8
#define EVTCHNOP_unmask 9
#define EVTCHNOP_reset 10
#define EVTCHNOP_init_control 11
#define EVTCHNOP_expand_array 12
#define EVTCHNOP_set_priority 13

/* Event channel status (EVTCHNOP_status). */
#define EVTCHNSTAT_closed 0
#define EVTCHNSTAT_unbound 1
#define EVTCHNSTAT_interdomain 2
#define EVTCHNSTAT_pirq 3
#define EVTCHNSTAT_virq 4
#define EVTCHNSTAT_ipi 5

/* Virtual interrupts (EVTCHNOP_bind_virq). */
#define VIRQ_TIMER 0
#define VIRQ_DEBUG 1
#define VIRQ_CONSOLE 2
#define VIRQ_DOM_EXC 3
#define NR_VIRQS 24

/* VCPUOP_set_singleshot_timer's argument. */
struct vcpu_set_singleshot_timer {
    uint64_t timeout_abs_ns; /* system time */
    uint32_t flags;          /* VCPU_SSHOTTMR_future */
    uint32_t pad;
};
#define VCPU_SSHOTTMR_future 1

/* ---------------------------------------------------------------------- */
/* Registers as Xen saves them (x86-64), for vcpu_guest_context. */
struct cpu_user_regs {
    uint64_t r15, r14, r13, r12, rbp, rbx, r11, r10, r9, r8;
    uint64_t rax, rcx, rdx, rsi, rdi;
    uint32_t error_code;
    uint32_t entry_vector;
    uint64_t rip;
    uint16_t cs, pad0[1];
    uint8_t saved_upcall_mask;
    uint8_t pad1[3];
    uint64_t rflags;
    uint64_t rsp;
    uint16_t ss, pad2[3];
    uint16_t es, pad3[3];
    uint16_t ds, pad4[3];
    uint16_t fs, pad5[3];
    uint16_t gs, pad6[3];
};

#define VGCF_I387_VALID (1U << 0)
#define VGCF_IN_KERNEL (1U << 2)
#define VGCF_failsafe_disables_events (1U << 3)
#define VGCF_syscall_disables_events (1U << 4)
#define VGCF_online (1U << 5)

/* VCPUOP_initialise's argument (x86-64 layout). */
struct vcpu_guest_context {
    uint8_t fpu_ctxt[512];
    uint64_t flags; /* VGCF_* */
    struct cpu_user_regs user_regs;
    struct trap_info trap_ctxt[256];
    uint64_t ldt_base, ldt_ents;
    uint64_t gdt_frames[16], gdt_ents;
    uint64_t kernel_ss, kernel_sp;
    uint64_t ctrlreg[8]; /* ctrlreg[3]: kernel L4 (cr3 format), [1]: user */
    uint64_t debugreg[8];
    uint64_t event_callback_eip;
    uint64_t failsafe_callback_eip;
    uint64_t syscall_callback_eip;
    uint64_t vm_assist;
    uint64_t fs_base;
    uint64_t gs_base_kernel;
    uint64_t gs_base_user;
};
#define xen_pfn_to_cr3(pfn) ((uint64_t)(pfn) << 12)
#define xen_cr3_to_pfn(cr3) ((uint64_t)(cr3) >> 12)

/* ---------------------------------------------------------------------- */
/* iret: the guest jumps (not calls) to stub 23 with rsp pointing at
 * {flags, rip, cs, rflags, rsp, ss}; the stub pushes rcx, r11, rax, so
 * that the hypervisor finds a struct iret_context at rsp.  It never
 * returns on success.  With VGCF_in_syscall in flags, only rax, rip,
 * rflags and rsp are restored (r11, rcx, cs, ss are discarded). */
#define VGCF_in_syscall (1U << 8)
#define VGCF_IN_SYSCALL VGCF_in_syscall

struct iret_context {
    uint64_t rax, r11, rcx, flags, rip, cs, rflags, rsp, ss;
};

/* The bounce frame: what the hypervisor pushes on the guest kernel stack
 * (16-byte aligned, switched to the stack_switch() stack when the guest was
 * in user mode) before entering a trap_info handler or callback.  The
 * handler starts with rsp pointing at rcx; the error code slot exists only
 * for the vectors in XEN_TRAP_HAS_ERRCODE.  The cs slot carries the saved
 * event mask in bits 32-39; cs & 3 is 3 for both guest kernel and user,
 * the kernel/user distinction lies in the hypervisor's vCPU state. */
struct xen_bounce_frame {
    uint64_t rcx, r11;
    uint64_t rip, cs, rflags, rsp, ss;
};
struct xen_bounce_frame_err {
    uint64_t rcx, r11;
    uint64_t error_code;
    uint64_t rip, cs, rflags, rsp, ss;
};
#define XEN_TRAP_HAS_ERRCODE(v)                                                \
    ((v) == 8 || ((v) >= 10 && (v) <= 14) || (v) == 17 || (v) == 21 ||         \
     (v) == 29 || (v) == 30)

/* ---------------------------------------------------------------------- */
/* Shared info: one page per domain, machine address in start_info. */
#define XEN_LEGACY_MAX_VCPUS 32

struct arch_vcpu_info {
    uint64_t cr2; /* the faulting address of the last bounced #PF */
    uint64_t pad;
};

struct vcpu_time_info {
    uint32_t version;
    uint32_t pad0;
    uint64_t tsc_timestamp;
    uint64_t system_time;
    uint32_t tsc_to_system_mul;
    int8_t tsc_shift;
    int8_t pad1[3];
};

struct vcpu_info {
    uint8_t evtchn_upcall_pending;
    uint8_t evtchn_upcall_mask;
    uint8_t pad[6];
    uint64_t evtchn_pending_sel;
    struct arch_vcpu_info arch;
    struct vcpu_time_info time;
};

/* VCPUOP_register_runstate_memory_area: the area a guest registers. */
#define RUNSTATE_running 0
#define RUNSTATE_runnable 1
#define RUNSTATE_blocked 2
#define RUNSTATE_offline 3
struct vcpu_runstate_info {
    int32_t state;
    int32_t pad;
    uint64_t state_entry_time;
    uint64_t time[4];
};
_Static_assert(sizeof(struct vcpu_runstate_info) == 48, "runstate_info");

struct arch_shared_info {
    uint64_t max_pfn;
    uint64_t pfn_to_mfn_frame_list_list;
    uint64_t nmi_reason;
    uint64_t p2m_cr3;
    uint64_t p2m_vaddr;
    uint64_t p2m_generation;
};

struct shared_info {
    struct vcpu_info vcpu_info[XEN_LEGACY_MAX_VCPUS];
    uint64_t evtchn_pending[64];
    uint64_t evtchn_mask[64];
    uint32_t wc_version;
    uint32_t wc_sec;
    uint32_t wc_nsec;
    uint32_t wc_sec_hi;
    struct arch_shared_info arch;
};

/* ---------------------------------------------------------------------- */
/* start_info: the page whose address a PV guest finds in rsi at entry.
 * Start-of-day layout (Xen's): one virtually contiguous region from
 * VIRT_BASE, mapping pfns 0.. in order: kernel image, (module), the p2m
 * list (mfn_list: nr_pages uint64_t mfns), start_info, (store, console),
 * the bootstrap page tables (mapped read-only, pt_base = VA of the L4,
 * nr_pt_frames of them), the bootstrap stack (rsp at entry is its top);
 * then at least 512 KiB of mapped free pages; the region ends on a 4 MiB
 * boundary. */
#define MAX_GUEST_CMDLINE 1024

#define SIF_PRIVILEGED (1U << 0)
#define SIF_INITDOMAIN (1U << 1)
#define SIF_MULTIBOOT_MOD (1U << 2)
#define SIF_MOD_START_PFN (1U << 3)
#define SIF_VIRT_P2M_4TOOLS (1U << 4)
#define SIF_PM_MASK (0xFFU << 8)

struct start_info {
    char magic[32]; /* "xen-<version>-<platform>" */
    uint64_t nr_pages;
    uint64_t shared_info; /* machine address of the shared info page */
    uint32_t flags;       /* SIF_* */
    uint32_t pad0;
    uint64_t store_mfn;
    uint32_t store_evtchn;
    uint32_t pad1;
    union {
        struct {
            uint64_t mfn;
            uint32_t evtchn;
            uint32_t pad;
        } domU;
        struct {
            uint32_t info_off;
            uint32_t info_size;
        } dom0;
    } console;
    uint64_t pt_base;      /* VA of the bootstrap L4 */
    uint64_t nr_pt_frames; /* number of bootstrap page-table frames */
    uint64_t mfn_list;     /* VA of the p2m list */
    uint64_t mod_start;
    uint64_t mod_len;
    char cmd_line[MAX_GUEST_CMDLINE];
    uint64_t first_p2m_pfn;
    uint64_t nr_p2m_frames;
};

/* ---------------------------------------------------------------------- */
/* ELF notes (name "Xen", in a PT_NOTE segment / .note.Xen section). */
#define XEN_ELFNOTE_INFO 0
#define XEN_ELFNOTE_ENTRY 1          /* VA of the entry point */
#define XEN_ELFNOTE_HYPERCALL_PAGE 2 /* VA of a page for the stubs */
#define XEN_ELFNOTE_VIRT_BASE 3      /* VA of pfn 0 */
#define XEN_ELFNOTE_PADDR_OFFSET 4
#define XEN_ELFNOTE_XEN_VERSION 5 /* string, "xen-3.0" */
#define XEN_ELFNOTE_GUEST_OS 6    /* string */
#define XEN_ELFNOTE_GUEST_VERSION 7
#define XEN_ELFNOTE_LOADER 8    /* string, "generic" */
#define XEN_ELFNOTE_PAE_MODE 9  /* string */
#define XEN_ELFNOTE_FEATURES 10 /* string, '|'-separated */
#define XEN_ELFNOTE_BSD_SYMTAB 11
#define XEN_ELFNOTE_HV_START_LOW 12
#define XEN_ELFNOTE_L1_MFN_VALID 13
#define XEN_ELFNOTE_SUSPEND_CANCEL 14
#define XEN_ELFNOTE_INIT_P2M 15
#define XEN_ELFNOTE_MOD_START_PFN 16
#define XEN_ELFNOTE_SUPPORTED_FEATURES 17
#define XEN_ELFNOTE_PHYS32_ENTRY 18
#define XEN_ELFNOTE_MAX XEN_ELFNOTE_PHYS32_ENTRY

/* ---------------------------------------------------------------------- */
/* Layouts the ABI depends on. */
_Static_assert(sizeof(struct trap_info) == 16, "trap_info");
_Static_assert(sizeof(struct mmu_update) == 16, "mmu_update");
_Static_assert(sizeof(struct mmuext_op) == 24, "mmuext_op");
_Static_assert(sizeof(struct xen_memory_reservation) == 32, "reservation");
_Static_assert(sizeof(struct multicall_entry) == 64, "multicall_entry");
_Static_assert(sizeof(struct callback_register) == 16, "callback_register");
_Static_assert(sizeof(struct iret_context) == 72, "iret_context");
_Static_assert(sizeof(struct cpu_user_regs) == 200, "cpu_user_regs");
_Static_assert(sizeof(struct vcpu_info) == 64, "vcpu_info");
_Static_assert(__builtin_offsetof(struct shared_info, evtchn_pending) ==
                   64 * XEN_LEGACY_MAX_VCPUS,
               "shared_info");
_Static_assert(__builtin_offsetof(struct start_info, shared_info) == 40,
               "start_info.shared_info");
_Static_assert(__builtin_offsetof(struct start_info, store_mfn) == 56,
               "start_info.store_mfn");
_Static_assert(__builtin_offsetof(struct start_info, pt_base) == 88,
               "start_info.pt_base");
_Static_assert(__builtin_offsetof(struct start_info, cmd_line) == 128,
               "start_info.cmd_line");
_Static_assert(sizeof(struct start_info) == 1168, "start_info");
_Static_assert(__builtin_offsetof(struct vcpu_guest_context, user_regs) == 520,
               "vcpu_guest_context.user_regs");
_Static_assert(__builtin_offsetof(struct vcpu_guest_context, ctrlreg) == 4984,
               "vcpu_guest_context.ctrlreg");

#endif
