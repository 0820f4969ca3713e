/*
 * pv.h - PV page tables: the x86-64 PV entry rules of L1..L4, preemptible
 * validation and devalidation, pinning, base pointers, the MMU operations
 * (mmu_update, mmuext_op, memory_op reservations, update_va_mapping), the
 * page-frame info query and the auditor.
 *
 * Owns: per domain (struct pv_domain) the m2p (mfn -> pfn) of its frames,
 * the hypervisor's L4 slots, the rule switches and hooks; per vCPU
 * (struct pv_vcpu) the base pointers, the deferred put and the preemption
 * hook.  Page-table contents live in the guest's frames (the pool); the
 * references they hold live in the frame table (frame.h).
 *
 * Operations take host copies of the guest's request arrays (the hypercall
 * layer copies guest memory in and out); layouts, command numbers and error
 * conventions follow Xen's public ABI.
 *
 * Entry rules (x86-64 PV, guest slots):
 *  - L1e present: the frame must be RAM of the domain (general ref); RW
 *    takes a writable type reference as well.  Allowed flags: P RW US A D G
 *    AVAIL(9-11) AVAIL_HIGH(52-62) NX; PWT/PCD/PAT are refused (no I/O
 *    memory permission).
 *  - L2e/L3e/L4e present: the target must validate as L1/L2/L3 (general +
 *    type ref).  Allowed flags: P RW US A D AVAIL AVAIL_HIGH NX; PSE, G,
 *    PWT, PCD refused.
 *  - Linear (same-level, "recursive") page tables are refused: an entry
 *    must point to a table of the level below.  So page-table references
 *    form a forest, teardown needs no forced devalidation, and the
 *    linear-PT XSAs (182, 240, 309) have no surface.
 *  - L4 slots 256..271 belong to the hypervisor: skipped when validating,
 *    then filled from pv_domain.hv_l4; mmu_update there gives -EINVAL.
 *  - A non-present entry holds nothing and may carry any bits.
 *
 * Invariants (pv_audit() checks them all at quiescent points):
 *  P1. Reference counts add up (DESIGN invariant 1): every frame's general
 *      count equals its allocation reference + present entries of validated
 *      tables (and of partial tables below nr_validated) + partial entries
 *      marked FRAME_PARTIAL_SET + pins + vCPU base pointers + deferred puts +
 *      its own PARTIAL flag + holds of other layers (hooks.extra_refs); its
 *      type count likewise from entries, pins, bases, full deferred puts,
 *      its PARTIAL flag and other layers' writable holds
 *      (hooks.extra_writable).
 *  P2. Types exclude each other (invariant 2): no RW L1e points at a frame
 *      with a page-table type; all referrers of a frame agree on its type;
 *      no vCPU holds a writable translation (wtlb) of a page-table frame.
 *  P3. Partial progress holds a reference (invariant 3, the XSA-299 rule).
 *  P4. Every present entry of a validated or partial table points at a
 *      frame of this domain with the type its level requires.
 *  P5. A deferred put (pv_vcpu.old_table) is drained before any other MMU
 *      operation of that vCPU proceeds, and before the guest sees a result.
 *  P6. Type queries are honest (invariant 5): pv_pageframe_info() reports
 *      Ln only for a frame that is validated or pinned.
 *
 * Locking: no domain lock.  Type and count words change by CAS (frame.h);
 * entry updates of a validated table hold frame_lock() on it; a table's
 * entries cannot change while it is being (de)validated, because then it
 * is neither lockable nor writable.  A pv_vcpu is used by one thread at a
 * time.  pv_audit() needs a quiescent domain.
 *
 * Errors: -EINVAL (bad entry or argument, type conflict, invalid table,
 * frame not allocated, hypervisor L4 slot, not pinned / already pinned, an
 * address outside the guest's part of the address space), -EPERM (a frame
 * of another domain, a foreign domain), -EBUSY (an RW mapping of a frame
 * that has a page-table type), -ENOMEM (budget), -ENOSYS (unknown
 * command), -E2BIG (too many frames queried), -EFAULT (no L1 maps a va),
 * -ERESTART (preempted or a deferred put pending: re-issue the same call;
 * the progress is in *pdone / the command), -EUCLEAN (pv_audit():
 * accounting corruption).
 */
#ifndef MEMVISOR_PV_PV_H
#define MEMVISOR_PV_PV_H

#include <stdbool.h>
#include <stdint.h>

#include "frame/frame.h"
#include "lib/compiler.h"
#include "lib/types.h"
#include "xen/xen.h"

/* ------------------------------------------------------------------ ABI */

/* Page-table entry bits (x86-64). */
#define PTE_P (1ULL << 0)
#define PTE_RW (1ULL << 1)
#define PTE_US (1ULL << 2)
#define PTE_PWT (1ULL << 3)
#define PTE_PCD (1ULL << 4)
#define PTE_A (1ULL << 5)
#define PTE_D (1ULL << 6)
#define PTE_PSE (1ULL << 7) /* PAT in an L1e */
#define PTE_G (1ULL << 8)
#define PTE_AVAIL (7ULL << 9)
#define PTE_ADDR_MASK 0x000FFFFFFFFFF000ULL
#define PTE_AVAIL_HIGH (0x7FFULL << 52)
#define PTE_NX (1ULL << 63)
#define PT_ENTRIES 512
#define PV_HV_L4_FIRST 256 /* hypervisor slots 256..271 */
#define PV_HV_L4_NR 16

static inline mfn_t pte_mfn(uint64_t e)
{
    return _mfn((e & PTE_ADDR_MASK) >> PAGE_SHIFT);
}

/*
 * The hypercall ABI (struct mmu_update, struct mmuext_op, MMU_*, MMUEXT_*,
 * UVMF_*, XENMEM_*, MEMOP_*, DOMID_SELF) comes from xen/xen.h.
 */
#define PV_LDT_MAX_ENTS 8192

#define PV_MAX_EXTENT_ORDER 9 /* a domU's limit, as Xen's default */

/*
 * Xen's struct xen_memory_reservation with the guest handle replaced by
 * the host copy of the extent array (nr_extents entries).
 * populate_physmap: in pfn, out mfn.  increase_reservation: out mfn.
 * decrease_reservation: in mfn (a PV domain is not translated).
 */
struct pv_reservation {
    uint64_t *extent_start;
    uint64_t nr_extents;
    uint32_t extent_order;
    uint32_t mem_flags; /* accepted, ignored (address bits, node) */
    domid_t domid;      /* DOMID_SELF or the domain's own id */
};

/* Page-frame info: Xen's XEN_DOMCTL_PFINFO_* (type in bits 31..28). */
#define PV_PFINFO_LTAB_SHIFT 28
#define PV_PFINFO_NOTAB (0x0U << 28)
#define PV_PFINFO_L1TAB (0x1U << 28)
#define PV_PFINFO_L2TAB (0x2U << 28)
#define PV_PFINFO_L3TAB (0x3U << 28)
#define PV_PFINFO_L4TAB (0x4U << 28)
#define PV_PFINFO_LTABTYPE_MASK (0x7U << 28)
#define PV_PFINFO_LPINTAB (0x8U << 28)
#define PV_PFINFO_BROKEN (0xdU << 28)
#define PV_PFINFO_XALLOC (0xeU << 28) /* never produced */
#define PV_PFINFO_XTAB (0xfU << 28)
#define PV_PFINFO_LTAB_MASK (0xfU << 28)
#define PV_PFINFO_MAX 1024

#define PV_M2P_INVALID (~0ULL)

/* ------------------------------------------------------------ objects */

#define PV_MAX_VCPUS 64
#define PV_WTLB_SIZE 8
#define PV_WTLB_EMPTY (~0ULL)

/*
 * Test-only rule switches: each disables one rule so that the test that
 * guards the rule can show it fails.  All false in production.  With a
 * switch on, the corruption it allows is reported (pv_audit(), the
 * corruption counter), never a crash.
 */
struct pv_rules {
    /* XSA-299: a partially promoted entry holds no general reference. */
    bool no_partial_ref;
    /* c40b33d726: a clean-up put acts even if the frame is not partial. */
    bool cleanup_put_always;
    /* the deferred put forgets whether it owns a partial or a full ref. */
    bool no_deferred_partial;
    /* XSA-401: safety actions run before the type reference commits. */
    bool safety_before_commit;
    /* any frame outside the pool counts as granted I/O memory */
    bool iomem_any;
};

struct pv_vcpu;

/* How a frame's use changed (hooks.type_changed). */
struct pv_hooks {
    /*
     * After a 0->1 type change is committed (F9 of frame.h): e.g. a frame
     * became a page table (drop writable translations) or writable.  Called
     * after pv's own writable-translation flush.
     */
    void (*type_changed)(void *arg, mfn_t mfn, uint64_t old_type,
                         uint64_t new_type);
    /*
     * The XSA-401 safety action and the guest's flush requests: every vCPU
     * in mask (bit i: pv vCPU i) whose last TLB flush began at or before
     * stamp (frame.h F12; frames_tlb_now() for "now") must flush before it
     * runs guest code again; returns when that is certain.  self is the
     * acting vCPU (it flushes on its way back to the guest).  Production
     * code installs it (src/hv); without it only the model below is
     * flushed.
     */
    void (*flush)(void *arg, struct pv_vcpu *self, uint64_t mask,
                  uint64_t stamp);
    /*
     * Entry idx of table, which held references, was just rewritten from
     * the host by self; called before those references are dropped (so
     * before the old target can be retyped or freed), with table locked.
     * The hypervisor makes the write visible to the KVM's MMU here.
     */
    void (*entry_replaced)(void *arg, struct pv_vcpu *self, mfn_t table,
                           unsigned idx);
    /* A write pv made to the guest's memory, after it landed: every
     * page-table entry written (mmu_update, update_va_mapping, emulated
     * stores, through pv_mod_entry() or a plain write), and where Xen
     * marks log-dirty: validation, pin/unpin, machphys update. */
    void (*mark_dirty)(void *arg, mfn_t mfn);
    /* General references held by other layers, for pv_audit(). */
    uint64_t (*extra_refs)(void *arg, mfn_t mfn);
    /* Writable type references held by other layers (each with a general
     * reference counted by extra_refs), for pv_audit(). */
    uint64_t (*extra_writable)(void *arg, mfn_t mfn);
    void *arg;
};

struct pv_vcpu;

/* I/O memory a domain may map (pv_iomem_grant()). */
#define PV_MAX_IOMEM 16
struct pv_iomem {
    uint64_t first, nr; /* machine frames [first, first + nr), none a pool frame */
};

struct pv_domain {
    struct frames *f;
    domid_t id;
    /*
     * I/O memory (docs/abi.md, "Devices"): frames outside the pool that
     * present L1 entries may map, holding no reference and no type (there
     * is no frame behind them: the VM has no slot there, so every access
     * exits as MMIO).  Append-only; the entry is written before nr_iomem
     * is published (release/acquire); grants are serialised by the caller.
     */
    struct pv_iomem iomem[PV_MAX_IOMEM];
    _Atomic unsigned nr_iomem;
    _Atomic uint64_t *m2p; /* f->nr_frames entries, PV_M2P_INVALID if none */
    bool m2p_external;     /* m2p lives in the caller's memory (the pool) */
    uint64_t hv_l4[PV_HV_L4_NR]; /* what slots 256..271 of every L4 hold */
    struct pv_rules rules;
    struct pv_hooks hooks;
    struct pv_vcpu *vcpus[PV_MAX_VCPUS];
    unsigned nr_vcpus;
    /*
     * Accounting corruption found by an operation (a put with no
     * reference behind it, an entry pointing at another domain's frame):
     * counted and skipped, never a crash.  pv_audit() fails while non-zero.
     */
    _Atomic uint64_t corruption;
    char corruption_msg[128];
};

struct pv_vcpu {
    struct pv_domain *d;
    unsigned id;
    mfn_t base;        /* guest kernel L4 (INVALID_MFN: none); 1 gen + 1 type */
    mfn_t user_base;   /* guest user L4 (INVALID_MFN: none); 1 gen + 1 type */
    uint64_t ldt_base; /* MMUEXT_SET_LDT: linear address, page aligned */
    uint32_t ldt_ents; /* ... and entries (<= PV_LDT_MAX_ENTS) */
    /*
     * The deferred put (Xen's old_guest_table): a type put this vCPU must
     * finish before any other MMU operation.  It holds one general
     * reference; old_partial false: it also holds a full type reference;
     * true: it owns the clean-up of a PARTIAL frame (a clean-up put, a
     * no-op if someone else has finished the frame meanwhile).
     */
    mfn_t old_table;   /* INVALID_MFN: none */
    uint64_t old_type; /* the type of the reference it drops (F13) */
    bool old_partial;
    /* The result an operation returns once its deferred put drained. */
    bool cont_pending;
    int cont_rc;
    /* Preemption hook: see pv_vcpu_set_preempt(). */
    uint64_t preempt_after;
    uint64_t preempt_count;
    bool preempt_repeat;
    /*
     * Writable translations this vCPU may still hold, as a model for the
     * tests that drive pv without KVM: raw mfns, PV_WTLB_EMPTY if unused,
     * filled only by pv_vcpu_tlb_fill().  Emptied by pv_flush(), the same
     * call that asks hooks.flush to flush the real vCPUs, so the model
     * sees exactly the flushes production makes.
     */
    _Atomic uint64_t wtlb[PV_WTLB_SIZE];
};

/* ------------------------------------------------------ set-up, hooks */

int __must_check pv_domain_init(struct pv_domain *d, struct frames *f,
                                domid_t id);
/* The domain must own no page tables any more (pv_domain_relinquish()). */
void pv_domain_fini(struct pv_domain *d);
/* Let L1 entries of the domain map [first, first + nr): -EINVAL if a frame
 * of it is a pool frame or it wraps, -ENOSPC if PV_MAX_IOMEM are granted. */
int __must_check pv_iomem_grant(struct pv_domain *d, mfn_t first, uint64_t nr);
/* Is mfn granted I/O memory of the domain? */
bool pv_iomem_ok(struct pv_domain *d, mfn_t mfn);
int __must_check pv_vcpu_init(struct pv_vcpu *v, struct pv_domain *d);

/*
 * Preemption hook (deterministic): the n-th preemption check from now on
 * this vCPU says "preempt" (n >= 1; 0 disarms); with repeat, every n-th.
 * Checks happen before every entry index (present or not) of an L2..L4
 * (de)validation except the first one of the call, between the requests of
 * a batch, between extents and between frames of pv_domain_relinquish();
 * never before the first (forward progress).
 */
void pv_vcpu_set_preempt(struct pv_vcpu *v, uint64_t n, bool repeat);

/*
 * Record that v holds a writable translation of mfn (the guest wrote through
 * a RW mapping).  -EBUSY unless mfn currently has a writable type in use.
 * Translations are dropped when the frame's type changes away from writable
 * (after the commit), by TLB-flush operations and by base pointer changes.
 */
int __must_check pv_vcpu_tlb_fill(struct pv_vcpu *v, mfn_t mfn);

/* ----------------------------------------------------------- operations */

/*
 * Drain v's deferred put.  0 when none is left, -ERESTART if preempted.
 * Every operation below calls it first.
 */
int __must_check pv_drain(struct pv_vcpu *v);

/*
 * mmu_update: apply reqs[*pdone .. count).  *pdone counts the requests done
 * (cumulative across re-issues).  Returns 0, -ERESTART (re-issue the same
 * call), or the error of request *pdone (no rollback of earlier ones).
 * -ERESTART also comes when a deferred put is pending (an L2..L4 entry
 * replaced, a preempted unpin): the re-issue drains it first (P5), and a
 * result held back for the drain is returned by the re-issue.
 * foreigndom: DOMID_SELF or the own id (bits 15..0), 0 in bits 31..16.
 */
int __must_check pv_mmu_update(struct pv_vcpu *v, const struct mmu_update *reqs,
                               uint32_t count, uint32_t *pdone,
                               uint32_t foreigndom);

/* Store the 8 bytes val at machine address maddr (8-aligned) of a frame
 * the domain owns that is not a page table in use, under a transient
 * writable type reference (update_descriptor).  -EINVAL: misaligned, not
 * the domain's frame, or a page table; -EPERM: another domain's frame. */
int __must_check pv_write_data(struct pv_vcpu *v, uint64_t maddr, uint64_t val);
/* A general and a writable type reference on a frame of the domain that
 * is not a page table in use, held by another layer (a vcpu_info page)
 * until pv_put_writable(); -EINVAL otherwise, -EPERM: not the domain's. */
int __must_check pv_get_writable(struct pv_vcpu *v, mfn_t mfn);
void pv_put_writable(struct pv_vcpu *v, mfn_t mfn);
/* Move the m2p into `to` (f->nr_frames entries, owned by the caller and
 * outliving the domain; e.g. pool frames the guest may read), before any
 * vCPU runs. */
void pv_domain_m2p_move(struct pv_domain *d, _Atomic uint64_t *to);
/* mmuext_op: same conventions as pv_mmu_update(). */
int __must_check pv_mmuext_op(struct pv_vcpu *v, const struct mmuext_op *ops,
                              uint32_t count, uint32_t *pdone,
                              domid_t foreigndom);

/*
 * memory_op reservations, Xen's convention: *cmd is XENMEM_* | (start <<
 * MEMOP_EXTENT_SHIFT).  Returns the number of extents done (cumulative;
 * compare with nr_extents), -ERESTART with *cmd updated to the new start
 * (re-issue), or -errno (-ENOSYS unknown command, -EPERM other domain,
 * -EINVAL order too large).  A malformed request returns the start index.
 */
long __must_check pv_memory_op(struct pv_vcpu *v, unsigned long *cmd,
                               struct pv_reservation *r);

/*
 * update_va_mapping: write the L1 entry that maps va in v's current base
 * (kernel base, or user base for va < 2^47 when the kernel base has no
 * path).  -EFAULT if no L1 maps va; -ERESTART (re-issue) if a deferred put
 * is pending.
 */
int __must_check pv_update_va_mapping(struct pv_vcpu *v, uint64_t va,
                                      uint64_t val, uint64_t flags);

/*
 * Drop v's base pointers and drain (teardown); -ERESTART until done.
 */
int __must_check pv_vcpu_destroy_pagetables(struct pv_vcpu *v);

/*
 * Tear down the domain's page tables: every vCPU's base pointers, every
 * pin, every partial frame, then every allocation reference.  Preemptible:
 * -ERESTART until done (uses vCPU 0's deferred-put slot).  Frames still
 * referenced by other layers stay until those drop them.
 */
int __must_check pv_domain_relinquish(struct pv_domain *d);

/*
 * Page-frame info (XEN_DOMCTL_getpageframeinfo3): arr[i] is an mfn in, its
 * PV_PFINFO_* word out.  Honest-type rule: Ln only while validated or
 * pinned (LPINTAB added if pinned), otherwise NOTAB; XTAB if the frame is
 * not the domain's; BROKEN if broken.  -E2BIG if num > PV_PFINFO_MAX.
 */
int __must_check pv_pageframe_info(struct pv_domain *d, uint64_t *arr,
                                   unsigned num);

/* --------------------------------------------------------------- audit */

struct pv_audit_report {
    uint64_t errors; /* mismatches found */
    uint64_t frames; /* frames of the domain examined */
    uint64_t tables; /* page tables whose entries were counted */
    mfn_t first_mfn; /* where the first error was found */
    char first[160]; /* what it was */
};

/*
 * Recompute every general and type count of the domain's frames from
 * page-table contents, pins, base pointers, deferred puts and partial
 * state, and compare with the frame table; check P1-P4 and the recorded
 * corruption counter.  Needs a quiescent domain (no operation running).
 * 0, -EUCLEAN (report filled if rep != NULL), -ENOMEM.
 */
int __must_check pv_audit(struct pv_domain *d, struct pv_audit_report *rep);

#endif
