/*
 * hv.h - the hypervisor object and its domains: what `memvisor run`, the
 * control socket and the end-to-end tests drive.
 *
 * Owns: struct hv (the frame pool, /dev/kvm, the domain table, the frame
 * domain that holds the hypervisor's own frames: the shims) and every
 * struct domain (its PV state, shim, KVM VM, p2m, memory slots, dirty log,
 * vCPU threads, console, statistics).  No globals: everything hangs off
 * struct hv.
 *
 * The memory path (docs/memory.md, "A PV domain's memory path"): the p2m
 * is the identity over the frames the domain owns; memslot presents
 * exactly those to the VM, logging; the reservation hypercalls are slot
 * transactions (a chunk of up to 4096 extents is one); the shim's frames
 * are fixed slots of their own.
 *
 * A domain's life: hv_domain_create() (build: ELF, frames, page tables
 * pinned through pv, shim, vCPUs) -> hv_domain_start() (vCPU threads) ->
 * running <-> paused (hv_domain_pause/resume, nestable) -> stopped (guest
 * shutdown, crash, or hv_domain_shutdown()) -> hv_domain_wait() ->
 * hv_domain_destroy() (page tables relinquished through pv, frames freed).
 *
 * Invariants:
 *  H1. A domain's frames are owned by its frame domain (id = domid); the
 *      shim's frames by HV_FRAME_DOMID, which no guest entry may name.
 *  H2. hv_domain_audit() and hv_domain_pfinfo() run only while the domain
 *      is paused or stopped (they pause it themselves).
 *  H3. A crash stops only that domain: the process and other domains run on.
 *  H4. A continuation of mmu_update or mmuext_op always reaches pv, even
 *      with no request left: pv may hold a call's result back until a
 *      deferred put is drained, and only the call's own re-issue collects
 *      it.  So no operation is answered with another's held-back result
 *      (which would report success for an update never made).
 *  H5. A domain's VM presents exactly its p2m's RAM (gfn == mfn: the frames
 *      it owns and has not given back) and its shim's frames: an access
 *      anywhere else exits and crashes that domain alone.  A frame leaves
 *      the slots before its last reference can go, so before the free
 *      hook flushes it from the TLBs and it is scrubbed and reused.
 *  H6. Every write memvisor makes to guest memory goes through the one
 *      dirty-logging accessor (gm_write_phys(), gm_logged(); pv's
 *      hooks.mark_dirty): it is in the dirty log before the frame can
 *      change hands.
 *  H7. The XSA-401 safety action (docs/frame.md, "TLB flushes"): a frame
 *      that stops being writable to become a page table, or is freed, is
 *      flushed from the TLB of every vCPU not flushed since its stamp
 *      before the type change or the free completes (pv's hooks.flush and
 *      frames.free_hook -> vcpu_group_flush(), vcpu.h V4); under a shadow
 *      MMU an entry that held references is stored back from ring 0
 *      (pvcpu_touch_now()) before those references are dropped.
 *
 * Locking: hv->lock protects the domain table.  Per domain, the vCPU group
 * lock (vcpu.h) orders pause/resume/stop; hypercalls of different vCPUs run
 * concurrently, relying on pv's own rules (pv.h: no domain lock).  A
 * reservation hypercall runs a slot update on its vCPU thread (memslot.h's
 * lock order); the update's pause holds the other vCPUs at their next
 * entry (domain mem_lock, a leaf: taken with nothing else and held only
 * to set or wait on mem_paused), never waiting for more than their leaving
 * KVM_RUN.
 *
 * Errors: -ENOMEM, -EINVAL (bad config), -EBUSY (domain table full),
 * -ENOSPC (no KVM slot left: to the guest from a reservation that did
 * nothing, never a crash),
 * -ENOENT (no such domain), errors of boot_build() (reason in the domain's
 * error text), KVM's -errno.
 */
#ifndef MEMVISOR_HV_HV_H
#define MEMVISOR_HV_HV_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "frame/frame.h"
#include "kvm/kvm.h"
#include "lib/compiler.h"

#define HV_MAX_DOMAINS 8
#define HV_FRAME_DOMID (FRAME_MAX_DOMAINS - 1)
#define HV_MAX_VCPUS 16
#define HV_NR_HYPERCALLS 64
/* KVM memory slots a domain may use at most (the shim's and its own). */
#define HV_MAX_SLOTS 1024

struct domain;

struct hv {
    struct frames frames;
    struct kvm_sys kvm;
    pthread_mutex_t lock;
    struct domain *domains[HV_MAX_DOMAINS];
    /* The KVM below shadows guest page tables (KVM-PVM, or no nested
     * paging): host-side page-table writes need the touch loop. */
    bool shadow_mmu;
};

/* The guest kind: PV (Xen's PV ABI, src/hv/pv) or HVM (PVH direct boot,
 * the guest's own page tables, src/hv/hvm; docs/hvm.md). */
enum hv_domain_kind { HV_DOMAIN_PV = 0, HV_DOMAIN_HVM = 1 };

struct hv_domain_config {
    enum hv_domain_kind kind;
    const uint8_t *image; /* the kernel ELF (copied by create) */
    size_t image_size;
    uint64_t mem_mib;
    unsigned nr_vcpus;
    const char *cmdline;
    const uint8_t *module; /* the PV module (an initrd), copied; NULL: none */
    size_t module_size;
    int console_fd; /* -1: keep only the tail */
};

/* Statistics, also served by the control socket. */
struct hv_domain_stats {
    uint64_t hypercalls[HV_NR_HYPERCALLS];
    uint64_t hypercall_ns[HV_NR_HYPERCALLS]; /* time in memvisor's handler */
    uint64_t hypercalls_unknown;
    uint64_t bounces[32];
    uint64_t syscalls;
    uint64_t wpt_emulated;  /* guest stores to page tables applied */
    uint64_t wpt_refused;   /* ... refused and bounced as #PF */
    uint64_t continuations; /* hypercalls re-entered */
    uint64_t exits;
    uint64_t dirty_marked;    /* guest pages memvisor wrote (dirty log) */
    uint64_t touch_overflow;  /* touch-list overflows (docs/pv-on-kvm.md) */
    uint64_t spurious_faults; /* #PF retried: the tables allowed the access */
    /* The XSA-401 safety action and guest flush requests (vcpu.h V4). */
    uint64_t flush_requests; /* calls naming other vCPUs or the caller */
    uint64_t flush_filtered; /* vCPUs spared: flushed since the stamp */
    uint64_t flush_kicked;   /* vCPUs kicked out of the guest to flush */
    uint64_t flush_wait_ns;  /* time requesters waited for kicked vCPUs */
    uint64_t flushes;        /* flushes vCPUs made at a request */
    uint64_t touched_now;    /* entries touched at once (shadow MMU) */
    uint64_t privops;        /* privileged instructions emulated */
    uint64_t events_sent;    /* event channel ports made pending */
    uint64_t upcalls;        /* event upcalls delivered */
    uint64_t timer_fired;    /* vCPU timers expired */
    /* HVM domains: port and MMIO accesses nobody claims (answered with all
     * ones, writes dropped), those forwarded to device models, UART
     * accesses and bytes sent. */
    uint64_t pio_unclaimed, mmio_unclaimed, pio_forwarded, mmio_forwarded;
    uint64_t uart_accesses, uart_tx;
};

/* pool_frames: the machine memory memvisor manages, in 4 KiB frames. */
int __must_check hv_init(struct hv *hv, uint64_t pool_frames);
void hv_fini(struct hv *hv);

int __must_check hv_domain_create(struct hv *hv,
                                  const struct hv_domain_config *cfg,
                                  struct domain **out, char *err,
                                  size_t errlen);
int __must_check hv_domain_start(struct domain *d);
void hv_domain_pause(struct domain *d);
void hv_domain_resume(struct domain *d);
/* Ask the domain to stop as if the guest had powered off with `reason`. */
void hv_domain_shutdown(struct domain *d, int reason);
/* Wait for the domain to stop; returns the process exit status it maps
 * to: 0 poweroff, the shutdown reason otherwise, 70 after a crash. */
int hv_domain_wait(struct domain *d);
bool hv_domain_stopped(struct domain *d);
void hv_domain_destroy(struct domain *d);

domid_t hv_domain_id(const struct domain *d);
unsigned hv_domain_nr_vcpus(const struct domain *d);
/* Crash text (empty unless crashed). */
const char *hv_domain_crash_text(struct domain *d);
/* Keyboard input for the guest's console ring (hvc0): how many bytes of
 * buf it took (0 when the ring is full or the guest has no ring). */
size_t hv_domain_console_input(struct domain *d, const char *buf, size_t len);
/* The domain's xenstore (a Linux guest's xenbus): write or read a node;
 * a relative path is under /local/domain/<id>.  0, -ENOENT, -E2BIG,
 * -ENOSPC. */
int __must_check hv_xs_write(struct domain *d, const char *path,
                             const char *val);
int __must_check hv_xs_read(struct domain *d, const char *path, char *out,
                            size_t len);
/* The frames the domain owns now (its reservation, as
 * XENMEM_current_reservation answers). */
int hv_domain_reservation(struct domain *d, uint64_t *frames);
/* Console tail (NUL-terminated). */
size_t hv_domain_console(struct domain *d, char *buf, size_t len);
void hv_domain_stats(struct domain *d, struct hv_domain_stats *out);
/* Event-channel state of a PV domain, for diagnosis (the control
 * socket's "events"): per vCPU its upcall flag, mask and selector, whether
 * it is blocked in SCHEDOP_block, and its timer; the bound ports with
 * their pending and mask bits; the console ring's indices.  A snapshot
 * taken without pausing: each value is read atomically, the whole is not.
 * -EOPNOTSUPP for an HVM domain. */
#define HV_EVENTS_MAX_PORTS 64
struct hv_events {
    unsigned nr_vcpus;
    struct {
        bool up, blocked, has_vcpu_info;
        uint8_t upcall_pending, upcall_mask;
        uint64_t pending_sel;
        int64_t timer_ns; /* until the deadline (may be < 0); INT64_MAX: none */
    } vcpu[HV_MAX_VCPUS];
    unsigned nr_ports; /* bound ports listed (the first HV_EVENTS_MAX_PORTS) */
    struct {
        uint16_t port, vcpu;
        uint8_t state; /* EVTCHNSTAT_* */
        bool pending, masked;
    } port[HV_EVENTS_MAX_PORTS];
    bool console;              /* the guest has a console ring */
    uint32_t cons_in_cons, cons_in_prod, cons_out_cons, cons_out_prod;
    uint64_t sent, upcalls, timer_fired;
};
int __must_check hv_domain_events(struct domain *d, struct hv_events *out);
/* An HVM domain's vCPUs as KVM holds them, for diagnosing a guest that
 * stopped reacting (the control socket's "vcpus"): each vCPU's MP state
 * (KVM_MP_STATE_*: 0 runnable, 3 halted), rip and rflags, its LAPIC's
 * timer and priority registers, the highest vector requested (IRR) and in
 * service (ISR), the event KVM is injecting, its TSC and TSC deadline, and
 * the guest's own kvm-clock: the time the guest computes now from its
 * pvclock page (KVM_MSR_SYSTEM_TIME_NEW), beside KVM's clock for the VM.
 * The domain is paused for the snapshot unless stopped (the pause itself
 * takes every vCPU out of KVM_RUN once).  -EOPNOTSUPP for a PV domain. */
struct hv_hvm_vcpus {
    unsigned nr_vcpus;
    uint64_t clock_ns; /* KVM_GET_CLOCK */
    struct {
        uint32_t mp_state;
        uint64_t rip, rflags, tsc, tsc_deadline;
        /* LAPIC: TPR, PPR, spurious vector, LVT timer, initial and
         * current count, divide configuration, LINT0, LINT1 */
        uint32_t tpr, ppr, svr, lvtt, tmict, tmcct, tdcr, lint0, lint1;
        int irr, isr; /* the highest vector set, -1 for none */
        bool irq_injected, nmi_pending, nmi_masked, exc_pending;
        uint8_t irq_nr, shadow;
        bool kvmclock;       /* the guest enabled its pvclock */
        uint32_t pvclock_version;
        int64_t guest_ns;    /* the guest's kvm-clock, read now */
    } vcpu[HV_MAX_VCPUS];
};
int __must_check hv_domain_hvm_vcpus(struct domain *d, struct hv_hvm_vcpus *out);
/* An NMI for HVM vCPU `vcpu` (the control socket's "nmi"), as a machine's
 * NMI button: a guest that stopped reacting with interrupts off still
 * takes it (Linux with unknown_nmi_panic then prints where it was).
 * The domain is paused around it.  -EOPNOTSUPP for a PV domain, -EINVAL
 * for a vCPU it does not have. */
int __must_check hv_domain_hvm_nmi(struct domain *d, unsigned vcpu);
/* Frame-table audit (pauses the domain unless stopped), and shim_check():
 * 0 or -EUCLEAN with the first error in msg; *tables and *frames count
 * what it saw. */
int __must_check hv_domain_audit(struct domain *d, char *msg, size_t len,
                                 uint64_t *frames, uint64_t *tables);
/* Page-frame info (Xen's PFINFO words) of up to max frames the domain
 * owns, from mfn *cursor on; advances *cursor; returns how many (0: done)
 * or -errno.  max <= 1024.  Pauses the domain unless stopped. */
int __must_check hv_domain_pfinfo(struct domain *d, uint64_t *cursor,
                                  unsigned max, uint64_t *mfns, uint32_t *info);
uint64_t hv_domain_nr_pages(const struct domain *d);
/* Pull KVM's log of the guest's writes into the domain's dirty log and
 * hand out every page logged since the last harvest (the guest's own
 * writes and memvisor's): *pages says how many.  Safe while running; exact
 * while paused (DESIGN invariant 6). */
int __must_check hv_domain_dirty_harvest(struct domain *d, uint64_t *pages);
/* The same, recording the first max gfns handed out in gfns[] (*pages
 * says how many were handed out in all). */
int __must_check hv_domain_dirty_harvest_gfns(struct domain *d, uint64_t *gfns,
                                              uint64_t max, uint64_t *pages);
const char *hv_hypercall_name(unsigned nr);
/* Test only: make pv preempt at every `every`-th check and turn every
 * preemption into a continuation through the guest (0: off). */
void hv_domain_test_preempt(struct domain *d, uint64_t every);
/* Test only: issue hypercall nr with args as vCPU `vcpu` would, from the
 * calling thread, on a domain whose vCPUs are paused or not started; the
 * guest's ring-3 return frame is {rip, rsp}.  Continuations are re-entered
 * at once.  Returns the result the guest would see. */
long hv_domain_test_hypercall(struct domain *d, unsigned vcpu, unsigned nr,
                              const uint64_t args[6], uint64_t rip,
                              uint64_t rsp);
/* Test only: write guest memory at a guest virtual address of vCPU 0's
 * current address space (as a hypercall result would be written). */
int __must_check hv_domain_test_poke(struct domain *d, uint64_t va,
                                     const void *buf, uint64_t len);
/* Test only: update_descriptor stores wherever the domain owns the frame,
 * a page table in use included (the rule of hc_desc.c switched off, to
 * show the test catches it). */
void hv_domain_test_no_desc_rule(struct domain *d);
/* Test only: never run the shim's touch loop (host-written page-table
 * entries stay invisible to the KVM's shadow MMU). */
void hv_domain_test_no_touch(struct domain *d);
/* Test only: break H4 (a continuation with no request left does not reach
 * pv), to show the workloads catch it. */
void hv_domain_test_skip_empty_reissue(struct domain *d);
/* Test only: switch off the XSA-401 safety action (no vCPU is made to
 * flush its TLB when a frame stops being writable or is freed, and a
 * writable reference dropped by a host-side page-table write is released
 * at once), to show the stale-TLB workload catches it. */
void hv_domain_test_no_tlb_flush(struct domain *d);
/* Test only: memvisor's writes to guest memory bypass the dirty-logging
 * accessor (they are made but not logged), to show the tests catch it. */
void hv_domain_test_no_dirty_accessor(struct domain *d);
/* Benchmark only: reservations change the p2m alone, not the VM's slots
 * (the cost without the slot transactions; the VM then presents frames
 * the domain gave back: never run such a domain). */
void hv_domain_test_no_slot_txn(struct domain *d);
/* Test only: the domain's own memory may use at most `limit` KVM slots
 * (0: no test limit), to reach slot exhaustion. */
void hv_domain_test_slot_limit(struct domain *d, uint32_t limit);

/* Test only: where the builder put things. */
struct hv_domain_layout {
    uint64_t start_info_va, p2m_va, shared_info_mfn, l4_mfn;
};
void hv_domain_test_layout(struct domain *d, struct hv_domain_layout *out);
/* Test only: va in vCPU 0's current address space -> its machine address,
 * and the machine address and value of the L1 entry that maps it. */
int __must_check hv_domain_test_translate(struct domain *d, uint64_t va,
                                          uint64_t *maddr, uint64_t *l1e_maddr,
                                          uint64_t *l1e);
/* Test only: store val at machine address maddr of the pool as it is: no
 * validation, no reference, no dirty log (a validation hole, made on
 * purpose; the caller restores what it broke). */
int __must_check hv_domain_test_raw_store(struct hv *hv, uint64_t maddr,
                                          uint64_t val);

/* ---- HVM domains (src/hv/hvm, docs/hvm.md) */
bool hv_domain_is_hvm(const struct domain *d);
/* The HVM invariants (hvm.h HV1-HV3: slots match the p2m, logging on,
 * runs owned): 0, -EUCLEAN with the first violation in msg, -EINVAL for
 * a PV domain.  Pauses the domain unless stopped. */
int __must_check hv_domain_hvm_check(struct domain *d, char *msg, size_t len);
/* Write guest-physical memory of an HVM domain as memvisor does (the
 * dirty-logging accessor): 0 or -EFAULT outside its RAM. */
int __must_check hv_domain_hvm_write(struct domain *d, uint64_t gpa,
                                     const void *buf, uint64_t len);
int __must_check hv_domain_hvm_read(struct domain *d, uint64_t gpa, void *buf,
                                    uint64_t len);
/* gfn -> mfn of an HVM domain's RAM (-ENOENT: not RAM). */
int __must_check hv_domain_hvm_gfn(struct domain *d, uint64_t gfn,
                                   uint64_t *mfn);
/* Where the PVH loader put the start info, the command line and the
 * module, and the entry point. */
struct hv_hvm_boot {
    uint64_t start_info, cmdline, module, module_size, ram_end;
    uint32_t entry;
};
int __must_check hv_domain_hvm_boot(struct domain *d, struct hv_hvm_boot *out);
/* Test only: one memslot transaction on an HVM domain's [gfn, gfn + nr)
 * (stopped or paused): RO / RW (p2m type), REMOVE (out of the guest),
 * RESTORE (removed gfns back to their own frames); RAW_P2M maps the
 * first removed gfn in the p2m behind memslot's back (a broken rule the
 * checker must catch). */
enum { HV_HVM_TXN_RO, HV_HVM_TXN_RW, HV_HVM_TXN_REMOVE, HV_HVM_TXN_RESTORE,
       HV_HVM_TXN_RAW_P2M };
int __must_check hv_domain_hvm_test_txn(struct domain *d, int op, uint64_t gfn,
                                        uint64_t nr);
/* The last unclaimed access (a line of text; empty if none). */
void hv_domain_hvm_unclaimed(struct domain *d, char *buf, size_t len);
/* Test only: vCPU vcpu's TSC-deadline MSR into *got, after (set != 0)
 * putting its LAPIC timer in TSC-deadline mode (masked) and the deadline at
 * set.  The domain stopped or paused.  -EINVAL for a PV domain or no such
 * vCPU. */
int __must_check hv_domain_hvm_test_tsc_deadline(struct domain *d,
                                                 unsigned vcpu, uint64_t set,
                                                 uint64_t *got);
/* Test only: set MSR index of vCPU vcpu (the domain stopped or paused).
 * -EINVAL for a PV domain or no such vCPU, else KVM's answer. */
int __must_check hv_domain_hvm_test_set_msr(struct domain *d, unsigned vcpu,
                                            uint32_t index, uint64_t value);

/* Device models (src/ioreq, docs/dm-protocol.md).  Attach one connected on
 * sock (SOCK_SEQPACKET; taken over, also on error): the server index or
 * -errno.  child > 0: the model is this process's child, killed if it is
 * cut off for misbehaving (ioreq.h I6); 0 for one attached by socket. */
int __must_check hv_domain_attach_dm(struct domain *d, int sock, pid_t child);
/* The domain's ioreq side (servers, statistics), NULL before it exists. */
struct ioreq_domain *hv_domain_ioreq(struct domain *d);
/* Test only: the vCPU does not wait for the device models' INVAL_ACK at
 * the end of a hypercall (DESIGN invariant 8 off), to show tests catch it. */
void hv_domain_test_no_inval_wait(struct domain *d);
/* Test only: the guest may map any frame outside the pool as I/O memory,
 * granted or not (pv.h rules.iomem_any), to show the tests catch it. */
void hv_domain_test_iomem_any(struct domain *d);
/* Test only: the device models' DIRTY reports are not put in the dirty
 * log (their DMA escapes it), to show the tests catch it. */
void hv_domain_test_dm_drop_dirty(struct domain *d);

/* The domain's memory as KVM sees it: slots of its own memory (*slots),
 * of the shim (*shim_slots), and the frames they present (*frames). */
void hv_domain_slots(struct domain *d, uint32_t *slots, uint32_t *shim_slots,
                     uint64_t *frames);

/* ---- Save and restore (migrate.c; the engine is src/migrate).
 * hv_domain_source_init(): the source operations of a running domain for
 * migrate_save() (it finds the guest's p2m list through vCPU 0's tables);
 * the domain keeps running, and outlives the operations until
 * hv_domain_source_fini().  hv_domain_target_init(): the target
 * operations for migrate_restore(), which build a new domain of hv
 * (console to console_fd, -1: tail only); hv_domain_target_fini() hands
 * it out once restored (start it with hv_domain_start()), or destroys
 * whatever a failed restore made and returns NULL. */
struct migrate_source;
struct migrate_target;
int __must_check hv_domain_source_init(struct domain *d,
                                       struct migrate_source *src);
void hv_domain_source_fini(struct migrate_source *src);
int __must_check hv_domain_target_init(struct hv *hv, int console_fd,
                                       struct migrate_target *tgt);
struct domain *hv_domain_target_fini(struct migrate_target *tgt);
/* The guest's own p2m list: pfn -> mfn of a frame the domain owns whose
 * m2p entry agrees; -ENOENT otherwise. */
int __must_check hv_domain_p2m_lookup(struct domain *d, uint64_t pfn,
                                      uint64_t *mfn);
/* A restored domain keeps the device-model states its stream carried,
 * by server index: how many still wait; and hand them to the device
 * models attached since (hv_domain_attach_dm(), in the same order as at
 * the source): 0, or -ENODEV (no live device model at an index that has
 * a state), or the device model's refusal; err says which. */
unsigned hv_domain_dm_pending(struct domain *d);
int __must_check hv_domain_dm_restore_states(struct domain *d, char *err,
                                             size_t errlen);
/* Test only: the source reports frame mfn as outside the domain's
 * pseudo-physical map (an entry naming it cannot be normalised). */
void hv_domain_test_save_unnormalisable(struct migrate_source *src,
                                        uint64_t mfn);

#endif
