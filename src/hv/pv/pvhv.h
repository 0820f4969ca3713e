/*
 * pvhv.h - what the PV half of src/hv shares (src/hv/pv/): a PV domain's
 * build and memory path (domain.c), the guest walk through its page
 * tables (guestmem.c), the exit and event handling of its vCPUs with the
 * shim (pvcpu.c), writable page tables (wpt.c), the privileged
 * instructions Xen emulates (privop.c), the PV memory hypercalls
 * (hc_mm.c, hc_desc.c) and the guest-readable m2p (m2p.c).  The
 * hypercall table, event channels, time, the console and xenstore rings
 * stay in src/hv and use these through struct pvcpu (hv_internal.h).
 * Never leaves src/hv.
 */
#ifndef MEMVISOR_HV_PV_PVHV_H
#define MEMVISOR_HV_PV_PVHV_H

#include "hv/hv_internal.h"

/* The PV kind's operations (hv_internal.h struct domain_kind). */
extern const struct domain_kind hv_pv_kind;

/* ---- a PV domain's phases after domain_init_basics() (domain.c), also
 * used to build one from a stream (migrate.c) */
int __must_check domain_pv_init(struct domain *d, char *err, size_t errlen);
int __must_check domain_vm_init(struct domain *d, char *err, size_t errlen);
int __must_check domain_vcpus_init(struct domain *d, char *err, size_t errlen);

/* ---- guest memory (guestmem.c): through the vCPU's current page tables;
 * every range checked; -EFAULT when not mapped to the guest as needed. */
int __must_check gm_copy_from(struct pvcpu *pc, void *dst, uint64_t va,
                              uint64_t len);
int __must_check gm_copy_to(struct pvcpu *pc, uint64_t va, const void *src,
                            uint64_t len);
/* Machine address of va's byte and the L1 entry mapping it (for the
 * writable-page-table path; no permission check on the leaf). */
int __must_check gm_translate(struct pvcpu *pc, uint64_t va, uint64_t *maddr,
                              uint64_t *l1e_maddr, uint64_t *l1e);
/* Would the current page tables let the guest make this access? (0 and
 * the L1 entry's machine address if so) */
int __must_check gm_access_ok(struct pvcpu *pc, uint64_t va, bool write,
                              uint64_t *l1e_maddr);
/* Machine address of the L1 entry that maps va (present or not). */
int __must_check gm_l1e_maddr(struct pvcpu *pc, uint64_t va,
                              uint64_t *l1e_maddr);


/* ---- the guest-readable m2p (m2p.c): init after the pv domain and before
 * the build (fills hv_l4's slot); slots after the shim's; fini after the
 * pv domain's. */
int __must_check m2p_init(struct domain *d);
void m2p_fini(struct domain *d);
int __must_check m2p_slots(struct domain *d);
void m2p_mapping(struct domain *d, uint64_t *v_start, uint64_t *v_end,
                 uint64_t *max_mfn);


/* ---- events (pvcpu.c) */
/* vcpu.h's event_fn: deliver a due upcall at this entry if the vCPU was
 * interrupted in the guest. */
int pvcpu_event(struct vcpu *v, void *opaque);
int pvcpu_exit(struct vcpu *v, void *opaque);
void pvcpu_diag(struct vcpu *v, char *buf, size_t len, void *opaque);
/* Record a page-table entry written from the host (touch loop). */
void pvcpu_touch_add(struct pvcpu *pc, uint64_t maddr);
/* Run the touch loop over one entry now, in the middle of an exit, and
 * come back to the exit's state; 0 or -errno. */
int __must_check pvcpu_touch_now(struct pvcpu *pc, uint64_t maddr);
/* vcpu.h's flush_fn: the next entry flushes the whole TLB (V4). */
int pvcpu_flush(struct vcpu *v, void *opaque);
void pvcpu_touch_release(struct pvcpu *pc);
/* Room left in the touch list before a continuation is needed. */
static inline unsigned pvcpu_touch_room(const struct pvcpu *pc)
{
    return SHIM_TOUCH_MAX - pc->nr_touch;
}
/* Bounce an exception to the guest kernel; -errno crashes the domain. */
int __must_check pvcpu_bounce(struct pvcpu *pc, unsigned vector, bool has_err,
                              uint64_t err);
/* Load CR3 for the current mode from pv's base pointers. */
void pvcpu_load_cr3(struct pvcpu *pc);
/* The segment and control registers, read from KVM on first use in an
 * exit (most exits need none); the caller sets sregs_dirty after a change. */
struct kvm_vcpu_sregs *pvcpu_sregs(struct pvcpu *pc);
/* Real/guest-visible selectors. */
uint64_t pvcpu_guest_cs(const struct pvcpu *pc);
void pvcpu_set_cr2(struct pvcpu *pc, uint64_t cr2);
/* This vCPU's vcpu_info.evtchn_upcall_mask, through the accessor. */
void pvcpu_set_upcall_mask(struct pvcpu *pc, uint8_t m);
/* Machine address of this vCPU's vcpu_info: the registered one, else its
 * slot in shared info; 0 if it has none. */
uint64_t pvcpu_vcpu_info_maddr(const struct pvcpu *pc);
/* Drop the hold on a registered vcpu_info frame (teardown). */
void hv_vcpu_info_release(struct pvcpu *pc);
void pvcpu_crash(struct pvcpu *pc, const char *fmt, ...) __printf(2, 3);


long hc_mmu_update(struct pvcpu *pc, uint64_t a[6]);
long hc_mmuext_op(struct pvcpu *pc, uint64_t a[6]);
long hc_update_va_mapping(struct pvcpu *pc, uint64_t a[6]);
long hc_memory_op(struct pvcpu *pc, uint64_t a[6]);
long hc_set_gdt(struct pvcpu *pc, uint64_t a[6]);

long hc_update_descriptor(struct pvcpu *pc, uint64_t a[6]);
/* pv-side helpers the xen.h files need */
/* The kernel's (or user's) base pointer, INVALID_MFN if none. */
mfn_t hc_pv_base(struct pvcpu *pc, bool user);
int __must_check hc_pv_set_base(struct pvcpu *pc, mfn_t mfn);
/* Privileged instructions Xen emulates for a PV kernel (privop.c): 1
 * emulated (rip advanced in pc->ret), 0 not one of them (deliver the
 * fault).  privop_cpuid: the CPUID leaf a PV guest sees. */
int privop_emulate(struct pvcpu *pc, unsigned vector);
void privop_cpuid(unsigned vcpu, uint32_t leaf, uint32_t sub, uint32_t out[4]);
/* Writable page tables (wpt.c): 1 handled (rip advanced in pc->ret), 0 not
 * a page-table store (bounce), -errno refused (bounce). */
int wpt_emulate(struct pvcpu *pc, uint64_t cr2);

#endif
